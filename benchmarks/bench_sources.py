"""`make bench-sources`: the same AR source work on Bill.com, QuickBooks Online and NetSuite sandboxes.

For each source, through the same code the assets and the payments lane run (ARSourceResource.get_source +
sync_stream + ARSource.record_payment), against a sandbox served on a loopback port of this process:
  1. a full sync of the four streams into a fresh SQLite database (wall seconds, API calls);
  2. 1% of the invoices paid at the source, then an incremental sync (calls, rows changed);
  3. the pre-send freshness read of 500 invoices (calls: batched, never one per invoice);
  4. 50 payments recorded one by one (p50/p95 seconds), then the same 50 again straight to the source,
     bypassing our posting ledger: what the source itself does with a repeated write. QBO (PaymentRefNum
     pre-check + requestid) and NetSuite (external-id upsert) keep 50; Bill.com has no idempotency key and
     records 100, which is why exactly-once lives in our ledger (payments_posted) for every source.
Prints one JSON object per source, then a summary line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg

from agentcollect_pipeline.ar_source import sync
from agentcollect_pipeline.ar_source.base import PaymentToRecord
from agentcollect_pipeline.money import to_minor_units
from agentcollect_pipeline.payments.posting import posting_key
from agentcollect_pipeline.sandboxes import ar_sources
from agentcollect_pipeline.sandboxes.server import serve_in_thread


@contextlib.contextmanager
def _bound(kind: str, running: ar_sources.ARSandbox, url: str, folder: str):
    """The code location's own resources, bound from the environment the sandbox asks for (as `dagster dev`
    would bind them): (ARSourceResource, ARSource, Warehouse)."""
    from agentcollect_pipeline.definitions import build_resources

    os.environ.update({**running.environment(url), "AGENTCOLLECT_DATABASE_URL": f"sqlite:///{Path(folder) / 'bench.sqlite'}"})
    resources = build_resources(kind)
    with dg.build_resources({name: resources[name] for name in ("warehouse", "ar_source", "ar_settings")}) as bound:
        yield bound.ar_source, bound.ar_source.get_source(bound.ar_settings), bound.warehouse.get_warehouse()


def _sync_all(kind: str, source, store) -> dict[str, int]:
    streams = sync.streams_for(kind)
    changed = {"customers": sync.sync_stream(streams.customers, source.customers_changed, store).rows_changed}
    regions = sync.customer_regions(store, kind)
    changed["contacts"] = sync.sync_stream(
        streams.contacts, lambda since: source.contacts_changed(since, regions), store).rows_changed
    currencies = sync.customer_currencies(store, kind)
    changed["invoices"] = sync.sync_stream(
        streams.invoices, lambda since: source.invoices_changed(since, currencies.get), store).rows_changed
    changed["received_payments"] = sync.sync_stream(
        streams.received_payments, lambda since: source.received_payments_changed(since, currencies.get),
        store).rows_changed
    return changed


def _valid_customers(store, kind: str) -> set[str]:
    """Active customers the sync found valid: the seeded books also hold broken and inactive ones."""
    table = sync.streams_for(kind).customers.table
    frame = store.read_frame(table, (table.c.validation_status != "invalid") & table.c.is_active)
    return set(frame["customer_id"].astype(str))


def _pay_at_source(running: ar_sources.ARSandbox, invoice_id: str) -> None:
    if running.kind == "billcom":
        running.sandbox.pay_online(invoice_id)
    else:
        running.sandbox.pay_invoice(invoice_id)


def bench(kind: str, invoices: int, customers: int, payments: int) -> dict:
    running = ar_sources.start(kind, seed=7, invoices=invoices, customers=customers)
    server = serve_in_thread(running.app)
    try:
        with tempfile.TemporaryDirectory() as folder, _bound(kind, running, server.url, folder) as (resource, source, store):

            calls = resource.api_calls()
            started = time.perf_counter()
            _sync_all(kind, source, store)
            full_s, full_calls = time.perf_counter() - started, resource.api_calls() - calls

            valid = _valid_customers(store, kind)
            open_invoices = [i for i in running.open_invoices() if i["customer_id"] in valid]
            rng = random.Random(1)
            for invoice in rng.sample(open_invoices, max(1, invoices // 100)):
                _pay_at_source(running, invoice["invoice_id"])
            time.sleep(1.1)  # past the second the changes were stamped in
            calls = resource.api_calls()
            changed = _sync_all(kind, source, store)
            incr_calls = resource.api_calls() - calls

            still_open = [i for i in running.open_invoices() if i["currency"] == "USD" and i["customer_id"] in valid]
            wanted = [i["invoice_id"] for i in still_open[:500]]
            calls = resource.api_calls()
            fresh = source.read_invoices(wanted, lambda _: "USD")
            fresh_calls = resource.api_calls() - calls
            assert len(fresh) == len(wanted)

            to_pay = still_open[500:500 + payments]
            latencies = []
            records = []
            for n, invoice in enumerate(to_pay):
                record = PaymentToRecord(
                    customer_id=invoice["customer_id"], invoice_id=invoice["invoice_id"],
                    amount_cents=to_minor_units(invoice["amount_due"], "USD") // 2, currency="USD",
                    payment_date=date.today(), method="ach", reference=posting_key("bench", f"{kind}-{n}"),
                    description="bench")
                records.append(record)
                started = time.perf_counter()
                source.record_payment(record)
                latencies.append(time.perf_counter() - started)
            for record in records:  # the same writes again, without our ledger in front
                source.record_payment(record)
            at_source = sum(len(running.payments_with_reference(r.reference)) for r in records)
    finally:
        server.stop()
    latencies.sort()
    return {
        "source": kind,
        "invoices": invoices,
        "customers": customers,
        "full_sync_s": round(full_s, 2),
        "full_sync_calls": full_calls,
        "incremental_rows_changed": changed,
        "incremental_calls": incr_calls,
        "freshness_invoices": len(wanted),
        "freshness_calls": fresh_calls,
        "payments": len(records),
        "payment_p50_s": round(statistics.median(latencies), 4),
        "payment_p95_s": round(latencies[int(len(latencies) * 0.95) - 1], 4),
        "payments_at_source_after_direct_replay": at_source,
        "source_level_idempotency": at_source == len(records),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--payments", type=int, default=50)
    parser.add_argument("--sources", default="billcom,qbo,netsuite")
    args = parser.parse_args()
    results = []
    for kind in args.sources.split(","):
        result = bench(kind, args.invoices, args.customers, args.payments)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(json.dumps({"at": datetime.now(UTC).isoformat(timespec="seconds"),
                      "freshness_calls": {r["source"]: r["freshness_calls"] for r in results},
                      "source_level_idempotency": {r["source"]: r["source_level_idempotency"] for r in results}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
