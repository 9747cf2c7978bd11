"""Issue 7, replies end to end: email replies through SendGrid Inbound Parse (authenticated, quoted history
stripped, matched by the Reply-To token), keys pressed on our calls, and the effects that finish the work —
a promise that passes unpaid gets one follow-up, a copy request gets the invoices once, a dispute goes to
finance's review list — each with its Customer note. Real assets, sandboxes and receiver."""

import json
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import pytest
import sqlalchemy as sa

from agentcollect_pipeline.agent.inbound_email import InboundEmail, form_fields, reply_address, strip_quoted
from agentcollect_pipeline.assets.collections import COLLECTIONS_ASSETS
from agentcollect_pipeline.assets.replies import customer_replies as replies_asset
from agentcollect_pipeline.payments import status_notes
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.agent_schema import customer_replies, dispute_resolutions

from . import test_outreach_e2e as e2e
from .test_outreach_e2e import AS_OF, _attempts, _noon_ny_tomorrow, _send
from .test_outreach_gaps import _signed_post, _voice_only

world = e2e.world
TOKEN = "parse-token-for-tests"
REPLY_TO = "replies@acme.example"  # the world's SendGridEmailResource.reply_to
QUOTED = ("\n\nOn Tue, 25 Nov 2026 at 10:00, Acme AR <ar@acme.example> wrote:\n> A friendly reminder from Acme AR\n"
          "> To stop these emails: https://hooks.example/webhooks/sendgrid/unsubscribe?attempt_id=x\n")


@pytest.fixture
def emailed(world):
    """The first wave sent (emails), the receiver's Parse URL token set; the attempt with most invoices."""
    world["hooks_app"]._inbound_token = TOKEN
    assert _send(world, _noon_ny_tomorrow()).success
    emails = _attempts(world["store"]).query("channel == 'email'")
    attempt = emails.assign(n=emails["invoice_ids"].str.count(",")).sort_values("n").iloc[-1].to_dict()
    return {**world, "attempt": attempt, "url": f"{world['hooks']}/webhooks/sendgrid/inbound/{TOKEN}"}


def _numbers(store, invoice_ids: str) -> dict[str, str]:
    invoices = store.read_frame(schema.billcom_invoices).set_index("invoice_id")
    return {i: invoices.loc[i, "invoice_number"] for i in invoice_ids.split(",")}


def _reply(world, text: str, *, to: str | None = None, message_id: str | None = None, url: str | None = None):
    attempt = world["attempt"]
    return world["sendgrid"].inbound_email(
        f"Accounts Payable <{attempt['destination']}>", to or reply_address(REPLY_TO, attempt["attempt_id"]),
        "Re: your invoices", text, url=url or world["url"], message_id=message_id)


def _replies(store):
    return store.read_frame(customer_replies)


# ---- Inbound Parse ------------------------------------------------------------------------------------

def test_inbound_parse_is_refused_without_its_credentials_and_changes_nothing(emailed):
    store = emailed["store"]
    base = f"{emailed['hooks']}/webhooks/sendgrid/inbound"
    for url in (f"{base}/wrong-token", base, f"{base}/{TOKEN}x"):
        delivery = _reply(emailed, "STOP", url=url)
        assert delivery.status_code == 403, url
    assert store.count(customer_replies) == 0 and store.count(cs.opt_outs) == 0
    # Nothing configured at all: every inbound email is refused, even with the right path.
    emailed["hooks_app"]._inbound_token = None
    assert _reply(emailed, "STOP").status_code == 403
    assert store.count(customer_replies) == 0


def test_basic_auth_in_the_parse_url(emailed):
    hooks = emailed["hooks_app"]
    hooks._inbound_token, hooks._inbound_basic = None, "parse:s3cret"
    parts = urlsplit(emailed["url"])

    def with_user(user: str) -> str:
        return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc}", path="/webhooks/sendgrid/inbound"))

    assert _reply(emailed, "Thanks, noted.", url=with_user("parse:wrong")).status_code == 403
    assert _reply(emailed, "Thanks, noted.", url=emailed["url"].rsplit("/", 1)[0]).status_code == 403
    assert _reply(emailed, "Thanks, noted.", url=with_user("parse:s3cret")).status_code == 200
    assert emailed["store"].count(customer_replies) == 1


