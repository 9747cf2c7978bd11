"""The outreach planner: (cases, contacts, opt-outs, consent, ledger history, now) -> due actions, with why.

Pure: no clock, no database, no provider. The sending job and the month-long simulation test call the same
function, so what the simulation proves (never outside quiet hours, never twice a day, never over the call
caps, never after an opt-out, never about a paid invoice - cases only hold eligible invoices - and, when the
policy says so, never on a weekend or holiday in the debtor's local date) holds for the job too. One action per customer per plan at most; the ledger's unique (case_id, step) does the rest.

Per case the loop is plain Python: a plan covers the open cases (thousands, not millions) and each decision
needs several small lookups; the per-customer facts are precomputed once into dicts.
"""

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from agentcollect_pipeline.money import format_money
from agentcollect_pipeline.rules.outreach_policy import OutreachPolicy, Step
from agentcollect_pipeline.rules.quiet_hours import (
    Window,
    allowed_at,
    candidate_zones,
    closed_days,
    next_allowed,
    next_business_moment,
)

# Ledger statuses that did not reach anyone and never will: they do not count against caps.
NOT_CONTACTS = frozenset({"cancelled"})
# A reservation the provider refused to take (429 past the retry budget): neither a contact nor a step done;
# the step is planned again and its row re-reserved (ledger.reserve).
RELEASED = frozenset({"released"})
DAY = timedelta(days=1)
WEEK = timedelta(days=7)

DUE_COLUMNS = [
    "case_id", "customer_id", "currency", "step", "step_index", "channel", "tone", "destination",
    "invoice_ids", "total_due_cents", "oldest_days_overdue", "consumer", "zones", "why",
]
WAITING_COLUMNS = ["case_id", "customer_id", "step", "channel", "reason", "next_at"]


@dataclass(frozen=True)
class Plan:
    due: pd.DataFrame  # DUE_COLUMNS: send these now
    waiting: pd.DataFrame  # WAITING_COLUMNS: open cases with nothing to send now, and why


def mask(address: str | None) -> str:
    """For previews and logs: a***@example.com, +1415***2671."""
    if not address:
        return ""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"{address[:5]}***{address[-4:]}" if len(address) > 9 else "***"


def contact_points(customers: pd.DataFrame, contacts: pd.DataFrame) -> pd.DataFrame:
    """(customer_id, channel, address, rank): the customer's own email/phone first (rank 0), then its active
    contacts. Emails the sync flagged invalid and phones without an E.164 form are left out (never dialled)."""
    rows: list[tuple[str, str, str, int]] = []

    def add(frame: pd.DataFrame, rank: int) -> None:
        errors = frame.get("validation_errors", pd.Series([None] * len(frame), index=frame.index))
        for customer_id, email, phone, problem in zip(
            frame["customer_id"], frame["email"], frame["phone_e164"], errors, strict=True
        ):
            if pd.isna(customer_id):
                continue
            bad_email = (isinstance(problem, str) and "email:" in problem) or not valid_email(email)
            if isinstance(email, str) and email.strip() and not bad_email:
                rows.append((customer_id, "email", email.strip().lower(), rank))
            if isinstance(phone, str) and phone:
                rows.append((customer_id, "sms", phone, rank))
                rows.append((customer_id, "voice", phone, rank))

    add(customers, 0)
    if len(contacts):
        active = contacts[contacts["is_active"].fillna(False).astype(bool)]
        add(active, 1)
    frame = pd.DataFrame(rows, columns=["customer_id", "channel", "address", "rank"])
    return frame.drop_duplicates(["customer_id", "channel", "address"]).reset_index(drop=True)


_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")


def valid_email(email: object) -> bool:
    """A deliverable-looking address: one @, a dotted domain, no spaces (syntax only; bounces do the rest)."""
    return isinstance(email, str) and len(email.strip()) <= 254 and bool(_EMAIL.match(email.strip()))


