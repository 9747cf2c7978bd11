"""Collection-status notes on the Bill.com customer for facts other than payments.

Bill.com keeps private notes on a customer (v2 SendMessage), and finance reads the customer record there,
not our tables. So every fact that changes how we collect from a customer gets one short, dated note:
a dispute opened or closed, a promise to pay (and what became of it), a pause (e.g. the debtor says it
already paid), an opt-out, a contact found wrong.
Facts come from the state tables the rules read; `customer_notes` makes each note exactly once.
Addresses are masked: a note names the channel, never a full email or number.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from agentcollect_pipeline.assets.metadata import mask_email, mask_phone
from agentcollect_pipeline.money import format_money
from agentcollect_pipeline.settings import configured_ar_source
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import payments_schema as ps
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.agent_schema import customer_replies
from agentcollect_pipeline.warehouse.store import Warehouse

PREFIX = "AgentCollect:"


@dataclass(frozen=True)
class NoteFact:
    fact_key: str
    customer_id: str
    text: str


def _masked(channel: str, address: str) -> str:
    return str(mask_email(address) if channel == "email" else mask_phone(address))


def _day(moment: datetime | date | None, timezone: str) -> str:
    if moment is None:
        return "an unknown date"
    if isinstance(moment, datetime):
        return moment.astimezone(ZoneInfo(timezone)).date().isoformat()
    return moment.isoformat()


def customers_by_address(
    conn: sa.Connection, tables: schema.ARTables | None = None
) -> dict[tuple[str, str], set[str]]:
    """(channel, address) -> customers reachable there, from customer records and their contacts (of the
    configured AR source unless `tables` says otherwise)."""
    tables = tables or schema.ar_tables(configured_ar_source())
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for table in (tables.customers, tables.customer_contacts):
        for customer_id, email, phone in conn.execute(
            sa.select(table.c.customer_id, table.c.email, table.c.phone_e164)
        ):
            if email:
                owners[("email", email.strip().lower())].add(customer_id)
            if phone:
                owners[("sms", phone)].add(customer_id)
                owners[("voice", phone)].add(customer_id)
    return owners


def note_facts(store: Warehouse, tables: schema.ARTables, timezone: str) -> list[NoteFact]:
    """Every fact that deserves a note, whether or not it has been written yet (the ledger decides)."""
    invoices = tables.invoices
    facts: list[NoteFact] = []
    with store.engine.connect() as conn:
        for dispute in conn.execute(
            sa.select(cs.disputes, invoices.c.customer_id, invoices.c.invoice_number).join(
                invoices, invoices.c.invoice_id == cs.disputes.c.invoice_id
            )
        ):
            number = dispute.invoice_number or dispute.invoice_id
            facts.append(NoteFact(
                f"dispute:{dispute.dispute_id}:opened",
                dispute.customer_id,
                f"{PREFIX} invoice {number} disputed on {_day(dispute.opened_at, timezone)}"
                f"{f' ({dispute.reason})' if dispute.reason else ''}; collection paused while it is reviewed.",
            ))
            if dispute.closed_at is not None:
                facts.append(NoteFact(
                    f"dispute:{dispute.dispute_id}:closed",
                    dispute.customer_id,
                    f"{PREFIX} dispute on invoice {number} closed on {_day(dispute.closed_at, timezone)}.",
                ))
        for promise in conn.execute(
            sa.select(cs.promises_to_pay, invoices.c.invoice_number).outerjoin(
                invoices, invoices.c.invoice_id == cs.promises_to_pay.c.invoice_id
            )
        ):
            amount = (
                format_money(promise.amount_cents, promise.currency) if promise.amount_cents is not None else "payment"
            )
            scope = f" for invoice {promise.invoice_number or promise.invoice_id}" if promise.invoice_id else ""
            facts.append(NoteFact(
                f"promise:{promise.promise_id}:{promise.status}",
                promise.customer_id,
                f"{PREFIX} promise to pay {amount}{scope} by {promise.promised_date.isoformat()} "
                f"({promise.status}, recorded {_day(promise.created_at, timezone)}).",
            ))
        for pause in conn.execute(sa.select(cs.customer_pauses)):
            until = f"until {pause.paused_until.isoformat()}" if pause.paused_until else "until lifted"
            facts.append(NoteFact(
                f"pause:{pause.pause_id}",
                pause.customer_id,
                f"{PREFIX} collection paused {until} on {_day(pause.created_at, timezone)}"
                f"{f' ({pause.reason})' if pause.reason else ''}.",
            ))
        owners = customers_by_address(conn, tables)
        for opt_out in conn.execute(sa.select(cs.opt_outs)):
            key = (opt_out.channel, opt_out.address.strip().lower() if opt_out.channel == "email" else opt_out.address)
            for customer_id in sorted(owners.get(key, ())):
                facts.append(NoteFact(
                    f"opt_out:{opt_out.opt_out_id}:{customer_id}",
                    customer_id,
                    f"{PREFIX} {opt_out.channel} opt-out for {_masked(opt_out.channel, opt_out.address)} on "
                    f"{_day(opt_out.opted_out_at, timezone)}"
                    f"{f' ({opt_out.source})' if opt_out.source else ''}; no further {opt_out.channel} contact there.",
                ))
        for invalid in conn.execute(sa.select(os_.invalid_contacts)):
            key = (invalid.channel, invalid.address.strip().lower() if invalid.channel == "email" else invalid.address)
            for customer_id in sorted(owners.get(key, ())):
                facts.append(NoteFact(
                    f"invalid_contact:{invalid.channel}:{invalid.address}:{customer_id}",
                    customer_id,
                    f"{PREFIX} {invalid.channel} contact {_masked(invalid.channel, invalid.address)} found wrong on "
                    f"{_day(invalid.marked_at, timezone)} ({invalid.reason}); it is no longer used.",
                ))
        facts += _request_facts(conn, timezone)
    return facts


def _request_facts(conn: sa.Connection, timezone: str) -> list[NoteFact]:
    """What debtors asked for in replies and on calls: an invoice copy / the payment link, a call back."""
    facts: list[NoteFact] = []
    replies = customer_replies
    for reply in conn.execute(sa.select(replies).where(replies.c.intent == "invoice_copy",
                                                       replies.c.customer_id.is_not(None))):
        day = _day(reply.received_at, timezone)
        if reply.channel == "voice":
            effect = str(reply.effect or "")
            outcome = ("texted" if effect.startswith("link_sent") else
                       f"not texted ({effect.split(':', 1)[1]})" if effect.startswith("link_refused:") else "texting")
            text = f"{PREFIX} payment link requested on our call on {day} (pressed 1): {outcome}."
        else:
            text = (f"{PREFIX} invoice copy requested by {reply.channel} reply on {day}; the invoices and payment "
                    f"link are sent to {_masked(reply.channel, reply.sender)} within contact hours.")
        facts.append(NoteFact(f"reply:{reply.reply_id}:copy", reply.customer_id, text))
    for request in conn.execute(sa.select(os_.callback_requests)):
        facts.append(NoteFact(
            f"callback:{request.request_id}", request.customer_id,
            f"{PREFIX} callback requested on our call on {_day(request.requested_at, timezone)} (pressed 2) for "
            f"{_masked('voice', request.number)}; a person should call back.",
        ))
    return facts


def unwritten(store: Warehouse, facts: list[NoteFact]) -> list[NoteFact]:
    with store.engine.connect() as conn:
        written = set(
            conn.execute(sa.select(ps.customer_notes.c.fact_key).where(ps.customer_notes.c.status == "written")).scalars()
        )
    return [fact for fact in facts if fact.fact_key not in written]


def write_notes(
    facts: list[NoteFact], write_note: Callable[[str, str, str], str | None]
) -> tuple[list[NoteFact], list[tuple[NoteFact, str]]]:
    """(written, failed with why). A failure does not stop the others; the next cycle retries it."""
    written: list[NoteFact] = []
    failed: list[tuple[NoteFact, str]] = []
    for fact in facts:
        try:
            write_note(fact.fact_key, fact.customer_id, fact.text)
        except Exception as exc:  # noqa: BLE001 - one customer's Bill.com error must not block the rest
            failed.append((fact, f"{type(exc).__name__}: {exc}"))
        else:
            written.append(fact)
    return written, failed
