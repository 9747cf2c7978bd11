"""The payments lane with the project database AND the Dagster instance on PostgreSQL (a fresh database).

SQLite forgives what PostgreSQL does not (RETURNING on conflict, boolean and timestamp comparisons,
identity columns, concurrent claims), so the exactly-once path is run here end to end as well.
Skipped only when CI is unset and no PostgreSQL answers, and it says so.
"""

from decimal import Decimal

import dagster as dg
import pytest

from agentcollect_pipeline.payments import billcom_events
from agentcollect_pipeline.payments.assets import build_paid_invoices_lane
from agentcollect_pipeline.payments.posting import PaymentPoster
from agentcollect_pipeline.payments.review import list_items, resolve_to_invoice
from agentcollect_pipeline.resources import PaymentSettings, WarehouseResource
from agentcollect_pipeline.sandboxes.server import serve_in_thread
from agentcollect_pipeline.warehouse.payments_schema import billcom_webhook_events, payment_events
from agentcollect_pipeline.webhooks.app import WebhookReceiver
from agentcollect_pipeline_tests.test_payments import SECRET, Lane, _due, _event, _invoice, _notes, _rerun

_, (_, billcom_invoice_events_sensor) = build_paid_invoices_lane("billcom")

pytestmark = pytest.mark.postgres

BILL_KEY = "bill-key-test-only"


@pytest.fixture
def pg_lane(billcom, postgres_url, ar_settings):
    warehouse_resource = WarehouseResource(database_url=postgres_url)
    resources = {
        "warehouse": warehouse_resource,
        "ar_source": billcom.ar_source(warehouse_resource),
        "ar_settings": ar_settings,
        "payment_settings": PaymentSettings(retry_after_minutes=0, max_attempts=3, reservation_lease_seconds=0),
    }
    warehouse = warehouse_resource.get_warehouse()
    server = serve_in_thread(WebhookReceiver(warehouse, SECRET, billcom_security_key=BILL_KEY))
    overrides = {"storage": {"postgres": {"postgres_url": postgres_url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        try:
            yield Lane(billcom=billcom, resources=resources, instance=instance, webhook_url=server.url)
        finally:
            server.stop()
            warehouse.engine.dispose()


def test_payments_end_to_end_on_postgres(pg_lane):
    lane = pg_lane
    assert lane.warehouse.engine.dialect.name == "postgresql"
    assert type(lane.instance.run_storage).__name__ == "PostgresRunStorage"
    invoice = _invoice(lane, "1250.00")
    other = _invoice(lane, "40.00")
    stored = lane.send(_event("evt_pg", invoice, "1000.00"))
    assert stored.json()["status"] == "stored"
    assert lane.send(_event("evt_pg", invoice, "1000.00")).json()["status"] == "duplicate"
    last = lane.send(_event("evt_pg_over", other, "50.00")).json()
    assert last["status"] == "stored"

    (request,) = lane.tick()
    # PostgreSQL's identity spends a number on the refused duplicate: sequences have gaps, order is kept.
    assert request.run_key == str(last["sequence"]) and last["sequence"] > stored.json()["sequence"]
    result = lane.execute(request)
    assert result.success
    (payment,) = lane.received_with_key("evt_pg")
    assert lane.ledger("evt_pg")["received_payment_id"] == payment["id"]
    assert _due(lane, invoice) == Decimal("250.00")
    materialization = lane.instance.fetch_materializations(dg.AssetKey("payments_posted"), limit=1).records[0]
    metadata = materialization.asset_materialization.metadata
    assert metadata["posted"].value == 1 and metadata["needs_review"].value == 1
    assert metadata["posted_amount"].value == {"USD": "1,000.00"}

    # Re-running, re-ticking: nothing more. The overpayment waits for a person.
    assert lane.execute(_rerun("webhook:evt_pg", "webhook:evt_pg_over")).success
    assert lane.tick() == []
    assert len(lane.received_with_key("evt_pg")) == 1
    (item,) = list_items(lane.warehouse)
    assert item["reason"] == "overpayment" and item["amount_cents"] == 5000

    source = lane.resources["ar_source"].get_source(lane.resources["ar_settings"])
    poster = PaymentPoster(lane.warehouse, source, policy=lane.resources["payment_settings"].policy())
    decision = resolve_to_invoice(poster, item["review_id"], invoice["id"], by="alice", why="belongs to the big one")
    assert decision.resolution == "posted"
    assert _due(lane, invoice) == Decimal("200.00")
    assert len(lane.received_with_key("evt_pg_over")) == 1
    assert list_items(lane.warehouse) == []
    assert len(_notes(lane, invoice["customerId"])) == 2
    assert lane.warehouse.count(payment_events) == 2


def test_billcom_notifications_on_postgres(pg_lane):
    import httpx

    lane = pg_lane
    body = b'{"metadata": {"eventId": "n-1", "eventType": "invoice.updated"}, "invoice": {"id": "00e1"}}'
    headers = {billcom_events.SIGNATURE_HEADER: billcom_events.sign(BILL_KEY, body)}
    url = f"{lane.webhook_url}/webhooks/billcom"
    first = httpx.post(url, content=body, headers=headers, timeout=10).json()
    assert first["status"] == "stored" and first["sequence"] >= 1
    assert httpx.post(url, content=body, headers=headers, timeout=10).json()["status"] == "duplicate"
    assert lane.warehouse.count(billcom_webhook_events) == 1
    with dg.build_sensor_context(instance=lane.instance, resources=lane.resources) as context:
        (request,) = billcom_invoice_events_sensor.evaluate_tick(context).run_requests
    assert request.run_key == f"billcom-events:{first['sequence']}"


def test_fee_ledger_and_paid_in_billcom_queries_on_postgres(postgres_url):
    from datetime import UTC, datetime

    from agentcollect_pipeline.payments import fees, paid_in_billcom
    from agentcollect_pipeline.warehouse import schema
    from agentcollect_pipeline_tests.test_fee_ledger import NOW, populate

    warehouse = WarehouseResource(database_url=postgres_url).get_warehouse()
    try:
        populate(warehouse)
        rows = fees.compute(warehouse, schema.ar_tables("billcom"), fees.FeeRule(Decimal("10"), 30, "UTC"), NOW)
        fees.rewrite(warehouse, rows)
        assert [(r["invoice_id"], r["fee_cents"]) for r in rows] == [("a", 4_000), ("g", 3_000), ("e", 2_000)]
        with warehouse.transaction() as conn:
            conn.execute(
                schema.billcom_invoices.update()
                .where(schema.billcom_invoices.c.invoice_id.in_(["a", "g"]))
                .values(updated_at=datetime(2026, 10, 5, 9, tzinfo=UTC))
            )
        # "a" was paid in Bill.com while its case was open; "g" was paid by our posting, so it is not.
        found = paid_in_billcom.detect(warehouse, schema.ar_tables("billcom"), timezone="UTC", now=NOW)
        assert [r["invoice_id"] for r in found] == ["a"]
        assert paid_in_billcom.detect(warehouse, schema.ar_tables("billcom"), timezone="UTC", now=NOW) == []
        assert [r["invoice_id"] for r in paid_in_billcom.unnoted(warehouse)] == ["a"]
    finally:
        warehouse.engine.dispose()
