"""The same collection scenario on each AR source of truth, through the code location's own definitions.

sync -> eligibility -> outreach -> payment event -> posted once at the source -> note -> collection stopped,
on Bill.com, QuickBooks Online and NetSuite: real clients over loopback HTTP against each sandbox, resources
bound from environment variables exactly as `dagster dev` would bind them.
"""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from agentcollect_pipeline import demo
from agentcollect_pipeline.money import from_minor_units
from agentcollect_pipeline.payments.posting import posting_key
from agentcollect_pipeline.resources import _warehouse
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.payments_schema import payments_posted

SOURCES = ["billcom", "qbo", "netsuite"]
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture
def clean_environment(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in demo.DEMO_VARIABLES:
        monkeypatch.setenv(name, "")  # recorded, so what the services set is undone after the test
    monkeypatch.delenv("AGENTCOLLECT_POLICY_PATH", raising=False)
    monkeypatch.setenv("AGENTCOLLECT_HOME", str(tmp_path / ".agentcollect"))
    return tmp_path


def _run(defs: dg.Definitions, job: str, instance, **run_config) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, run_config={**QUIET_LOGS, **run_config}
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def _eligible(store, invoice_id: str) -> bool:
    with store.engine.connect() as conn:
        return bool(conn.execute(
            sa.select(cs.invoice_eligibility.c.eligible).where(cs.invoice_eligibility.c.invoice_id == invoice_id)
        ).scalar_one())


@pytest.mark.parametrize("kind", SOURCES)
def test_the_collection_scenario_holds_on_every_ar_source(kind, clean_environment):
    tmp_path = clean_environment
    database_url = f"sqlite:///{tmp_path / 'agentcollect.sqlite'}"
    with demo.services(invoices=300, customers=60, seed=7, database_url=database_url,
                       dagster_home=tmp_path, ar_source=kind) as running, dg.instance_for_test() as instance:
        from agentcollect_pipeline.definitions import build_definitions

        defs = build_definitions()
        store = _warehouse(database_url)
        tables = schema.ar_tables(kind)

        # Lineage: only this source's synced assets exist, and they feed the rules and payments.
        graph = defs.resolve_asset_graph()
        keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
        others = {f"{other}_invoices" for other in SOURCES if other != kind}
        assert f"{kind}_invoices" in keys and not keys & others
        assert dg.AssetKey(f"{kind}_invoices") in graph.get(dg.AssetKey("invoice_eligibility")).parent_keys
        assert dg.AssetKey(f"{kind}_invoices") in graph.get(dg.AssetKey("payments_posted")).parent_keys

        # 1. Sync and rules.
        cycle = _run(defs, "collection_cycle", instance)
        assert all(c.passed for c in cycle.get_asset_check_evaluations())
        assert store.count(tables.invoices) > 0 and store.count(tables.customers) > 0
        assert store.count(cs.invoice_eligibility, cs.invoice_eligibility.c.eligible) > 0

        # 2. Outreach: the first wave at the next 10:00 in the organisation's zone.
        now = demo.next_local_ten("America/New_York").astimezone(UTC).isoformat()
        config = {"config": {"now": now}}
        _run(defs, "send_due_outreach", instance, ops={"outreach_plan": config, "outreach_attempts": config})
        attempts = store.read_frame(os_.outreach_attempts)
        assert len(attempts) > 0 and len(running.sendgrid.mails()) == (attempts["channel"] == "email").sum()

        # 3. A payment of the whole amount due on an invoice we just contacted about.
        invoice = demo._pick_invoice(store, kind)
        assert invoice is not None
        amount = from_minor_units(invoice["amount_due_cents"], invoice["currency"])
        assert running.ar.amount_due(invoice["invoice_id"]) == amount
        event = {
            "event_id": f"e2e-{kind}",
            "occurred_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "amount": str(amount),
            "currency": invoice["currency"],
            "invoice_id": invoice["invoice_id"],
            "method": "ach",
            "reference": "E2E ACH TRACE",
            "payer": "E2E payer",
        }
        demo.signed_post(running.urls["webhooks"], running.secret, event)
        runs = demo.run_payment_sensor_once(defs, instance, store)
        assert runs and all(r.success for r in runs)

        key = posting_key("webhook", event["event_id"])
        (payment,) = running.ar.payments_with_reference(key)
        assert payment["amount"] == amount and invoice["invoice_id"] in payment["invoice_ids"]
        assert running.ar.amount_due(invoice["invoice_id"]) == Decimal(0)
        notes = [n for n in running.ar.notes(invoice["customer_id"]) if key in n]
        assert len(notes) == 1 and running.ar.display_name in notes[0]

        # 4. Duplicates: the same webhook again, and the same run executed again, post nothing.
        demo.signed_post(running.urls["webhooks"], running.secret, event)
        demo.run_payment_sensor_once(defs, instance, store)
        # The run that posted, executed again as a re-execution from the UI would.
        again = defs.resolve_job_def("post_payment").execute_in_process(
            instance=instance, run_config={**runs[0].dagster_run.run_config}, raise_on_error=False)
        assert again.success
        assert len(running.ar.payments_with_reference(key)) == 1
        assert len([n for n in running.ar.notes(invoice["customer_id"]) if key in n]) == 1
        with store.engine.connect() as conn:
            ledger = conn.execute(sa.select(payments_posted.c.status)).scalars().all()
        assert ledger == ["posted"]

        # 5. Collection stopped: post_payment stored the invoice as paid, so the next cycle's rules drop it
        # and nobody is contacted about it again.
        assert _eligible(store, invoice["invoice_id"])  # the snapshot of the cycle before the payment
        _run(defs, "collection_cycle", instance)
        assert not _eligible(store, invoice["invoice_id"])
        plan = store.read_frame(os_.outreach_plan)
        assert not plan["invoice_ids"].fillna("").str.contains(invoice["invoice_id"]).any()
