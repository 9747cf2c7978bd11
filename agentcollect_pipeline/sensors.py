"""Alerts, so nobody has to watch the UI: failed runs and failed asset checks go to a webhook."""


import dagster as dg

from agentcollect_pipeline.resources import AlertWebhookResource


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """'asset_key:check_name' of every check that failed in the run."""
    failed = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if evaluation is not None and not evaluation.passed:
            failed.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
    return failed


def _describe(run: dg.DagsterRun, headline: str, checks: list[str]) -> str:
    lines = [f"AgentCollect: {headline}", f"job {run.job_name}, run {run.run_id}"]
    if checks:
        lines.append("failed checks: " + ", ".join(checks))
    return "\n".join(lines)


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed run of this code location to the alert webhook.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertWebhookResource) -> None:
    run = context.dagster_run
    error = context.failure_event.message if context.failure_event else ""
    text = _describe(run, "run failed", failed_checks(context.instance, run.run_id))
    if error:
        text += f"\n{error[:500]}"
    alerts.send(text)


@dg.run_status_sensor(
    name="failed_check_alert",
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A run can succeed while a non-blocking asset check fails: this reports those checks.",
)
def failed_check_alert(context: dg.RunStatusSensorContext, alerts: AlertWebhookResource) -> None:
    checks = failed_checks(context.instance, context.dagster_run.run_id)
    if checks:
        alerts.send(_describe(context.dagster_run, "asset checks failed", checks))
