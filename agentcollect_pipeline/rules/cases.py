"""Collection cases: the eligible invoices of one customer in one currency, chased together. Pure.

`build_cases` groups the eligible invoices; `assign_case_ids` keeps each case's id stable across cycles:
an open case for (customer, currency) keeps its id while any eligible invoice is left (new invoices join
it), closes when none is left, and a later eligible invoice opens a new case with a new id.

priority_score = (total_due in major units) ** amount_exponent * (oldest_days_overdue) ** age_exponent,
with both exponents from the policy's `priority:` section (default 1 and 1: amount × age). It ranks cases
only; it is not money, so it may be a float.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from agentcollect_pipeline.money import exponent
from agentcollect_pipeline.rules.keys import BookKeys
from agentcollect_pipeline.rules.policy import PriorityWeights

CASE_KEY = ["customer_id", "currency"]


def build_cases(
    eligibility: pd.DataFrame, channels: pd.DataFrame, weights: PriorityWeights, keys: BookKeys | None = None
) -> pd.DataFrame:
    """One row per (customer_id, currency) with eligible invoices, highest priority first.

    Columns: customer_id, currency, invoice_count, invoice_ids (comma-separated, oldest due first), total_due_cents,
    oldest_days_overdue, email_contacts, sms_contacts, voice_contacts, priority_score.
    """
    is_eligible = eligibility["eligible"].to_numpy(dtype=bool)
    eligible = eligibility.loc[is_eligible, ["invoice_id", "amount_due_cents", "days_overdue"]]
    if eligible.empty:
        return _empty_cases()
    keys = keys or BookKeys.of(eligibility)
    codes, customer_of, currency_of = keys.pairs(is_eligible)
    days = eligible["days_overdue"].to_numpy(dtype="int64", na_value=0)
    cents = eligible["amount_due_cents"].to_numpy(dtype="int64", na_value=0)
    # Sort by case, then oldest due first: each case is one contiguous run; reduceat sums exact int64 cents.
    order = np.lexsort((-days, codes))
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    ids = eligible["invoice_id"].to_numpy(dtype="object")[order].tolist()
    ends = np.r_[starts[1:], len(order)].tolist()
    cases = pd.DataFrame(
        {
            "customer_id": customer_of,
            "currency": currency_of,
            "invoice_count": np.diff(np.r_[starts, len(order)]).astype("int64"),
            # One join per case (not per invoice); text, as stored, so no per-case list objects either.
            "invoice_ids": [",".join(ids[a:b]) for a, b in zip(starts.tolist(), ends, strict=True)],
            "total_due_cents": np.add.reduceat(cents[order], starts).astype("int64"),
            "oldest_days_overdue": days[order][starts],
        }
    )
    for column in ("email_contacts", "sms_contacts", "voice_contacts"):
        cases[column] = channels[column].reindex(pd.Index(cases["customer_id"])).fillna(0).to_numpy(dtype="int64")
    codes, uniques = pd.factorize(cases["currency"])
    scale = np.array([10.0 ** exponent(c) for c in uniques])[codes]
    major = cases["total_due_cents"].to_numpy(dtype="float64") / scale
    age = np.maximum(cases["oldest_days_overdue"].to_numpy(dtype="float64"), 0.0)
    cases["priority_score"] = np.round(major**weights.amount_exponent * age**weights.age_exponent, 4)
    columns = [*CASE_KEY, "invoice_count", "invoice_ids", "total_due_cents", "oldest_days_overdue",
               "email_contacts", "sms_contacts", "voice_contacts", "priority_score"]
    return cases[columns].sort_values("priority_score", ascending=False, kind="stable").reset_index(drop=True)


def _empty_cases() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="string"),
            "currency": pd.Series(dtype="string"),
            "invoice_count": pd.Series(dtype="int64"),
            "invoice_ids": pd.Series(dtype="object"),
            "total_due_cents": pd.Series(dtype="int64"),
            "oldest_days_overdue": pd.Series(dtype="int64"),
            "email_contacts": pd.Series(dtype="int64"),
            "sms_contacts": pd.Series(dtype="int64"),
            "voice_contacts": pd.Series(dtype="int64"),
            "priority_score": pd.Series(dtype="float64"),
        }
    )


@dataclass(frozen=True)
class CaseAssignment:
    cases: pd.DataFrame  # build_cases' rows + case_id, opened_at
    opened: pd.DataFrame  # new rows for the `cases` table (case_id, customer_id, currency, opened_at)
    continued: list[str]  # case ids still open
    closed: list[str]  # case ids to close


def new_case_id() -> str:
    return f"case_{uuid.uuid4().hex}"


def assign_case_ids(
    current: pd.DataFrame,
    open_cases: pd.DataFrame,
    now: datetime,
    new_id: Callable[[], str] = new_case_id,
) -> CaseAssignment:
    """Match this cycle's cases to the open ones in the `cases` table by (customer_id, currency).

    `open_cases` has case_id, customer_id, currency, opened_at for status == "open" rows (at most one per key).
    """
    previous = open_cases[["case_id", *CASE_KEY, "opened_at"]].drop_duplicates(CASE_KEY, keep="first")
    merged = current.merge(previous, on=CASE_KEY, how="left", validate="one_to_one")
    fresh = merged["case_id"].isna().to_numpy(dtype=bool)
    new_ids = [new_id() for _ in range(int(fresh.sum()))]  # one per new case, not per invoice
    merged["case_id"] = merged["case_id"].astype("object")
    merged.loc[fresh, "case_id"] = new_ids
    merged["opened_at"] = merged["opened_at"].astype("object")
    merged.loc[fresh, "opened_at"] = now
    opened = merged.loc[fresh, ["case_id", *CASE_KEY, "opened_at"]].reset_index(drop=True)
    still = set(merged.loc[~fresh, "case_id"])
    closed = [cid for cid in previous["case_id"] if cid not in still]
    return CaseAssignment(cases=merged, opened=opened, continued=sorted(still), closed=closed)
