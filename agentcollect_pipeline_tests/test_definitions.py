"""The code location: exactly what it defines, how it is bound, and how it runs unattended."""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import UTC, datetime

import dagster as dg
import pytest

from agentcollect_pipeline import definitions
from agentcollect_pipeline.resources import AlertWebhookResource
from agentcollect_pipeline.sandboxes.server import serve_in_thread
from agentcollect_pipeline.sensors import failed_check_alert

SECRET_ENV = ["BILLCOM_USERNAME", "BILLCOM_PASSWORD", "BILLCOM_ORG_ID", "BILLCOM_DEV_KEY"]


def test_the_one_definitions_object_is_loadable_and_complete():
    defs = definitions.defs
    dg.Definitions.validate_loadable(defs)
    assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} == {
        "billcom_customers",
        "billcom_customer_contacts",
        "billcom_invoices",
        "billcom_received_payments",
        "invoice_eligibility",
        "collection_cases",
        "ar_aging",
        "payments_posted",
        "invoices_paid_in_billcom",
        "fee_ledger",
        "customer_status_notes",
        "outreach_plan",
        "outreach_attempts",
        "customer_replies",
    }
    assert {c.to_user_string() for c in defs.resolve_asset_graph().asset_check_keys} == {
        f"{t}:{t}_invalid_share_within_bound"
        for t in ("billcom_customers", "billcom_customer_contacts", "billcom_invoices", "billcom_received_payments")
    } | {
        "invoice_eligibility:no_paid_or_void_invoice_is_eligible",
        "invoice_eligibility:eligible_invoices_have_a_reachable_customer",
        "ar_aging:ar_aging_reconciles_to_open_invoices",
    }
    assert defs.resolve_job_def("collection_cycle")
    schedule = defs.resolve_schedule_def("collection_cycle_every_4_hours")
    assert schedule.cron_schedule == "0 */4 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert {s.name for s in defs.sensors} >= {"run_failure_alert", "failed_check_alert", "payment_events_sensor",
                                             "recently_paid_invoices_sensor", "billcom_invoice_events_sensor"}
    assert defs.resolve_job_def("post_payment")
    assert defs.resolve_job_def("paid_invoices_check")
    assert defs.resolve_job_def("send_due_outreach")
    assert defs.resolve_schedule_def("send_due_outreach_every_15_minutes").cron_schedule == "*/15 * * * *"


def test_ar_source_pool_guards_every_asset_calling_the_source():
    for asset in definitions.defs.assets:
        # An AssetSpec (payments_posted) has no compute; the ops writing it take the slot themselves.
        if isinstance(asset, dg.AssetSpec):
            continue
        # The collections assets and fee_ledger make no AR source call, so they take no ar_source slot.
        # outreach_plan is pure planning on the warehouse and customer_replies reads our own table;
        # outreach_attempts re-reads invoices, so it does.
        if asset.group_names_by_key[asset.key] != "collections" and asset.key not in (
            dg.AssetKey("fee_ledger"), dg.AssetKey("outreach_plan"), dg.AssetKey("customer_replies")
        ):
            assert asset.op.pool == "ar_source"


def test_secrets_are_bound_as_env_vars_not_values():
    billcom = definitions.build_resources("billcom")["ar_source"].billcom
    for field in ("username", "password", "org_id", "dev_key", "base_url"):
        assert isinstance(getattr(billcom, field), dg.EnvVar), field


def test_schedule_tick_requests_a_collection_cycle_run():
    schedule = definitions.defs.resolve_schedule_def("collection_cycle_every_4_hours")
    # Both as context managers: a schedule context left open keeps the instance's state storage current
    # after the instance is gone, and a later materialize() in this process then fails.
    with dg.instance_for_test() as instance, dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    ) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1


