"""Issue 7 end to end: the composer writes every message `send_due_outreach` sends, and a bad LLM draft never
reaches a customer. The real assets against the Bill.com, Twilio, SendGrid and LLM sandboxes; the message the
provider sandbox receives is checked, and the ledger row says who wrote it and why an LLM draft was refused."""

import json
from pathlib import Path

import pytest

from agentcollect_pipeline.outreach import ledger
from agentcollect_pipeline.outreach.channels import OutreachSettings
from agentcollect_pipeline.sandboxes.llm import DEFAULT_API_KEY, LLMSandbox
from agentcollect_pipeline.sandboxes.server import serve_in_thread
from agentcollect_pipeline.warehouse import schema

from . import test_outreach_e2e as e2e
from .test_outreach_e2e import UNSUBSCRIBE_SECRET, _attempts, _noon_ny_tomorrow, _send

world = e2e.world


@pytest.fixture(scope="module")
def llm_box():
    box = LLMSandbox()
    with serve_in_thread(box.app) as handle:
        box.url = handle.url
        yield box


@pytest.fixture
def llm(llm_box, monkeypatch):
    """The LLM configured as in production: from the environment, which the composer reads."""
    llm_box.reset()
    monkeypatch.setenv("AGENTCOLLECT_LLM_BASE_URL", llm_box.url)
    monkeypatch.setenv("AGENTCOLLECT_LLM_MODEL", "sandbox-drafter")
    monkeypatch.setenv("AGENTCOLLECT_LLM_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("AGENTCOLLECT_LLM_TIMEOUT_S", "0.5")
    monkeypatch.setenv("AGENTCOLLECT_LLM_RETRIES", "0")
    return llm_box


def _one_per_run(world) -> dict:
    settings = world["resources"]["outreach_settings"]
    return {**world, "resources": {**world["resources"], "outreach_settings": OutreachSettings(
        **{**settings.model_dump(), "max_sends_per_run": 1})}}


def _newest(store) -> dict:
    return _attempts(store).sort_values("reserved_at").iloc[-1].to_dict()


def test_a_bad_llm_email_never_reaches_the_customer(world, llm):
    """Wrong amount, a promised discount, a timeout: SendGrid receives the template; the row says why."""
    store, sendgrid = world["store"], world["sendgrid"]
    one = _one_per_run(world)
    now = _noon_ny_tomorrow()
    expected = {"wrong_amount": "amount not in case: 9,876.54", "discount": "discount not allowed by policy",
                "timeout": "llm unavailable: gave up after 1 attempts: timeout"}
    for minute, bad in enumerate(expected):
        if bad == "timeout":
            llm.inject("delay", delay_s=1.5)
        else:
            llm.script({"variant": bad})
        assert _send(one, now.replace(minute=minute)).success
        attempt = _newest(store)
        mail = [m for m in sendgrid.mails() if attempt["attempt_id"] in json.dumps(m)]
        assert len(mail) == 1
        body = mail[0]["request"]["content"][0]["value"]
        assert attempt["draft_source"] == "template", bad
        assert expected[bad] in attempt["guardrail_rejections"], attempt["guardrail_rejections"]
        assert "9,876.54" not in body and "discount" not in body.lower()
        assert body.startswith("Hello ") and "Ref " + ledger.reference(attempt["attempt_id"]) in body  # the template
        assert attempt["status"] == "sent"

    # A draft that passes every check is the one sent, and says so.
    assert _send(one, now.replace(minute=10)).success
    attempt = _newest(store)
    body = next(m for m in sendgrid.mails() if attempt["attempt_id"] in json.dumps(m))["request"]["content"][0]["value"]
    assert attempt["draft_source"] == "llm" and attempt["guardrail_rejections"] is None
    assert "You can pay securely here" in body  # the sandbox model's wording, not the template's

    # What the model was shown: this case's facts, never a key or the unsubscribe secret, nor other customers.
    customers = store.read_frame(schema.billcom_customers)
    for request in llm.requests:
        brief = json.loads(request["messages"][-1]["content"])
        sent = json.dumps(request)
        assert DEFAULT_API_KEY not in sent and UNSUBSCRIBE_SECRET not in sent
        assert world["sendgrid"].api_key not in sent and world["twilio"].credentials["auth_token"] not in sent
        others = set(customers["company_name"].dropna()) - {brief["customer"]}
        assert not any(name in sent for name in others if len(name) > 3)


def test_a_bad_llm_text_never_reaches_the_customer(world, llm):
    store, twilio = world["store"], world["twilio"]
    for number in store.read_frame(schema.billcom_customers)["phone_e164"].dropna():
        ledger.record_consent(store, "sms", number, "test", "test")
    path = Path(world["resources"]["collection_policy"].path)
    path.write_text(path.read_text() + "outreach:\n  ladder: [{step: text, day: 0, channel: sms}]\n")
    one = _one_per_run(world)
    llm.script({"variant": "wrong_amount"})
    assert _send(one, _noon_ny_tomorrow()).success
    attempt = _newest(store)
    (text,) = [m for m in twilio.messages() if m["to"] == attempt["destination"]]
    assert "9,876.54" not in text["body"] and "Reply STOP to opt out." in text["body"]
    assert f"Ref {ledger.reference(attempt['attempt_id'])}" in text["body"]  # reconciliation finds texts by it
    assert attempt["draft_source"] == "template" and "amount not in case" in attempt["guardrail_rejections"]


def test_templates_only_without_an_llm_and_the_policy_folder_overrides(world, tmp_path):
    store, sendgrid = world["store"], world["sendgrid"]
    folder = tmp_path / "ours"
    (folder / "email").mkdir(parents=True)
    (folder / "email" / "friendly.subject.j2").write_text("{{ org_name }} - statement: {{ total }} open")
    path = Path(world["resources"]["collection_policy"].path)
    path.write_text(path.read_text() + f"messaging:\n  templates_dir: {folder}\n  llm: false\n")
    assert _send(world, _noon_ny_tomorrow()).success
    attempts = _attempts(store)
    assert set(attempts["draft_source"]) == {"template"} and attempts["guardrail_rejections"].isna().all()
    subjects = {m["request"]["subject"] for m in sendgrid.mails()}
    assert subjects and all(s.startswith("Acme AR - statement: ") for s in subjects)
    # Every email names its attempt in Reply-To (replies+att_…@…): Inbound Parse brings the answer back.
    for mail in sendgrid.mails():
        assert "replies+att_" in mail["request"]["reply_to"]["email"]
