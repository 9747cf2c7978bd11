"""The three AR source sandboxes behind one small interface, for the demo, `make ui` and the end-to-end tests.

Each adapter starts its sandbox, says which environment variables point the code location at it, and reads
the sandbox's own state (what the source would show a person in its UI) so a test or the demo can check what
the pipeline did there: the payments carrying our reference, an invoice's amount due, the notes on a customer.
"""

from __future__ import annotations

import abc
from decimal import Decimal
from typing import Any

from agentcollect_pipeline.money import to_decimal
from agentcollect_pipeline.settings import AR_SOURCE_NAMES


class ARSandbox(abc.ABC):
    kind: str

    def __init__(self, sandbox: Any):
        self.sandbox = sandbox

    @property
    def display_name(self) -> str:
        return AR_SOURCE_NAMES[self.kind]

    @property
    def app(self) -> Any:
        return self.sandbox.app

    @abc.abstractmethod
    def environment(self, url: str) -> dict[str, str]:
        """The variables that point the code location at this sandbox (AGENTCOLLECT_AR_SOURCE included)."""

    @abc.abstractmethod
    def amount_due(self, invoice_id: str) -> Decimal: ...

    @abc.abstractmethod
    def payments_with_reference(self, reference: str) -> list[dict[str, Any]]:
        """Payments at the source carrying `reference`, as {"id", "amount" (Decimal), "invoice_ids"}."""

    @abc.abstractmethod
    def notes(self, customer_id: str) -> list[str]:
        """Note texts on the customer, as a person would read them at the source."""

    @abc.abstractmethod
    def open_invoices(self) -> list[dict[str, Any]]:
        """Open invoices as {"invoice_id", "customer_id", "amount_due" (Decimal), "currency"}."""


class BillComARSandbox(ARSandbox):
    kind = "billcom"

    def environment(self, url: str) -> dict[str, str]:
        credentials = self.sandbox.credentials
        return {
            "AGENTCOLLECT_AR_SOURCE": "billcom",
            "BILLCOM_BASE_URL": f"{url}/api/v2",
            "BILLCOM_USERNAME": credentials["username"],
            "BILLCOM_PASSWORD": credentials["password"],
            "BILLCOM_ORG_ID": credentials["org_id"],
            "BILLCOM_DEV_KEY": credentials["dev_key"],
            # v3 (its own login) for the invoice payment link every outreach message carries.
            "BILLCOM_V3_BASE_URL": f"{url}/connect",
        }

    def amount_due(self, invoice_id: str) -> Decimal:
        return to_decimal(self.sandbox.get("Invoice", invoice_id)["amountDue"])

    def payments_with_reference(self, reference: str) -> list[dict[str, Any]]:
        return [
            {"id": p["id"], "amount": to_decimal(p["amount"]),
             "invoice_ids": [line.get("invoiceId") for line in p.get("invoicePays") or []]}
            for p in self.sandbox.entities("ReceivedPay") if p.get("refNumber") == reference
        ]

    def notes(self, customer_id: str) -> list[str]:
        return [m.get("message") or "" for m in self.sandbox.entities("Message") if m.get("objectId") == customer_id]

    def open_invoices(self) -> list[dict[str, Any]]:
        currencies = {c["id"]: c.get("invoiceCurrency") or "USD" for c in self.sandbox.entities("Customer")}
        return [
            {"invoice_id": i["id"], "customer_id": i["customerId"], "amount_due": to_decimal(i["amountDue"]),
             "currency": currencies.get(i["customerId"], "USD")}
            for i in self.sandbox.entities("Invoice")
            if str(i.get("isActive")) == "1" and str(i.get("paymentStatus")) == "1"
            and to_decimal(i.get("amountDue") or 0) > 0
        ]


