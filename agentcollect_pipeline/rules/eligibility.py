"""Which open invoices will be collected, and for every other one, why not. Pure: DataFrames in, out.

Everything is vectorized over the book: customer-level facts (exclusions, channels) are computed once on
the customer frame and taken into the invoice frame by position, and each reason code is one boolean
array. No Python loop runs per invoice; the loops below run per reason code or per distinct combination.

Inputs are the synced tables as `Warehouse.read_frame` returns them (see warehouse/schema.py) and the
state tables of warehouse/collections_schema.py. "Today" is passed in as `as_of`, the organisation's date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import numpy as np
import pandas as pd

from agentcollect_pipeline.ar_source.records import EMAIL_PATTERN
from agentcollect_pipeline.rules.keys import BookKeys
from agentcollect_pipeline.rules.policy import CollectionPolicy


class Reason(StrEnum):
    """Why an invoice is not eligible, in precedence order: the first that applies is the one shown."""

    PAID = "paid"  # nothing owed: amount due <= 0, or paymentStatus "0" (paid in full)
    VOID_INACTIVE = "void_inactive"  # voided/deleted in Bill.com (isActive "2")
    NOT_YET_OVERDUE = "not_yet_overdue"  # due date not before today - threshold (or no due date)
    BELOW_MINIMUM = "below_minimum"  # amount due under the policy minimum for its currency
    CUSTOMER_EXCLUDED = "customer_excluded"  # id, tier, accountType, parent, do-not-contact, or paused
    INVOICE_EXCLUDED = "invoice_excluded"  # invoice number listed in the policy
    CLASS_EXCLUDED = "class_excluded"  # invoice accounting class (actgClassId) excluded by name
    CUSTOMER_INACTIVE = "customer_inactive"  # customer made inactive in Bill.com
    NO_CONTACT_CHANNEL = "no_contact_channel"  # no valid email and no dialable phone, customer or contacts
    DISPUTED = "disputed"  # an open row in `disputes`
    PROMISE_TO_PAY_PENDING = "promise_to_pay_pending"  # pending promise (invoice, or customer + currency)
    OPTED_OUT = "opted_out"  # every channel of the customer opted out
    PAYMENT_SCHEDULED = "payment_scheduled"  # paymentStatus "4" (scheduled) or hasAutoPay
    INVALID_RECORD = "invalid_record"  # the sync flagged the invoice or its customer invalid, or it has no customer


REASONS: tuple[Reason, ...] = tuple(Reason)
_REASON_CODES = [r.value for r in REASONS]
CHANNELS = ("email", "sms", "voice")
_EMAIL_REGEX = EMAIL_PATTERN.pattern


@dataclass(frozen=True)
class CollectionState:
    """The state tables later issues fill (empty frames are fine)."""

    disputes: pd.DataFrame
    promises_to_pay: pd.DataFrame
    opt_outs: pd.DataFrame
    customer_pauses: pd.DataFrame

    @classmethod
    def empty(cls) -> CollectionState:
        return cls(
            disputes=pd.DataFrame({"invoice_id": pd.Series(dtype="string"), "closed_at": pd.Series(dtype="object")}),
            promises_to_pay=pd.DataFrame(
                {
                    "invoice_id": pd.Series(dtype="string"),
                    "customer_id": pd.Series(dtype="string"),
                    "currency": pd.Series(dtype="string"),
                    "promised_date": pd.Series(dtype="datetime64[s]"),
                    "status": pd.Series(dtype="string"),
                }
            ),
            opt_outs=pd.DataFrame({"channel": pd.Series(dtype="string"), "address": pd.Series(dtype="string")}),
            customer_pauses=pd.DataFrame(
                {"customer_id": pd.Series(dtype="string"), "paused_until": pd.Series(dtype="datetime64[s]")}
            ),
        )


# -- contact channels ---------------------------------------------------------------------------------


def customer_channels(customers: pd.DataFrame, contacts: pd.DataFrame, opt_outs: pd.DataFrame) -> pd.DataFrame:
    """Per customer (index customer_id, same order as `customers`): usable addresses before and after opt-outs.

    email: a syntactically valid address on the customer or on an active contact; sms and voice: an
    E.164 number (phone_e164, set at sync only when dialable). Addresses are counted once per customer.
    Columns: email_usable, phone_usable (before opt-outs), email_contacts, sms_contacts, voice_contacts
    (after), has_channel, all_opted_out, channels ("email,sms" …).
    """
    active = contacts["is_active"].fillna(False).to_numpy(dtype=bool)
    ids = pd.Index(customers["customer_id"])
    owner = np.concatenate(
        [np.arange(len(customers), dtype="int64"), ids.get_indexer(contacts["customer_id"][active])]
    )
    email = pd.concat([customers["email"], contacts["email"][active]], ignore_index=True)
    phone = pd.concat([customers["phone_e164"], contacts["phone_e164"][active]], ignore_index=True)
    opted = {ch: _opted_set(opt_outs, ch) for ch in CHANNELS}

    email_ok = pd.concat(
        [_email_verdict(customers), _email_verdict(contacts)[active]], ignore_index=True
    ).to_numpy(dtype=bool)
    valid_email = (owner >= 0) & email.notna().to_numpy(dtype=bool) & email_ok
    email_norm = email[valid_email].str.strip().str.lower()
    email_rows = _distinct(owner[valid_email], email_norm)
    valid_phone = (owner >= 0) & phone.notna().to_numpy(dtype=bool)
    phone_rows = _distinct(owner[valid_phone], phone[valid_phone])

    def count(rows: tuple[np.ndarray, pd.Series], opted_out: set[str] | None = None) -> np.ndarray:
        owners, addresses = rows
        if opted_out:
            owners = owners[~addresses.isin(opted_out).to_numpy(dtype=bool)]
        return np.bincount(owners, minlength=len(customers)).astype("int64")

    email_usable = count(email_rows)
    phone_usable = count(phone_rows)
    email_contacts = count(email_rows, opted["email"])
    sms_contacts = count(phone_rows, opted["sms"])
    voice_contacts = count(phone_rows, opted["voice"])
    has_channel = (email_usable + phone_usable) > 0
    available = (email_contacts + sms_contacts + voice_contacts) > 0
    labels = np.array(["", "email", "sms", "email,sms", "voice", "email,voice", "sms,voice", "email,sms,voice"])
    combo = (email_contacts > 0) * 1 + (sms_contacts > 0) * 2 + (voice_contacts > 0) * 4
    return pd.DataFrame(
        {
            "email_usable": email_usable,
            "phone_usable": phone_usable,
            "email_contacts": email_contacts,
            "sms_contacts": sms_contacts,
            "voice_contacts": voice_contacts,
            "has_channel": has_channel,
            "all_opted_out": has_channel & ~available,
            "channels": labels[combo],
        },
        index=ids,
    )


def _email_verdict(frame: pd.DataFrame) -> pd.Series:
    """Whether the row's email is an address. The sync already judged it ("email: …" among
    validation_errors when it is not), so reuse that verdict; without that column, apply the same pattern."""
    if "validation_errors" in frame.columns:
        flagged = frame["validation_errors"].str.contains("email:", regex=False)
        return ~flagged.fillna(False).astype(bool)
    return frame["email"].str.match(_EMAIL_REGEX).fillna(False).astype(bool)


def _distinct(owners: np.ndarray, addresses: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(owner, address) pairs counted once: the same address on a customer and a contact is one contact."""
    codes, _ = pd.factorize(addresses)
    _, first = np.unique(owners * (int(codes.max(initial=0)) + 1) + codes, return_index=True)
    return owners[first], addresses.iloc[first].reset_index(drop=True)


