"""Group `ar_source`: the current state of every Bill.com customer, contact, invoice and received payment.

Each asset reads what changed since its high-water mark and upserts it by id into the table named after
it, in one transaction. The tables are snapshots of Bill.com; later assets (eligibility, outreach) read them.
"""


from collections.abc import Callable, Iterator
from datetime import datetime

import dagster as dg
import sqlalchemy as sa

from agentcollect_pipeline.ar_source import sync
from agentcollect_pipeline.ar_source.base import ChangeBatch
from agentcollect_pipeline.assets.metadata import definition_metadata as _definition_metadata
from agentcollect_pipeline.assets.metadata import preview
from agentcollect_pipeline.resources import ARSyncSettings, BillComResource, WarehouseResource
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.store import Warehouse

GROUP = "ar_source"
OWNERS = ["team:finance-data"]
KINDS = {"billcom", "pandas", "sql"}


class SyncConfig(dg.Config):
    full_refresh: bool = False
    """Ignore the high-water mark and read every record again (e.g. after restoring the database)."""


def _materialize(
    context: dg.AssetExecutionContext,
    stream: sync.Stream,
    changes: Callable[[datetime | None], Iterator[ChangeBatch]],
    warehouse: Warehouse,
    billcom: BillComResource,
    config: SyncConfig,
) -> dg.MaterializeResult:
    client = billcom.get_client()
    calls_before = client.stats()["total_calls"]
    report = sync.sync_stream(stream, changes, warehouse, full_refresh=config.full_refresh)
    api_calls = client.stats()["total_calls"] - calls_before
    for problem in report.rejected[:20]:
        context.log.warning("%s: rejected a record: %s", stream.name, problem)
    total = warehouse.count(stream.table)
    invalid = warehouse.count(stream.table, stream.table.c.validation_status == "invalid")
    warnings = warehouse.count(stream.table, stream.table.c.validation_status == "warning")
    context.log.info(
        "%s: %s sync, %d rows changed, %d API calls, %d pages, %.2fs",
        stream.name, report.mode, report.rows_changed, api_calls, report.pages, report.duration_s,
    )
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(total),
        "dagster/table_name": stream.table.name,
        "rows_changed": dg.MetadataValue.int(report.rows_changed),
        "rows_read": dg.MetadataValue.int(report.rows_read),
        "rows_invalid": dg.MetadataValue.int(invalid),
        "rows_with_warnings": dg.MetadataValue.int(warnings),
        "records_rejected": dg.MetadataValue.int(len(report.rejected)),
        "sync_mode": report.mode,
        "high_water_mark": dg.MetadataValue.text(report.high_water_mark.isoformat() if report.high_water_mark else ""),
        "api_calls": dg.MetadataValue.int(api_calls),
        "pages": dg.MetadataValue.int(report.pages),
        "duration_s": dg.MetadataValue.float(round(report.duration_s, 3)),
        "preview_changed_rows": preview(report.latest_changes),
    }
    if report.child_rows_changed:
        metadata["line_rows_changed"] = dg.MetadataValue.int(report.child_rows_changed)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    pool="billcom",
    metadata=_definition_metadata(schema.billcom_customers),
)
def billcom_customers(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    billcom: BillComResource,
    warehouse: WarehouseResource,
    ar_settings: ARSyncSettings,
) -> dg.MaterializeResult:
    """Every Bill.com customer (active or not) with billing address, email and phone (E.164 when dialable).

    Currency is the customer's invoice currency when Bill.com gives one, else the organisation's.
    """
    source = billcom.get_source(ar_settings)
    store = warehouse.get_warehouse()
    return _materialize(context, sync.CUSTOMERS, source.customers_changed, store, billcom, config)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    pool="billcom",
    deps=[billcom_customers],
    metadata=_definition_metadata(schema.billcom_customer_contacts),
)
def billcom_customer_contacts(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    billcom: BillComResource,
    warehouse: WarehouseResource,
    ar_settings: ARSyncSettings,
) -> dg.MaterializeResult:
    """The additional contacts Bill.com keeps per customer (departments, AP clerks), with their email/phone."""
    source = billcom.get_source(ar_settings)
    store = warehouse.get_warehouse()
    regions = sync.customer_regions(store)
    return _materialize(
        context, sync.CONTACTS, lambda since: source.contacts_changed(since, regions), store, billcom, config
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    pool="billcom",
    deps=[billcom_customers],
    metadata=_definition_metadata(schema.billcom_invoices),
)
def billcom_invoices(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    billcom: BillComResource,
    warehouse: WarehouseResource,
    ar_settings: ARSyncSettings,
) -> dg.MaterializeResult:
    """Every Bill.com AR invoice in every state (open, partial, paid, scheduled, inactive), amounts in cents.

    Bill.com has no overdue flag: the collection rules derive it from due date and amount due.
    """
    source = billcom.get_source(ar_settings)
    store = warehouse.get_warehouse()
    currencies = sync.customer_currencies(store)
    return _materialize(
        context, sync.INVOICES, lambda since: source.invoices_changed(since, currencies.get), store, billcom, config
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    pool="billcom",
    deps=[billcom_customers],
    metadata=_definition_metadata(schema.billcom_received_payments),
)
def billcom_received_payments(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    billcom: BillComResource,
    warehouse: WarehouseResource,
    ar_settings: ARSyncSettings,
) -> dg.MaterializeResult:
    """Payments Bill.com has received (online through Bill.com, or recorded), one row per payment.

    How each payment was applied to invoices is in `billcom_received_payment_lines`, written in the
    same transaction.
    """
    source = billcom.get_source(ar_settings)
    store = warehouse.get_warehouse()
    currencies = sync.customer_currencies(store)
    return _materialize(
        context,
        sync.RECEIVED_PAYMENTS,
        lambda since: source.received_payments_changed(since, currencies.get),
        store,
        billcom,
        config,
    )


AR_SOURCE_ASSETS = [billcom_customers, billcom_customer_contacts, billcom_invoices, billcom_received_payments]


def _invalid_share_check(asset: dg.AssetsDefinition, table: sa.Table) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name=f"{table.name}_invalid_share_within_bound",
        blocking=True,
        description=(
            "Fails when the share of records marked invalid (bad amounts, unknown customers, bad dates) "
            "exceeds ARSyncSettings.max_invalid_share, so collection never runs on a broken book."
        ),
    )
    def _check(warehouse: WarehouseResource, ar_settings: ARSyncSettings) -> dg.AssetCheckResult:
        store = warehouse.get_warehouse()
        total = store.count(table)
        invalid = store.count(table, table.c.validation_status == "invalid")
        share = invalid / total if total else 0.0
        examples = (
            store.read_frame(table, table.c.validation_status == "invalid")
            .head(5)[[table.primary_key.columns.values()[0].name, "validation_errors"]]
            .astype("string")
        )
        return dg.AssetCheckResult(
            passed=share <= ar_settings.max_invalid_share,
            metadata={
                "rows": total,
                "invalid_rows": invalid,
                "invalid_share": round(share, 4),
                "bound": ar_settings.max_invalid_share,
                "examples": dg.MetadataValue.md(examples.to_markdown(index=False) if len(examples) else "none"),
            },
        )

    return _check


AR_SOURCE_CHECKS = [
    _invalid_share_check(billcom_customers, schema.billcom_customers),
    _invalid_share_check(billcom_customer_contacts, schema.billcom_customer_contacts),
    _invalid_share_check(billcom_invoices, schema.billcom_invoices),
    _invalid_share_check(billcom_received_payments, schema.billcom_received_payments),
]