class QBOARSandbox(ARSandbox):
    kind = "qbo"

    def environment(self, url: str) -> dict[str, str]:
        from cryptography.fernet import Fernet

        from agentcollect_pipeline.sandboxes.qbo.app import TOKEN_PATH

        credentials = self.sandbox.credentials
        return {
            "AGENTCOLLECT_AR_SOURCE": "qbo",
            "QBO_BASE_URL": url,
            "QBO_TOKEN_URL": f"{url}{TOKEN_PATH}",
            "QBO_CLIENT_ID": credentials["client_id"],
            "QBO_CLIENT_SECRET": credentials["client_secret"],
            "QBO_REALM_ID": credentials["realm_id"],
            "QBO_REFRESH_TOKEN": credentials["refresh_token"],
            # A fresh key per start: the demo's database is fresh too, so no stored token needs the old one.
            "AGENTCOLLECT_TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        }

    def amount_due(self, invoice_id: str) -> Decimal:
        return to_decimal(self.sandbox.get("Invoice", invoice_id)["Balance"])

    def payments_with_reference(self, reference: str) -> list[dict[str, Any]]:
        return [
            {"id": p["Id"], "amount": to_decimal(p["TotalAmt"]),
             "invoice_ids": [t["TxnId"] for line in p.get("Line") or [] for t in line.get("LinkedTxn") or []
                             if t.get("TxnType") == "Invoice"]}
            for p in self.sandbox.payments if p.get("PaymentRefNum") == reference
        ]

    def notes(self, customer_id: str) -> list[str]:
        return [
            a.get("Note") or "" for a in self.sandbox.attachables
            if any((ref.get("EntityRef") or {}).get("type") == "Customer"
                   and (ref.get("EntityRef") or {}).get("value") == customer_id
                   for ref in a.get("AttachableRef") or [])
        ]

    def open_invoices(self) -> list[dict[str, Any]]:
        return [
            {"invoice_id": i["Id"], "customer_id": (i.get("CustomerRef") or {}).get("value"),
             "amount_due": to_decimal(i["Balance"]), "currency": (i.get("CurrencyRef") or {}).get("value") or "USD"}
            for i in self.sandbox.entities("Invoice")
            if to_decimal(i.get("Balance") or 0) > 0 and to_decimal(i["Balance"]) == to_decimal(i["TotalAmt"])
        ]


class NetSuiteARSandbox(ARSandbox):
    kind = "netsuite"
    NOTE_FIELDS = ("custentity_agentcollect_notes", "comments")

    def environment(self, url: str) -> dict[str, str]:
        credentials = self.sandbox.credentials
        return {
            "AGENTCOLLECT_AR_SOURCE": "netsuite",
            "NETSUITE_BASE_URL": url,
            "NETSUITE_ACCOUNT_ID": credentials["account_id"],
            "NETSUITE_CLIENT_ID": credentials["client_id"],
            "NETSUITE_CERTIFICATE_ID": credentials["certificate_id"],
            "NETSUITE_PRIVATE_KEY": credentials["private_key"],
            "NETSUITE_ACCOUNT_TIMEZONE": credentials["account_timezone"],
        }

    def amount_due(self, invoice_id: str) -> Decimal:
        return to_decimal(self.sandbox.invoice(invoice_id)["foreignamountunpaid"])

    def payments_with_reference(self, reference: str) -> list[dict[str, Any]]:
        return [
            {"id": str(p["id"]), "amount": to_decimal(p["foreigntotal"]), "invoice_ids": [str(i) for i in p["apply"]]}
            for p in self.sandbox.payments if p.get("externalid") == reference
        ]

    def notes(self, customer_id: str) -> list[str]:
        customer = self.sandbox.customer(customer_id)
        return [line for field in self.NOTE_FIELDS for line in (customer.get(field) or "").splitlines() if line]

    def open_invoices(self) -> list[dict[str, Any]]:
        return [
            {"invoice_id": str(i["id"]), "customer_id": str(i["entity"]), "currency": "USD",
             "amount_due": to_decimal(i["foreignamountunpaid"])}
            for i in self.sandbox.invoices
            if i["status"] == "A" and i["voided"] == "F" and i["currency"] == 1
            and to_decimal(i["foreignamountpaid"] or 0) == 0
        ]


def start(kind: str, *, seed: int, invoices: int, customers: int, clock: Any = None) -> ARSandbox:
    """A seeded sandbox of `kind` (not yet served: serve `.app` with sandboxes.server)."""
    if kind == "billcom":
        from agentcollect_pipeline.sandboxes.billcom import BillComSandbox

        sandbox = BillComSandbox(clock=clock) if clock is not None else BillComSandbox()
        sandbox.seed(seed=seed, invoices=invoices, customers=customers)
        return BillComARSandbox(sandbox)
    if kind == "qbo":
        from agentcollect_pipeline.sandboxes.qbo import QBOSandbox

        sandbox = QBOSandbox(clock=clock) if clock is not None else QBOSandbox()
        sandbox.seed(seed=seed, invoices=invoices, customers=customers)
        return QBOARSandbox(sandbox)
    if kind == "netsuite":
        from agentcollect_pipeline.sandboxes.netsuite import NetSuiteSandbox

        sandbox = NetSuiteSandbox(clock=clock) if clock is not None else NetSuiteSandbox()
        sandbox.seed(seed=seed, invoices=invoices, customers=customers)
        return NetSuiteARSandbox(sandbox)
    raise ValueError(f"no sandbox for AR source {kind!r}")
