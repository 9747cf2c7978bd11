"""Group `ar_source`: the current state of every customer, contact, invoice and received payment at the AR
source of truth (Bill.com, QuickBooks Online or NetSuite: `AGENTCOLLECT_AR_SOURCE`).

Each asset reads what changed since its high-water mark and upserts it by id into the table named after
it, in one transaction. The assets and tables carry the source's name (`billcom_invoices`, `qbo_invoices`,
`netsuite_invoices`) and have identical columns; only the configured source's assets are in the code
location, so lineage shows which source fed the rules, outreach and payments downstream.
"""


from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial

import dagster as dg
import sqlalchemy as sa

from agentcollect_pipeline.ar_source import sync
from agentcollect_pipeline.ar_source.base import ARSource, ChangeBatch
from agentcollect_pipeline.ar_source.resource import ARSourceResource
from agentcollect_pipeline.assets.metadata import definition_metadata as _definition_metadata
from agentcollect_pipeline.assets.metadata import preview
from agentcollect_pipeline.resources import ARSyncSettings, WarehouseResource
from agentcollect_pipeline.settings import AR_SOURCE_NAMES
from agentcollect_pipeline.warehouse.store import Warehouse

GROUP = "ar_source"
OWNERS = ["team:finance-data"]


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


# How each stream asks the source for its changes, given the source and the warehouse (for lookups).
ChangesFor = Callable[[ARSource, Warehouse], Callable[[datetime | None], Iterator[ChangeBatch]]]


def _sync_asset(
    kind: str, stream: sync.Stream, description: str, changes_for: ChangesFor, deps: list
) -> dg.AssetsDefinition:
    @dg.asset(
        name=stream.name,
        description=description,
        deps=deps,
        metadata=_definition_metadata(stream.table),
        group_name=GROUP,
        owners=OWNERS,
        kinds={kind, "pandas", "sql"},
        pool="ar_source",
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        ar_source: ARSourceResource,
        warehouse: WarehouseResource,
        ar_settings: ARSyncSettings,
    ) -> dg.MaterializeResult:
        store = warehouse.get_warehouse()
        changes = changes_for(ar_source.get_source(ar_settings), store)
        return _materialize(context, stream, changes, store, ar_source, config)

    return _asset


def build_ar_source_assets(kind: str) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """The four synced assets of one AR source, named `<kind>_customers` … `<kind>_received_payments`."""
    streams = sync.streams_for(kind)
    source_name = AR_SOURCE_NAMES[kind]
    customers = _sync_asset(
        kind, streams.customers,
        f"Every {source_name} customer (active or not) with billing address, email and phone (E.164 when "
        "dialable). Currency is the customer's invoice currency when the source gives one, else the organisation's.",
        lambda source, store: source.customers_changed,
        deps=[],
    )
    contacts = _sync_asset(
        kind, streams.contacts,
        f"The additional contacts {source_name} keeps per customer (departments, AP clerks), with their email/phone.",
        lambda source, store: partial(source.contacts_changed, customer_regions=sync.customer_regions(store, kind)),
        deps=[customers],
    )
    invoices = _sync_asset(
        kind, streams.invoices,
        f"Every {source_name} AR invoice in every state (open, partial, paid, voided), amounts in cents. The "
        "collection rules derive overdue from due date and amount due.",
        lambda source, store: partial(source.invoices_changed, currency_of=sync.customer_currencies(store, kind).get),
        deps=[customers],
    )
    received_payments = _sync_asset(
        kind, streams.received_payments,
        f"Payments {source_name} has received, one row per payment; how each was applied to invoices is in "
        f"`{streams.received_payments.child_table.name}`, written in the same transaction.",
        lambda source, store: partial(
            source.received_payments_changed, currency_of=sync.customer_currencies(store, kind).get
        ),
        deps=[customers],
    )
    assets = [customers, contacts, invoices, received_payments]
    streams_in_order = (streams.customers, streams.contacts, streams.invoices, streams.received_payments)
    checks = [_invalid_share_check(asset, stream.table) for asset, stream in zip(assets, streams_in_order, strict=True)]
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


