"""A month replayed through the real jobs against the local sandboxes (outside CI): `make replay-month`.

The project's clock is injectable (run config `now` on the outreach assets and on `collection_cases`, `as_of`
on the rules assets); the Bill.com, Twilio and SendGrid sandboxes and our webhook receiver share one frozen
sandbox clock that this script moves. Every 4 simulated hours `collection_cycle` runs (sync, rules, cases,
plan); every 15 simulated minutes `send_due_outreach` runs (plan, freshness check, reserve, send, confirm),
for `--days` days on a small seeded book, while the world moves: debtors pay (through the Bill.com payment
link they were sent, or otherwise online), text STOP or unsubscribe, and the providers deliver their signed
status callbacks and events to the receiver. Once a simulated day SendGrid and Twilio each answer 429 until
the senders' retry budget is spent (the attempt is released and sent by a later run, never twice).

Idle 15-minute ticks are skipped when that is safe: the last plan had nothing due, no reservation waits for
reconciliation, no collection cycle ran, and every waiting case's `next_at` (the earliest moment its reason
to wait can clear) is still ahead. The planner is a pure function of the database and the clock, and nothing
that happens between runs (payments, opt-outs, callbacks) can make a step due, so no send is delayed.
`--verify-skips` proves it: on every skipped tick the pure planner runs on the database and must find nothing.

At the end the same invariants as the month simulation test are checked on the ledger, the opt-outs and the
providers' own records (no contact outside quiet hours in every candidate zone, at most the daily cap per
customer per local day, the call caps, no contact after an opt-out or about a paid invoice, consent for texts
and calls, once per (case, step) with exactly one provider message each), and one JSON line is printed:
`{"days": 30, "cycles": …, "sends": …, "violations": 0, "wall_s": …}`. Exit status 1 on any violation.
"""

import argparse
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
FROM = "+15005550006"  # Twilio's always-valid test sender
ORG_TZ = "America/New_York"
NOT_CONTACTS = {"released", "cancelled", "rejected"}  # nobody was reached


