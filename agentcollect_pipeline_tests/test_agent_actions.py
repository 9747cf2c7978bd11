"""Pure rules of issue 7 on DataFrames: promises kept/broken and their follow-up, requested copies, how they
are planned (quiet hours, consent, caps) and merged with the ladder; the `messaging:` policy block."""

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from agentcollect_pipeline.agent.composer import Composer, draft_policy
from agentcollect_pipeline.agent.guardrails import check_draft
from agentcollect_pipeline.agent.message import InvoiceLine, MessageContext
from agentcollect_pipeline.rules import agent_actions as aa
from agentcollect_pipeline.rules.cadence import Plan, contact_points, plan_outreach
from agentcollect_pipeline.rules.outreach_policy import OutreachPolicy
from agentcollect_pipeline.rules.policy import PolicyError, parse_policy

NOON_NY = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)  # a Wednesday, 12:00 in New York
NIGHT_NY = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)  # 23:00 in New York
TODAY = date(2026, 12, 2)

CASES = pd.DataFrame({
    "case_id": ["case-a", "case-b"], "customer_id": ["A", "B"], "currency": ["USD", "USD"],
    "invoice_ids": ["ia1,ia2", "ib1"], "total_due_cents": [150_000, 80_000], "oldest_days_overdue": [45, 40],
    "priority_score": [10.0, 5.0], "opened_at": [datetime(2026, 11, 1, tzinfo=UTC)] * 2,
})
DEBTORS = pd.DataFrame({"customer_id": ["A", "B"], "account_type": ["1", "1"], "bill_state": ["NY", "NY"],
                        "bill_country": ["US", "US"]})
CUSTOMERS = pd.DataFrame({"customer_id": ["A", "B"], "email": ["ap@a.example", "ap@b.example"],
                          "phone_e164": ["+12125550101", "+12125550102"], "validation_errors": [None, None]})
NO_CONTACTS = pd.DataFrame(columns=["customer_id", "email", "phone_e164", "is_active"])
EMPTY = pd.DataFrame(columns=["channel", "address", "revoked_at"])
HISTORY_COLUMNS = ["case_id", "customer_id", "step", "channel", "status", "reserved_at", "conversation_at"]


def _history(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=HISTORY_COLUMNS)


def _plan(requested, now=NOON_NY, history=None, consents=EMPTY, policy=OutreachPolicy()) -> Plan:
    return aa.plan_requested(requested, CASES, DEBTORS, contact_points(CUSTOMERS, NO_CONTACTS), EMPTY, consents,
                             EMPTY, history if history is not None else _history(), now, policy, "America/New_York")


def _promise(pid, customer, promised, status="pending", invoice_id=None):
    return {"promise_id": pid, "invoice_id": invoice_id, "customer_id": customer, "promised_date": promised,
            "amount_cents": None, "currency": "USD", "status": status, "created_at": NOON_NY}


def test_promises_are_kept_when_nothing_is_owed_and_broken_after_date_plus_grace():
    promises = pd.DataFrame([_promise("p1", "A", date(2026, 11, 28)), _promise("p2", "B", date(2026, 11, 28)),
                             _promise("p3", "A", date(2026, 12, 1)), _promise("p4", "A", date(2026, 11, 1), "kept")])
    invoices = pd.DataFrame({"invoice_id": ["ia1", "ib1"], "customer_id": ["A", "B"], "currency": ["USD", "USD"],
                             "amount_due_cents": [50_000, 0], "due_date": [date(2026, 10, 1)] * 2,
                             "is_active": [True, True]})
    updates = aa.promise_updates(promises, invoices, TODAY, grace_days=2)
    # p1: 11-28 + 2 days < 12-02 and A still owes -> broken; p2: B owes nothing -> kept; p3: within grace.
    assert sorted(map(tuple, updates.to_numpy().tolist())) == [("p1", "broken"), ("p2", "kept")]


def test_one_followup_per_broken_promise_of_an_open_case():
    promises = pd.DataFrame([_promise("p1", "A", date(2026, 11, 28), "broken"),
                             _promise("p2", "C", date(2026, 11, 28), "broken"),  # no open case
                             _promise("p3", "B", date(2026, 11, 28), "pending")])
    follow = aa.promise_followups(promises, CASES, _history())
    assert follow[["case_id", "step", "purpose", "tone"]].values.tolist() == [
        ["case-a", "promise_followup:p1", "followup", "firm"]]
    done = _history({"case_id": "case-a", "customer_id": "A", "step": "promise_followup:p1", "channel": "email",
                     "status": "sent", "reserved_at": NOON_NY, "conversation_at": None})
    assert aa.promise_followups(promises, CASES, done).empty  # at most once


