"""Payments lane end to end: webhook/CSV -> payment_events -> the real sensor -> post_payment -> Bill.com sandbox.

The sensor is evaluated with build_sensor_context and its run requests are executed in process, so the
run keys, run config and ops are the ones the daemon would use. The invariant every test checks is the
product's: one event, at most one ReceivedPay carrying its key, whatever retries, crashes or duplicates.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from agentcollect_pipeline.ar_source.billcom import BillComARSource
from agentcollect_pipeline.payments.intake import SIGNATURE_HEADER, import_csv, sign
from agentcollect_pipeline.payments.job import post_payment
from agentcollect_pipeline.payments.posting import posting_key
from agentcollect_pipeline.payments.sensor import payment_events_sensor
from agentcollect_pipeline.resources import PaymentSettings
from agentcollect_pipeline.sandboxes.server import serve_in_thread
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.payments_schema import (
    customer_notes,
    needs_review,
    payment_events,
    payments_posted,
)
from agentcollect_pipeline.webhooks.app import WebhookReceiver

SECRET = "whsec-test-only-not-a-real-secret"


@dataclass
class Lane:
    billcom: object
    resources: dict
    instance: dg.DagsterInstance
    webhook_url: str
    cursor: str | None = None
    results: list = field(default_factory=list)

    @property
    def warehouse(self):
        return self.resources["warehouse"].get_warehouse()

    def send(self, body: dict | bytes, *, secret: str = SECRET, timestamp: int | None = None,
             header: str | None = "auto") -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if header == "auto":
            headers[SIGNATURE_HEADER] = sign(secret, raw, int(time.time()) if timestamp is None else timestamp)
        elif header is not None:
            headers[SIGNATURE_HEADER] = header
        return httpx.post(f"{self.webhook_url}/webhooks/payments", content=raw, headers=headers, timeout=10)

    def tick(self) -> list[dg.RunRequest]:
        with dg.build_sensor_context(instance=self.instance, resources=self.resources, cursor=self.cursor) as context:
            data = payment_events_sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursor = data.cursor
        return list(data.run_requests or [])

    def execute(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        dg.validate_run_config(post_payment, request.run_config)
        result = post_payment.execute_in_process(
            run_config=request.run_config,
            tags={**request.tags, "dagster/run_key": request.run_key},
            instance=self.instance,
            resources=self.resources,
            raise_on_error=False,
        )
        self.results.append(result)
        return result

    def tick_and_run(self) -> list[dg.ExecuteInProcessResult]:
        return [self.execute(r) for r in self.tick()]

    def ledger(self, event_id: str, source: str = "webhook") -> dict | None:
        with self.warehouse.engine.connect() as conn:
            row = conn.execute(
                sa.select(payments_posted).where(payments_posted.c.posting_key == posting_key(source, event_id))
            ).first()
        return row._asdict() if row else None

    def reviews(self) -> list[dict]:
        with self.warehouse.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(sa.select(needs_review))]

    def received_with_key(self, event_id: str, source: str = "webhook") -> list[dict]:
        key = posting_key(source, event_id)
        return [p for p in self.billcom.sandbox.entities("ReceivedPay") if p["refNumber"] == key]


@pytest.fixture
def lane(billcom, warehouse_resource, ar_settings):
    yield from make_lane(billcom, warehouse_resource, ar_settings)


def make_lane(billcom, warehouse_resource, ar_settings):
    """The `lane` fixture's body, for other test modules' fixtures to reuse."""
    settings = PaymentSettings(batch_size=50, retry_after_minutes=0, max_attempts=3, reservation_lease_seconds=0)
    resources = {
        "warehouse": warehouse_resource,
        "ar_source": billcom.ar_source(warehouse_resource),
        "ar_settings": ar_settings,
        "payment_settings": settings,
    }
    receiver = WebhookReceiver(warehouse_resource.get_warehouse(), SECRET)
    server = serve_in_thread(receiver)
    with dg.instance_for_test() as instance:
        try:
            yield Lane(billcom=billcom, resources=resources, instance=instance, webhook_url=server.url)
        finally:
            server.stop()


def _invoice(lane: Lane, amount: str = "1250.00", **fields) -> dict:
    customer = lane.billcom.sandbox.entities("Customer")[0]["id"]
    return lane.billcom.sandbox.add_invoice(customerId=customer, amount=Decimal(amount), **fields)


def _event(event_id: str, invoice: dict, amount: str, **overrides) -> dict:
    body = {
        "event_id": event_id,
        "occurred_at": "2026-11-26T14:00:00Z",
        "amount": amount,
        "currency": "USD",
        "invoice_id": invoice["id"],
        "method": "ach",
        "reference": "ACH TRACE 0000123456789",
        "payer": "Acme Corp",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def _events_of(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"]["validate_payment_events"]["config"]["events"]


def _rerun(*refs: str) -> dg.RunRequest:
    return dg.RunRequest(run_key="manual", run_config={"ops": {"validate_payment_events": {"config": {"events": list(refs)}}}})


def _due(lane: Lane, invoice: dict) -> Decimal:
    return Decimal(str(lane.billcom.sandbox.get("Invoice", invoice["id"])["amountDue"]))


def _notes(lane: Lane, customer_id: str) -> list[str]:
    return [m["message"] for m in lane.billcom.sandbox.entities("Message") if m["objectId"] == customer_id]


# -- intake ---------------------------------------------------------------------------------------------


def test_webhook_event_is_posted_noted_and_the_invoice_refreshed(lane):
    invoice = _invoice(lane)
    response = lane.send(_event("evt_1", invoice, "1250.00"))
    assert response.status_code == 200 and response.json()["status"] == "stored"

    (request,) = lane.tick()
    assert request.run_key == str(response.json()["sequence"])
    assert _events_of(request) == ["webhook:evt_1"]
    result = lane.execute(request)
    assert result.success

    (payment,) = lane.received_with_key("evt_1")
    assert Decimal(str(payment["amount"])) == Decimal("1250.00")
    assert payment["invoicePays"][0]["invoiceId"] == invoice["id"]
    assert _due(lane, invoice) == 0
    ledger = lane.ledger("evt_1")
    assert ledger["status"] == "posted" and ledger["received_payment_id"] == payment["id"]
    # Eligibility reads billcom_invoices: it must see the invoice paid now, not at the next sync.
    with lane.warehouse.engine.connect() as conn:
        row = conn.execute(sa.select(schema.billcom_invoices).where(schema.billcom_invoices.c.invoice_id == invoice["id"])).one()
    assert row.amount_due_cents == 0 and row.payment_status == "0"
    (note,) = _notes(lane, invoice["customerId"])
    assert note.startswith(f"AgentCollect: payment of USD 1,250.00 received 2026-11-26 for {invoice['invoiceNumber']}")
    assert "collection stopped" in note
    assert "0000123456789" not in note  # the payer's bank reference never reaches a note
    assert lane.results[0].dagster_run.tags["dagster/run_key"] == request.run_key

    # The next tick has nothing new; re-running the same request posts and notes nothing more.
    assert lane.tick() == []
    assert lane.execute(request).success
    assert len(lane.received_with_key("evt_1")) == 1
    assert len(_notes(lane, invoice["customerId"])) == 1


def test_redelivered_webhooks_and_duplicate_events_post_once(lane):
    invoice = _invoice(lane, "500.00")
    body = _event("evt_dup", invoice, "200.00")
    assert lane.send(body).json()["status"] == "stored"
    assert lane.send(body).json()["status"] == "duplicate"
    lane.tick_and_run()
    assert lane.send(body).json()["status"] == "duplicate"  # re-delivered after it was posted
    assert lane.tick() == []
    # The same run config submitted twice more (e.g. a manual re-execution) changes nothing.
    assert lane.execute(_rerun("webhook:evt_dup", "webhook:evt_dup")).success
    assert len(lane.received_with_key("evt_dup")) == 1
    with lane.warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(payment_events)).scalar_one() == 1


def test_partial_payment_posts_its_amount_and_leaves_the_rest_due(lane):
    invoice = _invoice(lane, "1000.00")
    lane.send(_event("evt_part", invoice, "400.00", invoice_id=None, invoice_number=invoice["invoiceNumber"],
                     customer_id=invoice["customerId"]))
    (result,) = lane.tick_and_run()
    assert result.success
    assert _due(lane, invoice) == Decimal("600.00")
    assert lane.ledger("evt_part")["status"] == "posted"
    (note,) = _notes(lane, invoice["customerId"])
    assert "USD 600.00 remains due" in note


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("overpayment", "overpayment"),
        ("currency", "currency_mismatch"),
        ("paid", "invoice_already_paid"),
        ("unknown", "unknown_invoice"),
        ("number_unknown", "unknown_invoice"),
    ],
)
def test_events_that_need_a_person_post_nothing(lane, case, reason):
    invoice = _invoice(lane, "100.00")
    body = _event("evt_r", invoice, "100.00")
    if case == "overpayment":
        body["amount"] = "100.01"
    elif case == "currency":
        body.update(currency="EUR")
    elif case == "paid":
        lane.billcom.sandbox.update_invoice(invoice["id"], amountDue=Decimal("0"))
    elif case == "unknown":
        body["invoice_id"] = "00e00000000NOSUCHINV"
    else:
        body.pop("invoice_id")
        body.update(invoice_number="NO-SUCH-NUMBER", customer_id=invoice["customerId"])
    before = len(lane.billcom.sandbox.entities("ReceivedPay"))
    assert lane.send(body).status_code == 200
    (result,) = lane.tick_and_run()
    assert result.success
    assert len(lane.billcom.sandbox.entities("ReceivedPay")) == before
    (review,) = lane.reviews()
    assert review["reason"] == reason and review["event_id"] == "evt_r"
    assert lane.ledger("evt_r")["status"] == "needs_review"
    assert lane.billcom.sandbox.stats["calls"].get("RecordARPayment", 0) == 0
    # Decided once: later ticks do not request it again.
    assert lane.tick() == []


def test_money_already_in_billcom_is_recorded_not_posted_again(lane):
    invoice = _invoice(lane, "300.00")
    online = lane.billcom.sandbox.pay_online(invoice["id"])  # paid through Bill.com's own link
    lane.send(_event("evt_online", invoice, "300.00"))
    (result,) = lane.tick_and_run()
    assert result.success
    ledger = lane.ledger("evt_online")
    assert ledger["status"] == "already_recorded" and ledger["received_payment_id"] == online["id"]
    assert lane.received_with_key("evt_online") == []
    assert lane.billcom.sandbox.stats["calls"].get("RecordARPayment", 0) == 0
    (note,) = _notes(lane, invoice["customerId"])
    assert "already recorded in Bill.com" in note


# -- exactly once under failure ---------------------------------------------------------------------------


def test_crash_before_the_post_is_retried_by_the_sensor_and_posts_once(lane, monkeypatch):
    invoice = _invoice(lane, "80.00")
    original = BillComARSource.record_payment
    crashes = {"left": 1}

    def crash_first(self, payment):
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("process killed before the request left")
        return original(self, payment)

    monkeypatch.setattr(BillComARSource, "record_payment", crash_first)
    lane.send(_event("evt_crash_before", invoice, "80.00"))
    (first,) = lane.tick_and_run()
    assert not first.success
    assert lane.ledger("evt_crash_before")["status"] == "reserved"
    assert lane.received_with_key("evt_crash_before") == []

    (retry,) = lane.tick()
    assert retry.run_key == "webhook:evt_crash_before:2"  # a new key: Dagster never re-runs a failed key
    assert lane.execute(retry).success
    assert len(lane.received_with_key("evt_crash_before")) == 1
    assert lane.tick() == []


def test_crash_after_the_post_landed_is_reconciled_by_its_key_not_reposted(lane, monkeypatch):
    invoice = _invoice(lane, "90.00")
    original = BillComARSource.record_payment
    crashes = {"left": 1}

    def post_then_crash(self, payment):
        received = original(self, payment)
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("process killed after Bill.com recorded the payment")
        return received

    monkeypatch.setattr(BillComARSource, "record_payment", post_then_crash)
    lane.send(_event("evt_crash_after", invoice, "90.00"))
    (first,) = lane.tick_and_run()
    assert not first.success
    assert len(lane.received_with_key("evt_crash_after")) == 1

    (retry,) = lane.tick()
    assert lane.execute(retry).success
    (payment,) = lane.received_with_key("evt_crash_after")
    ledger = lane.ledger("evt_crash_after")
    assert ledger["status"] == "posted" and ledger["received_payment_id"] == payment["id"]
    assert lane.billcom.sandbox.stats["calls"]["RecordARPayment"] == 1
    assert len(_notes(lane, invoice["customerId"])) == 1


@pytest.mark.parametrize("fault", ["delay", "http_500"])
def test_a_timed_out_post_is_looked_up_never_resent(billcom, warehouse_resource, ar_settings, fault):
    settings = PaymentSettings(retry_after_minutes=0, reservation_lease_seconds=0)
    resources = {
        "warehouse": warehouse_resource,
        "ar_source": billcom.ar_source(warehouse_resource, read_timeout_s=0.5),
        "ar_settings": ar_settings,
        "payment_settings": settings,
    }
    with dg.instance_for_test() as instance:
        lane = Lane(billcom=billcom, resources=resources, instance=instance, webhook_url="")
        invoice = _invoice(lane, "70.00")
        from agentcollect_pipeline.payments.intake import normalise_event, store_events

        store_events(lane.warehouse, "webhook", [(normalise_event(_event("evt_timeout", invoice, "70.00")), "{}")])
        billcom.sandbox.inject(fault, path="RecordARPayment", times=1, delay_s=1.5, after_processing=True)
        (result,) = lane.tick_and_run()
        assert result.success
        assert billcom.sandbox.stats["calls"]["RecordARPayment"] == 1
        (payment,) = lane.received_with_key("evt_timeout")
        assert lane.ledger("evt_timeout")["received_payment_id"] == payment["id"]
        # Re-running the same run afterwards changes nothing.
        assert lane.execute(_rerun("webhook:evt_timeout")).success
        assert len(lane.received_with_key("evt_timeout")) == 1
        assert billcom.sandbox.stats["calls"]["RecordARPayment"] == 1


def test_events_that_keep_failing_are_retried_a_bounded_number_of_times(lane, monkeypatch):
    invoice = _invoice(lane, "60.00")

    def always_crash(self, payment):
        raise RuntimeError("Bill.com unreachable")

    monkeypatch.setattr(BillComARSource, "record_payment", always_crash)
    lane.send(_event("evt_stuck", invoice, "60.00"))
    keys = []
    for _ in range(6):
        for request in lane.tick():
            keys.append(request.run_key)
            lane.execute(request)
    assert keys[1:] == ["webhook:evt_stuck:2", "webhook:evt_stuck:3"]  # max_attempts=3
    (review,) = lane.reviews()
    assert review["reason"] == "posting_failed"
    assert lane.received_with_key("evt_stuck") == []


def test_sensor_batches_new_events_with_the_last_sequence_as_run_key(lane):
    lane.resources["payment_settings"] = PaymentSettings(batch_size=2, retry_after_minutes=60)
    invoice = _invoice(lane, "900.00")
    sequences = [lane.send(_event(f"evt_b{i}", invoice, "100.00")).json()["sequence"] for i in range(3)]
    first = lane.tick()
    assert [r.run_key for r in first] == [str(sequences[1])]
    assert _events_of(first[0]) == ["webhook:evt_b0", "webhook:evt_b1"]
    second = lane.tick()
    assert [r.run_key for r in second] == [str(sequences[2])]
    assert lane.tick() == []
    for request in first + second:
        assert lane.execute(request).success
    assert _due(lane, invoice) == Decimal("600.00")
    assert all(len(lane.received_with_key(f"evt_b{i}")) == 1 for i in range(3))


# -- the receiver refuses what it cannot trust --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wrong_secret", "missing", "stale", "tampered", "garbage"])
def test_bad_signatures_get_403_and_store_nothing(lane, kind):
    invoice = _invoice(lane)
    body = _event("evt_forged", invoice, "1250.00")
    raw = json.dumps(body).encode()
    if kind == "wrong_secret":
        response = lane.send(body, secret="not-the-secret")
    elif kind == "missing":
        response = lane.send(body, header=None)
    elif kind == "stale":
        response = lane.send(body, timestamp=int(time.time()) - 301)
    elif kind == "tampered":
        header = sign(SECRET, raw, int(time.time()))
        response = lane.send(raw.replace(b"1250.00", b"9250.00"), header=header)
    else:
        response = lane.send(body, header="t=abc,v1=zz")
    assert response.status_code == 403
    assert "signature" in response.json()["error"]
    assert lane.warehouse.count(payment_events) == 0
    assert lane.tick() == []


def test_signed_but_invalid_event_is_refused_with_its_problems(lane):
    response = lane.send({"event_id": "evt_bad", "occurred_at": "yesterday", "amount": "12.345", "currency": "USD",
                          "invoice_id": "00e1"})
    assert response.status_code == 422
    assert "occurred_at" in response.json()["problems"] and "amount" in response.json()["problems"]
    assert lane.warehouse.count(payment_events) == 0


# -- CSV import -----------------------------------------------------------------------------------------------

CSV_HEADER = "event_id,paid_at,amount,currency,invoice_number,customer_id,method,reference\n"


def test_csv_with_a_bad_row_imports_nothing_and_names_the_line(lane, tmp_path: Path):
    invoice = _invoice(lane, "100.00")
    good = f"lb-1,2026-11-25,40.00,USD,{invoice['invoiceNumber']},{invoice['customerId']},check,CHK 1001\n"
    bad = f"lb-2,2026-11-25,forty,USD,{invoice['invoiceNumber']},{invoice['customerId']},check,CHK 1002\n"
    path = tmp_path / "lockbox.csv"
    path.write_text(CSV_HEADER + good + bad)
    report = import_csv(lane.warehouse, path)
    assert report.stored == 0 and len(report.errors) == 1
    assert report.errors[0].startswith("line 3: amount")
    assert lane.warehouse.count(payment_events) == 0

    path.write_text(CSV_HEADER + good)
    assert import_csv(lane.warehouse, path).stored == 1
    assert import_csv(lane.warehouse, path).duplicates == 1  # the same file again stores nothing new
    (result,) = lane.tick_and_run()
    assert result.success
    assert len(lane.received_with_key("lb-1", source="csv")) == 1
    assert _due(lane, invoice) == Decimal("60.00")


def test_cli_payments_import_reports_errors_by_line(tmp_path, monkeypatch, capsys):
    from agentcollect_pipeline.cli import main

    monkeypatch.setenv("AGENTCOLLECT_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite'}")
    path = tmp_path / "bank.csv"
    path.write_text(CSV_HEADER + "x-1,2026-11-25,10.00,USD,INV-1,0cu1,wire,\n")
    assert main(["payments", "import", str(path)]) == 1
    assert "line 2: method" in capsys.readouterr().err
    path.write_text(CSV_HEADER + "x-1,2026-11-25,10.00,USD,INV-1,0cu1,ach,\n")
    assert main(["payments", "import", str(path)]) == 0
    assert "1 payment event(s) stored" in capsys.readouterr().out


def test_notes_are_written_once_per_fact(lane):
    from agentcollect_pipeline.payments.posting import PaymentPoster

    customer = lane.billcom.sandbox.entities("Customer")[0]["id"]
    source = lane.resources["ar_source"].get_source(lane.resources["ar_settings"])
    poster = PaymentPoster(lane.warehouse, source)
    first = poster.write_note("dispute:INV-9", customer, "AgentCollect: dispute opened on INV-9")
    second = poster.write_note("dispute:INV-9", customer, "AgentCollect: dispute opened on INV-9")
    assert first == second
    assert _notes(lane, customer).count("AgentCollect: dispute opened on INV-9") == 1
    with lane.warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(customer_notes.c.status)).scalar_one() == "written"



def test_sensor_waits_while_its_last_run_has_not_started(lane):
    """Back-pressure: events arriving while a requested run is still queued join the next, larger batch."""
    lane.resources["payment_settings"] = PaymentSettings(retry_after_minutes=60)
    invoice = _invoice(lane, "900.00")
    lane.send(_event("evt_q1", invoice, "100.00"))
    (first,) = lane.tick()
    queued = lane.instance.create_run_for_job(
        job_def=post_payment,
        run_config=first.run_config,
        tags={"dagster/sensor_name": "payment_events_sensor", "dagster/run_key": first.run_key},
        status=dg.DagsterRunStatus.NOT_STARTED,  # as a run is before the queue daemon launches it
    )
    lane.send(_event("evt_q2", invoice, "100.00"))
    lane.send(_event("evt_q3", invoice, "100.00"))
    assert lane.tick() == []
    lane.instance.report_run_canceled(queued)  # it left the queue (here cancelled; usually started)
    (second,) = lane.tick()
    assert _events_of(second) == ["webhook:evt_q2", "webhook:evt_q3"]
