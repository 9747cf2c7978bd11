"""Pure outreach rules: quiet hours, the outreach policy section, and the planner (incl. a month simulated)."""

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentcollect_pipeline.rules.cadence import contact_points, mask, plan_outreach
from agentcollect_pipeline.rules.outreach_policy import OutreachPolicy
from agentcollect_pipeline.rules.policy import PolicyError, parse_policy
from agentcollect_pipeline.rules.quiet_hours import (
    Window,
    address_zones,
    allowed_at,
    candidate_zones,
    next_allowed,
    phone_zones,
)

WINDOW = Window(time(8), time(21))


# -- quiet hours ------------------------------------------------------------------------------------


def test_zones_from_phone_and_address():
    assert phone_zones("+14155552671") == ("America/Los_Angeles",)
    assert phone_zones("+12125550100") == ("America/New_York",)
    assert set(phone_zones("+19075550100")) == {"America/Adak", "America/Anchorage"}
    assert phone_zones("+18005550100") == ()  # toll-free: ~40 zones means no information
    assert phone_zones(None) == ()
    assert address_zones("TX", "USA") == ("America/Chicago", "America/Denver")
    assert address_zones("California", "United States") == ("America/Los_Angeles",)
    assert address_zones("ON", "Canada")[0] == "America/Toronto"
    assert address_zones("Greater London", "United Kingdom") == ("Europe/London",)
    assert address_zones(None, "US") == ()  # many zones, no state: unknown
    assert candidate_zones(default="America/New_York") == ("America/New_York",)


def test_window_must_hold_in_every_candidate_zone():
    at = datetime(2026, 11, 24, 13, 30, tzinfo=UTC)  # 08:30 New York, 05:30 San Francisco
    assert allowed_at(at, ("America/New_York",), WINDOW)
    assert not allowed_at(at, ("America/Los_Angeles",), WINDOW)
    both = candidate_zones(state="CA", country="US", phones=["+12125550100"], default="UTC")
    assert not allowed_at(at, both, WINDOW)
    later = next_allowed(at, both, WINDOW)
    assert later == datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # 08:00 in San Francisco
    # 21:00 is already outside; 20:59 inside.
    ny = ZoneInfo("America/New_York")
    assert not allowed_at(datetime(2026, 11, 24, 21, 0, tzinfo=ny), ("America/New_York",), WINDOW)
    assert allowed_at(datetime(2026, 11, 24, 20, 59, tzinfo=ny), ("America/New_York",), WINDOW)
    # Zones whose windows never overlap have no allowed moment.
    assert next_allowed(at, ("Pacific/Honolulu", "Asia/Tokyo", "Europe/London"), WINDOW) is None


def test_mask_hides_most_of_the_address():
    assert mask("jane.doe@example.com") == "j***@example.com"
    assert mask("+14155552671") == "+1415***2671"


# -- policy section -------------------------------------------------------------------------------


def test_outreach_policy_defaults_and_strict_errors():
    policy = parse_policy("version: 1\n").outreach
    assert [s.channel for s in policy.ladder] == ["email", "sms", "email", "voice", "email"]
    custom = parse_policy(
        "outreach:\n"
        "  ladder:\n"
        "    - {step: a, day: 0, channel: email, tone: friendly}\n"
        "    - {step: b, day: 2, channel: voice, tone: firm}\n"
        "  caps: {contacts_per_customer_per_day: 1, calls_per_7_days: 2}\n"
        "  windows: {email: {start: '07:00', end: '22:00'}, sms: {start: '09:00', end: '17:00'}}\n"
        "  consumer: {account_types: {'1': business}}\n"
        "  escalation: {voice_at_total_due: {USD: 10000.00}, voice_at_days_overdue: 90}\n"
    ).outreach
    assert custom.caps.calls_per_7_days == 2
    assert custom.window("sms").start == time(9)
    assert custom.voice_at_total_due_cents == {"USD": 1_000_000}
    assert custom.consumer.is_consumer("2") and custom.consumer.is_consumer(None)
    assert not custom.consumer.is_consumer("1")
    for text, key in [
        ("outreach: {cadence: []}\n", "outreach.cadence"),
        ("outreach: {ladder: [{step: a, day: 0, channel: fax}]}\n", "outreach.ladder[0].channel"),
        ("outreach: {windows: {sms: {start: '07:00', end: '21:00'}}}\n", "outreach.windows.sms"),
        ("outreach: {consumer: {calls_per_7_days: 8}}\n", "outreach.consumer.calls_per_7_days"),
        ("outreach: {consent_required: [sms]}\n", "outreach.consent_required"),
        ("outreach: {caps: {per_day: 1}}\n", "outreach.caps.per_day"),
    ]:
        with pytest.raises(PolicyError, match=key.replace("[", r"\[").replace("]", r"\]")):
            parse_policy(text)


