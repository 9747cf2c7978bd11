"""`make demo` and `make ui`: the whole pipeline on local sandboxes and SQLite — no credentials, no internet.

Both start, on 127.0.0.1, the AR source's sandbox (Bill.com by default; QuickBooks Online or NetSuite with
`--ar-source`), the Twilio and SendGrid sandboxes and our webhook receiver (payments, Twilio and SendGrid
callbacks), and point every variable the code location reads at them.

- `demo` (one process): `collection_cycle`, then `send_due_outreach` once with the planner's clock set to
  the next 10:00 in the organisation's timezone (quiet hours hold in each debtor's local time, and the demo
  may run at night), then one signed payment event posted to `POST /webhooks/payments`,
  `payment_events_sensor` evaluated once and its `post_payment` run executed on the same Dagster instance.
- `ui`: the same services on fixed ports, then `dagster dev` (UI + daemon) in that environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import sqlalchemy as sa

from agentcollect_pipeline.money import format_money
from agentcollect_pipeline.sandboxes.ar_sources import ARSandbox

AR_SOURCE_POOL_LIMIT = 3  # Bill.com allows 3 requests in flight per org (QBO 10 per realm), across all runs
TWILIO_FROM = "+15005550006"  # Twilio's "always valid" test sender
EMAIL_FROM = "ar@demo.agentcollect.example"
REPLY_TO = "replies@parse.demo.agentcollect.example"  # the Inbound Parse domain of the demo
# Every variable the demo sets (or clears) in its own environment; nothing else is touched.
DEMO_VARIABLES = (
    "DAGSTER_HOME",
    "AGENTCOLLECT_HOME",
    "AGENTCOLLECT_DATABASE_URL",
    "AGENTCOLLECT_AR_SOURCE",
    "BILLCOM_BASE_URL",
    "BILLCOM_USERNAME",
    "BILLCOM_PASSWORD",
    "BILLCOM_ORG_ID",
    "BILLCOM_DEV_KEY",
    "BILLCOM_V3_BASE_URL",
    "QBO_BASE_URL",
    "QBO_TOKEN_URL",
    "QBO_CLIENT_ID",
    "QBO_CLIENT_SECRET",
    "QBO_REALM_ID",
    "QBO_REFRESH_TOKEN",
    "AGENTCOLLECT_TOKEN_ENCRYPTION_KEY",
    "NETSUITE_BASE_URL",
    "NETSUITE_ACCOUNT_ID",
    "NETSUITE_CLIENT_ID",
    "NETSUITE_CERTIFICATE_ID",
    "NETSUITE_PRIVATE_KEY",
    "NETSUITE_ACCOUNT_TIMEZONE",
    "BILLCOM_WEBHOOK_SECURITY_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "TWILIO_BASE_URL",
    "SENDGRID_API_KEY",
    "SENDGRID_BASE_URL",
    "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY",
    "AGENTCOLLECT_EMAIL_FROM",
    "AGENTCOLLECT_PUBLIC_BASE_URL",
    "AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET",
    "AGENTCOLLECT_UNSUBSCRIBE_SECRET",
    "AGENTCOLLECT_OUTREACH_DRY_RUN",
    "AGENTCOLLECT_EMAIL_REPLY_TO",
    "AGENTCOLLECT_INBOUND_PARSE_TOKEN",
    "AGENTCOLLECT_LLM_BASE_URL",
    "AGENTCOLLECT_LLM_MODEL",
    "AGENTCOLLECT_LLM_API_KEY",
    "AGENTCOLLECT_ALERT_WEBHOOK_URL",
)


def prepare_dagster_home(home: Path) -> Path:
    """A persistent DAGSTER_HOME on SQLite, so `make ui` shows the demo's runs afterwards."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def set_pool_limits(instance: dg.DagsterInstance) -> None:
    instance.event_log_storage.set_concurrency_slots("ar_source", AR_SOURCE_POOL_LIMIT)


def demo_database_url() -> str:
    """The demo's project database: `agentcollect.sqlite` under AGENTCOLLECT_HOME (default `.agentcollect`)."""
    from agentcollect_pipeline.settings import env

    home = Path(env("AGENTCOLLECT_HOME") or ".agentcollect").resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'agentcollect.sqlite'}"


