"""The Bill.com client against the local Bill.com sandbox over real HTTP (no mocks of our client)."""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from agentcollect_pipeline.ar_source.base import PaymentToRecord
from agentcollect_pipeline.ar_source.billcom import BillComARSource
from agentcollect_pipeline.clients.billcom import (
    ARScopeError,
    BillComClient,
    BillComError,
    BillComOutcomeUnknownError,
    BillComProtocolError,
    BillComQuotaExceededError,
    BillComTransportError,
    InMemorySessionStore,
)
from agentcollect_pipeline.clients.retry import RetryPolicy


def _all_invoices(client: BillComClient) -> list[dict]:
    return [row for page in client.iter_list("Invoice") for row in page]


def test_one_login_serves_every_call_and_a_new_process_reuses_the_stored_session(billcom):
    store = InMemorySessionStore()
    client = billcom.client(session_store=store)
    client.session_info()
    _all_invoices(client)
    client.read("Invoice", billcom.sandbox.entities("Invoice")[0]["id"])
    assert billcom.sandbox.stats["calls"]["Login"] == 1

    # A second client sharing the store stands for the next run's process: no new login.
    next_run = billcom.client(session_store=store)
    next_run.session_info()
    assert billcom.sandbox.stats["calls"]["Login"] == 1
    assert next_run.logins == 0


def test_session_renewed_before_idle_expiry(billcom):
    client = billcom.client()
    client.session_info()
    billcom.clock.advance(31 * 60)  # past our 30-minute renewal margin, before Bill.com's 35
    client.session_info()
    assert billcom.sandbox.stats["calls"]["Login"] == 2
    assert "BDC_1109" not in str(billcom.sandbox.stats)


def test_expired_session_relogs_in_once_and_replays(billcom):
    # The client's own clock does not move, so only Bill.com's answer tells it the session is gone.
    client = billcom.client(clock=lambda: datetime(2026, 11, 26, 15, 0, tzinfo=UTC))
    client.session_info()
    billcom.clock.advance(36 * 60)
    info = client.session_info()
    assert info
    calls = billcom.sandbox.stats["calls"]
    assert calls["Login"] == 2
    assert calls["GetSessionInfo"] == 3  # first, the refused replay candidate, the replay


def test_session_invalid_twice_is_an_error_not_a_loop(billcom):
    client = billcom.client()
    client.session_info()
    billcom.sandbox.inject("bdc_1109", path="GetSessionInfo", times=2)
    with pytest.raises(BillComError) as error:
        client.session_info()
    assert error.value.code == "BDC_1109"
    assert billcom.sandbox.stats["calls"]["Login"] == 2


@pytest.mark.parametrize("fault", ["http_500", "http_503", "http_429", "bdc_1322"])
def test_reads_retry_transient_failures(billcom, fault):
    client = billcom.client()
    billcom.sandbox.inject(fault, path="List/Customer", times=2)
    rows = [row for page in client.iter_list("Customer") for row in page]
    assert len(rows) == len(billcom.sandbox.entities("Customer"))
    assert client.retries["List/Customer"] == 2


def test_retries_are_bounded(billcom):
    client = billcom.client(retry=RetryPolicy(max_attempts=3, base_delay_s=0.001))
    billcom.sandbox.inject("http_503", path="GetSessionInfo", times=10)
    with pytest.raises(BillComTransportError, match="gave up after 3 attempts"):
        client.session_info()
    assert billcom.sandbox.stats["calls"]["GetSessionInfo"] == 3


def test_hourly_quota_fails_loudly_without_retrying(billcom):
    client = billcom.client()
    client.session_info()
    billcom.sandbox.inject("bdc_1144", path="List/Invoice", times=1)
    with pytest.raises(BillComQuotaExceededError, match="top of the hour"):
        _all_invoices(client)
    # The three pages in flight each got one try; none was retried.
    assert client.retries["List/Invoice"] == 0


def test_pagination_uses_full_pages_and_wastes_at_most_two_calls(billcom_factory):
    running = billcom_factory(invoices=2500, customers=200)
    client = running.client()
    pages = list(client.iter_list("Invoice"))
    total = len(running.sandbox.entities("Invoice"))
    assert [len(p) for p in pages][:-1] == [999] * (len(pages) - 1)
    ids = [row["id"] for page in pages for row in page]
    assert len(ids) == len(set(ids)) == total
    list_calls = running.sandbox.stats["calls"]["List/Invoice"]
    assert math.ceil(total / 999) <= list_calls <= math.ceil(total / 999) + 2
    assert running.sandbox.stats["max_in_flight_seen"] <= 3


