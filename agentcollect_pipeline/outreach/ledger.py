"""The outreach_attempts ledger and the contact state tables (opt-outs, consent, invalid contacts).

At most once per (case, step): `reserve` inserts the row with the unique key *before* the provider call; a
second reserve of the same key fails on the constraint and returns None, whatever process tries. `confirm`
stores the provider's answer. `reconcile` settles reservations left without an outcome (crash, timeout)
by asking the provider what happened - never by sending again. `release` hands a reservation back when the
provider definitely did not take the message (429 past the retry budget): the row becomes `released` and
the next `reserve` of that (case, step) takes it over with one conditional UPDATE, so still only one holder.
"""

import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse.store import Warehouse

log = logging.getLogger(__name__)
A = os_.outreach_attempts


def new_attempt_id() -> str:
    return "att_" + secrets.token_hex(10)


def reference(attempt_id: str) -> str:
    """Short reference printed in messages; also how a texted message is found again when reconciling."""
    return attempt_id.removeprefix("att_")[:10].upper()


def reserve(store: Warehouse, action: dict[str, Any], now: datetime, run_id: str | None) -> str | None:
    """Insert the attempt as `reserved`; None when (case_id, step) already has a row (sent or in flight)."""
    attempt_id = new_attempt_id()
    row = {
        "attempt_id": attempt_id, "case_id": action["case_id"], "step": action["step"],
        "customer_id": action["customer_id"], "currency": action["currency"], "channel": action["channel"],
        "destination": action["destination"], "tone": action.get("tone"), "invoice_ids": action["invoice_ids"],
        "total_due_cents": int(action["total_due_cents"]), "consumer": bool(action["consumer"]),
        "why": action.get("why"), "status": "reserved", "run_id": run_id, "reserved_at": now, "updated_at": now,
    }
    try:
        with store.transaction() as conn:
            conn.execute(A.insert(), [row])
    except sa.exc.IntegrityError:
        return _retake(store, row)
    return attempt_id


def _retake(store: Warehouse, row: dict[str, Any]) -> str | None:
    """Take over a `released` row of the same (case, step): only a row no provider accepted is reused, and
    only one UPDATE can move it from released to reserved. Its attempt id is kept (no message carries it)."""
    values = {k: v for k, v in row.items() if k not in ("attempt_id", "case_id", "step")}
    values.update(provider=None, provider_id=None, error_code=None, error_message=None, sent_at=None,
                  confirmed_at=None)
    with store.transaction() as conn:
        taken = conn.execute(A.update().where(A.c.case_id == row["case_id"], A.c.step == row["step"],
                                              A.c.status == "released").values(**values)).rowcount
        if taken != 1:
            return None
        return conn.execute(sa.select(A.c.attempt_id).where(A.c.case_id == row["case_id"],
                                                            A.c.step == row["step"])).scalar_one()


def release(store: Warehouse, attempt_id: str, now: datetime, provider: str, reason: str) -> bool:
    """The provider refused to take the message (429 past the retry budget: never processed). The step is
    sent by a later run; why is kept on the row. Only a `reserved` row is released."""
    with store.transaction() as conn:
        return conn.execute(
            A.update().where(A.c.attempt_id == attempt_id, A.c.status == "reserved").values(
                status="released", provider=provider, released_reason=f"{provider}: {reason}",
                release_count=sa.func.coalesce(A.c.release_count, 0) + 1, updated_at=now)
        ).rowcount == 1


def confirm(store: Warehouse, attempt_id: str, now: datetime, **values: Any) -> None:
    """Record the outcome. Only a `reserved` row is overwritten, so a status callback that raced ahead of
    this write (delivered before we stored `sent`) is not undone."""
    values.setdefault("confirmed_at", now)
    with store.transaction() as conn:
        updated = conn.execute(
            A.update().where(A.c.attempt_id == attempt_id, A.c.status == "reserved").values(updated_at=now, **values)
        ).rowcount
        if not updated and values.get("provider_id"):
            conn.execute(A.update().where(A.c.attempt_id == attempt_id, A.c.provider_id.is_(None))
                         .values(provider_id=values["provider_id"], sent_at=values.get("sent_at"), updated_at=now))


def stale_reservations(store: Warehouse, now: datetime, older_than: timedelta) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(A).where(A.c.status == "reserved", A.c.reserved_at <= now - older_than))
        return [dict(r._mapping) for r in rows]


def reconcile(store: Warehouse, now: datetime, older_than: timedelta, twilio, dry_run: bool = False) -> dict[str, int]:
    """Settle reservations left without an outcome. Twilio: list messages/calls to that number since the
    reservation (the SMS carries our reference). SendGrid: an event carrying our attempt_id in custom_args.
    Found -> `sent` with the provider id; otherwise `unconfirmed`, which counts as sent and is never retried."""
    counts = {"found": 0, "unconfirmed": 0}
    for row in stale_reservations(store, now, older_than):
        since = row["reserved_at"] - timedelta(minutes=1)
        found: str | None = None
        try:
            if row["channel"] == "email":
                found = _email_event(store, row["attempt_id"])
            elif twilio is not None and row["channel"] == "sms":
                found = twilio.find_message(row["destination"], since, reference(row["attempt_id"]))
            elif twilio is not None and row["channel"] == "voice":
                found = twilio.find_call(row["destination"], since)
        except Exception as exc:  # the provider is down: cannot confirm either way
            log.warning("reconcile %s: provider lookup failed (%s)", row["attempt_id"], type(exc).__name__)
        if found:
            confirm(store, row["attempt_id"], now, status="sent", provider_id=found, sent_at=row["reserved_at"])
            counts["found"] += 1
        else:
            confirm(store, row["attempt_id"], now, status="unconfirmed",
                    error_message="no provider record found; counted as sent, not re-sent")
            counts["unconfirmed"] += 1
    return counts