# -- the services -------------------------------------------------------------------------------------


class _LateApp:
    """An ASGI app whose target is set after its server started: the receiver needs its own URL first."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        await self.target(scope, receive, send)


@dataclass
class Services:
    ar: ARSandbox
    twilio: Any
    sendgrid: Any
    urls: dict[str, str]
    environment: dict[str, str]
    secret: str
    servers: list = field(default_factory=list)


@contextlib.contextmanager
def services(*, invoices: int, customers: int, seed: int, database_url: str, dagster_home: Path,
             ports: dict[str, int] | None = None, pump: bool = False, ar_source: str = "billcom",
             llm: bool = False) -> Iterator[Services]:
    """Start the sandboxes and the receiver on 127.0.0.1 and set (and yield) the environment that uses them."""
    from agentcollect_pipeline.sandboxes import ar_sources
    from agentcollect_pipeline.sandboxes.sendgrid import SendGridSandbox
    from agentcollect_pipeline.sandboxes.server import serve_in_thread
    from agentcollect_pipeline.sandboxes.twilio import TwilioSandbox
    from agentcollect_pipeline.webhooks.app import receiver_from_environment

    ports = ports or {}
    ar = ar_sources.start(ar_source, seed=seed, invoices=invoices, customers=customers)
    twilio = TwilioSandbox()
    sendgrid = SendGridSandbox(deliver_after_s=0.5, webhook_timeout_s=30)
    late = _LateApp()
    servers = []
    try:
        for name, app in (("ar_source", ar.app), ("twilio", twilio.app), ("sendgrid", sendgrid.app),
                          ("webhooks", late)):
            servers.append(serve_in_thread(app, port=ports.get(name, 0)))
        urls = dict(zip(("ar_source", "twilio", "sendgrid", "webhooks"), (s.url for s in servers), strict=True))
        secret = "demo-only-" + secrets.token_hex(16)  # a fresh signing secret per start, never a real one
        environment = {
            "DAGSTER_HOME": str(dagster_home),
            "AGENTCOLLECT_DATABASE_URL": database_url,
            **ar.environment(urls["ar_source"]),
            "BILLCOM_WEBHOOK_SECURITY_KEY": "demo-only-" + secrets.token_hex(16),
            "TWILIO_ACCOUNT_SID": twilio.credentials["account_sid"],
            "TWILIO_AUTH_TOKEN": twilio.credentials["auth_token"],
            "TWILIO_FROM_NUMBER": TWILIO_FROM,
            "TWILIO_BASE_URL": urls["twilio"],
            "SENDGRID_API_KEY": sendgrid.api_key,
            "SENDGRID_BASE_URL": urls["sendgrid"],
            "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY": sendgrid.event_webhook_public_key,
            "AGENTCOLLECT_EMAIL_FROM": EMAIL_FROM,
            "AGENTCOLLECT_PUBLIC_BASE_URL": urls["webhooks"],
            "AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET": secret,
            "AGENTCOLLECT_UNSUBSCRIBE_SECRET": "demo-only-" + secrets.token_hex(16),
            "AGENTCOLLECT_OUTREACH_DRY_RUN": "false",
            # Replies: Reply-To names the attempt (replies+att_…@…); the Parse URL carries a secret token.
            "AGENTCOLLECT_EMAIL_REPLY_TO": REPLY_TO,
            "AGENTCOLLECT_INBOUND_PARSE_TOKEN": "demo-only-" + secrets.token_hex(16),
        }
        for name in ("AGENTCOLLECT_LLM_BASE_URL", "AGENTCOLLECT_LLM_MODEL", "AGENTCOLLECT_LLM_API_KEY"):
            os.environ.pop(name, None)  # sandbox facts go to the local LLM sandbox (--llm) or to no LLM at all
        if llm:
            from agentcollect_pipeline.sandboxes.llm import DEFAULT_API_KEY, LLMSandbox

            servers.append(serve_in_thread(LLMSandbox().app))
            environment.update(AGENTCOLLECT_LLM_BASE_URL=servers[-1].url, AGENTCOLLECT_LLM_MODEL="sandbox-drafter",
                               AGENTCOLLECT_LLM_API_KEY=DEFAULT_API_KEY)
        os.environ.update(environment)
        # Alerts of the demo's runs stay in the log: a real Slack webhook must not hear about sandbox runs.
        os.environ.pop("AGENTCOLLECT_ALERT_WEBHOOK_URL", None)
        late.target = receiver_from_environment(database_url)
        sendgrid.event_webhook_url = f"{urls['webhooks']}/webhooks/sendgrid/events"
        sendgrid.inbound_parse_url = f"{urls['webhooks']}/webhooks/sendgrid/inbound/{environment['AGENTCOLLECT_INBOUND_PARSE_TOKEN']}"
        twilio.set_inbound_url(f"{urls['webhooks']}/webhooks/twilio/inbound")
        if pump:  # real-time status callbacks and events, for a long-running `make ui`
            twilio.start_pump(0.5)
            sendgrid.start_pump(0.5)
        yield Services(ar=ar, twilio=twilio, sendgrid=sendgrid, urls=urls, environment=environment,
                       secret=secret, servers=servers)
    finally:
        for sandbox in (twilio, sendgrid):
            with contextlib.suppress(Exception):
                sandbox.stop_pump()
        for server in reversed(servers):
            server.stop()


def next_local_ten(timezone: str, now: datetime | None = None) -> datetime:
    """The next 10:00 in `timezone` (today's if it is still before 10:00 there)."""
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(timezone))
    ten = local.replace(hour=10, minute=0, second=0, microsecond=0)
    return ten if ten > local else (ten + timedelta(days=1)).replace(hour=10)


