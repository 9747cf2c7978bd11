"""`make bench-sync`: full and incremental Bill.com sync of a large book against the local sandbox.

The sandbox runs in its own process (as Bill.com would), seeded with 100,000 invoices and 20,000
customers. Three syncs run through the same code as the assets (BillComARSource + sync_stream):
  1. a full sync with no injected latency, into a fresh database;
  2. a full sync with 20 ms latency per call, into another fresh database;
  3. after 1% of invoices changed, an incremental sync of (2) with 20 ms latency.
The last line printed is one JSON object with the figures the foundation issue sets targets for.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from agentcollect_pipeline.ar_source import sync
from agentcollect_pipeline.ar_source.billcom import BillComARSource
from agentcollect_pipeline.clients.billcom import BillComClient
from agentcollect_pipeline.warehouse.store import Warehouse, WarehouseSessionStore

STREAMS = ["Customer", "CustomerContact", "Invoice", "ReceivedPay"]


class SandboxProcess:
    def __init__(self, invoices: int, customers: int, seed: int):
        command = [
            sys.executable, "-m", "agentcollect_pipeline.sandboxes.billcom",
            "--port", "0", "--seed", str(seed), "--invoices", str(invoices), "--customers", str(customers),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.process.kill()
            raise RuntimeError(f"sandbox did not start: {line!r}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        self.control = httpx.Client(base_url=self.url, timeout=120)

    def stats(self) -> dict:
        return self.control.get("/sandbox/stats").json()

    def reset_stats(self) -> None:
        self.control.post("/sandbox/stats/reset").raise_for_status()

    def latency(self, ms: float) -> None:
        self.control.post("/sandbox/faults", json={"latency_ms": ms}).raise_for_status()

    def credentials(self) -> dict:
        return self.control.get("/sandbox/credentials").json()

    def counts(self) -> dict[str, int]:
        return self.control.get("/sandbox/counts").json()

    def mutate(self, entity: str, count: int) -> list[str]:
        response = self.control.post("/sandbox/mutate", json={"entity": entity, "count": count, "seed": 1})
        response.raise_for_status()
        return response.json()["ids"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def run_sync(sandbox: SandboxProcess, warehouse: Warehouse, *, logout: bool) -> tuple[float, int, dict]:
    """Sync all four streams the way the assets do; returns (wall seconds, calls made, rows changed)."""
    credentials = sandbox.credentials()
    client = BillComClient(
        base_url=f"{sandbox.url}/api/v2",
        username=credentials["username"],
        password=credentials["password"],
        org_id=credentials["org_id"],
        dev_key=credentials["dev_key"],
        session_store=WarehouseSessionStore(warehouse),
    )
    source = BillComARSource(client)
    sandbox.reset_stats()
    started = time.perf_counter()
    changed = {}
    changed["customers"] = sync.sync_stream(sync.streams_for("billcom").customers, source.customers_changed, warehouse).rows_changed
    regions = sync.customer_regions(warehouse, "billcom")
    changed["contacts"] = sync.sync_stream(
        sync.streams_for("billcom").contacts, lambda since: source.contacts_changed(since, regions), warehouse
    ).rows_changed
    currencies = sync.customer_currencies(warehouse, "billcom")
    changed["invoices"] = sync.sync_stream(
        sync.streams_for("billcom").invoices, lambda since: source.invoices_changed(since, currencies.get), warehouse
    ).rows_changed
    changed["received_payments"] = sync.sync_stream(
        sync.streams_for("billcom").received_payments, lambda since: source.received_payments_changed(since, currencies.get), warehouse
    ).rows_changed
    if logout:
        client.logout()
    wall = time.perf_counter() - started
    calls = sandbox.stats()["total_calls"]
    client.close()
    return wall, calls, changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--changed-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2, help="full syncs per latency setting; the fastest counts")
    args = parser.parse_args()

    seeded = time.perf_counter()
    sandbox = SandboxProcess(args.invoices, args.customers, args.seed)
    print(f"sandbox {sandbox.url} seeded in {time.perf_counter() - seeded:.1f}s", file=sys.stderr)
    try:
        counts = sandbox.counts()
        rows = {entity: counts[entity] for entity in STREAMS}
        full_min_calls = 2 + sum(math.ceil(n / 999) for n in rows.values())
        with tempfile.TemporaryDirectory() as tmp:
            # Each full sync runs `repeat` times into a fresh database and the fastest counts: the sync is
            # mostly CPU (parsing, validation, SQLite), so one noisy run would swamp the latency figure.
            def fastest_full_sync(label: str) -> tuple[float, int, Warehouse]:
                best = None
                for attempt in range(args.repeat):
                    warehouse = Warehouse(f"sqlite:///{Path(tmp) / f'{label}_{attempt}.sqlite'}")
                    warehouse.ensure_schema()
                    wall, calls, _ = run_sync(sandbox, warehouse, logout=True)
                    print(f"full sync ({label}) #{attempt + 1}: {wall:.2f}s, {calls} calls", file=sys.stderr)
                    if best is None or wall < best[0]:
                        best = (wall, calls, warehouse)
                return best

            sandbox.latency(0)
            wall_quiet, _, _ = fastest_full_sync("no_latency")
            sandbox.latency(args.latency_ms)
            wall_full, full_calls, warehouse = fastest_full_sync("latency")

            changed_ids = sandbox.mutate("Invoice", round(rows["Invoice"] * args.changed_share))
            _, incr_calls, incr_changed = run_sync(sandbox, warehouse, logout=True)
        detail = {
            "rows": rows,
            "incr_changed_rows": incr_changed,
            "latency_part_s": round(wall_full - wall_quiet, 3),
            "latency_part_target_s": round(1.3 * full_calls * args.latency_ms / 1000 / 3, 3),
            "full_calls_target": full_min_calls + 2 * len(STREAMS),
            "incr_calls_target": sum(
                math.ceil(n / 999) + 2 for n in (len(changed_ids), 0, 0, 0)
            ),
        }
        print(json.dumps(detail), file=sys.stderr)
        print(
            json.dumps(
                {
                    "invoices": rows["Invoice"],
                    "customers": rows["Customer"],
                    "full_calls": full_calls,
                    "full_min_calls": full_min_calls,
                    "full_wall_s": round(wall_full, 3),
                    "full_wall_s_no_latency": round(wall_quiet, 3),
                    "incr_changed": len(changed_ids),
                    "incr_calls": incr_calls,
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                }
            )
        )
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