# -- planner ------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)  # 12:00 New York, 09:00 San Francisco


def _book(**customer):
    base = dict(customer_id="c1", email="ap@debtor.example", phone_e164="+12125550100", account_type="1",
                bill_state="NY", bill_country="USA", validation_errors=None, is_active=True)
    base.update(customer)
    customers = pd.DataFrame([base])
    contacts = pd.DataFrame(columns=["customer_id", "email", "phone_e164", "is_active", "validation_errors"])
    return customers, contact_points(customers, contacts)


def _case(**overrides):
    base = dict(case_id="K1", customer_id="c1", currency="USD", invoice_ids="i1,i2", invoice_count=2,
                total_due_cents=250_000, oldest_days_overdue=45, priority_score=1.0,
                opened_at=NOW - timedelta(days=20))
    base.update(overrides)
    return pd.DataFrame([base])


def _empty(*columns):
    return pd.DataFrame(columns=list(columns))


def _plan(cases, customers, points, *, opt_outs=None, consents=None, history=None, now=NOW, policy=None):
    return plan_outreach(
        cases, customers, points,
        opt_outs if opt_outs is not None else _empty("channel", "address"),
        consents if consents is not None else _empty("channel", "address", "revoked_at"),
        _empty("channel", "address"),
        history if history is not None else _empty("case_id", "customer_id", "step", "channel", "status",
                                                   "reserved_at", "conversation_at"),
        now, policy or OutreachPolicy(), "America/New_York",
    )


def _history(rows):
    return pd.DataFrame(rows, columns=["case_id", "customer_id", "step", "channel", "status", "reserved_at",
                                       "conversation_at"])


def test_first_step_is_email_then_the_ladder_waits_for_spacing():
    customers, points = _book()
    plan = _plan(_case(), customers, points)
    assert plan.due[["step", "channel", "destination"]].values.tolist() == [
        ["reminder_email", "email", "ap@debtor.example"]]
    assert "USD 2,500.00" in plan.due["why"].iloc[0] or "2,500.00" in plan.due["why"].iloc[0]
    history = _history([("K1", "c1", "reminder_email", "email", "sent", NOW - timedelta(hours=2), None)])
    plan = _plan(_case(), customers, points, history=history)
    assert plan.due.empty
    assert "not yet due" in plan.waiting["reason"].iloc[0]
    assert plan.waiting["step"].iloc[0] == "firm_email"  # SMS skipped: no consent recorded


def test_sms_needs_consent_and_no_opt_out_and_respects_quiet_hours():
    customers, points = _book()
    consents = pd.DataFrame([("sms", "+12125550100", None)], columns=["channel", "address", "revoked_at"])
    history = _history([("K1", "c1", "reminder_email", "email", "sent", NOW - timedelta(days=4), None)])
    plan = _plan(_case(), customers, points, consents=consents, history=history)
    assert plan.due["step"].tolist() == ["reminder_sms"]
    opted = pd.DataFrame([("sms", "+12125550100")], columns=["channel", "address"])
    plan = _plan(_case(), customers, points, consents=consents, history=history, opt_outs=opted)
    assert plan.due["step"].tolist() == ["firm_email"] or plan.due.empty
    late = NOW.replace(hour=3)  # 22:00 New York the day before
    plan = _plan(_case(), customers, points, consents=consents, history=history, now=late)
    assert plan.due.empty and plan.waiting["reason"].iloc[0].startswith("outside 08:00-21:00")
    assert plan.waiting["next_at"].iloc[0] == late.replace(hour=13)


