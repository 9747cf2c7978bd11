"""The QuickBooks Online client and AR source against the local QBO sandbox over real HTTP (no mocks of
our client). Token-store doubles stand in for a second process or a failing database only."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentcollect_pipeline.ar_source.base import (
    AROutcomeUnknownError,
    ARRecordNotFoundError,
    ARSourceError,
    ARTransportError,
    PaymentToRecord,
)
from agentcollect_pipeline.ar_source.qbo import QBOARSource
from agentcollect_pipeline.clients.qbo import (
    QBOClient,
    QBOError,
    QBOProtocolError,
    QBOReconnectRequiredError,
    QBOTokenPersistError,
    parse_timestamp,
    select,
    where,
)
from agentcollect_pipeline.clients.retry import RetryPolicy
from agentcollect_pipeline.clients.token_store import (
    InMemoryTokenStore,
    StoredToken,
    TokenStoreError,
    WarehouseTokenStore,
)
from agentcollect_pipeline.resources import ARSyncSettings, WarehouseResource
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.oauth_schema import oauth_tokens
from agentcollect_pipeline_tests import qbo_fixtures
from agentcollect_pipeline_tests.qbo_fixtures import SANDBOX_START, TEST_ENCRYPTION_KEY, RunningQBO

qbo = qbo_fixtures.qbo
qbo_factory = qbo_fixtures.qbo_factory
ALL = lambda _customer_id: "USD"  # noqa: E731  (every customer known, in USD)


@pytest.fixture
def warehouse_resource(tmp_path: Path) -> WarehouseResource:
    return WarehouseResource(database_url=f"sqlite:///{tmp_path / 'agentcollect.sqlite'}")


def columns(table: sa.Table) -> set[str]:
    return {c.name for c in table.columns}


def rows_of(batches) -> list[dict]:
    return [row for batch in batches for row in batch.rows]


def open_invoice(running: RunningQBO, minimum: Decimal = Decimal("50")) -> dict:
    active = {c["Id"] for c in running.sandbox.entities("Customer") if c["Active"]}
    return next(i for i in running.sandbox.entities("Invoice")
                if i["Balance"] == i["TotalAmt"] and i["Balance"] > minimum and i["CustomerRef"]["value"] in active)


def payment_for(invoice: dict, cents: int, reference: str = "AC-0123456789ABCDEF0123") -> PaymentToRecord:
    return PaymentToRecord(customer_id=invoice["CustomerRef"]["value"], invoice_id=invoice["Id"], amount_cents=cents,
                           currency="USD", payment_date=date(2026, 11, 25), method="ach", reference=reference,
                           description="AgentCollect webhook payment event evt_1")


def ours(running: RunningQBO, reference: str = "AC-0123456789ABCDEF0123") -> list[dict]:
    return [p for p in running.sandbox.payments if p.get("PaymentRefNum") == reference]


class StaleOnceStore(InMemoryTokenStore):
    """Stands for a second process that read the store just before another process rotated the token."""

    def __init__(self, shared: InMemoryTokenStore, stale: StoredToken) -> None:
        super().__init__()
        self._shared, self._stale = shared, stale

    def get(self, key):
        stale, self._stale = self._stale, None
        return stale or self._shared.get(key)

    def put(self, key, refresh_token, **kwargs):
        return self._shared.put(key, refresh_token, **kwargs)


class FailingStore(InMemoryTokenStore):
    """A token store whose database is down for writes while `failing` is set."""

    failing = False

    def put(self, key, refresh_token, **kwargs):
        if self.failing and kwargs.get("expected_version") is not None:
            raise sa.exc.OperationalError("UPDATE oauth_tokens", {}, Exception("database is locked"))
        return super().put(key, refresh_token, **kwargs)


# ---- reading and mapping ---------------------------------------------------------------------------------


def test_full_sync_rows_have_exactly_the_warehouse_columns(qbo):
    source = qbo.source()
    customers = rows_of(source.customers_changed(None))
    assert len(customers) == 60  # inactive ones included
    assert all(set(row) == columns(schema.billcom_customers) for row in customers)
    assert {row["account_type"] for row in customers} == {"business", "person"}
    assert any(not row["is_active"] for row in customers)
    assert all(row["has_authorized_to_charge"] is False for row in customers)
    assert any(row["phone_e164"] and row["phone_e164"].startswith("+1") for row in customers)
    assert list(source.contacts_changed(None, {})) == []
    currency = {row["customer_id"]: row["currency"] for row in customers}

    invoices = rows_of(source.invoices_changed(None, currency.get))
    assert len(invoices) == 300
    assert all(set(row) == columns(schema.billcom_invoices) for row in invoices)
    raw = {i["Id"]: i for i in qbo.sandbox.entities("Invoice")}
    for row in invoices:
        record = raw[row["invoice_id"]]
        assert row["amount_due_cents"] == int(record["Balance"] * 100)
        assert row["updated_at"] == record["MetaData"]["LastUpdatedTime"]
        assert row["actg_class_id"] == record.get("ClassRef", {}).get("value")
        if record.get("PrivateNote") == "Voided":
            assert row["is_active"] is False and row["validation_status"] != "invalid"
        elif record["Balance"] == 0:
            assert row["payment_status"] == "0"
        elif record["Balance"] < record["TotalAmt"]:
            assert row["payment_status"] == "2"
        else:
            assert row["payment_status"] == "1"
    assert all(row["currency"] == "USD" and row["has_auto_pay"] is False for row in invoices)

    batches = list(source.received_payments_changed(None, currency.get))
    payments = rows_of(batches)
    lines = [line for batch in batches for line in batch.children]
    assert len(payments) == len(qbo.sandbox.payments) == len(lines)
    assert all(set(row) == columns(schema.billcom_received_payments) for row in payments)
    assert all(set(line) == columns(schema.billcom_received_payment_lines) for line in lines)
    assert all(line["invoice_pay_id"] == f"{line['received_payment_id']}:0" for line in lines)
    assert {row["payment_type"] for row in payments} <= {"0", "1", "2", "3"}
    assert source.api_stats()["total_calls"] >= 4


def test_incremental_sync_reads_only_what_changed_since_the_mark(qbo):
    source = qbo.source()
    mark = max(row["updated_at"] for row in rows_of(source.invoices_changed(None, ALL)))
    payment_mark = max(row["updated_at"] for row in rows_of(source.received_payments_changed(None, ALL)))
    qbo.clock.advance(600)
    invoice = open_invoice(qbo)
    qbo.sandbox.pay_invoice(invoice["Id"], Decimal("10.00"))
    customer = qbo.sandbox.entities("Customer")[3]
    qbo.sandbox.update_raw("Customer", customer["Id"], Notes="Moved to net 45")

    changed = rows_of(source.invoices_changed(mark, ALL))
    assert invoice["Id"] in {row["invoice_id"] for row in changed}
    assert all(row["updated_at"] >= mark - source.overlap for row in changed)
    assert len(changed) < 10
    paid = next(row for row in changed if row["invoice_id"] == invoice["Id"])
    assert paid["amount_due_cents"] == int(invoice["Balance"] * 100) - 1000 and paid["payment_status"] == "2"
    batches = list(source.received_payments_changed(payment_mark, ALL))
    new = [row for row in rows_of(batches) if row["updated_at"] > payment_mark]
    assert len(new) == 1 and new[0]["amount_cents"] == 1000 and new[0]["is_online"] is True
    assert [line["invoice_id"] for batch in batches for line in batch.children
            if line["received_payment_id"] == new[0]["received_payment_id"]] == [invoice["Id"]]
    customer_mark = parse_timestamp("2026-11-26T14:00:00+00:00")
    assert customer["Id"] in {row["customer_id"] for row in rows_of(source.customers_changed(customer_mark))}


def test_paging_resumes_by_timestamp_so_a_change_mid_read_skips_nothing(qbo_factory):
    running = qbo_factory(invoices=0, customers=3)
    created = []
    for _ in range(130):
        running.clock.advance(1)
        created.append(running.sandbox.add_invoice()["Id"])
    client = running.client(page_size=50)
    seen: list[str] = []
    for number, page in enumerate(client.iter_changed("Invoice")):
        seen.extend(row["Id"] for row in page)
        if number == 0:
            # Someone edits an invoice we already read: it moves to the end of the order. With offset
            # paging the invoice behind it would slide into page one and never be read.
            running.clock.advance(1)
            running.sandbox.update_raw("Invoice", page[0]["Id"], PrivateNote="edited")
    assert set(seen) == set(created)
    assert len(seen) == 131  # the edited one is read again, at its new place


def test_records_sharing_one_timestamp_are_paged_without_loss_or_repeats(qbo_factory):
    running = qbo_factory(invoices=0, customers=3)
    created = {running.sandbox.add_invoice()["Id"] for _ in range(120)}  # frozen clock: one timestamp
    client = running.client(page_size=50)
    seen = [row["Id"] for page in client.iter_changed("Invoice") for row in page]
    assert sorted(seen) == sorted(created)
    assert client.stats()["calls"]["query"] == 3


def test_freshness_read_is_batched_and_names_unknown_ids(qbo):
    source = qbo.source(read_chunk=200)
    ids = [i["Id"] for i in qbo.sandbox.entities("Invoice")]
    before = qbo.sandbox.stats["queries"].get("Invoice", 0)
    rows = source.read_invoices(ids, ALL)
    assert [row["invoice_id"] for row in rows] == ids
    assert qbo.sandbox.stats["queries"]["Invoice"] - before == 2  # 300 ids, 200 per query
    with pytest.raises(ARRecordNotFoundError) as missing:
        source.read_invoices([ids[0], "999999"], ALL)
    assert "999999" in str(missing.value) and missing.value.missing_ids == ["999999"]


def test_find_invoices_and_latest_change(qbo):
    source = qbo.source()
    invoice = open_invoice(qbo)
    found = source.find_invoices(invoice["DocNumber"], invoice["CustomerRef"]["value"], ALL)
    assert [row["invoice_id"] for row in found] == [invoice["Id"]]
    assert source.find_invoices(invoice["DocNumber"], "999999", ALL) == []
    assert source.latest_invoice_change(SANDBOX_START) is None
    qbo.clock.advance(30)
    qbo.sandbox.update_raw("Invoice", invoice["Id"], PrivateNote="edited")
    assert source.latest_invoice_change(SANDBOX_START) == SANDBOX_START + timedelta(seconds=30)


def test_query_values_are_escaped_never_spliced(qbo):
    source = qbo.source()
    invoice = open_invoice(qbo)
    injected = f"{invoice['DocNumber']}' OR DocNumber = '1002"
    assert source.find_invoices(injected, invoice["CustomerRef"]["value"], ALL) == []  # no 400 for OR: quoted
    qbo.sandbox.add_customer(DisplayName="O'Brien's Bakery")
    client = source.client
    assert [c["DisplayName"] for c in client.query_rows("Customer", [where("DisplayName", "=", "O'Brien's Bakery")])] \
        == ["O'Brien's Bakery"]
    with pytest.raises(ValueError):
        where("DocNumber", "=", "a\\' OR 1=1")
    with pytest.raises(ValueError):
        where("DocNumber; DROP", "=", "x")
    with pytest.raises(TypeError):
        select("Invoice", ["DocNumber = '1'"])  # type: ignore[list-item]


def test_malformed_answers_and_records_name_the_record_and_the_field(qbo):
    source = qbo.source()
    qbo.sandbox.inject("malformed", path="query")
    with pytest.raises(QBOProtocolError, match="query"):
        source.client.query_rows("Invoice")
    bad, nameless = qbo.sandbox.entities("Invoice")[:2]
    qbo.sandbox.update_raw("Invoice", bad["Id"], TotalAmt="12,50", DueDate="31/12/2026")
    qbo.sandbox.update_raw("Invoice", nameless["Id"], Id="")
    batches = list(source.invoices_changed(None, ALL))
    row = next(r for r in rows_of(batches) if r["invoice_id"] == bad["Id"])
    assert row["validation_status"] == "invalid"
    assert "TotalAmt: expected a number, got '12,50'" in row["validation_errors"]
    assert "DueDate: not a yyyy-MM-dd date: '31/12/2026'" in row["validation_errors"]
    rejected = [reason for batch in batches for reason in batch.rejected]
    assert len(rejected) == 1 and rejected[0].startswith("Invoice without an Id")
    assert len(rows_of(batches)) == 299
    unknown = rows_of(source.invoices_changed(None, lambda _c: None))
    assert all("CustomerRef: unknown customer" in (r["validation_errors"] or "") for r in unknown)
    qbo.sandbox.update_raw("Customer", qbo.sandbox.entities("Customer")[0]["Id"], CurrencyRef={"value": "XYZ"})
    customers = rows_of(source.customers_changed(None))
    assert any("CurrencyRef: unknown currency 'XYZ'" in (r["validation_errors"] or "") for r in customers)


def test_deleted_invoices_and_payments_arrive_as_inactive_tombstones(qbo):
    source = qbo.source()
    mark = max(row["updated_at"] for row in rows_of(source.invoices_changed(None, ALL)))
    qbo.clock.advance(120)
    doomed = open_invoice(qbo)
    payment = qbo.sandbox.payments[0]
    qbo.sandbox.delete_invoice(doomed["Id"])
    qbo.sandbox.delete_payment(payment["Id"])
    tombstone = next(r for r in rows_of(source.invoices_changed(mark, ALL)) if r["invoice_id"] == doomed["Id"])
    assert set(tombstone) == columns(schema.billcom_invoices)
    assert tombstone["is_active"] is False and tombstone["updated_at"] == SANDBOX_START + timedelta(seconds=120)
    batches = list(source.received_payments_changed(mark, ALL))
    gone = next(r for r in rows_of(batches) if r["received_payment_id"] == payment["Id"])
    assert gone["status"] == "deleted" and gone["received_payment_id"] not in {
        line["received_payment_id"] for b in batches for line in b.children}


# ---- retries, limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http_429", "http_500", "http_503"])
def test_reads_retry_throttling_and_server_errors(qbo, kind):
    client = qbo.client()
    qbo.sandbox.inject(kind, path="query", times=2)
    assert client.query_rows("Invoice", max_results=5)
    assert client.stats()["retries"] == {"query": 2}


def test_retry_after_is_honoured(qbo_factory):
    running = qbo_factory(retry_after_s=7)
    slept: list[float] = []
    client = running.client(sleep=slept.append)
    running.sandbox.inject("http_429", path="query")
    client.query_rows("Invoice", max_results=1)
    assert slept == [7.0]


def test_retries_are_bounded(qbo):
    client = qbo.client(retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02))
    qbo.sandbox.inject("http_503", path="query", times=10)
    with pytest.raises(ARTransportError, match="gave up after 3 attempts"):
        client.query_rows("Invoice")
    assert qbo.sandbox.stats["calls"]["query"] == 3


def test_never_more_than_ten_requests_in_flight(qbo_factory):
    running = qbo_factory(latency_ms=80)
    client = running.client()
    errors: list[Exception] = []

    def read() -> None:
        try:
            client.query_rows("Invoice", max_results=1)
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert running.sandbox.stats["max_in_flight_seen"] == 10 and running.sandbox.stats["throttled"] == 0


def test_requests_per_minute_are_spaced_by_the_rolling_limiter(qbo):
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    client = qbo.client(requests_per_minute=5, monotonic=lambda: now[0], sleep=sleep)
    for _ in range(7):
        client.query_rows("Invoice", max_results=1)
    assert slept and sum(slept) >= 60.0 - 1e-6


# ---- writes ----------------------------------------------------------------------------------------------------


def test_payment_is_posted_exactly_once_with_exact_decimal_amounts(qbo):
    source = qbo.source()
    invoice = open_invoice(qbo)
    posted = source.record_payment(payment_for(invoice, 1234))
    (stored,) = ours(qbo)
    assert posted["id"] == stored["Id"]
    assert stored["TotalAmt"] == Decimal("12.34") and stored["TxnDate"] == "2026-11-25"
    assert stored["Line"] == [{"Amount": Decimal("12.34"), "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]
    assert "evt_1" in stored["PrivateNote"] and "ach" in stored["PrivateNote"]
    assert qbo.sandbox.get("Invoice", invoice["Id"])["Balance"] == invoice["Balance"] - Decimal("12.34")
    batches = list(source.received_payments_changed(None, ALL, customer_id=invoice["CustomerRef"]["value"]))
    mine = next(r for r in rows_of(batches) if r["ref_number"] == "AC-0123456789ABCDEF0123")
    assert mine["received_payment_id"] == posted["id"] and mine["amount_cents"] == 1234
    assert [line["invoice_pay_id"] for b in batches for line in b.children
            if line["received_payment_id"] == posted["id"]] == [f"{posted['id']}:0"]


def test_reference_check_prevents_a_second_payment(qbo):
    source = qbo.source()
    invoice = open_invoice(qbo)
    first = source.record_payment(payment_for(invoice, 500))
    second = source.record_payment(payment_for(invoice, 500))
    assert second["id"] == first["id"] and second["already_present"] is True
    assert len(ours(qbo)) == 1
    assert source.api_stats()["calls"]["create Payment"] == 1


def test_a_write_whose_connection_dropped_is_retried_with_the_same_requestid(qbo):
    source = qbo.source()
    invoice = open_invoice(qbo)
    qbo.sandbox.inject("drop", path="payment", after_processing=True)
    posted = source.record_payment(payment_for(invoice, 700))
    assert [p["Id"] for p in ours(qbo)] == [posted["id"]]
    assert qbo.sandbox.get("Invoice", invoice["Id"])["Balance"] == invoice["Balance"] - 7
    assert qbo.sandbox.stats["replays"] == 1
    assert source.api_stats()["retries"] == {"create Payment": 1}


def test_a_write_that_may_have_landed_is_outcome_unknown_then_found_by_its_reference(qbo):
    source = qbo.source(qbo.client(retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02)))
    invoice = open_invoice(qbo)
    qbo.sandbox.inject("http_500", path="payment", after_processing=True, times=3)
    with pytest.raises(AROutcomeUnknownError):
        source.record_payment(payment_for(invoice, 900))
    assert len(ours(qbo)) == 1  # it landed; every retry was de-duplicated by its requestid
    again = source.record_payment(payment_for(invoice, 900))
    assert again["id"] == ours(qbo)[0]["Id"] and len(ours(qbo)) == 1


def test_refusals_are_source_errors_with_qbo_codes(qbo):
    source = qbo.source()
    invoice = open_invoice(qbo)
    with pytest.raises(ARSourceError) as too_much:
        source.record_payment(payment_for(invoice, int(invoice["Balance"] * 100) + 1))
    assert too_much.value.code == "6000" and "exceeds its open balance" in too_much.value.message
    other = next(c["Id"] for c in qbo.sandbox.entities("Customer")
                 if c["Active"] and c["Id"] != invoice["CustomerRef"]["value"])
    cross = PaymentToRecord(customer_id=other, invoice_id=invoice["Id"], amount_cents=100, currency="USD",
                            payment_date=date(2026, 11, 25), method="check", reference="AC-CROSS")
    with pytest.raises(QBOError) as linked:
        source.record_payment(cross)
    assert linked.value.code == "620"
    assert ours(qbo) == [] and ours(qbo, "AC-CROSS") == []
    with pytest.raises(ValueError, match="method"):
        source.record_payment(PaymentToRecord(**{**payment_for(invoice, 1).__dict__, "method": "bitcoin"}))


def test_notes_are_attachables_that_leave_the_customers_own_notes_alone(qbo):
    source = qbo.source()
    customer = next(c for c in qbo.sandbox.entities("Customer") if c.get("Notes"))
    first = source.write_customer_note(customer["Id"], "AgentCollect: reminder 1 sent")
    second = source.write_customer_note(customer["Id"], "AgentCollect: payment of USD 12.34 recorded")
    after = qbo.sandbox.get("Customer", customer["Id"])
    assert after["Notes"] == customer["Notes"] and after["SyncToken"] == customer["SyncToken"]
    assert source.list_customer_notes(customer["Id"]) == [
        {"id": first, "message": "AgentCollect: reminder 1 sent"},
        {"id": second, "message": "AgentCollect: payment of USD 12.34 recorded"},
    ]
    other = qbo.sandbox.entities("Customer")[0]["Id"]
    assert source.list_customer_notes(other if other != customer["Id"] else "999999") == []


# ---- OAuth -----------------------------------------------------------------------------------------------------


def test_rotated_refresh_token_is_stored_encrypted_before_the_access_token_is_used(qbo, warehouse_resource):
    warehouse = warehouse_resource.get_warehouse()
    api_calls_at_save: list[int] = []

    class Spy(WarehouseTokenStore):
        def put(self, key, refresh_token, **kwargs):
            api_calls_at_save.append(qbo.sandbox.stats["calls"].get("query", 0))
            return super().put(key, refresh_token, **kwargs)

    store = Spy(warehouse, TEST_ENCRYPTION_KEY)
    client = qbo.client(token_store=store)
    client.query_rows("CompanyInfo")
    assert api_calls_at_save == [0, 0]  # seeded from the bootstrap, then the rotation: both before any call
    stored = store.get("qbo:" + qbo.sandbox.credentials["realm_id"])
    assert stored.version == 2 and stored.refresh_token in qbo.sandbox.current_refresh_tokens()
    assert stored.refresh_expires_at is not None
    with warehouse.engine.connect() as conn:
        (encrypted,) = conn.execute(sa.select(oauth_tokens.c.refresh_token_encrypted)).one()
    assert stored.refresh_token not in encrypted and qbo.sandbox.credentials["refresh_token"] not in encrypted
    database = Path(warehouse.engine.url.database)
    raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert stored.refresh_token.encode() not in raw


def test_a_second_process_with_a_stale_token_recovers_from_the_store(qbo):
    shared = InMemoryTokenStore()
    first = qbo.client(token_store=shared)
    first.query_rows("CompanyInfo")
    key = "qbo:" + qbo.sandbox.credentials["realm_id"]
    stale = StoredToken(refresh_token=qbo.sandbox.credentials["refresh_token"], version=1,
                        rotated_at=datetime.now(UTC))
    second = qbo.client(token_store=StaleOnceStore(shared, stale))
    assert second.query_rows("CompanyInfo")  # invalid_grant, re-read the store, refresh with the newest
    assert shared.get(key).version == 3 and shared.get(key).refresh_token in qbo.sandbox.current_refresh_tokens()
    assert first.query_rows("CompanyInfo")  # its access token is still good


def test_threads_of_one_process_refresh_once(qbo):
    client = qbo.client()
    threads = [threading.Thread(target=lambda: client.query_rows("CompanyInfo")) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert qbo.sandbox.stats["refreshes"] == 1 and client.stats()["refreshes"] == 1


def test_a_refused_access_token_is_refreshed_once_and_the_call_replayed(qbo):
    client = qbo.client()
    client.query_rows("CompanyInfo")
    qbo.sandbox.expire_access_tokens()
    assert client.query_rows("CompanyInfo")
    assert client.stats()["refreshes"] == 2 and qbo.sandbox.stats["errors"]["3200"] == 1


def test_the_access_token_is_renewed_shortly_before_it_expires(qbo):
    client = qbo.client()
    client.query_rows("CompanyInfo")
    qbo.clock.advance(3400)  # inside the 5-minute margin before the hour is up
    client.query_rows("CompanyInfo")
    assert client.stats()["refreshes"] == 2 and "3200" not in qbo.sandbox.stats["errors"]


def test_a_revoked_connection_is_a_clear_reconnect_error(qbo):
    client = qbo.client()
    client.query_rows("CompanyInfo")
    qbo.sandbox.revoke_all()
    with pytest.raises(QBOReconnectRequiredError) as refused:
        client.query_rows("CompanyInfo")
    assert isinstance(refused.value, ARSourceError) and refused.value.code == "invalid_grant"
    assert "Reconnect the company" in str(refused.value) and "QBO_REFRESH_TOKEN" in str(refused.value)
    with pytest.raises(QBOReconnectRequiredError, match="QBO_REFRESH_TOKEN is not set"):
        qbo.client(bootstrap_refresh_token=None).query_rows("CompanyInfo")


def test_a_new_bootstrap_token_is_adopted_after_a_reconnect_but_never_overrides_a_live_one(qbo):
    store = InMemoryTokenStore()
    qbo.client(token_store=store).query_rows("CompanyInfo")
    key = "qbo:" + qbo.sandbox.credentials["realm_id"]
    live = store.get(key)
    # A stale QBO_REFRESH_TOKEN in another deployment does not replace the stored, live token.
    qbo.client(token_store=store, bootstrap_refresh_token="RT1-stale-value").query_rows("CompanyInfo")
    assert store.get(key).version == live.version + 1
    qbo.sandbox.revoke_all()
    reconnected = qbo.sandbox.connect()
    client = qbo.client(token_store=store, bootstrap_refresh_token=reconnected)
    assert client.query_rows("CompanyInfo")
    assert store.get(key).refresh_token in qbo.sandbox.current_refresh_tokens()


def test_a_failed_token_save_never_uses_the_access_token_and_is_saved_first_next_time(qbo):
    store = FailingStore()
    client = qbo.client(token_store=store)
    store.failing = True
    with pytest.raises(QBOTokenPersistError) as failed:
        client.query_rows("CompanyInfo")
    assert "query" not in qbo.sandbox.stats["calls"]  # the new access token was not used
    assert "RT1-" not in str(failed.value)
    store.failing = False
    assert client.query_rows("CompanyInfo")
    key = "qbo:" + qbo.sandbox.credentials["realm_id"]
    assert store.get(key).refresh_token in qbo.sandbox.current_refresh_tokens()
    assert qbo.sandbox.stats["refreshes"] == 1  # the pending rotation was saved, not a second refresh


def test_a_crash_between_the_token_answer_and_the_save_surfaces_as_reconnect_not_silent_loss(qbo_factory):
    for grace, recovers in ((0.0, False), (60.0, True)):
        running = qbo_factory(refresh_grace_s=grace)
        store = FailingStore()
        crashed = running.client(token_store=store)
        store.failing = True
        with pytest.raises(QBOTokenPersistError):
            crashed.query_rows("CompanyInfo")
        store.failing = False
        restarted = running.client(token_store=store)  # a new process: the rotated token died with the old one
        if recovers:
            assert restarted.query_rows("CompanyInfo")  # QBO still honours the old token inside its grace period
        else:
            with pytest.raises(QBOReconnectRequiredError, match="crashed right after a refresh"):
                restarted.query_rows("CompanyInfo")


def test_the_token_store_refuses_to_run_without_a_key_and_never_shows_it(warehouse_resource):
    warehouse = warehouse_resource.get_warehouse()
    with pytest.raises(TokenStoreError, match="AGENTCOLLECT_TOKEN_ENCRYPTION_KEY is not set"):
        WarehouseTokenStore(warehouse, None)
    with pytest.raises(TokenStoreError, match="not a Fernet key") as bad:
        WarehouseTokenStore(warehouse, "not-a-key-but-secret")
    assert "not-a-key-but-secret" not in str(bad.value)
    WarehouseTokenStore(warehouse, TEST_ENCRYPTION_KEY).put("qbo:1", "secret-token", expected_version=None)
    other_key = "b" * 43 + "="
    with pytest.raises(TokenStoreError, match="cannot be decrypted"):
        WarehouseTokenStore(warehouse, other_key).get("qbo:1")
    rotated = WarehouseTokenStore(warehouse, f"{other_key},{TEST_ENCRYPTION_KEY}")
    assert rotated.get("qbo:1").refresh_token == "secret-token"


def test_secrets_never_reach_logs_errors_or_reprs(qbo, caplog):
    caplog.set_level(logging.DEBUG)
    store = InMemoryTokenStore()
    client = qbo.client(token_store=store)
    client.query_rows("CompanyInfo")
    qbo.sandbox.expire_access_tokens()
    client.query_rows("CompanyInfo")
    qbo.sandbox.inject("http_500", path="query")
    client.query_rows("CompanyInfo")
    qbo.sandbox.revoke_all()
    with pytest.raises(QBOReconnectRequiredError) as refused:
        client.query_rows("CompanyInfo")
    secrets = [qbo.sandbox.credentials["client_secret"], qbo.sandbox.credentials["refresh_token"],
               store.get("qbo:" + qbo.sandbox.credentials["realm_id"]).refresh_token, "eyJ-sandbox-"]
    shown = "\n".join([caplog.text, repr(client), repr(store), str(refused.value), repr(refused.value),
                       repr(store.get("qbo:" + qbo.sandbox.credentials["realm_id"]))])
    for secret in secrets:
        assert secret not in shown


def test_the_resource_builds_one_client_and_a_source(qbo, warehouse_resource):
    resource = qbo.resource(warehouse_resource)
    assert resource.get_client() is resource.get_client()
    source = resource.get_source(ARSyncSettings(org_currency="USD", overlap_seconds=60))
    assert isinstance(source, QBOARSource) and source.overlap == timedelta(seconds=60)
    assert len(rows_of(source.customers_changed(None))) == 60
    assert warehouse_resource.get_warehouse().count(oauth_tokens) == 1
    with pytest.raises(TokenStoreError, match="AGENTCOLLECT_TOKEN_ENCRYPTION_KEY"):
        qbo.resource(warehouse_resource, token_encryption_key=None).get_client()


def test_client_refuses_what_is_outside_the_ar_allowlist(qbo):
    client = qbo.client()
    with pytest.raises(PermissionError):
        client.query_rows("Bill")
    with pytest.raises(PermissionError):
        client.create("Invoice", {}, request_id="x")
    assert qbo.sandbox.stats["total_calls"] == 0
    assert isinstance(client, QBOClient) and "secret" not in repr(client)