def _email_event(store: Warehouse, attempt_id: str) -> str | None:
    E = os_.outreach_events
    with store.engine.connect() as conn:
        payload = conn.execute(sa.select(E.c.payload).where(E.c.attempt_id == attempt_id).limit(1)).scalar()
    if payload is None:
        return None
    message_id = json.loads(payload).get("sg_message_id") or "event"
    return str(message_id).split(".")[0]


# -- contact state ------------------------------------------------------------------------------------


def normal_address(channel: str, address: str) -> str:
    """The one spelling an address is stored and compared in: lower-case email, E.164 as given."""
    return address.strip().lower() if channel == "email" else address.strip()


def record_opt_out(conn: sa.Connection, channel: str, address: str, source: str, now: datetime) -> bool:
    """Add an opt-out unless one exists for (channel, address). Returns whether a row was added."""
    address = normal_address(channel, address)
    exists = conn.execute(sa.select(cs.opt_outs.c.opt_out_id).where(
        cs.opt_outs.c.channel == channel, cs.opt_outs.c.address == address)).first()
    if exists:
        return False
    conn.execute(cs.opt_outs.insert(), [{"opt_out_id": "opt_" + secrets.token_hex(8), "channel": channel,
                                         "address": address, "opted_out_at": now, "source": source}])
    return True


def mark_invalid(conn: sa.Connection, channel: str, address: str, reason: str, now: datetime) -> None:
    address = normal_address(channel, address)
    T = os_.invalid_contacts
    if conn.execute(sa.select(T.c.address).where(T.c.channel == channel, T.c.address == address)).first() is None:
        conn.execute(T.insert(), [{"channel": channel, "address": address, "reason": reason, "marked_at": now}])


def record_consent(store: Warehouse, channel: str, address: str, source: str, recorded_by: str,
                   now: datetime | None = None) -> str:
    if channel not in ("sms", "voice"):
        raise ValueError("consent is recorded for sms or voice")
    consent_id = "con_" + secrets.token_hex(8)
    with store.transaction() as conn:
        conn.execute(os_.contact_consents.insert(), [{
            "consent_id": consent_id, "channel": channel, "address": address.strip(), "source": source,
            "recorded_by": recorded_by, "recorded_at": now or datetime.now(UTC), "revoked_at": None}])
    return consent_id


def clear_opt_out(store: Warehouse, channel: str, address: str, cleared_by: str, why: str,
                  now: datetime | None = None) -> int:
    """A person lifts an opt-out: the opt-out row goes, and who/why/when is kept in opt_out_clearances."""
    if not cleared_by.strip() or not why.strip():
        raise ValueError("clearing an opt-out needs who (--by) and why (--why)")
    now = now or datetime.now(UTC)
    address = normal_address(channel, address)
    optouts = cs.opt_outs
    with store.transaction() as conn:
        rows = conn.execute(sa.select(optouts).where(optouts.c.channel == channel, optouts.c.address == address)).mappings().all()
        for row in rows:
            conn.execute(os_.opt_out_clearances.insert(), [{
                "clearance_id": "clr_" + secrets.token_hex(8), "opt_out_id": row["opt_out_id"], "channel": channel,
                "address": address, "opted_out_at": row["opted_out_at"], "opt_out_source": row["source"],
                "cleared_by": cleared_by.strip(), "why": why.strip(), "cleared_at": now}])
            conn.execute(optouts.delete().where(optouts.c.opt_out_id == row["opt_out_id"]))
    return len(rows)


def close_callback(store: Warehouse, request_id: str, closed_by: str, why: str, now: datetime | None = None) -> bool:
    """A person handled a callback request (the debtor pressed 2): it is closed with who, why and when.
    False when there is no open request with that id."""
    if not closed_by.strip() or not why.strip():
        raise ValueError("closing a callback request needs who (--by) and why (--why)")
    R = os_.callback_requests
    with store.transaction() as conn:
        return conn.execute(R.update().where(R.c.request_id == request_id.strip(), R.c.status == "open").values(
            status="done", closed_by=closed_by.strip(), close_why=why.strip(),
            closed_at=now or datetime.now(UTC))).rowcount == 1


def record_draft(store: Warehouse, attempt_id: str, source: str, rejections: list[str], now: datetime) -> None:
    """Who wrote the attempt's message (template | llm) and why LLM drafts were refused. Reasons name facts
    of this case's draft only (never another customer's text, never a key); bounded in length."""
    reasons = "; ".join(reason[:200] for reason in rejections)[:2000] or None
    with store.transaction() as conn:
        conn.execute(A.update().where(A.c.attempt_id == attempt_id).values(
            draft_source=source, guardrail_rejections=reasons, updated_at=now))