def test_an_emailed_dispute_names_its_invoice_is_matched_by_reply_to_and_goes_to_review(emailed, monkeypatch):
    store, attempt = emailed["store"], emailed["attempt"]
    numbers = _numbers(store, attempt["invoice_ids"])
    disputed_id, number = list(numbers.items())[-1]
    text = f"Hello,\n\nwe dispute invoice {number}, wrong quantity: we ordered 40, not 400.\n\nDana" + QUOTED
    delivery = _reply(emailed, text, message_id="<dispute-1@debtor.example>")
    assert delivery.status_code == 200, delivery.response_text
    # What the sandbox posted is what SendGrid documents for Inbound Parse (default mode).
    fields = form_fields(delivery.headers["Content-Type"], delivery.body)
    assert {"headers", "from", "to", "subject", "text", "envelope", "charsets", "dkim", "SPF", "sender_ip",
            "spam_score", "spam_report", "attachments"} <= set(fields)

    (reply,) = _replies(store).to_dict("records")
    assert (reply["channel"], reply["intent"], reply["attempt_id"], reply["case_id"]) == (
        "email", "dispute", attempt["attempt_id"], attempt["case_id"])
    assert reply["body"].endswith("Dana") and "To stop these emails" not in reply["body"]  # history stripped
    assert store.count(cs.opt_outs) == 0  # our own quoted footer is not the debtor's opt-out
    disputes = store.read_frame(cs.disputes)
    assert disputes["invoice_id"].tolist() == [disputed_id]  # only the invoice the reply names

    # A redelivery (same Message-ID) changes nothing.
    assert _reply(emailed, text, message_id="<dispute-1@debtor.example>").status_code == 200
    assert store.count(customer_replies) == 1 and store.count(cs.disputes) == 1

    # Finance's review list: the asset's metadata and the CLI; resolving closes it with who and why.
    result = dg.materialize([replies_asset], resources={"warehouse": emailed["resources"]["warehouse"]})
    meta = result.asset_materializations_for_node("customer_replies")[0].metadata
    assert meta["disputes_to_review"].value == 1 and number in meta["preview_disputes_to_review"].value
    from agentcollect_pipeline.cli import main

    monkeypatch.setenv("AGENTCOLLECT_DATABASE_URL", emailed["resources"]["warehouse"].database_url)
    dispute_id = disputes["dispute_id"].iloc[0]
    assert main(["disputes", "list"]) == 0
    assert main(["disputes", "resolve", dispute_id, "--outcome", "rejected", "--by", "dana",
                 "--why", "delivery note signed for 400"]) == 0
    assert main(["disputes", "resolve", dispute_id, "--outcome", "rejected", "--by", "dana", "--why", "again"]) == 1
    assert store.read_frame(cs.disputes)["closed_at"].notna().all()
    assert store.read_frame(dispute_resolutions)[["outcome", "resolved_by"]].values.tolist() == [["rejected", "dana"]]
    keys = {f.fact_key for f in status_notes.note_facts(store, schema.ar_tables("billcom"), "America/New_York")}
    assert {f"dispute:{dispute_id}:opened", f"dispute:{dispute_id}:closed"} <= keys


def test_an_email_opt_out_buried_in_a_long_reply_and_a_reply_matched_by_sender(emailed):
    store, attempt = emailed["store"], emailed["attempt"]
    text = ("Hi team, thanks for the reminder. Our AP process changed this year and invoices now go through the "
            "portal.\n\nAlso, please remove me from this mailing list, we do not want these emails.\n\nBest" + QUOTED)
    assert _reply(emailed, text, to=REPLY_TO).status_code == 200  # no token in the address: matched by sender
    (reply,) = _replies(store).to_dict("records")
    assert reply["intent"] == "stop" and reply["case_id"] == attempt["case_id"]
    out = store.read_frame(cs.opt_outs)
    assert out[["channel", "address"]].values.tolist() == [["email", attempt["destination"]]]


# ---- copy requests and promises: planner side ----------------------------------------------------------

