"""`agentcollect payments review`: people resolve or dismiss what the machine must not decide.

Every decision goes through the same exactly-once ledger as the job, so the invariant is the product's:
at most one ReceivedPay per event, whoever decides and however often they retry.
"""

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from agentcollect_pipeline.ar_source.base import PaymentToRecord
from agentcollect_pipeline.ar_source.billcom import BillComARSource
from agentcollect_pipeline.payments.posting import PaymentPoster, posting_key
from agentcollect_pipeline.payments.review import ReviewError, dismiss, list_items, resolve_to_invoice
from agentcollect_pipeline.warehouse.payments_schema import needs_review, payments_posted
from agentcollect_pipeline_tests.test_payments import Lane, _due, _event, _invoice, _notes, _rerun, make_lane


@pytest.fixture
def lane(billcom, warehouse_resource, ar_settings):
    yield from make_lane(billcom, warehouse_resource, ar_settings)


def _poster(lane: Lane) -> PaymentPoster:
    source = lane.resources["ar_source"].get_source(lane.resources["ar_settings"])
    return PaymentPoster(lane.warehouse, source, policy=lane.resources["payment_settings"].policy())


def _review_id(lane: Lane, event_id: str) -> int:
    (item,) = [r for r in lane.reviews() if r["event_id"] == event_id]
    return item["review_id"]


def _crash(self, payment):
    raise RuntimeError("Bill.com unreachable")


def _item(lane: Lane, review_id: int) -> dict:
    with lane.warehouse.engine.connect() as conn:
        return conn.execute(sa.select(needs_review).where(needs_review.c.review_id == review_id)).one()._asdict()


def test_an_overpayment_resolved_to_another_invoice_posts_once_and_records_who_and_why(lane):
    small = _invoice(lane, "100.00")
    large = _invoice(lane, "500.00")
    lane.send(_event("evt_over", small, "150.00"))
    lane.tick_and_run()
    (item,) = list_items(lane.warehouse)
    assert (item["reason"], item["amount_cents"], item["currency"]) == ("overpayment", 15000, "USD")
    assert item["ledger_status"] == "needs_review"

    decision = resolve_to_invoice(_poster(lane), item["review_id"], large["id"], by="alice", why="remittance says INV for 500")
    assert decision.resolution == "posted"
    (payment,) = lane.received_with_key("evt_over")
    assert payment["invoicePays"][0]["invoiceId"] == large["id"]
    assert _due(lane, large) == Decimal("350.00") and _due(lane, small) == Decimal("100.00")
    ledger = lane.ledger("evt_over")
    assert ledger["status"] == "posted" and ledger["received_payment_id"] == payment["id"]
    assert "resolved by alice" in ledger["detail"]
    closed = _item(lane, item["review_id"])
    assert (closed["resolution"], closed["resolved_by"], closed["resolution_note"]) == (
        "posted", "alice", "remittance says INV for 500")
    assert closed["resolved_at"] is not None
    (note,) = _notes(lane, large["customerId"])
    assert "USD 150.00" in note and "USD 350.00 remains due" in note
    assert list_items(lane.warehouse) == []

    # Deciding twice, re-running the old run, or another tick: still one payment.
    with pytest.raises(ReviewError, match="already posted by alice"):
        resolve_to_invoice(_poster(lane), item["review_id"], large["id"], by="bob", why="again")
    assert lane.execute(_rerun("webhook:evt_over")).success
    assert lane.tick() == []
    assert len(lane.received_with_key("evt_over")) == 1
    assert len(_notes(lane, large["customerId"])) == 1


def test_a_refused_resolution_posts_nothing_and_leaves_the_item_open(lane):
    invoice = _invoice(lane, "100.00")
    lane.send(_event("evt_eur", invoice, "100.00", currency="EUR"))
    lane.tick_and_run()
    review_id = _review_id(lane, "evt_eur")
    with pytest.raises(ReviewError, match="currency_mismatch"):
        resolve_to_invoice(_poster(lane), review_id, invoice["id"], by="alice", why="same customer")
    with pytest.raises(ReviewError, match="no invoice 00e00000000NOSUCHINV"):
        resolve_to_invoice(_poster(lane), review_id, "00e00000000NOSUCHINV", by="alice", why="typo")
    with pytest.raises(ReviewError, match="--by"):
        resolve_to_invoice(_poster(lane), review_id, invoice["id"], by=" ", why="nobody")
    assert _item(lane, review_id)["resolved_at"] is None
    assert lane.ledger("evt_eur")["status"] == "needs_review"
    assert lane.billcom.sandbox.stats["calls"].get("RecordARPayment", 0) == 0
    assert [i["review_id"] for i in list_items(lane.warehouse)] == [review_id]


def test_a_dismissed_event_is_never_posted_afterwards(lane):
    invoice = _invoice(lane, "100.00")
    lane.send(_event("evt_unknown", invoice, "100.00", invoice_id="00e00000000NOSUCHINV"))
    lane.tick_and_run()
    review_id = _review_id(lane, "evt_unknown")
    decision = dismiss(_poster(lane), review_id, by="carol", why="test payment from the bank")
    assert decision.resolution == "dismissed"
    item = _item(lane, review_id)
    assert (item["resolution"], item["resolved_by"]) == ("dismissed", "carol")
    assert lane.execute(_rerun("webhook:evt_unknown")).success
    assert lane.received_with_key("evt_unknown") == []
    with pytest.raises(ReviewError, match="already dismissed"):
        resolve_to_invoice(_poster(lane), review_id, invoice["id"], by="dave", why="changed my mind")
    assert list_items(lane.warehouse) == [] and len(list_items(lane.warehouse, include_resolved=True)) == 1


