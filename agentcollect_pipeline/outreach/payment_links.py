"""The payment link every message carries: Bill.com's own link for the invoice, else the configured template.

Bill.com's v3 `POST /v3/invoices/{invoiceId}/payment-link` gives a link the debtor pays through without a
BILL account; a payment made there is an online ReceivedPay, so the next sync sees the invoice paid. A link
is asked for once per invoice and kept in `invoice_payment_links` (every later message about the invoice
reuses it); a run asks for all its missing links in one batch, 3 in flight (the client's org limit).

`AGENTCOLLECT_PAYMENT_LINK_TEMPLATE` is used instead, with the reason logged, when the v3 endpoint is not
configured (no `BILLCOM_V3_BASE_URL`, or the AR source is not Bill.com), when Bill.com refuses the invoice
(kept for a day, then asked again) or when Bill.com is unreachable (not kept: the next run asks again).
"""

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from agentcollect_pipeline.rules.cadence import valid_email
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse.store import Warehouse

log = logging.getLogger(__name__)
L = os_.invoice_payment_links
ASK_AGAIN_AFTER_REFUSAL = timedelta(days=1)


@dataclass(frozen=True)
class LinkRequest:
    invoice_id: str
    customer_id: str
    case_id: str
    email: str | None  # where Bill.com sends the receipt; None: the customer has no usable address


def billcom_client(resource: Any) -> tuple[Any | None, str]:
    """The Bill.com client that can make payment links, or None and why not. `resource` is the AR source
    resource (kind + nested billcom) or a BillComResource."""
    kind = getattr(resource, "kind", "billcom")
    billcom = getattr(resource, "billcom", None) if hasattr(resource, "kind") else resource
    if kind != "billcom" or billcom is None:
        return None, f"the AR source is {kind}, not Bill.com"
    if not getattr(billcom, "v3_base_url", None):
        return None, "BILLCOM_V3_BASE_URL is not set (Bill.com's v3 payment-link endpoint is not configured)"
    return billcom.get_client(), ""


