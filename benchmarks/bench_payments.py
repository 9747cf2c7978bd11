"""`make bench-payments`: 200 signed payment events over a minute, through the real Dagster daemon on PostgreSQL.

What runs, each in its own process group (as in production):
  - a fresh PostgreSQL database for the Dagster instance and another for the project database, created
    from AGENTCOLLECT_TEST_POSTGRES_URL (default postgresql+psycopg2://postgres@127.0.0.1:5432/postgres);
  - DAGSTER_HOME in a temporary folder, its dagster.yaml on that PostgreSQL (scheme postgresql+psycopg2,
    connection values from DAGSTER_PG_* variables so nothing secret is on a command line), with the
    production concurrency settings of deploy/dagster.yaml, the `billcom` pool set to 3, and the run
    queue checked every second with threaded launches (the one change from deploy/dagster.yaml);
  - the Bill.com sandbox, the webhook receiver (`agentcollect webhooks`), and `dagster-daemon run -w
    workspace.yaml` with payment_events_sensor every 5 s (AGENTCOLLECT_PAYMENT_SENSOR_INTERVAL_SECONDS).
One warm-up event is posted first (not counted), so code-server start-up is not in the figures. Then 200
events, each on its own open invoice (full or partial amounts), are POSTed signed over ~60 s, and 20 of
them are re-delivered. Latency per event = payments_posted.decided_at (Bill.com's ReceivedPay id
recorded) - payment_events.received_at (the receiver stored it). Duplicates = ReceivedPays at Bill.com
beyond one per posting key. Everything is stopped (killpg) and both databases dropped at the end.
Last line: {"events", "posted", "duplicates", "p50_s", "p95_s"}; target p95 < 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa

from agentcollect_pipeline.ar_source import sync
from agentcollect_pipeline.ar_source.billcom import BillComARSource
from agentcollect_pipeline.ar_source.billcom_records import invoice_row
from agentcollect_pipeline.clients.billcom import BillComClient
from agentcollect_pipeline.money import from_minor_units
from agentcollect_pipeline.payments.intake import SIGNATURE_HEADER, sign
from agentcollect_pipeline.warehouse.payments_schema import payment_events, payments_posted
from agentcollect_pipeline.warehouse.store import Warehouse, WarehouseSessionStore

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "bench-payments-webhook-secret"
DAGSTER_YAML = """\
storage:
  postgres:
    postgres_db:
      username: {env: DAGSTER_PG_USERNAME}
%(password)s      hostname: {env: DAGSTER_PG_HOST}
      db_name: {env: DAGSTER_PG_DB}
      port: {env: DAGSTER_PG_PORT}
      scheme: postgresql+psycopg2
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: 1
# The one change from deploy/dagster.yaml, recommended for the payments lane: look at the run queue every
# second (default 5) and launch dequeued runs in threads, so a payment run waits seconds, not a queue cycle.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
run_monitoring:
  enabled: true
telemetry:
  enabled: false
