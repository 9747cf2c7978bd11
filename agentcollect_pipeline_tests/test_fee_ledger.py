"""fee_ledger: which collected money earns the success fee, and the fee in exact minor units."""

from datetime import UTC, date, datetime
from decimal import Decimal

import dagster as dg
import pytest
import sqlalchemy as sa

from agentcollect_pipeline.ar_source.resource import ARSourceResource
from agentcollect_pipeline.payments import fees
from agentcollect_pipeline.payments.assets import fee_ledger
from agentcollect_pipeline.payments.posting import posting_key
from agentcollect_pipeline.resources import ARSyncSettings, PaymentSettings
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.payments_schema import fee_ledger as fee_table
from agentcollect_pipeline.warehouse.payments_schema import payment_events, payments_posted

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("amount_cents", "percent", "expected"),
    [
        (125_000, "10", 12_500),
        (5, "10", 0),  # 0.5 -> 0 (half to even)
        (15, "10", 2),  # 1.5 -> 2
        (25, "10", 2),  # 2.5 -> 2
        (35, "10", 4),  # 3.5 -> 4
        (101, "12.5", 13),  # 12.625 -> 13
        (100_003, "7.25", 7_250),  # 7250.2175 -> 7250
        (999_999_999_999, "100", 999_999_999_999),
        (12_345, "0", 0),
    ],
)
def test_fee_is_exact_and_rounded_half_even(amount_cents, percent, expected):
    assert fees.fee_cents(amount_cents, fees.parse_percent(percent)) == expected


@pytest.mark.parametrize("text", ["-1", "100.01", "ten", "NaN", "Infinity", ""])
def test_fee_percent_must_be_a_decimal_between_0_and_100(text):
    with pytest.raises(ValueError):
        fees.parse_percent(text)


def _invoice(invoice_id: str, customer: str, due: date, currency: str = "USD") -> dict:
    return {
        "invoice_id": invoice_id, "invoice_number": f"INV-{invoice_id}", "customer_id": customer, "invoice_date": due,
        "due_date": due, "amount_cents": 100_000, "amount_due_cents": 0, "currency": currency, "payment_status": "0",
        "is_active": True, "has_auto_pay": False, "validation_status": "valid", "synced_at": NOW,
    }


def _payment(payment_id: str, customer: str, paid: date, lines: list[tuple[str, int]], currency: str = "USD"):
    payment = {
        "received_payment_id": payment_id, "customer_id": customer, "payment_date": paid,
        "amount_cents": sum(a for _, a in lines), "currency": currency, "is_online": True, "ref_number": "",
        "validation_status": "valid", "synced_at": NOW,
    }
    rows = [{"invoice_pay_id": f"{payment_id}-{i}", "received_payment_id": payment_id, "invoice_id": invoice_id,
             "amount_cents": amount, "currency": currency, "synced_at": NOW} for i, (invoice_id, amount) in enumerate(lines)]
    return payment, rows


@pytest.fixture
def book(warehouse_resource):
    return populate(warehouse_resource.get_warehouse())