def test_a_given_up_event_is_resolved_once_even_if_its_post_had_landed(lane, monkeypatch):
    """posting_failed with the money already at Bill.com: dismissing is refused, resolving records it."""
    invoice = _invoice(lane, "60.00")
    with monkeypatch.context() as patch:
        patch.setattr(BillComARSource, "record_payment", _crash)
        lane.send(_event("evt_gone", invoice, "60.00"))
        for _ in range(5):
            for request in lane.tick():
                lane.execute(request)
    review_id = _review_id(lane, "evt_gone")
    assert _item(lane, review_id)["reason"] == "posting_failed"
    assert lane.ledger("evt_gone")["status"] == "reserved"

    # A straggling write landed after all (e.g. a worker that was only slow): its key is at Bill.com.
    source = lane.resources["ar_source"].get_source(lane.resources["ar_settings"])
    landed = source.record_payment(PaymentToRecord(
        customer_id=invoice["customerId"], invoice_id=invoice["id"], amount_cents=6000, currency="USD",
        payment_date=date.fromisoformat(invoice["invoiceDate"]), method="ach", reference=posting_key("webhook", "evt_gone"),
    ))
    with pytest.raises(ReviewError, match="dismissing would hide real money"):
        dismiss(_poster(lane), review_id, by="carol", why="looks stuck")
    assert lane.ledger("evt_gone")["received_payment_id"] == landed["id"]
    decision = resolve_to_invoice(_poster(lane), review_id, invoice["id"], by="carol", why="it landed")
    assert decision.resolution == "posted" and decision.outcome.received_payment_id == landed["id"]
    assert len(lane.received_with_key("evt_gone")) == 1
    assert lane.billcom.sandbox.stats["calls"].get("RecordARPayment", 0) == 1  # only the straggler


def test_a_given_up_event_that_never_landed_is_posted_by_its_resolution(lane, monkeypatch):
    invoice = _invoice(lane, "70.00")
    with monkeypatch.context() as patch:
        patch.setattr(BillComARSource, "record_payment", _crash)
        lane.send(_event("evt_down", invoice, "70.00"))
        for _ in range(5):
            for request in lane.tick():
                lane.execute(request)
    review_id = _review_id(lane, "evt_down")
    decision = resolve_to_invoice(_poster(lane), review_id, invoice["id"], by="erin", why="Bill.com is back")
    assert decision.resolution == "posted"
    assert len(lane.received_with_key("evt_down")) == 1
    assert _due(lane, invoice) == 0
    assert lane.tick() == []


def test_cli_lists_resolves_and_dismisses(lane, monkeypatch, capsys):
    from agentcollect_pipeline.cli import main

    credentials = lane.billcom.sandbox.credentials
    monkeypatch.setenv("BILLCOM_BASE_URL", lane.billcom.base_url)
    monkeypatch.setenv("BILLCOM_USERNAME", credentials["username"])
    monkeypatch.setenv("BILLCOM_PASSWORD", credentials["password"])
    monkeypatch.setenv("BILLCOM_ORG_ID", credentials["org_id"])
    monkeypatch.setenv("BILLCOM_DEV_KEY", credentials["dev_key"])
    monkeypatch.setenv("AGENTCOLLECT_DATABASE_URL", lane.warehouse.url)
    small, large = _invoice(lane, "100.00"), _invoice(lane, "900.00")
    lane.send(_event("evt_cli_over", small, "1234.50"))
    lane.send(_event("evt_cli_bad", small, "10.00", invoice_id="00e00000000NOSUCHINV"))
    lane.tick_and_run()
    over, bad = _review_id(lane, "evt_cli_over"), _review_id(lane, "evt_cli_bad")

    assert main(["payments", "review"]) == 0
    out = capsys.readouterr().out
    assert "overpayment" in out and "webhook:evt_cli_over" in out and "USD 1,234.50" in out
    assert "unknown_invoice" in out and "USD 10.00" in out

    assert main(["payments", "review", "resolve", str(over), "--post-to", large["id"], "--by", "alice", "--why", "x"]) == 1
    assert "overpayment" in capsys.readouterr().err  # 1,234.50 is more than the 900.00 due: refused again
    assert main(["payments", "review", "dismiss", str(bad), "--by", "bob", "--why", "bank test entry"]) == 0
    assert "dismissed by bob" in capsys.readouterr().out
    lane.billcom.sandbox.update_invoice(large["id"], amount=Decimal("2000.00"), amountDue=Decimal("2000.00"))
    assert main(["payments", "review", "resolve", str(over), "--post-to", large["id"], "--by", "alice",
                 "--why", "customer confirmed"]) == 0
    assert "USD 1,234.50 posted" in capsys.readouterr().out
    assert main(["payments", "review"]) == 0
    assert "no open review items" in capsys.readouterr().out
    assert main(["payments", "review", "--all"]) == 0
    out = capsys.readouterr().out
    assert "posted by alice" in out and "dismissed by bob" in out
    assert len(lane.received_with_key("evt_cli_over")) == 1
    with lane.warehouse.engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(payments_posted.c.event_id, payments_posted.c.status)).all())
    assert statuses == {"evt_cli_over": "posted", "evt_cli_bad": "needs_review"}


def test_cli_resolve_without_credentials_names_the_variable(lane, monkeypatch, capsys):
    from agentcollect_pipeline.cli import main

    for name in ("BILLCOM_BASE_URL", "BILLCOM_USERNAME", "BILLCOM_PASSWORD", "BILLCOM_ORG_ID", "BILLCOM_DEV_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTCOLLECT_DATABASE_URL", lane.warehouse.url)
    assert main(["payments", "review", "dismiss", "1", "--by", "a", "--why", "b"]) == 2
    assert "BILLCOM_" in capsys.readouterr().err