def test_copy_requests_answer_matched_sms_and_email_replies_once():
    replies = pd.DataFrame({
        "reply_id": ["r1", "r2", "r3", "r4"], "intent": ["invoice_copy", "invoice_copy", "dispute", "invoice_copy"],
        "channel": ["email", "voice", "email", "sms"], "case_id": ["case-a", "case-a", "case-a", "case-zzz"],
        "customer_id": ["A", "A", "A", "Z"], "sender": ["ap@a.example", "+12125550101", "ap@a.example", "+1"]})
    requested = aa.copy_requests(replies, CASES, _history())
    assert requested[["step", "channel", "destination"]].values.tolist() == [["copy:r1", "email", "ap@a.example"]]
    done = _history({"case_id": "case-a", "customer_id": "A", "step": "copy:r1", "channel": "email",
                     "status": "sent", "reserved_at": NOON_NY, "conversation_at": None})
    assert aa.copy_requests(replies, CASES, done).empty


def _copy(channel="email", destination="ap@a.example", customer="A", case="case-a"):
    return pd.DataFrame([{"case_id": case, "customer_id": customer, "step": "copy:r1", "purpose": "copy",
                          "channel": channel, "destination": destination, "tone": "friendly", "why": "asked"}],
                        columns=aa.REQUESTED_COLUMNS)


def test_a_requested_copy_respects_quiet_hours_and_consent_but_not_the_daily_cap():
    today = _history({"case_id": "case-a", "customer_id": "A", "step": "reminder_email", "channel": "email",
                      "status": "sent", "reserved_at": NOON_NY, "conversation_at": None})
    plan = _plan(_copy(), history=today)
    assert plan.due[["step", "channel", "destination", "step_index"]].values.tolist() == [
        ["copy:r1", "email", "ap@a.example", -1]]
    at_night = _plan(_copy(), now=NIGHT_NY)
    assert at_night.due.empty and at_night.waiting["reason"].iloc[0].startswith("outside 08:00-21:00")
    assert at_night.waiting["next_at"].iloc[0] > NIGHT_NY
    no_consent = _plan(_copy("sms", "+12125550101"))
    assert no_consent.due.empty and "no recorded consent" in no_consent.waiting["reason"].iloc[0]
    stranger = _plan(_copy("email", "someone@else.example"))
    assert stranger.due.empty and "not on file" in stranger.waiting["reason"].iloc[0]


def test_a_followup_counts_as_collection_outreach():
    follow = pd.DataFrame([{"case_id": "case-a", "customer_id": "A", "step": "promise_followup:p1",
                            "purpose": "followup", "channel": None, "destination": None, "tone": "firm",
                            "why": "promise passed"}], columns=aa.REQUESTED_COLUMNS)
    plan = _plan(follow)
    assert plan.due[["channel", "destination"]].values.tolist() == [["email", "ap@a.example"]]
    today = _history({"case_id": "case-a", "customer_id": "A", "step": "reminder_email", "channel": "email",
                      "status": "sent", "reserved_at": NOON_NY, "conversation_at": None})
    capped = _plan(follow, now=NOON_NY.replace(hour=18), history=today)
    assert capped.due.empty and capped.waiting["reason"].iloc[0] == "daily contact cap reached"


def test_requested_messages_go_before_the_ladder():
    ladder = plan_outreach(cases=CASES, debtors=DEBTORS, points=contact_points(CUSTOMERS, NO_CONTACTS),
                           opt_outs=EMPTY, consents=EMPTY, invalid=EMPTY, history=_history(), now=NOON_NY,
                           policy=OutreachPolicy(), default_timezone="America/New_York")
    assert set(ladder.due["customer_id"]) == {"A", "B"}
    merged = aa.merge_plans(ladder, _plan(_copy()))
    assert merged.due[["customer_id", "step"]].values.tolist() == [["A", "copy:r1"], ["B", "reminder_email"]]
    assert "requested message" in merged.waiting.set_index("customer_id").loc["A", "reason"]
    assert aa.purpose_of("copy:r1") == "copy" and aa.purpose_of("promise_followup:p") == "followup"
    assert aa.purpose_of("reminder_call:link") == "reminder"