def invalid_contact_report(customers: pd.DataFrame, contacts: pd.DataFrame,
                           invalid: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per customer, the contacts that are never used, masked: (customer_id, kind, address, reason).

    kind is `phone` (did not normalise to a valid E.164 number: never dialled or texted) or `email`
    (malformed or flagged by the sync); plus addresses a provider reported undeliverable (invalid_contacts).
    """
    rows: list[tuple[str, str, str, str]] = []
    known: dict[tuple[str, str], set[str]] = {}

    def scan(frame: pd.DataFrame, source: str) -> None:
        if frame is None or frame.empty:
            return
        errors = frame["validation_errors"] if "validation_errors" in frame.columns else pd.Series(
            [None] * len(frame), index=frame.index)
        raw_phones = frame["phone"] if "phone" in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        for customer_id, email, phone, e164, problem in zip(
            frame["customer_id"], frame["email"], raw_phones, frame["phone_e164"], errors, strict=True
        ):
            if not isinstance(customer_id, str):
                continue
            if isinstance(e164, str) and e164:
                known.setdefault(("phone", e164), set()).add(customer_id)
            if isinstance(email, str) and email.strip():
                known.setdefault(("email", email.strip().lower()), set()).add(customer_id)
            if isinstance(phone, str) and phone.strip() and not (isinstance(e164, str) and e164):
                rows.append((customer_id, "phone", mask(phone.strip()), f"{source}: not a valid number"))
            flagged = isinstance(problem, str) and "email:" in problem
            if isinstance(email, str) and email.strip() and (flagged or not valid_email(email)):
                rows.append((customer_id, "email", mask(email.strip()), f"{source}: invalid email"))

    scan(customers, "customer")
    if contacts is not None and len(contacts):
        scan(contacts[contacts["is_active"].fillna(False).astype(bool)], "contact")
    if invalid is not None and len(invalid):
        for channel, address, reason in invalid[["channel", "address", "reason"]].to_numpy(dtype=object).tolist():
            kind = "email" if channel == "email" else "phone"
            for customer_id in sorted(known.get((kind, str(address).strip().lower() if kind == "email"
                                                 else str(address).strip()), ())):
                rows.append((customer_id, kind, mask(str(address)), f"provider: {reason}"))
    frame = pd.DataFrame(rows, columns=["customer_id", "kind", "address", "reason"])
    return frame.drop_duplicates().sort_values(["customer_id", "kind"]).reset_index(drop=True)


class _Row(dict):
    """A row as attributes (`row.case_id`): itertuples is slow on pandas 3 and the plan runs every 15 min."""

    __getattr__ = dict.get


def _rows(frame: pd.DataFrame | None) -> list[_Row]:
    if frame is None or frame.empty:
        return []
    names = [str(c) for c in frame.columns]
    # One conversion of the whole block: per-column access costs ~0.1 ms each on pandas 3.
    return [_Row(zip(names, values, strict=True)) for values in frame.to_numpy(dtype=object).tolist()]


def _address_set(frame: pd.DataFrame | None, *, active_only: bool = False) -> set[tuple[str, str]]:
    if frame is None or frame.empty:
        return set()
    if active_only and "revoked_at" in frame.columns:
        frame = frame[frame["revoked_at"].isna()]
    return {
        (str(ch), str(addr).strip().lower() if ch == "email" else str(addr).strip())
        for ch, addr in frame[["channel", "address"]].to_numpy(dtype=object).tolist()
        if isinstance(addr, str)
    }


def plan_outreach(
    cases: pd.DataFrame,
    debtors: pd.DataFrame,
    points: pd.DataFrame,
    opt_outs: pd.DataFrame,
    consents: pd.DataFrame,
    invalid: pd.DataFrame,
    history: pd.DataFrame,
    now: datetime,
    policy: OutreachPolicy,
    default_timezone: str,
) -> Plan:
    """What to send now.

    cases: collection_cases rows (case_id, customer_id, currency, invoice_ids, total_due_cents,
      oldest_days_overdue, priority_score, opened_at); debtors: billcom_customers rows (customer_id,
      account_type, bill_state, bill_country); points: contact_points(); opt_outs/invalid: (channel, address);
      consents: (channel, address, revoked_at); history: outreach_attempts rows (case_id, customer_id, step,
      channel, status, reserved_at, conversation_at).
    """
    if now.tzinfo is None:
        raise ValueError("plan_outreach needs an aware 'now'")
    opted = _address_set(opt_outs)
    bad = _address_set(invalid)
    consented = _address_set(consents, active_only=True)
    ladder = policy.ladder
    index_of = {s.name: i for i, s in enumerate(ladder)}
    first_voice = next((i for i, s in enumerate(ladder) if s.channel == "voice"), None)

    debtor = {row.customer_id: row for row in _rows(debtors)}
    by_customer: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in sorted(_rows(points), key=lambda r: (r.rank, r.address)):
        by_customer[row.customer_id][row.channel].append(row.address)

    # Ledger facts, once: per case the steps done and the last attempt; per customer every contact time,
    # call times (per customer and per case) and the last conversation.
    steps_done: dict[str, dict[int, datetime]] = defaultdict(dict)
    contacts_at: dict[str, list[datetime]] = defaultdict(list)
    calls_at: dict[str, list[datetime]] = defaultdict(list)
    case_calls_at: dict[str, list[datetime]] = defaultdict(list)
    conversation_at: dict[str, datetime] = {}
    if len(history):
        for row in _rows(history):
            if row.status in RELEASED:
                continue
            at = _aware(row.reserved_at)
            if row.step in index_of:
                steps_done[row.case_id][index_of[row.step]] = at
            if row.status in NOT_CONTACTS or at is None:
                continue
            contacts_at[row.customer_id].append(at)
            if row.channel == "voice":
                calls_at[row.customer_id].append(at)
                case_calls_at[row.case_id].append(at)
            talked = _aware(row.conversation_at)
            if talked is not None and talked > conversation_at.get(row.customer_id, talked - DAY):
                conversation_at[row.customer_id] = talked

    due: list[dict] = []
    waiting: list[dict] = []
    served: set[str] = set()
    ordered = sorted(_rows(cases), key=lambda c: (-float(c.priority_score or 0), c.case_id))

    for case in ordered:
        customer_id = case.customer_id
        info = debtor.get(customer_id)
        account_type = info.account_type if info is not None else None
        consumer = policy.consumer.is_consumer(None if pd.isna(account_type) else account_type)

        def wait(step: Step | None, reason: str, next_at: datetime | None = None, case=case) -> None:
            waiting.append({
                "case_id": case.case_id, "customer_id": case.customer_id,
                "step": step.name if step else None, "channel": step.channel if step else None,
                "reason": reason, "next_at": next_at,
            })

        done = steps_done.get(case.case_id, {})
        last_index = max(done) if done else -1
        start = last_index + 1
        escalated = first_voice is not None and first_voice >= start and _escalates(case, policy)
        if escalated:
            start = first_voice
        channels = by_customer.get(customer_id, {})
        chosen: tuple[int, Step, str] | None = None
        skipped: list[str] = []
        for index in range(start, len(ladder)):
            step = ladder[index]
            destination, problem = _destination(step.channel, channels.get(step.channel, []), opted, bad, consented,
                                                 policy)
            if destination is None:
                skipped.append(f"{step.name}: {problem}")
                continue
            chosen = (index, step, destination)
            break
        if chosen is None:
            wait(None, "ladder finished" if not skipped else "no usable channel for the remaining steps: "
                 + "; ".join(skipped))
            continue
        index, step, destination = chosen

        # When: the step's day offset from the case start, and no sooner after the previous step than the
        # ladder's own spacing (a case found late does not get the whole ladder on consecutive days).
        opened = _aware(case.opened_at)
        due_at = now if escalated and index == first_voice else opened + timedelta(days=step.day)
        if done:
            last_at = done[last_index]
            spacing = max(0, step.day - ladder[last_index].day) if last_index >= 0 else 0
            due_at = max(due_at, last_at + timedelta(days=spacing))
        if due_at > now:
            wait(step, f"not yet due (day {step.day} of the ladder)", due_at)
            continue
        if customer_id in served:
            wait(step, "another case of this customer is contacted first")
            continue

        # Caps: contacts per customer per rolling day (which also bounds every calendar day, in any zone).
        recent = sorted(t for t in contacts_at.get(customer_id, []) if t > now - DAY)
        if len(recent) >= policy.caps.contacts_per_customer_per_day:
            wait(step, "daily contact cap reached", recent[0] + DAY)
            continue
        if step.channel == "voice":
            blocked = _call_block(customer_id, case.case_id, consumer, now, policy, calls_at, case_calls_at,
                                  conversation_at)
            if blocked is not None:
                wait(step, *blocked)
                continue

        # Quiet hours: every candidate zone of the debtor (address, and the number being used or the
        # customer's main number for email) must be inside the channel's window.
        phones = [destination] if step.channel != "email" else channels.get("sms", [])[:1]
        zones = candidate_zones(
            state=_text(info.bill_state if info else None), country=_text(info.bill_country if info else None),
            phones=phones, default=default_timezone,
        )
        window = policy.window(step.channel)
        if not allowed_at(now, zones, window):
            wait(step, f"outside {window.start:%H:%M}-{window.end:%H:%M} in {', '.join(zones)}",
                 _next_contact(now, zones, window, policy))
            continue
        # Business days: a step falling on a weekend (business_days_only) or a holiday in any candidate zone
        # waits for the next business day's window.
        closed = closed_days(now, zones, weekends=policy.business_days_only, holidays=policy.holidays)
        if closed:
            wait(step, f"not a business day: {', '.join(closed)}", _next_contact(now, zones, window, policy))
            continue

        served.add(customer_id)
        why = (
            f"step {step.name} (day {step.day}{', escalated to voice' if escalated else ''}) of case {case.case_id}: "
            f"{len(str(case.invoice_ids).split(','))} "
            f"invoice(s), {format_money(int(case.total_due_cents), case.currency)} due, "
            f"{int(case.oldest_days_overdue)} days overdue; {step.channel} to {mask(destination)}"
            f"{' (consumer rules)' if consumer else ''}"
            + (f"; skipped {'; '.join(skipped)}" if skipped else "")
        )
        due.append({
            "case_id": case.case_id, "customer_id": customer_id, "currency": case.currency, "step": step.name,
            "step_index": index, "channel": step.channel, "tone": step.tone, "destination": destination,
            "invoice_ids": case.invoice_ids, "total_due_cents": int(case.total_due_cents),
            "oldest_days_overdue": int(case.oldest_days_overdue), "consumer": consumer,
            "zones": ",".join(zones), "why": why,
        })

    return Plan(
        due=pd.DataFrame(due, columns=DUE_COLUMNS),
        waiting=pd.DataFrame(waiting, columns=WAITING_COLUMNS),
    )


def _destination(channel: str, addresses: Iterable[str], opted: set, bad: set, consented: set,
                 policy: OutreachPolicy) -> tuple[str | None, str]:
    addresses = list(addresses)
    if not addresses:
        return None, f"no {channel} address"
    reasons = []
    for address in addresses:
        key = (channel, address.lower() if channel == "email" else address)
        if key in opted:
            reasons.append("opted out")
        elif key in bad:
            reasons.append("marked invalid")
        elif channel in policy.consent_required and key not in consented:
            reasons.append("no recorded consent")
        else:
            return address, ""
    return None, f"every {channel} address {'/'.join(sorted(set(reasons)))}"


def _next_contact(now: datetime, zones: tuple[str, ...], window: Window, policy: OutreachPolicy) -> datetime | None:
    """The next moment inside the window in every zone, and on a business day there when the policy says so."""
    if not policy.business_days_only and not policy.holidays:
        return next_allowed(now, zones, window)
    return next_business_moment(now, zones, window, weekends=policy.business_days_only, holidays=policy.holidays)


def _escalates(case, policy: OutreachPolicy) -> bool:
    threshold = policy.voice_at_total_due_cents.get(case.currency)
    if threshold is not None and int(case.total_due_cents) >= threshold:
        return True
    return policy.voice_at_days_overdue is not None and int(case.oldest_days_overdue) >= policy.voice_at_days_overdue


def _call_block(customer_id, case_id, consumer, now, policy, calls_at, case_calls_at, conversation_at):
    week = sorted(t for t in calls_at.get(customer_id, []) if t > now - WEEK)
    if len(week) >= policy.caps.calls_per_7_days:
        return "call cap reached (per customer, 7 days)", week[len(week) - policy.caps.calls_per_7_days] + WEEK
    if consumer:
        per_debt = sorted(t for t in case_calls_at.get(case_id, []) if t > now - WEEK)
        limit = policy.consumer.calls_per_7_days
        if len(per_debt) >= limit:
            return "consumer call cap reached (per debt, 7 days)", per_debt[len(per_debt) - limit] + WEEK
        talked = conversation_at.get(customer_id)
        quiet = timedelta(days=policy.consumer.quiet_days_after_conversation)
        if talked is not None and now < talked + quiet:
            return "consumer: no calls within 7 days after a conversation", talked + quiet
    return None


def _aware(value) -> datetime | None:
    if value is None or (not isinstance(value, datetime) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    return value


def _text(value) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
