"""Integer codes for the book's customer and currency columns, computed once and shared by the rules.

Hashing a million Python strings costs ~0.1 s each time; eligibility, cases and aging all group by
(customer, currency), so they take the codes from one `BookKeys` instead of re-hashing the columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class BookKeys:
    """Codes aligned with the invoice frame's rows (and with evaluate_eligibility's output rows)."""

    customer: np.ndarray  # int64 code per row; the empty string stands for a missing customer id
    customers: np.ndarray  # object array: customer id per code
    currency: np.ndarray
    currencies: np.ndarray
    # When built with the customer frame: codes below this are positions in that frame (row order).
    customer_frame_rows: int = -1

    @classmethod
    def of(cls, invoices: pd.DataFrame, customers: pd.DataFrame | None = None) -> BookKeys:
        """Codes for the invoice frame. With `customers`, a customer's code is its row position there
        (looking ids up in the customer index is ~2x faster than factorizing them); ids not in it
        (unknown or missing) get the codes after."""
        ids = invoices["customer_id"]
        if customers is None:
            customer, uniques = pd.factorize(ids, use_na_sentinel=False)
            customer_ids = np.asarray(uniques, dtype="object")
            frame_rows = -1
        else:
            frame_ids = customers["customer_id"].to_numpy(dtype="object")
            customer = pd.Index(frame_ids).get_indexer(ids).astype("int64")
            missing = customer < 0
            extra_codes, extra = pd.factorize(ids[missing], use_na_sentinel=False)
            customer[missing] = len(frame_ids) + extra_codes
            customer_ids = np.concatenate([frame_ids, np.asarray(extra, dtype="object")])
            frame_rows = len(frame_ids)
        currency, currencies = pd.factorize(invoices["currency"], use_na_sentinel=False)
        return cls(
            customer=np.asarray(customer, dtype="int64"),
            customers=customer_ids,
            currency=np.asarray(currency, dtype="int64"),
            currencies=np.asarray(currencies, dtype="object"),
            customer_frame_rows=frame_rows,
        )

    def pairs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Group codes of (customer, currency) for the selected rows (a boolean mask):
        (code per selected row, customer id per group, currency per group), groups in (customer, currency) order.
        """
        width = max(len(self.currencies), 1)
        combined = self.customer[rows] * width + self.currency[rows]
        # Dense renumbering in O(n): the key range is customers x currencies, small.
        present = np.zeros(max(len(self.customers), 1) * width, dtype=bool)
        present[combined] = True
        keys = np.flatnonzero(present)
        codes = (np.cumsum(present) - 1)[combined]
        return codes, self.customers[keys // width], self.currencies[keys % width]