class PaymentLinks:
    """Links for one run: cached rows, one batched fetch of the missing ones, the template as fallback."""

    def __init__(self, store: Warehouse, client: Any | None, template: str, now: datetime,
                 unavailable: str = "", logger: logging.Logger | logging.LoggerAdapter | None = None):
        self._store, self._client, self._template, self._now = store, client, template, now
        self._log = logger or log
        self._unavailable = unavailable if client is None else ""
        self._links: dict[str, str] = {}
        self._tried: set[str] = set()
        self._customers = pd.DataFrame(columns=["email"])
        self.counts: Counter[str] = Counter()
        if self._unavailable:
            self._log.info("payment links: using AGENTCOLLECT_PAYMENT_LINK_TEMPLATE: %s", self._unavailable)

    def prefetch(self, requests: Iterable[LinkRequest]) -> None:
        """Load the cached links of these invoices and fetch the missing ones from Bill.com in one batch."""
        wanted = {r.invoice_id: r for r in requests}
        if not wanted:
            return
        cached = self._cached(list(wanted))
        missing = []
        for invoice_id, request in wanted.items():
            row = cached.get(invoice_id)
            if row is not None and row["payment_link"]:
                self._links[invoice_id] = row["payment_link"]
            elif row is not None and self._now - row["fetched_at"] < ASK_AGAIN_AFTER_REFUSAL:
                self._tried.add(invoice_id)  # refused recently: the template, without asking again
            else:
                missing.append(request)
        self._fetch(missing)

    def link(self, invoice_id: str, customer_id: str, case_id: str, email: str | None = None) -> str:
        """The invoice's Bill.com link (cached, prefetched or fetched now), else the template's URL."""
        if invoice_id not in self._links and invoice_id not in self._tried:
            cached = self._cached([invoice_id]).get(invoice_id)
            if cached is not None and cached["payment_link"]:
                self._links[invoice_id] = cached["payment_link"]
            else:
                self._fetch([LinkRequest(invoice_id, customer_id, case_id, email)])
        if invoice_id in self._links:
            self.counts["billcom"] += 1
            return self._links[invoice_id]
        self.counts["template"] += 1
        return self._template.format(invoice_id=invoice_id, customer_id=customer_id, case_id=case_id)

    def for_action(self, invoice_id: str, action: Mapping[str, Any]) -> str:
        """`link` for the invoice a due action's message names first."""
        email = customer_email(self._customers, action["customer_id"], action)
        return self.link(invoice_id, action["customer_id"], action["case_id"], email)

    def metadata(self) -> dict[str, int]:
        return {f"payment_links/{k}": int(v) for k, v in sorted(self.counts.items())}

    # -- internals --------------------------------------------------------------------------------------

    def _cached(self, invoice_ids: list[str]) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        with self._store.engine.connect() as conn:
            for start in range(0, len(invoice_ids), 500):
                batch = invoice_ids[start:start + 500]
                for row in conn.execute(sa.select(L).where(L.c.invoice_id.in_(batch))).mappings():
                    rows[row["invoice_id"]] = dict(row)
        return rows

    def _fetch(self, requests: list[LinkRequest]) -> None:
        from agentcollect_pipeline.clients.billcom import BillComError

        self._tried.update(r.invoice_id for r in requests)
        if self._unavailable or not requests:
            return
        askable = []
        for request in requests:
            if request.email and valid_email(request.email):
                askable.append(request)
            else:
                self._log.warning("payment link for invoice %s: template used: customer %s has no email address "
                                  "for Bill.com's receipt", request.invoice_id, request.customer_id)
        if not askable:
            return
        results = self._client.invoice_payment_links([
            {"invoice_id": r.invoice_id, "customer_id": r.customer_id, "email": r.email} for r in askable])
        self.counts["fetched"] += len(askable)
        rows, down = [], None
        for request, result in zip(askable, results, strict=True):
            if isinstance(result, str):
                self._links[request.invoice_id] = result
                rows.append(self._row(request, link=result))
            elif isinstance(result, BillComError) and result.code not in ("BDC_1144", "BDC_1322"):
                # A definite refusal about this invoice (e.g. unknown id, a customer connected in the BILL
                # network): remembered for a day so each run does not ask again.
                self._log.warning("payment link for invoice %s: template used: Bill.com refused (%s: %s)",
                                  request.invoice_id, result.code, result.message)
                rows.append(self._row(request, error=f"{result.code}: {result.message}"[:500]))
            else:
                down = f"{type(result).__name__}: {result}"
        if down:
            # Unreachable or over its limits: nothing is kept, the next run asks again; no more calls now.
            self._unavailable = f"Bill.com's payment-link endpoint is unavailable ({down})"
            self._log.warning("payment links: using AGENTCOLLECT_PAYMENT_LINK_TEMPLATE for the rest of this run: %s",
                              self._unavailable)
        if rows:
            with self._store.transaction() as conn:
                self._store.upsert(conn, L, rows)

    def _row(self, request: LinkRequest, *, link: str | None = None, error: str | None = None) -> dict:
        return {"invoice_id": request.invoice_id, "customer_id": request.customer_id, "payment_link": link,
                "email": request.email, "error": error, "fetched_at": self._now}


def oldest_open_invoice(invoice_ids: str, fresh: Mapping[str, dict]) -> str | None:
    """The case's invoice the message names first (oldest due date) among those still open in `fresh`."""
    rows = [fresh[i] for i in str(invoice_ids).split(",") if i in fresh]
    rows = [r for r in rows if r.get("is_active") and (r.get("amount_due_cents") or 0) > 0]
    if not rows:
        return None
    return min(rows, key=lambda r: (r.get("due_date") is None, r.get("due_date") or 0, r["invoice_id"]))["invoice_id"]


def customer_email(customers: pd.DataFrame, customer_id: str, action: Mapping[str, Any]) -> str | None:
    """The address Bill.com sends the receipt to: the customer's email, else the email we are writing to."""
    email = customers.loc[customer_id].get("email") if customer_id in customers.index else None
    if isinstance(email, str) and valid_email(email):
        return email.strip().lower()
    if action.get("channel") == "email" and valid_email(action.get("destination")):
        return str(action["destination"]).strip().lower()
    return None


def prepare(store: Warehouse, resource: Any, template: str, due: pd.DataFrame, fresh: Mapping[str, dict],
            customers: pd.DataFrame, now: datetime, logger=None) -> PaymentLinks:
    """The run's links: the client from the AR source resource, and one batched prefetch for every due
    action's first invoice (the one its message's link is for)."""
    client, why = billcom_client(resource)
    links = PaymentLinks(store, client, template, now, why, logger)
    links._customers = customers
    requests = []
    for action in due.to_dict("records"):
        invoice_id = oldest_open_invoice(action["invoice_ids"], fresh)
        if invoice_id is not None:
            requests.append(LinkRequest(invoice_id, action["customer_id"], action["case_id"],
                                        customer_email(customers, action["customer_id"], action)))
    links.prefetch(requests)
    return links
