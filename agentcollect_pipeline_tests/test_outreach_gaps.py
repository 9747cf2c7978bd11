"""Issue 5 gaps: AMD voicemail script, <Gather> digits, signed unsubscribe links, provider pacing, invalid
contacts in the plan, and the sender's job lease. End to end against the sandboxes where it matters."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import sqlalchemy as sa

from agentcollect_pipeline.outreach import leases, ledger
from agentcollect_pipeline.outreach.channels import SendGridEmailResource, Throttle, TwilioResource
from agentcollect_pipeline.outreach.tokens import unsubscribe_token
from agentcollect_pipeline.rules.cadence import contact_points, invalid_contact_report
from agentcollect_pipeline.sandboxes.billcom import SandboxClock
from agentcollect_pipeline.sandboxes.sendgrid import SendGridSandbox
from agentcollect_pipeline.sandboxes.server import serve_in_thread
from agentcollect_pipeline.sandboxes.twilio import TwilioSandbox, twilio_signature
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema

from . import test_outreach_e2e as e2e
from .test_outreach_e2e import FROM, UNSUBSCRIBE_SECRET, _attempts, _noon_ny_tomorrow, _send

world = e2e.world  # the same fixture: Bill.com, Twilio and SendGrid sandboxes and our webhooks


def _voice_only(world, consent_sms: bool = True):
    store = world["store"]
    phones = store.read_frame(schema.billcom_customers)["phone_e164"].dropna().tolist()
    for number in phones:
        ledger.record_consent(store, "voice", number, "test", "test")
        if consent_sms:
            ledger.record_consent(store, "sms", number, "test", "test")
    path = Path(world["resources"]["collection_policy"].path)
    path.write_text(path.read_text() + "outreach:\n  ladder: [{step: call, day: 0, channel: voice}]\n")
    return phones


def _signed_post(world, path: str, params: dict):
    url = f"{world['hooks']}{path}"
    signature = twilio_signature(world["twilio"].credentials["auth_token"], url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})


def test_calls_fetch_the_full_script_or_the_voicemail_script_by_amd(world):
    store, twilio = world["store"], world["twilio"]
    phones = _voice_only(world)
    machines = set(phones[::2])
    for number in phones:
        twilio.script_call(number, "completed", answered_by="machine_end_beep" if number in machines else "human")
    assert _send(world, _noon_ny_tomorrow()).success
    calls = _attempts(store)
    assert len(calls) > 1 and (calls["channel"] == "voice").all()
    twilio.advance(60)  # ring, answer (Twilio fetches the Url, signed), complete
    seen = set()
    for call in twilio.calls():
        request = twilio.call_request(call["sid"])
        assert "/webhooks/twilio/voice/att_" in request["Url"] and "Twiml" not in request
        twiml = twilio.call_twiml(call["sid"])
        assert twiml is not None
        if call["to"] in machines:
            assert "automated message" in twiml and "<Gather" not in twiml and "$" not in twiml
            seen.add("voicemail")
        else:
            assert "<Gather" in twiml and "past due" in twiml
            seen.add("full")
    assert seen == {"voicemail", "full"}
    after = _attempts(store)
    assert set(after["answered_by"].dropna()) == {"machine_end_beep", "human"}
    # An unsigned fetch gets 403 and no script.
    attempt_id = after["attempt_id"].iloc[0]
    response = httpx.post(f"{world['hooks']}/webhooks/twilio/voice/{attempt_id}", data={"AnsweredBy": "human"})
    assert response.status_code == 403


def test_gather_1_texts_the_link_once_2_requests_a_callback(world):
    store, twilio = world["store"], world["twilio"]
    _voice_only(world)
    assert _send(world, _noon_ny_tomorrow()).success
    calls = _attempts(store).sort_values("attempt_id").reset_index(drop=True)
    zones = store.read_frame(os_.outreach_plan).set_index("case_id")["zones"]
    american = calls["case_id"].map(lambda c: all(z.startswith("America/") for z in zones[c].split(",")))
    first, second, third = calls.iloc[0], calls.iloc[1], calls[american & (calls.index > calls.index[1])].iloc[0]
    texts_before = len(twilio.messages())

    path = f"/webhooks/twilio/gather?attempt_id={first['attempt_id']}"
    response = _signed_post(world, path, {"CallSid": "CA1", "Digits": "1", "To": first["destination"]})
    assert response.status_code == 200 and "texted you a payment link" in response.text
    texts = [m for m in twilio.messages() if m["to"] == first["destination"]]
    assert len(texts) == 1 and "pay.example.com/invoices/" in texts[0]["body"]
    link = _attempts(store).set_index("step").loc[f"{first['step']}:link"]
    link = link[link["case_id"] == first["case_id"]].iloc[0] if isinstance(link, pd.DataFrame) else link
    assert link["channel"] == "sms" and link["status"] == "sent" and link["provider_id"].startswith("SM")
    # Pressed again (or redelivered): the ledger holds the step; no second text.
    _signed_post(world, path, {"CallSid": "CA1", "Digits": "1", "To": first["destination"], "x": "2"})
    assert len([m for m in twilio.messages() if m["to"] == first["destination"]]) == 1
    # Unsigned: 403, nothing sent.
    bad = httpx.post(f"{world['hooks']}/webhooks/twilio/gather?attempt_id={second['attempt_id']}", data={"Digits": "1"})
    assert bad.status_code == 403

    # 2: a callback request, recorded on the attempt and shown in the asset metadata.
    _signed_post(world, f"/webhooks/twilio/gather?attempt_id={second['attempt_id']}",
                 {"CallSid": "CA2", "Digits": "2", "To": second["destination"]})
    requests = store.read_frame(os_.callback_requests)
    assert requests["attempt_id"].tolist() == [second["attempt_id"]]
    result = _send(world, _noon_ny_tomorrow() + timedelta(minutes=15))
    metadata = result.asset_materializations_for_node("outreach_attempts")[0].metadata
    assert metadata["callback_requests_open"].value == 1

    # 1 outside quiet hours (02:00 New York, 23:00 Los Angeles): no text, the refusal is recorded.
    world["sendgrid"].clock.set(_noon_ny_tomorrow() + timedelta(hours=14))
    response = _signed_post(world, f"/webhooks/twilio/gather?attempt_id={third['attempt_id']}",
                            {"CallSid": "CA3", "Digits": "1", "To": third["destination"]})
    assert "cannot send a text" in response.text
    choices = _attempts(store).set_index("attempt_id")["gather_choice"]
    assert choices[first["attempt_id"]].startswith("1:link_sent:")
    assert choices[second["attempt_id"]] == "2:callback_requested"
    assert choices[third["attempt_id"]] == "1:link_refused:quiet_hours"
    assert len(twilio.messages()) == texts_before + 1


def test_gather_1_without_sms_consent_sends_nothing(world):
    store, twilio = world["store"], world["twilio"]
    _voice_only(world, consent_sms=False)
    assert _send(world, _noon_ny_tomorrow()).success
    call = _attempts(store).iloc[0]
    response = _signed_post(world, f"/webhooks/twilio/gather?attempt_id={call['attempt_id']}",
                            {"CallSid": "CA9", "Digits": "1", "To": call["destination"]})
    assert response.status_code == 200 and twilio.messages() == []
    assert _attempts(store).set_index("attempt_id").loc[call["attempt_id"], "gather_choice"] == "1:link_refused:no_consent"


def test_unsubscribe_link_is_signed_and_records_the_opt_out(world):
    store = world["store"]
    assert _send(world, _noon_ny_tomorrow()).success
    email = _attempts(store).query("channel == 'email'").iloc[0]
    token = unsubscribe_token(UNSUBSCRIBE_SECRET, email["attempt_id"], email["destination"])
    link = f"{world['hooks']}/webhooks/sendgrid/unsubscribe?attempt_id={email['attempt_id']}&token={token}"
    mail = [m for m in world["sendgrid"].mails() if email["attempt_id"] in str(m)][0]
    assert link in str(mail)  # the body's link (and List-Unsubscribe) is exactly this signed URL
    before = store.count(cs.opt_outs)
    for forged in (f"{link[:-4]}0000", link.replace(email["attempt_id"], _attempts(store)["attempt_id"].iloc[-1]),
                   link.split("&token=")[0]):
        assert httpx.get(forged).status_code == 403
    assert store.count(cs.opt_outs) == before
    assert httpx.get(link).status_code == 200
    assert httpx.post(link, content=b"List-Unsubscribe=One-Click").status_code == 200  # one-click, idempotent
    out = store.read_frame(cs.opt_outs).query("channel == 'email'")
    assert email["destination"] in set(out["address"]) and len(out) == before + 1


def test_group_unsubscribe_event_opts_the_address_out(world):
    hooks, store = world["hooks_app"], world["store"]
    hooks._sendgrid_event({"event": "group_unsubscribe", "email": "AP@Debtor.example", "asm_group_id": 7,
                           "sg_event_id": "ev-1"}, datetime.now(UTC))
    assert "ap@debtor.example" in set(store.read_frame(cs.opt_outs)["address"])


def test_sendgrid_429_waits_for_the_rate_limit_reset():
    sandbox = SendGridSandbox(clock=SandboxClock(), rate_limit=2, rate_window_s=1)  # real time
    server = serve_in_thread(sandbox.app)
    try:
        resource = SendGridEmailResource(api_key=sandbox.api_key, base_url=server.url, from_email="ar@acme.example",
                                         retry_base_delay_s=0.01, max_attempts=3)
        results = [resource.send(f"att_{i}", f"d{i}@debtor.example", "s", "t", None) for i in range(6)]
        assert [r.outcome for r in results] == ["sent"] * 6
        assert sandbox.stats["rate_limited"] <= 3  # at most one 429 per window: no storm
    finally:
        server.stop()


def test_twilio_sender_pace_avoids_429s():
    def run(throttled: bool) -> tuple[list[str], int]:
        sandbox = TwilioSandbox(clock=SandboxClock(), sender_overflow="reject", sender_mps={"long_code": 10.0})
        server = serve_in_thread(sandbox.app)
        try:
            resource = TwilioResource(account_sid=sandbox.credentials["account_sid"],
                                      auth_token=sandbox.credentials["auth_token"], from_number=FROM,
                                      base_url=server.url, max_attempts=1, messages_per_second=8)
            throttle = Throttle({"sms": resource.messages_per_second if throttled else None})
            outcomes = []
            for i in range(8):
                throttle.wait("sms")
                outcomes.append(resource.send_sms(f"+1212555{i:04d}", "hello", None).outcome)
            return outcomes, sandbox.stats["rate_limited"]
        finally:
            server.stop()

    started = time.monotonic()
    outcomes, limited = run(throttled=True)
    assert outcomes == ["sent"] * 8 and limited == 0 and time.monotonic() - started >= 0.8
    _, unpaced_limited = run(throttled=False)
    assert unpaced_limited > 0  # the same burst unpaced is refused


def test_throttle_spaces_sends_per_key():
    now = [0.0]
    slept = []
    throttle = Throttle({"sms": 2.0, "email": None}, clock=lambda: now[0], sleep=lambda s: slept.append(s))
    for _ in range(3):
        throttle.wait("sms")
        throttle.wait("email")
    assert slept == [0.5, 1.0]


def test_invalid_contacts_are_reported_per_customer_and_never_used():
    customers = pd.DataFrame({
        "customer_id": ["c1", "c2", "c3"], "email": ["ok@debtor.example", "not-an-email", "x@y.example"],
        "phone": ["(212) 555-0100", "555-12", None], "phone_e164": ["+12125550100", None, None],
        "validation_errors": [None, "phone: not valid", "email: flagged"],
    })
    contacts = pd.DataFrame({"customer_id": ["c1"], "email": ["bad@@x"], "phone": ["12"], "phone_e164": [None],
                             "is_active": [True]})
    invalid = pd.DataFrame({"channel": ["sms"], "address": ["+12125550100"], "reason": ["twilio error 21614"]})
    report = invalid_contact_report(customers, contacts, invalid)
    assert set(map(tuple, report[["customer_id", "kind"]].to_numpy().tolist())) == {
        ("c1", "email"), ("c1", "phone"), ("c2", "email"), ("c2", "phone"), ("c3", "email")}
    assert not report["address"].str.contains("not-an-email|555-12").any()  # masked
    points = contact_points(customers, contacts)
    assert set(points["address"]) == {"ok@debtor.example", "+12125550100"}


def test_invalid_contacts_show_in_plan_metadata(world):
    store = world["store"]
    with store.transaction() as conn:
        first = conn.execute(sa.select(schema.billcom_customers.c.customer_id).limit(1)).scalar()
        conn.execute(schema.billcom_customers.update().where(schema.billcom_customers.c.customer_id == first)
                     .values(phone="555-12", phone_e164=None, email="nobody-at-example"))
    result = _send(world, _noon_ny_tomorrow())
    metadata = result.asset_materializations_for_node("outreach_plan")[0].metadata
    assert metadata["invalid_contacts"].value >= 2
    assert set(metadata["invalid_contacts_by_customer"].data[first]) == {"email", "phone"}
    assert "nobody-at-example" not in metadata["preview_invalid_contacts"].value
    assert "nobody-at-example" not in set(_attempts(store)["destination"])


def test_overlapping_run_without_the_lease_sends_nothing(world):
    store = world["store"]
    now = _noon_ny_tomorrow()
    assert leases.acquire(store, "send_due_outreach", "other-run", timedelta(minutes=10)) == "other-run"
    result = _send(world, now)
    assert result.success and _attempts(store).empty and world["sendgrid"].mails() == []
    metadata = result.asset_materializations_for_node("outreach_attempts")[0].metadata
    assert "other-run" in metadata["skipped"].value
    leases.release(store, "send_due_outreach", "other-run")
    assert _send(world, now).success and len(_attempts(store)) > 0
    assert leases.holder_of(store, "send_due_outreach") is None  # released after the run


def test_lease_is_exclusive_and_expires(warehouse_resource):
    store = warehouse_resource.get_warehouse()
    t0 = datetime(2026, 11, 26, 12, tzinfo=UTC)
    ttl = timedelta(minutes=5)
    assert leases.acquire(store, "job", "a", ttl, t0) == "a"
    assert leases.acquire(store, "job", "b", ttl, t0 + timedelta(minutes=1)) is None
    assert leases.acquire(store, "job", "a", ttl, t0 + timedelta(minutes=1)) == "a"  # renewal by the holder
    assert leases.acquire(store, "job", "b", ttl, t0 + timedelta(minutes=7)) == "b"  # expired: taken over
    assert not leases.renew(store, "job", "a", ttl)  # a lost it


def test_no_email_without_the_unsubscribe_secret(world):
    configured = world["resources"]["sendgrid"]
    unsigned = SendGridEmailResource(api_key=configured.api_key, base_url=configured.base_url,
                                     from_email=configured.from_email, messages_per_second=0)
    result = _send({**world, "resources": {**world["resources"], "sendgrid": unsigned}}, _noon_ny_tomorrow())
    metadata = result.asset_materializations_for_node("outreach_attempts")[0].metadata
    assert metadata["this_run/skipped_no_unsubscribe_secret"].value > 0
    assert world["sendgrid"].mails() == [] and (_attempts(world["store"])["channel"] != "email").all()