def populate(warehouse):
    """A small book: outreach to C1 about its USD invoices (Oct 1 - Oct 20), payments around it, one posted by
    us and not synced yet."""
    opened, last_seen = datetime(2026, 10, 1, 12, tzinfo=UTC), datetime(2026, 10, 20, 12, tzinfo=UTC)
    invoices = [
        _invoice("a", "C1", date(2026, 9, 1)),
        _invoice("b", "C1", date(2026, 12, 31)),  # not yet due when paid: never chased
        _invoice("c", "C2", date(2026, 9, 1)),  # customer without a case
        _invoice("d", "C1", date(2026, 9, 1), currency="CAD"),  # case is in USD only
        _invoice("e", "C1", date(2026, 9, 1)),
        _invoice("f", "C1", date(2026, 9, 1)),
        _invoice("g", "C1", date(2026, 9, 1)),
    ]
    payments = [
        _payment("p1", "C1", date(2026, 10, 5), [("a", 40_005), ("b", 10_000)]),  # a counts, b does not
        _payment("p2", "C2", date(2026, 10, 5), [("c", 50_000)]),
        _payment("p3", "C1", date(2026, 10, 5), [("d", 50_000)], currency="CAD"),
        _payment("p4", "C1", date(2026, 11, 19), [("e", 20_000)]),  # last_seen (Oct 20) + 30 days = Nov 19: in
        _payment("p5", "C1", date(2026, 11, 20), [("f", 20_000)]),  # one day too late
        _payment("p6", "C1", date(2026, 9, 30), [("g", 20_000)]),  # before the case opened
    ]
    with warehouse.transaction() as conn:
        warehouse.upsert(conn, schema.billcom_invoices, invoices)
        warehouse.upsert(conn, schema.billcom_received_payments, [p for p, _ in payments])
        warehouse.upsert(conn, schema.billcom_received_payment_lines, [line for _, rows in payments for line in rows])
        conn.execute(cs.cases.insert(), [{"case_id": "case-1", "customer_id": "C1", "currency": "USD", "status": "closed",
                                          "opened_at": opened, "closed_at": last_seen, "last_seen_at": last_seen}])
        # Our outreach about C1's overdue USD invoices: first contact Oct 1, last Oct 20 (d is CAD: never named).
        contact = {"case_id": "case-1", "customer_id": "C1", "currency": "USD", "channel": "email",
                   "destination": "ap@c1.example", "invoice_ids": "a,b,e,f,g", "total_due_cents": 1, "consumer": False}
        conn.execute(os_.outreach_attempts.insert(), [
            {**contact, "attempt_id": "att-1", "step": "reminder", "status": "delivered", "reserved_at": opened,
             "sent_at": opened, "updated_at": opened},
            {**contact, "attempt_id": "att-2", "step": "firm", "status": "unconfirmed", "reserved_at": last_seen,
             "sent_at": None, "updated_at": last_seen},
            # Reached nobody: earns nothing, even though it is later than the others.
            {**contact, "attempt_id": "att-3", "step": "final", "status": "rejected", "reserved_at": NOW,
             "sent_at": None, "updated_at": NOW},
        ])
        # A payment we posted minutes ago, not synced back yet: it counts at once, from our ledger.
        sequence = conn.execute(payment_events.insert().values(
            source="webhook", event_id="evt_1", received_at=NOW, occurred_at=datetime(2026, 10, 7, 9, tzinfo=UTC),
            amount_cents=30_001, currency="USD", invoice_id="g", method="ach", raw_payload="{}",
        )).inserted_primary_key[0]
        conn.execute(payments_posted.insert().values(
            posting_key=posting_key("webhook", "evt_1"), event_sequence=sequence, source="webhook", event_id="evt_1",
            status="posted", claim_token="t", claimed_at=NOW, customer_id="C1", invoice_id="g", invoice_number="INV-g",
            amount_cents=30_001, currency="USD", received_payment_id="0rpNOTSYNCEDYET", reconcile_checks=0, decided_at=NOW,
        ))
    return warehouse


def test_only_overdue_payments_after_our_outreach_and_within_its_window_are_attributed(book):
    rule = fees.FeeRule(percent=Decimal("10"), window_days=30, timezone="UTC")
    rows = fees.compute(book, schema.ar_tables("billcom"), rule, NOW)
    assert [(r["invoice_id"], r["amount_cents"], r["fee_cents"], r["source"]) for r in rows] == [
        ("a", 40_005, 4_000, "billcom"),  # 4000.5 -> 4000 (half to even)
        ("g", 30_001, 3_000, "agentcollect"),
        ("e", 20_000, 2_000, "billcom"),
    ]
    assert {r["case_id"] for r in rows} == {"case-1"}
    assert rows[0]["attributed_from"] == date(2026, 10, 1) and rows[0]["attributed_until"] == date(2026, 11, 19)
    assert fees.totals(rows) == {"USD": {"collected_cents": 90_006, "fee_cents": 9_000, "lines": 3}}


def test_a_posted_payment_is_counted_once_after_the_sync_brings_it_back(book):
    with book.transaction() as conn:
        conn.execute(payments_posted.update().values(received_payment_id="p7"))
        payment, lines = _payment("p7", "C1", date(2026, 10, 7), [("g", 30_001)])
        book.upsert(conn, schema.billcom_received_payments, [payment])
        book.upsert(conn, schema.billcom_received_payment_lines, lines)
    rows = fees.compute(book, schema.ar_tables("billcom"), fees.FeeRule(Decimal("10"), 30, "UTC"), NOW)
    assert [(r["invoice_id"], r["source"]) for r in rows if r["invoice_id"] == "g"] == [("g", "billcom")]


def test_fee_ledger_asset_rewrites_its_table(book, warehouse_resource):
    resources = {
        "warehouse": warehouse_resource,
        "ar_source": ARSourceResource(kind="billcom"),  # only its tables are read: no source call
        "ar_settings": ARSyncSettings(org_timezone="UTC"),
        "payment_settings": PaymentSettings(fee_percent="12.5", fee_attribution_window_days=0),
    }
    for _ in range(2):  # twice: the table is rewritten, never appended to
        result = dg.materialize([fee_ledger], resources=resources)
        assert result.success
    metadata = result.asset_materializations_for_node("fee_ledger")[0].metadata
    # window 0: only payments up to the last outreach day (Oct 20) count
    assert metadata["dagster/row_count"].value == 2
    assert metadata["fee"].value == {"USD": "87.51"}  # 40005 x 12.5% = 5000.625 -> 5001; 30001 -> 3750.125 -> 3750
    assert metadata["collected_attributed"].value == {"USD": "700.06"}
    with book.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(fee_table.c.fee_cents))).scalar_one() == 8_751
