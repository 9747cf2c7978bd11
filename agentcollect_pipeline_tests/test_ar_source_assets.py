"""The ar_source assets materialized against the Bill.com sandbox into a real SQLite project database."""

from __future__ import annotations

import math
from decimal import Decimal

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from agentcollect_pipeline.assets.ar_source import build_ar_source_assets
from agentcollect_pipeline.resources import AlertWebhookResource, ARSyncSettings
from agentcollect_pipeline.warehouse import schema

AR_SOURCE_ASSETS, AR_SOURCE_CHECKS = build_ar_source_assets("billcom")


def _resources(billcom, warehouse_resource, ar_settings):
    return {
        "ar_source": billcom.ar_source(warehouse_resource),
        "warehouse": warehouse_resource,
        "ar_settings": ar_settings,
        "alerts": AlertWebhookResource(),
    }


def _materialize(billcom, warehouse_resource, ar_settings, **kwargs):
    return dg.materialize(
        [*AR_SOURCE_ASSETS, *AR_SOURCE_CHECKS],
        resources=_resources(billcom, warehouse_resource, ar_settings),
        **kwargs,
    )


def _metadata(result, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def _cents(value) -> int:
    return int(Decimal(str(value)) * 100)


def test_first_sync_stores_every_record_in_cents_with_validation(billcom, warehouse_resource, ar_settings):
    result = _materialize(billcom, warehouse_resource, ar_settings)
    assert result.success
    warehouse = warehouse_resource.get_warehouse()

    invoices = warehouse.read_frame(schema.billcom_invoices)
    raw_invoices = billcom.sandbox.entities("Invoice")
    assert len(invoices) == len(raw_invoices)
    assert invoices["amount_due_cents"].dtype == "Int64"
    assert not any(pd.api.types.is_float_dtype(t) for t in invoices.dtypes)
    by_id = invoices.set_index("invoice_id")
    for raw in raw_invoices:
        row = by_id.loc[raw["id"]]
        assert row["amount_due_cents"] == _cents(raw["amountDue"])
        assert row["is_active"] == (raw["isActive"] == "1")

    customers = warehouse.read_frame(schema.billcom_customers)
    assert len(customers) == len(billcom.sandbox.entities("Customer"))
    assert set(customers["currency"]) <= {"USD", "CAD", "EUR", "GBP"}
    contacts = warehouse.read_frame(schema.billcom_customer_contacts)
    assert len(contacts) == len(billcom.sandbox.entities("CustomerContact"))
    payments = warehouse.read_frame(schema.billcom_received_payments)
    assert len(payments) == len(billcom.sandbox.entities("ReceivedPay"))
    lines = warehouse.read_frame(schema.billcom_received_payment_lines)
    assert len(lines) == sum(len(p.get("invoicePays") or []) for p in billcom.sandbox.entities("ReceivedPay"))

    # The seeded bad records are kept, flagged, and say which field is wrong.
    invalid = invoices[invoices["validation_status"] == "invalid"]
    assert len(invalid) > 0
    assert invalid["validation_errors"].str.contains(r"amount|customerId").all()
    assert (customers["validation_status"] == "warning").any()

    meta = _metadata(result, "billcom_invoices")
    assert meta["dagster/row_count"] == len(raw_invoices)
    assert meta["sync_mode"] == "full"
    assert meta["api_calls"] >= math.ceil(len(raw_invoices) / 999)
    assert meta["high_water_mark"]
    preview = _metadata(result, "billcom_customers")["preview_changed_rows"]
    emails = [c["email"] for c in billcom.sandbox.entities("Customer") if c.get("email")]
    assert not any(email in preview for email in emails)  # masked for anyone with UI access

    checks = result.get_asset_check_evaluations()
    assert len(checks) == 4 and all(c.passed for c in checks)


def test_incremental_sync_reads_only_what_changed(billcom, warehouse_resource, ar_settings):
    assert _materialize(billcom, warehouse_resource, ar_settings).success
    billcom.clock.advance(4 * 3600)
    changed = set(billcom.sandbox.mutate(entity="Invoice", count=5, seed=11))
    open_invoice = next(
        i for i in billcom.sandbox.entities("Invoice")
        if i["isActive"] == "1" and i["paymentStatus"] == "1" and i["id"] not in changed
        and any(c["id"] == i["customerId"] for c in billcom.sandbox.entities("Customer"))
    )
    billcom.sandbox.pay_online(open_invoice["id"])
    changed.add(open_invoice["id"])
    billcom.sandbox.reset_stats()

    result = _materialize(billcom, warehouse_resource, ar_settings)
    assert result.success
    meta = _metadata(result, "billcom_invoices")
    assert meta["sync_mode"] == "incremental"
    assert meta["rows_changed"] == len(changed)
    assert billcom.sandbox.stats["calls"]["List/Invoice"] <= math.ceil(len(changed) / 999) + 2
    assert _metadata(result, "billcom_received_payments")["rows_changed"] == 1

    warehouse = warehouse_resource.get_warehouse()
    paid = warehouse.read_frame(schema.billcom_invoices, schema.billcom_invoices.c.invoice_id == open_invoice["id"])
    assert paid["amount_due_cents"].iloc[0] == 0
    online = warehouse.read_frame(schema.billcom_received_payments, schema.billcom_received_payments.c.is_online)
    assert len(online) >= 1
    line = warehouse.read_frame(
        schema.billcom_received_payment_lines,
        schema.billcom_received_payment_lines.c.invoice_id == open_invoice["id"],
    )
    assert line["amount_cents"].sum() == _cents(open_invoice["amountDue"])


def test_nothing_changed_means_no_rows_written_and_minimal_calls(billcom, warehouse_resource, ar_settings):
    assert _materialize(billcom, warehouse_resource, ar_settings).success
    billcom.sandbox.reset_stats()
    result = _materialize(billcom, warehouse_resource, ar_settings)
    assert result.success
    for asset in AR_SOURCE_ASSETS:
        assert _metadata(result, asset.key.path[-1])["rows_changed"] == 0
    calls = billcom.sandbox.stats["calls"]
    assert calls.get("Login", 0) == 0  # the stored session is still fresh
    for entity in ("Invoice", "Customer", "CustomerContact", "ReceivedPay"):
        assert calls[f"List/{entity}"] <= 3


def test_blocking_check_fails_the_run_when_too_many_records_are_invalid(billcom, warehouse_resource):
    strict = ARSyncSettings(org_currency="USD", max_invalid_share=0.0)
    result = _materialize(billcom, warehouse_resource, strict, raise_on_error=False)
    assert not result.success
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert "billcom_invoices_invalid_share_within_bound" in failed


def test_tables_are_never_dropped_so_finance_views_survive(billcom, warehouse_resource, ar_settings):
    assert _materialize(billcom, warehouse_resource, ar_settings).success
    warehouse = warehouse_resource.get_warehouse()
    with warehouse.transaction() as conn:
        conn.execute(sa.text("create view overdue_by_customer as select customer_id, sum(amount_due_cents) due "
                             "from billcom_invoices group by customer_id"))
    billcom.clock.advance(3600)
    billcom.sandbox.mutate(entity="Invoice", count=3, seed=5)
    assert _materialize(billcom, warehouse_resource, ar_settings, run_config={
        "ops": {a.key.path[-1]: {"config": {"full_refresh": True}} for a in AR_SOURCE_ASSETS}
    }).success
    with warehouse.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from overdue_by_customer")).scalar_one() > 0
