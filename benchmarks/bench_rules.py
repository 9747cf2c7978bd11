"""`make bench-rules`: the pure collection rules (channels + eligibility + cases + aging) on a large book.

1,000,000 invoices over 100,000 customers (and ~100,000 contacts) are generated in memory with numpy, with
the dtypes `Warehouse.read_frame` gives, plus a few disputes, promises, opt-outs and pauses. Generation is
not timed (nor phone parsing: phone_e164 is computed once at sync). The timed part is what the
`invoice_eligibility`, `collection_cases` and `ar_aging` assets compute between their reads and writes.
The last line printed is one JSON object: {"invoices", "customers", "wall_s", "peak_rss_mb"}.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from agentcollect_pipeline.rules.aging import age_receivables, days_sales_outstanding, sales_in_window
from agentcollect_pipeline.rules.cases import build_cases
from agentcollect_pipeline.rules.eligibility import (
    CollectionState,
    customer_channels,
    evaluate_eligibility,
    reason_counts,
)
from agentcollect_pipeline.rules.keys import BookKeys
from agentcollect_pipeline.rules.policy import parse_policy

AS_OF = date(2026, 11, 26)
CURRENCIES = np.array(["USD", "CAD", "EUR", "GBP"], dtype=object)
CLASSES = np.array([f"0ac01BENCHCLASS{i:05d}" for i in range(1, 6)], dtype=object)


def _ids(prefix: str, n: int) -> pd.Series:
    return pd.Series([f"{prefix}{i:015d}" for i in range(n)], dtype="string")


def generate(invoices: int, customers: int, seed: int = 7) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    customer_ids = _ids("0cu01", customers)
    emails = pd.Series([f"ap{i}@customer{i}.example.com" for i in range(customers)], dtype="string")
    emails[rng.random(customers) < 0.02] = pd.NA
    phones = pd.Series([f"+1415555{i % 10000:04d}" for i in range(customers)], dtype="string")
    phones[rng.random(customers) < 0.05] = pd.NA
    customer_frame = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "email": emails,
            "phone_e164": phones,
            "account_type": pd.Series(np.where(rng.random(customers) < 0.1, "2", "1"), dtype="string"),
            "parent_customer_id": pd.Series(pd.NA, index=range(customers), dtype="string"),
            "currency": pd.Series(CURRENCIES[rng.choice(4, customers, p=[0.7, 0.12, 0.08, 0.1])], dtype="string"),
            "is_active": pd.array(rng.random(customers) >= 0.05, dtype="boolean"),
            "validation_status": pd.Series(np.where(rng.random(customers) < 0.01, "invalid", "valid"), dtype="string"),
            "validation_errors": pd.Series(np.where(emails.isna(), "email: missing", None), dtype="string"),
        }
    )
    n_contacts = customers
    owners = rng.integers(0, customers, n_contacts)
    contacts = pd.DataFrame(
        {
            "contact_id": _ids("0cc01", n_contacts),
            "customer_id": customer_ids.to_numpy()[owners],
            "email": pd.Series([f"c{i}@customer{o}.example.com" for i, o in enumerate(owners)], dtype="string"),
            "phone_e164": pd.Series(pd.NA, index=range(n_contacts), dtype="string"),
            "is_active": pd.array(rng.random(n_contacts) >= 0.05, dtype="boolean"),
            "validation_errors": pd.Series(pd.NA, index=range(n_contacts), dtype="string"),
        }
    )
    owner = (customers * rng.random(invoices) ** 1.6).astype("int64")
    amount = np.clip(np.exp(rng.normal(np.log(1800), 1.1, invoices)), 50, 50000).round(2)
    amount_cents = (amount * 100).astype("int64")
    roll = rng.random(invoices)
    due = np.where(roll < 0.10, 0, np.where(roll < 0.18, amount_cents // 2, amount_cents))
    status = np.where(roll < 0.10, "0", np.where(roll < 0.18, "2", np.where(roll < 0.21, "4", "1")))
    due_date = np.datetime64(AS_OF, "D") + rng.integers(-200, 61, invoices).astype("timedelta64[D]")
    invoice_frame = pd.DataFrame(
        {
            "invoice_id": _ids("00e01", invoices),
            "invoice_number": pd.Series([f"INV-{i:07d}" for i in range(invoices)], dtype="string"),
            "customer_id": customer_ids.to_numpy()[owner],
            "invoice_date": (due_date - np.timedelta64(30, "D")).astype("datetime64[s]"),
            "due_date": due_date.astype("datetime64[s]"),
            "amount_cents": pd.array(amount_cents, dtype="Int64"),
            "amount_due_cents": pd.array(due, dtype="Int64"),
            "currency": customer_frame["currency"].to_numpy()[owner],
            "payment_status": pd.Series(status, dtype="string"),
            "is_active": pd.array(rng.random(invoices) >= 0.03, dtype="boolean"),
            "actg_class_id": pd.Series(np.where(rng.random(invoices) < 0.6, CLASSES[rng.integers(0, 5, invoices)], None), dtype="string"),
            "has_auto_pay": pd.array(rng.random(invoices) < 0.03, dtype="boolean"),
            "validation_status": pd.Series(np.where(rng.random(invoices) < 0.015, "invalid", "valid"), dtype="string"),
        }
    )
    sample = rng.choice(invoices, 2000, replace=False)
    state = CollectionState(
        disputes=pd.DataFrame({"invoice_id": invoice_frame["invoice_id"].iloc[sample[:1000]].to_numpy(), "closed_at": None}),
        promises_to_pay=pd.DataFrame(
            {
                "invoice_id": invoice_frame["invoice_id"].iloc[sample[1000:]].to_numpy(),
                "customer_id": invoice_frame["customer_id"].iloc[sample[1000:]].to_numpy(),
                "currency": invoice_frame["currency"].iloc[sample[1000:]].to_numpy(),
                "promised_date": pd.Timestamp(AS_OF + timedelta(days=7)),
                "status": "pending",
            }
        ),
        opt_outs=pd.DataFrame({"channel": "email", "address": emails.dropna().iloc[:2000].to_numpy()}),
        customer_pauses=pd.DataFrame({"customer_id": customer_ids.iloc[:500].to_numpy(), "paused_until": pd.Timestamp(AS_OF)}),
    )
    return {"invoices": invoice_frame, "customers": customer_frame, "contacts": contacts, "state": state}


POLICY = f"""
overdue_threshold_days: 30
minimum_amount: {{USD: 50.00, CAD: 50.00, EUR: 50.00, GBP: 40.00}}
accounting_classes: {{Intercompany: {CLASSES[0]}, Grants: {CLASSES[1]}}}
tiers: {{strategic: [0cu01{1:015d}, 0cu01{2:015d}]}}
exclude: {{accounting_classes: [Intercompany], tiers: [strategic], account_types: ["3"], invoice_numbers: [INV-0000001, INV-0000002]}}
"""


def run(book: dict) -> dict:
    policy = parse_policy(POLICY)
    state = book["state"]
    keys = BookKeys.of(book["invoices"], book["customers"])
    channels = customer_channels(book["customers"], book["contacts"], state.opt_outs)
    eligibility = evaluate_eligibility(book["invoices"], book["customers"], channels, policy, AS_OF, state, keys)
    cases = build_cases(eligibility, channels, policy.priority, keys)
    per_customer, totals = age_receivables(book["invoices"], AS_OF, keys)
    dso = days_sales_outstanding(totals, sales_in_window(book["invoices"], AS_OF))
    return {
        "eligible": int(eligibility["eligible"].sum()),
        "cases": len(cases),
        "aging_rows": len(per_customer),
        "reasons": reason_counts(eligibility),
        "dso": dso.to_dict(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    book = generate(args.invoices, args.customers)
    started = time.perf_counter()
    summary = run(book)
    wall = time.perf_counter() - started
    print(json.dumps(summary), file=sys.stderr)
    print(
        json.dumps(
            {
                "invoices": len(book["invoices"]),
                "customers": len(book["customers"]),
                "wall_s": round(wall, 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
