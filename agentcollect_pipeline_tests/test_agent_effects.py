"""A debtor's reply changes exactly what its intent says — and an "I paid" is never a payment."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import pytest
import sqlalchemy as sa

from agentcollect_pipeline.agent.effects import handle_reply
from agentcollect_pipeline.assets.replies import customer_replies
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.agent_schema import customer_replies as replies_table
from agentcollect_pipeline.warehouse.payments_schema import payments_posted

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday
PHONE = "+14155550123"


@pytest.fixture
def store(warehouse_resource):
    store = warehouse_resource.get_warehouse()
    with store.transaction() as conn:
        conn.execute(os_.outreach_attempts.insert(), [{
            "attempt_id": "att_0123456789abcdef0123", "case_id": "case-1", "step": "reminder", "customer_id": "C1",
            "currency": "USD", "channel": "sms", "destination": PHONE, "invoice_ids": "inv-1,inv-2",
            "total_due_cents": 125_000, "consumer": False, "status": "delivered", "reserved_at": NOW,
            "sent_at": NOW, "updated_at": NOW,
        }])
    return store


def _count(store, table, where=None) -> int:
    return store.count(table, where)


def test_i_paid_pauses_the_customer_and_posts_nothing(store):
    outcome = handle_reply(store, channel="sms", sender=PHONE, body="We already paid this last week",
                           reply_id="SM1", received_at=NOW)
    assert (outcome.intent, outcome.customer_id, outcome.case_id) == ("paid_already", "C1", "case-1")
    pauses = store.read_frame(cs.customer_pauses)
    assert list(pauses["customer_id"]) == ["C1"] and str(pauses["paused_until"].iloc[0].date()) == "2026-12-02"
    assert _count(store, payments_posted) == 0


def test_promise_dispute_wrong_contact_and_stop_each_change_one_thing(store):
    promise = handle_reply(store, channel="sms", sender=PHONE, body="I will pay on Friday", reply_id="SM2",
                           received_at=NOW)
    assert promise.intent == "promise_to_pay"
    assert store.read_frame(cs.promises_to_pay)["promised_date"].iloc[0].date() == date(2026, 11, 27)

    dispute = handle_reply(store, channel="sms", sender=PHONE, body="The goods arrived damaged, we dispute this",
                           reply_id="SM3", received_at=NOW)
    assert dispute.intent == "dispute"
    assert set(store.read_frame(cs.disputes)["invoice_id"]) == {"inv-1", "inv-2"}

    wrong = handle_reply(store, channel="sms", sender=PHONE, body="Wrong number, I don't know this company",
                         reply_id="SM4", received_at=NOW)
    assert wrong.intent == "wrong_contact"
    assert _count(store, os_.invalid_contacts, os_.invalid_contacts.c.address == PHONE) == 1

    stop = handle_reply(store, channel="sms", sender=PHONE, body="stop texting me", reply_id="SM5", received_at=NOW)
    assert stop.intent == "stop"
    assert set(store.read_frame(cs.opt_outs)["channel"]) == {"sms", "voice"}


def test_a_redelivered_reply_changes_nothing_twice(store):
    for _ in range(2):
        handle_reply(store, channel="sms", sender=PHONE, body="We already paid", reply_id="SM9", received_at=NOW)
    assert _count(store, cs.customer_pauses) == 1 and _count(store, replies_table) == 1


def test_a_reply_matched_by_the_reference_in_the_message(store):
    outcome = handle_reply(store, channel="email", sender="someone@else.example",
                           body="Re: Ref 0123456789 - please send me a copy of the invoice", received_at=NOW)
    assert (outcome.intent, outcome.case_id, outcome.effect) == ("invoice_copy", "case-1", "copy_requested")


def test_an_unknown_sender_is_kept_for_a_person_and_changes_no_customer(store):
    outcome = handle_reply(store, channel="sms", sender="+14155550999", body="I paid already", received_at=NOW)
    assert outcome.customer_id is None and outcome.effect == "unmatched"
    assert _count(store, cs.customer_pauses) == 0


def test_customer_replies_asset_reports_intents(store, warehouse_resource):
    handle_reply(store, channel="sms", sender=PHONE, body="We already paid", reply_id="SM1", received_at=NOW)
    handle_reply(store, channel="sms", sender=PHONE, body="STOP", reply_id="SM2", received_at=NOW)
    result = dg.materialize([customer_replies], resources={"warehouse": warehouse_resource})
    meta = result.asset_materializations_for_node("customer_replies")[0].metadata
    assert meta["replies_by_intent"].value == {"paid_already": 1, "stop": 1}
    assert PHONE not in meta["preview_latest"].value
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.billcom_invoices)).scalar_one() == 0