def test_daily_cap_and_one_action_per_customer():
    customers, points = _book()
    cases = pd.concat([_case(), _case(case_id="K2", currency="CAD", priority_score=0.5)])
    plan = _plan(cases, customers, points)
    assert plan.due["case_id"].tolist() == ["K1"]
    history = _history([("K2", "c1", "reminder_email", "email", "sent", NOW - timedelta(hours=23), None)])
    plan = _plan(cases, customers, points, history=history)
    assert plan.due.empty
    assert "daily contact cap" in plan.waiting["reason"].iloc[0]


def test_escalation_and_consumer_call_rules():
    customers, points = _book(account_type="2")  # a person: consumer rules
    consents = pd.DataFrame([("voice", "+12125550100", None)], columns=["channel", "address", "revoked_at"])
    policy = parse_policy("outreach: {escalation: {voice_at_days_overdue: 40}}\n").outreach
    plan = _plan(_case(), customers, points, consents=consents, policy=policy)
    assert plan.due["step"].tolist() == ["reminder_call"] and plan.due["consumer"].iloc[0]
    talked = _history([("K0", "c1", "x", "voice", "completed", NOW - timedelta(days=3), NOW - timedelta(days=3))])
    plan = _plan(_case(), customers, points, consents=consents, policy=policy, history=talked)
    assert plan.due.empty and "after a conversation" in plan.waiting["reason"].iloc[0]


# -- a month on the pure planner ------------------------------------------------------------------

_STATES = [("NY", "+1212555", "America/New_York"), ("CA", "+1415555", "America/Los_Angeles"),
           ("TX", "+1512555", "America/Chicago"), ("IL", "+1312555", "America/Chicago"),
           ("AZ", "+1602555", "America/Phoenix"), (None, "+1800555", None)]


def _simulate(seed: int, days: int = 30, customers: int = 16, extra_policy: str = "") -> dict:
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    policy = parse_policy(
        "outreach:\n  escalation: {voice_at_total_due: {USD: 20000.00}}\n"
        "  caps: {contacts_per_customer_per_day: 1, calls_per_7_days: 2}\n" + extra_policy
    ).outreach
    rows, consents = [], []
    invoices: dict[str, dict] = {}
    for n in range(customers):
        state, prefix, _ = rng.choice(_STATES)
        phone = f"{prefix}{rng.randint(100, 199):04d}"
        rows.append(dict(customer_id=f"c{n}", email=f"ap{n}@debtor.example", phone_e164=phone,
                         account_type=rng.choice(["1", "2", None, "9"]), bill_state=state,
                         bill_country="USA" if state else None, validation_errors=None, is_active=True))
        for channel in ("sms", "voice"):
            if rng.random() < 0.6:
                consents.append((channel, phone, None))
        for k in range(rng.randint(1, 3)):
            invoices[f"i{n}_{k}"] = dict(customer_id=f"c{n}", cents=rng.randint(5_000, 3_000_000), paid_at=None)
    customers_frame = pd.DataFrame(rows)
    points = contact_points(customers_frame, _empty("customer_id", "email", "phone_e164", "is_active",
                                                     "validation_errors"))
    consent_frame = pd.DataFrame(consents, columns=["channel", "address", "revoked_at"])
    opt_outs: list[tuple[str, str, datetime]] = []
    sent: list[dict] = []
    opened = {}
    cache: dict = {}
    now = start
    while now < start + timedelta(days=days):
        # The world moves: payments, opt-outs, replies.
        for invoice in invoices.values():
            if invoice["paid_at"] is None and rng.random() < 0.0015:
                invoice["paid_at"] = now
        if rng.random() < 0.01:
            customer = rng.choice(rows)
            channel = rng.choice(["email", "sms", "voice"])
            address = customer["email"] if channel == "email" else customer["phone_e164"]
            opt_outs.append((channel, address, now))
        open_by_customer: dict[str, list[str]] = {}
        for invoice_id, invoice in invoices.items():
            if invoice["paid_at"] is None:
                open_by_customer.setdefault(invoice["customer_id"], []).append(invoice_id)
        # Frames are rebuilt only when their facts change: building them is most of the simulation's cost.
        version = (tuple(map(len, open_by_customer.values())), len(open_by_customer), len(opt_outs), len(sent))
        if version != cache.get("version"):
            cache["version"] = version
            cache["cases"] = pd.DataFrame([
                dict(case_id=f"K{cid}", customer_id=cid, currency="USD", invoice_ids=",".join(ids),
                     invoice_count=len(ids), total_due_cents=sum(invoices[i]["cents"] for i in ids),
                     oldest_days_overdue=40, priority_score=float(len(ids)),
                     opened_at=opened.setdefault(cid, now))
                for cid, ids in open_by_customer.items()
            ])
            cache["opt_outs"] = pd.DataFrame([o[:2] for o in opt_outs], columns=["channel", "address"])
            cache["history"] = _history([
                (s["case_id"], s["customer_id"], s["step"], s["channel"], "sent", s["at"], s["talked"]) for s in sent
            ])
        plan = _plan(cache["cases"], customers_frame, points, opt_outs=cache["opt_outs"], consents=consent_frame,
                     history=cache["history"], now=now, policy=policy)
        for action in plan.due.itertuples(index=False):
            talked = now if action.channel == "voice" and rng.random() < 0.3 else None
            sent.append(dict(case_id=action.case_id, customer_id=action.customer_id, step=action.step,
                             channel=action.channel, destination=action.destination, at=now, talked=talked,
                             invoices=action.invoice_ids.split(","), consumer=bool(action.consumer)))
        now += timedelta(minutes=15)
    return dict(sent=sent, invoices=invoices, opt_outs=opt_outs, customers={r["customer_id"]: r for r in rows},
                consents={(c[0], c[1]) for c in consents}, policy=policy)