class _Late:
    """An ASGI app whose target is set once its server runs (the receiver needs its own public URL)."""

    target: Any = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return
        await self.target(scope, receive, send)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--customers", type=int, default=40)
    parser.add_argument("--invoices", type=int, default=160)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", default="2026-12-01T00:00:00+00:00", help="simulated start (ISO, with offset)")
    parser.add_argument("--policy", type=Path, default=ROOT / "collection_policy.yaml")
    parser.add_argument("--consent-share", type=float, default=0.6, help="numbers with recorded sms/voice consent")
    parser.add_argument("--pay-per-day", type=float, default=0.02, help="chance an open case's debtor pays, per day")
    parser.add_argument("--opt-out-per-day", type=float, default=0.01, help="chance a contacted address opts out, per day")
    parser.add_argument("--no-faults", action="store_true", help="no daily 429 burst from SendGrid and Twilio")
    parser.add_argument("--business-days", action="store_true",
                        help="add business_days_only and two holidays to (a copy of) the policy")
    parser.add_argument("--no-skip", action="store_true", help="run send_due_outreach on every 15-minute tick")
    parser.add_argument("--verify-skips", action="store_true", help="run the pure planner on every skipped tick")
    parser.add_argument("--keep", type=Path, default=None, help="keep the database in this folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    loggers = {name: logging.getLogger(name) for name in ("dagster", "agentcollect_pipeline", "httpx", "twilio",
                                                          "urllib3")}
    levels = {name: logger.level for name, logger in loggers.items()}
    environment = dict(os.environ)
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="replay-month-")) if args.keep is None else args.keep.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            figures = Replay(args, workdir).run()
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
        os.environ.clear()
        os.environ.update(environment)
    figures["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures))
    return 1 if figures["violations"] else 0


class Replay:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.start = datetime.fromisoformat(args.start).astimezone(UTC)
        self.end = self.start + timedelta(days=args.days)
        self.paid_at: dict[str, datetime] = {}
        self.counts: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.problems: list[str] = []

    # -- set-up -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from agentcollect_pipeline.sandboxes.billcom import BillComSandbox, SandboxClock
        from agentcollect_pipeline.sandboxes.sendgrid import SendGridSandbox
        from agentcollect_pipeline.sandboxes.server import serve_in_thread
        from agentcollect_pipeline.sandboxes.twilio import TwilioSandbox

        self.clock = SandboxClock(start=self.start)
        self.billcom = BillComSandbox(clock=self.clock)
        self.billcom.seed(seed=self.args.seed, invoices=self.args.invoices, customers=self.args.customers)
        self.twilio = TwilioSandbox(clock=self.clock)
        self.sendgrid = SendGridSandbox(clock=self.clock)
        late = _Late()
        servers = [serve_in_thread(app) for app in (self.billcom.app, self.twilio.app, self.sendgrid.app, late)]
        try:
            self.urls = dict(zip(("billcom", "twilio", "sendgrid", "webhooks"), (s.url for s in servers), strict=True))
            self._environment()
            self._receiver(late)
            self._definitions()
            return self._month()
        finally:
            for server in reversed(servers):
                with contextlib.suppress(Exception):
                    server.stop()

    def _environment(self) -> None:
        credentials = self.billcom.credentials
        self.database_url = f"sqlite:///{self.workdir / 'agentcollect.sqlite'}"
        self.policy_path = self.args.policy.resolve()
        if self.args.business_days:
            self.policy_path = self.workdir / "collection_policy.yaml"
            self.policy_path.write_text(self.args.policy.read_text() + "\noutreach:\n  business_days_only: true\n"
                                        "  holidays: [2026-12-24, 2026-12-25]\n")
        self.unsubscribe_secret = "replay-only-" + secrets.token_hex(16)
        environment = {
            "DAGSTER_HOME": str(self.workdir / "dagster_home"),
            "AGENTCOLLECT_DATABASE_URL": self.database_url,
            "AGENTCOLLECT_AR_SOURCE": "billcom",
            "AGENTCOLLECT_POLICY_PATH": str(self.policy_path),
            "AGENTCOLLECT_ORG_TIMEZONE": ORG_TZ,
            # The seeded book carries deliberately invalid records; a small one can exceed the 5% default.
            "AGENTCOLLECT_MAX_INVALID_SHARE": "0.25",
            "BILLCOM_BASE_URL": f"{self.urls['billcom']}/api/v2",
            "BILLCOM_V3_BASE_URL": f"{self.urls['billcom']}/connect",
            "BILLCOM_USERNAME": credentials["username"],
            "BILLCOM_PASSWORD": credentials["password"],
            "BILLCOM_ORG_ID": credentials["org_id"],
            "BILLCOM_DEV_KEY": credentials["dev_key"],
            "TWILIO_ACCOUNT_SID": self.twilio.credentials["account_sid"],
            "TWILIO_AUTH_TOKEN": self.twilio.credentials["auth_token"],
            "TWILIO_FROM_NUMBER": FROM,
            "TWILIO_BASE_URL": self.urls["twilio"],
            "SENDGRID_API_KEY": self.sendgrid.api_key,
            "SENDGRID_BASE_URL": self.urls["sendgrid"],
            "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY": self.sendgrid.event_webhook_public_key,
            "AGENTCOLLECT_EMAIL_FROM": "ar@replay.agentcollect.example",
            "AGENTCOLLECT_PUBLIC_BASE_URL": self.urls["webhooks"],
            "AGENTCOLLECT_UNSUBSCRIBE_SECRET": self.unsubscribe_secret,
            "AGENTCOLLECT_OUTREACH_DRY_RUN": "false",
        }
        (self.workdir / "dagster_home").mkdir(exist_ok=True)
        (self.workdir / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        for name in ("AGENTCOLLECT_ALERT_WEBHOOK_URL", "AGENTCOLLECT_LLM_BASE_URL", "AGENTCOLLECT_LLM_MODEL",
                     "AGENTCOLLECT_LLM_API_KEY", "AGENTCOLLECT_EMAIL_REPLY_TO"):
            os.environ.pop(name, None)
        os.environ.update(environment)

    def _receiver(self, late: _Late) -> None:
        """Our webhook receiver on the sandboxes' clock (SendGrid's signed timestamps are simulated time)."""
        from agentcollect_pipeline.outreach.channels import TwilioResource
        from agentcollect_pipeline.resources import _warehouse
        from agentcollect_pipeline.webhooks.outreach import OutreachWebhooks

        self.store = _warehouse(self.database_url)
        token = self.twilio.credentials["auth_token"]
        sender = TwilioResource(account_sid=self.twilio.credentials["account_sid"], auth_token=token,
                                from_number=FROM, base_url=self.urls["twilio"], messages_per_second=0)
        late.target = OutreachWebhooks(
            self.store, twilio_auth_token=token, sendgrid_public_key=self.sendgrid.event_webhook_public_key,
            public_base_url=self.urls["webhooks"], clock=lambda: self.clock.now().timestamp(),
            unsubscribe_secret=self.unsubscribe_secret, sms_sender=sender, default_timezone=ORG_TZ)
        self.sendgrid.event_webhook_url = f"{self.urls['webhooks']}/webhooks/sendgrid/events"
        self.twilio.set_inbound_url(f"{self.urls['webhooks']}/webhooks/twilio/inbound")

    def _definitions(self) -> None:
        """The code location's own jobs and resources (from the environment above). Provider pacing is off:
        it sleeps in real seconds, and the sandboxes enforce no throughput here."""
        from agentcollect_pipeline.definitions import build_definitions

        defs = build_definitions()
        resources = dict(defs.resources)
        resources["twilio"] = resources["twilio"].model_copy(update={"messages_per_second": 0, "calls_per_second": 0})
        resources["sendgrid"] = resources["sendgrid"].model_copy(update={"messages_per_second": 0})
        self.defs = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs,
                                   resources=resources)
        self.cycle_job = self.defs.resolve_job_def("collection_cycle")
        self.send_job = self.defs.resolve_job_def("send_due_outreach")
        self.instance = dg.DagsterInstance.ephemeral()
        from agentcollect_pipeline.collection_policy import CollectionPolicyResource

        self.policy = CollectionPolicyResource(path=str(self.policy_path)).load()
        self.budget = {"sendgrid": resources["sendgrid"].max_attempts, "twilio": resources["twilio"].max_attempts}

    # -- the month ----------------------------------------------------------------------------------

    def _run(self, job, now: datetime) -> None:
        moment = now.isoformat()
        as_of = now.astimezone(ZoneInfo(ORG_TZ)).date().isoformat()
        ops: dict[str, Any] = {}
        nodes = {node.name for node in job.nodes}
        for name in ("invoice_eligibility", "ar_aging"):
            if name in nodes:
                ops[name] = {"config": {"as_of": as_of}}
        if "collection_cases" in nodes:
            ops["collection_cases"] = {"config": {"as_of": as_of, "now": moment}}
        for name in ("outreach_plan", "outreach_attempts"):
            if name in nodes:
                ops[name] = {"config": {"now": moment}}
        config = {"ops": ops, "loggers": {"console": {"config": {"log_level": "ERROR"}}}}
        began = time.monotonic()
        result = job.execute_in_process(run_config=config, instance=self.instance, raise_on_error=False)
        self.seconds[job.name] += time.monotonic() - began
        if not result.success:
            failures = [e.message for e in result.all_events if e.is_failure][:3]
            self.problems.append(f"{job.name} at {moment} failed: {failures}")
            raise RuntimeError(self.problems[-1])

    def _month(self) -> dict[str, Any]:
        from agentcollect_pipeline.outreach import ledger

        step = timedelta(minutes=15)
        t = self.start
        consent_recorded = False
        must_run_send = True
        while t < self.end:
            self.clock.set(t)
            self.twilio.tick()
            self.sendgrid.tick()
            if t.minute == 0:
                self._world_moves(t)
            if t.hour == 15 and t.minute == 0 and not self.args.no_faults:
                # A 429 burst past the retry budget of each sender (SendGrid and Twilio).
                self.sendgrid.inject("http_429", "mail/send", times=self.budget["sendgrid"])
                self.twilio.inject("http_429", "Messages", times=self.budget["twilio"], method="POST")
                self.counts["faults_429"] += 2
            cycle = t.hour % 4 == 0 and t.minute == 0
            if cycle:
                self._run(self.cycle_job, t)
                self.counts["cycles"] += 1
                if not consent_recorded:
                    self._record_consent(ledger)
                    consent_recorded = True
                    self._run(self.cycle_job, t)  # plan again with the consent known
            if self.args.no_skip or cycle or must_run_send or self._due_by(t):
                self._run(self.send_job, t)
                self.counts["send_runs"] += 1
                must_run_send = self._last_plan_had_due() or self._pending_reservations()
            else:
                self.counts["skipped_ticks"] += 1
                if self.args.verify_skips:
                    self._verify_skip(t)
            t += step
        # Let the providers deliver what is still in flight, and settle any reservation.
        self.clock.set(self.end)
        self.twilio.advance(120)
        self.sendgrid.advance(120)
        self._run(self.send_job, self.end + timedelta(minutes=5))
        self.counts["send_runs"] += 1
        return self._figures()

    def _record_consent(self, ledger) -> None:
        from agentcollect_pipeline.warehouse import schema

        phones = sorted(set(self.store.read_frame(schema.billcom_customers)["phone_e164"].dropna()))
        for number in phones:
            if self.rng.random() < self.args.consent_share:
                for channel in ("sms", "voice"):
                    ledger.record_consent(self.store, channel, number, "credit application (replay)", "replay",
                                          now=self.clock.now())

    def _world_moves(self, t: datetime) -> None:
        """Once a simulated hour: some debtors pay, some contacted debtors opt out."""
        from agentcollect_pipeline.warehouse import collections_schema as cs
        from agentcollect_pipeline.warehouse import outreach_schema as os_

        per_hour_pay = self.args.pay_per_day / 24
        links = {p["invoiceId"]: p["token"] for p in self.billcom.payment_links()}
        cases = self.store.read_frame(cs.collection_cases)
        for invoice_ids in cases["invoice_ids"].dropna():
            if self.rng.random() >= per_hour_pay:
                continue
            for invoice_id in invoice_ids.split(","):
                invoice = self.billcom.get("Invoice", invoice_id)
                if invoice["amountDue"] <= 0 or invoice["isActive"] != "1" or invoice_id in self.paid_at:
                    continue
                if invoice_id in links:
                    self.billcom.pay_link(links[invoice_id])
                    self.counts["paid_through_link"] += 1
                else:
                    self.billcom.pay_online(invoice_id)
                self.paid_at[invoice_id] = t
                self.counts["invoices_paid"] += 1
        attempts = self.store.read_frame(os_.outreach_attempts)
        contacted = attempts[~attempts["status"].isin(NOT_CONTACTS)][["channel", "destination"]].drop_duplicates()
        for channel, destination in contacted.itertuples(index=False):
            if self.rng.random() >= self.args.opt_out_per_day / 24:
                continue
            if channel == "email":
                self.sendgrid.unsubscribe(destination)
            else:
                self.twilio.inbound_sms(destination, FROM, "STOP", url=f"{self.urls['webhooks']}/webhooks/twilio/inbound")
            self.counts["opt_outs_sent"] += 1

    def _last_plan_had_due(self) -> bool:
        from agentcollect_pipeline.warehouse import outreach_schema as os_

        with self.store.engine.connect() as conn:
            return bool(conn.execute(sa.select(sa.func.count()).select_from(os_.outreach_plan)
                                     .where(os_.outreach_plan.c.state == "due")).scalar())

    def _pending_reservations(self) -> bool:
        from agentcollect_pipeline.warehouse import outreach_schema as os_

        A = os_.outreach_attempts
        with self.store.engine.connect() as conn:
            return bool(conn.execute(sa.select(sa.func.count()).select_from(A)
                                     .where(A.c.status.in_(("reserved", "released")))).scalar())

    def _due_by(self, t: datetime) -> bool:
        """Whether some waiting case's reason to wait may have cleared by `t` (its next_at has come)."""
        from agentcollect_pipeline.warehouse import outreach_schema as os_

        P = os_.outreach_plan
        with self.store.engine.connect() as conn:
            first = conn.execute(sa.select(sa.func.min(P.c.next_at)).where(P.c.state == "waiting")).scalar()
        return first is not None and first.replace(tzinfo=first.tzinfo or UTC) <= t

    def _verify_skip(self, t: datetime) -> None:
        """The pure planner on the current database must find nothing due at a skipped tick."""
        from agentcollect_pipeline.rules.cadence import contact_points, plan_outreach
        from agentcollect_pipeline.warehouse import collections_schema as cs
        from agentcollect_pipeline.warehouse import outreach_schema as os_
        from agentcollect_pipeline.warehouse import schema

        s = self.store
        customers = s.read_frame(schema.billcom_customers)
        plan = plan_outreach(
            cases=s.read_frame(cs.collection_cases), debtors=customers,
            points=contact_points(customers, s.read_frame(schema.billcom_customer_contacts)),
            opt_outs=s.read_frame(cs.opt_outs), consents=s.read_frame(os_.contact_consents),
            invalid=s.read_frame(os_.invalid_contacts), history=s.read_frame(os_.outreach_attempts), now=t,
            policy=self.policy.outreach, default_timezone=ORG_TZ)
        self.counts["skips_verified"] += 1
        if len(plan.due):
            self.problems.append(f"skipped tick {t.isoformat()} had {len(plan.due)} due action(s)")

    # -- the invariants -----------------------------------------------------------------------------

    def _figures(self) -> dict[str, Any]:
        from agentcollect_pipeline.warehouse import collections_schema as cs
        from agentcollect_pipeline.warehouse import outreach_schema as os_

        attempts = self.store.read_frame(os_.outreach_attempts)
        contacts = attempts[~attempts["status"].isin(NOT_CONTACTS)].copy()
        contacts["at"] = pd.to_datetime(contacts["reserved_at"], utc=True).dt.to_pydatetime()
        violations = self._check(attempts, contacts)
        opt_outs = self.store.read_frame(cs.opt_outs)
        links = self.store.read_frame(os_.invoice_payment_links)
        return {
            "days": self.args.days,
            "cycles": self.counts["cycles"],
            "send_runs": self.counts["send_runs"],
            "skipped_ticks": self.counts["skipped_ticks"],
            "skips_verified": self.counts["skips_verified"],
            "sends": len(contacts),
            "by_channel": {str(k): int(v) for k, v in contacts["channel"].value_counts().items()},
            "by_status": {str(k): int(v) for k, v in attempts["status"].value_counts().items()},
            "cases_contacted": int(contacts["case_id"].nunique()),
            "customers": self.args.customers,
            "invoices": self.args.invoices,
            "invoices_paid": self.counts["invoices_paid"],
            "paid_through_link": self.counts["paid_through_link"],
            "opt_outs": len(opt_outs),
            "faults_429": self.counts["faults_429"],
            "attempts_released_by_429": int(attempts["release_count"].fillna(0).sum()),
            "billcom_payment_links": int(links["payment_link"].notna().sum()) if len(links) else 0,
            "violations": len(violations),
            "violation_examples": violations[:5],
        }

    def _check(self, attempts: pd.DataFrame, contacts: pd.DataFrame) -> list[str]:
        from agentcollect_pipeline.rules.cadence import contact_points
        from agentcollect_pipeline.rules.quiet_hours import address_zones, phone_zones
        from agentcollect_pipeline.warehouse import collections_schema as cs
        from agentcollect_pipeline.warehouse import outreach_schema as os_
        from agentcollect_pipeline.warehouse import schema

        policy = self.policy.outreach
        out = list(self.problems)
        customers = self.store.read_frame(schema.billcom_customers).set_index("customer_id")
        points = contact_points(customers.reset_index(), self.store.read_frame(schema.billcom_customer_contacts))
        first_phone = (points[points["channel"] == "sms"].sort_values(["rank", "address"])
                       .groupby("customer_id")["address"].first().to_dict())
        per_day: Counter = Counter()
        for row in contacts.itertuples():
            info = customers.loc[row.customer_id] if row.customer_id in customers.index else None
            state = info["bill_state"] if info is not None and isinstance(info["bill_state"], str) else None
            country = info["bill_country"] if info is not None and isinstance(info["bill_country"], str) else None
            phone = row.destination if row.channel != "email" else first_phone.get(row.customer_id)
            zones = tuple(dict.fromkeys((*address_zones(state, country), *phone_zones(phone)))) or (ORG_TZ,)
            window = policy.window(row.channel)
            for zone in zones:
                local = row.at.astimezone(ZoneInfo(zone))
                if not window.contains(local):
                    out.append(f"quiet hours: {row.attempt_id} {row.channel} at {local:%Y-%m-%d %H:%M} {zone}")
                if local.date() in policy.holidays or (policy.business_days_only and local.weekday() >= 5):
                    out.append(f"closed day: {row.attempt_id} on {local.date()} in {zone}")
                per_day[(row.customer_id, zone, local.date())] += 1
        for (customer_id, zone, day), n in per_day.items():
            if n > policy.caps.contacts_per_customer_per_day:
                out.append(f"daily cap: {customer_id} contacted {n} times on {day} ({zone})")
        out += self._call_caps(contacts, policy)
        # No contact after an opt-out of that channel and address.
        opt_outs = self.store.read_frame(cs.opt_outs)
        opted = defaultdict(list)
        for channel, address, at in opt_outs[["channel", "address", "opted_out_at"]].itertuples(index=False):
            opted[(channel, address)].append(pd.Timestamp(at).to_pydatetime())
        for row in contacts.itertuples():
            key = (row.channel, row.destination.lower() if row.channel == "email" else row.destination)
            if any(at <= row.at for at in opted.get(key, [])):
                out.append(f"after opt-out: {row.attempt_id} {row.channel} at {row.at} (opted out "
                           f"{min(opted[key])})")
        # Never about a paid invoice.
        for row in contacts.itertuples():
            for invoice_id in row.invoice_ids.split(","):
                paid = self.paid_at.get(invoice_id)
                if paid is not None and paid <= row.at:
                    out.append(f"about a paid invoice: {row.attempt_id} names {invoice_id} paid {paid}")
        # Consent for automated texts and calls, recorded before the contact.
        consents = self.store.read_frame(os_.contact_consents)
        consented = defaultdict(list)
        for channel, address, at in consents[["channel", "address", "recorded_at"]].itertuples(index=False):
            consented[(channel, address)].append(pd.Timestamp(at).to_pydatetime())
        for row in contacts[contacts["channel"] != "email"].itertuples():
            if not any(at <= row.at for at in consented.get((row.channel, row.destination), [])):
                out.append(f"no consent: {row.attempt_id} {row.channel}")
        # Once per (case, step), and exactly one provider message per attempt that reached a provider.
        if attempts.duplicated(["case_id", "step"]).any():
            out.append("a (case, step) has two ledger rows")
        out += self._provider_records(attempts)
        return out

    def _call_caps(self, contacts: pd.DataFrame, policy) -> list[str]:
        out = []
        calls = contacts[contacts["channel"] == "voice"].sort_values("at")
        week = timedelta(days=7)
        for call in calls.itertuples():
            window = calls[(calls["customer_id"] == call.customer_id) & (calls["at"] > call.at - week)
                           & (calls["at"] <= call.at)]
            if len(window) > policy.caps.calls_per_7_days:
                out.append(f"call cap: {call.customer_id} {len(window)} calls in 7 days")
            if call.consumer:
                per_debt = window[window["case_id"] == call.case_id]
                if len(per_debt) > policy.consumer.calls_per_7_days:
                    out.append(f"consumer call cap: {call.case_id}")
                talks = calls[(calls["customer_id"] == call.customer_id) & calls["conversation_at"].notna()]
                for talked in pd.to_datetime(talks["conversation_at"], utc=True):
                    if talked < call.at < talked + timedelta(days=policy.consumer.quiet_days_after_conversation):
                        out.append(f"consumer: call {call.attempt_id} within 7 days after a conversation")
        return out

    def _provider_records(self, attempts: pd.DataFrame) -> list[str]:
        from agentcollect_pipeline.outreach.ledger import reference

        out = []
        mails = [json.dumps(m, default=str) for m in self.sendgrid.mails()]
        texts = [m["body"] or "" for m in self.twilio.messages() if m.get("direction", "outbound-api") != "inbound"]
        calls = [json.dumps(self.twilio.call_request(c["sid"]), default=str) for c in self.twilio.calls()]
        reached = attempts[attempts["status"].isin(("sent", "delivered", "opened", "completed", "no-answer",
                                                    "busy", "undelivered", "failed", "bounced", "canceled"))]
        for row in reached.itertuples():
            if row.channel == "email":
                n = sum(f'"{row.attempt_id}"' in m for m in mails)
            elif row.channel == "sms":
                n = sum(reference(row.attempt_id) in t for t in texts)
            else:
                n = sum(row.attempt_id in c for c in calls)
            if n != 1:
                out.append(f"{row.attempt_id} ({row.channel}, {row.status}) has {n} provider messages")
        for row in attempts[attempts["status"].isin(NOT_CONTACTS)].itertuples():
            if row.channel == "email" and any(f'"{row.attempt_id}"' in m for m in mails):
                out.append(f"{row.attempt_id} is {row.status} but SendGrid has its mail")
        return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
