"""Deterministic generator of a realistic QuickBooks Online AR book for the sandbox.

Relative to the sandbox clock's "now", so overdue ages look the same whenever it runs; every created or
updated moment lies at least an hour in the past, so an incremental sync after a change sees only it.
Mirrors the Bill.com seed: mostly companies (some persons), US and Canadian billing addresses, a few
missing or invalid emails and phones, customer types on some customers, invoices due from 120 days ago to
30 days ahead, some paid in full or in part (with the linked Payment), some voided, classes on some.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

CENT = Decimal("0.01")
ZERO = Decimal("0")

_ADJECTIVES = ("Northwind", "Blue Ridge", "Summit", "Harbor", "Granite", "Cedar", "Silverline", "Redwood",
               "Lakeshore", "Evergreen", "Ironbridge", "Pioneer", "Maple Leaf", "Atlas", "Beacon", "Crescent",
               "Riverside", "Keystone", "Oakmont", "Sterling", "Highland", "Coastal", "Prairie", "O'Malley's")
_NOUNS = ("Supply", "Logistics", "Dental", "Builders", "Analytics", "Foods", "Engineering", "Design",
          "Hardware", "Veterinary", "Print", "Landscaping", "Medical", "Electric", "Plumbing", "Media",
          "Consulting", "Freight", "Bakery", "Outfitters", "Labs", "Properties", "Auto Repair")
_SUFFIXES = {"US": ("Inc.", "LLC", "Co.", "Corp."), "CA": ("Inc.", "Ltd.", "Corp.")}
_FIRST = ("James", "Maria", "Robert", "Priya", "Michael", "Aisha", "David", "Chen", "Sarah", "Liam", "Olivia",
          "Noah", "Fatima", "Lucas", "Emma", "Hiroshi", "Sofia", "Daniel", "Grace", "Mateo")
_LAST = ("Smith", "Garcia", "Patel", "Nguyen", "Johnson", "Brown", "Tremblay", "Roy", "Williams", "Taylor",
         "Martin", "Lee", "Wilson", "O'Brien", "Thompson", "Okafor", "Kowalski", "Murphy", "Singh")
_STREETS = ("Main", "Oak", "Maple", "Park", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "King",
            "Queen", "Station", "Church", "Mill", "Bay", "Market")
_US_PLACES = (("San Francisco", "CA", "941", "415"), ("Austin", "TX", "787", "512"), ("Chicago", "IL", "606", "312"),
              ("New York", "NY", "100", "212"), ("Denver", "CO", "802", "303"), ("Seattle", "WA", "981", "206"),
              ("Atlanta", "GA", "303", "404"), ("Boston", "MA", "021", "617"), ("Phoenix", "AZ", "850", "602"),
              ("Portland", "OR", "972", "503"), ("Miami", "FL", "331", "305"), ("Columbus", "OH", "432", "614"))
_CA_PLACES = (("Toronto", "ON", "M5V", "416"), ("Vancouver", "BC", "V6B", "604"), ("Montreal", "QC", "H2Y", "514"),
              ("Calgary", "AB", "T2P", "403"), ("Ottawa", "ON", "K1P", "613"), ("Halifax", "NS", "B3J", "902"))
_SERVICES = ("Consulting services", "Monthly subscription", "Hardware supplies", "Freight", "Maintenance plan",
             "Installation", "Software licence", "Training", "Equipment rental", "Professional services")
_BAD_PHONES = ("555-CALL-NOW", "12", "n/a")
_BAD_EMAILS = ("billing at example.com", "accounts@", "none")
_CUSTOMER_TYPES = ("Retail", "Wholesale", "Government", "Key Account")
_CLASSES = (("5000000000000012345", "Services"), ("5000000000000012346", "Products"),
            ("5000000000000012347", "Enterprise"), ("5000000000000012348", "Public Sector"))
_METHODS = (("1", "Cash"), ("2", "Check"), ("3", "Visa"), ("4", "ACH"), ("5", "MasterCard"))
_CUSTOMER_NOTES = ("Prefers email", "Net 30 terms agreed", "Call before 3pm Pacific", "Key account - be polite",
                   "Disputed an invoice in the past")
USD = {"value": "USD", "name": "United States Dollar"}


def _cents(value: float) -> Decimal:
    return Decimal(round(value * 100)).scaleb(-2)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")[:40]


def _phone(rng: random.Random, area: str) -> str:
    line = f"01{rng.randint(0, 99):02d}"  # 555-01xx is reserved for fiction in North America
    return rng.choice((f"({area}) 555-{line}", f"{area}-555-{line}", f"+1 {area} 555 {line}"))


def _address(rng: random.Random, country: str) -> tuple[dict[str, str], str]:
    city, region, prefix, area = rng.choice(_US_PLACES if country == "US" else _CA_PLACES)
    if country == "US":
        postal = f"{prefix}{rng.randint(0, 99):02d}"
    else:
        postal = f"{prefix} {rng.randint(1, 9)}{rng.choice('ABCEGHJKLMNPRSTVXY')}{rng.randint(1, 9)}"
    address = {"Id": str(rng.randint(100, 99999)), "Line1": f"{rng.randint(1, 9999)} {rng.choice(_STREETS)} St",
               "City": city, "CountrySubDivisionCode": region, "PostalCode": postal,
               "Country": rng.choice(("USA", "US")) if country == "US" else rng.choice(("Canada", "CA"))}
    if rng.random() < 0.3:
        address["Line2"] = f"Suite {rng.randint(100, 999)}"
    return address, area


def _between(rng: random.Random, low: datetime, high: datetime) -> datetime:
    if high <= low:
        return low
    return (low + timedelta(seconds=rng.random() * (high - low).total_seconds())).replace(microsecond=0)


def _meta(created: datetime, updated: datetime) -> dict[str, datetime]:
    return {"CreateTime": created, "LastUpdatedTime": updated}


def generate(*, seed: int, invoices: int, customers: int, now: datetime, zone: ZoneInfo,
             new_id: Callable[[], str]) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    latest = (now - timedelta(hours=1, minutes=5)).replace(microsecond=0)
    book_start = now - timedelta(days=730)
    types = [{"Id": new_id(), "SyncToken": "0", "Name": name, "Active": True, "domain": "QBO",
              "MetaData": _meta(book_start, book_start)} for name in _CUSTOMER_TYPES]
    customer_rows = [_customer(rng, index, types, book_start, latest, new_id) for index in range(customers)]
    _deduplicate_names(customer_rows)
    invoice_rows: list[dict[str, Any]] = []
    payment_rows: list[dict[str, Any]] = []
    today = now.astimezone(zone).date()
    for index in range(invoices):
        invoice, payment = _invoice(rng, index, customer_rows, today, now, latest, zone, new_id)
        invoice_rows.append(invoice)
        if payment is not None:
            payment_rows.append(payment)
    return {"CustomerType": types, "Customer": customer_rows, "Invoice": invoice_rows, "Payment": payment_rows}


def _customer(rng: random.Random, index: int, types: list[dict[str, Any]], book_start: datetime,
              latest: datetime, new_id: Callable[[], str]) -> dict[str, Any]:
    country = "US" if rng.random() < 0.8 else "CA"
    person = rng.random() < 0.15
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    company = None if person else f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_SUFFIXES[country])}"
    display = company or f"{first} {last}"
    bill, area = _address(rng, country)
    created = _between(rng, book_start, latest - timedelta(days=270))
    updated = created if rng.random() < 0.5 else _between(rng, created, latest)
    if person:
        email = f"{first.lower().replace(chr(39), '')}.{last.lower().replace(chr(39), '')}@mail.example.com"
    else:
        email = f"{rng.choice(('ap', 'billing', 'accounts'))}@{_slug(company or '')}.example.com"
    record: dict[str, Any] = {
        "Id": new_id(), "SyncToken": str(rng.randint(0, 3)), "domain": "QBO", "sparse": False,
        "MetaData": _meta(created, updated), "DisplayName": display, "FullyQualifiedName": display,
        "PrintOnCheckName": display, "GivenName": first, "FamilyName": last, "Active": rng.random() >= 0.05,
        "Job": False, "BillWithParent": False, "Taxable": False, "PreferredDeliveryMethod": "Email",
        "CurrencyRef": dict(USD), "PrimaryEmailAddr": {"Address": email},
        "PrimaryPhone": {"FreeFormNumber": _phone(rng, area)}, "BillAddr": bill, "Balance": ZERO,
        "BalanceWithJobs": ZERO, "V4IDPseudonym": f"002098{rng.getrandbits(96):024x}",
    }
    if company:
        record["CompanyName"] = company
    if rng.random() < 0.25:
        record["Mobile"] = {"FreeFormNumber": _phone(rng, area)}
    if rng.random() < 0.4:
        kind = rng.choice(types)
        record["CustomerTypeRef"] = {"value": kind["Id"]}
    if rng.random() < 0.15:
        record["Notes"] = rng.choice(_CUSTOMER_NOTES)
    if rng.random() < 0.8:
        record["SalesTermRef"] = {"value": rng.choice(("3", "4"))}
    # Deliberately bad contact data at a small rate each, as real books have.
    roll = rng.random()
    if roll < 0.02:
        del record["PrimaryEmailAddr"]
    elif roll < 0.035:
        record["PrimaryEmailAddr"] = {"Address": rng.choice(_BAD_EMAILS)}
    if rng.random() < 0.02:
        record["PrimaryPhone"] = {"FreeFormNumber": rng.choice(_BAD_PHONES)}
    return record


def _deduplicate_names(rows: list[dict[str, Any]]) -> None:
    """DisplayName is unique in QBO (§1.3)."""
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if row["DisplayName"] in seen:
            row["DisplayName"] = row["FullyQualifiedName"] = row["PrintOnCheckName"] = f"{row['DisplayName']} ({index + 1})"
            if "CompanyName" in row:
                row["CompanyName"] = row["DisplayName"]
        seen.add(row["DisplayName"])


def _invoice(rng: random.Random, index: int, customers: list[dict[str, Any]], today: date, now: datetime,
             latest: datetime, zone: ZoneInfo, new_id: Callable[[], str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    customer = customers[int(len(customers) * rng.random() ** 1.6)]  # a few customers hold many invoices
    due = today + timedelta(days=rng.randint(-120, 30))
    terms = rng.choice((15, 30, 30, 30, 45, 60))
    txn_day = min(due - timedelta(days=terms), today - timedelta(days=1 + rng.randint(0, 5)))
    created = min(datetime.combine(txn_day, datetime.min.time(), zone) + timedelta(seconds=28800 + int(36000 * rng.random())), latest)
    updated = created if rng.random() < 0.4 else _between(rng, created, latest)
    total = _cents(min(max(math.exp(rng.gauss(math.log(1800), 1.1)), 50.0), 50000.0))
    service = rng.choice(_SERVICES)
    invoice_id = new_id()
    record: dict[str, Any] = {
        "Id": invoice_id, "SyncToken": "0", "domain": "QBO", "sparse": False, "MetaData": _meta(created, updated),
        "DocNumber": str(1001 + index), "TxnDate": txn_day.isoformat(), "DueDate": due.isoformat(),
        "CustomerRef": {"value": customer["Id"], "name": customer["DisplayName"]},
        "SalesTermRef": {"value": "3" if terms == 30 else "4"}, "TotalAmt": total, "Balance": total,
        "Line": [{"Id": "1", "LineNum": 1, "Amount": total, "Description": service, "DetailType": "SalesItemLineDetail",
                  "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Services"}, "Qty": 1, "UnitPrice": total}},
                 {"Amount": total, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}],
        "CustomerMemo": {"value": f"{service} - {txn_day:%B %Y}"}, "LinkedTxn": [],
        "EmailStatus": "NotSet", "PrintStatus": "NotSet", "AllowOnlineACHPayment": rng.random() < 0.5,
    }
    if rng.random() < 0.9:
        record["CurrencyRef"] = dict(USD)
    if email := customer.get("PrimaryEmailAddr", {}).get("Address"):
        record["BillEmail"] = {"Address": email}
    if rng.random() < 0.7:
        record["EmailStatus"] = "EmailSent"
        sent = min(created + timedelta(minutes=rng.randint(1, 120)), latest)
        record["DeliveryInfo"] = {"DeliveryType": "Email", "DeliveryTime": sent}
    if rng.random() < 0.4:
        value, name = rng.choice(_CLASSES)
        record["ClassRef"] = {"value": value, "name": name}
    roll = rng.random()
    if roll < 0.03:
        record.update(TotalAmt=ZERO, Balance=ZERO, PrivateNote="Voided")
        record["Line"][0]["Amount"] = record["Line"][1]["Amount"] = ZERO
        return record, None
    if roll < 0.13:
        paid = total
    elif roll < 0.21:
        paid = (total * rng.randint(20, 80)).scaleb(-2).quantize(CENT)
    else:
        return record, None
    return record, _payment_for(rng, record, paid, terms, today, latest, zone, new_id)


def _payment_for(rng: random.Random, invoice: dict[str, Any], paid: Decimal, terms: int, today: date,
                 latest: datetime, zone: ZoneInfo, new_id: Callable[[], str]) -> dict[str, Any]:
    txn_day = date.fromisoformat(invoice["TxnDate"])
    pay_day = min(txn_day + timedelta(days=rng.randint(1, terms + 30)), today - timedelta(days=1))
    created = invoice["MetaData"]["CreateTime"]
    paid_at = min(max(datetime.combine(pay_day, datetime.min.time(), zone) + timedelta(hours=rng.uniform(8, 18)),
                      created), latest).replace(microsecond=0)
    payment_id = new_id()
    method_id, method = rng.choice(_METHODS)
    payment: dict[str, Any] = {
        "Id": payment_id, "SyncToken": "0", "domain": "QBO", "sparse": False, "MetaData": _meta(paid_at, paid_at),
        "TxnDate": pay_day.isoformat(), "CustomerRef": dict(invoice["CustomerRef"]), "CurrencyRef": dict(USD),
        "TotalAmt": paid, "UnappliedAmt": ZERO, "ProcessPayment": method in ("Visa", "MasterCard") and rng.random() < 0.5,
        "DepositToAccountRef": {"value": "4", "name": "Undeposited Funds"},
        "PaymentMethodRef": {"value": method_id, "name": method},
        "Line": [{"Amount": paid, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}],
    }
    if method == "Check":
        payment["PaymentRefNum"] = str(rng.randint(1000, 99999))
    invoice["Balance"] = invoice["TotalAmt"] - paid
    invoice["LinkedTxn"] = [{"TxnId": payment_id, "TxnType": "Payment"}]
    invoice["SyncToken"] = "1"
    if paid_at > invoice["MetaData"]["LastUpdatedTime"]:
        invoice["MetaData"]["LastUpdatedTime"] = paid_at
    return payment