def _check_month(world: dict) -> None:
    sent, customers = world["sent"], world["customers"]
    assert sent, "the simulation sent nothing at all"
    zone_of_state = {s: z for s, _, z in _STATES if s}
    per_day = set()
    for s in sent:
        customer = customers[s["customer_id"]]
        # Quiet hours, re-derived independently: the state's main zone and the phone's area-code zone.
        zones = {zone_of_state.get(customer["bill_state"])} | set(phone_zones(customer["phone_e164"]))
        zones.discard(None)
        zones = zones or {"America/New_York"}
        for zone in zones:
            local = s["at"].astimezone(ZoneInfo(zone))
            assert time(8) <= local.time() < time(21), (s, zone)
            policy = world["policy"]
            assert local.date() not in policy.holidays, (s, zone)
            assert not (policy.business_days_only and local.weekday() >= 5), (s, zone)
            key = (s["customer_id"], zone, local.date())
            assert key not in per_day, f"two contacts in one day: {s}"
            per_day.add(key)
        # Opt-outs recorded before the send are honoured.
        assert not any(ch == s["channel"] and addr == s["destination"] and at <= s["at"]
                       for ch, addr, at in world["opt_outs"])
        # Consent for automated texts and calls.
        if s["channel"] != "email":
            assert (s["channel"], s["destination"]) in world["consents"]
        # Never about a paid invoice.
        for invoice_id in s["invoices"]:
            paid = world["invoices"][invoice_id]["paid_at"]
            assert paid is None or paid > s["at"]
    calls = [s for s in sent if s["channel"] == "voice"]
    cap = world["policy"].caps.calls_per_7_days
    for call in calls:
        window = [c for c in calls if c["customer_id"] == call["customer_id"]
                  and call["at"] - timedelta(days=7) < c["at"] <= call["at"]]
        assert len(window) <= cap
        if call["consumer"]:
            earlier_talks = [c["talked"] for c in calls if c["customer_id"] == call["customer_id"]
                             and c["talked"] is not None and c["talked"] < call["at"]]
            assert all(call["at"] >= t + timedelta(days=7) for t in earlier_talks)
    # At most once per (case, step).
    keys = [(s["case_id"], s["step"]) for s in sent]
    assert len(keys) == len(set(keys))


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=10_000))
def test_a_month_at_15_minute_steps_never_breaks_the_rules(seed):
    world = _simulate(seed)
    _check_month(world)
    assert {s["channel"] for s in world["sent"]} >= {"email"}


