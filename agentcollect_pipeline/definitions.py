"""The one Definitions object of the AgentCollect code location."""

from __future__ import annotations

import dataclasses
import warnings

import dagster as dg

from agentcollect_pipeline.ar_source import sync
from agentcollect_pipeline.ar_source.netsuite_resource import NetSuiteResource
from agentcollect_pipeline.ar_source.qbo_resource import QBOResource
from agentcollect_pipeline.ar_source.resource import ARSourceResource
from agentcollect_pipeline.assets.ar_source import build_ar_source_assets
from agentcollect_pipeline.assets.collections import COLLECTIONS_ASSETS, COLLECTIONS_CHECKS
from agentcollect_pipeline.assets.outreach import (
    OUTREACH_ASSETS,
    send_due_outreach,
    send_due_outreach_every_15_minutes,
)
from agentcollect_pipeline.assets.replies import customer_replies, customer_replies_sensor, reply_notes
from agentcollect_pipeline.collection_policy import CollectionPolicyResource
from agentcollect_pipeline.jobs import collection_cycle
from agentcollect_pipeline.outreach.config import build_outreach_resources
from agentcollect_pipeline.payments.assets import PAYMENTS_ASSETS, build_paid_invoices_lane
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
from agentcollect_pipeline.settings import configured_ar_source, default_database_url, env, secret_or_default

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def _ar_source_resource(kind: str, warehouse: WarehouseResource) -> ARSourceResource:
    """Only the configured source's credentials are bound (and so required)."""
    if kind == "qbo":
        return ARSourceResource(kind=kind, qbo=QBOResource(
            base_url=env("QBO_BASE_URL"),
            token_url=env("QBO_TOKEN_URL"),
            client_id=dg.EnvVar("QBO_CLIENT_ID"),
            client_secret=dg.EnvVar("QBO_CLIENT_SECRET"),
            realm_id=dg.EnvVar("QBO_REALM_ID"),
            refresh_token=dg.EnvVar("QBO_REFRESH_TOKEN"),
            token_encryption_key=dg.EnvVar("AGENTCOLLECT_TOKEN_ENCRYPTION_KEY"),
            warehouse=warehouse,
        ))
    if kind == "netsuite":
        return ARSourceResource(kind=kind, netsuite=NetSuiteResource(
            base_url=env("NETSUITE_BASE_URL"),
            account_id=dg.EnvVar("NETSUITE_ACCOUNT_ID"),
            client_id=dg.EnvVar("NETSUITE_CLIENT_ID"),
            certificate_id=dg.EnvVar("NETSUITE_CERTIFICATE_ID"),
            private_key=dg.EnvVar("NETSUITE_PRIVATE_KEY"),
            max_in_flight=int(env("NETSUITE_MAX_IN_FLIGHT")),
            account_timezone=env("NETSUITE_ACCOUNT_TIMEZONE"),
        ))
    return ARSourceResource(kind=kind, billcom=_billcom_resource(warehouse))


def _billcom_resource(warehouse: WarehouseResource) -> BillComResource:
    return BillComResource(
        base_url=dg.EnvVar("BILLCOM_BASE_URL"),
        username=dg.EnvVar("BILLCOM_USERNAME"),
        password=dg.EnvVar("BILLCOM_PASSWORD"),
        org_id=dg.EnvVar("BILLCOM_ORG_ID"),
        dev_key=dg.EnvVar("BILLCOM_DEV_KEY"),
        v3_base_url=env("BILLCOM_V3_BASE_URL"),
        warehouse=warehouse,
    )


def build_resources(kind: str | None = None) -> dict[str, dg.ConfigurableResource]:
    kind = kind or configured_ar_source()
    warehouse = WarehouseResource(
        database_url=secret_or_default("AGENTCOLLECT_DATABASE_URL", default_database_url())
    )
    return {
        "warehouse": warehouse,
        "ar_source": _ar_source_resource(kind, warehouse),
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


def _fed_by(kind: str, assets: list) -> list:
    """Downstream assets name Bill.com's synced assets as their inputs; point them at the configured
    source's instead, so lineage (and the run's step order) shows which source fed the rules, outreach
    and payments."""
    if kind == "billcom":
        return assets
    billcom, configured = sync.streams_for("billcom"), sync.streams_for(kind)
    replacements = {
        dg.AssetKey(getattr(billcom, f.name).name): dg.AssetKey(getattr(configured, f.name).name)
        for f in dataclasses.fields(sync.SourceStreams)
    }
    # with_attributes rewires the op's inputs too (map_asset_specs would change only the drawn lineage).
    return [
        asset.replace_attributes(deps=[dg.AssetDep(replacements.get(d.asset_key, d.asset_key)) for d in asset.deps])
        if isinstance(asset, dg.AssetSpec)
        else asset.with_attributes(asset_key_replacements=replacements)
        for asset in assets
    ]


def build_definitions() -> dg.Definitions:
    """Everything in the code location, for the AR source AGENTCOLLECT_AR_SOURCE names (refused at load when
    the configuration could record a payment twice). Tests call it after setting the environment they want."""
    kind = configured_ar_source()
    source_assets, source_checks = build_ar_source_assets(kind)
    paid_invoices_check, paid_invoices_sensors = build_paid_invoices_lane(kind)
    downstream = _fed_by(kind, [*COLLECTIONS_ASSETS, *PAYMENTS_ASSETS, *OUTREACH_ASSETS, customer_replies])
    return dg.Definitions(
        assets=[*source_assets, *downstream],
        asset_checks=[*source_checks, *COLLECTIONS_CHECKS],
        jobs=[collection_cycle, post_payment, paid_invoices_check, send_due_outreach, reply_notes],
        schedules=[collection_cycle_every_4_hours, send_due_outreach_every_15_minutes],
        sensors=[run_failure_alert, failed_check_alert, payment_events_sensor, *paid_invoices_sensors,
                 customer_replies_sensor],
        resources=build_resources(kind),
    )


defs = build_definitions()
