"""Contract tests of the Bill.com v2 sandbox, spoken to with plain httpx (not the project client)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from agentcollect_pipeline.sandboxes.billcom import BillComSandbox, SandboxClock, SandboxConfig
from agentcollect_pipeline.sandboxes.billcom.app import fmt_ts, parse_ts
from agentcollect_pipeline.sandboxes.server import ServerHandle, serve_in_thread

START = datetime(2026, 11, 26, 12, tzinfo=UTC)
CFG = SandboxConfig()


def make_sandbox(invoices: int = 300, customers: int = 60, **config: Any) -> BillComSandbox:
    sandbox = BillComSandbox(config=SandboxConfig(**config), clock=SandboxClock(start=START))
    sandbox.seed(seed=7, invoices=invoices, customers=customers)
    return sandbox


@pytest.fixture
def sandbox() -> BillComSandbox:
    return make_sandbox()


@pytest.fixture
def server(sandbox: BillComSandbox) -> Iterator[ServerHandle]:
    with serve_in_thread(sandbox.app) as handle:
        yield handle


@pytest.fixture
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/api/v2", timeout=10) as client:
        yield client


def post(http: httpx.Client, op: str, data: Any = None, session: str | None = None,
         **form: str) -> tuple[int, dict[str, Any]]:
    body = {"devKey": CFG.dev_key, **form}
    if session is not None:
        body["sessionId"] = session
    if data is not None:
        body["data"] = data if isinstance(data, str) else json.dumps(data)
    response = http.post(f"/{op}.json", data=body)
    return response.status_code, response.json(parse_float=Decimal)


def login(http: httpx.Client) -> str:
    status, env = post(http, "Login", userName=CFG.username, password=CFG.password, orgId=CFG.org_id)
    assert status == 200 and env["response_status"] == 0, env
    return env["response_data"]["sessionId"]


def ok(result: tuple[int, dict[str, Any]]) -> Any:
    status, env = result
    assert status == 200 and env["response_status"] == 0 and env["response_message"] == "Success", env
    return env["response_data"]


def error_code(result: tuple[int, dict[str, Any]]) -> str:
    _, env = result
    assert env["response_status"] == 1 and env["response_message"] == "Error", env
    return env["response_data"]["error_code"]


def open_invoice(sandbox: BillComSandbox, minimum: Decimal = Decimal("50")) -> dict[str, Any]:
    customers = {c["id"] for c in sandbox.entities("Customer")}
    return next(i for i in sandbox.entities("Invoice")
                if i["isActive"] == "1" and i["paymentStatus"] == "1" and i["amountDue"] > minimum
                and i["customerId"] in customers)


# ---- transport, login, sessions ------------------------------------------------------------------------


def test_login_returns_session_and_api_endpoint(http: httpx.Client, server: ServerHandle,
                                                sandbox: BillComSandbox) -> None:
    data = ok(post(http, "Login", userName=CFG.username, password=CFG.password, orgId=CFG.org_id))
    assert set(data) == {"sessionId", "orgId", "apiEndPoint", "usersId"}
    assert data["orgId"] == CFG.org_id
    assert data["apiEndPoint"] == f"{server.url}/api/v2"
    info = ok(post(http, "GetSessionInfo", session=data["sessionId"]))
    assert info["orgId"] == CFG.org_id
    assert sandbox.stats["logins"] == 1
    assert sandbox.credentials == {"username": CFG.username, "password": CFG.password, "org_id": CFG.org_id,
                                   "dev_key": CFG.dev_key}


def test_login_rejects_bad_password_and_bad_dev_key(http: httpx.Client) -> None:
    assert error_code(post(http, "Login", userName=CFG.username, password="nope", orgId=CFG.org_id)) == "BDC_1101"
    assert error_code(post(http, "Login", userName=CFG.username, password=CFG.password, orgId=CFG.org_id,
                           devKey="wrong")) == "BDC_1102"
    status, env = post(http, "Login", userName=CFG.username, password="nope", orgId=CFG.org_id)
    assert status == 200  # error_http_status defaults to 200: clients must read response_status
    assert env["response_data"]["error_message"] == "User name and/or password do not match our records."


def test_calls_need_dev_key_and_valid_session(http: httpx.Client) -> None:
    session = login(http)
    response = http.post("/List/Invoice.json", data={"sessionId": session, "data": "{}"})
    assert response.json()["response_data"]["error_code"] == "BDC_1108"
    assert error_code(post(http, "List/Invoice", {})) == "BDC_1109"
    status, env = post(http, "List/Invoice", {}, session="bogus")
    assert env["response_data"] == {"error_code": "BDC_1109", "error_message": "Session is invalid. Please log in."}


def test_session_expires_after_idle_window_which_slides(http: httpx.Client, sandbox: BillComSandbox) -> None:
    session = login(http)
    sandbox.clock.advance(35 * 60 - 5)
    ok(post(http, "List/Customer", {"max": 1}, session=session))  # slides the window
    sandbox.clock.advance(35 * 60 - 5)
    ok(post(http, "List/Customer", {"max": 1}, session=session))
    sandbox.clock.advance(35 * 60 + 1)
    assert error_code(post(http, "List/Customer", {"max": 1}, session=session)) == "BDC_1109"
    assert error_code(post(http, "List/Customer", {"max": 1}, session=session)) == "BDC_1109"


def test_logout_invalidates_session(http: httpx.Client) -> None:
    session = login(http)
    assert ok(post(http, "Logout", session=session)) == {}
    assert error_code(post(http, "List/Invoice", {}, session=session)) == "BDC_1109"


def test_unknown_path_is_404_bdc_1121_and_counted(http: httpx.Client, sandbox: BillComSandbox) -> None:
    status, env = post(http, "List/Nope/Deeper", {})
    assert status == 404 and env["response_data"]["error_code"] == "BDC_1121"
    status, env = post(http, "NoSuchOperation", {})
    assert status == 404 and error_code((status, env)) == "BDC_1121"
    response = http.get("/Login.json")
    assert response.status_code == 404
    stats = sandbox.stats
    assert stats["total_calls"] == 3 and stats["calls"]["NoSuchOperation"] == 1


def test_malformed_data_is_bdc_1122(http: httpx.Client) -> None:
    session = login(http)
    assert error_code(post(http, "List/Invoice", '{"start": 0,', session=session)) == "BDC_1122"
    assert error_code(post(http, "Crud/Read/Invoice", "[1, 2]", session=session)) == "BDC_1122"


# ---- lists and reads -----------------------------------------------------------------------------------


def test_paging_2500_invoices_at_999() -> None:
    sandbox = make_sandbox(invoices=2500, customers=100)
    with serve_in_thread(sandbox.app) as server, httpx.Client(base_url=f"{server.url}/api/v2") as http:
        session = login(http)
        sizes, seen = [], []
        start = 0
        while True:
            page = ok(post(http, "List/Invoice", {"start": start, "max": 999,
                                                  "sort": [{"field": "updatedTime", "asc": True}]}, session=session))
            sizes.append(len(page))
            seen.extend(row["id"] for row in page)
            if len(page) < 999:
                break
            start += 999
    assert sizes == [999, 999, 502]
    assert len(seen) == len(set(seen)) == 2500
    assert all(row["entity"] == "Invoice" for row in page)
    assert "invoiceLineItems" not in page[0]


def test_list_shapes_and_types(http: httpx.Client) -> None:
    session = login(http)
    raw = http.post("/List/Invoice.json", data={"devKey": CFG.dev_key, "sessionId": session,
                                                 "data": json.dumps({"max": 5, "nested": True})}).text
    rows = json.loads(raw, parse_float=Decimal)["response_data"]
    invoice = rows[0]
    assert invoice["id"].startswith("00e") and len(invoice["id"]) == 20
    assert invoice["customerId"].startswith("0cu")
    assert isinstance(invoice["amount"], Decimal) and isinstance(invoice["amountDue"], Decimal)
    assert f'"amount":{invoice["amount"]:.2f}' in raw  # money always carries two decimals on the wire
    assert invoice["isActive"] in ("1", "2") and invoice["paymentStatus"] in ("0", "1", "2", "4")
    assert parse_ts(invoice["updatedTime"]) and invoice["updatedTime"].endswith("+0000")
    assert len(invoice["dueDate"]) == 10
    assert invoice["invoiceLineItems"][0]["entity"] == "InvoiceLineItem"
    assert sum(line["amount"] for line in invoice["invoiceLineItems"]) == invoice["amount"]
    customer = ok(post(http, "List/Customer", {"max": 1}, session=session))[0]
    for field in ("name", "companyName", "email", "phone", "altPhone", "billAddress1", "billAddressCountry",
                  "shipAddressZip", "accountType", "parentCustomerId", "isActive", "hasAuthorizedToCharge"):
        assert field in customer
    contact = ok(post(http, "List/CustomerContact", {"max": 1}, session=session))[0]
    assert contact["id"].startswith("0cc") and contact["customerId"].startswith("0cu")
    payment = ok(post(http, "List/ReceivedPay", {"max": 1}, session=session))[0]
    assert payment["id"].startswith("0rp") and payment["invoicePays"][0]["id"].startswith("0ip")


def test_updated_time_filter_sees_only_mutated_rows(http: httpx.Client, sandbox: BillComSandbox) -> None:
    session = login(http)
    everything = ok(post(http, "List/Invoice", {"filters": [
        {"field": "updatedTime", "op": ">=", "value": fmt_ts(START - timedelta(hours=1))}]}, session=session))
    assert everything == []  # seeded history ends at least an hour before "now"
    sandbox.clock.advance(60)
    mutated = sandbox.mutate("Invoice", count=7, seed=3)
    # Same instant as START + 30 s, written with a -05:00 offset: the sandbox compares instants.
    watermark = "2026-11-26T07:00:30.000-0500"
    rows = ok(post(http, "List/Invoice", {"filters": [{"field": "updatedTime", "op": ">", "value": watermark}],
                                          "sort": [{"field": "updatedTime", "asc": "true"}]}, session=session))
    assert sorted(row["id"] for row in rows) == sorted(mutated)


def test_filters_and_sort(http: httpx.Client, sandbox: BillComSandbox) -> None:
    session = login(http)
    customer_id = sandbox.entities("Invoice")[0]["customerId"]
    rows = ok(post(http, "List/Invoice", {"filters": [
        {"field": "customerId", "op": "=", "value": customer_id},
        {"field": "paymentStatus", "op": "in", "value": "0,1,2,4"}],
        "sort": [{"field": "dueDate", "asc": "false"}]}, session=session))
    assert rows and all(row["customerId"] == customer_id for row in rows)
    assert [row["dueDate"] for row in rows] == sorted((row["dueDate"] for row in rows), reverse=True)
    active = ok(post(http, "List/Customer", {"filters": [{"field": "isActive", "op": "=", "value": "1"}]},
                     session=session))
    assert len(active) == sum(c["isActive"] == "1" for c in sandbox.entities("Customer"))
    overdue = ok(post(http, "List/Invoice", {"filters": [{"field": "dueDate", "op": "<", "value": "2026-11-26"},
                                                         {"field": "isActive", "op": "!=", "value": "2"}]},
                      session=session))
    assert overdue and all(row["dueDate"] < "2026-11-26" and row["isActive"] == "1" for row in overdue)


def test_list_parameter_errors(http: httpx.Client) -> None:
    session = login(http)
    assert error_code(post(http, "List/Invoice", {"max": 1000}, session=session)) == "BDC_1129"
    assert error_code(post(http, "List/Invoice", {"filters": [{"field": "colour", "op": "=", "value": "x"}]},
                           session=session)) == "BDC_1130"
    assert error_code(post(http, "List/Invoice", {"filters": [{"field": "id", "op": "~", "value": "x"}]},
                           session=session)) == "BDC_1131"
    assert error_code(post(http, "List/Invoice", {"filters": [
        {"field": "updatedTime", "op": ">", "value": "yesterday"}]}, session=session)) == "BDC_1129"
    assert error_code(post(http, "List/Vendor", {}, session=session)) == "BDC_1128"


def test_crud_read_and_unknown_id(http: httpx.Client, sandbox: BillComSandbox) -> None:
    session = login(http)
    invoice = sandbox.entities("Invoice")[3]
    read = ok(post(http, "Crud/Read/Invoice", {"id": invoice["id"]}, session=session))
    assert read["id"] == invoice["id"] and read["amount"] == invoice["amount"]
    assert error_code(post(http, "Crud/Read/Invoice", {"id": "00e01DOESNOTEXIST000"}, session=session)) == "BDC_1120"
    customer = ok(post(http, "Crud/Read/Customer", {"id": invoice["customerId"]}, session=session)) \
        if invoice["customerId"] in {c["id"] for c in sandbox.entities("Customer")} else None
    assert customer is None or customer["entity"] == "Customer"


# ---- limits ------------------------------------------------------------------------------------------------


def _concurrent(url: str, session: str, count: int) -> list[str]:
    results: list[str] = []
    barrier = threading.Barrier(count)

    def worker() -> None:
        with httpx.Client(base_url=f"{url}/api/v2", timeout=10) as client:
            barrier.wait()
            _, env = post(client, "List/Customer", {"max": 1}, session=session)
            results.append("ok" if env["response_status"] == 0 else env["response_data"]["error_code"])

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_fourth_concurrent_request_gets_bdc_1322(http: httpx.Client, server: ServerHandle,
                                                  sandbox: BillComSandbox) -> None:
    session = login(http)
    sandbox.set_faults(latency_ms=400)
    results = _concurrent(server.url, session, 4)
    assert sorted(results) == ["BDC_1322", "ok", "ok", "ok"]
    assert sandbox.stats["max_in_flight_seen"] == 3
    assert sorted(_concurrent(server.url, session, 3)) == ["ok", "ok", "ok"]


def test_slot_is_free_by_the_time_the_response_arrives(server: ServerHandle, sandbox: BillComSandbox) -> None:
    # Three workers each fire back-to-back requests: if the sandbox released its in-flight slot only
    # after writing the response, a worker's next request could race it and see a false BDC_1322.
    sandbox.set_faults(latency_ms=5)
    with httpx.Client(base_url=f"{server.url}/api/v2") as http:
        session = login(http)
    codes: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=f"{server.url}/api/v2", timeout=10) as client:
            for _ in range(15):
                _, env = post(client, "List/Customer", {"max": 1}, session=session)
                codes.append("ok" if env["response_status"] == 0 else env["response_data"]["error_code"])

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == ["ok"] * 45


def test_hourly_request_quota_is_bdc_1144_until_next_hour() -> None:
    sandbox = make_sandbox(invoices=20, customers=5, requests_per_hour=5)
    with serve_in_thread(sandbox.app) as server, httpx.Client(base_url=f"{server.url}/api/v2") as http:
        session = login(http)
        for _ in range(5):
            ok(post(http, "List/Customer", {"max": 1}, session=session))
        _, env = post(http, "List/Customer", {"max": 1}, session=session)
        assert env["response_data"] == {"error_code": "BDC_1144",
                                        "error_message": "Max number of allowed requests per hour reached: 5."}
        sandbox.clock.set(START.replace(minute=0) + timedelta(hours=1))
        session = login(http)  # the idle window passed too
        ok(post(http, "List/Customer", {"max": 1}, session=session))


def test_login_quota_is_bdc_1144() -> None:
    sandbox = make_sandbox(invoices=20, customers=5, logins_per_hour=2)
    with serve_in_thread(sandbox.app) as server, httpx.Client(base_url=f"{server.url}/api/v2") as http:
        login(http)
        login(http)
        assert error_code(post(http, "Login", userName=CFG.username, password=CFG.password,
                               orgId=CFG.org_id)) == "BDC_1144"
        assert sandbox.stats["calls"]["Login"] == 3 and sandbox.stats["logins"] == 2


def test_expire_sessions_after_calls(http: httpx.Client, sandbox: BillComSandbox) -> None:
    sandbox.set_faults(expire_sessions_after_calls=2)
    session = login(http)
    ok(post(http, "List/Customer", {"max": 1}, session=session))
    ok(post(http, "List/Customer", {"max": 1}, session=session))
    assert error_code(post(http, "List/Customer", {"max": 1}, session=session)) == "BDC_1109"
    ok(post(http, "List/Customer", {"max": 1}, session=login(http)))


# ---- writes ------------------------------------------------------------------------------------------------


def test_record_ar_payment_reduces_amount_due_and_never_deduplicates(http: httpx.Client,
                                                                     sandbox: BillComSandbox) -> None:
    session = login(http)
    invoice = open_invoice(sandbox)
    before = len(sandbox.entities("ReceivedPay"))
    payment = {"customerId": invoice["customerId"], "paymentDate": "2026-11-25", "paymentType": "1",
               "amount": 10.00, "refNumber": "AC-123", "description": "Check 735",
               "invoicePays": [{"invoiceId": invoice["id"], "amount": 10.00}]}
    first = ok(post(http, "RecordARPayment", payment, session=session))
    assert first["entity"] == "ReceivedPay" and first["id"].startswith("0rp")
    assert first["isOnline"] is False and first["status"] == "0" and first["refNumber"] == "AC-123"
    assert first["amount"] == Decimal("10.00")
    (pay,) = first["invoicePays"]
    assert pay["entity"] == "InvoicePay" and pay["id"].startswith("0ip") and pay["invoiceId"] == invoice["id"]
    after = sandbox.get("Invoice", invoice["id"])
    assert after["amountDue"] == invoice["amountDue"] - Decimal("10.00")
    assert after["paymentStatus"] == "2"
    assert after["updatedTime"] == fmt_ts(START)

    second = ok(post(http, "RecordARPayment", payment, session=session))
    assert second["id"] != first["id"]
    payments = sandbox.entities("ReceivedPay")
    assert len(payments) == before + 2
    assert sum(p["refNumber"] == "AC-123" for p in payments) == 2

    rest = sandbox.get("Invoice", invoice["id"])["amountDue"]
    payment.update(amount=str(rest + 5), invoicePays=[{"invoiceId": invoice["id"], "amount": str(rest)}])
    ok(post(http, "RecordARPayment", payment, session=session))
    paid = sandbox.get("Invoice", invoice["id"])
    assert paid["amountDue"] == 0 and paid["paymentStatus"] == "0"
    assert sandbox.customer_credit(invoice["customerId"]) == Decimal("5.00")


def test_record_ar_payment_validation(http: httpx.Client, sandbox: BillComSandbox) -> None:
    session = login(http)
    invoice = open_invoice(sandbox)
    other = next(c["id"] for c in sandbox.entities("Customer") if c["id"] != invoice["customerId"])
    good = {"customerId": invoice["customerId"], "paymentDate": "2026-11-25", "paymentType": "0",
            "amount": 5, "invoicePays": [{"invoiceId": invoice["id"], "amount": 5}]}

    def message(**changes: Any) -> tuple[str, str]:
        _, env = post(http, "RecordARPayment", {**good, **changes}, session=session)
        assert env["response_status"] == 1, env
        return env["response_data"]["error_code"], env["response_data"]["error_message"]

    assert "paymentDate" in message(paymentDate="25/11/2026")[1]
    assert "paymentType" in message(paymentType="6")[1]
    assert "amount" in message(amount=0)[1]
    assert "customerId" in message(customerId="0cu01NOPE00000000000")[1]
    assert "invoicePays[0].invoiceId" in message(invoicePays=[{"invoiceId": "00e01NOPE00000000000", "amount": 5}])[1]
    code, text = message(customerId=other)
    assert code == "BDC_1117" and invoice["id"] in text
    assert message(customerId="")[0] == "BDC_1116"
    assert sandbox.get("Invoice", invoice["id"])["amountDue"] == invoice["amountDue"]


def test_injected_delay_after_processing_still_records_the_payment(server: ServerHandle,
                                                                   sandbox: BillComSandbox) -> None:
    invoice = open_invoice(sandbox)
    sandbox.inject("delay", path="RecordARPayment", delay_s=1.5, after_processing=True)
    payment = {"customerId": invoice["customerId"], "paymentDate": "2026-11-25", "paymentType": "3",
               "amount": 1, "refNumber": "AC-timeout", "invoicePays": [{"invoiceId": invoice["id"], "amount": 1}]}
    with httpx.Client(base_url=f"{server.url}/api/v2", timeout=0.4) as http:
        session = login(http)
        with pytest.raises(httpx.ReadTimeout):
            post(http, "RecordARPayment", payment, session=session)
    assert [p["refNumber"] for p in sandbox.entities("ReceivedPay")].count("AC-timeout") == 1


def test_injected_faults_are_consumed_in_order(http: httpx.Client, sandbox: BillComSandbox) -> None:
    session = login(http)
    sandbox.inject("http_500", path="List/Invoice")
    sandbox.inject("bdc_1322", path="List/Invoice.json")
    sandbox.inject("malformed", path="/api/v2/List/Invoice.json")
    sandbox.inject("http_503")  # any path
    response = http.post("/List/Invoice.json", data={"devKey": CFG.dev_key, "sessionId": session})
    assert response.status_code == 500
    assert error_code(post(http, "List/Invoice", {}, session=session)) == "BDC_1322"
    response = http.post("/List/Invoice.json", data={"devKey": CFG.dev_key, "sessionId": session})
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    response = http.post("/List/Customer.json", data={"devKey": CFG.dev_key, "sessionId": session})
    assert response.status_code == 503
    ok(post(http, "List/Invoice", {"max": 1}, session=session))
    assert sandbox.stats["faults_injected"] == 4


def test_injected_error_after_processing_hides_a_successful_write(http: httpx.Client,
                                                                  sandbox: BillComSandbox) -> None:
    session = login(http)
    customer = sandbox.entities("Customer")[0]
    sandbox.inject("http_500", path="SendMessage", after_processing=True)
    response = http.post("/SendMessage.json", data={"devKey": CFG.dev_key, "sessionId": session, "data": json.dumps(
        {"objectId": customer["id"], "message": "Reminder sent", "isPublic": False})})
    assert response.status_code == 500
    assert [m["message"] for m in sandbox.entities("Message")] == ["Reminder sent"]


def test_send_and_list_messages(http: httpx.Client, sandbox: BillComSandbox) -> None:
    session = login(http)
    customer = sandbox.entities("Customer")[0]
    sent = ok(post(http, "SendMessage", {"objectId": customer["id"], "message": "Promised to pay Friday",
                                         "isPublic": False}, session=session))
    assert isinstance(sent, list) and len(sent) == 1
    note = sent[0]
    assert note["entity"] == "Message" and note["id"].startswith("act") and note["objectId"] == customer["id"]
    assert note["isPublic"] is False and note["usersId"] and set(note["from"]) == {
        "usersOrgName", "usersFirstName", "usersLastName"}
    ok(post(http, "SendMessage", {"objectId": customer["id"], "message": "Second", "isPublic": "true"},
            session=session))
    listed = ok(post(http, "ListMessage", {"objectId": customer["id"], "start": 0, "max": 999}, session=session))
    assert [m["message"] for m in listed] == ["Promised to pay Friday", "Second"]
    assert listed[1]["isPublic"] is True
    assert error_code(post(http, "SendMessage", {"objectId": "0cu01NOPE00000000000", "message": "x"},
                           session=session)) == "BDC_1120"
    assert sandbox.get("Customer", customer["id"])["updatedTime"] == customer["updatedTime"]


# ---- Python surface and control API -------------------------------------------------------------------


def test_python_helpers_bump_updated_time(sandbox: BillComSandbox) -> None:
    sandbox.clock.advance(90)
    now = fmt_ts(sandbox.clock.now())
    invoice = open_invoice(sandbox)
    assert sandbox.update_invoice(invoice["id"], description="Changed")["updatedTime"] == now
    assert sandbox.void_invoice(invoice["id"])["isActive"] == "2"
    other = open_invoice(sandbox)
    payment = sandbox.pay_online(other["id"])
    assert payment["isOnline"] is True and payment["onlinePayment"] is True
    assert sandbox.get("Invoice", other["id"])["paymentStatus"] == "0"
    customer = sandbox.add_customer(name="Crafted Co", email="")
    crafted = sandbox.add_invoice(customerId=customer["id"], amount=Decimal("42.50"), dueDate="2026-01-01")
    assert crafted["amountDue"] == Decimal("42.50") and crafted["createdTime"] == now
    assert crafted["invoiceNumber"] not in {i["invoiceNumber"] for i in sandbox.entities("Invoice")
                                            if i["id"] != crafted["id"]}


def test_control_api(server: ServerHandle, sandbox: BillComSandbox) -> None:
    with httpx.Client(base_url=server.url) as control:
        assert control.get("/sandbox/credentials").json()["dev_key"] == CFG.dev_key
        assert control.post("/sandbox/clock", json={"advance_seconds": 60}).json() == {
            "now": fmt_ts(START + timedelta(seconds=60))}
        assert control.post("/sandbox/clock", json={"now": "2026-11-27T00:00:00.000+0000"}).json()["now"] == \
            "2026-11-27T00:00:00.000+0000"
        invoice = open_invoice(sandbox)
        updated = control.post(f"/sandbox/invoices/{invoice['id']}", json={"description": "via control"}).json()
        assert updated["description"] == "via control"
        paid = control.post(f"/sandbox/invoices/{invoice['id']}/pay-online", json={"amount": "12.34"}).json()
        assert paid["amount"] == 12.34 and paid["isOnline"] is True
        assert control.post(f"/sandbox/invoices/{invoice['id']}/void").json()["isActive"] == "2"
        ids = control.post("/sandbox/mutate", json={"entity": "Customer", "count": 3, "seed": 2}).json()["ids"]
        assert len(ids) == 3
        assert control.get(f"/sandbox/entities/Customer/{ids[0]}").json()["updatedTime"] == \
            "2026-11-27T00:00:00.000+0000"
        assert len(control.get("/sandbox/entities/Invoice").json()) == 300
        assert control.get("/sandbox/entities/Invoice/nope").status_code == 404
        assert control.post("/sandbox/faults", json={"latency_ms": 0}).status_code == 200
        control.post("/sandbox/inject", json={"kind": "http_429", "path": "Login"})
        response = control.post("/api/v2/Login.json", data={"devKey": CFG.dev_key})
        assert response.status_code == 429
        stats = control.get("/sandbox/stats").json()
        assert stats["total_calls"] == 1 and stats["calls"] == {"Login": 1}
        assert control.post("/sandbox/stats/reset").json()["total_calls"] == 0
        assert control.post("/sandbox/inject", json={"kind": "nonsense"}).status_code == 400


# ---- seeding -------------------------------------------------------------------------------------------------


def test_seed_is_deterministic_realistic_and_in_the_past() -> None:
    a, b = make_sandbox(invoices=3000, customers=600), make_sandbox(invoices=3000, customers=600)
    assert a.entities("Invoice") == b.entities("Invoice")
    assert a.entities("Customer") == b.entities("Customer")
    invoices, customers = a.entities("Invoice"), a.entities("Customer")
    cutoff = fmt_ts(START - timedelta(hours=1))
    for entity in ("Invoice", "Customer", "CustomerContact", "ReceivedPay"):
        rows = a.entities(entity)
        assert rows and all(r["createdTime"] <= r["updatedTime"] <= cutoff for r in rows), entity
    months = {r["updatedTime"][:7] for r in invoices}
    assert len(months) >= 6
    share = lambda rows, pred: sum(map(pred, rows)) / len(rows)  # noqa: E731
    assert 0.07 < share(invoices, lambda i: i["paymentStatus"] == "0") < 0.13
    assert 0.05 < share(invoices, lambda i: i["paymentStatus"] == "2") < 0.11
    assert 0.01 < share(invoices, lambda i: i["paymentStatus"] == "4") < 0.05
    assert 0.01 < share(invoices, lambda i: i["isActive"] == "2") < 0.05
    assert 0.02 < share(customers, lambda c: c["isActive"] == "2") < 0.09
    assert 0.02 < share(customers, lambda c: "invoiceCurrency" in c) < 0.09
    assert any(c["email"] == "" for c in customers)
    assert any(c["phone"] in ("555-CALL-NOW", "12", "n/a", "000") for c in customers)
    assert any(i["amount"] <= 0 for i in invoices)
    ids = {c["id"] for c in customers}
    assert any(i["customerId"] not in ids for i in invoices)
    assert any(c["parentCustomerId"] != "00000000000000000000" for c in customers)
    assert {c["billAddressCountry"] for c in customers} == {"USA", "Canada", "United Kingdom"}
    assert any(i["hasAutoPay"] for i in invoices)
    due_offsets = [(datetime.fromisoformat(i["dueDate"]).date() - START.date()).days for i in invoices]
    assert min(due_offsets) <= -190 and max(due_offsets) >= 50
    payments = a.entities("ReceivedPay")
    paid_ids = {p["invoicePays"][0]["invoiceId"] for p in payments}
    assert all(i["id"] in paid_ids for i in invoices if i["paymentStatus"] in ("0", "2"))
    positive = [i["amount"] for i in invoices if i["amount"] > 0]
    assert min(positive) >= 50 and max(positive) <= 50000


@pytest.mark.slow
def test_seed_100k_invoices_is_fast() -> None:
    sandbox = BillComSandbox(clock=SandboxClock(start=START))
    began = time.perf_counter()
    counts = sandbox.seed(seed=7, invoices=100_000, customers=20_000)
    elapsed = time.perf_counter() - began
    assert counts["Invoice"] == 100_000 and counts["Customer"] == 20_000
    assert elapsed < 20, elapsed  # ~3 s on a typical laptop; generous for slow CI machines
    with serve_in_thread(sandbox.app) as server, httpx.Client(base_url=f"{server.url}/api/v2", timeout=30) as http:
        session = login(http)
        query = {"max": 999, "filters": [{"field": "isActive", "op": "=", "value": "1"}],
                 "sort": [{"field": "updatedTime", "asc": True}]}
        ok(post(http, "List/Invoice", {**query, "start": 0}, session=session))
        began = time.perf_counter()
        for start in range(999, 999 * 11, 999):
            assert len(ok(post(http, "List/Invoice", {**query, "start": start}, session=session))) == 999
        assert (time.perf_counter() - began) / 10 < 0.5  # later pages are slices of the cached order


def test_cli_starts_and_serves() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "agentcollect_pipeline.sandboxes.billcom", "--port", "0", "--invoices", "30",
         "--customers", "5"], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip() if process.stdout else ""
        assert line.startswith("billcom sandbox listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        with httpx.Client(base_url=f"{url}/api/v2") as http:
            session = login(http)
            assert len(ok(post(http, "List/Invoice", {}, session=session))) == 30
    finally:
        process.terminate()
        process.wait(10)


def test_set_faults_leaves_unnamed_settings_alone(http: httpx.Client, sandbox: BillComSandbox) -> None:
    sandbox.set_faults(latency_ms=150)
    sandbox.set_faults(expire_sessions_after_calls=1)
    session = login(http)
    began = time.perf_counter()
    ok(post(http, "List/Customer", {"max": 1}, session=session))
    assert time.perf_counter() - began >= 0.14
    assert error_code(post(http, "List/Customer", {"max": 1}, session=session)) == "BDC_1109"
    sandbox.set_faults(latency_ms=0, expire_sessions_after_calls=0)
    session = login(http)
    for _ in range(3):
        ok(post(http, "List/Customer", {"max": 1}, session=session))
    sandbox.inject("http_500", times=2)
    sandbox.clear_faults()
    ok(post(http, "List/Customer", {"max": 1}, session=session))
