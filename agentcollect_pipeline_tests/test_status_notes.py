"""customer_status_notes: one dated, masked note on the Bill.com customer per dispute, promise, pause,
opt-out and wrong contact — written through the real client to the Bill.com sandbox, and never twice."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import sqlalchemy as sa

from agentcollect_pipeline.assets.ar_source import build_ar_source_assets
from agentcollect_pipeline.payments.assets import customer_status_notes
from agentcollect_pipeline.resources import PaymentSettings
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema

AR_SOURCE_ASSETS, AR_SOURCE_CHECKS = build_ar_source_assets("billcom")

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def _resources(billcom, warehouse_resource, ar_settings):
    return {
        "ar_source": billcom.ar_source(warehouse_resource),
        "warehouse": warehouse_resource,
        "ar_settings": ar_settings,
        "payment_settings": PaymentSettings(),
    }


def _notes_by_customer(billcom) -> dict[str, list[str]]:
    notes: dict[str, list[str]] = {}
    for message in billcom.sandbox.entities("Message"):
        notes.setdefault(message["objectId"], []).append(message["message"])
    return notes


def test_each_fact_gets_one_masked_note_on_its_customer(billcom, warehouse_resource, ar_settings):
    resources = _resources(billcom, warehouse_resource, ar_settings)
    assert dg.materialize(AR_SOURCE_ASSETS, resources=resources).success
    store = warehouse_resource.get_warehouse()
    customers = store.read_frame(schema.billcom_customers)
    with_email = customers[customers["email"].notna() & (customers["validation_status"] == "valid")].iloc[0]
    with_phone = customers[customers["phone_e164"].notna()].iloc[-1]
    invoices = store.read_frame(schema.billcom_invoices)
    invoice = invoices[invoices["customer_id"] == with_phone["customer_id"]].iloc[0]
    with store.transaction() as conn:
        conn.execute(sa.insert(cs.disputes), [{
            "dispute_id": "dsp-1", "invoice_id": invoice["invoice_id"], "reason": "goods damaged", "opened_at": NOW,
        }])
        conn.execute(sa.insert(cs.promises_to_pay), [{
            "promise_id": "ptp-1", "invoice_id": None, "customer_id": with_email["customer_id"],
            "promised_date": date(2026, 12, 5), "amount_cents": 125_000, "currency": "USD", "status": "pending",
            "created_at": NOW,
        }])
        conn.execute(sa.insert(cs.customer_pauses), [{
            "pause_id": "pau-1", "customer_id": with_phone["customer_id"], "paused_until": date(2026, 11, 27),
            "reason": "debtor says already paid: reconcile before chasing", "created_at": NOW,
        }])
        conn.execute(sa.insert(cs.opt_outs), [{
            "opt_out_id": "opt-1", "channel": "email", "address": with_email["email"].upper(),
            "opted_out_at": NOW, "source": "unsubscribe link",
        }])
        conn.execute(sa.insert(os_.invalid_contacts), [{
            "channel": "sms", "address": with_phone["phone_e164"], "reason": "Twilio 21614 not a mobile number",
            "marked_at": NOW,
        }])

    result = dg.materialize([customer_status_notes], resources=resources)
    assert result.success
    meta = result.asset_materializations_for_node("customer_status_notes")[0].metadata
    assert meta["notes_written_by_fact"].value == {
        "dispute": 1, "promise": 1, "pause": 1, "opt_out": 1, "invalid_contact": 1,
    }

    notes = _notes_by_customer(billcom)
    email_notes = " ".join(notes[with_email["customer_id"]])
    assert "promise to pay 1,250.00 USD by 2026-12-05" in email_notes
    assert "email opt-out" in email_notes and "2026-11-20" in email_notes
    assert with_email["email"] not in email_notes and with_email["email"].upper() not in email_notes
    phone_notes = " ".join(notes[with_phone["customer_id"]])
    assert f"invoice {invoice['invoice_number']} disputed on 2026-11-20 (goods damaged)" in phone_notes
    assert "sms contact" in phone_notes and with_phone["phone_e164"] not in phone_notes
    assert "collection paused until 2026-11-27 on 2026-11-20 (debtor says already paid" in phone_notes

    # Every later cycle finds the facts already noted: nothing is written twice.
    before = len(billcom.sandbox.entities("Message"))
    again = dg.materialize([customer_status_notes], resources=resources)
    assert again.asset_materializations_for_node("customer_status_notes")[0].metadata["notes_written"].value == 0
    assert len(billcom.sandbox.entities("Message")) == before

    # A dispute that closes is a new fact with its own note.
    with store.transaction() as conn:
        conn.execute(sa.update(cs.disputes).where(cs.disputes.c.dispute_id == "dsp-1").values(closed_at=NOW))
    dg.materialize([customer_status_notes], resources=resources)
    assert len(billcom.sandbox.entities("Message")) == before + 1
