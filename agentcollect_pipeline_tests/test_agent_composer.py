"""Issue 7: the composer's templates and guardrails, and the LLM path against the local LLM sandbox.

The point of these tests: a bad LLM draft (wrong amount, another invoice, a foreign link, a discount, a
waiver, a legal threat, no opt-out, too long, or no answer at all) never reaches a customer; the template
goes out instead and the reason is logged.
"""

import json
import logging
from datetime import date

import httpx
import pytest

from agentcollect_pipeline.agent.composer import TONES, Composer, tone_for_step
from agentcollect_pipeline.agent.guardrails import DraftPolicy, check_draft, sms_segments
from agentcollect_pipeline.agent.llm import ChatClient, LLMConfig, LLMError, LLMReplyClassifier
from agentcollect_pipeline.agent.message import InvoiceLine, MessageContext
from agentcollect_pipeline.sandboxes.llm import DEFAULT_API_KEY, LLMSandbox
from agentcollect_pipeline.sandboxes.server import serve_in_thread

CTX = MessageContext(
    org_name="Acme Supply", customer_name="Brightline Logistics", currency="USD",
    invoices=(InvoiceLine("00e01", "INV-1001", date(2026, 1, 15), 120050),
              InvoiceLine("00e02", "INV-1002", date(2026, 2, 1), 99900)),
    payment_link="https://pay.example/p/abc123", unsubscribe_url="https://acme.example/u/xyz", reference="AC7F3K",
    gather_url="https://hooks.example/voice/gather",
)
OTHER_CUSTOMER = "Zenith Marine"


@pytest.fixture(scope="module")
def sandbox():
    box = LLMSandbox()
    with serve_in_thread(box.app) as handle:
        box.url = handle.url
        yield box


@pytest.fixture
def llm(sandbox):
    sandbox.reset()
    config = LLMConfig(base_url=sandbox.url, model="sandbox-drafter", api_key=DEFAULT_API_KEY, timeout_s=2.0,
                       retries=2, backoff_s=0.0)
    client = ChatClient(config, sleep=lambda s: None)
    yield client
    client.close()


# ---- templates -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("channel", ["email", "sms", "voice"])
@pytest.mark.parametrize("tone", TONES)
def test_every_template_passes_the_guardrails(channel, tone):
    draft = Composer().compose(channel, tone, CTX)
    assert draft.source == "template" and draft.problems == ()
    assert "1,200.50 USD" in draft.message.text or "2,199.50 USD" in draft.message.text


def test_tones_differ_and_steps_map_to_tones():
    texts = {Composer().compose("sms", tone, CTX).message.text for tone in TONES}
    assert len(texts) == 3
    assert [tone_for_step(s) for s in (1, 2, 3, 7)] == ["friendly", "firm", "final", "final"]


def test_email_has_all_facts_and_opt_out_and_escaped_html():
    ctx = MessageContext(**{**CTX.__dict__, "customer_name": "Tom & <Jerry>"})
    message = Composer().compose("email", "firm", ctx).message
    for fact in ("INV-1001", "INV-1002", "1,200.50 USD", "999.00 USD", "2026-01-15", CTX.payment_link, CTX.unsubscribe_url):
        assert fact in message.text
    assert "Tom &amp; &lt;Jerry&gt;" in message.html


def test_voice_is_twiml_with_gather_and_disclosure():
    twiml = Composer().compose("voice", "final", CTX).message.text
    assert twiml.startswith("<?xml") and "automated call" in twiml and 'action="https://hooks.example/voice/gather"' in twiml


def test_templates_override_from_a_folder(tmp_path):
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "friendly.text.j2").write_text(
        "{{ org_name }} here: {{ total }} open, invoice {{ oldest.number }}. {{ payment_link }} Reply STOP to opt out.")
    composer = Composer(templates_dir=tmp_path)
    assert composer.compose("sms", "friendly", CTX).message.text.startswith("Acme Supply here: 2,199.50 USD open")
    assert composer.compose("sms", "firm", CTX).message.text.startswith("Acme Supply: Past due")  # not overridden


def test_a_missing_template_variable_raises(tmp_path):
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "friendly.text.j2").write_text("{{ balance }}")
    with pytest.raises(Exception, match="balance"):
        Composer(templates_dir=tmp_path).compose("sms", "friendly", CTX)


def test_unknown_channel_or_tone():
    with pytest.raises(ValueError):
        Composer().compose("fax", "friendly", CTX)
    with pytest.raises(ValueError):
        Composer().compose("sms", "angry", CTX)


# ---- guardrails ----------------------------------------------------------------------------------------

GOOD_SMS = ("Acme Supply: 2,199.50 USD past due (invoice INV-1001, due 2026-01-15). Pay: https://pay.example/p/abc123 "
            "Ref AC7F3K. Reply STOP to opt out.")


def test_a_correct_sms_passes():
    assert check_draft("sms", None, GOOD_SMS, CTX) == []