# -- business days and holidays ---------------------------------------------------------------------


def test_business_days_and_holidays_are_validated_strictly():
    policy = parse_policy("outreach:\n  business_days_only: true\n  holidays: [2026-12-25, '2027-01-01']\n").outreach
    assert policy.business_days_only
    assert policy.holidays == {date(2026, 12, 25), date(2027, 1, 1)}
    assert not OutreachPolicy().business_days_only and not OutreachPolicy().holidays
    for text, key in [
        ("outreach: {business_days_only: 'yes please'}\n", "outreach.business_days_only"),
        ("outreach: {business_days_only: 1}\n", "outreach.business_days_only"),
        ("outreach: {holidays: 2026-12-25}\n", "outreach.holidays"),
        ("outreach: {holidays: [2026-12-25, 'Christmas']}\n", "outreach.holidays[1]"),
        ("outreach: {holidays: ['2026-02-30']}\n", "outreach.holidays[0]"),
        ("outreach: {holidays: [2026-12-25T10:00:00Z]}\n", "outreach.holidays[0]"),
    ]:
        with pytest.raises(PolicyError, match=key.replace("[", r"\[").replace("]", r"\]")):
            parse_policy(text)


def test_a_step_on_a_weekend_or_holiday_waits_for_the_next_business_day():
    customers, points = _book()  # New York
    policy = parse_policy("outreach:\n  business_days_only: true\n  holidays: [2026-11-30]\n").outreach
    saturday = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)  # 12:00 New York, Saturday
    plan = _plan(_case(), customers, points, now=saturday, policy=policy)
    assert plan.due.empty
    reason, next_at = plan.waiting[["reason", "next_at"]].iloc[0]
    assert reason.startswith("not a business day") and "Saturday" in reason
    # Sunday, then Monday 30 November (a holiday): Tuesday 08:00 New York.
    assert next_at == datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    assert not _plan(_case(), customers, points, now=next_at, policy=policy).due.empty
    # Without business_days_only a listed holiday still blocks, a weekend does not.
    holidays_only = parse_policy("outreach:\n  holidays: [2026-11-30]\n").outreach
    assert not _plan(_case(), customers, points, now=saturday, policy=holidays_only).due.empty
    monday = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
    plan = _plan(_case(), customers, points, now=monday, policy=holidays_only)
    assert plan.due.empty and "(holiday)" in plan.waiting["reason"].iloc[0]
    # Outside the window on Friday night: the next moment skips the weekend too.
    friday_night = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # Friday 22:00 New York
    plan = _plan(_case(), customers, points, now=friday_night, policy=policy)
    assert plan.waiting["next_at"].iloc[0] == datetime(2026, 12, 1, 13, 0, tzinfo=UTC)


def test_business_days_hold_in_every_candidate_zone():
    # Billing address in Hawaii, number in New York. At 05:00 UTC on Tuesday 1 December it is Tuesday in
    # New York but still Monday 30 November (the holiday) in Honolulu: no contact until Honolulu's midnight.
    customers, points = _book(bill_state="HI", phone_e164="+12125550100")
    policy = parse_policy("outreach:\n  holidays: [2026-11-30]\n  windows: {email: {start: '00:00', end: '23:59'}}\n"
                          ).outreach
    tuesday_ny = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)  # 00:00 New York Tuesday, 19:00 Honolulu Monday
    plan = _plan(_case(), customers, points, now=tuesday_ny, policy=policy)
    assert plan.due.empty and "Pacific/Honolulu 2026-11-30 (holiday)" in plan.waiting["reason"].iloc[0]
    assert plan.waiting["next_at"].iloc[0] == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # Honolulu midnight


def test_a_month_on_business_days_keeps_every_rule_and_skips_weekends_and_holidays():
    world = _simulate(11, extra_policy="  business_days_only: true\n  holidays: [2026-11-26, 2026-11-27]\n")
    _check_month(world)
    days = {s["at"].astimezone(ZoneInfo("America/New_York")).date() for s in world["sent"]}
    assert days and all(d.weekday() < 5 and d not in (date(2026, 11, 26), date(2026, 11, 27)) for d in days)
