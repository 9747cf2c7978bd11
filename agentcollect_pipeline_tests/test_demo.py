"""`make demo` in process, small: the cycle, a first outreach wave, one payment posted once with its note.

Everything it writes goes to tmp_path (working directory, DAGSTER_HOME, the project database), and every
variable it sets is restored afterwards.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from agentcollect_pipeline import demo
from agentcollect_pipeline.payments.posting import posting_key
from agentcollect_pipeline.resources import _warehouse
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse.payments_schema import customer_notes, payments_posted


def test_demo_runs_the_cycle_sends_a_first_wave_and_posts_one_payment(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in demo.DEMO_VARIABLES:
        monkeypatch.setenv(name, "")  # recorded, so the demo's values are undone after the test
    monkeypatch.delenv("AGENTCOLLECT_HOME")
    monkeypatch.delenv("AGENTCOLLECT_POLICY_PATH", raising=False)

    result = demo.demo(invoices=300, customers=60, seed=7, home=tmp_path / ".dagster_home")
    out = capsys.readouterr().out

    assert result.collection_success and result.outreach_success and result.payment_success, out
    database = tmp_path / ".agentcollect" / "agentcollect.sqlite"
    assert database.exists() and (tmp_path / ".dagster_home" / "dagster.yaml").exists()
    store = _warehouse(f"sqlite:///{database}")

    # The first wave: at least one attempt went out, and the sandboxes received what the ledger says.
    sent = sum(n for (_, status), n in result.attempts.items() if status in ("sent", "delivered"))
    assert sent >= 1
    attempts = store.read_frame(os_.outreach_attempts)
    assert result.emails_received == (attempts["channel"] == "email").sum()
    assert "SIMULATED TIME" in out

    # The payment: exactly one payment at the source carrying the event's key, the invoice reduced by it, one note.
    key = posting_key("webhook", result.event["event_id"])
    (pay,) = result.source_payments
    assert Decimal(str(pay["amount"])) == Decimal(result.event["amount"]) > 0
    assert result.amount_due_after == result.amount_due_before - Decimal(result.event["amount"])
    assert len(result.notes) == 1 and result.notes[0].startswith("AgentCollect: payment of")
    with store.engine.connect() as conn:
        ledger = conn.execute(sa.select(payments_posted)).all()
        notes = conn.execute(sa.select(customer_notes)).all()
    assert [(row.posting_key, row.status, row.received_payment_id) for row in ledger] == [(key, "posted", pay["id"])]
    assert len([n for n in notes if n.fact_key.startswith("payment:")]) == 1

    # The replies (issue 7): an SMS "I already paid" and an emailed dispute change the cases and get their notes.
    replies = result.replies
    assert replies.success and replies.refused_status == 403, out
    effects = {(r["channel"], r["intent"]): r for r in replies.effects}
    assert effects[("sms", "paid_already")]["effect"].startswith("paused_until:")
    assert effects[("email", "dispute")]["effect"] == "disputed:1"
    assert store.count(cs.customer_pauses) == 1 and store.count(cs.disputes) == 1
    written = {n.fact_key.split(":", 1)[0] for n in notes if n.status == "written"}
    assert {"pause", "dispute"} <= written
    assert "effect: sms from" in out and "effect: email from" in out and "note on customer" in out
