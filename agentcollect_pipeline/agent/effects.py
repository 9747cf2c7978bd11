"""What a debtor's reply changes. No Dagster, no provider calls.

A reply (an SMS, an email through Inbound Parse, or a key pressed on our call) is classified
(agent/replies.py, or the LLM classifier when configured), matched to the case it answers, and its intent
has exactly one effect on the state tables the collection rules and the planner read:

| intent           | effect                                                                                |
|------------------|---------------------------------------------------------------------------------------|
| stop             | opt-out of that address (an SMS STOP covers automated calls to the number too)         |
| wrong_contact    | the address is marked invalid and never used again                                     |
| dispute          | a `disputes` row per invoice the reply names (else the answered message's invoices):   |
|                  | collection of those invoices pauses; finance reviews (`agentcollect disputes list`)    |
| promise_to_pay   | a pending `promises_to_pay` row (date from the reply, else `PROMISE_DEFAULT_DAYS`);     |
|                  | collection waits until the date (+ grace); if it passes unpaid the planner sends a     |
|                  | follow-up (rules/agent_actions.py). An earlier pending promise is superseded.          |
| paid_already     | a `customer_pauses` row for `PAID_CLAIM_PAUSE_DAYS`: "I paid" is never a payment; a     |
|                  | person or the next sync reconciles it                                                  |
| invoice_copy     | `copy_requested`: the planner sends the invoices and payment link, once per request,   |
|                  | inside quiet hours, through the outreach ledger (step `copy:<reply_id>`)               |
| callback_request | (pressed 2 on a call) a `callback_requests` row for a person to call back              |
| other            | recorded only                                                                          |

Every reply is kept in `customer_replies` (once per provider message id). The Bill.com customer note for
each effect is written by the `customer_status_notes` asset from these same rows (payments/status_notes.py,
through PaymentPoster.write_note), requested at once by `customer_replies_sensor`; no webhook waits on
Bill.com.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from agentcollect_pipeline.agent.replies import Classification, classify
from agentcollect_pipeline.outreach import ledger
from agentcollect_pipeline.payments.status_notes import customers_by_address
from agentcollect_pipeline.settings import configured_ar_source
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.agent_schema import customer_replies
from agentcollect_pipeline.warehouse.store import Warehouse, dialect_insert

PAID_CLAIM_PAUSE_DAYS = 7
PROMISE_DEFAULT_DAYS = 7
_REFERENCE = re.compile(r"\bRef[:\s#]*([0-9A-Fa-f]{10})\b")
KEYPRESS_INTENTS = {"1": "invoice_copy", "2": "callback_request"}

Classifier = Callable[[str, datetime], Classification]


@dataclass(frozen=True)
class ReplyOutcome:
    reply_id: str
    intent: str
    customer_id: str | None
    case_id: str | None
    effect: str
    duplicate: bool = False


@dataclass(frozen=True)
class _Answered:
    customer_id: str | None
    case_id: str | None
    currency: str | None
    invoice_ids: tuple[str, ...]
    attempt_id: str | None = None


def _from_attempt(row: Any) -> _Answered:
    ids = tuple(i.strip() for i in (row.invoice_ids or "").split(",") if i.strip())
    return _Answered(row.customer_id, row.case_id, row.currency, ids, row.attempt_id)


def _answered(conn: sa.Connection, channel: str, sender: str, body: str, attempt_id: str | None = None) -> _Answered:
    """The outreach this reply answers: the attempt named by the reply address (email Reply-To token), else
    the reference printed in our message, else the latest attempt sent to this address, else any customer
    whose record carries the address (only when exactly one does)."""
    attempts = os_.outreach_attempts
    row = None
    if attempt_id:
        row = conn.execute(sa.select(attempts).where(attempts.c.attempt_id == attempt_id)).first()
    if row is None and (match := _REFERENCE.search(body)):
        row = conn.execute(
            sa.select(attempts)
            .where(sa.func.lower(attempts.c.attempt_id).like(f"att_{match.group(1).lower()}%"))
            .limit(1)
        ).first()
    if row is None:
        row = conn.execute(
            sa.select(attempts)
            .where(attempts.c.destination == ledger.normal_address(channel, sender))
            .order_by(attempts.c.reserved_at.desc())
            .limit(1)
        ).first()
    if row is not None:
        return _from_attempt(row)
    owners = customers_by_address(conn).get((channel, ledger.normal_address(channel, sender)), set())
    return _Answered(min(owners) if len(owners) == 1 else None, None, None, ())


def _invoices_named(conn: sa.Connection, customer_id: str, body: str) -> list[str]:
    """The customer's invoices whose number the reply names ("we dispute INV-1042")."""
    invoices = schema.ar_tables(configured_ar_source()).invoices
    named = []
    for invoice_id, number in conn.execute(
        sa.select(invoices.c.invoice_id, invoices.c.invoice_number).where(
            invoices.c.customer_id == customer_id, invoices.c.invoice_number.is_not(None))
    ):
        if re.search(rf"(?<![\w-]){re.escape(str(number))}(?![\w-])", body, re.IGNORECASE):
            named.append(invoice_id)
    return sorted(named)