def test_three_requests_in_flight_and_never_more(billcom_factory):
    running = billcom_factory(invoices=6000, customers=300)
    running.sandbox.set_faults(latency_ms=40)
    client = running.client()
    other = running.client()  # a second client object in the same process shares the org semaphore
    results = []
    worker = threading.Thread(target=lambda: results.append(_all_invoices(other)))
    worker.start()
    rows = _all_invoices(client)
    worker.join()
    assert len(rows) == len(results[0]) == len(running.sandbox.entities("Invoice"))
    assert running.sandbox.stats["max_in_flight_seen"] == 3
    assert client.retries["List/Invoice"] == 0 and other.retries["List/Invoice"] == 0


@pytest.mark.parametrize(
    "operation",
    [
        "List/Bill",
        "List/Vendor",
        "Crud/Create/Bill",
        "Crud/Read/Vendor",
        "PayBills",
        "List/SentPay",
        "List/ApprovalPolicy",
        "List/BankAccount",
        "Crud/Delete/Customer",
        "VoidARPayment",
    ],
)
def test_anything_outside_the_ar_allowlist_is_refused_before_sending(billcom, operation):
    client = billcom.client()
    with pytest.raises(ARScopeError, match="No request was sent"):
        client.call(operation, {})
    if operation.startswith("List/"):
        with pytest.raises(ARScopeError):
            list(client.iter_list(operation.removeprefix("List/")))
    assert billcom.sandbox.stats["total_calls"] == 0  # not even a login


def test_notes_only_on_customers_and_invoices(billcom):
    client = billcom.client()
    with pytest.raises(ARScopeError):
        client.send_message("00901VENDOR000000001", "hello")
    assert billcom.sandbox.stats["total_calls"] == 0


def _payment_for(billcom) -> tuple[PaymentToRecord, dict]:
    invoice = next(
        i for i in billcom.sandbox.entities("Invoice")
        if i["isActive"] == "1" and Decimal(str(i["amountDue"])) > 1 and i["customerId"].startswith("0cu")
        and any(c["id"] == i["customerId"] for c in billcom.sandbox.entities("Customer"))
    )
    payment = PaymentToRecord(
        customer_id=invoice["customerId"],
        invoice_id=invoice["id"],
        amount_cents=100,
        currency="USD",
        payment_date=date(2026, 11, 26),
        method="ach",
        reference="ac-evt-0001",
    )
    return payment, invoice


def test_recorded_payment_reduces_the_invoice_exactly(billcom):
    source = BillComARSource(billcom.client())
    payment, invoice = _payment_for(billcom)
    received = source.record_payment(payment)
    assert received["id"].startswith("0rp")
    after = billcom.sandbox.get("Invoice", invoice["id"])
    assert Decimal(str(after["amountDue"])) == Decimal(str(invoice["amountDue"])) - Decimal("1.00")
    stored = billcom.sandbox.get("ReceivedPay", received["id"])
    assert stored["refNumber"] == "ac-evt-0001"


@pytest.mark.parametrize("fault", ["delay", "http_500"])
def test_a_write_whose_outcome_is_unknown_is_not_sent_twice(billcom, fault):
    client = billcom.client(read_timeout_s=0.5)
    source = BillComARSource(client)
    payment, _ = _payment_for(billcom)
    client.session_info()
    before = len(billcom.sandbox.entities("ReceivedPay"))
    billcom.sandbox.inject(fault, path="RecordARPayment", times=1, delay_s=1.5, after_processing=True)
    with pytest.raises(BillComOutcomeUnknownError, match="not retried"):
        source.record_payment(payment)
    assert billcom.sandbox.stats["calls"]["RecordARPayment"] == 1
    assert len(billcom.sandbox.entities("ReceivedPay")) == before + 1  # it did land, exactly once