def _opted_set(opt_outs: pd.DataFrame, channel: str) -> set[str]:
    if opt_outs.empty:
        return set()
    addresses = opt_outs.loc[opt_outs["channel"] == channel, "address"].dropna().astype(str).str.strip()
    return set(addresses.str.lower() if channel == "email" else addresses)


# -- eligibility --------------------------------------------------------------------------------------


def customer_exclusions(customers: pd.DataFrame, policy: CollectionPolicy, state: CollectionState, as_of: date) -> pd.Series:
    """Per customer (same order as `customers`): which policy rule excludes it, or None."""
    ids = customers["customer_id"]
    detail = pd.Series(None, index=customers.index, dtype="object")
    tier_of = policy.excluded_tier_members
    pauses = state.customer_pauses
    if not pauses.empty:
        until = pd.to_datetime(pauses["paused_until"])
        active = until.isna() | (until >= pd.Timestamp(as_of))
        paused = set(pauses.loc[active.to_numpy(dtype=bool), "customer_id"].dropna())
    else:
        paused = set()
    family = policy.excluded_parent_customer_ids
    # Later rules overwrite earlier ones, so the first listed here wins: assign in reverse precedence.
    rules = [
        ("paused", ids.isin(paused)),
        ("account_type", customers["account_type"].isin(policy.excluded_account_types)),
        ("parent_customer", customers["parent_customer_id"].isin(family) | ids.isin(family)),
        ("tier", ids.isin(tier_of)),
        ("do_not_contact", ids.isin(policy.do_not_contact)),
        ("customer_id", ids.isin(policy.excluded_customer_ids)),
    ]
    for name, mask in rules:
        mask = mask.fillna(False).to_numpy(dtype=bool)
        if not mask.any():
            continue
        if name == "tier":
            detail[mask] = "tier:" + ids[mask].map(tier_of).astype(str)
        elif name == "account_type":
            detail[mask] = "account_type:" + customers["account_type"][mask].astype(str)
        else:
            detail[mask] = name
    return detail


