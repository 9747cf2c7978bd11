"""AR aging: open amounts per customer and currency in current / 1–30 / 31–60 / 61–90 / 90+ buckets. Pure.

Open means what Bill.com's own AR means: an active invoice with an amount due > 0 (whatever its due date
and validation status: an invoice flagged invalid is still on the books). An invoice with no due date is
counted as current. Totals per currency are the sums of the customer rows, so they reconcile by
construction; the `ar_aging` asset check re-derives them from the synced table with SQL.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from agentcollect_pipeline.rules.keys import BookKeys

BUCKETS = ("current_cents", "days_1_30_cents", "days_31_60_cents", "days_61_90_cents", "days_90_plus_cents")
_EDGES = np.array([0, 30, 60, 90])  # days overdue <= 0 current, 1-30, 31-60, 61-90, > 90
DSO_WINDOW_DAYS = 90


def open_mask(invoices: pd.DataFrame) -> np.ndarray:
    due = invoices["amount_due_cents"].to_numpy(dtype="int64", na_value=0)
    return invoices["is_active"].fillna(False).to_numpy(dtype=bool) & (due > 0)


def age_receivables(
    invoices: pd.DataFrame, as_of: date, keys: BookKeys | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per customer, per currency total) aging frames.

    Per customer columns: currency, customer_id, the five bucket columns, total_open_cents, invoice_count.
    Totals: the same without customer_id. All money columns int64 minor units.
    """
    keys = keys or BookKeys.of(invoices)
    is_open = open_mask(invoices)
    open_rows = invoices.loc[is_open, ["due_date", "amount_due_cents"]]
    due_date = open_rows["due_date"].to_numpy(dtype="datetime64[D]")
    days = (np.datetime64(as_of, "D") - due_date).astype("int64")
    days[np.isnat(due_date)] = 0
    bucket = np.searchsorted(_EDGES, days, side="left")  # 0 for <= 0, 1 for 1..30, …, 4 for > 90
    cents = open_rows["amount_due_cents"].to_numpy(dtype="int64")
    codes, customer_of, currency_of = keys.pairs(is_open)
    width = len(BUCKETS)
    # np.bincount with weights would sum through float64; np.add.at keeps exact int64 cents.
    table = np.zeros((len(currency_of), width), dtype="int64")
    np.add.at(table, (codes, bucket), cents)
    counts = np.bincount(codes, minlength=len(currency_of)).astype("int64")
    per_customer = pd.DataFrame(table, columns=list(BUCKETS))
    per_customer.insert(0, "customer_id", customer_of)
    per_customer.insert(0, "currency", currency_of)
    per_customer["total_open_cents"] = table.sum(axis=1)
    per_customer["invoice_count"] = counts
    per_customer = per_customer.sort_values(["currency", "total_open_cents"], ascending=[True, False], kind="stable")
    totals = (
        per_customer.drop(columns="customer_id").groupby("currency", sort=True).sum().reset_index()
        if len(per_customer)
        else _empty_totals()
    )
    return per_customer.reset_index(drop=True), totals


def _empty_totals() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64") for c in ["currency", *BUCKETS, "total_open_cents", "invoice_count"]}).astype(
        {"currency": "object"}
    )


def sales_in_window(invoices: pd.DataFrame, as_of: date, days: int = DSO_WINDOW_DAYS) -> pd.Series:
    """Invoiced amount (active invoices dated in (as_of - days, as_of]) per currency, int64 cents."""
    invoice_date = invoices["invoice_date"].to_numpy(dtype="datetime64[D]")
    end = np.datetime64(as_of, "D")
    inside = (invoice_date > end - np.timedelta64(days, "D")) & (invoice_date <= end)
    inside &= invoices["is_active"].fillna(False).to_numpy(dtype=bool)
    amount = invoices["amount_cents"].to_numpy(dtype="int64", na_value=0)
    frame = pd.DataFrame({"currency": invoices["currency"].to_numpy()[inside], "amount": amount[inside]})
    return frame.groupby("currency")["amount"].sum().astype("int64")


def days_sales_outstanding(totals: pd.DataFrame, sales: pd.Series, days: int = DSO_WINDOW_DAYS) -> pd.Series:
    """DSO per currency: open AR / sales over the window × window days (a ratio, not money); NaN without sales."""
    open_ar = totals.set_index("currency")["total_open_cents"].astype("int64")
    window_sales = sales.reindex(open_ar.index).fillna(0).astype("int64")
    ratio = open_ar.to_numpy(dtype="float64") / np.where(window_sales > 0, window_sales, np.nan)
    return pd.Series(np.round(ratio * days, 1), index=open_ar.index, name="dso_days")