def _open_case_invoices(conn: sa.Connection, customer_id: str) -> list[str]:
    rows = conn.execute(sa.select(cs.collection_cases.c.invoice_ids).where(
        cs.collection_cases.c.customer_id == customer_id)).scalars()
    return sorted({i for ids in rows for i in (ids or "").split(",") if i})


def _effect(conn: sa.Connection, reply: Classification, channel: str, sender: str, answered: _Answered,
            received_at: datetime, body: str) -> str:
    today = received_at.date()
    if reply.intent == "stop":
        channels = ("sms", "voice") if channel == "sms" else (channel,)
        for opted in channels:
            ledger.record_opt_out(conn, opted, sender, f"reply: {body.strip()[:40]}", received_at)
        return "opted_out:" + "+".join(channels)
    if reply.intent == "wrong_contact":
        ledger.mark_invalid(conn, channel, sender, "debtor replied: wrong contact", received_at)
        return "contact_invalid"
    if answered.customer_id is None:
        return "unmatched"  # a state change needs a customer; the reply is kept for a person to read
    if reply.intent == "dispute":
        # The invoices the reply names; else those of the message it answers; else the customer's open case.
        targets = (_invoices_named(conn, answered.customer_id, body) or list(answered.invoice_ids)
                   or _open_case_invoices(conn, answered.customer_id))
        already = set(conn.execute(sa.select(cs.disputes.c.invoice_id).where(
            cs.disputes.c.invoice_id.in_(targets), cs.disputes.c.closed_at.is_(None))).scalars()) if targets else set()
        opened = [i for i in targets if i not in already]
        if opened:
            conn.execute(cs.disputes.insert(), [{
                "dispute_id": "dsp_" + secrets.token_hex(8), "invoice_id": invoice_id,
                "reason": reply.dispute_reason or "disputed by reply", "opened_at": received_at,
            } for invoice_id in opened])
        if not targets:
            return "dispute_unmatched"  # no invoice to hold: a person reads it in customer_replies
        return f"disputed:{len(opened)}" + (f" (already open: {len(already)})" if already else "")
    if reply.intent == "promise_to_pay":
        promised = max(reply.promised_date or today + timedelta(days=PROMISE_DEFAULT_DAYS), today)
        currency = answered.currency or _customer_currency(conn, answered.customer_id)
        promises = cs.promises_to_pay
        # The latest word counts: an earlier pending promise of the customer is superseded.
        conn.execute(promises.update().where(
            promises.c.customer_id == answered.customer_id, promises.c.currency == currency,
            promises.c.status == "pending").values(status="cancelled"))
        conn.execute(promises.insert(), [{
            "promise_id": "ptp_" + secrets.token_hex(8), "invoice_id": None,
            "customer_id": answered.customer_id, "promised_date": promised, "amount_cents": None,
            "currency": currency, "status": "pending", "created_at": received_at,
        }])
        return f"promise:{promised.isoformat()}"
    if reply.intent == "paid_already":
        until = today + timedelta(days=PAID_CLAIM_PAUSE_DAYS)
        conn.execute(cs.customer_pauses.insert(), [{
            "pause_id": "pau_" + secrets.token_hex(8), "customer_id": answered.customer_id,
            "paused_until": until, "reason": "debtor says already paid: reconcile before chasing",
            "created_at": received_at,
        }])
        return f"paused_until:{until.isoformat()}"
    if reply.intent == "invoice_copy":
        return "copy_requested" if answered.case_id else "copy_requested_no_case"
    return "recorded"


def _customer_currency(conn: sa.Connection, customer_id: str) -> str:
    customers = schema.ar_tables(configured_ar_source()).customers
    currency = conn.execute(sa.select(customers.c.currency).where(customers.c.customer_id == customer_id)).scalar()
    return currency or "USD"


