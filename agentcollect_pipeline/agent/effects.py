"""What a debtor's reply changes. No Dagster, no provider calls.

A reply is classified (agent/replies.py), matched to the customer and case it answers, and its intent has
exactly one effect on the state tables the collection rules read:

| intent          | effect                                                                               |
|-----------------|--------------------------------------------------------------------------------------|
| stop            | opt-out of that address (an SMS STOP covers automated calls to the number too)        |
| wrong_contact   | the address is marked invalid and never used again                                    |
| dispute         | a `disputes` row per invoice the answered message was about: collection pauses        |
| promise_to_pay  | a pending `promises_to_pay` row (date from the reply, else `PROMISE_DEFAULT_DAYS`)     |
| paid_already    | a `customer_pauses` row for `PAID_CLAIM_PAUSE_DAYS`: "I paid" is never a payment; a    |
|                 | person or the next sync reconciles it                                                 |
| invoice_copy    | recorded as `copy_requested` for outreach to answer with the invoice link              |
| other           | recorded only                                                                         |

Every reply is kept in `customer_replies` (once per provider message id). The Bill.com customer note for
each effect is written by the `customer_status_notes` asset from these same rows, so no webhook waits on
Bill.com.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from agentcollect_pipeline.agent.replies import Classification, classify
from agentcollect_pipeline.outreach import ledger
from agentcollect_pipeline.payments.status_notes import customers_by_address
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse.agent_schema import customer_replies
from agentcollect_pipeline.warehouse.store import Warehouse

PAID_CLAIM_PAUSE_DAYS = 7
PROMISE_DEFAULT_DAYS = 7
_REFERENCE = re.compile(r"\bRef[:\s#]*([0-9A-Fa-f]{10})\b")


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


def _answered(conn: sa.Connection, channel: str, sender: str, body: str) -> _Answered:
    """The outreach this reply answers: by the reference printed in our message, else the latest attempt
    sent to this address, else any customer whose record carries the address."""
    attempts = os_.outreach_attempts
    row = None
    if match := _REFERENCE.search(body):
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
        ids = tuple(i.strip() for i in row.invoice_ids.split(",") if i.strip())
        return _Answered(row.customer_id, row.case_id, row.currency, ids)
    owners = customers_by_address(conn).get((channel, ledger.normal_address(channel, sender)), set())
    return _Answered(min(owners) if len(owners) == 1 else None, None, None, ())


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
        for invoice_id in answered.invoice_ids:
            conn.execute(cs.disputes.insert(), [{
                "dispute_id": "dsp_" + secrets.token_hex(8), "invoice_id": invoice_id,
                "reason": reply.dispute_reason or "disputed by reply", "opened_at": received_at,
            }])
        return f"disputed:{len(answered.invoice_ids)}"
    if reply.intent == "promise_to_pay":
        promised = reply.promised_date or today + timedelta(days=PROMISE_DEFAULT_DAYS)
        conn.execute(cs.promises_to_pay.insert(), [{
            "promise_id": "ptp_" + secrets.token_hex(8), "invoice_id": None,
            "customer_id": answered.customer_id, "promised_date": promised, "amount_cents": None,
            "currency": answered.currency or "USD", "status": "pending", "created_at": received_at,
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
        return "copy_requested"
    return "recorded"


def handle_reply(
    store: Warehouse,
    *,
    channel: str,
    sender: str,
    body: str,
    reply_id: str | None = None,
    received_at: datetime | None = None,
) -> ReplyOutcome:
    """Classify, match, apply the effect and record the reply, in one transaction."""
    received_at = received_at or datetime.now(UTC)
    reply_id = reply_id or "rep_" + secrets.token_hex(10)
    reply = classify(body, received_at)
    with store.transaction() as conn:
        existing = conn.execute(sa.select(customer_replies).where(customer_replies.c.reply_id == reply_id)).first()
        if existing is not None:
            return ReplyOutcome(reply_id, existing.intent, existing.customer_id, existing.case_id, existing.effect,
                                duplicate=True)
        answered = _answered(conn, channel, sender, body)
        effect = _effect(conn, reply, channel, sender, answered, received_at, body)
        conn.execute(customer_replies.insert(), [{
            "reply_id": reply_id, "channel": channel, "sender": ledger.normal_address(channel, sender),
            "customer_id": answered.customer_id, "case_id": answered.case_id, "intent": reply.intent,
            "promised_date": reply.promised_date if isinstance(reply.promised_date, date) else None,
            "dispute_reason": reply.dispute_reason, "effect": effect, "body": body, "received_at": received_at,
        }])
    return ReplyOutcome(reply_id, reply.intent, answered.customer_id, answered.case_id, effect)