def signed_post(url: str, secret: str, event: dict) -> dict:
    import httpx

    from agentcollect_pipeline.payments.intake import SIGNATURE_HEADER, sign

    body = json.dumps(event).encode()
    headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(secret, body, int(time.time()))}
    response = httpx.post(f"{url}/webhooks/payments", content=body, headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()


# -- make demo ----------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    collection_success: bool = False
    outreach_success: bool = False
    payment_success: bool = False
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, status) -> count
    emails_received: int = 0
    texts_received: int = 0
    calls_received: int = 0
    event: dict = field(default_factory=dict)
    source_payments: list[dict] = field(default_factory=list)  # payments at the AR source carrying the event's key
    amount_due_before: Decimal | None = None
    amount_due_after: Decimal | None = None
    notes: list[str] = field(default_factory=list)  # the customer's notes naming the posting key
    replies: Any = None  # agent.demo_replies.ReplyFlow: the replies, their effects and notes

    @property
    def success(self) -> bool:
        return (self.collection_success and self.outreach_success and self.payment_success
                and self.replies is not None and self.replies.success)


def _quiet_logs() -> dict:
    return {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def demo(*, invoices: int, customers: int, seed: int, home: Path, ar_source: str = "billcom",
         llm: bool = False) -> DemoResult:
    """The demo, returning what happened (tests assert on it); `run_demo` prints and returns an exit code."""
    result = DemoResult()
    dagster_home = prepare_dagster_home(home)
    database_url = demo_database_url()
    database_file = Path(database_url.removeprefix("sqlite:///"))
    if database_file.exists():
        # The sandbox is seeded afresh each time; a database left by an earlier demo would disagree with it.
        for leftover in (database_file, *(database_file.with_name(database_file.name + s) for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        print(f"fresh demo database (the previous {database_file} was removed)")
    with services(invoices=invoices, customers=customers, seed=seed, database_url=database_url,
                  dagster_home=dagster_home, ar_source=ar_source, llm=llm) as running, \
            dg.DagsterInstance.get() as instance:
        # Built after the environment is set: the definitions read their resources from it.
        from agentcollect_pipeline.definitions import build_definitions
        from agentcollect_pipeline.resources import WarehouseResource

        defs = build_definitions()
        set_pool_limits(instance)
        urls = running.urls
        print(f"{running.ar.display_name} sandbox {urls['ar_source']} ({customers} customers, {invoices} invoices); "
              f"Twilio sandbox "
              f"{urls['twilio']}; SendGrid sandbox {urls['sendgrid']}; webhook receiver {urls['webhooks']}")
        # The definitions bind secrets with EnvVar, resolved only inside runs: the demo's own handles.
        warehouse = WarehouseResource(database_url=database_url).get_warehouse()

        print(f"\n== 1. collection_cycle: sync {running.ar.display_name}, eligibility, cases, aging, outreach plan")
        cycle = defs.resolve_job_def("collection_cycle").execute_in_process(
            instance=instance, raise_on_error=False, run_config=_quiet_logs())
        result.collection_success = cycle.success
        _print_cycle(cycle, warehouse, running.ar.kind)
        if not cycle.success:
            return result

        print("\n== 2. send_due_outreach: the first wave")
        from agentcollect_pipeline.settings import env

        timezone = env("AGENTCOLLECT_ORG_TIMEZONE") or "America/New_York"
        now = next_local_ten(timezone)
        print(f"   SIMULATED TIME: planned and sent as if it were {now.isoformat()} ({timezone}), the next 10:00 —"
              " quiet hours hold in each debtor's local time, and it may be night where you are")
        config = {"config": {"now": now.astimezone(UTC).isoformat()}}
        # The sandboxes deliver while the run sends, as the real ones do: SendGrid posts its signed events
        # (in small batches, as they happen), Twilio its status callbacks, to our receiver.
        running.sendgrid.start_pump(0.25)
        running.twilio.start_pump(0.25)
        try:
            outreach = defs.resolve_job_def("send_due_outreach").execute_in_process(
                instance=instance, raise_on_error=False,
                run_config={**_quiet_logs(), "ops": {"outreach_plan": config, "outreach_attempts": config}})
        finally:
            running.sendgrid.stop_pump()
            running.twilio.stop_pump()
        result.outreach_success = outreach.success
        time.sleep(running.sendgrid.deliver_after_s + 0.1)
        running.sendgrid.tick()
        running.twilio.tick()
        _print_outreach(result, outreach, warehouse, running)
        if not outreach.success:
            return result

        print("\n== 3. a payment arrives: POST /webhooks/payments -> payment_events_sensor -> post_payment")
        _payment(result, defs, instance, warehouse, running)

        print("\n== 4. customers reply: an SMS and an email reach the receiver, are understood, change the case")
        from agentcollect_pipeline.agent.demo_replies import run_reply_flow

        result.replies = run_reply_flow(defs, instance, warehouse, running, running.ar.kind, TWILIO_FROM, _quiet_logs())

        print("\n== where to look")
        print(f"   project database: {database_file}")
        print(f"     tables: {running.ar.kind}_invoices, invoice_eligibility, collection_cases, ar_aging, outreach_plan,\n"
              "             outreach_attempts, payment_events, payments_posted, customer_notes, needs_review")
        print(f"     e.g. sqlite3 {database_file} 'select channel, status, count(*) from outreach_attempts group by 1, 2'")
        print(f"   Dagster runs (DAGSTER_HOME={dagster_home}): make ui — opens the UI on these runs with the sandboxes"
              " running, to materialize, send outreach and post payments yourself")
    return result


def run_demo(*, invoices: int, customers: int, seed: int, home: Path, ar_source: str = "billcom",
             llm: bool = False) -> int:
    started = time.monotonic()
    result = demo(invoices=invoices, customers=customers, seed=seed, home=home, ar_source=ar_source, llm=llm)
    verdict = "SUCCESS" if result.success else "FAILURE"
    print(f"\ndemo {verdict} in {time.monotonic() - started:.0f} s")
    return 0 if result.success else 1


def _print_cycle(cycle: dg.ExecuteInProcessResult, warehouse, kind: str) -> None:
    from agentcollect_pipeline.warehouse import collections_schema as cs
    from agentcollect_pipeline.warehouse import schema

    tables = schema.ar_tables(kind)
    print(f"   run {cycle.run_id}: {'SUCCESS' if cycle.success else 'FAILURE'}")
    for table in (tables.customers, tables.customer_contacts, tables.invoices, tables.received_payments):
        flagged = warehouse.count(table, table.c.validation_status != "valid")
        print(f"   {table.name:<30} {warehouse.count(table):>6} rows ({flagged} flagged invalid/warning)")
    with warehouse.engine.connect() as conn:
        eligible = conn.execute(sa.text(
            "select e.currency, count(*), sum(i.amount_due_cents) from invoice_eligibility e "
            f"join {tables.invoices.name} i on i.invoice_id = e.invoice_id "
            "where e.eligible group by e.currency order by e.currency")).all()
        reasons = conn.execute(sa.text(
            "select reason, count(*) from invoice_eligibility where not eligible "
            "group by reason order by count(*) desc")).all()
    print(f"   open collection cases: {warehouse.count(cs.collection_cases)}; eligible invoices: "
          + ", ".join(f"{n} {c} ({format_money(due, c)})" for c, n, due in eligible))
    print("   not collected, by first reason: " + ", ".join(f"{r} {n}" for r, n in reasons))


def _print_outreach(result: DemoResult, run: dg.ExecuteInProcessResult, warehouse, running: Services) -> None:
    print(f"   run {run.run_id}: {'SUCCESS' if run.success else 'FAILURE'}")
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select channel, status, count(*) from outreach_attempts group by channel, status order by 1, 2")).all()
        waiting = conn.execute(sa.text(
            "select why, count(*) from outreach_plan where state = 'waiting' group by why")).all()
    result.attempts = {(channel, status): count for channel, status, count in rows}
    shown = ", ".join(f"{channel} {status}: {count}" for (channel, status), count in result.attempts.items())
    print(f"   outreach_attempts by channel and status: {shown or 'none'}")
    why: dict[str, int] = {}
    for reason, count in waiting:
        reason = str(reason or "")
        # "outside 08:00-21:00 in America/Los_Angeles" -> one bucket for every zone
        key = reason.split(" in ")[0] + " (debtor's local time)" if reason.startswith("outside ") else reason.split(":")[0]
        why[key] = why.get(key, 0) + count
    if why:
        print("   not contacted now, by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(why.items(), key=lambda i: -i[1])))
    mails = running.sendgrid.mails()
    result.emails_received = len(mails)
    result.texts_received = len(running.twilio.messages())
    result.calls_received = len(running.twilio.calls())
    events: dict[str, int] = {}
    for event in running.sendgrid.events:
        events[event.get("event", "?")] = events.get(event.get("event", "?"), 0) + 1
    print(f"   SendGrid sandbox received {result.emails_received} emails (events posted back to our webhook: "
          f"{', '.join(f'{k} {v}' for k, v in events.items()) or 'none'}); Twilio sandbox received "
          f"{result.texts_received} texts and {result.calls_received} calls")
    if not (result.texts_received or result.calls_received):
        print("   (texts and calls go only to numbers with a consent row: "
              "agentcollect contacts record-consent --channel sms --address +1… --by … --source …)")
    if mails:
        request = mails[0]["request"]
        to = request["personalizations"][0]["to"][0]["email"]
        print(f"   first email: to {to!r}, subject {request.get('subject')!r}")


def run_payment_sensor_once(defs: dg.Definitions, instance: dg.DagsterInstance, warehouse) -> list:
    """One payment_events_sensor tick, as the daemon would evaluate it, and the post_payment runs it requests."""
    from agentcollect_pipeline.payments.sensor import payment_events_sensor
    from agentcollect_pipeline.resources import WarehouseResource

    warehouse_resource = WarehouseResource(database_url=warehouse.engine.url.render_as_string(hide_password=False))
    resources = {"warehouse": warehouse_resource, "payment_settings": defs.resources["payment_settings"]}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        tick = payment_events_sensor.evaluate_tick(context)
    requests = list(tick.run_requests or [])
    print(f"   payment_events_sensor: {len(requests)} run request(s) {[r.run_key for r in requests]}")
    job = defs.resolve_job_def("post_payment")
    return [
        job.execute_in_process(
            run_config={**(request.run_config or {}), **_quiet_logs()},
            tags={**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": "payment_events_sensor"},
            instance=instance, raise_on_error=False)
        for request in requests
    ]


def _pick_invoice(warehouse, kind: str) -> dict | None:
    """An open invoice of an eligible case, preferably one we have just contacted about (USD first)."""
    with warehouse.engine.connect() as conn:
        contacted = [r[0] for r in conn.execute(sa.text(
            "select invoice_ids from outreach_attempts where status not in ('reserved', 'rejected') "
            "order by total_due_cents desc"))]
        rows = conn.execute(sa.text(
            "select i.invoice_id, i.invoice_number, i.customer_id, i.currency, i.amount_due_cents, "
            "coalesce(c.company_name, c.name) as customer_name from invoice_eligibility e "
            f"join {kind}_invoices i on i.invoice_id = e.invoice_id "
            f"left join {kind}_customers c on c.customer_id = i.customer_id "
            "where e.eligible and i.amount_due_cents > 1 order by (i.currency = 'USD') desc, i.amount_due_cents desc"
        )).mappings().all()
    by_id = {row["invoice_id"]: dict(row) for row in rows}
    for ids in contacted:
        for invoice_id in (ids or "").split(","):
            if invoice_id in by_id:
                return by_id[invoice_id]
    return dict(rows[0]) if rows else None


def _payment(result: DemoResult, defs: dg.Definitions, instance: dg.DagsterInstance, warehouse,
             running: Services) -> None:
    from agentcollect_pipeline.money import from_minor_units
    from agentcollect_pipeline.payments.posting import posting_key
    from agentcollect_pipeline.warehouse.payments_schema import payments_posted

    invoice = _pick_invoice(warehouse, running.ar.kind)
    if invoice is None:
        print("   no open eligible invoice to pay")
        return
    currency = invoice["currency"]
    half_cents = invoice["amount_due_cents"] // 2  # a partial payment: half of what is due
    amount = from_minor_units(half_cents, currency)
    result.amount_due_before = running.ar.amount_due(invoice["invoice_id"])
    event = {
        "event_id": f"demo-{secrets.token_hex(6)}",
        "occurred_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "amount": str(amount),
        "currency": currency,
        "invoice_id": invoice["invoice_id"],
        "method": "ach",
        "reference": "DEMO ACH TRACE 000000001",
        "payer": invoice["customer_name"] or "Demo payer",
    }
    result.event = event
    answer = signed_post(running.urls["webhooks"], running.secret, event)
    print(f"   webhook: {format_money(half_cents, currency)} (half of the "
          f"{format_money(invoice['amount_due_cents'], currency)} due) on {invoice['invoice_number']} of "
          f"{invoice['customer_name']} -> {answer}")

    runs = run_payment_sensor_once(defs, instance, warehouse)
    for run in runs:
        print(f"   post_payment run {run.run_id}: {'SUCCESS' if run.success else 'FAILURE'}")

    key = posting_key("webhook", event["event_id"])
    with warehouse.engine.connect() as conn:
        ledger = conn.execute(sa.select(payments_posted).where(payments_posted.c.posting_key == key)).first()
    result.source_payments = running.ar.payments_with_reference(key)
    result.amount_due_after = running.ar.amount_due(invoice["invoice_id"])
    result.notes = [note for note in running.ar.notes(invoice["customer_id"]) if key in note]
    result.payment_success = bool(runs) and all(r.success for r in runs) and len(result.source_payments) == 1
    print(f"   payments_posted: {ledger.status if ledger else 'no row'} (posting key {key})")
    for pay in result.source_payments:
        print(f"   {running.ar.display_name} payment {pay['id']}: {pay['amount']} {currency}, reference {key}, "
              f"on invoice {invoice['invoice_number']}")
    print(f"   invoice {invoice['invoice_number']} amount due: {result.amount_due_before} -> "
          f"{result.amount_due_after} {currency}")
    for note in result.notes:
        print(f"   note on customer {invoice['customer_id']} in {running.ar.display_name}: {note}")
    if not result.notes:
        print(f"   no note found on customer {invoice['customer_id']}")


# -- make ui ------------------------------------------------------------------------------------------

UI_PORTS = {"ar_source": 8081, "twilio": 8082, "sendgrid": 8083, "webhooks": 8090}


def _workspace() -> Path:
    repository = Path(__file__).resolve().parents[1] / "workspace.yaml"
    return repository if repository.exists() else Path("workspace.yaml")


def write_example_event(running: Services, path: Path) -> dict | None:
    """A payment event file for a real open invoice of the sandbox (half of its amount due)."""
    open_invoices = [i for i in running.ar.open_invoices() if i["currency"] == "USD" and i["amount_due"] > 1]
    if not open_invoices:
        return None
    invoice = max(open_invoices, key=lambda i: i["amount_due"])
    event = {
        "event_id": f"ui-{secrets.token_hex(6)}",
        "occurred_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "amount": str((invoice["amount_due"] / 2).quantize(Decimal("0.01"))),
        "currency": "USD",
        "invoice_id": invoice["invoice_id"],
        "method": "ach",
        "reference": "DEMO ACH TRACE 000000002",
        "payer": "Demo payer",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(event, indent=2) + "\n")
    return event


def run_ui(*, invoices: int, customers: int, seed: int, home: Path, port: int, sandbox_port: int,
           twilio_port: int = UI_PORTS["twilio"], sendgrid_port: int = UI_PORTS["sendgrid"],
           webhooks_port: int = UI_PORTS["webhooks"], ar_source: str = "billcom") -> int:
    """`make ui`: the Dagster UI and daemon on the demo's instance, with the sandboxes and the receiver."""
    import subprocess

    dagster_home = prepare_dagster_home(home)
    database_url = demo_database_url()
    ports = {"ar_source": sandbox_port, "twilio": twilio_port, "sendgrid": sendgrid_port, "webhooks": webhooks_port}
    with services(invoices=invoices, customers=customers, seed=seed, database_url=database_url,
                  dagster_home=dagster_home, ports=ports, pump=True, ar_source=ar_source) as running:
        # A quicker payment sensor than production's 15 s, unless you chose one.
        os.environ.setdefault("AGENTCOLLECT_PAYMENT_SENSOR_INTERVAL_SECONDS", "5")
        with dg.DagsterInstance.get() as instance:
            set_pool_limits(instance)
        event_file = Path(database_url.removeprefix("sqlite:///")).parent / "demo_payment_event.json"
        event = write_example_event(running, event_file)
        hooks = running.urls["webhooks"]
        print(f"{running.ar.display_name} sandbox {running.urls['ar_source']}  Twilio sandbox {running.urls['twilio']}  "
              f"SendGrid sandbox {running.urls['sendgrid']}  webhook receiver {hooks}")
        print(f"project database {database_url}; DAGSTER_HOME={dagster_home}")
        print(f"Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops everything)")
        if event is not None:
            sign = (f"AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET={running.secret} {sys.executable} "
                    f"-m agentcollect_pipeline.demo sign {event_file}")
            print(f"\nPost a payment ({event['amount']} {event['currency']} on invoice {event['invoice_id']}; "
                  f"edit {event_file} — a new event_id for each new event):")
            print(f"  curl -sS -X POST {hooks}/webhooks/payments -H 'content-type: application/json' \\\n"
                  f"    -H \"X-AgentCollect-Signature: $({sign})\" \\\n"
                  f"    --data-binary @{event_file}")
            print("then watch payment_events_sensor request a post_payment run (Automation > Sensors, Runs).\n",
                  flush=True)
        command = [str(Path(sys.executable).with_name("dagster")), "dev", "-w", str(_workspace()),
                   "-h", "127.0.0.1", "-p", str(port)]
        try:
            return subprocess.call(command, env={**os.environ})
        except KeyboardInterrupt:
            return 0


def _sign_main(argv: list[str]) -> int:
    """`python -m agentcollect_pipeline.demo sign FILE.json`: the X-AgentCollect-Signature value for FILE's bytes."""
    from agentcollect_pipeline.payments.intake import sign

    if len(argv) != 2 or argv[0] != "sign":
        print("usage: python -m agentcollect_pipeline.demo sign FILE.json  (reads AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET)",
              file=sys.stderr)
        return 2
    secret = os.environ.get("AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET")
    if not secret:
        print("AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET is not set", file=sys.stderr)
        return 2
    print(sign(secret, Path(argv[1]).read_bytes(), int(time.time())))
    return 0


if __name__ == "__main__":
    sys.exit(_sign_main(sys.argv[1:]))
