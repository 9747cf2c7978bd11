"""Outreach the debtor's own words call for, outside the ladder: pure rules on DataFrames, no I/O.

- `promise_updates`: a pending promise to pay becomes `kept` when nothing it covers is owed any more, and
  `broken` when its date plus the grace days has passed with money still overdue.
- `promise_followups`: each broken promise of an open case gets one follow-up message (step
  `promise_followup:<promise_id>`, tone firm, the first usable channel of email, sms, voice).
- `copy_requests`: each matched "send me the invoice" reply (SMS or email) gets the invoices and payment link
  once (step `copy:<reply_id>`), on the channel and to the address it came from, if that address is on file.
- `plan_requested`: these actions through the same rules as the ladder (opt-outs, invalid contacts, consent,
  quiet hours in every candidate zone, call caps; business days and the daily contact cap for follow-ups, not
  for a copy the debtor asked for); `merge_plans`: a requested message goes before the customer's ladder step.

The ledger's unique (case_id, step) makes each of these at most once, whatever reruns happen.
"""

from collections import defaultdict
from datetime import date, datetime, timedelta

import pandas as pd

from agentcollect_pipeline.money import format_money
from agentcollect_pipeline.rules.cadence import (
    DUE_COLUMNS,
    NOT_CONTACTS,
    WAITING_COLUMNS,
    Plan,
    _address_set,
    _aware,
    _call_block,
    _destination,
    _next_contact,
    _rows,
    _text,
    mask,
)
from agentcollect_pipeline.rules.outreach_policy import OutreachPolicy
from agentcollect_pipeline.rules.quiet_hours import allowed_at, candidate_zones, closed_days

REQUESTED_COLUMNS = ["case_id", "customer_id", "step", "purpose", "channel", "destination", "tone", "why"]
FOLLOWUP_PREFIX = "promise_followup:"
COPY_PREFIX = "copy:"
FOLLOWUP_CHANNELS = ("email", "sms", "voice")
DAY = timedelta(days=1)


def purpose_of(step: str) -> str:
    """The composer purpose of a ledger step: followup, copy or reminder (ladder steps and `<step>:link`)."""
    if step.startswith(FOLLOWUP_PREFIX):
        return "followup"
    if step.startswith(COPY_PREFIX):
        return "copy"
    return "reminder"