def test_a_write_refused_for_concurrency_is_retried_because_it_was_never_applied(billcom):
    client = billcom.client()
    source = BillComARSource(client)
    payment, _ = _payment_for(billcom)
    before = len(billcom.sandbox.entities("ReceivedPay"))
    billcom.sandbox.inject("bdc_1322", path="RecordARPayment", times=1)
    source.record_payment(payment)
    assert len(billcom.sandbox.entities("ReceivedPay")) == before + 1
    assert billcom.sandbox.stats["calls"]["RecordARPayment"] == 2


def test_malformed_response_is_a_clear_error(billcom):
    client = billcom.client()
    client.session_info()
    billcom.sandbox.inject("malformed", path="List/Customer", times=3)
    with pytest.raises(BillComProtocolError, match=r"List/Customer.*not JSON"):
        list(client.iter_list("Customer"))


def test_bill_com_errors_are_typed_with_code_and_message(billcom):
    client = billcom.client()
    with pytest.raises(BillComError) as error:
        client.read("Invoice", "00e0000000000NOSUCH")
    assert error.value.code == "BDC_1120"
    assert "Crud/Read/Invoice" in str(error.value)


def test_bad_credentials_are_not_retried(billcom):
    client = billcom.client(password="wrong-password")
    with pytest.raises(BillComError) as error:
        client.session_info()
    assert error.value.code == "BDC_1101"
    assert billcom.sandbox.stats["calls"]["Login"] == 1


def test_credentials_and_session_never_reach_logs_or_errors(billcom, caplog):
    caplog.set_level(logging.DEBUG)
    store = InMemorySessionStore()
    client = billcom.client(session_store=store)
    texts = [repr(client)]
    client.session_info()
    billcom.sandbox.inject("http_503", path="List/Customer", times=1)
    list(client.iter_list("Customer"))
    billcom.clock.advance(36 * 60)
    client.session_info()
    for bad in (billcom.client(password="nope"), billcom.client(dev_key="nope")):
        with pytest.raises(BillComError) as error:
            bad.session_info()
        texts.append(str(error.value))
    session_id = store.load_session(client._session_key).session_id
    secrets = [*billcom.sandbox.credentials.values(), session_id]
    secrets.remove(billcom.sandbox.credentials["org_id"])  # the org id is an identifier, logged on purpose
    haystack = caplog.text + "\n".join(texts)
    for secret in secrets:
        assert secret not in haystack


def test_incremental_read_returns_only_changed_records(billcom):
    source = BillComARSource(billcom.client())
    full = [row for batch in source.invoices_changed(None, lambda _c: "USD") for row in batch.rows]
    mark = max(r["updated_at"] for r in full if r["updated_at"])
    billcom.clock.advance(3600)
    changed_ids = set(billcom.sandbox.mutate(entity="Invoice", count=7, seed=3))
    billcom.sandbox.reset_stats()
    changed = [row for batch in source.invoices_changed(mark, lambda _c: "USD") for row in batch.rows]
    assert {r["invoice_id"] for r in changed if r["updated_at"] > mark} == changed_ids
    # The overlap window re-reads only what was updated in the two minutes before the mark.
    assert all(r["updated_at"] >= mark - source.overlap for r in changed)
    assert billcom.sandbox.stats["calls"]["List/Invoice"] <= 3


def test_notes_round_trip(billcom):
    source = BillComARSource(billcom.client())
    customer_id = billcom.sandbox.entities("Customer")[0]["id"]
    note_id = source.write_customer_note(customer_id, "AgentCollect: payment of 1.00 USD posted")
    assert note_id.startswith("act")
    notes = source.list_customer_notes(customer_id)
    assert any(n["message"] == "AgentCollect: payment of 1.00 USD posted" for n in notes)


def test_an_org_without_the_contacts_list_still_syncs(billcom):
    # List/CustomerContact is an inferred path: a Bill.com that answers "API not supported" is tolerated.
    source = BillComARSource(billcom.client())
    billcom.sandbox.inject("bdc_1121", path="List/CustomerContact", times=1)
    assert [row for batch in source.contacts_changed(None, {}) for row in batch.rows] == []


def test_an_org_that_refuses_the_updated_time_filter_gets_a_full_read(billcom):
    source = BillComARSource(billcom.client())
    mark = datetime(2026, 11, 1, tzinfo=UTC)
    billcom.sandbox.inject("bdc_1130", path="List/Customer", times=1)
    rows = [row for batch in source.customers_changed(mark) for row in batch.rows]
    assert len(rows) == len(billcom.sandbox.entities("Customer"))