@pytest.mark.parametrize(("bad", "reason"), [
    (GOOD_SMS.replace("2,199.50 USD", "2,199.00 USD"), "amount not in case"),
    (GOOD_SMS.replace("2,199.50 USD", "$2,199.50 and $50.00"), "amount not in case"),
    (GOOD_SMS.replace("2,199.50 USD", "2,199.50 EUR"), "another currency"),
    (GOOD_SMS.replace("INV-1001", "INV-1009"), "invoice number"),
    (GOOD_SMS + " Also invoice 77812 is open.", "invoice number not in case"),
    (GOOD_SMS.replace("2026-01-15", "2026-01-16"), "date not a due date"),
    (GOOD_SMS.replace("https://pay.example/p/abc123", "https://evil.example/p"), "link not in case"),
    (GOOD_SMS + " Pay today for 10% off.", "percentage"),
    (GOOD_SMS + " We can offer a discount.", "discount"),
    (GOOD_SMS + " We will waive the late fee.", "waiver"),
    (GOOD_SMS + " We can set up a payment plan.", "settlement"),
    (GOOD_SMS + " Otherwise our attorney files a lawsuit.", "legal threat"),
    (GOOD_SMS.replace(" Reply STOP to opt out.", ""), "opt-out"),
    (GOOD_SMS.replace("Acme Supply: ", ""), "organisation not named"),
    (GOOD_SMS.replace("Ref AC7F3K. ", ""), "reference missing"),
])
def test_guardrails_refuse(bad, reason):
    reasons = check_draft("sms", None, bad, CTX)
    assert any(reason in r for r in reasons), reasons


def test_policy_can_allow_what_it_allows():
    text = GOOD_SMS + " We can set up a payment plan."
    assert check_draft("sms", None, text, CTX, DraftPolicy(allow_settlement_offers=True)) == []


def test_email_dates_in_words_must_be_due_dates():
    body = Composer().template("email", "friendly", CTX).text
    assert check_draft("email", "s", body + "\nThe first was due January 15, 2026.", CTX) == []
    assert any("date" in r for r in check_draft("email", "s", body + "\nPlease pay by March 1.", CTX))


@pytest.mark.parametrize(("text", "expected"), [
    ("a" * 160, ("GSM-7", 1)), ("a" * 161, ("GSM-7", 2)), ("a" * 306, ("GSM-7", 2)), ("a" * 307, ("GSM-7", 3)),
    ("€" * 80, ("GSM-7", 1)), ("€" * 81, ("GSM-7", 2)),  # extension characters take two septets
    ("é" * 160, ("GSM-7", 1)), ("ç" * 70, ("UCS-2", 1)), ("ç" * 71, ("UCS-2", 2)), ("ç" * 134, ("UCS-2", 2)),
    ("ç" * 135, ("UCS-2", 3)), ("’" + "a" * 69, ("UCS-2", 1)), ("😀" * 35, ("UCS-2", 1)), ("😀" * 36, ("UCS-2", 2)),
])
def test_sms_segments(text, expected):
    assert sms_segments(text) == expected


def test_sms_segment_limit_from_policy():
    assert any("segments" in r for r in check_draft("sms", None, GOOD_SMS, CTX, DraftPolicy(max_sms_segments=0)))


# ---- LLM path against the sandbox ------------------------------------------------------------------------

@pytest.mark.parametrize("channel", ["email", "sms", "voice"])
def test_a_good_llm_draft_is_used(sandbox, llm, channel):
    draft = Composer(llm=llm).compose(channel, "firm", CTX)
    assert draft.source == "llm" and draft.rejected == ()
    assert "2,199.50 USD" in draft.message.text


@pytest.mark.parametrize(("variant", "channel", "reason"), [
    ("wrong_amount", "sms", "amount not in case"),
    ("wrong_amount", "email", "amount not in case"),
    ("wrong_invoice", "email", "invoice number"),
    ("foreign_link", "sms", "link not in case"),
    ("discount", "email", "discount"),
    ("waiver", "sms", "waiver"),
    ("legal_threat", "voice", "legal threat"),
    ("missing_opt_out", "email", "opt-out"),
    ("missing_opt_out", "sms", "opt-out"),
    ("too_long", "sms", "segments"),
])
def test_a_bad_llm_draft_never_passes(sandbox, llm, caplog, variant, channel, reason):
    sandbox.script({"variant": variant})
    composer = Composer(llm=llm)
    with caplog.at_level(logging.WARNING, logger="agentcollect_pipeline.agent.composer"):
        draft = composer.compose(channel, "final", CTX)
    assert draft.source == "template"
    assert draft.message == composer.template(channel, "final", CTX)
    assert any(reason in r for r in draft.rejected), draft.rejected
    assert "9,876.54" not in draft.message.text and "discount" not in draft.message.text
    assert "replaced by the template: " in caplog.text and reason in caplog.text
    assert DEFAULT_API_KEY not in caplog.text


