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

    @classmethod
    def of(cls, invoices: pd.DataFrame) -> BookKeys:
        customer, customers = pd.factorize(invoices["customer_id"].fillna(""))
        currency, currencies = pd.factorize(invoices["currency"].fillna(""))
        return cls(
            customer=customer.astype("int64"),
            customers=np.asarray(customers, dtype="object"),
            currency=currency.astype("int64"),
            currencies=np.asarray(currencies, dtype="object"),
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
