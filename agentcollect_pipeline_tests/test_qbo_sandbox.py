"""Contract tests of the QuickBooks Online sandbox against the reference's emulator checklist (§4.1),
spoken to with plain httpx (not the project client)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from agentcollect_pipeline.sandboxes.qbo import QBOSandbox, SandboxClock, SandboxConfig
from agentcollect_pipeline.sandboxes.qbo.app import THROTTLE_MESSAGE, TOKEN_PATH
from agentcollect_pipeline.sandboxes.server import ServerHandle, serve_in_thread
from agentcollect_pipeline_tests.qbo_fixtures import SANDBOX_START


def make_sandbox(invoices: int = 300, customers: int = 60, **config: Any) -> QBOSandbox:
    sandbox = QBOSandbox(config=SandboxConfig(**config), clock=SandboxClock(start=SANDBOX_START))
    sandbox.seed(seed=7, invoices=invoices, customers=customers)
    return sandbox


@pytest.fixture
def sandbox() -> QBOSandbox:
    return make_sandbox()


@pytest.fixture
def server(sandbox: QBOSandbox) -> Iterator[ServerHandle]:
    with serve_in_thread(sandbox.app) as handle:
        yield handle


@pytest.fixture
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def grant(http: httpx.Client, sandbox: QBOSandbox, refresh_token: str, *, secret: str | None = None) -> httpx.Response:
    credentials = sandbox.credentials
    return http.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                     auth=(credentials["client_id"], secret or credentials["client_secret"]),
                     headers={"Accept": "application/json"})


class Api:
    """Bearer-authenticated calls to /v3/company/{realm}/..."""

    def __init__(self, http: httpx.Client, sandbox: QBOSandbox) -> None:
        self.http, self.sandbox = http, sandbox
        answer = grant(http, sandbox, sandbox.connect())  # a connection of its own: tests rotate the initial one
        assert answer.status_code == 200, answer.text
        self.token = answer.json()["access_token"]
        self.base = f"/v3/company/{sandbox.credentials['realm_id']}"

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json", **extra}

    def query(self, statement: str, *, use_get: bool = False) -> httpx.Response:
        if use_get:
            return self.http.get(f"{self.base}/query", params={"query": statement, "minorversion": "75"},
                                 headers=self.headers())
        return self.http.post(f"{self.base}/query", params={"minorversion": "75"}, content=statement.encode(),
                              headers=self.headers(**{"Content-Type": "application/text"}))

    def rows(self, statement: str, entity: str) -> list[dict[str, Any]]:
        answer = self.query(statement)
        assert answer.status_code == 200, answer.text
        return answer.json(parse_float=Decimal)["QueryResponse"].get(entity, [])

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(f"{self.base}/{path}", params={"minorversion": "75", **params}, headers=self.headers())

    def post(self, path: str, body: dict[str, Any], request_id: str | None = None) -> httpx.Response:
        params = {"minorversion": "75", **({"requestid": request_id} if request_id else {})}
        return self.http.post(f"{self.base}/{path}", params=params, content=json.dumps(body, default=str),
                              headers=self.headers(**{"Content-Type": "application/json"}))


@pytest.fixture
def api(http: httpx.Client, sandbox: QBOSandbox) -> Api:
    return Api(http, sandbox)


def fault(answer: httpx.Response) -> dict[str, Any]:
    return answer.json()["Fault"]["Error"][0]


def open_invoice(sandbox: QBOSandbox, minimum: Decimal = Decimal("50")) -> dict[str, Any]:
    active = {c["Id"] for c in sandbox.entities("Customer") if c["Active"]}
    return next(i for i in sandbox.entities("Invoice")
                if i["Balance"] == i["TotalAmt"] and i["Balance"] > minimum and i["CustomerRef"]["value"] in active)


def payment_body(invoice: dict[str, Any], amount: Decimal, customer_id: str | None = None) -> dict[str, Any]:
    return {"CustomerRef": {"value": customer_id or invoice["CustomerRef"]["value"]}, "TotalAmt": str(amount),
            "TxnDate": "2026-11-26", "PaymentRefNum": "AC-TEST",
            "Line": [{"Amount": str(amount), "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]}


# ---- OAuth -----------------------------------------------------------------------------------------------


def test_refresh_rotates_and_the_old_token_then_gets_invalid_grant(http, sandbox):
    first = sandbox.credentials["refresh_token"]
    answer = grant(http, sandbox, first)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"token_type", "access_token", "refresh_token", "expires_in", "x_refresh_token_expires_in"}
    assert body["expires_in"] == 3600 and body["refresh_token"] != first
    assert body["x_refresh_token_expires_in"] == 100 * 24 * 3600
    stale = grant(http, sandbox, first)
    assert stale.status_code == 400 and stale.json()["error"] == "invalid_grant"
    assert grant(http, sandbox, body["refresh_token"]).status_code == 200


def test_grace_period_lets_the_old_token_yield_the_same_successor_then_ends():
    sandbox = make_sandbox(refresh_grace_s=60)
    with serve_in_thread(sandbox.app) as handle, httpx.Client(base_url=handle.url) as http:
        first = sandbox.credentials["refresh_token"]
        successor = grant(http, sandbox, first).json()["refresh_token"]
        again = grant(http, sandbox, first)
        assert again.status_code == 200 and again.json()["refresh_token"] == successor
        sandbox.clock.advance(61)
        assert grant(http, sandbox, first).json()["error"] == "invalid_grant"


def test_wrong_client_secret_expired_and_revoked_tokens_are_refused(http, sandbox):
    first = sandbox.credentials["refresh_token"]
    refused = grant(http, sandbox, first, secret="wrong")
    assert refused.status_code == 401 and refused.json() == {"error": "invalid_client"}
    sandbox.clock.advance(101 * 24 * 3600)
    assert grant(http, sandbox, first).json()["error"] == "invalid_grant"
    sandbox.clock.set(SANDBOX_START)
    fresh = sandbox.connect()
    sandbox.revoke_all()
    assert grant(http, sandbox, fresh).json()["error"] == "invalid_grant"


def test_authorization_code_grant_and_revocation_endpoint(http, sandbox):
    credentials = sandbox.credentials
    auth = (credentials["client_id"], credentials["client_secret"])
    code = sandbox.issue_authorization_code()
    answer = http.post(TOKEN_PATH, data={"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": "https://example.com/cb"}, auth=auth)
    assert answer.status_code == 200
    refresh = answer.json()["refresh_token"]
    reused = http.post(TOKEN_PATH, data={"grant_type": "authorization_code", "code": code}, auth=auth)
    assert reused.json()["error"] == "invalid_grant"
    assert http.post("/oauth2/v1/tokens/revoke", json={"token": refresh}, auth=auth).status_code == 200
    assert grant(http, sandbox, refresh).json()["error"] == "invalid_grant"
    discovery = http.get("/.well-known/openid_configuration/").json()
    assert discovery["token_endpoint"].endswith(TOKEN_PATH)


def test_api_calls_need_a_live_bearer_token_and_the_right_realm(http, sandbox, api):
    missing = http.get(f"{api.base}/invoice/1")
    assert missing.status_code == 401
    assert missing.json()["fault"]["error"][0]["message"] == (
        "message=AuthenticationFailed; errorCode=003200; statusCode=401")
    sandbox.clock.advance(3601)
    assert api.get("companyinfo/" + sandbox.credentials["realm_id"]).status_code == 401
    sandbox.clock.set(SANDBOX_START)
    api.token = Api(http, sandbox).token
    other = http.get("/v3/company/123/query", params={"query": "SELECT * FROM Invoice"}, headers=api.headers())
    assert other.status_code == 403


# ---- query --------------------------------------------------------------------------------------------------


def test_query_by_get_and_post_with_paging_default_and_cap(api, sandbox):
    assert len(api.rows("SELECT * FROM Invoice", "Invoice")) == 100  # MAXRESULTS defaults to 100
    assert len(api.rows("SELECT * FROM Invoice MAXRESULTS 5000", "Invoice")) == 300  # capped at 1000
    page = api.query("SELECT * FROM Invoice ORDERBY Id STARTPOSITION 11 MAXRESULTS 10", use_get=True).json()
    response = page["QueryResponse"]
    assert response["startPosition"] == 11 and response["maxResults"] == 10
    everything = api.rows("SELECT * FROM Invoice ORDERBY Id MAXRESULTS 1000", "Invoice")
    assert [r["Id"] for r in response["Invoice"]] == [r["Id"] for r in everything[10:20]]
    empty = api.query("SELECT * FROM Invoice WHERE DocNumber = 'no-such'").json()
    assert empty["QueryResponse"] == {}  # the entity key is omitted when nothing matches
    count = api.query("SELECT count(*) FROM Invoice").json()
    assert count["QueryResponse"]["totalCount"] == 300
    assert sandbox.stats["minor_versions"] == {"75": 6}


def test_query_operators_and_both_spellings_of_metadata(api, sandbox):
    invoices = sandbox.entities("Invoice")
    open_count = sum(1 for i in invoices if i["Balance"] > 0)
    assert len(api.rows("SELECT * FROM Invoice WHERE Balance > '0' MAXRESULTS 1000", "Invoice")) == open_count
    due = sorted(i["DueDate"] for i in invoices)[150]
    early = api.rows(f"SELECT * FROM Invoice WHERE DueDate < '{due}' MAXRESULTS 1000", "Invoice")
    assert len(early) == sum(1 for i in invoices if i["DueDate"] < due)
    ids = [invoices[0]["Id"], invoices[5]["Id"]]
    picked = api.rows(f"SELECT * FROM Invoice WHERE Id IN ('{ids[0]}', '{ids[1]}')", "Invoice")
    assert sorted(r["Id"] for r in picked) == sorted(ids)
    customer = invoices[0]["CustomerRef"]["value"]
    mine = api.rows(f"SELECT * FROM Invoice WHERE CustomerRef = '{customer}' MAXRESULTS 1000", "Invoice")
    assert mine and all(r["CustomerRef"]["value"] == customer for r in mine)
    like = api.rows("SELECT * FROM Customer WHERE DisplayName LIKE '%Supply%' MAXRESULTS 1000", "Customer")
    assert all("supply" in r["DisplayName"].lower() for r in like)
    stamp = "2026-11-01T00:00:00-08:00"
    upper = api.rows(f"SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '{stamp}' MAXRESULTS 1000", "Invoice")
    lower = api.rows(f"SELECT * FROM Invoice WHERE Metadata.LastUpdatedTime >= '{stamp}' MAXRESULTS 1000", "Invoice")
    assert upper == lower
    newest_first = api.rows("SELECT * FROM Invoice ORDERBY Metadata.LastUpdatedTime DESC MAXRESULTS 3", "Invoice")
    stamps = [r["MetaData"]["LastUpdatedTime"] for r in newest_first]
    assert stamps == sorted(stamps, reverse=True)


def test_or_join_projections_and_unknown_properties_are_validation_faults(api):
    for statement, code in [
        ("SELECT * FROM Invoice WHERE Balance > '0' OR DocNumber = '1'", "4000"),
        ("SELECT * FROM Invoice JOIN Customer", "4000"),
        ("SELECT Id, Balance FROM Invoice", "4001"),
        ("SELECT * FROM Invoice WHERE PrivateNote = 'x'", "4001"),
        ("SELECT * FROM Invoice WHERE", "4000"),
        ("SELECT * FROM Bill", "4001"),
    ]:
        answer = api.query(statement)
        assert answer.status_code == 400, statement
        assert answer.json()["Fault"]["type"] == "ValidationFault"
        assert fault(answer)["code"] == code, statement


def test_name_lists_answer_active_records_unless_active_is_filtered(api, sandbox):
    customers = sandbox.entities("Customer")
    inactive = [c for c in customers if not c["Active"]]
    assert inactive, "the seed has inactive customers"
    default = api.rows("SELECT * FROM Customer MAXRESULTS 1000", "Customer")
    everyone = api.rows("SELECT * FROM Customer WHERE Active IN (true, false) MAXRESULTS 1000", "Customer")
    assert len(default) == len(customers) - len(inactive) and len(everyone) == len(customers)


def test_escaped_quotes_in_literals(api, sandbox):
    customer = sandbox.add_customer(DisplayName="O'Brien's Bakery", CompanyName="O'Brien's Bakery")
    found = api.rows("SELECT * FROM Customer WHERE DisplayName = 'O\\'Brien\\'s Bakery'", "Customer")
    assert [c["Id"] for c in found] == [customer["Id"]]
    unterminated = api.query("SELECT * FROM Customer WHERE DisplayName = 'O'Brien'")
    assert unterminated.status_code == 400


def test_reads_by_id_and_610_for_unknown_ids(api, sandbox):
    invoice = sandbox.entities("Invoice")[0]
    answer = api.get(f"invoice/{invoice['Id']}")
    assert answer.status_code == 200
    body = answer.json(parse_float=Decimal)
    assert body["Invoice"]["Id"] == invoice["Id"] and body["Invoice"]["TotalAmt"] == invoice["TotalAmt"]
    assert "time" in body
    assert body["Invoice"]["MetaData"]["LastUpdatedTime"].endswith(("-08:00", "-07:00"))  # company time zone
    missing = api.get("invoice/999999")
    assert missing.status_code == 400 and fault(missing)["code"] == "610"
    assert api.get(f"customertype/{sandbox.entities('CustomerType')[0]['Id']}").status_code == 200


# ---- payments -----------------------------------------------------------------------------------------------


def test_payment_applies_to_the_invoice_and_bumps_it(api, sandbox):
    invoice = open_invoice(sandbox)
    body = payment_body(invoice, Decimal("25.10"))
    body["TotalAmt"] = "30.10"
    answer = api.post("payment", body, request_id="req-1")
    assert answer.status_code == 200, answer.text
    payment = answer.json(parse_float=Decimal)["Payment"]
    assert payment["TotalAmt"] == Decimal("30.1") and payment["UnappliedAmt"] == Decimal("5")
    after = sandbox.get("Invoice", invoice["Id"])
    assert after["Balance"] == invoice["Balance"] - Decimal("25.10")
    assert {"TxnId": payment["Id"], "TxnType": "Payment"} in after["LinkedTxn"]
    assert int(after["SyncToken"]) == int(invoice["SyncToken"]) + 1
    assert after["MetaData"]["LastUpdatedTime"] == SANDBOX_START
    found = api.rows("SELECT * FROM Payment WHERE PaymentRefNum = 'AC-TEST'", "Payment")
    assert [p["Id"] for p in found] == [payment["Id"]]


def test_payment_validation_faults(api, sandbox):
    invoice = open_invoice(sandbox)
    other = next(c["Id"] for c in sandbox.entities("Customer")
                 if c["Id"] != invoice["CustomerRef"]["value"] and c["Active"])
    cross = api.post("payment", payment_body(invoice, Decimal("10"), customer_id=other))
    assert cross.status_code == 400 and fault(cross)["code"] == "620"
    too_much = api.post("payment", payment_body(invoice, invoice["Balance"] + Decimal("0.01")))
    assert too_much.status_code == 400 and fault(too_much)["code"] == "6000"
    no_customer = api.post("payment", {"TotalAmt": "1"})
    assert fault(no_customer)["code"] == "2020" and fault(no_customer)["element"] == "CustomerRef"
    assert not [p for p in sandbox.payments if p.get("PaymentRefNum") == "AC-TEST"]
    assert sandbox.get("Invoice", invoice["Id"])["Balance"] == invoice["Balance"]


def test_a_repeated_requestid_replays_the_byte_identical_answer_and_creates_nothing(api, sandbox):
    invoice = open_invoice(sandbox)
    first = api.post("payment", payment_body(invoice, Decimal("10")), request_id="same-id")
    sandbox.clock.advance(5)
    second = api.post("payment", payment_body(invoice, Decimal("10")), request_id="same-id")
    assert second.status_code == first.status_code == 200
    assert second.content == first.content
    assert sum(1 for p in sandbox.payments if p.get("PaymentRefNum") == "AC-TEST") == 1
    assert sandbox.get("Invoice", invoice["Id"])["Balance"] == invoice["Balance"] - 10
    assert sandbox.stats["replays"] == 1
    too_long = api.post("payment", payment_body(invoice, Decimal("1")), request_id="x" * 51)
    assert too_long.status_code == 400


def test_customer_sparse_update_stale_sync_token_and_full_update(api, sandbox):
    customer = next(c for c in sandbox.entities("Customer") if c.get("CompanyName"))
    sparse = api.post("customer", {"Id": customer["Id"], "SyncToken": customer["SyncToken"], "sparse": True,
                                   "Notes": "collections: reminder sent"})
    assert sparse.status_code == 200, sparse.text
    updated = sparse.json()["Customer"]
    assert updated["Notes"] == "collections: reminder sent" and updated["CompanyName"] == customer["CompanyName"]
    assert int(updated["SyncToken"]) == int(customer["SyncToken"]) + 1
    stale = api.post("customer", {"Id": customer["Id"], "SyncToken": customer["SyncToken"], "sparse": True,
                                  "Notes": "x"})
    assert stale.status_code == 400 and fault(stale)["code"] == "5010"
    long_notes = api.post("customer", {"Id": customer["Id"], "SyncToken": updated["SyncToken"], "sparse": True,
                                       "Notes": "x" * 2001})
    assert fault(long_notes)["code"] == "2050"
    full = api.post("customer", {"Id": customer["Id"], "SyncToken": updated["SyncToken"],
                                 "DisplayName": customer["DisplayName"]})
    assert "CompanyName" not in full.json()["Customer"]  # a full update nulls what it omits


def test_attachable_notes_are_created_and_queried_by_entity(api, sandbox):
    customer = sandbox.entities("Customer")[0]
    body = {"Note": "AgentCollect: reminder sent",
            "AttachableRef": [{"EntityRef": {"type": "Customer", "value": customer["Id"]}}]}
    created = api.post("attachable", body, request_id="note-1")
    assert created.status_code == 200, created.text
    statement = ("SELECT * FROM Attachable WHERE AttachableRef.EntityRef.Type = 'customer' "
                 f"AND AttachableRef.EntityRef.value = '{customer['Id']}'")
    assert [a["Note"] for a in api.rows(statement, "Attachable")] == ["AgentCollect: reminder sent"]
    bad = api.post("attachable", {"Note": "x", "AttachableRef": [{"EntityRef": {"type": "Customer", "value": "0"}}]})
    assert fault(bad)["code"] == "2500"


def test_cdc_returns_changes_and_deletes_within_30_days(api, sandbox):
    invoice = open_invoice(sandbox)
    sandbox.clock.advance(60)
    since = sandbox.clock.now()
    sandbox.clock.advance(60)
    sandbox.pay_invoice(invoice["Id"], Decimal("5"))
    doomed = next(i for i in sandbox.entities("Invoice") if i["Id"] != invoice["Id"])
    sandbox.delete_invoice(doomed["Id"])
    answer = api.get("cdc", entities="Invoice,Payment", changedSince=since.isoformat())
    assert answer.status_code == 200, answer.text
    parts = answer.json()["CDCResponse"][0]["QueryResponse"]
    invoices = next(p["Invoice"] for p in parts if "Invoice" in p)
    assert {i["Id"] for i in invoices} == {invoice["Id"], doomed["Id"]}
    assert next(i for i in invoices if i["Id"] == doomed["Id"])["status"] == "Deleted"
    assert next(p["Payment"] for p in parts if "Payment" in p)[0]["TotalAmt"] == 5
    old = (sandbox.clock.now() - timedelta(days=31)).isoformat()
    assert api.get("cdc", entities="Invoice", changedSince=old).status_code == 400


# ---- throttling and faults ------------------------------------------------------------------------------------


def test_requests_over_the_per_minute_limit_get_throttle_exceeded():
    sandbox = make_sandbox(requests_per_minute=5)
    with serve_in_thread(sandbox.app) as handle, httpx.Client(base_url=handle.url) as http:
        api = Api(http, sandbox)
        answers = [api.query("SELECT count(*) FROM Invoice") for _ in range(7)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    error = fault(answers[-1])
    assert error["Message"] == THROTTLE_MESSAGE and error["code"] == "3001"


def test_more_than_ten_in_flight_get_429():
    sandbox = make_sandbox(latency_ms=300)
    with serve_in_thread(sandbox.app) as handle, httpx.Client(
            base_url=handle.url, timeout=10, limits=httpx.Limits(max_connections=20)) as http:
        api = Api(http, sandbox)
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(api.query("SELECT count(*) FROM Invoice").status_code))
                   for _ in range(14)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses.count(200) == 10 and statuses.count(429) == 4
    assert sandbox.stats["max_in_flight_seen"] == 10


@pytest.mark.parametrize("kind,status", [("http_500", 500), ("http_503", 503), ("http_429", 429)])
def test_injected_http_faults(api, sandbox, kind, status):
    sandbox.inject(kind, path="query")
    assert api.query("SELECT count(*) FROM Invoice").status_code == status
    assert api.query("SELECT count(*) FROM Invoice").status_code == 200


def test_dropped_connection_after_commit_then_requestid_replay(api, sandbox):
    invoice = open_invoice(sandbox)
    sandbox.inject("drop", path="payment", after_processing=True)
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("payment", payment_body(invoice, Decimal("10")), request_id="drop-1")
    assert len([p for p in sandbox.payments if p.get("PaymentRefNum") == "AC-TEST"]) == 1  # it was committed
    replay = api.post("payment", payment_body(invoice, Decimal("10")), request_id="drop-1")
    assert replay.status_code == 200
    assert len([p for p in sandbox.payments if p.get("PaymentRefNum") == "AC-TEST"]) == 1


def test_malformed_answer_fault(api, sandbox):
    sandbox.inject("malformed", path="query")
    answer = api.query("SELECT * FROM Invoice")
    with pytest.raises(ValueError):
        answer.json()


# ---- seed ---------------------------------------------------------------------------------------------------


def test_seed_is_deterministic_and_looks_like_a_real_book(sandbox):
    again = make_sandbox()
    assert again.entities("Invoice") == sandbox.entities("Invoice")
    customers = sandbox.entities("Customer")
    persons = [c for c in customers if "CompanyName" not in c]
    assert 0 < len(persons) < len(customers) // 2
    assert any("PrimaryEmailAddr" not in c or "@" not in c["PrimaryEmailAddr"]["Address"] for c in customers)
    assert {c["BillAddr"]["Country"] for c in customers} & {"Canada", "CA"}
    assert any("CustomerTypeRef" in c for c in customers)
    invoices = sandbox.entities("Invoice")
    days = [(SANDBOX_START.date() - date.fromisoformat(i["DueDate"])).days for i in invoices]
    assert max(days) <= 121 and min(days) >= -31 and max(days) > 90
    paid = [i for i in invoices if i["Balance"] == 0 and i["TotalAmt"] > 0]
    partial = [i for i in invoices if 0 < i["Balance"] < i["TotalAmt"]]
    voided = [i for i in invoices if i.get("PrivateNote") == "Voided"]
    assert paid and partial and voided
    assert any("ClassRef" in i for i in invoices)
    assert all(all(t["TxnType"] == "Payment" for t in i["LinkedTxn"]) for i in paid + partial)
    assert all(isinstance(i["TotalAmt"], Decimal) for i in invoices)
    assert all(i["MetaData"]["LastUpdatedTime"] <= SANDBOX_START - timedelta(hours=1) for i in invoices)


def test_main_prints_where_it_listens():
    process = subprocess.Popen(
        [sys.executable, "-m", "agentcollect_pipeline.sandboxes.qbo", "--port", "0", "--invoices", "20",
         "--customers", "5"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("qbo sandbox listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        settings = dict(process.stdout.readline().strip().split("=", 1) for _ in range(6))
        assert settings["QBO_BASE_URL"] == url and settings["QBO_TOKEN_URL"] == url + TOKEN_PATH
        answer = httpx.post(settings["QBO_TOKEN_URL"], data={"grant_type": "refresh_token",
                                                              "refresh_token": settings["QBO_REFRESH_TOKEN"]},
                            auth=(settings["QBO_CLIENT_ID"], settings["QBO_CLIENT_SECRET"]))
        assert answer.status_code == 200
    finally:
        process.terminate()
        process.wait(10)