def test_plain_text_answers_are_accepted_when_correct(sandbox, llm):
    sandbox.script({"variant": "plain_text"})
    draft = Composer(llm=llm).compose("email", "friendly", CTX)
    assert draft.source == "llm" and draft.message.subject  # subject from the template


def test_raw_scripted_content_is_checked_too(sandbox, llm):
    sandbox.script(json.dumps({"text": GOOD_SMS.replace("2,199.50 USD", "2,199.50 USD (or 1,900.00 USD if paid today)")}))
    draft = Composer(llm=llm).compose("sms", "friendly", CTX)
    assert draft.source == "template" and any("1,900.00" in r for r in draft.rejected)


@pytest.mark.parametrize("fault", ["http_500", "http_503", "http_429"])
def test_transient_errors_are_retried(sandbox, llm, fault):
    sandbox.inject(fault, times=2)
    assert Composer(llm=llm).compose("sms", "friendly", CTX).source == "llm"
    assert len(sandbox.requests) == 3


def test_persistent_500_falls_back_to_the_template(sandbox, llm):
    sandbox.inject("http_500", times=3)
    draft = Composer(llm=llm).compose("sms", "friendly", CTX)
    assert draft.source == "template" and "llm unavailable" in draft.rejected[0]


def test_a_timeout_falls_back_to_the_template(sandbox):
    sandbox.reset()
    sandbox.inject("delay", times=1, delay_s=1.0)
    config = LLMConfig(base_url=sandbox.url, model="m", api_key=DEFAULT_API_KEY, timeout_s=0.3, retries=0)
    client = ChatClient(config)
    try:
        draft = Composer(llm=client).compose("email", "firm", CTX)
    finally:
        client.close()
    assert draft.source == "template" and "timeout" in draft.rejected[0]


def test_malformed_answer_falls_back(sandbox, llm):
    sandbox.inject("malformed")
    assert Composer(llm=llm).compose("voice", "friendly", CTX).source == "template"


def test_wrong_key_is_refused_and_falls_back(sandbox):
    sandbox.reset()
    client = ChatClient(LLMConfig(base_url=sandbox.url, model="m", api_key="sk-wrong", retries=0))
    try:
        with pytest.raises(LLMError, match="401"):
            client.complete([{"role": "user", "content": "hi"}])
        assert Composer(llm=client).compose("sms", "friendly", CTX).source == "template"
    finally:
        client.close()


def test_unreachable_llm_falls_back():
    client = ChatClient(LLMConfig(base_url="http://127.0.0.1:9", model="m", api_key="k", timeout_s=0.5, retries=0))
    try:
        assert Composer(llm=client).compose("sms", "friendly", CTX).source == "template"
    finally:
        client.close()


def test_the_brief_holds_only_this_cases_facts(sandbox, llm):
    Composer(llm=llm).compose("email", "firm", CTX)
    request = sandbox.requests[-1]
    sent = json.dumps(request)
    assert DEFAULT_API_KEY not in sent and OTHER_CUSTOMER not in sent
    brief = json.loads(request["messages"][-1]["content"])
    assert set(brief) == {"channel", "tone", "step", "organisation", "customer", "currency", "total_due", "invoices",
                          "reference", "payment_link", "opt_out_line"}
    assert [i["number"] for i in brief["invoices"]] == ["INV-1001", "INV-1002"]
    assert request["temperature"] == 0 and request["response_format"]["type"] == "json_schema"


def test_config_from_env_and_repr_hide_the_key():
    assert LLMConfig.from_env({}) is None
    config = LLMConfig.from_env({"AGENTCOLLECT_LLM_BASE_URL": "http://x", "AGENTCOLLECT_LLM_MODEL": "m",
                                 "AGENTCOLLECT_LLM_API_KEY": "sk-secret"})
    assert config.api_base == "http://x/v1" and "sk-secret" not in repr(config)
    assert "sk-secret" not in repr(ChatClient(config))


def test_retry_after_is_honoured_with_a_mock_transport():
    calls, sleeps = [], []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "3"})
        return httpx.Response(200, json={"choices": [{"message": {"content": "hello"}}]})

    client = ChatClient(LLMConfig(base_url="http://llm", model="m", api_key="k"), transport=httpx.MockTransport(handler),
                        sleep=sleeps.append)
    assert client.complete([{"role": "user", "content": "x"}]) == "hello"
    assert sleeps == [3.0] and calls[0].headers["authorization"] == "Bearer k"


def test_llm_reply_classifier_keeps_stop_on_rules_and_falls_back(sandbox, llm):
    classifier = LLMReplyClassifier(llm.config, client=llm)
    assert classifier.classify("We will pay on 3/20", date(2026, 3, 11)).promised_date == date(2026, 3, 20)
    asked = len(sandbox.requests)
    assert classifier.classify("Please stop texting me", date(2026, 3, 11)).intent == "stop"
    assert len(sandbox.requests) == asked  # an opt-out is never left to the model
    sandbox.script("not json")
    assert classifier.classify("Already paid", date(2026, 3, 11)).intent == "paid_already"
    assert classifier.fallbacks == 1
