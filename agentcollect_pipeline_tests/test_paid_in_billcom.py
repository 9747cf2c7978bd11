"""Paid in Bill.com itself: the poller, the invoice.* webhook, and the job they request, end to end.

The sandbox clock follows real time here (not the frozen test clock): cases are opened at the real
"now" by collection_cases, and "paid while in collection" compares those times with Bill.com's.
"""

import json
from dataclasses import dataclass

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from agentcollect_pipeline.assets.ar_source import build_ar_source_assets
from agentcollect_pipeline.assets.collections import COLLECTIONS_ASSETS, COLLECTIONS_CHECKS
from agentcollect_pipeline.collection_policy import CollectionPolicyResource
from agentcollect_pipeline.jobs import collection_cycle
from agentcollect_pipeline.payments import billcom_events
from agentcollect_pipeline.payments.assets import PAYMENTS_ASSETS, build_paid_invoices_lane
from agentcollect_pipeline.payments.intake import normalise_event, store_events
from agentcollect_pipeline.payments.job import post_payment
from agentcollect_pipeline.resources import PaymentSettings
from agentcollect_pipeline.sandboxes.billcom import BillComSandbox, SandboxClock
from agentcollect_pipeline.sandboxes.server import serve_in_thread
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.payments_schema import billcom_webhook_events, invoices_paid_in_billcom
from agentcollect_pipeline.webhooks.app import WebhookReceiver
from agentcollect_pipeline_tests.conftest import RunningBillCom

AR_SOURCE_ASSETS, AR_SOURCE_CHECKS = build_ar_source_assets("billcom")
paid_invoices_check, (recently_paid_invoices_sensor, billcom_invoice_events_sensor) = build_paid_invoices_lane("billcom")

SECURITY_KEY = "bill-webhook-security-key-test-only"