def evaluate_eligibility(
    invoices: pd.DataFrame,
    customers: pd.DataFrame,
    channels: pd.DataFrame,
    policy: CollectionPolicy,
    as_of: date,
    state: CollectionState | None = None,
    keys: BookKeys | None = None,
) -> pd.DataFrame:
    """One row per invoice: eligible, the first reason, every reason (list), and the channels left.

    `channels` is `customer_channels(...)` for the same customers. Output columns: invoice_id,
    invoice_number, customer_id, currency, amount_due_cents, due_date, days_overdue, eligible, reason,
    reasons, reason_mask (bit i = REASONS[i]), reason_detail, channels.
    """
    state = state or CollectionState.empty()
    n = len(invoices)
    customer_ids = invoices["customer_id"]
    # Position of each invoice's customer; -1 (unknown customer) takes the sentinel appended last.
    keys = keys or BookKeys.of(invoices, customers)
    if keys.customer_frame_rows == len(customers):
        pos = np.where(keys.customer < len(customers), keys.customer, -1)
    else:
        pos = pd.Index(customers["customer_id"]).get_indexer(keys.customers)[keys.customer]
    known = pos >= 0

    def per_customer(values: np.ndarray, missing) -> np.ndarray:
        return np.append(values, np.array([missing], dtype=values.dtype))[pos]

    ch = channels.reindex(pd.Index(customers["customer_id"]))
    exclusion = customer_exclusions(customers, policy, state, as_of).to_numpy(dtype="object")
    cust_excluded = per_customer(pd.notna(exclusion), False)
    cust_active = per_customer(customers["is_active"].fillna(False).to_numpy(dtype=bool), False)
    cust_invalid = per_customer((customers["validation_status"] == "invalid").fillna(False).to_numpy(dtype=bool), True)
    has_channel = per_customer(ch["has_channel"].fillna(False).to_numpy(dtype=bool), False)
    all_opted_out = per_customer(ch["all_opted_out"].fillna(False).to_numpy(dtype=bool), False)

    amount_due = invoices["amount_due_cents"]
    amount_missing = amount_due.isna().to_numpy()
    due_cents = amount_due.to_numpy(dtype="int64", na_value=0)
    due_date = invoices["due_date"].to_numpy(dtype="datetime64[D]")
    due_missing = np.isnat(due_date)
    days_overdue = (np.datetime64(as_of, "D") - due_date).astype("int64")  # NaT -> garbage, masked below
    days_overdue[due_missing] = 0
    currency = invoices["currency"]
    minimum = np.array([policy.minimum_amount_cents.get(c, 0) for c in keys.currencies] + [0], dtype="int64")
    minimum = minimum[keys.currency]
    status = invoices["payment_status"]

    masks = {
        # Nothing owed, or Bill.com says paid in full: never chase either, even if the two disagree.
        Reason.PAID: (~amount_missing & (due_cents <= 0)) | (status == "0").fillna(False).to_numpy(dtype=bool),
        Reason.VOID_INACTIVE: ~invoices["is_active"].fillna(False).to_numpy(dtype=bool),
        Reason.NOT_YET_OVERDUE: due_missing | (days_overdue < max(policy.overdue_threshold_days, 1)),
        Reason.BELOW_MINIMUM: ~amount_missing & (due_cents < minimum),
        Reason.CUSTOMER_EXCLUDED: cust_excluded,
        Reason.INVOICE_EXCLUDED: _isin(invoices["invoice_number"], policy.excluded_invoice_numbers),
        Reason.CLASS_EXCLUDED: _isin(invoices["actg_class_id"], policy.excluded_class_ids),
        Reason.CUSTOMER_INACTIVE: known & ~cust_active,
        Reason.NO_CONTACT_CHANNEL: known & ~has_channel,
        Reason.DISPUTED: _disputed(invoices, state.disputes),
        Reason.PROMISE_TO_PAY_PENDING: _promised(invoices, state.promises_to_pay, policy, as_of),
        Reason.OPTED_OUT: known & all_opted_out,
        Reason.PAYMENT_SCHEDULED: ((status == "4").fillna(False) | invoices["has_auto_pay"].fillna(False)).to_numpy(
            dtype=bool
        ),
        Reason.INVALID_RECORD: (invoices["validation_status"] == "invalid").fillna(False).to_numpy(dtype=bool)
        | ~known
        | cust_invalid
        | amount_missing
        | due_missing,
    }
    bits = np.zeros(n, dtype="int64")
    first = np.full(n, -1, dtype="int64")
    for index in reversed(range(len(REASONS))):
        mask = masks[REASONS[index]]
        bits |= mask.astype("int64") << index
        first[mask] = index

    combos = {int(b): [_REASON_CODES[i] for i in range(len(REASONS)) if b >> i & 1] for b in np.unique(bits)}
    detail = np.full(n, None, dtype="object")
    pick = first == REASONS.index(Reason.CUSTOMER_EXCLUDED)
    detail[pick] = per_customer(exclusion, None)[pick]
    pick = first == REASONS.index(Reason.CLASS_EXCLUDED)
    if pick.any():
        names = policy.excluded_class_ids
        detail[pick] = "class:" + invoices["actg_class_id"][pick].map(names).astype(str).to_numpy(dtype="object")
    detail[first == REASONS.index(Reason.INVOICE_EXCLUDED)] = "invoice_number"

    days = pd.array(days_overdue, dtype="Int64")
    days[due_missing] = pd.NA
    channel_labels = per_customer(ch["channels"].fillna("").to_numpy(dtype="object"), "")
    return pd.DataFrame(
        {
            "invoice_id": invoices["invoice_id"].array,
            "invoice_number": invoices["invoice_number"].array,
            "customer_id": customer_ids.array,
            "currency": currency.array,
            "amount_due_cents": amount_due.array,
            "due_date": invoices["due_date"].to_numpy(),
            "days_overdue": days,
            "eligible": bits == 0,
            "reason": pd.Categorical.from_codes(first, categories=_REASON_CODES),
            "reasons": pd.Series(bits).map(combos).to_numpy(),
            "reason_mask": bits,
            "reason_detail": detail,
            "channels": channel_labels,
        }
    )


