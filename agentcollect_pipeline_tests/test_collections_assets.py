"""The collections assets materialized after the Bill.com assets, against the sandbox, into SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from agentcollect_pipeline.assets.ar_source import build_ar_source_assets
from agentcollect_pipeline.assets.collections import COLLECTIONS_ASSETS, COLLECTIONS_CHECKS
from agentcollect_pipeline.collection_policy import CollectionPolicyResource
from agentcollect_pipeline.resources import AlertWebhookResource
from agentcollect_pipeline.rules.eligibility import Reason
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import schema

AR_SOURCE_ASSETS, AR_SOURCE_CHECKS = build_ar_source_assets("billcom")

AS_OF = "2026-11-26"  # the sandbox clock's date (conftest.SANDBOX_START)
ASSET_NAMES = ("invoice_eligibility", "collection_cases", "ar_aging")


def _policy_file(tmp_path: Path, extra: str = "") -> CollectionPolicyResource:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "overdue_threshold_days: 30\n"
        "minimum_amount: {USD: 50.00, CAD: 50.00, EUR: 50.00, GBP: 40.00}\n"
        "accounting_classes: {Intercompany: 0ac01SANDBOXCLASS001}\n"
        "exclude: {accounting_classes: [Intercompany]}\n" + extra
    )
    return CollectionPolicyResource(path=str(path))


def _run(billcom, warehouse_resource, ar_settings, policy, *, with_sync=True, **kwargs):
    assets = [*COLLECTIONS_ASSETS, *COLLECTIONS_CHECKS]
    if with_sync:
        assets = [*AR_SOURCE_ASSETS, *AR_SOURCE_CHECKS, *assets]
    return dg.materialize(
        assets,
        resources={
            "ar_source": billcom.ar_source(warehouse_resource),
            "warehouse": warehouse_resource,
            "ar_settings": ar_settings,
            "alerts": AlertWebhookResource(),
            "collection_policy": policy,
        },
        run_config={"ops": {name: {"config": {"as_of": AS_OF}} for name in ASSET_NAMES}},
        selection=None if with_sync else dg.AssetSelection.groups("collections"),
        **kwargs,
    )


def _metadata(result, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def test_cycle_writes_eligibility_cases_and_aging_with_passing_checks(billcom, warehouse_resource, ar_settings, tmp_path):
    policy = _policy_file(tmp_path)
    result = _run(billcom, warehouse_resource, ar_settings, policy)
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["no_paid_or_void_invoice_is_eligible"]
    assert checks["eligible_invoices_have_a_reachable_customer"]
    assert checks["ar_aging_reconciles_to_open_invoices"]

    store = warehouse_resource.get_warehouse()
    invoices = store.read_frame(schema.billcom_invoices)
    eligibility = store.read_frame(cs.invoice_eligibility)
    assert len(eligibility) == len(invoices)
    assert eligibility["eligible"].sum() > 0
    merged = eligibility.merge(invoices, on="invoice_id", suffixes=("", "_src"))
    chosen = merged[merged["eligible"]]
    assert (chosen["amount_due_cents_src"] > 0).all() and chosen["is_active"].all()
    assert (chosen["days_overdue"] >= 30).all()
    assert (chosen["actg_class_id"] != "0ac01SANDBOXCLASS001").all()
    assert (chosen["payment_status"] != "4").all() and not chosen["has_auto_pay"].any()
    not_chosen = eligibility[~eligibility["eligible"]]
    assert not_chosen["reason"].notna().all()
    assert set(not_chosen["reason"]) <= {r.value for r in Reason}
    assert (not_chosen["reasons"].str.split(",").str[0] == not_chosen["reason"]).all()
    assert {"paid", "not_yet_overdue", "class_excluded", "payment_scheduled"} <= set(not_chosen["reason"])

    meta = _metadata(result, "invoice_eligibility")
    assert meta["dagster/row_count"] == len(invoices)
    assert meta["eligible_invoices"] == int(eligibility["eligible"].sum())
    assert meta["reason/paid"] == int((eligibility["reason"] == "paid").sum())
    assert "preview_eligible" in meta

    cases = store.read_frame(cs.collection_cases)
    assert len(cases) == chosen.groupby(["customer_id", "currency"]).ngroups
    assert cases["total_due_cents"].sum() == chosen["amount_due_cents"].sum()
    assert cases["invoice_count"].sum() == len(chosen)
    register = store.read_frame(cs.cases)
    assert set(register["case_id"]) == set(cases["case_id"]) and (register["status"] == "open").all()

    aging = store.read_frame(cs.ar_aging)
    open_rows = invoices[invoices["is_active"] & (invoices["amount_due_cents"] > 0)]
    totals = aging[aging["is_total"]].set_index("currency")["total_open_cents"]
    assert totals.to_dict() == open_rows.groupby("currency")["amount_due_cents"].sum().to_dict()
    history = store.read_frame(cs.ar_aging_history)
    assert len(history) == len(totals)
    usd = history.set_index("currency").loc["USD"]
    assert usd["dso_days"] > 0 and usd["sales_90d_cents"] > 0  # null only for a currency without recent sales
    assert _metadata(result, "ar_aging")["dso_days/USD"] == usd["dso_days"]
    for table in cs.STATE_TABLES[:4]:  # created now, empty until later issues fill them
        assert store.count(table) == 0


def test_case_ids_are_stable_then_close_and_reopen(billcom, warehouse_resource, ar_settings, tmp_path):
    policy = _policy_file(tmp_path)
    assert _run(billcom, warehouse_resource, ar_settings, policy).success
    store = warehouse_resource.get_warehouse()
    first = store.read_frame(cs.collection_cases).set_index(["customer_id", "currency"])["case_id"]

    # One customer pays everything; another gets a new overdue invoice that joins its open case.
    eligibility = store.read_frame(cs.invoice_eligibility)
    eligible = eligibility[eligibility["eligible"]]
    payer, payer_currency = first.index[0]
    joiner, joiner_currency = next(k for k in first.index if k[0] != payer)
    for invoice_id in eligible.loc[eligible["customer_id"] == payer, "invoice_id"]:
        billcom.sandbox.pay_online(invoice_id)
    template = next(i for i in billcom.sandbox.entities("Invoice") if i["id"] in set(eligible["invoice_id"])
                    and i["customerId"] == joiner)
    new_invoice = billcom.sandbox.add_invoice(customerId=joiner, amount=Decimal("900.00"), amountDue=Decimal("900.00"),
                                              dueDate="2026-09-01", invoiceNumber="INV-JOIN-1")
    assert template
    billcom.clock.advance(3600)

    assert _run(billcom, warehouse_resource, ar_settings, policy).success
    second = store.read_frame(cs.collection_cases).set_index(["customer_id", "currency"])
    register = store.read_frame(cs.cases).set_index("case_id")
    assert (payer, payer_currency) not in second.index
    assert register.loc[first[(payer, payer_currency)], "status"] == "closed"
    assert second.loc[(joiner, joiner_currency), "case_id"] == first[(joiner, joiner_currency)]
    assert new_invoice["id"] in second.loc[(joiner, joiner_currency), "invoice_ids"].split(",")
    unchanged = [k for k in first.index if k != (payer, payer_currency)]
    assert all(second.loc[k, "case_id"] == first[k] for k in unchanged if k in second.index)

    # The payer's next overdue invoice opens a new case, with a new id.
    billcom.sandbox.add_invoice(customerId=payer, amount=Decimal("700.00"), amountDue=Decimal("700.00"),
                                dueDate="2026-08-01", invoiceNumber="INV-REOPEN-1")
    billcom.clock.advance(3600)
    assert _run(billcom, warehouse_resource, ar_settings, policy).success
    third = store.read_frame(cs.collection_cases).set_index(["customer_id", "currency"])
    reopened = third.loc[(payer, payer_currency), "case_id"]
    assert reopened != first[(payer, payer_currency)]
    register = store.read_frame(cs.cases)
    assert (register["customer_id"] == payer).sum() == 2


def test_state_tables_drive_reasons(billcom, warehouse_resource, ar_settings, tmp_path):
    policy = _policy_file(tmp_path)
    assert _run(billcom, warehouse_resource, ar_settings, policy).success
    store = warehouse_resource.get_warehouse()
    eligible = store.read_frame(cs.invoice_eligibility, cs.invoice_eligibility.c.eligible)
    disputed, promised = eligible["invoice_id"].iloc[0], eligible["invoice_id"].iloc[1]
    now = datetime.now(UTC)
    with store.transaction() as conn:
        conn.execute(cs.disputes.insert(), [{"dispute_id": "d1", "invoice_id": disputed, "reason": "wrong qty",
                                            "opened_at": now, "closed_at": None}])
        row = eligible.iloc[1]
        conn.execute(cs.promises_to_pay.insert(), [{
            "promise_id": "p1", "invoice_id": promised, "customer_id": row["customer_id"],
            "promised_date": datetime(2026, 12, 5).date(), "amount_cents": int(row["amount_due_cents"]),
            "currency": row["currency"], "status": "pending", "created_at": now}])
    assert _run(billcom, warehouse_resource, ar_settings, policy, with_sync=False).success
    after = store.read_frame(cs.invoice_eligibility).set_index("invoice_id")
    assert after.loc[disputed, "reason"] == "disputed"
    assert after.loc[promised, "reason"] == "promise_to_pay_pending"


def test_blocking_check_stops_cases_when_a_paid_invoice_is_marked_eligible(
    billcom, warehouse_resource, ar_settings, tmp_path, monkeypatch
):
    """If the rules ever let a paid invoice through, the check fails and collection_cases does not run."""
    from agentcollect_pipeline.assets import collections as module

    real = module.evaluate_eligibility

    def broken(*args, **kwargs):
        out = real(*args, **kwargs)
        return out.assign(eligible=True, reason=pd.Categorical([None] * len(out), categories=out["reason"].cat.categories))

    monkeypatch.setattr(module, "evaluate_eligibility", broken)
    result = _run(billcom, warehouse_resource, ar_settings, _policy_file(tmp_path), raise_on_error=False)
    assert not result.success
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert "no_paid_or_void_invoice_is_eligible" in failed
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "invoice_eligibility" in materialized and "collection_cases" not in materialized


def test_snapshot_tables_keep_finance_views(billcom, warehouse_resource, ar_settings, tmp_path):
    policy = _policy_file(tmp_path)
    assert _run(billcom, warehouse_resource, ar_settings, policy).success
    store = warehouse_resource.get_warehouse()
    with store.transaction() as conn:
        conn.execute(sa.text("create view eligible_due as select currency, sum(amount_due_cents) due "
                             "from invoice_eligibility where eligible group by currency"))
    assert _run(billcom, warehouse_resource, ar_settings, policy, with_sync=False).success
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from eligible_due")).scalar_one() > 0