def _day(value) -> date | None:
    if value is None or (not isinstance(value, date) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    return value.date() if isinstance(value, datetime) else value


def promise_updates(promises: pd.DataFrame, invoices: pd.DataFrame, today: date, grace_days: int) -> pd.DataFrame:
    """(promise_id, status) for pending promises that are now kept or broken.

    promises: promises_to_pay rows; invoices: the AR invoices table (invoice_id, customer_id, currency,
    amount_due_cents, due_date, is_active). Owed = active, amount due > 0, due before `today`.
    """
    out: list[tuple[str, str]] = []
    if promises is None or promises.empty:
        return pd.DataFrame(out, columns=["promise_id", "status"])
    owed_customer: set[tuple[str, str]] = set()
    owed_invoice: set[str] = set()
    for row in _rows(invoices):
        due = _day(row.due_date)
        if bool(row.is_active) and int(row.amount_due_cents or 0) > 0 and due is not None and due < today:
            owed_customer.add((row.customer_id, row.currency))
            owed_invoice.add(row.invoice_id)
    for row in _rows(promises):
        if row.status != "pending":
            continue
        owed = (row.invoice_id in owed_invoice) if isinstance(row.invoice_id, str) else (
            (row.customer_id, row.currency) in owed_customer)
        if not owed:
            out.append((row.promise_id, "kept"))
        elif _day(row.promised_date) + timedelta(days=grace_days) < today:
            out.append((row.promise_id, "broken"))
    return pd.DataFrame(out, columns=["promise_id", "status"])


def _steps_taken(history: pd.DataFrame) -> set[str]:
    return set() if history is None or history.empty else {str(s) for s in history["step"].dropna()}


def promise_followups(promises: pd.DataFrame, cases: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One follow-up per broken promise whose customer has an open case in the promise's currency."""
    taken = _steps_taken(history)
    open_case = {(r.customer_id, r.currency): r.case_id for r in _rows(cases)}
    rows = []
    for promise in _rows(promises):
        step = f"{FOLLOWUP_PREFIX}{promise.promise_id}"
        case_id = open_case.get((promise.customer_id, promise.currency))
        if promise.status != "broken" or case_id is None or step in taken:
            continue
        rows.append({"case_id": case_id, "customer_id": promise.customer_id, "step": step, "purpose": "followup",
                     "channel": None, "destination": None, "tone": "firm",
                     "why": f"promise to pay by {_day(promise.promised_date)} passed unpaid"})
    return pd.DataFrame(rows, columns=REQUESTED_COLUMNS)


def copy_requests(replies: pd.DataFrame, cases: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One copy (invoices + payment link) per matched invoice_copy reply by SMS or email on an open case."""
    taken = _steps_taken(history)
    open_cases = {r.case_id for r in _rows(cases)}
    rows = []
    for reply in _rows(replies):
        step = f"{COPY_PREFIX}{reply.reply_id}"
        if (reply.intent != "invoice_copy" or reply.channel not in ("sms", "email") or reply.case_id not in open_cases
                or step in taken):
            continue
        rows.append({"case_id": reply.case_id, "customer_id": reply.customer_id, "step": step, "purpose": "copy",
                     "channel": reply.channel, "destination": reply.sender, "tone": "friendly",
                     "why": f"asked for the invoice by {reply.channel}"})
    return pd.DataFrame(rows, columns=REQUESTED_COLUMNS)


def plan_requested(
    requested: pd.DataFrame,
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
    """Which requested actions go now (DUE_COLUMNS) and which wait, and why (WAITING_COLUMNS)."""
    if now.tzinfo is None:
        raise ValueError("plan_requested needs an aware 'now'")
    due: list[dict] = []
    waiting: list[dict] = []
    if requested is None or requested.empty:
        return Plan(pd.DataFrame(due, columns=DUE_COLUMNS), pd.DataFrame(waiting, columns=WAITING_COLUMNS))
    opted, bad = _address_set(opt_outs), _address_set(invalid)
    consented = _address_set(consents, active_only=True)
    case_of = {r.case_id: r for r in _rows(cases)}
    debtor = {r.customer_id: r for r in _rows(debtors)}
    on_file: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in sorted(_rows(points), key=lambda r: (r.rank, r.address)):
        on_file[row.customer_id][row.channel].append(row.address)
    contacts_at: dict[str, list[datetime]] = defaultdict(list)
    calls_at: dict[str, list[datetime]] = defaultdict(list)
    case_calls_at: dict[str, list[datetime]] = defaultdict(list)
    conversation_at: dict[str, datetime] = {}
    for row in _rows(history):
        at = _aware(row.reserved_at)
        if row.status in NOT_CONTACTS or at is None:
            continue
        contacts_at[row.customer_id].append(at)
        if row.channel == "voice":
            calls_at[row.customer_id].append(at)
            case_calls_at[row.case_id].append(at)
        talked = _aware(row.conversation_at)
        if talked is not None and talked > conversation_at.get(row.customer_id, talked - DAY):
            conversation_at[row.customer_id] = talked

    served: set[str] = set()
    # Copies first (the debtor is waiting for them), then follow-ups; oldest request first within each.
    ordered = sorted(_rows(requested), key=lambda r: (r.purpose != "copy", str(r.step)))
    for action in ordered:
        case = case_of.get(action.case_id)

        def wait(reason: str, next_at: datetime | None = None, action=action) -> None:
            waiting.append({"case_id": action.case_id, "customer_id": action.customer_id, "step": action.step,
                            "channel": action.channel, "reason": reason, "next_at": next_at})

        if case is None:
            wait("case no longer open")
            continue
        info = debtor.get(action.customer_id)
        account_type = info.account_type if info is not None else None
        consumer = policy.consumer.is_consumer(None if pd.isna(account_type) else account_type)
        channels = on_file.get(action.customer_id, {})
        chosen: tuple[str, str] | None = None
        problems: list[str] = []
        for channel in ([action.channel] if isinstance(action.channel, str) else FOLLOWUP_CHANNELS):
            candidates = channels.get(channel, [])
            if isinstance(action.destination, str):
                wanted = action.destination.strip().lower() if channel == "email" else action.destination.strip()
                if wanted not in candidates:
                    problems.append(f"{channel}: the requesting address is not on file")
                    continue
                candidates = [wanted]
            destination, problem = _destination(channel, candidates, opted, bad, consented, policy)
            if destination is None:
                problems.append(f"{channel}: {problem}")
                continue
            chosen = (channel, destination)
            break
        if chosen is None:
            wait("no usable channel: " + "; ".join(problems))
            continue
        channel, destination = chosen
        if action.customer_id in served:
            wait("another requested message to this customer goes first")
            continue
        if action.purpose != "copy":  # a copy answers the debtor; follow-ups are collection contacts
            recent = sorted(t for t in contacts_at.get(action.customer_id, []) if t > now - DAY)
            if len(recent) >= policy.caps.contacts_per_customer_per_day:
                wait("daily contact cap reached", recent[0] + DAY)
                continue
        if channel == "voice":
            blocked = _call_block(action.customer_id, action.case_id, consumer, now, policy, calls_at, case_calls_at,
                                  conversation_at)
            if blocked is not None:
                wait(*blocked)
                continue
        phones = [destination] if channel != "email" else channels.get("sms", [])[:1]
        zones = candidate_zones(state=_text(info.bill_state if info else None),
                                country=_text(info.bill_country if info else None), phones=phones,
                                default=default_timezone)
        window = policy.window(channel)
        if not allowed_at(now, zones, window):
            wait(f"outside {window.start:%H:%M}-{window.end:%H:%M} in {', '.join(zones)}",
                 _next_contact(now, zones, window, policy))
            continue
        if action.purpose != "copy":
            closed = closed_days(now, zones, weekends=policy.business_days_only, holidays=policy.holidays)
            if closed:
                wait(f"not a business day: {', '.join(closed)}", _next_contact(now, zones, window, policy))
                continue
        served.add(action.customer_id)
        due.append({
            "case_id": action.case_id, "customer_id": action.customer_id, "currency": case.currency,
            "step": action.step, "step_index": -1, "channel": channel, "tone": action.tone,
            "destination": destination, "invoice_ids": case.invoice_ids,
            "total_due_cents": int(case.total_due_cents), "oldest_days_overdue": int(case.oldest_days_overdue),
            "consumer": consumer, "zones": ",".join(zones),
            "why": f"{action.why}: {action.purpose} of case {action.case_id}, "
                   f"{format_money(int(case.total_due_cents), case.currency)} due; {channel} to {mask(destination)}",
        })
    return Plan(pd.DataFrame(due, columns=DUE_COLUMNS), pd.DataFrame(waiting, columns=WAITING_COLUMNS))


def merge_plans(ladder: Plan, requested: Plan) -> Plan:
    """Requested messages first: a customer with one (due or waiting) gets no ladder step in this plan."""
    held = set(requested.due["customer_id"]) | set(requested.waiting["customer_id"])
    keep = ~ladder.due["customer_id"].isin(held)
    moved = ladder.due.loc[~keep, ["case_id", "customer_id", "step", "channel"]].assign(
        reason="a requested message to this customer goes first", next_at=None)
    parts_due = [f for f in (requested.due, ladder.due[keep]) if len(f)]
    parts_waiting = [f for f in (requested.waiting, moved, ladder.waiting) if len(f)]
    due = pd.concat(parts_due, ignore_index=True) if parts_due else ladder.due.iloc[0:0]
    waiting = pd.concat(parts_waiting, ignore_index=True) if parts_waiting else ladder.waiting.iloc[0:0]
    return Plan(due=due[DUE_COLUMNS], waiting=waiting[WAITING_COLUMNS])