@dataclass
class Book:
    billcom: RunningBillCom
    resources: dict
    defs: dg.Definitions
    instance: dg.DagsterInstance
    receiver_url: str
    cursors: dict

    @property
    def warehouse(self):
        return self.resources["warehouse"].get_warehouse()

    def run(self, job: str, request: dg.RunRequest | None = None) -> dg.ExecuteInProcessResult:
        tags = {**request.tags, "dagster/run_key": request.run_key} if request else {}
        return self.defs.resolve_job_def(job).execute_in_process(
            run_config=request.run_config if request else None, tags=tags, instance=self.instance
        )

    def tick(self, sensor: dg.SensorDefinition):
        with dg.build_sensor_context(
            instance=self.instance, resources=self.resources, cursor=self.cursors.get(sensor.name)
        ) as context:
            data = sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursors[sensor.name] = data.cursor
        return data

    def case_invoices(self) -> list[tuple[str, str]]:
        """(case_id, invoice_id) of every invoice in an open case, one per customer."""
        with self.warehouse.engine.connect() as conn:
            rows = conn.execute(sa.select(cs.collection_cases.c.case_id, cs.collection_cases.c.invoice_ids)).all()
        return [(case_id, ids.split(",")[0]) for case_id, ids in rows]

    def notes(self, customer_id: str) -> list[str]:
        return [m["message"] for m in self.billcom.sandbox.entities("Message") if m["objectId"] == customer_id]

    def paid_rows(self) -> dict[str, dict]:
        with self.warehouse.engine.connect() as conn:
            return {r.invoice_id: r._asdict() for r in conn.execute(sa.select(invoices_paid_in_billcom))}

    def post_webhook(self, body: bytes, signature: str | None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers[billcom_events.SIGNATURE_HEADER] = signature
        return httpx.post(f"{self.receiver_url}/webhooks/billcom", content=body, headers=headers, timeout=10)


@pytest.fixture
def book(warehouse_resource, ar_settings):
    clock = SandboxClock()  # real time
    sandbox = BillComSandbox(clock=clock)
    sandbox.seed(seed=7, invoices=300, customers=60)
    server = serve_in_thread(sandbox.app)
    billcom = RunningBillCom(sandbox=sandbox, clock=clock, url=server.url)
    resources = {
        "warehouse": warehouse_resource,
        "ar_source": billcom.ar_source(warehouse_resource),
        "ar_settings": ar_settings,
        "payment_settings": PaymentSettings(retry_after_minutes=0, reservation_lease_seconds=0),
        "collection_policy": CollectionPolicyResource(),
    }
    defs = dg.Definitions(
        assets=[*AR_SOURCE_ASSETS, *COLLECTIONS_ASSETS, *PAYMENTS_ASSETS],
        asset_checks=[*AR_SOURCE_CHECKS, *COLLECTIONS_CHECKS],
        jobs=[collection_cycle, paid_invoices_check, post_payment],
        resources=resources,
    )
    receiver = serve_in_thread(
        WebhookReceiver(warehouse_resource.get_warehouse(), "payments-secret", billcom_security_key=SECURITY_KEY)
    )
    with dg.instance_for_test() as instance:
        try:
            yield Book(billcom, resources, defs, instance, receiver.url, {})
        finally:
            receiver.stop()
            server.stop()


def test_poller_costs_one_call_and_a_payment_link_payment_stops_collection_with_one_note(book):
    assert book.tick(recently_paid_invoices_sensor).skip_message.startswith("billcom_invoices has never been synced")
    assert book.run("collection_cycle").success
    (case_id, invoice_id), *_ = book.case_invoices()
    sandbox = book.billcom.sandbox

    assert book.tick(recently_paid_invoices_sensor).run_requests == []  # warm-up: the session is reused after
    before = sandbox.stats["calls"].copy()
    data = book.tick(recently_paid_invoices_sensor)
    assert data.run_requests == [] and "no invoice updated" in data.skip_message
    after = sandbox.stats["calls"]
    assert sum(after.values()) - sum(before.values()) == 1
    assert after["List/Invoice"] - before["List/Invoice"] == 1

    invoice = sandbox.get("Invoice", invoice_id)
    sandbox.pay_online(invoice_id)  # the debtor pays through Bill.com's own link: no API call of ours
    (request,) = book.tick(recently_paid_invoices_sensor).run_requests
    assert request.run_key.startswith("invoices-updated:")
    assert book.tick(recently_paid_invoices_sensor).run_requests == []  # the cursor moved on
    result = book.run("paid_invoices_check", request)
    assert result.success
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {
        "billcom_invoices", "billcom_received_payments", "invoice_eligibility", "collection_cases",
        "invoices_paid_in_billcom",
    }

    with book.warehouse.engine.connect() as conn:
        stored = conn.execute(sa.select(schema.billcom_invoices).where(schema.billcom_invoices.c.invoice_id == invoice_id)).one()
        eligible = conn.execute(
            sa.select(cs.invoice_eligibility.c.eligible).where(cs.invoice_eligibility.c.invoice_id == invoice_id)
        ).scalar_one()
    assert stored.amount_due_cents == 0 and eligible is False  # collection stops now, not in 4 hours
    row = book.paid_rows()[invoice_id]
    assert row["case_id"] == case_id and row["amount_cents"] == stored.amount_cents
    (note,) = [n for n in book.notes(invoice["customerId"]) if "paid in Bill.com" in n]
    assert note.startswith(f"AgentCollect: invoice {invoice['invoiceNumber']} (USD ") and "collection stopped" in note

    # Re-running the check, or the 4-hourly cycle seeing the same paid invoice, writes nothing twice.
    assert book.run("paid_invoices_check", request).success
    assert book.run("collection_cycle").success
    assert len([n for n in book.notes(invoice["customerId"]) if "paid in Bill.com" in n]) == 1
    assert len(book.paid_rows()) == 1


def test_an_invoice_we_posted_gets_our_payment_note_not_a_paid_in_billcom_one(book):
    assert book.run("collection_cycle").success
    (_, invoice_id), *_ = book.case_invoices()
    invoice = book.billcom.sandbox.get("Invoice", invoice_id)
    event = normalise_event({"event_id": "evt_ours", "occurred_at": "2026-11-26T12:00:00Z", "amount": str(invoice["amountDue"]),
                             "currency": "USD", "invoice_id": invoice_id, "method": "ach"})
    store_events(book.warehouse, "webhook", [(event, "{}")])
    posted = book.defs.resolve_job_def("post_payment").execute_in_process(
        run_config={"ops": {"validate_payment_events": {"config": {"events": ["webhook:evt_ours"]}}}}, instance=book.instance
    )
    assert posted.success
    (request,) = book.tick(recently_paid_invoices_sensor).run_requests
    assert book.run("paid_invoices_check", request).success
    assert book.paid_rows() == {}
    notes = book.notes(invoice["customerId"])
    assert len(notes) == 1 and "posted to Bill.com" in notes[0]


def _notification(event_id: str, invoice: dict, event_type: str = "invoice.updated") -> bytes:
    payload = {
        "metadata": {"eventId": event_id, "subscriptionId": "sub-1", "organizationId": "00801SANDBOXORG000001",
                     "eventType": event_type, "version": 1},
        "invoice": {"id": invoice["id"], "customerId": invoice["customerId"], "invoiceNumber": invoice["invoiceNumber"],
                    "dueAmount": 0, "status": "PAID_IN_FULL", "updatedTime": invoice["updatedTime"]},
    }
    # Bill.com delivers the payload JSON-escaped, as a string (reference §3.8).
    return json.dumps(json.dumps(payload)).encode()


def test_a_signed_invoice_updated_webhook_runs_the_check_at_once(book):
    assert book.run("collection_cycle").success
    (_, invoice_id), *_ = book.case_invoices()
    sandbox = book.billcom.sandbox
    invoice = sandbox.update_invoice(invoice_id, amountDue=0)  # recorded as paid by hand in Bill.com
    body = _notification("evt-bill-1", invoice)

    for signature in (None, billcom_events.sign("not-the-key", body), "garbage"):
        response = book.post_webhook(body, signature)
        assert response.status_code == 403 and response.json() == {"error": "invalid signature"}
    tampered = body.replace(b"PAID_IN_FULL", b"OPEN")
    assert book.post_webhook(tampered, billcom_events.sign(SECURITY_KEY, body)).status_code == 403
    assert book.warehouse.count(billcom_webhook_events) == 0
    assert book.tick(billcom_invoice_events_sensor).run_requests == []

    signature = billcom_events.sign(SECURITY_KEY, body)
    assert book.post_webhook(body, signature).json()["status"] == "stored"
    assert book.post_webhook(body, signature).json()["status"] == "duplicate"  # Bill.com re-delivers
    vendor = json.dumps({"metadata": {"eventId": "evt-bill-2", "eventType": "vendor.updated"}}).encode()
    assert book.post_webhook(vendor, billcom_events.sign(SECURITY_KEY, vendor)).json()["status"] == "ignored"
    assert book.warehouse.count(billcom_webhook_events) == 1

    (request,) = book.tick(billcom_invoice_events_sensor).run_requests
    assert request.run_config["ops"]["invoices_paid_in_billcom"]["config"]["invoice_ids"] == [invoice_id]
    assert book.tick(billcom_invoice_events_sensor).run_requests == []
    result = book.run("paid_invoices_check", request)
    assert result.success
    (materialization,) = [e for e in result.get_asset_materialization_events()
                          if e.asset_key.to_user_string() == "invoices_paid_in_billcom"]
    metadata = materialization.materialization.metadata
    assert metadata["invoices_reread"].value == 1 and metadata["newly_paid"].value == 1
    assert metadata["notes_written"].value == 1
    assert invoice_id in book.paid_rows()
    assert len([n for n in book.notes(invoice["customerId"]) if "paid in Bill.com" in n]) == 1


def test_receiver_without_a_billcom_key_refuses_every_notification(warehouse_resource):
    receiver = serve_in_thread(WebhookReceiver(warehouse_resource.get_warehouse(), "payments-secret"))
    try:
        body = json.dumps({"metadata": {"eventId": "e1", "eventType": "invoice.updated"}, "invoice": {"id": "00e1"}}).encode()
        response = httpx.post(f"{receiver.url}/webhooks/billcom", content=body,
                              headers={billcom_events.SIGNATURE_HEADER: billcom_events.sign("", body)}, timeout=10)
        assert response.status_code == 403
        assert warehouse_resource.get_warehouse().count(billcom_webhook_events) == 0
    finally:
        receiver.stop()


def test_a_notification_for_another_organisation_is_ignored(warehouse_resource):
    receiver = serve_in_thread(WebhookReceiver(
        warehouse_resource.get_warehouse(), "payments-secret", billcom_security_key=SECURITY_KEY,
        billcom_org_id="00801OURORG0000000001",
    ))
    try:
        invoice = {"id": "00e01OTHER", "customerId": "0cu01OTHER", "invoiceNumber": "X-1", "updatedTime": "2026-11-20T00:00:00.000+0000"}
        body = _notification("evt-other-org", invoice)  # signed with our key, but names another org
        response = httpx.post(f"{receiver.url}/webhooks/billcom", content=body,
                              headers={billcom_events.SIGNATURE_HEADER: billcom_events.sign(SECURITY_KEY, body)},
                              timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "ignored"
        assert warehouse_resource.get_warehouse().count(billcom_webhook_events) == 0
    finally:
        receiver.stop()
