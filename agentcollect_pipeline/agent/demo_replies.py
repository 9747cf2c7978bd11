"""The demo's last act (`agentcollect demo`, step 4): debtors answer, and the case changes.

Two replies reach the webhook receiver the way the providers deliver them: an SMS "I already paid last week"
through the Twilio sandbox (signed, X-Twilio-Signature) and an email "we dispute invoice X, wrong quantity"
through the SendGrid sandbox's Inbound Parse (multipart/form-data to the Parse URL with its secret token,
quoted history included). An unauthenticated post is shown refused. Then `customer_replies_sensor` ticks
once and its `reply_notes` run writes the Customer notes, and the collection rules (`invoice_eligibility`,
`collection_cases`) run again: the paused customer's case closes, the disputed invoice leaves its case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import sqlalchemy as sa

from agentcollect_pipeline.agent.inbound_email import reply_address
from agentcollect_pipeline.assets.metadata import mask_email, mask_phone
from agentcollect_pipeline.money import format_money
from agentcollect_pipeline.payments.status_notes import customers_by_address
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.agent_schema import customer_replies
from agentcollect_pipeline.warehouse.payments_schema import customer_notes

SMS_REPLY = "I already paid last week"


@dataclass
class ReplyFlow:
    success: bool = False
    effects: list[dict[str, Any]] = field(default_factory=list)  # customer_replies rows of the demo
    notes: list[str] = field(default_factory=list)  # Customer notes written for them
    refused_status: int | None = None  # the unauthenticated Inbound Parse post


def _case(conn: sa.Connection, customer_id: str) -> str:
    row = conn.execute(sa.select(cs.collection_cases.c.case_id, cs.collection_cases.c.invoice_count,
                                 cs.collection_cases.c.total_due_cents, cs.collection_cases.c.currency)
                       .where(cs.collection_cases.c.customer_id == customer_id)).first()
    if row is None:
        return "no open case"
    return f"case {row.case_id}: {row.invoice_count} invoice(s), {format_money(int(row.total_due_cents), row.currency)}"


def _pick(conn: sa.Connection, tables: schema.ARTables) -> tuple[dict | None, dict | None]:
    """An emailed attempt (its customer will dispute) and another customer in collection whose number is
    theirs alone (it will text "I already paid")."""
    attempts = os_.outreach_attempts
    email = conn.execute(sa.select(attempts).where(
        attempts.c.channel == "email", attempts.c.status.in_(["sent", "delivered", "opened"]))
        .order_by(attempts.c.total_due_cents.desc())).mappings().first()
    owners = customers_by_address(conn, tables)
    in_case = set(conn.execute(sa.select(cs.collection_cases.c.customer_id)).scalars())
    sms = None
    for customer_id, phone in conn.execute(
            sa.select(tables.customers.c.customer_id, tables.customers.c.phone_e164)
            .where(tables.customers.c.phone_e164.is_not(None)).order_by(tables.customers.c.customer_id)):
        if customer_id in in_case and owners.get(("sms", phone)) == {customer_id} and (
                email is None or customer_id != email["customer_id"]):
            sms = {"customer_id": customer_id, "phone": phone}
            break
    return (dict(email) if email else None), sms


def run_reply_flow(defs: dg.Definitions, instance: dg.DagsterInstance, warehouse, running, ar_kind: str,
                   twilio_from: str, quiet_logs: dict) -> ReplyFlow:
    import httpx

    from agentcollect_pipeline.assets.replies import customer_replies_sensor
    from agentcollect_pipeline.resources import WarehouseResource

    flow = ReplyFlow()
    tables = schema.ar_tables(ar_kind)
    hooks = running.urls["webhooks"]
    reply_to = running.environment["AGENTCOLLECT_EMAIL_REPLY_TO"]
    with warehouse.engine.connect() as conn:
        sources = dict(conn.execute(sa.select(os_.outreach_attempts.c.draft_source, sa.func.count())
                                    .group_by(os_.outreach_attempts.c.draft_source)).all())
        email, sms = _pick(conn, tables)
        if email is None or sms is None:
            print("   no emailed customer / no customer with a phone of its own in collection: nothing to reply")
            return flow
        ids = [i for i in email["invoice_ids"].split(",") if i]
        # The newest invoice of the message (the payment step paid part of the oldest of a contacted case).
        number = conn.execute(sa.select(tables.invoices.c.invoice_number).where(
            tables.invoices.c.invoice_id == ids[-1])).scalar() or ids[-1]
        before = {email["customer_id"]: _case(conn, email["customer_id"]), sms["customer_id"]: _case(conn, sms["customer_id"])}
    print("   the wave's messages were written by: " + ", ".join(f"{k or '-'} {v}" for k, v in sources.items()))

    # 1. The SMS, signed by the Twilio sandbox as Twilio signs it.
    sent = running.twilio.inbound_sms(sms["phone"], twilio_from, SMS_REPLY, url=f"{hooks}/webhooks/twilio/inbound")
    status = getattr(sent.get("delivery"), "status_code", None)
    print(f"   SMS from {mask_phone(sms['phone'])}: {SMS_REPLY!r} -> POST /webhooks/twilio/inbound (signed): {status}")

    # 2. The email reply, through Inbound Parse to the Parse URL (its secret token in the path), quoted history
    #    and our footer below the reply: only the new text is read.
    text = (f"Hello,\n\nwe dispute invoice {number}, wrong quantity: we ordered 40 units, not 400.\n\nDana\n\n"
            f"On Tue, {running.sendgrid.clock.now():%d %b %Y} Accounts Receivable <ar@demo.agentcollect.example> "
            "wrote:\n> A friendly reminder ...\n> To stop these emails: https://…/unsubscribe\n")
    delivery = running.sendgrid.inbound_email(f"Dana <{email['destination']}>", reply_address(reply_to, email["attempt_id"]),
                                              f"Re: invoice {number}", text)
    print(f"   email from {mask_email(email['destination'])}: 'we dispute invoice {number}, wrong quantity' -> "
          f"POST /webhooks/sendgrid/inbound/<token> (Inbound Parse): {getattr(delivery, 'status_code', None)}")
    forged = httpx.post(f"{hooks}/webhooks/sendgrid/inbound/not-the-token", timeout=10,
                        files={"from": (None, email["destination"]), "text": (None, "STOP"), "to": (None, reply_to)})
    flow.refused_status = forged.status_code
    print(f"   the same route without the token: {forged.status_code}, nothing changed")

    # 3. The sensor sees the new replies; its run writes the Customer note of each effect.
    resource = WarehouseResource(database_url=warehouse.engine.url.render_as_string(hide_password=False))
    with dg.build_sensor_context(instance=instance, resources={"warehouse": resource}) as context:
        tick = customer_replies_sensor.evaluate_tick(context)
    runs = [defs.resolve_job_def("reply_notes").execute_in_process(
        instance=instance, raise_on_error=False, run_config=quiet_logs,
        tags={"dagster/run_key": request.run_key, "dagster/sensor_name": "customer_replies_sensor"})
        for request in tick.run_requests or []]
    print(f"   customer_replies_sensor -> reply_notes: {', '.join('SUCCESS' if r.success else 'FAILURE' for r in runs) or 'no run'}")

    # 4. The rules again: the pause and the dispute change the cases.
    rules = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, raise_on_error=False, run_config=quiet_logs,
        asset_selection=[dg.AssetKey("invoice_eligibility"), dg.AssetKey("collection_cases")])
    with warehouse.engine.connect() as conn:
        flow.effects = [dict(r._mapping) for r in conn.execute(
            sa.select(customer_replies).where(customer_replies.c.customer_id.in_(list(before)))
            .order_by(customer_replies.c.received_at))]
        after = {customer_id: _case(conn, customer_id) for customer_id in before}
        flow.notes = [f"{n.customer_id}: {n.message}" for n in conn.execute(
            sa.select(customer_notes).where(customer_notes.c.customer_id.in_(list(before)),
                                            customer_notes.c.status == "written",
                                            sa.not_(customer_notes.c.fact_key.like("payment:%"))))]
    for row in flow.effects:
        sender = mask_email(row["sender"]) if "@" in row["sender"] else mask_phone(row["sender"])
        detail = f" ({row['dispute_reason']})" if row["dispute_reason"] else ""
        print(f"   effect: {row['channel']} from {sender} -> {row['intent']}{detail}: {row['effect']}; customer "
              f"{row['customer_id']} {before[row['customer_id']]} -> {after[row['customer_id']]}")
    for note in flow.notes:
        print(f"   note on customer {note}")
    intents = {(row["channel"], row["intent"]) for row in flow.effects}
    flow.success = (rules.success and bool(runs) and all(r.success for r in runs) and forged.status_code == 403
                    and {("sms", "paid_already"), ("email", "dispute")} <= intents and len(flow.notes) >= 2)
    return flow