def test_a_copy_request_is_answered_once_within_quiet_hours(emailed):
    store, sendgrid, attempt = emailed["store"], emailed["sendgrid"], emailed["attempt"]
    assert _reply(emailed, "Could you send me a copy of the invoice please?").status_code == 200
    (reply,) = _replies(store).to_dict("records")
    assert (reply["intent"], reply["effect"]) == ("invoice_copy", "copy_requested")
    step = f"copy:{reply['reply_id']}"

    night = _noon_ny_tomorrow() + timedelta(hours=12)  # midnight in New York
    assert _send(emailed, night).success
    assert step not in set(_attempts(store)["step"])  # quiet hours: it waits
    plan = store.read_frame(os_.outreach_plan).set_index("case_id")
    assert plan.loc[attempt["case_id"], "why"].startswith("outside")

    later = _noon_ny_tomorrow() + timedelta(days=1)
    before = len(sendgrid.mails())
    assert _send(emailed, later).success
    copy = _attempts(store).set_index("step").loc[step]
    assert copy["destination"] == attempt["destination"] and copy["draft_source"] == "template"
    mails = sendgrid.mails()[before:]
    (mail,) = [m for m in mails if copy["attempt_id"] in json.dumps(m)]
    assert "as requested" in mail["request"]["subject"]
    body = mail["request"]["content"][0]["value"]
    for number in _numbers(store, copy["invoice_ids"]).values():
        assert number in body
    assert _send(emailed, later + timedelta(minutes=15)).success
    assert (_attempts(store)["step"] == step).sum() == 1  # once per request
    keys = {f.fact_key for f in status_notes.note_facts(store, schema.ar_tables("billcom"), "America/New_York")}
    assert f"reply:{reply['reply_id']}:copy" in keys


def _rules(world, as_of: str = AS_OF):
    result = dg.materialize(COLLECTIONS_ASSETS, resources=world["resources"], run_config={"ops": {
        n: {"config": {"as_of": as_of}} for n in ("invoice_eligibility", "collection_cases", "ar_aging")}})
    assert result.success


def test_a_promise_pauses_collection_and_a_broken_one_gets_one_followup(emailed):
    store, sendgrid, attempt = emailed["store"], emailed["sendgrid"], emailed["attempt"]
    customer = attempt["customer_id"]
    assert _reply(emailed, "We will pay on December 1st, sorry for the delay.").status_code == 200
    (reply,) = _replies(store).to_dict("records")
    assert (reply["intent"], reply["promised_date"].date()) == ("promise_to_pay", date(2026, 12, 1))
    (promise,) = store.read_frame(cs.promises_to_pay).to_dict("records")
    assert (promise["customer_id"], promise["status"]) == (customer, "pending")

    _rules(emailed)  # as of 2026-11-26: the promise holds the customer's invoices
    assert customer not in set(store.read_frame(cs.collection_cases)["customer_id"])
    reasons = store.read_frame(cs.invoice_eligibility).query("customer_id == @customer")["reason"]
    assert set(reasons.dropna()) >= {"promise_to_pay_pending"}

    # The date (and the grace days) pass with the money still due: the case is back, the promise is broken,
    # and the planner sends one follow-up naming the promised date.
    with store.transaction() as conn:
        conn.execute(cs.promises_to_pay.update().values(promised_date=date(2026, 11, 20)))
    _rules(emailed)
    assert customer in set(store.read_frame(cs.collection_cases)["customer_id"])
    later = _noon_ny_tomorrow() + timedelta(days=1)
    before = len(sendgrid.mails())
    assert _send(emailed, later).success
    assert store.read_frame(cs.promises_to_pay)["status"].tolist() == ["broken"]
    step = f"promise_followup:{promise['promise_id']}"
    follow = _attempts(store).set_index("step").loc[step]
    (mail,) = [m for m in sendgrid.mails()[before:] if follow["attempt_id"] in json.dumps(m)]
    assert "2026-11-20" in mail["request"]["content"][0]["value"]
    assert _send(emailed, later + timedelta(days=1)).success
    assert (_attempts(store)["step"] == step).sum() == 1
    keys = {f.fact_key for f in status_notes.note_facts(store, schema.ar_tables("billcom"), "America/New_York")}
    assert f"promise:{promise['promise_id']}:broken" in keys


# ---- voice keys --------------------------------------------------------------------------------------

