"""Contract tests of the NetSuite sandbox against the emulator checklist (reference §4.2), spoken to with plain
httpx and PyJWT, not the project's client."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentcollect_pipeline.sandboxes.netsuite import (
    NetSuiteSandbox,
    SandboxClock,
    SandboxConfig,
    account_slug,
)
from agentcollect_pipeline.sandboxes.netsuite.app import ASSERTION_TYPE, SUITEQL_PATH, TOKEN_PATH
from agentcollect_pipeline.sandboxes.server import ServerHandle, serve_in_thread

START = datetime(2026, 11, 26, 15, tzinfo=UTC)
RECORD = "/services/rest/record/v1"


def make_sandbox(invoices: int = 300, customers: int = 60, **config: Any) -> NetSuiteSandbox:
    sandbox = NetSuiteSandbox(config=SandboxConfig(**config), clock=SandboxClock(start=START))
    sandbox.seed(seed=7, invoices=invoices, customers=customers)
    return sandbox


@pytest.fixture
def sandbox() -> NetSuiteSandbox:
    return make_sandbox()


@pytest.fixture
def server(sandbox: NetSuiteSandbox) -> Iterator[ServerHandle]:
    with serve_in_thread(sandbox.app) as handle:
        yield handle


@pytest.fixture
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def assertion(sandbox: NetSuiteSandbox, url: str, *, key: Any = None, kid: str | None = None, alg: str = "PS256",
              typ: str = "JWT", **claims: Any) -> str:
    credentials = sandbox.credentials
    now = int(time.time())
    body = {"iss": credentials["client_id"], "scope": "rest_webservices", "aud": f"{url}{TOKEN_PATH}",
            "iat": now, "exp": now + 300}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    signing_key = key or serialization.load_pem_private_key(credentials["private_key"].encode(), None)
    return jwt.encode(body, signing_key, algorithm=alg, headers={"kid": kid or credentials["certificate_id"],
                                                                 "typ": typ})


def request_token(http: httpx.Client, token_assertion: str, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": token_assertion, **form}
    return http.post(TOKEN_PATH, data=data)


def bearer(http: httpx.Client, sandbox: NetSuiteSandbox, url: str) -> dict[str, str]:
    response = request_token(http, assertion(sandbox, url))
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def auth(http: httpx.Client, sandbox: NetSuiteSandbox, server: ServerHandle) -> dict[str, str]:
    return bearer(http, sandbox, server.url)


def suiteql(http: httpx.Client, auth: dict[str, str], query: str, **params: Any) -> httpx.Response:
    return http.post(SUITEQL_PATH, params=params, json={"q": query}, headers={**auth, "Prefer": "transient"})


def rows(http: httpx.Client, auth: dict[str, str], query: str) -> list[dict[str, Any]]:
    response = suiteql(http, auth, query)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def error_detail(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) >= {"type", "title", "status", "o:errorDetails"}, body
    assert body["status"] == response.status_code
    return body["o:errorDetails"][0]


def open_invoice(sandbox: NetSuiteSandbox, minimum: Decimal = Decimal("100")) -> dict[str, Any]:
    return next(i for i in sandbox.invoices if i["status"] == "A" and i["voided"] == "F"
                and i["foreignamountunpaid"] == i["foreigntotal"] and i["foreigntotal"] > minimum)


def payment_body(invoice: dict[str, Any], amount: Decimal, **extra: Any) -> dict[str, Any]:
    return {"customer": {"id": str(invoice["entity"])}, "payment": str(amount),
            "tranDate": "2026-11-26",
            "apply": {"items": [{"doc": {"id": str(invoice["id"])}, "apply": True, "amount": str(amount)}]},
            **extra}


# ---- OAuth 2.0 client credentials --------------------------------------------------------------------------


def test_token_issued_for_a_valid_assertion(http, sandbox, server):
    response = request_token(http, assertion(sandbox, server.url))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["access_token"]
    assert "refresh_token" not in body
    assert sandbox.stats["tokens_issued"] == 1


def test_the_production_host_is_an_accepted_audience(http, sandbox):
    canonical = f"https://{account_slug(sandbox.config.account_id)}.suitetalk.api.netsuite.com"
    assert account_slug("1234567_SB1") == "1234567-sb1"
    assert request_token(http, assertion(sandbox, canonical)).status_code == 200


def _other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong_key", "invalid_grant"),
        ("unknown_kid", "invalid_client"),
        ("wrong_iss", "invalid_client"),
        ("wrong_aud", "invalid_grant"),
        ("expired", "invalid_grant"),
        ("too_long", "invalid_grant"),
        ("future_iat", "invalid_grant"),
        ("no_scope", "invalid_grant"),
        ("rs256", "invalid_grant"),
        ("typ", "invalid_grant"),
    ],
)
def test_token_refused_for_a_bad_assertion(http, sandbox, server, case, error):
    now = int(time.time())
    options: dict[str, Any] = {
        "wrong_key": {"key": _other_rsa_key()},
        "unknown_kid": {"kid": "NOT_A_CERTIFICATE"},
        "wrong_iss": {"iss": "someone-else"},
        "wrong_aud": {"aud": "https://example.com/token"},
        "expired": {"iat": now - 4000, "exp": now - 600},
        "too_long": {"iat": now, "exp": now + 3601},
        "future_iat": {"iat": now + 900, "exp": now + 1200},
        "no_scope": {"scope": "restlets"},
        "rs256": {"alg": "RS256"},
        "typ": {"typ": "JWS"},
    }[case]
    response = request_token(http, assertion(sandbox, server.url, **options))
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert sandbox.stats["tokens_issued"] == 0


def test_token_request_needs_the_client_credentials_grant_and_jwt_bearer_type(http, sandbox, server):
    good = assertion(sandbox, server.url)
    assert request_token(http, good, grant_type="authorization_code").json()["error"] == "unsupported_grant_type"
    assert request_token(http, good, client_assertion_type="password").json()["error"] == "invalid_request"
    assert request_token(http, "not-a-jwt").json()["error"] == "invalid_request"


def test_an_ec_certificate_signs_with_es256(http, sandbox, server):
    key = ec.generate_private_key(ec.SECP256R1())
    kid = sandbox.register_certificate(key.public_key())
    assert request_token(http, assertion(sandbox, server.url, key=key, kid=kid, alg="ES256")).status_code == 200


def test_api_calls_need_a_live_bearer_token(http, sandbox, server):
    response = suiteql(http, {}, "SELECT id FROM customer")
    assert response.status_code == 401
    assert error_detail(response)["o:errorCode"] == "INVALID_LOGIN"
    headers = bearer(http, sandbox, server.url)
    assert suiteql(http, headers, "SELECT id FROM customer").status_code == 200
    sandbox.clock.advance(3601)
    assert suiteql(http, headers, "SELECT id FROM customer").status_code == 401


# ---- SuiteQL --------------------------------------------------------------------------------------------------


def test_suiteql_page_shape_strings_booleans_and_dates(http, auth, sandbox):
    response = suiteql(http, auth, "SELECT t.id, t.tranid, t.foreigntotal, t.voided, t.trandate, t.lastmodifieddate, "
                                   "t.class FROM transaction t WHERE t.type = 'CustInvc' ORDER BY t.id", limit=5)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"links", "count", "hasMore", "offset", "totalResults", "items"}
    assert body["count"] == 5 and body["hasMore"] is True and body["offset"] == 0 and body["totalResults"] == 300
    assert {link["rel"] for link in body["links"]} >= {"next", "last", "self"}
    first = body["items"][0]
    assert first["links"] == []
    assert all(isinstance(v, str) for k, v in first.items() if k != "links")
    assert first["voided"] in ("T", "F")
    invoice = sandbox.invoice(first["id"])
    trandate = invoice["trandate"]
    assert first["trandate"] == f"{trandate.month}/{trandate.day}/{trandate.year}"  # M/D/YYYY, no zero padding
    assert "/" in first["lastmodifieddate"] and ":" not in first["lastmodifieddate"]
    assert Decimal(first["foreigntotal"]) == invoice["foreigntotal"]
    nulls = [i for i in body["items"] if sandbox.invoice(i["id"])["class"] is None]
    assert all("class" not in item for item in nulls)  # NULL columns are left out of the item


def test_to_char_renders_timestamps_in_the_account_time_zone(http, auth, sandbox):
    (item,) = rows(http, auth, "SELECT t.id, TO_CHAR(t.lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lmd "
                               "FROM transaction t WHERE t.id = 5001")
    stored = sandbox.invoice(5001)["lastmodifieddate"]
    local = stored.astimezone(sandbox.timezone)
    assert item["lmd"] == local.strftime("%Y-%m-%d %H:%M:%S")


def test_limit_is_bounded_and_prefer_transient_required(http, auth):
    assert suiteql(http, auth, "SELECT id FROM customer", limit=1001).status_code == 400
    assert suiteql(http, auth, "SELECT id FROM customer", limit=0).status_code == 400
    response = http.post(SUITEQL_PATH, json={"q": "SELECT id FROM customer"}, headers=auth)
    assert response.status_code == 400


@pytest.mark.parametrize("column", ["t.foreignamountremaining", "foreignamountremaining", "t.nosuchcolumn"])
def test_unknown_columns_are_refused_like_netsuite(http, auth, column):
    response = suiteql(http, auth, f"SELECT t.id, {column} FROM transaction t")
    assert response.status_code == 400
    detail = error_detail(response)
    assert detail["o:errorCode"] == "INVALID_PARAMETER"
    assert column.split(".")[-1] in detail["detail"]
    assert detail["detail"].startswith("Invalid search query.")


def test_unknown_table_and_bad_syntax_are_400(http, auth):
    assert "Invalid search type" in error_detail(suiteql(http, auth, "SELECT id FROM invoices"))["detail"]
    assert suiteql(http, auth, "SELECT id FROM customer WHERE id IN (1").status_code == 400


def test_where_operators_functions_and_joins(http, auth, sandbox):
    invoices = sandbox.invoices
    open_count = sum(1 for i in invoices if i["status"] == "A" and i["voided"] == "F")
    assert len(rows(http, auth, "SELECT id FROM transaction WHERE type = 'CustInvc' AND status = 'A' "
                                "AND voided = 'F'")) == open_count
    assert len(rows(http, auth, "SELECT id FROM transaction WHERE type = 'CustInvc' AND (status = 'B' OR "
                                "voided = 'T')")) == sum(1 for i in invoices if i["status"] in ("B", "V"))
    assert len(rows(http, auth, "SELECT id FROM transaction WHERE id IN (5001, '5002', 5003)")) == 3
    assert len(rows(http, auth, "SELECT id FROM transaction WHERE tranid LIKE 'INV1000%'")) == 9
    assert len(rows(http, auth, "SELECT id FROM transaction WHERE type != 'CustInvc'")) == len(sandbox.payments)
    assert rows(http, auth, "SELECT id FROM transaction WHERE id BETWEEN 5001 AND 5003 ORDER BY id DESC")[0]["id"] \
        == "5003"
    today = START.date()
    overdue = sum(1 for i in invoices if i["duedate"] < today and i["foreignamountunpaid"] > 0 and i["voided"] == "F")
    found = rows(http, auth, "SELECT t.id FROM transaction t WHERE t.type = 'CustInvc' AND t.foreignamountunpaid > 0 "
                             f"AND t.voided = 'F' AND t.duedate < TO_DATE('{today.isoformat()}', 'YYYY-MM-DD')")
    assert len(found) == overdue
    (statuses,) = rows(http, auth, "SELECT BUILTIN.DF(t.status) AS s FROM transaction t WHERE t.id = 5001")
    assert statuses["s"].startswith("Invoice : ")
    joined = rows(http, auth, "SELECT t.id, c.companyname, a.state FROM transaction t "
                              "JOIN customer c ON c.id = t.entity LEFT JOIN entityaddress a ON "
                              "a.nkey = c.defaultbillingaddress WHERE t.type = 'CustInvc' ORDER BY t.id")
    assert len(joined) == 300 and all("state" in row for row in joined)
    (count,) = rows(http, auth, "SELECT COUNT(*) AS n FROM customer WHERE isinactive = 'F'")
    assert int(count["n"]) == sum(1 for c in sandbox.customers if c["isinactive"] == "F")


def test_timestamp_filters_and_ordering(http, auth, sandbox):
    cutoff = START - timedelta(days=30)
    local = cutoff.astimezone(sandbox.timezone).strftime("%Y-%m-%d %H:%M:%S")
    found = rows(http, auth, "SELECT t.id, TO_CHAR(t.lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lmd FROM "
                             f"transaction t WHERE t.lastmodifieddate > TO_TIMESTAMP('{local}', "
                             "'YYYY-MM-DD HH24:MI:SS') ORDER BY t.lastmodifieddate, t.id")
    expected = [t for t in sandbox.invoices + sandbox.payments if t["lastmodifieddate"] > cutoff]
    assert len(found) == len(expected) > 0
    assert [r["lmd"] for r in found] == sorted(r["lmd"] for r in found)


def test_paging_and_the_row_cap(http, auth):
    query = "SELECT id FROM transaction WHERE type = 'CustInvc' ORDER BY id"
    seen, offset = [], 0
    while True:
        body = suiteql(http, auth, query, limit=100, offset=offset).json()
        seen += [item["id"] for item in body["items"]]
        if not body["hasMore"]:
            break
        offset += 100
    assert len(seen) == len(set(seen)) == 300


def test_results_beyond_the_cap_are_not_reachable():
    sandbox = make_sandbox(row_cap=200)
    with serve_in_thread(sandbox.app) as handle, httpx.Client(base_url=handle.url, timeout=10) as http:
        headers = bearer(http, sandbox, handle.url)
        query = "SELECT id FROM transaction WHERE type = 'CustInvc' ORDER BY id"
        last = suiteql(http, headers, query, limit=100, offset=100).json()
        assert last["totalResults"] == 300 and last["hasMore"] is False
        beyond = suiteql(http, headers, query, limit=100, offset=200)
        assert beyond.status_code == 400 and error_detail(beyond)["o:errorCode"] == "INVALID_PARAMETER"


def test_payment_links_are_queryable(http, auth, sandbox):
    payment = sandbox.payments[0]
    (invoice_id, amount), = payment["apply"].items()
    (link,) = rows(http, auth, "SELECT l.previousdoc, l.foreignamount, l.linktype FROM nexttransactionlinelink l "
                               f"WHERE l.nextdoc = {payment['id']}")
    assert link == {"links": [], "previousdoc": str(invoice_id), "foreignamount": str(amount), "linktype": "Payment"}


# ---- the transaction model and the record API ------------------------------------------------------------------


def test_a_payment_in_netsuite_reduces_the_invoice_and_closes_it_at_zero(sandbox):
    invoice = open_invoice(sandbox)
    before = invoice["lastmodifieddate"]
    sandbox.clock.advance(60)
    sandbox.pay_invoice(invoice["id"], Decimal("10.00"))
    partly = sandbox.invoice(invoice["id"])
    assert partly["foreignamountunpaid"] == invoice["foreigntotal"] - Decimal("10.00")
    assert partly["foreignamountpaid"] == Decimal("10.00") and partly["status"] == "A"
    assert partly["lastmodifieddate"] > before
    sandbox.pay_invoice(invoice["id"])
    paid = sandbox.invoice(invoice["id"])
    assert paid["foreignamountunpaid"] == 0 and paid["status"] == "B"


def test_customer_get_and_patch_merges(http, auth, sandbox):
    customer = next(c for c in sandbox.customers if c["isperson"] == "F" and c["email"])
    url = f"{RECORD}/customer/{customer['id']}"
    body = http.get(url, headers=auth).json()
    assert body["id"] == str(customer["id"]) and body["companyName"] == customer["companyname"]
    assert http.get(url, params={"fields": "email"}, headers=auth).json().keys() == {"links", "id", "email"}
    sandbox.clock.advance(60)
    response = http.patch(url, json={"custentity_agentcollect_notes": "hello"}, headers=auth)
    assert response.status_code == 204 and response.content == b""
    after = sandbox.customer(customer["id"])
    assert after["custentity_agentcollect_notes"] == "hello" and after["email"] == customer["email"]
    assert after["lastmodifieddate"] > customer["lastmodifieddate"]
    assert http.get(f"{RECORD}/customer/999999", headers=auth).status_code == 404


def test_unknown_properties_follow_the_property_name_validation_header(http, auth, sandbox):
    customer = sandbox.customers[0]
    url = f"{RECORD}/customer/{customer['id']}"
    strict = http.patch(url, json={"custentity_typo": "x"},
                        headers={**auth, "X-NetSuite-PropertyNameValidation": "Error"})
    assert strict.status_code == 400 and "custentity_typo" in error_detail(strict)["detail"]
    assert http.patch(url, json={"custentity_typo": "x"}, headers=auth).status_code == 204
    too_long = http.patch(url, json={"custentity_agentcollect_notes": "x" * 4001}, headers=auth)
    assert too_long.status_code == 400 and "4000" in error_detail(too_long)["detail"]


def test_create_payment_returns_204_with_location_and_applies_it(http, auth, sandbox):
    invoice = open_invoice(sandbox)
    response = http.post(f"{RECORD}/customerPayment", json=payment_body(invoice, Decimal("25.50")), headers=auth)
    assert response.status_code == 204 and response.content == b""
    payment_id = response.headers["location"].rsplit("/", 1)[1]
    assert sandbox.invoice(invoice["id"])["foreignamountunpaid"] == invoice["foreigntotal"] - Decimal("25.50")
    record = http.get(f"{RECORD}/customerPayment/{payment_id}", params={"expandSubResources": "true"},
                      headers=auth).json()
    applied = [item for item in record["apply"]["items"] if item["apply"]]
    assert [(item["doc"]["id"], Decimal(str(item["amount"]))) for item in applied] == [
        (str(invoice["id"]), Decimal("25.50"))]
    unexpanded = http.get(f"{RECORD}/customerPayment/{payment_id}", headers=auth).json()
    assert "items" not in unexpanded["apply"]


def test_upsert_by_external_id_never_duplicates_and_sets_the_amount(http, auth, sandbox):
    invoice = open_invoice(sandbox)
    url = f"{RECORD}/customerPayment/eid:AC-UPSERT-1"
    body = payment_body(invoice, Decimal("40.00"), externalId="AC-UPSERT-1")
    first = http.put(url, json=body, headers=auth)
    second = http.put(url, json=body, headers=auth)
    assert first.status_code == second.status_code == 204
    assert first.headers["location"] == second.headers["location"]
    ours = [p for p in sandbox.payments if p["externalid"] == "AC-UPSERT-1"]
    assert len(ours) == 1
    assert sandbox.invoice(invoice["id"])["foreignamountunpaid"] == invoice["foreigntotal"] - Decimal("40.00")
    # A changed amount is set, not added.
    http.put(url, json=payment_body(invoice, Decimal("30.00")), headers=auth)
    assert sandbox.invoice(invoice["id"])["foreignamountunpaid"] == invoice["foreigntotal"] - Decimal("30.00")
    assert sandbox.payment(ours[0]["id"])["foreigntotal"] == Decimal("30.00")
    mismatch = http.put(url, json={**body, "externalId": "OTHER"}, headers=auth)
    assert mismatch.status_code == 400


def test_payment_validation(http, auth, sandbox):
    invoice = open_invoice(sandbox)
    other = next(i for i in sandbox.invoices if i["entity"] != invoice["entity"] and i["status"] == "A")
    voided = next(i for i in sandbox.invoices if i["voided"] == "T")
    cases = [
        payment_body(invoice, invoice["foreigntotal"] + Decimal("0.01")),
        {**payment_body(invoice, Decimal("5")), "customer": {"id": "999999"}},
        {**payment_body(invoice, Decimal("5")),
         "apply": {"items": [{"doc": {"id": str(other["id"])}, "apply": True, "amount": "5"}]}},
        {**payment_body(voided, Decimal("5")), "customer": {"id": str(voided["entity"])}},
        {**payment_body(invoice, Decimal("5")), "payment": "4.00"},
        payment_body(invoice, Decimal("5.001")),
    ]
    for body in cases:
        response = http.post(f"{RECORD}/customerPayment", json=body, headers=auth)
        assert response.status_code == 400, body
        assert error_detail(response)["o:errorCode"] in ("USER_ERROR", "INVALID_FLD_VALUE")
    assert sandbox.invoice(invoice["id"])["foreignamountunpaid"] == invoice["foreigntotal"]


def test_transform_invoice_to_payment(http, auth, sandbox):
    invoice = open_invoice(sandbox)
    response = http.post(f"{RECORD}/invoice/{invoice['id']}/!transform/customerPayment", json={}, headers=auth)
    assert response.status_code == 204 and "/customerPayment/" in response.headers["location"]
    assert sandbox.invoice(invoice["id"])["status"] == "B"
    again = http.post(f"{RECORD}/invoice/{invoice['id']}/!transform/customerPayment", json={}, headers=auth)
    assert again.status_code == 400


def test_note_is_not_a_rest_record(http, auth, sandbox):
    response = http.post(f"{RECORD}/note", json={"entity": {"id": "101"}, "note": "x"}, headers=auth)
    assert response.status_code in (400, 404)
    error_detail(response)


def test_metadata_catalog_and_governance_limits(http, auth):
    catalog = http.get(f"{RECORD}/metadata-catalog", headers={**auth, "Accept": "application/swagger+json"}).json()
    customer = catalog["components"]["schemas"]["customer"]["properties"]
    assert "custentity_agentcollect_notes" in customer
    limits = http.get("/services/rest/system/v1/governanceLimits", headers=auth).json()
    assert limits["accountConcurrencyLimit"] == 5


# ---- governance and faults ------------------------------------------------------------------------------------


def test_requests_over_the_concurrency_limit_get_429():
    sandbox = make_sandbox(concurrency_limit=2, latency_ms=300)
    with serve_in_thread(sandbox.app) as handle, httpx.Client(base_url=handle.url, timeout=10) as http:
        headers = bearer(http, sandbox, handle.url)
        results: list[httpx.Response] = []

        def call() -> None:
            with httpx.Client(base_url=handle.url, timeout=10) as own:
                results.append(suiteql(own, headers, "SELECT id FROM customer"))

        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) >= 2 and 429 in statuses
    refused = next(r for r in results if r.status_code == 429)
    assert error_detail(refused)["o:errorCode"] == "CONCURRENCY_LIMIT_EXCEEDED"
    assert sandbox.stats["max_in_flight_seen"] == 2


def test_injected_500_is_an_unexpected_error_envelope(http, auth, sandbox):
    sandbox.inject("http_500", path="suiteql")
    response = suiteql(http, auth, "SELECT id FROM customer")
    assert response.status_code == 500 and error_detail(response)["o:errorCode"] == "UNEXPECTED_ERROR"
    assert suiteql(http, auth, "SELECT id FROM customer").status_code == 200


def test_dropped_connection_after_commit_keeps_the_payment(http, auth, sandbox):
    invoice = open_invoice(sandbox)
    sandbox.inject("drop", path="record/customerpayment", after_processing=True, method="PUT")
    with pytest.raises(httpx.TransportError):
        http.put(f"{RECORD}/customerPayment/eid:AC-DROPPED", json=payment_body(invoice, Decimal("12.00")),
                 headers=auth)
    assert [p["externalid"] for p in sandbox.payments if p["externalid"] == "AC-DROPPED"] == ["AC-DROPPED"]
    assert sandbox.invoice(invoice["id"])["foreignamountunpaid"] == invoice["foreigntotal"] - Decimal("12.00")


# ---- seed and CLI -----------------------------------------------------------------------------------------------


def test_seed_is_deterministic_and_realistic():
    one, two = make_sandbox(invoices=600, customers=120), make_sandbox(invoices=600, customers=120)
    assert one.invoices == two.invoices and one.customers == two.customers
    customers, invoices = one.customers, one.invoices
    assert any(c["isperson"] == "T" for c in customers) and any(c["isperson"] == "F" for c in customers)
    assert any(c["email"] is None for c in customers) or any("@" not in (c["email"] or "@") or
                                                             c["email"].endswith("@") for c in customers)
    countries = {one.address(c["defaultbillingaddress"])["country"] for c in customers}
    assert countries == {"US", "CA"}
    assert all(one.address(c["defaultbillingaddress"])["state"] for c in customers)
    today = START.date()
    dues = [(i["duedate"] - today).days for i in invoices]
    assert min(dues) >= -120 and max(dues) <= 30 and min(dues) < -90 and max(dues) > 20
    assert {i["status"] for i in invoices} == {"A", "B", "V"}
    assert any(0 < i["foreignamountpaid"] < i["foreigntotal"] for i in invoices)  # partly paid
    assert {i["currency"] for i in invoices} == {1}
    assert any(i["class"] for i in invoices) and any(c["category"] for c in customers)
    assert all(t["lastmodifieddate"] <= START - timedelta(hours=1) for t in invoices + one.payments)
    assert isinstance(invoices[0]["trandate"], date)


def test_main_prints_the_listening_line():
    process = subprocess.Popen(
        [sys.executable, "-m", "agentcollect_pipeline.sandboxes.netsuite", "--invoices", "20", "--customers", "5"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("netsuite sandbox listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        credentials = httpx.get(f"{url}/sandbox/credentials", timeout=10).json()
        assert "BEGIN PRIVATE KEY" in credentials["private_key"]
    finally:
        process.terminate()
        process.wait(10)
