"""The `outreach:` section of collection_policy.yaml: cadence ladder, escalation, caps, windows, consumers,
business days and holidays.

Parsed as strictly as the rest of the policy (rules/policy.py): unknown keys, bad channels, windows wider
than the 08:00-21:00 hard floor for SMS/voice, duplicate step names, a non-boolean `business_days_only` or a
holiday that is not a YYYY-MM-DD date stop the run with the key path.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from agentcollect_pipeline.money import MoneyError, to_minor_units
from agentcollect_pipeline.rules.quiet_hours import Window

CHANNELS = ("email", "sms", "voice")
TONES = ("friendly", "firm", "final")
# Reg F presumption (outreach-channels.md §4): nobody may configure texts or calls outside it.
HARD_FLOOR = Window(time(8, 0), time(21, 0))


@dataclass(frozen=True)
class Step:
    name: str
    day: int  # days after the case opened
    channel: str
    tone: str = "friendly"


@dataclass(frozen=True)
class Caps:
    contacts_per_customer_per_day: int = 1
    calls_per_7_days: int = 3


@dataclass(frozen=True)
class ConsumerRules:
    # Bill.com accountType code -> "business" | "consumer". Codes not listed are consumer (when in doubt).
    account_types: Mapping[str, str] = field(default_factory=lambda: {"1": "business", "2": "consumer"})
    calls_per_7_days: int = 7  # Reg F §1006.14(b)(2): more than 7 in 7 days is presumed harassment
    quiet_days_after_conversation: int = 7

    def is_consumer(self, account_type: str | None) -> bool:
        return self.account_types.get((account_type or "").strip(), "consumer") != "business"


@dataclass(frozen=True)
class OutreachPolicy:
    ladder: tuple[Step, ...] = (
        Step("reminder_email", 0, "email", "friendly"),
        Step("reminder_sms", 3, "sms", "friendly"),
        Step("firm_email", 7, "email", "firm"),
        Step("reminder_call", 10, "voice", "firm"),
        Step("final_email", 14, "email", "final"),
    )
    windows: Mapping[str, Window] = field(default_factory=lambda: {ch: HARD_FLOOR for ch in CHANNELS})
    caps: Caps = Caps()
    consumer: ConsumerRules = ConsumerRules()
    # Escalation: cases at or above these skip ahead to the first voice step.
    voice_at_total_due_cents: Mapping[str, int] = field(default_factory=dict)
    voice_at_days_overdue: int | None = None
    # TCPA §227(b)(1)(A)(iii): automated texts and artificial-voice calls need recorded consent per number.
    consent_required: frozenset[str] = frozenset({"sms", "voice"})
    # No contact on Saturdays/Sundays (when true) nor on the listed holidays (always), in the debtor's local
    # date in every candidate zone: a step falling on such a day waits for the next business day.
    business_days_only: bool = False
    holidays: frozenset[date] = frozenset()

    def window(self, channel: str) -> Window:
        return self.windows.get(channel, HARD_FLOOR)


_KEYS = {"ladder", "windows", "caps", "consumer", "escalation", "consent_required", "business_days_only",
         "holidays"}
_STEP_KEYS = {"step", "day", "channel", "tone"}
_CAP_KEYS = {"contacts_per_customer_per_day", "calls_per_7_days"}
_CONSUMER_KEYS = {"account_types", "calls_per_7_days", "quiet_days_after_conversation"}
_ESCALATION_KEYS = {"voice_at_total_due", "voice_at_days_overdue"}

Fail = Callable[[str, str], Exception]


def parse_outreach(raw: Any, fail: Fail) -> OutreachPolicy:
    if raw is None:
        return OutreachPolicy()
    if not isinstance(raw, dict):
        raise fail("outreach", f"expected a mapping, got {type(raw).__name__}")
    _known(raw, _KEYS, "outreach.", fail)
    default = OutreachPolicy()

    ladder = default.ladder
    if "ladder" in raw:
        if not isinstance(raw["ladder"], list) or not raw["ladder"]:
            raise fail("outreach.ladder", "expected a non-empty list of steps")
        steps, names = [], set()
        for index, item in enumerate(raw["ladder"]):
            key = f"outreach.ladder[{index}]"
            if not isinstance(item, dict):
                raise fail(key, "expected a mapping with step, day, channel, tone")
            _known(item, _STEP_KEYS, f"{key}.", fail)
            name = item.get("step")
            if not isinstance(name, str) or not name.strip():
                raise fail(f"{key}.step", f"expected a step name, got {name!r}")
            if name in names:
                raise fail(f"{key}.step", f"duplicate step name {name!r} (step names key the ledger)")
            names.add(name)
            day = _whole(item.get("day"), f"{key}.day", fail)
            channel = item.get("channel")
            if channel not in CHANNELS:
                raise fail(f"{key}.channel", f"expected one of {', '.join(CHANNELS)}, got {channel!r}")
            tone = item.get("tone", "friendly")
            if tone not in TONES:
                raise fail(f"{key}.tone", f"expected one of {', '.join(TONES)}, got {tone!r}")
            steps.append(Step(name.strip(), day, channel, tone))
        if [s.day for s in steps] != sorted(s.day for s in steps):
            raise fail("outreach.ladder", "steps must be in order of their day offsets")
        ladder = tuple(steps)

    windows = dict(default.windows)
    raw_windows = raw.get("windows") or {}
    if not isinstance(raw_windows, dict):
        raise fail("outreach.windows", "expected a mapping of channel -> {start, end}")
    for channel, spec in raw_windows.items():
        key = f"outreach.windows.{channel}"
        if channel not in CHANNELS:
            raise fail(key, f"unknown channel (expected one of {', '.join(CHANNELS)})")
        if not isinstance(spec, dict):
            raise fail(key, "expected {start: 'HH:MM', end: 'HH:MM'}")
        _known(spec, {"start", "end"}, f"{key}.", fail)
        window = Window(_clock(spec.get("start", "08:00"), f"{key}.start", fail),
                        _clock(spec.get("end", "21:00"), f"{key}.end", fail))
        if window.start >= window.end:
            raise fail(key, "start must be before end")
        if channel in ("sms", "voice") and (window.start < HARD_FLOOR.start or window.end > HARD_FLOOR.end):
            raise fail(key, "texts and calls must stay within 08:00-21:00 debtor-local time")
        windows[channel] = window

    caps_raw = _mapping(raw.get("caps"), "outreach.caps", fail)
    _known(caps_raw, _CAP_KEYS, "outreach.caps.", fail)
    caps = Caps(
        contacts_per_customer_per_day=_whole(
            caps_raw.get("contacts_per_customer_per_day", 1), "outreach.caps.contacts_per_customer_per_day", fail
        ),
        calls_per_7_days=_whole(caps_raw.get("calls_per_7_days", 3), "outreach.caps.calls_per_7_days", fail),
    )

    consumer_raw = _mapping(raw.get("consumer"), "outreach.consumer", fail)
    _known(consumer_raw, _CONSUMER_KEYS, "outreach.consumer.", fail)
    mapping = dict(ConsumerRules().account_types)
    if "account_types" in consumer_raw:
        given = _mapping(consumer_raw["account_types"], "outreach.consumer.account_types", fail)
        mapping = {}
        for code, kind in given.items():
            if kind not in ("business", "consumer"):
                raise fail(f"outreach.consumer.account_types.{code}", f"expected business or consumer, got {kind!r}")
            mapping[str(code).strip()] = kind
    consumer_calls = _whole(consumer_raw.get("calls_per_7_days", 7), "outreach.consumer.calls_per_7_days", fail)
    if consumer_calls > 7:
        raise fail("outreach.consumer.calls_per_7_days", "Regulation F presumes more than 7 calls in 7 days harassing")
    quiet = _whole(consumer_raw.get("quiet_days_after_conversation", 7),
                   "outreach.consumer.quiet_days_after_conversation", fail)
    if quiet < 7:
        raise fail("outreach.consumer.quiet_days_after_conversation", "Regulation F requires at least 7")
    consumer = ConsumerRules(account_types=mapping, calls_per_7_days=consumer_calls, quiet_days_after_conversation=quiet)

    escalation = _mapping(raw.get("escalation"), "outreach.escalation", fail)
    _known(escalation, _ESCALATION_KEYS, "outreach.escalation.", fail)
    thresholds: dict[str, int] = {}
    for currency, amount in _mapping(escalation.get("voice_at_total_due"), "outreach.escalation.voice_at_total_due",
                                     fail).items():
        key = f"outreach.escalation.voice_at_total_due.{currency}"
        if isinstance(amount, bool) or not isinstance(amount, int | Decimal | str):
            raise fail(key, f"expected an amount such as 10000.00, got {amount!r}")
        try:
            thresholds[str(currency)] = to_minor_units(amount, str(currency))
        except MoneyError as exc:
            raise fail(key, str(exc)) from None
    days = escalation.get("voice_at_days_overdue")
    days = None if days is None else _whole(days, "outreach.escalation.voice_at_days_overdue", fail)

    consent = raw.get("consent_required", ["sms", "voice"])
    if not isinstance(consent, list) or any(c not in ("sms", "voice") for c in consent):
        raise fail("outreach.consent_required", "expected a list of sms/voice")
    if set(consent) != {"sms", "voice"}:
        # Not switchable off: TCPA consent applies to automated texts and calls, B2B mobiles included.
        raise fail("outreach.consent_required", "automated sms and voice always require recorded consent")

    business_days_only = raw.get("business_days_only", False)
    if not isinstance(business_days_only, bool):
        raise fail("outreach.business_days_only", f"expected true or false, got {business_days_only!r}")
    holidays = _holidays(raw.get("holidays"), fail)

    return OutreachPolicy(
        ladder=ladder, windows=windows, caps=caps, consumer=consumer,
        voice_at_total_due_cents=thresholds, voice_at_days_overdue=days,
        business_days_only=business_days_only, holidays=holidays,
    )


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _holidays(value: Any, fail: Fail) -> frozenset[date]:
    """`holidays: [2026-12-25, ...]`: YAML reads an unquoted date as a date; a quoted one must be YYYY-MM-DD."""
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise fail("outreach.holidays", f"expected a list of dates (YYYY-MM-DD), got {type(value).__name__}")
    days: set[date] = set()
    for index, item in enumerate(value):
        key = f"outreach.holidays[{index}]"
        if isinstance(item, date) and not isinstance(item, datetime):
            days.add(item)
            continue
        if isinstance(item, str) and _ISO_DATE.fullmatch(item.strip()):
            try:
                days.add(date.fromisoformat(item.strip()))
                continue
            except ValueError:
                raise fail(key, f"not a calendar date: {item!r}") from None
        raise fail(key, f"expected a date YYYY-MM-DD, got {item!r}")
    return frozenset(days)


def _known(mapping: dict, known: set[str], prefix: str, fail: Fail) -> None:
    for key in mapping:
        if key not in known:
            raise fail(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(sorted(known))})")


def _mapping(value: Any, key: str, fail: Fail) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(key, f"expected a mapping, got {type(value).__name__}")
    return value


def _whole(value: Any, key: str, fail: Fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(key, f"expected a whole number >= 0, got {value!r}")
    return value


def _clock(value: Any, key: str, fail: Fail) -> time:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML reads 08:00 as sexagesimal 480
        value = f"{value // 60:02d}:{value % 60:02d}"
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise fail(key, f"expected HH:MM, got {value!r}") from None
