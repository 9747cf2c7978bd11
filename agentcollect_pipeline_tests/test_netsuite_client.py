"""The NetSuite client and AR source against the local NetSuite sandbox over real HTTP (no mocks of our code)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentcollect_pipeline.ar_source import netsuite_records as records
from agentcollect_pipeline.ar_source.base import (
    AROutcomeUnknownError,
    ARRecordNotFoundError,
    ARSourceError,
    ARTransportError,
    PaymentToRecord,
)
from agentcollect_pipeline.ar_source.netsuite import NetSuiteARSource, merge_note, parse_note_lines
from agentcollect_pipeline.clients.netsuite import (
    TOKEN_PATH,
    NetSuiteAuthError,
    NetSuiteProtocolError,
    account_slug,
    default_base_url,
    suiteql_literal,
)
from agentcollect_pipeline.clients.retry import RetryPolicy
from agentcollect_pipeline.resources import ARSyncSettings
from agentcollect_pipeline.sandboxes.netsuite import NetSuiteSandbox, SandboxClock, SandboxConfig
from agentcollect_pipeline.sandboxes.netsuite import app as sandbox_app
from agentcollect_pipeline.sandboxes.netsuite.app import private_key_pem
from agentcollect_pipeline.sandboxes.server import serve_in_thread
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline_tests import netsuite_fixtures
from agentcollect_pipeline_tests.netsuite_fixtures import SANDBOX_START, RunningNetSuite

netsuite = netsuite_fixtures.netsuite
netsuite_factory = netsuite_fixtures.netsuite_factory

REFERENCE = "AC-0123456789ABCDEF0123"


def _all(batches) -> tuple[list[dict], list[dict], list[str]]:
    rows, children, rejected = [], [], []
    for batch in batches:
        rows += batch.rows
        children += batch.children
        rejected += batch.rejected
    return rows, children, rejected


def _customers(source: NetSuiteARSource) -> dict[str, str]:
    rows, _, _ = _all(source.customers_changed(None))
    return {row["customer_id"]: row["currency"] for row in rows}


def _open_invoice(running: RunningNetSuite, minimum: Decimal = Decimal("100")) -> dict[str, Any]:
    return next(i for i in running.sandbox.invoices if i["status"] == "A" and i["voided"] == "F"
                and i["foreignamountunpaid"] == i["foreigntotal"] and i["foreigntotal"] > minimum)


def _payment(invoice: dict[str, Any], cents: int, reference: str = REFERENCE) -> PaymentToRecord:
    return PaymentToRecord(customer_id=str(invoice["entity"]), invoice_id=str(invoice["id"]), amount_cents=cents,
                           currency="USD", payment_date=date(2026, 11, 26), method="ach", reference=reference,
                           description="AgentCollect test payment")


def _suiteql_calls(running: RunningNetSuite) -> int:
    return running.sandbox.stats["calls"].get("suiteql", 0)


# ---- helpers and auth ------------------------------------------------------------------------------------------


def test_account_host_and_literal_helpers():
    assert account_slug("1234567_SB1") == "1234567-sb1"
    assert default_base_url("TSTDRV123") == "https://tstdrv123.suitetalk.api.netsuite.com"
    assert suiteql_literal("O'Hara") == "'O''Hara'"
    with pytest.raises(ValueError):
        account_slug("evil.com/x")


def test_one_token_serves_every_call(netsuite):
    client = netsuite.client()
    source = netsuite.source(client)
    _all(source.invoices_changed(None, _customers(source).get))
    stats = client.stats()
    assert stats["tokens_minted"] == 1 and netsuite.sandbox.stats["tokens_issued"] == 1
    assert stats["total_calls"] >= 3 and stats["retries"] == 0
    assert client.algorithm == "PS256"


def test_an_ec_key_signs_es256(netsuite):
    key = ec.generate_private_key(ec.SECP256R1())
    kid = netsuite.sandbox.register_certificate(key.public_key())
    client = netsuite.client(certificate_id=kid, private_key=private_key_pem(key))
    assert client.algorithm == "ES256"
    assert client.suiteql("SELECT id FROM customer", limit=1).items


@pytest.mark.parametrize("problem", ["wrong_key", "expired", "wrong_aud"])
def test_refused_assertions_raise_auth_errors_without_secrets(netsuite, caplog, problem):
    caplog.set_level(logging.DEBUG)
    if problem == "wrong_key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        client = netsuite.client(private_key=private_key_pem(other))
    elif problem == "expired":
        client = netsuite.client(clock=lambda: time.time() - 7200)  # signs an assertion that expired an hour ago
    else:
        client = netsuite.client()
        client.token_url = f"{netsuite.url}{TOKEN_PATH}/"  # the assertion's aud no longer names the endpoint
    with pytest.raises(NetSuiteAuthError) as error:
        client.suiteql("SELECT id FROM customer")
    assert isinstance(error.value, ARSourceError)
    assert error.value.code == "invalid_grant" and error.value.http_status == 400
    secret = netsuite.sandbox.credentials["private_key"]
    body_line = secret.splitlines()[1]
    for text in (str(error.value), repr(client), caplog.text):
        assert "PRIVATE KEY" not in text and body_line not in text


def test_401_mints_a_new_token_once(netsuite):
    client = netsuite.client()
    client.suiteql("SELECT id FROM customer", limit=1)
    netsuite.sandbox.expire_tokens()
    client.suiteql("SELECT id FROM customer", limit=1)
    assert client.stats()["tokens_minted"] == 2 and client.stats()["reauthorisations"] == 1
    netsuite.sandbox.inject("http_401", path="suiteql", times=2)
    with pytest.raises(NetSuiteAuthError) as error:
        client.suiteql("SELECT id FROM customer", limit=1)
    assert error.value.code == "INVALID_LOGIN"


def test_token_renewed_before_it_expires():
    now = [time.time()]
    sandbox = NetSuiteSandbox(clock=SandboxClock(start=SANDBOX_START), jwt_clock=lambda: now[0])
    sandbox.seed(invoices=10, customers=5)
    with serve_in_thread(sandbox.app) as server:
        running = RunningNetSuite(sandbox=sandbox, clock=sandbox.clock, url=server.url)
        client = running.client(clock=lambda: now[0])
        client.suiteql("SELECT id FROM customer", limit=1)
        now[0] += 3400  # inside NetSuite's hour, but past our five-minute renewal margin
        client.suiteql("SELECT id FROM customer", limit=1)
    assert client.stats()["tokens_minted"] == 2 and client.stats()["reauthorisations"] == 0


# ---- reads --------------------------------------------------------------------------------------------------------


def test_full_sync_rows_have_exactly_the_warehouse_columns(netsuite):
    source = netsuite.source()
    currencies = _customers(source)
    customers, _, rejected = _all(source.customers_changed(None))
    invoices, _, _ = _all(source.invoices_changed(None, currencies.get))
    payments, lines, _ = _all(source.received_payments_changed(None, currencies.get))
    contacts, _, _ = _all(source.contacts_changed(None, {c: "US" for c in currencies}))
    for rows, table in ((customers, schema.billcom_customers), (invoices, schema.billcom_invoices),
                        (payments, schema.billcom_received_payments), (lines, schema.billcom_received_payment_lines),
                        (contacts, schema.billcom_customer_contacts)):
        assert rows and all(set(row) == set(table.columns.keys()) for row in rows), table.name
    assert not rejected
    assert len(customers) == 60 and len(invoices) == 300 and len(payments) == len(netsuite.sandbox.payments)
    assert len(contacts) == len(netsuite.sandbox.contacts)
    assert {c["account_type"] for c in customers} == {"person", "business"}
    assert all(c["bill_state"] and c["bill_country"] in ("US", "CA") for c in customers)
    assert Counter(c["validation_status"] for c in customers)["warning"] > 0  # seeded bad emails/phones


def test_invoice_rows_follow_the_netsuite_conventions(netsuite):
    source = netsuite.source()
    invoices, _, _ = _all(source.invoices_changed(None, _customers(source).get))
    by_id = {row["invoice_id"]: row for row in invoices}
    for stored in netsuite.sandbox.invoices:
        row = by_id[str(stored["id"])]
        assert row["amount_cents"] == int(stored["foreigntotal"] * 100)
        assert row["amount_due_cents"] == int(stored["foreignamountunpaid"] * 100)
        assert row["is_active"] == (stored["voided"] == "F")
        expected = "0" if stored["foreignamountunpaid"] == 0 else (
            "2" if stored["foreignamountunpaid"] < stored["foreigntotal"] else "1")
        assert row["payment_status"] == expected
        assert row["due_date"] == stored["duedate"] and row["invoice_number"] == stored["tranid"]
        assert row["actg_class_id"] == (None if stored["class"] is None else str(stored["class"]))
        assert row["updated_at"] == stored["lastmodifieddate"]  # local time read back to the same UTC instant
        assert row["created_at"] == stored["createddate"] and row["currency"] == "USD"


def test_incremental_sync_reads_only_what_changed(netsuite):
    source = netsuite.source()
    currencies = _customers(source)
    invoices, _, _ = _all(source.invoices_changed(None, currencies.get))
    mark = max(row["updated_at"] for row in invoices)
    netsuite.clock.advance(600)
    changed = {str(i) for i in netsuite.sandbox.mutate(count=5, seed=3)}
    paid = _open_invoice(netsuite)
    netsuite.sandbox.pay_invoice(paid["id"], Decimal("20.00"))
    later, _, _ = _all(source.invoices_changed(mark, currencies.get))
    # The overlap re-reads the last two minutes before the mark (the newest invoice of the full read, at least).
    overlap = {row["invoice_id"] for row in invoices if row["updated_at"] > mark - source.overlap}
    assert {row["invoice_id"] for row in later} == changed | {str(paid["id"])} | overlap
    assert len(overlap) < 5
    payments, lines, _ = _all(source.received_payments_changed(mark, currencies.get))
    assert len(payments) == 1 and payments[0]["customer_id"] == str(paid["entity"])
    assert [(line["invoice_id"], line["amount_cents"]) for line in lines] == [(str(paid["id"]), 2000)]
    assert _all(source.invoices_changed(max(r["updated_at"] for r in later) + timedelta(minutes=5),
                                        currencies.get))[0] == []


def test_paging_past_1000_rows_and_past_the_row_cap(netsuite_factory):
    running = netsuite_factory(invoices=2500, customers=150, row_cap=1000)
    client = running.client(row_cap=1000)
    source = running.source(client)
    currencies = _customers(source)
    before = _suiteql_calls(running)
    invoices, _, _ = _all(source.invoices_changed(None, currencies.get))
    assert len({row["invoice_id"] for row in invoices}) == 2500
    restarts = [q for q in running.sandbox.queries if "lastmodifieddate >= TO_TIMESTAMP(" in q]
    assert len(restarts) >= 2  # 2500 rows, 1000 reachable per query
    assert _suiteql_calls(running) - before <= 6


def test_later_pages_are_fetched_concurrently_within_the_limit(netsuite_factory):
    running = netsuite_factory(invoices=2500, customers=150, concurrency_limit=3, latency_ms=40)
    client = running.client(max_in_flight=3, page_size=100)
    source = running.source(client)
    invoices, _, _ = _all(source.invoices_changed(None, _customers(source).get))
    assert len(invoices) == 2500
    stats = running.sandbox.stats
    assert stats["max_in_flight_seen"] == 3 and stats["rejected_concurrent"] == 0


def test_a_client_over_the_account_limit_is_throttled_and_recovers(netsuite_factory):
    running = netsuite_factory(invoices=1500, customers=100, concurrency_limit=2, latency_ms=30)
    client = running.client(max_in_flight=6, page_size=100,
                            retry=RetryPolicy(max_attempts=12, base_delay_s=0.05, max_delay_s=0.5))
    source = running.source(client)
    invoices, _, _ = _all(source.invoices_changed(None, _customers(source).get))
    assert len(invoices) == 1500
    assert running.sandbox.stats["rejected_concurrent"] > 0 and client.stats()["retries"] > 0


def test_freshness_read_is_one_query_per_chunk(netsuite):
    source = netsuite.source(read_chunk_size=100)
    currencies = _customers(source)
    ids = [str(i["id"]) for i in netsuite.sandbox.invoices][:250]
    before = _suiteql_calls(netsuite)
    rows = source.read_invoices(list(reversed(ids)), currencies.get)
    assert [row["invoice_id"] for row in rows] == list(reversed(ids))
    assert _suiteql_calls(netsuite) - before == 3
    with pytest.raises(ARRecordNotFoundError) as error:
        source.read_invoices([ids[0], "999999"], currencies.get)
    assert "999999" in str(error.value)


def test_find_invoices_by_number_escapes_the_input(netsuite):
    source = netsuite.source()
    currencies = _customers(source)
    invoice = netsuite.sandbox.invoices[0]
    (found,) = source.find_invoices(invoice["tranid"], str(invoice["entity"]), currencies.get)
    assert found["invoice_id"] == str(invoice["id"])
    assert source.find_invoices("x' OR '1'='1", str(invoice["entity"]), currencies.get) == []
    assert "t.tranid = 'x'' OR ''1''=''1'" in netsuite.sandbox.queries[-1]


def test_latest_invoice_change_costs_one_call(netsuite):
    source = netsuite.source()
    newest = max(i["lastmodifieddate"] for i in netsuite.sandbox.invoices)
    before = _suiteql_calls(netsuite)
    assert source.latest_invoice_change(newest - timedelta(days=1)) == newest
    assert source.latest_invoice_change(newest) is None
    assert _suiteql_calls(netsuite) - before == 2


@pytest.mark.parametrize("fault", ["http_429", "http_500", "http_503", "drop"])
def test_reads_retry_transient_failures(netsuite, fault):
    client = netsuite.client()
    netsuite.sandbox.inject(fault, path="suiteql", times=2)
    page = client.suiteql("SELECT id FROM customer ORDER BY id", limit=10)
    assert len(page.items) == 10
    assert client.stats()["retries"] == 2


def test_reads_give_up_after_the_retry_budget(netsuite):
    client = netsuite.client()
    netsuite.sandbox.inject("http_500", path="suiteql", times=10)
    with pytest.raises(ARTransportError) as error:
        client.suiteql("SELECT id FROM customer")
    assert "UNEXPECTED_ERROR" in str(error.value)


def test_errors_carry_netsuite_codes(netsuite):
    client = netsuite.client()
    with pytest.raises(ARSourceError) as error:
        client.suiteql("SELECT t.foreignamountremaining FROM transaction t")
    assert error.value.code == "INVALID_PARAMETER" and "foreignamountremaining" in error.value.message
    with pytest.raises(ARRecordNotFoundError):
        client.get_record("customer", "999999")


# ---- malformed data ---------------------------------------------------------------------------------------------


def test_malformed_values_mark_the_row_invalid_naming_the_field(netsuite):
    source = netsuite.source()
    currencies = _customers(source)
    invoices = netsuite.sandbox.invoices
    netsuite.sandbox.update_invoice(invoices[0]["id"], foreigntotal="12.345")
    netsuite.sandbox.update_invoice(invoices[1]["id"], duedate=None)
    netsuite.sandbox.update_invoice(invoices[2]["id"], entity=999999)
    netsuite.sandbox.update_invoice(invoices[3]["id"], currency=77)
    netsuite.sandbox.update_invoice(invoices[4]["id"], foreignamountunpaid=invoices[4]["foreigntotal"] + 1)
    rows = {r["invoice_id"]: r for r in source.read_invoices([str(i["id"]) for i in invoices[:6]], currencies.get)}
    expectations = ["foreigntotal: ", "duedate: missing", "entity: unknown customer 999999",
                    "currency: unknown currency id 77", "foreignamountunpaid: "]
    for invoice, expected in zip(invoices[:5], expectations, strict=True):
        row = rows[str(invoice["id"])]
        assert row["validation_status"] == "invalid" and expected in row["validation_errors"], row
    assert rows[str(invoices[5]["id"])]["validation_status"] == "valid"


def test_a_row_without_an_id_is_rejected():
    resolver = records.CurrencyResolver("USD")
    with pytest.raises(records.RecordRejected):
        records.invoice_row({"tranid": "INV1"}, currency_of=lambda c: "USD", currencies=resolver, zone=UTC,
                            synced_at=datetime.now(UTC))


def test_a_malformed_body_is_a_protocol_error_naming_the_operation(netsuite):
    client = netsuite.client()
    netsuite.sandbox.inject("malformed", path="suiteql")
    with pytest.raises(NetSuiteProtocolError) as error:
        client.suiteql("SELECT id FROM customer")
    assert "suiteql" in str(error.value) and error.value.code == "MALFORMED_RESPONSE"


def test_currency_ids_map_through_the_currency_table_or_configuration(netsuite):
    invoice = netsuite.sandbox.invoices[0]
    netsuite.sandbox.update_invoice(invoice["id"], currency=2)
    source = netsuite.source()
    currencies = _customers(source)
    (row,) = source.read_invoices([str(invoice["id"])], currencies.get)
    assert row["currency"] == "CAD" and row["validation_status"] == "valid"
    configured = netsuite.source(currency_map={"2": "EUR"})
    assert configured.read_invoices([str(invoice["id"])], currencies.get)[0]["currency"] == "EUR"


# ---- other emulators: optional columns, tables and fields -------------------------------------------------------


def test_optional_columns_the_source_lacks_are_dropped(netsuite, monkeypatch):
    monkeypatch.delitem(sandbox_app.TRANSACTION_COLUMNS, "class")
    monkeypatch.delitem(sandbox_app.CUSTOMER_COLUMNS, "defaultbillingaddress")
    source = netsuite.source()
    customers, _, _ = _all(source.customers_changed(None))
    invoices, _, _ = _all(source.invoices_changed(None, {c["customer_id"]: "USD" for c in customers}.get))
    assert len(invoices) == 300 and all(row["actg_class_id"] is None for row in invoices)
    assert len(customers) == 60 and all(row["bill_state"] is None for row in customers)


def test_payment_lines_fall_back_to_the_apply_sublist(netsuite, monkeypatch):
    original = NetSuiteSandbox._catalog

    def without_links(self):
        catalog = original(self)
        catalog.tables = {k: v for k, v in catalog.tables.items() if k != "nexttransactionlinelink"}
        return catalog

    monkeypatch.setattr(NetSuiteSandbox, "_catalog", without_links)
    source = netsuite.source()
    payments, lines, _ = _all(source.received_payments_changed(None, _customers(source).get))
    expected = {(str(p["id"]), str(i), int(a * 100)) for p in netsuite.sandbox.payments for i, a in p["apply"].items()}
    assert {(line["received_payment_id"], line["invoice_id"], line["amount_cents"]) for line in lines} == expected
    assert len(payments) == len(netsuite.sandbox.payments)


def test_contacts_unavailable_yield_nothing(netsuite, monkeypatch):
    original = NetSuiteSandbox._catalog

    def without_contacts(self):
        catalog = original(self)
        catalog.tables = {k: v for k, v in catalog.tables.items() if k != "contact"}
        return catalog

    monkeypatch.setattr(NetSuiteSandbox, "_catalog", without_contacts)
    assert _all(netsuite.source().contacts_changed(None, {})) == ([], [], [])


# ---- payments ---------------------------------------------------------------------------------------------------


def test_record_payment_twice_posts_once(netsuite):
    source = netsuite.source()
    invoice = _open_invoice(netsuite)
    first = source.record_payment(_payment(invoice, 2500))
    second = source.record_payment(_payment(invoice, 2500))
    assert first["id"] == second["id"] and first["created"] and not second["created"]
    ours = [p for p in netsuite.sandbox.payments if p["externalid"] == REFERENCE]
    assert len(ours) == 1 and ours[0]["apply"] == {invoice["id"]: Decimal("25.00")}
    assert netsuite.sandbox.invoice(invoice["id"])["foreignamountunpaid"] == invoice["foreigntotal"] - Decimal("25.00")
    # The poster reads a payment back by its reference through the customer's payments.
    rows, lines, _ = _all(source.received_payments_changed(None, _customers(source).get,
                                                           customer_id=str(invoice["entity"])))
    (mine,) = [r for r in rows if r["ref_number"] == REFERENCE]
    assert mine["received_payment_id"] == first["id"] and mine["amount_cents"] == 2500
    assert [(line["invoice_id"], line["amount_cents"]) for line in lines
            if line["received_payment_id"] == first["id"]] == [(str(invoice["id"]), 2500)]


def test_a_dropped_connection_after_commit_is_retried_into_one_payment(netsuite):
    source = netsuite.source()
    invoice = _open_invoice(netsuite)
    netsuite.sandbox.inject("drop", path="record/customerpayment", after_processing=True, method="PUT")
    result = source.record_payment(_payment(invoice, 4000))
    assert [p["id"] for p in netsuite.sandbox.payments if p["externalid"] == REFERENCE] == [int(result["id"])]
    assert netsuite.sandbox.invoice(invoice["id"])["foreignamountunpaid"] == invoice["foreigntotal"] - Decimal("40.00")
    assert netsuite.sandbox.stats["calls"]["record/customerpayment"] == 2


def test_an_unknown_outcome_is_reported_and_safe_to_repeat(netsuite):
    source = netsuite.source()
    invoice = _open_invoice(netsuite)
    netsuite.sandbox.inject("drop", path="record/customerpayment", after_processing=True, method="PUT", times=5)
    with pytest.raises(AROutcomeUnknownError):
        source.record_payment(_payment(invoice, 4000))
    again = source.record_payment(_payment(invoice, 4000))
    assert again["created"] is False
    assert len([p for p in netsuite.sandbox.payments if p["externalid"] == REFERENCE]) == 1
    assert netsuite.sandbox.invoice(invoice["id"])["foreignamountunpaid"] == invoice["foreigntotal"] - Decimal("40.00")


def test_payments_the_invoice_cannot_take_are_refused_before_writing(netsuite):
    source = netsuite.source()
    invoice = _open_invoice(netsuite)
    paid = next(i for i in netsuite.sandbox.invoices if i["status"] == "B")
    stranger = next(c["id"] for c in netsuite.sandbox.customers if c["id"] != invoice["entity"])
    voided = next(i for i in netsuite.sandbox.invoices if i["voided"] == "T")
    good = _payment(invoice, 100)
    cases = [
        (_payment(invoice, int(invoice["foreigntotal"] * 100) + 1), "AMOUNT_EXCEEDS_UNPAID"),
        (_payment(paid, 100), "AMOUNT_EXCEEDS_UNPAID"),
        (_payment(voided, 100), "INVOICE_NOT_OPEN"),
        (replace(good, customer_id=str(stranger)), "CUSTOMER_MISMATCH"),
        (replace(good, currency="CAD"), "CURRENCY_MISMATCH"),
    ]
    for payment, code in cases:
        with pytest.raises(ARSourceError) as error:
            source.record_payment(payment)
        assert error.value.code == code
    with pytest.raises(ARRecordNotFoundError):
        source.record_payment(replace(good, invoice_id="999999"))
    assert "record/customerpayment" not in netsuite.sandbox.stats["calls"]
    assert netsuite.sandbox.invoice(invoice["id"])["foreignamountunpaid"] == invoice["foreigntotal"]


# ---- notes --------------------------------------------------------------------------------------------------------


def test_note_merge_keeps_what_people_wrote(netsuite):
    source = netsuite.source()
    customer = netsuite.sandbox.customers[0]
    people = "Spoke to Dana 11/20: promised to pay by Friday"
    netsuite.sandbox.update_customer(customer["id"], custentity_agentcollect_notes=people)
    first = source.write_customer_note(str(customer["id"]), "AgentCollect: reminder sent")
    assert source.write_customer_note(str(customer["id"]), "AgentCollect: reminder sent") == first
    source.write_customer_note(str(customer["id"]), "AgentCollect: payment\nposted")
    value = netsuite.sandbox.customer(customer["id"])["custentity_agentcollect_notes"]
    assert value.splitlines()[0] == people and len(value.splitlines()) == 3
    notes = source.list_customer_notes(str(customer["id"]))
    assert [n["message"] for n in notes] == ["AgentCollect: reminder sent", "AgentCollect: payment posted"]
    assert notes[0]["id"] == first


def test_notes_stay_within_the_limit_by_dropping_our_oldest(netsuite):
    source = netsuite.source(note_field_max_chars=400)
    customer = netsuite.sandbox.customers[1]
    netsuite.sandbox.update_customer(customer["id"], custentity_agentcollect_notes="Keep me")
    for n in range(12):
        source.write_customer_note(str(customer["id"]), f"AgentCollect: note number {n} " + "x" * 40)
    value = netsuite.sandbox.customer(customer["id"])["custentity_agentcollect_notes"]
    assert len(value) <= 400 and value.startswith("Keep me")
    messages = [n["message"] for n in parse_note_lines(value)]
    assert messages[-1].startswith("AgentCollect: note number 11") and "note number 0 " not in value
    assert merge_note("x" * 50, "[ac:000000000000 2026-11-26] y", 40) is None


def test_notes_fall_back_to_comments_when_the_custom_field_is_missing(netsuite_factory):
    running = netsuite_factory(note_field=None)
    source = running.source()
    customer = next(c for c in running.sandbox.customers if c["comments"])
    note = source.write_customer_note(str(customer["id"]), "AgentCollect: payment posted")
    value = running.sandbox.customer(customer["id"])["comments"]
    assert value.startswith(customer["comments"] + "\n") and value.endswith("AgentCollect: payment posted")
    assert [n["id"] for n in source.list_customer_notes(str(customer["id"]))] == [note]


# ---- resource -----------------------------------------------------------------------------------------------------


def test_resource_shares_one_client_and_builds_the_source(netsuite, warehouse_resource):
    resource = netsuite.resource(warehouse_resource)
    assert resource.get_client() is netsuite.resource(warehouse_resource).get_client()
    source = resource.get_source(ARSyncSettings(org_currency="USD", overlap_seconds=60))
    assert isinstance(source, NetSuiteARSource) and source.name == "netsuite" and source.display_name == "NetSuite"
    assert source.overlap == timedelta(seconds=60)
    assert len(_all(source.invoices_changed(None, _customers(source).get))[0]) == 300
    assert source.api_stats()["tokens_minted"] == 1


def test_sandbox_config_default_is_a_developer_account():
    assert SandboxConfig().concurrency_limit == 5