def test_keys_pressed_on_a_call_are_replies_with_effects_and_notes(world):
    store, twilio = world["store"], world["twilio"]
    _voice_only(world)
    assert _send(world, _noon_ny_tomorrow()).success
    calls = _attempts(store).sort_values("attempt_id").reset_index(drop=True)
    first, second = calls.iloc[0], calls.iloc[1]
    response = _signed_post(world, f"/webhooks/twilio/gather?attempt_id={first['attempt_id']}",
                            {"CallSid": "CA1", "Digits": "1", "To": first["destination"]})
    assert "texted you a payment link" in response.text
    _signed_post(world, f"/webhooks/twilio/gather?attempt_id={second['attempt_id']}",
                 {"CallSid": "CA2", "Digits": "2", "To": second["destination"]})
    replies = _replies(store).set_index("reply_id")
    assert replies.loc["CA1:1", ["channel", "intent"]].tolist() == ["voice", "invoice_copy"]
    assert replies.loc["CA1:1", "effect"].startswith("link_sent:att_")
    assert replies.loc["CA2:2", ["intent", "effect"]].tolist() == ["callback_request", "callback_requested"]
    link = _attempts(store).set_index("step").loc[f"{first['step']}:link"]
    (text,) = [m for m in twilio.messages() if m["to"] == first["destination"] and m["direction"] != "inbound"]
    assert link["draft_source"] == "template" and "as requested" in text["body"] and "Reply STOP" in text["body"]
    facts = {f.fact_key: f.text for f in status_notes.note_facts(store, schema.ar_tables("billcom"), "America/New_York")}
    assert "pressed 1): texted" in facts["reply:CA1:1:copy"]
    (callback,) = [text for key, text in facts.items() if key.startswith("callback:")]
    assert "pressed 2" in callback and second["destination"] not in callback  # masked


# ---- pure parts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "kept"), [
    ("We paid on Monday.\n\nOn Tue, Nov 25, 2026 at 10:00 AM Acme <ar@acme.example> wrote:\n> reminder", "We paid on Monday."),
    ("We paid.\n\nOn Tue, Nov 25, 2026 at 10:00 AM Acme AR <ar@acme.example>\nwrote:\n> x", "We paid."),
    ("Send a copy\n\n-----Original Message-----\nFrom: Acme\nTo stop these emails", "Send a copy"),
    ("Stop please\n________________________________\nFrom: Acme AR\nSent: Tuesday\nTo: x", "Stop please"),
    ("Wir zahlen morgen.\n\nAm 25.11.2026 um 10:00 schrieb Acme AR <ar@acme.example>:\n> x", "Wir zahlen morgen."),
    ("Payé hier.\n\nLe mar. 25 nov. 2026 à 10:00, Acme AR <ar@acme.example> a écrit :\n> x", "Payé hier."),
    ("> quoted only first\nreal answer", "real answer"),
    ("Will pay Friday\n-- \nDana, AP clerk\n+1 212 555 0100", "Will pay Friday"),
])
def test_quoted_history_and_signatures_are_stripped(raw, kept):
    assert strip_quoted(raw) == kept


def test_inbound_email_from_fields_reads_sender_token_and_html():
    fields = {"from": "Dana <DANA@Debtor.example>", "to": "replies+att_0123456789abcdef0123@parse.acme.example",
              "html": "<p>We dispute INV-7</p><blockquote>To stop these emails</blockquote>",
              "headers": "Subject: Re\nMessage-ID: <m1@debtor.example>\n", "envelope": "not json"}
    mail = InboundEmail.from_fields(fields)
    assert (mail.sender, mail.attempt_id, mail.message_id) == (
        "dana@debtor.example", "att_0123456789abcdef0123", "<m1@debtor.example>")
    assert mail.text == "We dispute INV-7"
    with pytest.raises(ValueError):
        form_fields("application/json", b"{}")
    assert reply_address("replies+old@parse.acme.example", "att_1") == "replies+att_1@parse.acme.example"


def test_dispute_without_any_invoice_to_hold_is_kept_for_a_person(warehouse_resource):
    from agentcollect_pipeline.agent.effects import handle_reply

    store = warehouse_resource.get_warehouse()
    outcome = handle_reply(store, channel="email", sender="ap@unknown.example", body="We dispute this invoice",
                           received_at=datetime(2026, 11, 25, tzinfo=UTC))
    assert (outcome.intent, outcome.effect) == ("dispute", "unmatched") and store.count(cs.disputes) == 0
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(customer_replies)).scalar_one() == 1
