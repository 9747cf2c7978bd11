"""Group `ar_source`: the current state of every customer, contact, invoice and received payment at the AR
source of truth (Bill.com, QuickBooks Online or NetSuite: `AGENTCOLLECT_AR_SOURCE`).

Each asset reads what changed since its high-water mark and upserts it by id into the table named after
it, in one transaction. The assets and tables carry the source's name (`billcom_invoices`, `qbo_invoices`,
`netsuite_invoices`) and have identical columns; only the configured source's assets are in the code
location, so lineage shows which source fed the rules, outreach and payments downstream.
"""


from collections.abc import Callable, Iterator
from datetime import datetime

import dagster as dg
import sqlalchemy as sa

from agentcollect_pipeline.ar_source import sync
from agentcollect_pipeline.ar_source.base import ChangeBatch
from agentcollect_pipeline.ar_source.resource import ARSourceResource
from agentcollect_pipeline.assets.metadata import definition_metadata as _definition_metadata
from agentcollect_pipeline.assets.metadata import preview
from agentcollect_pipeline.resources import ARSyncSettings, WarehouseResource
from agentcollect_pipeline.warehouse.store import Warehouse

GROUP = "ar_source"
OWNERS = ["team:finance-data"]
SOURCE_NAMES = {"billcom": "Bill.com", "qbo": "QuickBooks Online", "netsuite": "NetSuite"}


class SyncConfig(dg.Config):
    full_refresh: bool = False
    """Ignore the high-water mark and read every record again (e.g. after restoring the database)."""


def _materialize(
    context: dg.AssetExecutionContext,
    stream: sync.Stream,
    changes: Callable[[datetime | None], Iterator[ChangeBatch]],
    warehouse: Warehouse,
    ar_source: ARSourceResource,
    config: SyncConfig,
) -> dg.MaterializeResult:
    calls_before = ar_source.api_calls()
    report = sync.sync_stream(stream, changes, warehouse, full_refresh=config.full_refresh)
    api_calls = ar_source.api_calls() - calls_before
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


def build_ar_source_assets(kind: str) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """The four synced assets of one AR source, named `<kind>_customers` … `<kind>_received_payments`."""
    streams = sync.streams_for(kind)
    source_name = SOURCE_NAMES[kind]
    common = dict(group_name=GROUP, owners=OWNERS, kinds={kind, "pandas", "sql"}, pool="ar_source")

    @dg.asset(
        name=streams.customers.name,
        description=f"Every {source_name} customer (active or not) with billing address, email and phone (E.164 "
        "when dialable). Currency is the customer's invoice currency when the source gives one, else the "
        "organisation's.",
        metadata=_definition_metadata(streams.customers.table),
        **common,
    )
    def customers(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        ar_source: ARSourceResource,
        warehouse: WarehouseResource,
        ar_settings: ARSyncSettings,
    ) -> dg.MaterializeResult:
        source = ar_source.get_source(ar_settings)
        store = warehouse.get_warehouse()
        return _materialize(context, streams.customers, source.customers_changed, store, ar_source, config)

    @dg.asset(
        name=streams.contacts.name,
        description=f"The additional contacts {source_name} keeps per customer (departments, AP clerks), with "
        "their email/phone.",
        deps=[customers],
        metadata=_definition_metadata(streams.contacts.table),
        **common,
    )
    def customer_contacts(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        ar_source: ARSourceResource,
        warehouse: WarehouseResource,
        ar_settings: ARSyncSettings,
    ) -> dg.MaterializeResult:
        source = ar_source.get_source(ar_settings)
        store = warehouse.get_warehouse()
        regions = sync.customer_regions(store, kind)
        return _materialize(
            context, streams.contacts, lambda since: source.contacts_changed(since, regions), store, ar_source, config
        )

    @dg.asset(
        name=streams.invoices.name,
        description=f"Every {source_name} AR invoice in every state (open, partial, paid, voided), amounts in "
        "cents. The collection rules derive overdue from due date and amount due.",
        deps=[customers],
        metadata=_definition_metadata(streams.invoices.table),
        **common,
    )
    def invoices(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        ar_source: ARSourceResource,
        warehouse: WarehouseResource,
        ar_settings: ARSyncSettings,
    ) -> dg.MaterializeResult:
        source = ar_source.get_source(ar_settings)
        store = warehouse.get_warehouse()
        currencies = sync.customer_currencies(store, kind)
        return _materialize(
            context, streams.invoices, lambda since: source.invoices_changed(since, currencies.get), store,
            ar_source, config,
        )

    @dg.asset(
        name=streams.received_payments.name,
        description=f"Payments {source_name} has received, one row per payment; how each was applied to "
        f"invoices is in `{streams.received_payments.child_table.name}`, written in the same transaction.",
        deps=[customers],
        metadata=_definition_metadata(streams.received_payments.table),
        **common,
    )
    def received_payments(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        ar_source: ARSourceResource,
        warehouse: WarehouseResource,
        ar_settings: ARSyncSettings,
    ) -> dg.MaterializeResult:
        source = ar_source.get_source(ar_settings)
        store = warehouse.get_warehouse()
        currencies = sync.customer_currencies(store, kind)
        return _materialize(
            context, streams.received_payments,
            lambda since: source.received_payments_changed(since, currencies.get), store, ar_source, config,
        )

    assets = [customers, customer_contacts, invoices, received_payments]
    checks = [
        _invalid_share_check(asset, stream.table)
        for asset, stream in zip(
            assets, (streams.customers, streams.contacts, streams.invoices, streams.received_payments), strict=True
        )
    ]
    return assets, checks


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