def test_collection_cycle_runs_from_environment_variables(billcom, tmp_path, monkeypatch):
    credentials = billcom.sandbox.credentials
    monkeypatch.setenv("BILLCOM_BASE_URL", billcom.base_url)
    monkeypatch.setenv("BILLCOM_USERNAME", credentials["username"])
    monkeypatch.setenv("BILLCOM_PASSWORD", credentials["password"])
    monkeypatch.setenv("BILLCOM_ORG_ID", credentials["org_id"])
    monkeypatch.setenv("BILLCOM_DEV_KEY", credentials["dev_key"])
    monkeypatch.setenv("AGENTCOLLECT_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    monkeypatch.setenv("AGENTCOLLECT_MAX_INVALID_SHARE", "0.5")
    defs = definitions.build_definitions()
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("collection_cycle").execute_in_process(instance=instance)
    assert result.success
    assert (tmp_path / "env.sqlite").exists()
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {
        "billcom_customers", "billcom_customer_contacts", "billcom_invoices", "billcom_received_payments",
        "invoice_eligibility", "collection_cases", "ar_aging", "invoices_paid_in_billcom", "fee_ledger",
        "customer_status_notes", "outreach_plan", "customer_replies",
    }
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_missing_credentials_fail_naming_the_variable(monkeypatch, tmp_path):
    for name in [*SECRET_ENV, "BILLCOM_BASE_URL"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTCOLLECT_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite'}")
    defs = definitions.build_definitions()
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvalidConfigError, match="BILLCOM_"):
        defs.resolve_job_def("collection_cycle").execute_in_process(instance=instance)


class _WebhookReceiver:
    """A stand-in for Slack's incoming webhook: records every JSON body it is sent."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.received = threading.Event()

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(json.loads(body))
        self.received.set()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


def test_failed_run_is_posted_to_the_alert_webhook(billcom, tmp_path, monkeypatch):
    receiver = _WebhookReceiver()
    with contextlib.ExitStack() as stack, serve_in_thread(receiver) as server:
        monkeypatch.setenv("BILLCOM_BASE_URL", billcom.base_url)
        monkeypatch.setenv("BILLCOM_USERNAME", "someone-else")
        monkeypatch.setenv("BILLCOM_PASSWORD", "not-the-password")
        monkeypatch.setenv("BILLCOM_ORG_ID", billcom.sandbox.credentials["org_id"])
        monkeypatch.setenv("BILLCOM_DEV_KEY", billcom.sandbox.credentials["dev_key"])
        monkeypatch.setenv("AGENTCOLLECT_DATABASE_URL", f"sqlite:///{tmp_path / 'alert.sqlite'}")
        monkeypatch.setenv("AGENTCOLLECT_ALERT_WEBHOOK_URL", f"{server.url}/hooks/alerts")
        defs = definitions.build_definitions()
        instance = stack.enter_context(dg.instance_for_test())
        result = defs.resolve_job_def("collection_cycle").execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        sensor = defs.resolve_sensor_def("run_failure_alert")
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources={"alerts": defs.resources["alerts"]},
        ).for_run_failure()
        sensor(context)
        assert receiver.received.wait(5)
    text = receiver.bodies[0]["text"]
    assert "run failed" in text and result.run_id in text
    assert "not-the-password" not in text


def test_a_failed_non_blocking_check_in_a_successful_run_is_alerted():
    @dg.asset
    def ledger_total() -> int:
        return 1

    @dg.asset_check(asset=ledger_total, description="deliberately failing, WARN severity")
    def ledger_total_reconciles() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)

    receiver = _WebhookReceiver()
    with serve_in_thread(receiver) as server, dg.instance_for_test() as instance:
        result = dg.materialize([ledger_total, ledger_total_reconciles], instance=instance)
        assert result.success
        alerts = AlertWebhookResource(url=f"{server.url}/hooks/alerts")
        context = dg.build_run_status_sensor_context(
            sensor_name="failed_check_alert",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_success_event(),
            resources={"alerts": alerts},
        )
        failed_check_alert(context)
        assert receiver.received.wait(5)
    assert "ledger_total:ledger_total_reconciles" in receiver.bodies[0]["text"]


@pytest.mark.parametrize("source", ["qbo", "netsuite"])
def test_a_configuration_that_would_record_a_payment_twice_is_refused_at_load(source, monkeypatch):
    # Bill.com's own AR sync carries payments into this ledger; posting there too would double them.
    monkeypatch.setenv("AGENTCOLLECT_AR_SOURCE", source)
    monkeypatch.setenv("AGENTCOLLECT_BILLCOM_SYNCS_AR_TO", source)
    with pytest.raises(ValueError, match="twice"):
        definitions.build_definitions()


def test_an_unknown_ar_source_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("AGENTCOLLECT_AR_SOURCE", "xero")
    with pytest.raises(ValueError, match="AGENTCOLLECT_AR_SOURCE"):
        definitions.build_definitions()


def test_billcom_as_source_may_sync_to_an_accounting_system(monkeypatch):
    # Payments go to Bill.com only; its sync carries them one way into QBO.
    monkeypatch.setenv("AGENTCOLLECT_AR_SOURCE", "billcom")
    monkeypatch.setenv("AGENTCOLLECT_BILLCOM_SYNCS_AR_TO", "qbo")
    defs = definitions.build_definitions()
    assert defs.resources["ar_source"].kind == "billcom"


def test_the_readme_lists_every_environment_variable():
    from pathlib import Path

    from agentcollect_pipeline.settings import ENVIRONMENT

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("## Environment variables"):readme.index("## What runs")]
    # The LLM's five variables share one row (`AGENTCOLLECT_LLM_BASE_URL`, `_MODEL`, …).
    missing = [n for n in ENVIRONMENT if f"`{n}`" not in table and not n.startswith("AGENTCOLLECT_LLM_")]
    assert missing == []


def test_qbo_and_netsuite_secrets_are_bound_as_env_vars_not_values():
    qbo = definitions.build_resources("qbo")["ar_source"].qbo
    for field in ("client_id", "client_secret", "refresh_token", "token_encryption_key"):
        assert isinstance(getattr(qbo, field), dg.EnvVar), field
    netsuite = definitions.build_resources("netsuite")["ar_source"].netsuite
    for field in ("client_id", "private_key"):
        assert isinstance(getattr(netsuite, field), dg.EnvVar), field