def _isin(values: pd.Series, allowed) -> np.ndarray:
    if not allowed:
        return np.zeros(len(values), dtype=bool)
    return values.isin(list(allowed)).fillna(False).to_numpy(dtype=bool)


def _disputed(invoices: pd.DataFrame, disputes: pd.DataFrame) -> np.ndarray:
    if disputes.empty:
        return np.zeros(len(invoices), dtype=bool)
    open_ids = disputes.loc[disputes["closed_at"].isna().to_numpy(dtype=bool), "invoice_id"]
    return invoices["invoice_id"].isin(set(open_ids.dropna())).to_numpy(dtype=bool)


def _promised(invoices: pd.DataFrame, promises: pd.DataFrame, policy: CollectionPolicy, as_of: date) -> np.ndarray:
    """A pending promise holds collection until its promised date plus the policy's grace days."""
    if promises.empty:
        return np.zeros(len(invoices), dtype=bool)
    promised = pd.to_datetime(promises["promised_date"])
    horizon = pd.Timestamp(as_of) - pd.Timedelta(days=policy.promise_grace_days)
    pending = promises[((promises["status"] == "pending").fillna(False) & (promised >= horizon)).to_numpy(dtype=bool)]
    by_invoice = invoices["invoice_id"].isin(set(pending["invoice_id"].dropna())).to_numpy(dtype=bool)
    whole_customer = pending[pending["invoice_id"].isna()]
    if whole_customer.empty:
        return by_invoice
    pairs = pd.MultiIndex.from_arrays([whole_customer["customer_id"], whole_customer["currency"]])
    mine = pd.MultiIndex.from_arrays([invoices["customer_id"], invoices["currency"]]).isin(pairs)
    return by_invoice | mine


def reason_counts(eligibility: pd.DataFrame) -> dict[str, int]:
    """Count per first reason code (every code listed, zeros included) plus `eligible`."""
    counts = eligibility["reason"].value_counts()
    out = {"eligible": int(eligibility["eligible"].sum())}
    out.update({code: int(counts.get(code, 0)) for code in _REASON_CODES})
    return out