# ---- the messaging: block ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "key"), [
    ("messaging: {sms_segments: 2}", "messaging.sms_segments: unknown key"),
    ("messaging: {sms_max_segments: 0}", "messaging.sms_max_segments"),
    ("messaging: {sms_max_segments: 11}", "messaging.sms_max_segments"),
    ("messaging: {llm: maybe}", "messaging.llm"),
    ("messaging: {templates_dir: /no/such/folder}", "messaging.templates_dir"),
    ("messaging: {allowed_tones: {nope: [friendly]}}", "messaging.allowed_tones.nope: unknown ladder step"),
    ("messaging: {allowed_tones: {reminder_email: [angry]}}", "messaging.allowed_tones.reminder_email[0]"),
    ("messaging: {allowed_tones: {final_email: [friendly, firm]}}", "the step's own tone 'final'"),
    ("messaging: {allow: {legal_threats: true}}", "messaging.allow.legal_threats: unknown key"),
    ("messaging: {allow: {discounts: yes please}}", "messaging.allow.discounts"),
])
def test_the_messaging_block_is_strict_and_names_the_key(text, key):
    with pytest.raises(PolicyError, match="messaging") as error:
        parse_policy(text)
    assert key in str(error.value)


CTX = MessageContext(org_name="Acme", customer_name="Brightline", currency="USD",
                     invoices=(InvoiceLine("i1", "INV-1", date(2026, 1, 15), 120050),),
                     payment_link="https://pay.example/p/1", unsubscribe_url="https://acme.example/u/1",
                     reference="AC7F3K")


def test_the_messaging_block_reaches_the_composer(tmp_path: Path):
    (tmp_path / "tpl" / "sms").mkdir(parents=True)
    (tmp_path / "tpl" / "sms" / "friendly.text.j2").write_text(
        "{{ org_name }}: {{ total }}, invoice {{ oldest.number }}. {{ payment_link }} Reply STOP to opt out.")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("messaging:\n  sms_max_segments: 1\n  templates_dir: tpl\n  llm: false\n"
                           "  allowed_tones: {reminder_email: [friendly, firm]}\n  allow: {settlement_offers: true}\n")
    from agentcollect_pipeline.rules.policy import load_policy

    messaging = load_policy(policy_file).messaging
    assert messaging.templates_dir == str((tmp_path / "tpl").resolve())  # relative to the policy file
    composer = Composer.from_policy(messaging, environ={"AGENTCOLLECT_LLM_BASE_URL": "http://x",
                                                        "AGENTCOLLECT_LLM_MODEL": "m"})
    assert composer.llm is None  # llm: false wins over a configured endpoint
    assert composer.compose("sms", "friendly", CTX).message.text.startswith("Acme: 1,200.50 USD, invoice INV-1.")
    assert composer.policy.max_sms_segments == 1 and composer.policy.allow_settlement_offers
    two_segments = "Acme: 1,200.50 USD, invoice INV-1. https://pay.example/p/1 Reply STOP to opt out. " + "x" * 120
    assert any("segments" in r for r in check_draft("sms", None, two_segments, CTX, draft_policy(messaging)))
    assert messaging.tone_for("reminder_email", "final") == "friendly"  # a stale plan row's tone is bounded
    assert messaging.tone_for("reminder_email", "firm") == "firm" and messaging.tone_for("copy:r1", "friendly") == "friendly"


def test_voicemail_and_followup_guardrails():
    ctx = MessageContext(**{**CTX.__dict__, "promised_date": date(2026, 11, 28)})
    composer = Composer()
    voicemail = composer.compose("voice", "firm", ctx, "voicemail")
    assert voicemail.source == "template" and "<Hangup" in voicemail.message.text
    assert "1,200.50" not in voicemail.message.text and "INV-1" not in voicemail.message.text
    leaky = "This is an automated message from Acme: your balance of 1,200.50 USD for INV-1 is due."
    reasons = check_draft("voice", None, leaky, ctx, purpose="voicemail")
    assert {"voicemail names an amount", "voicemail names an invoice"} <= set(reasons)
    follow = composer.compose("sms", "firm", ctx, "followup")
    assert follow.problems == () and "2026-11-28" in follow.message.text
    # The promised date is a fact of a follow-up only.
    assert any("date not a due date" in r for r in check_draft("sms", None, follow.message.text, ctx))
    with pytest.raises(ValueError):
        composer.compose("email", "firm", ctx, "voicemail")