"""


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class Group:
    """A child process in its own session, so killpg stops it and everything it started."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path, ready: str | None = None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, start_new_session=True, text=True,
            stdout=subprocess.PIPE if ready else self._log, stderr=self._log,
        )
        self.first_line = ""
        if ready:
            self.first_line = self.process.stdout.readline()
            if ready not in self.first_line:
                self.stop()
                raise RuntimeError(f"{name} did not start: {self.first_line!r}; see {log_path}")

    @property
    def url(self) -> str:
        return self.first_line.strip().rsplit(" ", 1)[-1]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        # Workers the daemon launched share its process group; make sure none outlives it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `share` of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))
    return ordered[int(rank) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="spread the events over this long")
    parser.add_argument("--redeliver", type=int, default=20, help="events sent a second time (must be ignored)")
    parser.add_argument("--sensor-interval", type=int, default=5)
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=300.0, help="wait this long after the last event")
    parser.add_argument("--keep", action="store_true", help="keep DAGSTER_HOME, logs and both databases to inspect")
    args = parser.parse_args()

    admin_url = sa.make_url(
        os.environ.get("AGENTCOLLECT_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    )
    tag = uuid.uuid4().hex[:10]
    databases = {"dagster": f"ac_bench_{tag}_dagster", "warehouse": f"ac_bench_{tag}_warehouse"}
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    home = Path(tempfile.mkdtemp(prefix="ac_bench_payments_"))
    groups: list[Group] = []
    warehouse: Warehouse | None = None
    try:
        with admin.connect() as conn:
            for name in databases.values():
                conn.execute(sa.text(f'create database "{name}"'))
        warehouse_url = admin_url.set(database=databases["warehouse"]).render_as_string(hide_password=False)
        password = admin_url.password
        (home / "dagster.yaml").write_text(
            DAGSTER_YAML % {"password": "      password: {env: DAGSTER_PG_PASSWORD}\n" if password else ""}
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_USERNAME": admin_url.username or "postgres",
            "DAGSTER_PG_HOST": admin_url.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(admin_url.port or 5432),
            "DAGSTER_PG_DB": databases["dagster"],
            "AGENTCOLLECT_DATABASE_URL": warehouse_url,
            "AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET": SECRET,
            "AGENTCOLLECT_PAYMENT_SENSOR_INTERVAL_SECONDS": str(args.sensor_interval),
            "PYTHONUNBUFFERED": "1",
        }
        if password:
            env["DAGSTER_PG_PASSWORD"] = password

        sandbox = Group(
            "sandbox",
            [sys.executable, "-m", "agentcollect_pipeline.sandboxes.billcom", "--port", "0", "--seed", "7",
             "--invoices", str(args.invoices), "--customers", str(args.customers)],
            env, home / "sandbox.log", ready="listening on",
        )
        groups.append(sandbox)
        control = httpx.Client(base_url=sandbox.url, timeout=60)
        credentials = control.get("/sandbox/credentials").json()
        env.update(
            BILLCOM_BASE_URL=f"{sandbox.url}/api/v2", BILLCOM_USERNAME=credentials["username"],
            BILLCOM_PASSWORD=credentials["password"], BILLCOM_ORG_ID=credentials["org_id"],
            BILLCOM_DEV_KEY=credentials["dev_key"],
        )

        # The customers a collection cycle would have synced: they give each invoice its currency.
        warehouse = Warehouse(warehouse_url)
        warehouse.ensure_schema()
        client = BillComClient(base_url=env["BILLCOM_BASE_URL"], username=credentials["username"],
                               password=credentials["password"], org_id=credentials["org_id"],
                               dev_key=credentials["dev_key"], session_store=WarehouseSessionStore(warehouse))
        source = BillComARSource(client)
        sync.sync_stream(sync.streams_for("billcom").customers, source.customers_changed, warehouse)
        currencies = sync.customer_currencies(warehouse, "billcom")
        client.close()
        now = datetime.now(UTC)
        candidates = []
        # Amounts as Decimal: a JSON float would (rightly) be refused as money.
        for raw in json.loads(control.get("/sandbox/entities/Invoice").content, parse_float=Decimal):
            row = invoice_row(raw, currency_of=currencies.get, default_currency="USD", synced_at=now)
            if row["validation_status"] == "valid" and row["is_active"] and (row["amount_due_cents"] or 0) >= 2:
                candidates.append(row)
        if len(candidates) < args.events + 1:
            raise RuntimeError(f"only {len(candidates)} open valid invoices in the sandbox; seed more")

        subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "billcom", "3"],
                       cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        receiver = Group(
            "receiver", [sys.executable, "-m", "agentcollect_pipeline.cli", "webhooks", "--port", "0"],
            env, home / "receiver.log", ready="webhook receiver on",
        )
        groups.append(receiver)
        daemon = Group("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, home / "daemon.log")
        groups.append(daemon)
        http = httpx.Client(base_url=receiver.url, timeout=30)

        def send(event: dict) -> dict:
            body = json.dumps(event).encode()
            headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(SECRET, body, int(time.time()))}
            response = http.post("/webhooks/payments", content=body, headers=headers)
            response.raise_for_status()
            return response.json()

        def event_for(i: int, invoice: dict) -> dict:
            due = invoice["amount_due_cents"]
            cents = due if i % 2 == 0 else due // 2  # half full payments, half partial
            return {
                "event_id": f"bench-{tag}-{i}", "occurred_at": datetime.now(UTC).isoformat(),
                "amount": str(from_minor_units(cents, invoice["currency"])), "currency": invoice["currency"],
                "invoice_id": invoice["invoice_id"], "method": "ach", "reference": f"TRACE {i}", "payer": "bench",
            }

        def posted_count(prefix: str) -> int:
            with warehouse.engine.connect() as conn:
                return conn.execute(
                    sa.select(sa.func.count()).select_from(payments_posted).where(
                        payments_posted.c.event_id.like(f"{prefix}%"), payments_posted.c.received_payment_id.is_not(None)
                    )
                ).scalar_one()

        warmup, *invoices = candidates[: args.events + 1]
        log(f"sandbox {sandbox.url}, receiver {receiver.url}, daemon pid {daemon.process.pid}, DAGSTER_HOME {home}")
        send({**event_for(0, warmup), "event_id": f"warmup-{tag}"})
        deadline = time.monotonic() + 180
        while posted_count("warmup-") < 1:
            if daemon.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"warm-up event was not posted; see {daemon.log_path}")
            time.sleep(1)
        log("warm-up event posted; sending the events")

        gap = args.seconds / max(args.events - 1, 1)
        started = time.monotonic()
        sent_at0 = time.time()
        replies = Counter()
        redeliver_every = max(args.events // max(args.redeliver, 1), 1) if args.redeliver else 0
        sent_events = []
        for i, invoice in enumerate(invoices):
            target = started + i * gap
            time.sleep(max(0.0, target - time.monotonic()))
            event = event_for(i, invoice)
            sent_events.append(event)
            replies[send(event)["status"]] += 1
            if redeliver_every and i % redeliver_every == redeliver_every - 1 and replies["redelivered"] < args.redeliver:
                replies["redelivered"] += 1
                replies[f"redelivery_{send(sent_events[i // 2])['status']}"] += 1
        log(f"sent {len(invoices)} events in {time.monotonic() - started:.1f}s: {dict(replies)}")

        prefix = f"bench-{tag}-"
        deadline = time.monotonic() + args.timeout
        while (done := posted_count(prefix)) < len(invoices):
            if daemon.process.poll() is not None:
                raise RuntimeError(f"the daemon exited; see {daemon.log_path}")
            if time.monotonic() > deadline:
                log(f"timed out with {done} of {len(invoices)} posted")
                break
            time.sleep(1)

        with warehouse.engine.connect() as conn:
            rows = conn.execute(
                sa.select(payment_events.c.event_id, payment_events.c.received_at, payments_posted.c.decided_at,
                          payments_posted.c.status, payments_posted.c.posting_key)
                .select_from(payment_events.outerjoin(payments_posted, payments_posted.c.event_sequence == payment_events.c.sequence))
                .where(payment_events.c.event_id.like(f"{prefix}%"))
            ).all()
        latencies = [(r.decided_at - r.received_at).total_seconds() for r in rows if r.status == "posted"]
        keys = {r.posting_key for r in rows if r.posting_key}
        at_billcom = Counter(p["refNumber"] for p in control.get("/sandbox/entities/ReceivedPay").json())
        duplicates = sum(n - 1 for key, n in at_billcom.items() if key in keys and n > 1)
        statuses = Counter(r.status or "undecided" for r in rows)

        os.environ["DAGSTER_HOME"] = str(home)
        for name in ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB"):
            if name in env:
                os.environ[name] = env[name]
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name="post_payment"))
            run_statuses = Counter(r.status.value for r in runs)
            records = instance.get_run_records(filters=dg.RunsFilter(job_name="post_payment"))
            durations = [(r.end_time - r.start_time) for r in records if r.start_time and r.end_time]
            for r in sorted(records, key=lambda r: r.create_timestamp):
                created = r.create_timestamp.timestamp()
                log(f"run {r.dagster_run.tags.get('dagster/run_key')}: "
                    f"{r.dagster_run.tags.get('agentcollect/payment_events')} events, created +{created - sent_at0:.1f}s, "
                    f"queued+launch {(r.start_time or created) - created:.1f}s, "
                    f"ran {((r.end_time or 0) - (r.start_time or 0)):.1f}s, {r.dagster_run.status.value}")
        log(f"events stored: {len(rows)}; ledger: {dict(statuses)}; post_payment runs: {dict(run_statuses)}, "
            f"run wall median {statistics.median(durations) if durations else 0:.1f}s")
        if latencies:
            log(f"latency s: min {min(latencies):.1f}, p50 {percentile(latencies, 0.5):.1f}, "
                f"p95 {percentile(latencies, 0.95):.1f}, max {max(latencies):.1f}")
        result = {
            "events": len(rows),
            "posted": statuses.get("posted", 0),
            "duplicates": duplicates,
            "p50_s": round(percentile(latencies, 0.5), 2) if latencies else None,
            "p95_s": round(percentile(latencies, 0.95), 2) if latencies else None,
        }
    finally:
        for group in reversed(groups):
            group.stop()
        if warehouse is not None:
            warehouse.engine.dispose()
        if args.keep:
            log(f"kept {home} and databases {', '.join(databases.values())}: drop them when done")
        else:
            with admin.connect() as conn:
                for name in databases.values():
                    conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
            shutil.rmtree(home, ignore_errors=True)
        admin.dispose()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
