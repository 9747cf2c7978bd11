import dagster as dg

from agentcollect_pipeline.jobs import collection_cycle
from agentcollect_pipeline.settings import env

collection_cycle_every_4_hours = dg.ScheduleDefinition(
    name="collection_cycle_every_4_hours",
    job=collection_cycle,
    cron_schedule="0 */4 * * *",
    # Quiet hours are enforced per debtor in code; the sync itself runs on a fixed clock.
    execution_timezone=env("AGENTCOLLECT_SCHEDULE_TIMEZONE") or "UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 4 hours: sync the AR source and refresh the collection tables.",
)
