"""Outreach end to end: the real assets against the Bill.com, Twilio and SendGrid sandboxes and our webhooks."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from agentcollect_pipeline.assets.ar_source import build_ar_source_assets
from agentcollect_pipeline.assets.collections import COLLECTIONS_ASSETS
from agentcollect_pipeline.assets.outreach import OUTREACH_ASSETS
from agentcollect_pipeline.collection_policy import CollectionPolicyResource
from agentcollect_pipeline.outreach import ledger
from agentcollect_pipeline.outreach.channels import OutreachSettings, SendGridEmailResource, TwilioResource
from agentcollect_pipeline.resources import AlertWebhookResource
from agentcollect_pipeline.rules.quiet_hours import Window, allowed_at
from agentcollect_pipeline.sandboxes.billcom import SandboxClock
from agentcollect_pipeline.sandboxes.sendgrid import SendGridSandbox
from agentcollect_pipeline.sandboxes.server import serve_in_thread
from agentcollect_pipeline.sandboxes.twilio import TwilioSandbox
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.webhooks.outreach import OutreachWebhooks

AR_SOURCE_ASSETS, AR_SOURCE_CHECKS = build_ar_source_assets("billcom")

AS_OF = "2026-11-26"
FROM = "+15005550006"
UNSUBSCRIBE_SECRET = "test-unsubscribe-secret"


@pytest.fixture
def world(billcom, warehouse_resource, ar_settings, tmp_path: Path):
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(
        "overdue_threshold_days: 30\nminimum_amount: {USD: 50.00, CAD: 50.00, EUR: 50.00, GBP: 40.00}\n"
        "accounting_classes: {Intercompany: 0ac01SANDBOXCLASS001}\nexclude: {accounting_classes: [Intercompany]}\n"
    )
    policy = CollectionPolicyResource(path=str(policy_path))
    store = warehouse_resource.get_warehouse()
    # The providers' clocks agree with the injected "now", as real ones agree with the real clock.
    twilio = TwilioSandbox(clock=SandboxClock(start=_noon_ny_tomorrow()))
    sendgrid = SendGridSandbox(clock=SandboxClock(start=_noon_ny_tomorrow()))
    servers = [serve_in_thread(twilio.app), serve_in_thread(sendgrid.app)]
    sms_sender = TwilioResource(account_sid=twilio.credentials["account_sid"],
                                auth_token=twilio.credentials["auth_token"], from_number=FROM,
                                base_url=servers[0].url, retry_base_delay_s=0.01)
    hooks = OutreachWebhooks(store, twilio_auth_token=twilio.credentials["auth_token"],
                             sendgrid_public_key=sendgrid.event_webhook_public_key, public_base_url="http://x",
                             clock=lambda: sendgrid.clock.now().timestamp(), unsubscribe_secret=UNSUBSCRIBE_SECRET,
                             sms_sender=sms_sender)
    hook_server = serve_in_thread(hooks)
    hooks._public = hook_server.url  # Twilio signs the URL it calls: ours, on this port
    servers.append(hook_server)
    sendgrid.event_webhook_url = f"{hook_server.url}/webhooks/sendgrid/events"
    resources = {
        "ar_source": billcom.ar_source(warehouse_resource),
        "warehouse": warehouse_resource,
        "ar_settings": ar_settings,
        "alerts": AlertWebhookResource(),
        "collection_policy": policy,
        "outreach_settings": OutreachSettings(public_base_url=hook_server.url, reconcile_after_seconds=0,
                                              org_name="Acme AR"),
        "sendgrid": SendGridEmailResource(api_key=sendgrid.api_key, base_url=servers[1].url,
                                          from_email="ar@acme.example", reply_to="replies@acme.example",
                                          retry_base_delay_s=0.01, messages_per_second=0,
                                          unsubscribe_secret=UNSUBSCRIBE_SECRET),
        "twilio": TwilioResource(account_sid=twilio.credentials["account_sid"],
                                 auth_token=twilio.credentials["auth_token"], from_number=FROM,
                                 base_url=servers[0].url, retry_base_delay_s=0.01, messages_per_second=0,
                                 calls_per_second=0),
    }
    result = dg.materialize(
        [*AR_SOURCE_ASSETS, *COLLECTIONS_ASSETS], resources=resources,
        run_config={"ops": {n: {"config": {"as_of": AS_OF}} for n in ("invoice_eligibility", "collection_cases", "ar_aging")}},
    )
    assert result.success
    yield dict(store=store, twilio=twilio, sendgrid=sendgrid, resources=resources, hooks=hook_server.url,
               hooks_app=hooks)
    for server in servers:
        server.stop()


def _send(world, now: datetime, **kwargs):
    return dg.materialize(
        OUTREACH_ASSETS, resources=world["resources"],
        run_config={"ops": {n: {"config": {"now": now.isoformat()}} for n in ("outreach_plan", "outreach_attempts")}},
        **kwargs,
    )


def _attempts(store):
    return store.read_frame(os_.outreach_attempts)


def _noon_ny_tomorrow() -> datetime:
    # Cases open at the real "now"; plan a moment after it, at 17:00Z (12:00 New York, 09:00 Los Angeles).
    return (datetime.now(UTC) + timedelta(days=1)).replace(hour=17, minute=0, second=0, microsecond=0)


def test_first_wave_goes_out_once_within_the_rules(world):
    store = world["store"]
    customers = store.read_frame(schema.billcom_customers)
    phones = customers["phone_e164"].dropna().tolist()
    for number in phones[: len(phones) // 2]:
        ledger.record_consent(store, "sms", number, "invoice application (test)", "test")
    opted = customers["email"].dropna().str.lower().tolist()[0]
    with store.transaction() as conn:
        ledger.record_opt_out(conn, "email", opted, "test", datetime.now(UTC))

    now = _noon_ny_tomorrow()
    assert _send(world, now).success
    attempts = _attempts(store)
    cases = store.read_frame(cs.collection_cases)
    assert len(attempts) > 0 and set(attempts["case_id"]) <= set(cases["case_id"])
    assert attempts["customer_id"].is_unique  # at most one contact per customer per day
    assert opted not in set(attempts["destination"])
    emails = attempts[attempts["channel"] == "email"]
    assert len(world["sendgrid"].mails()) == len(emails) > 0
    assert (attempts["status"] == "sent").all() and attempts["provider_id"].notna().all()
    mail = world["sendgrid"].mails()[0]
    assert "pay.example.com/invoices/" in str(mail)
    assert "attempt_id" in str(mail)
    # Every attempt is about eligible invoices only, at an allowed local hour.
    eligible = set(store.read_frame(cs.invoice_eligibility).query("eligible")["invoice_id"])
    for ids, zones in zip(attempts["invoice_ids"], store.read_frame(os_.outreach_plan).set_index("case_id")
                          .loc[attempts["case_id"], "zones"], strict=True):
        assert set(ids.split(",")) <= eligible
        assert allowed_at(now, zones.split(","), Window())

    # The same run again, and the next 15 minutes: nothing is sent twice, nobody twice in a day.
    assert _send(world, now).success
    assert _send(world, now + timedelta(minutes=15)).success
    again = _attempts(store)
    assert len(again) == len(attempts)
    assert len(world["sendgrid"].mails()) == len(emails)

    # SendGrid events reach the webhook (signed) and update the ledger; an unsubscribe opts the address out.
    world["sendgrid"].advance(10)
    address = emails["destination"].iloc[0]
    world["sendgrid"].unsubscribe(address)
    after = _attempts(store).set_index("attempt_id")
    assert (after.loc[emails["attempt_id"], "status"] == "delivered").any()
    out = store.read_frame(cs.opt_outs)
    assert address in set(out["address"])


def test_crash_between_reserve_and_send_then_rerun_sends_nothing_twice(world, monkeypatch):
    store = world["store"]
    now = _noon_ny_tomorrow()

    def crash(*args, **kwargs):
        raise SystemExit("killed between reserve and send")

    monkeypatch.setattr(SendGridEmailResource, "send", crash)
    with pytest.raises(BaseException, match="killed"):
        _send(world, now)
    reserved = _attempts(store)
    assert len(reserved) == 1 and reserved["status"].iloc[0] == "reserved"
    monkeypatch.undo()

    assert _send(world, now).success
    attempts = _attempts(store).set_index("attempt_id")
    crashed = attempts.loc[reserved["attempt_id"].iloc[0]]
    assert crashed["status"] == "unconfirmed"  # counted as sent, never re-sent
    mails_to_crashed = [m for m in world["sendgrid"].mails() if crashed["destination"] in str(m)]
    assert mails_to_crashed == []
    # The crashed customer gets nothing else today (the unconfirmed attempt counts against the daily cap).
    assert (attempts["customer_id"] == crashed["customer_id"]).sum() == 1


def test_crash_after_send_is_found_again_by_reconciliation(world, monkeypatch):
    store = world["store"]
    customers = store.read_frame(schema.billcom_customers)
    for number in customers["phone_e164"].dropna():
        ledger.record_consent(store, "sms", number, "test", "test")
    # Only SMS in the ladder, so the crash happens on Twilio.
    path = Path(world["resources"]["collection_policy"].path)
    path.write_text(path.read_text() + "outreach:\n  ladder: [{step: text, day: 0, channel: sms}]\n")
    now = _noon_ny_tomorrow()
    calls = {"n": 0}
    real_confirm = ledger.confirm

    def confirm_then_die(*args, **kwargs):
        calls["n"] += 1
        raise SystemExit("killed after the provider accepted")

    monkeypatch.setattr(ledger, "confirm", confirm_then_die)
    with pytest.raises(BaseException, match="killed"):
        _send(world, now)
    monkeypatch.setattr(ledger, "confirm", real_confirm)
    sent_before = len(world["twilio"].messages())
    assert sent_before == 1
    assert _send(world, now).success
    attempts = _attempts(store)
    first = attempts.sort_values("reserved_at").iloc[0]
    assert first["status"] in ("sent", "delivered") and first["provider_id"].startswith("SM")
    # Nothing was sent twice to the first customer's number.
    assert sum(m["to"] == first["destination"] for m in world["twilio"].messages()) == 1


def test_unsigned_webhooks_are_refused(world):
    import httpx

    store = world["store"]
    before = store.count(cs.opt_outs)
    response = httpx.post(f"{world['hooks']}/webhooks/twilio/inbound", data={"From": "+12125550100", "Body": "STOP"})
    assert response.status_code == 403
    response = httpx.post(f"{world['hooks']}/webhooks/sendgrid/events", content=b'[{"event": "unsubscribe"}]')
    assert response.status_code == 403
    assert store.count(cs.opt_outs) == before
    # A signed STOP from the sandbox opts the number out of texts and calls.
    world["twilio"].inbound_sms("+12125550100", FROM, "Stop", url=f"{world['hooks']}/webhooks/twilio/inbound")
    with store.engine.connect() as conn:
        channels = {r[0] for r in conn.execute(sa.select(cs.opt_outs.c.channel).where(
            cs.opt_outs.c.address == "+12125550100"))}
    assert channels == {"sms", "voice"}


def test_cli_clears_an_opt_out_recording_who_and_why(tmp_path, monkeypatch):
    from agentcollect_pipeline.cli import main
    from agentcollect_pipeline.resources import _warehouse

    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    monkeypatch.setenv("AGENTCOLLECT_DATABASE_URL", url)
    store = _warehouse(url)
    with store.transaction() as conn:
        ledger.record_opt_out(conn, "sms", "+12125550100", "STOP", datetime.now(UTC))
    assert main(["contacts", "clear-opt-out", "--channel", "sms", "--address", "+12125550100",
                 "--by", "dana", "--why", "customer asked to be texted again (call 2026-11-20)"]) == 0
    assert store.count(cs.opt_outs) == 0
    clearance = store.read_frame(os_.opt_out_clearances)
    assert clearance["cleared_by"].tolist() == ["dana"] and clearance["opt_out_source"].tolist() == ["STOP"]
    assert main(["contacts", "clear-opt-out", "--channel", "sms", "--address", "+12125550100",
                 "--by", "dana", "--why", "again"]) == 1


def test_a_texted_reply_is_understood_and_i_paid_pauses_collection(world):
    """Twilio delivers the debtor's answer (signed) to our receiver: it is classified, matched to the customer
    by its number, and "I paid" becomes a pause — never a payment."""
    from agentcollect_pipeline.warehouse.agent_schema import customer_replies
    from agentcollect_pipeline.warehouse.payments_schema import payments_posted

    store = world["store"]
    assert _send(world, _noon_ny_tomorrow()).success
    customers = store.read_frame(schema.billcom_customers).set_index("customer_id")
    contacted = [c for c in _attempts(store)["customer_id"] if not pd.isna(customers.loc[c, "phone_e164"])]
    phones = customers["phone_e164"].dropna()
    customer_id = next(c for c in contacted if (phones == customers.loc[c, "phone_e164"]).sum() == 1)
    number = customers.loc[customer_id, "phone_e164"]

    world["twilio"].inbound_sms(number, FROM, "Hi, we already paid this last Tuesday by ACH",
                                url=f"{world['hooks']}/webhooks/twilio/inbound")
    replies = store.read_frame(customer_replies)
    assert replies[["intent", "customer_id"]].values.tolist() == [["paid_already", customer_id]]
    assert store.read_frame(cs.customer_pauses)["customer_id"].tolist() == [customer_id]
    assert store.count(payments_posted) == 0