def handle_reply(
    store: Warehouse,
    *,
    channel: str,
    sender: str,
    body: str,
    reply_id: str | None = None,
    received_at: datetime | None = None,
    attempt_id: str | None = None,
    classifier: Classifier | None = None,
) -> ReplyOutcome:
    """Classify, match, apply the effect and record the reply, in one transaction. `attempt_id`: the attempt
    the reply address names (email); `classifier`: the LLM classifier when configured (rules by default)."""
    received_at = received_at or datetime.now(UTC)
    reply_id = reply_id or "rep_" + secrets.token_hex(10)
    with store.engine.connect() as conn:
        existing = conn.execute(sa.select(customer_replies).where(customer_replies.c.reply_id == reply_id)).first()
    if existing is not None:  # a redelivery: no second classification (an LLM call) and no second effect
        return ReplyOutcome(reply_id, existing.intent, existing.customer_id, existing.case_id, existing.effect,
                            duplicate=True)
    reply = (classifier or classify)(body, received_at)
    with store.transaction() as conn:
        existing = conn.execute(sa.select(customer_replies).where(customer_replies.c.reply_id == reply_id)).first()
        if existing is not None:
            return ReplyOutcome(reply_id, existing.intent, existing.customer_id, existing.case_id, existing.effect,
                                duplicate=True)
        answered = _answered(conn, channel, sender, body, attempt_id)
        effect = _effect(conn, reply, channel, sender, answered, received_at, body)
        conn.execute(customer_replies.insert(), [{
            "reply_id": reply_id, "channel": channel, "sender": ledger.normal_address(channel, sender),
            "customer_id": answered.customer_id, "case_id": answered.case_id, "intent": reply.intent,
            "promised_date": reply.promised_date if isinstance(reply.promised_date, date) else None,
            "dispute_reason": reply.dispute_reason, "effect": effect, "body": body, "received_at": received_at,
            "attempt_id": answered.attempt_id,
        }])
    return ReplyOutcome(reply_id, reply.intent, answered.customer_id, answered.case_id, effect)


def record_keypress(store: Warehouse, *, attempt: Mapping[str, Any], digits: str, call_sid: str,
                    received_at: datetime) -> ReplyOutcome | None:
    """A key pressed in our call's <Gather>, as a reply: 1 asks for the payment link (the receiver texts it and
    sets the outcome with `set_effect`), 2 asks for a person (a `callback_requests` row). Once per call and
    key; None for any other key."""
    intent = KEYPRESS_INTENTS.get(digits)
    if intent is None:
        return None
    reply_id = f"{call_sid or attempt['attempt_id']}:{digits}"
    with store.transaction() as conn:
        existing = conn.execute(sa.select(customer_replies).where(customer_replies.c.reply_id == reply_id)).first()
        if existing is not None:
            return ReplyOutcome(reply_id, existing.intent, existing.customer_id, existing.case_id, existing.effect,
                                duplicate=True)
        effect = "link_requested"
        if digits == "2":
            # One request per call (attempt_id is unique), whatever the presses or redeliveries.
            conn.execute(dialect_insert(conn, os_.callback_requests).values(
                request_id="cbr_" + secrets.token_hex(8), attempt_id=attempt["attempt_id"], case_id=attempt["case_id"],
                customer_id=attempt["customer_id"], number=attempt["destination"], status="open",
                requested_at=received_at).on_conflict_do_nothing(index_elements=["attempt_id"]))
            effect = "callback_requested"
        conn.execute(customer_replies.insert(), [{
            "reply_id": reply_id, "channel": "voice", "sender": attempt["destination"],
            "customer_id": attempt["customer_id"], "case_id": attempt["case_id"], "intent": intent,
            "promised_date": None, "dispute_reason": None, "effect": effect, "body": f"pressed {digits}",
            "received_at": received_at, "attempt_id": attempt["attempt_id"],
        }])
    return ReplyOutcome(reply_id, intent, attempt["customer_id"], attempt["case_id"], effect)


def set_effect(store: Warehouse, reply_id: str, effect: str) -> None:
    """What finally came of a reply whose effect needed a provider call (the texted link)."""
    with store.transaction() as conn:
        conn.execute(customer_replies.update().where(customer_replies.c.reply_id == reply_id).values(effect=effect))
