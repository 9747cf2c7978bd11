"""The one Definitions object of the AgentCollect code location."""

from __future__ import annotations

import warnings

import dagster as dg

from agentcollect_pipeline.assets.ar_source import AR_SOURCE_ASSETS, AR_SOURCE_CHECKS
from agentcollect_pipeline.assets.collections import COLLECTIONS_ASSETS, COLLECTIONS_CHECKS
from agentcollect_pipeline.assets.outreach import (
    OUTREACH_ASSETS,
    send_due_outreach,
    send_due_outreach_every_15_minutes,
)
from agentcollect_pipeline.assets.replies import customer_replies
from agentcollect_pipeline.collection_policy import CollectionPolicyResource
from agentcollect_pipeline.jobs import collection_cycle
from agentcollect_pipeline.outreach.config import build_outreach_resources
from agentcollect_pipeline.payments.assets import PAYMENTS_ASSETS, PAYMENTS_SENSORS, paid_invoices_check
from agentcollect_pipeline.payments.job import post_payment
from agentcollect_pipeline.payments.sensor import payment_events_sensor
from agentcollect_pipeline.resources import (
    AlertWebhookResource,
    ARSyncSettings,
    BillComResource,
    PaymentSettings,
    WarehouseResource,
)
from agentcollect_pipeline.schedules import collection_cycle_every_4_hours
from agentcollect_pipeline.sensors import failed_check_alert, run_failure_alert
from agentcollect_pipeline.settings import default_database_url, env, secret_or_default

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_resources() -> dict[str, dg.ConfigurableResource]:
    warehouse = WarehouseResource(
        database_url=secret_or_default("AGENTCOLLECT_DATABASE_URL", default_database_url())
    )
    return {
        "warehouse": warehouse,
        "billcom": BillComResource(
            base_url=dg.EnvVar("BILLCOM_BASE_URL"),
            username=dg.EnvVar("BILLCOM_USERNAME"),
            password=dg.EnvVar("BILLCOM_PASSWORD"),
            org_id=dg.EnvVar("BILLCOM_ORG_ID"),
            dev_key=dg.EnvVar("BILLCOM_DEV_KEY"),
            warehouse=warehouse,
        ),
        "ar_settings": ARSyncSettings(
            org_currency=env("AGENTCOLLECT_ORG_CURRENCY"),
            org_timezone=env("AGENTCOLLECT_ORG_TIMEZONE"),
            overlap_seconds=int(env("AGENTCOLLECT_SYNC_OVERLAP_SECONDS")),
            max_invalid_share=float(env("AGENTCOLLECT_MAX_INVALID_SHARE")),
        ),
        "alerts": AlertWebhookResource(url=secret_or_default("AGENTCOLLECT_ALERT_WEBHOOK_URL", None)),
        "collection_policy": CollectionPolicyResource(path=env("AGENTCOLLECT_POLICY_PATH")),
        "payment_settings": PaymentSettings(
            batch_size=int(env("AGENTCOLLECT_PAYMENT_BATCH_SIZE")),
            retry_after_minutes=float(env("AGENTCOLLECT_PAYMENT_RETRY_AFTER_MINUTES")),
            max_attempts=int(env("AGENTCOLLECT_PAYMENT_MAX_ATTEMPTS")),
            match_window_days=int(env("AGENTCOLLECT_PAYMENT_MATCH_WINDOW_DAYS")),
            reservation_lease_seconds=float(env("AGENTCOLLECT_PAYMENT_RESERVATION_LEASE_SECONDS")),
            fee_percent=env("AGENTCOLLECT_FEE_PERCENT"),
            fee_attribution_window_days=int(env("AGENTCOLLECT_FEE_ATTRIBUTION_WINDOW_DAYS")),
        ),
        **build_outreach_resources(),
    }


def build_definitions() -> dg.Definitions:
    """Everything in the code location. Tests call it after setting the environment they want."""
    return dg.Definitions(
        assets=[*AR_SOURCE_ASSETS, *COLLECTIONS_ASSETS, *PAYMENTS_ASSETS, *OUTREACH_ASSETS, customer_replies],
        asset_checks=[*AR_SOURCE_CHECKS, *COLLECTIONS_CHECKS],
        jobs=[collection_cycle, post_payment, paid_invoices_check, send_due_outreach],
        schedules=[collection_cycle_every_4_hours, send_due_outreach_every_15_minutes],
        sensors=[run_failure_alert, failed_check_alert, payment_events_sensor, *PAYMENTS_SENSORS],
        resources=build_resources(),
    )


defs = build_definitions()
