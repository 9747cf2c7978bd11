"""Incremental sync of one AR stream into its warehouse table. No Dagster here: the assets call it."""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from agentcollect_pipeline.ar_source.base import ChangeBatch
from agentcollect_pipeline.ar_source.records import region_for_country
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.store import Warehouse, frame_from_rows

PREVIEW_ROWS = 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Stream:
    name: str
    table: sa.Table
    child_table: sa.Table | None = None
    child_parent_column: str | None = None

    @property
    def key(self) -> str:
        return self.table.primary_key.columns.values()[0].name


@dataclass(frozen=True)
class SourceStreams:
    """The four streams of one AR source, named after their tables (the sync_state key)."""

    customers: Stream
    contacts: Stream
    invoices: Stream
    received_payments: Stream


def streams_for(source: str) -> SourceStreams:
    tables = schema.ar_tables(source)
    return SourceStreams(
        customers=Stream(tables.customers.name, tables.customers),
        contacts=Stream(tables.customer_contacts.name, tables.customer_contacts),
        invoices=Stream(tables.invoices.name, tables.invoices),
        received_payments=Stream(
            tables.received_payments.name,
            tables.received_payments,
            child_table=tables.received_payment_lines,
            child_parent_column="received_payment_id",
        ),
    )


@dataclass
class SyncReport:
    stream: str
    mode: str  # full | incremental
    since: datetime | None
    high_water_mark: datetime | None
    rows_read: int
    rows_changed: int  # read rows updated after the previous mark; the overlap re-reads a few unchanged ones
    child_rows_changed: int
    rejected: list[str]
    pages: int
    duration_s: float
    latest_changes: pd.DataFrame = field(repr=False)  # the most recent few, for the preview
    status_counts: dict[str, int] = field(default_factory=dict)


def sync_stream(
    stream: Stream,
    changes: Callable[[datetime | None], Iterator[ChangeBatch]],
    warehouse: Warehouse,
    *,
    full_refresh: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SyncReport:
    """Read what changed since the stream's high-water mark and upsert it in one transaction.

    Rows are gathered first and written at the end, so the transaction (and SQLite's write lock) is held
    only for the write, and a failure mid-read leaves the table and the mark exactly as they were.
    """
    started = time.perf_counter()
    previous_mark = warehouse.high_water_mark(stream.name)
    since = None if full_refresh else previous_mark
    by_key: dict[str, dict] = {}
    children: dict[str, dict] = {}
    rejected: list[str] = []
    pages = 0
    for batch in changes(since):
        pages += 1
        # The overlap window and page shifts can return a record twice; the later copy is the newer one.
        for row in batch.rows:
            by_key[row[stream.key]] = row
        if stream.child_table is not None:
            child_key = stream.child_table.primary_key.columns.values()[0].name
            for child in batch.children:
                children[child[child_key]] = child
        rejected.extend(batch.rejected)
    rows = list(by_key.values())
    marks = [r["updated_at"] for r in rows if r.get("updated_at") is not None]
    if previous_mark is not None:
        marks.append(previous_mark)
    high_water_mark = max(marks, default=None)
    fresh = [r for r in rows if previous_mark is None or r.get("updated_at") is None or r["updated_at"] > previous_mark]
    with warehouse.transaction() as conn:
        warehouse.upsert(conn, stream.table, rows)
        if stream.child_table is not None and stream.child_parent_column:
            # A payment's lines are replaced whole: Bill.com may re-apply a payment to other invoices.
            warehouse.delete_where_in(conn, stream.child_table, stream.child_parent_column, by_key)
            warehouse.upsert(conn, stream.child_table, list(children.values()))
        warehouse.record_sync(
            conn,
            stream=stream.name,
            high_water_mark=high_water_mark,
            synced_at=clock(),
            mode="incremental" if since is not None else "full",
            rows_changed=len(fresh),
        )
    # Only a handful of rows are shown to people; a frame of the whole book would double peak memory.
    latest = heapq.nlargest(PREVIEW_ROWS, fresh, key=lambda r: r.get("updated_at") or _EPOCH)
    return SyncReport(
        stream=stream.name,
        mode="incremental" if since is not None else "full",
        since=since,
        high_water_mark=high_water_mark,
        rows_read=len(rows),
        rows_changed=len(fresh),
        child_rows_changed=len(children),
        rejected=rejected,
        pages=pages,
        duration_s=time.perf_counter() - started,
        latest_changes=frame_from_rows(stream.table, latest),
        status_counts=dict(Counter(r["validation_status"] for r in fresh)),
    )


def customer_currencies(warehouse: Warehouse, source: str) -> dict[str, str]:
    table = schema.ar_tables(source).customers
    with warehouse.engine.connect() as conn:
        return dict(conn.execute(sa.select(table.c.customer_id, table.c.currency)).all())


def customer_regions(warehouse: Warehouse, source: str) -> dict[str, str | None]:
    table = schema.ar_tables(source).customers
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.customer_id, table.c.bill_country)).all()
    return {customer_id: region_for_country(country) for customer_id, country in rows}
