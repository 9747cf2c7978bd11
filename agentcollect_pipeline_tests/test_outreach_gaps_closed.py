"""Issue 5, the last gaps: Bill.com's v3 invoice payment link in every message (cached per invoice, template
fallback), a provider 429 past the retry budget releasing the attempt for the next run, and closing callback
requests. End to end against the Bill.com, Twilio and SendGrid sandboxes and our webhooks."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from agentcollect_pipeline.clients.billcom import ARScopeError, BillComError, BillComNotFoundError
from agentcollect_pipeline.outreach import ledger
from agentcollect_pipeline.outreach.payment_links import LinkRequest, PaymentLinks
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema

from . import test_outreach_e2e as e2e
from .test_outreach_e2e import _attempts, _noon_ny_tomorrow, _send

world = e2e.world  # Bill.com, Twilio and SendGrid sandboxes and our webhooks
LINK_OP = "v3/invoices/payment-link"


def _with_v3(world, billcom, **overrides):
    """The world's resources with Bill.com's v3 base URL configured (payment links from Bill.com)."""
    store = world["store"]
    warehouse = world["resources"]["warehouse"]
    resources = {**world["resources"],
                 "ar_source": billcom.ar_source(warehouse, v3_base_url=f"{billcom.url}/connect", **overrides)}
    return {**world, "resources": resources, "store": store}


def _link_calls(billcom) -> int:
    return billcom.sandbox.stats["calls"].get(LINK_OP, 0)


def _metadata(result, node="outreach_attempts"):
    return result.asset_materializations_for_node(node)[0].metadata


def _texts_of(world) -> list[str]:
    return [str(m) for m in world["sendgrid"].mails()] + [m["body"] for m in world["twilio"].messages()]


def _consent_sms(world):
    store = world["store"]
    for number in store.read_frame(schema.billcom_customers)["phone_e164"].dropna().unique():
        ledger.record_consent(store, "sms", number, "credit application (test)", "test")


# -- 1. Bill.com's v3 payment link ----------------------------------------------------------------------


def test_v3_payment_link_has_its_own_session_and_stays_inside_the_ar_allowlist(billcom):
    client = billcom.client(v3_base_url=f"{billcom.url}/connect")
    invoice = next(i for i in billcom.sandbox.entities("Invoice") if i["amountDue"] > 0)
    link = client.invoice_payment_link(invoice["id"], customer_id=invoice["customerId"], email="ap@debtor.example")
    assert re.fullmatch(rf"{billcom.url}/p/[\w-]+", link)
    handed_out = billcom.sandbox.payment_links()
    assert [(p["invoiceId"], p["email"]) for p in handed_out] == [(invoice["id"], "ap@debtor.example")]
    assert billcom.sandbox.stats["calls"] == {"v3/login": 1, LINK_OP: 1}  # v3 login, not the v2 one

    # AP stays refused before a byte is sent: a bill path, a bill id in an allowed path, v2-style dispatch.
    before = billcom.sandbox.stats["total_calls"]
    with pytest.raises(ARScopeError):
        client.call_v3("v3/bills/{billId}/pay", {}, billId="00n01ABCDEF")
    with pytest.raises(ARScopeError):
        client.call_v3("v3/invoices/{invoiceId}/payment-link", {}, invoiceId="00n01ABCDEF")
    with pytest.raises(ARScopeError):
        client.call("v3/invoices/{invoiceId}/payment-link", {})
    assert billcom.sandbox.stats["total_calls"] == before

    # 429 / BDC_1322 are retried; an expired session (401 BDC_1109) means one login and one replay.
    billcom.sandbox.inject("http_429", LINK_OP)
    billcom.sandbox.inject("bdc_1322", LINK_OP)
    billcom.sandbox.inject("bdc_1109", LINK_OP)
    assert client.invoice_payment_link(invoice["id"], customer_id=invoice["customerId"], email="ap@debtor.example")
    assert billcom.sandbox.stats["calls"]["v3/login"] == 2
    # A refusal is Bill.com's, with its code: unknown invoice (404), wrong customer (400).
    with pytest.raises(BillComNotFoundError):
        client.invoice_payment_link("00e01NOSUCHINVOICE00", customer_id=invoice["customerId"], email="a@b.example")
    with pytest.raises(BillComError, match="BDC_1117"):
        client.invoice_payment_link(invoice["id"], customer_id="0cu01SOMEONEELSE0000", email="a@b.example")
    # Batched: 3 in flight at most (the org's limit counts v2 and v3 together), one result per request.
    invoices = [i for i in billcom.sandbox.entities("Invoice") if i["amountDue"] > 0][:7]
    results = client.invoice_payment_links([{"invoice_id": i["id"], "customer_id": i["customerId"],
                                             "email": "ap@debtor.example"} for i in invoices])
    assert all(isinstance(r, str) and r.startswith(billcom.url) for r in results)
    assert billcom.sandbox.stats["max_in_flight_seen"] <= 3


def test_every_message_carries_the_invoices_billcom_link_fetched_once_per_invoice(world, billcom):
    world = _with_v3(world, billcom)
    store = world["store"]
    _consent_sms(world)
    now = _noon_ny_tomorrow()
    result = _send(world, now)
    assert result.success
    attempts = _attempts(store)
    assert len(attempts) > 3
    handed_out = {p["token"]: p for p in billcom.sandbox.payment_links()}
    due_dates = {i["id"]: i["dueDate"] for i in billcom.sandbox.entities("Invoice")}
    for attempt in attempts.itertuples():
        if attempt.channel == "email":
            body = str(next(m for m in world["sendgrid"].mails() if attempt.attempt_id in str(m)))
        else:
            body = next(m["body"] for m in world["twilio"].messages() if m["to"] == attempt.destination)
        tokens = re.findall(rf"{re.escape(billcom.url)}/p/([\w-]+)", body)
        assert tokens and "pay.example.com" not in body, body
        link = handed_out[tokens[0]]
        # The link pays the invoice the message names first: the case's oldest due.
        ids = attempt.invoice_ids.split(",")
        assert link["invoiceId"] == min(ids, key=lambda i: due_dates[i])
        assert link["customerId"] == attempt.customer_id
    cached = store.read_frame(os_.invoice_payment_links)
    assert _link_calls(billcom) == len(cached) == len(handed_out) == attempts["case_id"].nunique()
    assert _metadata(result)["payment_links/billcom"].value == len(attempts)

    # The next steps (days later) reuse the stored links: no new call for an invoice already linked.
    calls = _link_calls(billcom)
    result = _send(world, now + timedelta(days=3))
    later = _attempts(store)
    assert len(later) > len(attempts)
    assert _link_calls(billcom) == calls
    assert _metadata(result)["payment_links/billcom"].value == len(later) - len(attempts)

    # A debtor who pays through the link is seen paid on the next sync, and is not chased again.
    paid = handed_out[next(iter(handed_out))]
    billcom.sandbox.pay_link(next(iter(handed_out)))
    assert dg.materialize(e2e.AR_SOURCE_ASSETS, resources=world["resources"]).success
    invoices = store.read_frame(schema.billcom_invoices).set_index("invoice_id")
    assert invoices.loc[paid["invoiceId"], "amount_due_cents"] == 0


def test_payment_links_fall_back_to_the_template_when_billcom_is_unavailable(world, billcom):
    store = world["store"]
    # Not configured (no BILLCOM_V3_BASE_URL): the template, and nothing asked of Bill.com.
    result = _send(world, _noon_ny_tomorrow())
    sent = len(_attempts(store))
    assert _metadata(result)["payment_links/template"].value == sent > 0
    assert _link_calls(billcom) == 0 and "pay.example.com/invoices/" in str(world["sendgrid"].mails()[0])

    # Configured but unreachable: the template for the run, nothing cached, one failed batch only.
    world = _with_v3(world, billcom, max_attempts=2)
    _consent_sms(world)
    billcom.sandbox.inject("http_503", LINK_OP, times=100)
    result = _send(world, _noon_ny_tomorrow() + timedelta(days=3))
    later = _attempts(store)
    assert len(later) > sent
    assert _metadata(result)["payment_links/template"].value == len(later) - sent
    assert store.count(os_.invoice_payment_links) == 0
    assert _link_calls(billcom) <= 3 * 2  # one batch (3 in flight, 2 attempts each), then no more calls
    assert all("pay.example.com/invoices/" in m["body"] for m in world["twilio"].messages())

    # Back up: the next run's messages carry Bill.com's links.
    billcom.sandbox.clear_faults()
    result = _send(world, _noon_ny_tomorrow() + timedelta(days=7))
    assert _metadata(result).get("payment_links/billcom") is not None
    assert store.count(os_.invoice_payment_links) > 0


class _RefusingClient:
    def __init__(self):
        self.asked = []

    def invoice_payment_links(self, requests):
        self.asked.extend(r["invoice_id"] for r in requests)
        return [BillComError("BDC_1119", "customer is connected in the BILL network", "v3/payment-link", 400)
                for _ in requests]


def test_a_refused_invoice_uses_the_template_and_is_asked_again_only_after_a_day(warehouse_resource):
    store = warehouse_resource.get_warehouse()
    client = _RefusingClient()
    now = datetime(2026, 11, 27, 17, tzinfo=UTC)
    template = "https://pay.example.com/{invoice_id}"
    request = LinkRequest("00e01AAA", "0cu01AAA", "K1", "ap@debtor.example")
    links = PaymentLinks(store, client, template, now)
    links.prefetch([request, LinkRequest("00e01BBB", "0cu01BBB", "K2", None)])  # no email: not asked
    assert links.link("00e01AAA", "0cu01AAA", "K1") == "https://pay.example.com/00e01AAA"
    assert client.asked == ["00e01AAA"]
    row = store.read_frame(os_.invoice_payment_links).iloc[0]
    assert pd.isna(row["payment_link"]) and row["error"].startswith("BDC_1119")
    PaymentLinks(store, client, template, now + timedelta(hours=23)).prefetch([request])
    assert client.asked == ["00e01AAA"]  # refused recently: not asked again
    PaymentLinks(store, client, template, now + timedelta(hours=25)).prefetch([request])
    assert client.asked == ["00e01AAA", "00e01AAA"]


# -- 3. A provider 429 past the retry budget ---------------------------------------------------------


def test_sendgrid_429_past_the_retry_budget_releases_the_attempt_for_the_next_run(world):
    store, sendgrid = world["store"], world["sendgrid"]
    now = _noon_ny_tomorrow()
    budget = world["resources"]["sendgrid"].max_attempts
    sendgrid.inject("http_429", "mail/send", times=budget)
    result = _send(world, now)
    assert result.success
    attempts = _attempts(store)
    released = attempts[attempts["status"] == "released"]
    assert len(released) == 1 and sendgrid.mails() == []
    assert released["release_count"].iloc[0] == 1 and "429" in released["released_reason"].iloc[0]
    metadata = _metadata(result)
    assert metadata["this_run/throttled"].value == 1
    assert metadata["this_run/deferred_provider_throttled"].value > 0  # no more emails this run

    # The next run (15 minutes later) sends it - same attempt id, once - and the deferred ones.
    assert _send(world, now + timedelta(minutes=15)).success
    after = _attempts(store).set_index("attempt_id")
    first = released["attempt_id"].iloc[0]
    assert after.loc[first, "status"] == "sent" and after.loc[first, "release_count"] == 1
    emails = after[after["channel"] == "email"]
    mails = [str(m) for m in sendgrid.mails()]
    assert len(mails) == len(emails) == emails["destination"].nunique()
    assert sum(first in m for m in mails) == 1
    assert set(emails["status"]) == {"sent"}


def test_twilio_429_releases_the_text_while_a_5xx_stays_unconfirmed_and_is_never_resent(world):
    store, twilio = world["store"], world["twilio"]
    _consent_sms(world)
    path = Path(world["resources"]["collection_policy"].path)
    path.write_text(path.read_text() + "outreach:\n  ladder: [{step: text, day: 0, channel: sms}, "
                    "{step: text_again, day: 1, channel: sms}]\n")
    budget = world["resources"]["twilio"].max_attempts
    twilio.inject("http_429", "Messages", times=budget)
    now = _noon_ny_tomorrow()
    assert _send(world, now).success
    attempts = _attempts(store)
    assert (attempts["status"] == "released").sum() == 1 and twilio.messages() == []
    released = attempts.loc[attempts["status"] == "released", "attempt_id"].iloc[0]
    assert _send(world, now + timedelta(minutes=15)).success
    after = _attempts(store).set_index("attempt_id")
    assert after.loc[released, "status"] == "sent" and set(after["status"]) == {"sent"}
    texts = twilio.messages()
    assert len(texts) == len(after)
    for attempt_id in after.index:  # one text per attempt, found by the reference it carries
        assert sum(ledger.reference(attempt_id) in m["body"] for m in texts) == 1

    # A 5xx instead: the outcome is unknown (Twilio may have queued it): kept reserved, then reconciled to
    # `unconfirmed` (counts as sent), never re-sent - unlike a 429.
    twilio.inject("http_503", "Messages", times=1)
    assert _send(world, now + timedelta(days=1, minutes=15)).success  # a day after the texts went
    unknown = _attempts(store).query("step == 'text_again' and status == 'reserved'")
    assert len(unknown) == 1 and unknown["error_code"].iloc[0] == "20500"
    assert _send(world, now + timedelta(days=1, minutes=30)).success
    final = _attempts(store).set_index("attempt_id")
    assert final.loc[unknown["attempt_id"].iloc[0], "status"] == "unconfirmed"
    assert not any(ledger.reference(unknown["attempt_id"].iloc[0]) in m["body"] for m in twilio.messages())


def test_a_throttled_press_1_text_is_released_and_a_second_press_sends_it_once(world):
    from . import test_outreach_gaps as gaps

    store, twilio = world["store"], world["twilio"]
    gaps._voice_only(world)
    assert _send(world, _noon_ny_tomorrow()).success
    call = _attempts(store).query("channel == 'voice'").sort_values("attempt_id").iloc[0]
    twilio.inject("http_429", "Messages", times=4, method="POST")  # the receiver's sender: 4 attempts
    path = f"/webhooks/twilio/gather?attempt_id={call['attempt_id']}"
    response = gaps._signed_post(world, path, {"CallSid": "CA1", "Digits": "1", "To": call["destination"]})
    assert "could not send the text just now" in response.text and twilio.messages() == []
    link = _attempts(store).query(f"step == '{call['step']}:link' and case_id == '{call['case_id']}'").iloc[0]
    assert link["status"] == "released" and "429" in link["released_reason"]
    response = gaps._signed_post(world, path, {"CallSid": "CA1", "Digits": "1", "To": call["destination"], "n": "2"})
    assert "texted you a payment link" in response.text
    again = _attempts(store).set_index("attempt_id").loc[link["attempt_id"]]
    assert again["status"] == "sent" and len(twilio.messages()) == 1


# -- 4. Closing callback requests -------------------------------------------------------------------


def test_close_callback_records_who_and_why_and_leaves_the_open_list(tmp_path, monkeypatch):
    from agentcollect_pipeline.assets.outreach import _callback_metadata
    from agentcollect_pipeline.cli import main
    from agentcollect_pipeline.resources import _warehouse

    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    monkeypatch.setenv("AGENTCOLLECT_DATABASE_URL", url)
    store = _warehouse(url)
    with store.transaction() as conn:
        conn.execute(os_.callback_requests.insert(), [
            {"request_id": f"cbr_{n}", "attempt_id": f"att_{n}", "case_id": f"K{n}", "customer_id": f"c{n}",
             "number": "+12125550100", "status": "open", "requested_at": datetime(2026, 11, 27, 17, tzinfo=UTC)}
            for n in (1, 2)])
    shown = _callback_metadata(store)
    assert shown["callback_requests_open"].value == 2
    assert "cbr_1" in shown["preview_callback_requests"].value  # the id analysts close it with
    assert "+12125550100" not in shown["preview_callback_requests"].value  # masked

    assert main(["contacts", "close-callback", "cbr_1", "--by", "dana", "--why", "called back, pays Friday"]) == 0
    row = store.read_frame(os_.callback_requests).set_index("request_id").loc["cbr_1"]
    assert (row["status"], row["closed_by"], row["close_why"]) == ("done", "dana", "called back, pays Friday")
    assert row["closed_at"] is not None
    assert _callback_metadata(store)["callback_requests_open"].value == 1
    assert main(["contacts", "close-callback", "cbr_1", "--by", "dana", "--why", "again"]) == 1  # not open
    assert main(["contacts", "close-callback", "cbr_2", "--by", " ", "--why", "x"]) == 2  # who is required
    with pytest.raises(SystemExit):
        main(["contacts", "close-callback", "cbr_2", "--by", "dana"])  # --why is required
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(os_.callback_requests.c.status).where(
            os_.callback_requests.c.request_id == "cbr_2")).scalar() == "open"


# -- 5. The month replay script (a day of it: the month itself runs outside CI) ---------------------------


def test_replay_month_script_runs_a_day_through_the_jobs_without_violations(capsys):
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "replay_month.py"
    spec = importlib.util.spec_from_file_location("replay_month", path)
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    status = replay.main(["--days", "1", "--customers", "12", "--invoices", "48", "--verify-skips"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0 and figures["violations"] == 0, figures["violation_examples"]
    assert figures["cycles"] == 6 and figures["sends"] > 0
    assert figures["skipped_ticks"] == figures["skips_verified"] > 0
