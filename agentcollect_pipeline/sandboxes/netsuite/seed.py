"""Deterministic generator of a realistic NetSuite AR book for the sandbox.

Records are dicts keyed by SuiteQL column names (lowercase), holding typed values: int ids, Decimal money,
`date` days, aware UTC datetimes at whole seconds, and 'T'/'F' for booleans, as the SuiteQL engine expects.

Everything is relative to the sandbox clock's "now", and every created/modified timestamp lies at least an
hour in the past, so an incremental sync after a test's change sees only that change. A small share of
records is deliberately bad (missing or invalid email, undialable phone), because real books contain them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

FIRST_ENTITY_ID = 101
FIRST_TRANSACTION_ID = 5001

CURRENCIES = (
    {"id": 1, "name": "US Dollar", "symbol": "USD", "displaysymbol": "$", "isbasecurrency": "T", "isinactive": "F",
     "exchangerate": Decimal("1.00")},
    {"id": 2, "name": "Canadian Dollar", "symbol": "CAD", "displaysymbol": "$", "isbasecurrency": "F",
     "isinactive": "F", "exchangerate": Decimal("0.73")},
    {"id": 3, "name": "Euro", "symbol": "EUR", "displaysymbol": "€", "isbasecurrency": "F", "isinactive": "F",
     "exchangerate": Decimal("1.08")},
    {"id": 4, "name": "British pound", "symbol": "GBP", "displaysymbol": "£", "isbasecurrency": "F",
     "isinactive": "F", "exchangerate": Decimal("1.27")},
)
CLASSES = ({"id": 1, "name": "Enterprise", "isinactive": "F"}, {"id": 2, "name": "Mid-Market", "isinactive": "F"},
           {"id": 3, "name": "Small Business", "isinactive": "F"}, {"id": 4, "name": "Public Sector", "isinactive": "F"})
CATEGORIES = ({"id": 1, "name": "Retail"}, {"id": 2, "name": "Wholesale"}, {"id": 3, "name": "Government"},
              {"id": 4, "name": "Non-profit"}, {"id": 5, "name": "Strategic"})
TERMS = {1: ("Net 15", 15), 2: ("Net 30", 30), 3: ("Net 45", 45), 4: ("Net 60", 60)}

_ADJECTIVES = ("Northwind", "Blue Ridge", "Summit", "Harbor", "Granite", "Cedar", "Silverline", "Redwood",
               "Lakeshore", "Evergreen", "Ironbridge", "Pioneer", "Maple Leaf", "Atlas", "Beacon", "Crescent",
               "Riverside", "Keystone", "Oakmont", "Sterling", "Highland", "Coastal", "Prairie", "Juniper")
_NOUNS = ("Supply", "Logistics", "Dental", "Builders", "Analytics", "Foods", "Engineering", "Design", "Hardware",
          "Veterinary", "Print", "Landscaping", "Medical", "Electric", "Plumbing", "Media", "Consulting", "Freight")
_SUFFIXES = {"US": ("Inc.", "LLC", "Co.", "Corp."), "CA": ("Inc.", "Ltd.", "Corp.")}
_FIRST = ("James", "Maria", "Robert", "Priya", "Michael", "Aisha", "David", "Chen", "Sarah", "Liam", "Olivia",
          "Noah", "Fatima", "Lucas", "Emma", "Hiroshi", "Sofia", "Daniel", "Grace", "Mateo", "Chloe", "Omar")
_LAST = ("Smith", "Garcia", "Patel", "Nguyen", "Johnson", "Brown", "Tremblay", "Roy", "Williams", "Taylor",
         "Martin", "Lee", "Wilson", "Thompson", "Okafor", "Kowalski", "Murphy", "Singh")
_STREETS = ("Main", "Oak", "Maple", "Park", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "King",
            "Queen", "Station", "Church", "Mill", "Bay", "Market")
_US_PLACES = (("San Francisco", "CA", "941", "415"), ("Austin", "TX", "787", "512"), ("Chicago", "IL", "606", "312"),
              ("New York", "NY", "100", "212"), ("Denver", "CO", "802", "303"), ("Seattle", "WA", "981", "206"),
              ("Atlanta", "GA", "303", "404"), ("Boston", "MA", "021", "617"), ("Phoenix", "AZ", "850", "602"),
              ("Portland", "OR", "972", "503"), ("Miami", "FL", "331", "305"), ("Honolulu", "HI", "968", "808"))
_CA_PLACES = (("Toronto", "ON", "M5V", "416"), ("Vancouver", "BC", "V6B", "604"), ("Montreal", "QC", "H2Y", "514"),
              ("Calgary", "AB", "T2P", "403"), ("Halifax", "NS", "B3J", "902"))
_ITEMS = ("Consulting services", "Monthly subscription", "Hardware supplies", "Freight", "Maintenance plan",
          "Installation", "Software licence", "Training", "Equipment rental", "Professional services")
_BAD_PHONES = ("555-CALL-NOW", "12", "n/a")
_BAD_EMAILS = ("accounts at example.com", "billing@", "ap@@example.com")
_COMMENTS = ("Prefers email", "Key account - call before 3pm", "Disputed an invoice in 2025", "PO required on all invoices")


def status_display(record_type: str, status: str) -> str | None:
    names = {
        "CustInvc": {"A": "Invoice : Open", "B": "Invoice : Paid In Full", "D": "Invoice : Pending Approval",
                     "E": "Invoice : Rejected", "V": "Invoice : Voided"},
        "CustPymt": {"A": "Payment : Unapproved Payment", "B": "Payment : Not Deposited", "C": "Payment : Deposited",
                     "R": "Payment : Rejected"},
    }
    return names.get(record_type, {}).get(status)


@dataclass
class Book:
    customers: list[dict[str, Any]] = field(default_factory=list)
    addresses: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    applications: dict[int, dict[int, Decimal]] = field(default_factory=dict)  # payment -> {invoice: amount}


def _ri(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def _pick(rng: random.Random, items: Any) -> Any:
    return items[int(rng.random() * len(items))]


def _whole_seconds(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _between(rng: random.Random, low: datetime, high: datetime) -> datetime:
    if high <= low:
        return _whole_seconds(low)
    return _whole_seconds(low + timedelta(seconds=rng.random() * (high - low).total_seconds()))


def _phone(rng: random.Random, area: str) -> str:
    line = f"01{_ri(rng, 0, 99):02d}"  # 555-01xx is reserved for fiction in North America
    style = rng.random()
    if style < 0.5:
        return f"({area}) 555-{line}"
    if style < 0.8:
        return f"{area}-555-{line}"
    return f"+1 {area} 555 {line}"


def _address(rng: random.Random, country: str, nkey: int, addressee: str) -> tuple[dict[str, Any], str]:
    city, state, prefix, area = _pick(rng, _US_PLACES if country == "US" else _CA_PLACES)
    if country == "US":
        postcode = f"{prefix}{_ri(rng, 0, 99):02d}"
    else:
        postcode = f"{prefix} {_ri(rng, 1, 9)}{_pick(rng, 'ABCEGHJKLMNPRSTVXY')}{_ri(rng, 1, 9)}"
    record = {
        "nkey": nkey, "addressee": addressee,
        "addr1": f"{_ri(rng, 1, 9999)} {_pick(rng, _STREETS)} {_pick(rng, ('St', 'Ave', 'Blvd', 'Rd'))}",
        "addr2": f"Suite {_ri(rng, 100, 999)}" if rng.random() < 0.3 else None,
        "city": city, "state": state, "zip": postcode, "country": country,
    }
    return record, area


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")[:40]


def _customer(rng: random.Random, index: int, entity_id: int, created: datetime, updated: datetime,
              book: Book) -> dict[str, Any]:
    country = "US" if rng.random() < 0.8 else "CA"
    person = rng.random() < 0.15
    first, last = _pick(rng, _FIRST), _pick(rng, _LAST)
    company = None if person else f"{_pick(rng, _ADJECTIVES)} {_pick(rng, _NOUNS)} {_pick(rng, _SUFFIXES[country])}"
    display = f"{first} {last}" if person else company
    address, area = _address(rng, country, len(book.addresses) + 1, display or "")
    book.addresses.append(address)
    if person:
        email: str | None = f"{first.lower()}.{last.lower()}{index}@mail.example.com"
    else:
        email = f"{_pick(rng, ('ap', 'billing', 'accounts', 'finance'))}@{_slug(company or '')}.example.com"
    roll = rng.random()
    if roll < 0.02:
        email = None
    elif roll < 0.04:
        email = _pick(rng, _BAD_EMAILS)
    phone = _phone(rng, area) if rng.random() < 0.95 else None
    if rng.random() < 0.03:
        phone = _pick(rng, _BAD_PHONES)
    return {
        "id": entity_id, "entityid": f"CUST{index + 1:05d} {display}", "altname": display,
        "companyname": company, "isperson": "T" if person else "F",
        "firstname": first if person else None, "lastname": last if person else None,
        "email": email, "phone": phone,
        "altphone": _phone(rng, area) if rng.random() < 0.25 else None,
        "mobilephone": _phone(rng, area) if rng.random() < 0.4 else None,
        "comments": _pick(rng, _COMMENTS) if rng.random() < 0.15 else None,
        "category": _pick(rng, CATEGORIES)["id"] if rng.random() < 0.7 else None,
        "entitystatus": 13, "terms": _pick(rng, tuple(TERMS)), "creditlimit": Decimal(_ri(rng, 5, 100) * 1000),
        "isinactive": "T" if rng.random() < 0.04 else "F", "parent": None, "currency": 1,
        "defaultbillingaddress": address["nkey"], "externalid": None,
        "datecreated": created, "lastmodifieddate": updated,
    }


def _contacts(rng: random.Random, customer: dict[str, Any], latest: datetime, next_id: int) -> list[dict[str, Any]]:
    if customer["isperson"] == "T":
        return []
    domain = (customer["email"] or "example.com").rpartition("@")[2] or "example.com"
    area = "416" if customer["phone"] is None else "".join(ch for ch in customer["phone"] if ch.isdigit())[-10:-7]
    out = []
    for offset in range(rng.choices((0, 1, 2), weights=(40, 40, 20))[0]):
        first, last = _pick(rng, _FIRST), _pick(rng, _LAST)
        created = _between(rng, customer["datecreated"], latest)
        out.append({
            "id": next_id + offset, "entityid": f"{first} {last}", "company": customer["id"],
            "firstname": first, "lastname": last, "email": f"{first.lower()}.{last.lower()}@{domain}",
            "phone": _phone(rng, area or "415"), "mobilephone": _phone(rng, area or "415") if rng.random() < 0.5 else None,
            "title": _pick(rng, ("AP Manager", "Controller", "Office Manager", "CFO", None)),
            "isinactive": "T" if rng.random() < 0.05 else "F", "datecreated": created,
            "lastmodifieddate": _between(rng, created, latest),
        })
    return out


def _amount(rng: random.Random) -> Decimal:
    value = min(max(math.exp(rng.gauss(math.log(1800), 1.1)), 50.0), 50000.0)
    return Decimal(round(value * 100)).scaleb(-2)


def generate(*, seed: int, invoices: int, customers: int, now: datetime) -> Book:
    rng = random.Random(seed)
    latest = _whole_seconds(now - timedelta(hours=1, minutes=5))
    today = now.date()
    book = Book()
    entity_id = FIRST_ENTITY_ID
    for index in range(customers):
        created = _between(rng, now - timedelta(days=900), latest - timedelta(days=200))
        updated = created if rng.random() < 0.5 else _between(rng, created, latest)
        customer = _customer(rng, index, entity_id, created, updated, book)
        if book.customers and customer["isperson"] == "F" and rng.random() < 0.04:
            customer["parent"] = _pick(rng, book.customers[: max(1, len(book.customers) // 2)])["id"]
        book.customers.append(customer)
        entity_id += 1
        contacts = _contacts(rng, customer, latest, entity_id)
        book.contacts.extend(contacts)
        entity_id += len(contacts)

    transaction_id = FIRST_TRANSACTION_ID
    payments: list[dict[str, Any]] = []
    for index in range(invoices):
        if not book.customers:
            break
        # Skewed so that a few customers hold many invoices, as in real debtor books.
        customer = book.customers[int(len(book.customers) * rng.random() ** 1.6)]
        invoice, payment = _invoice(rng, index, transaction_id, customer, today, now, latest)
        book.transactions.append(invoice)
        transaction_id += 1
        if payment is not None:
            payments.append(payment)
    payments.sort(key=lambda p: (p["createddate"], p["_invoice"]))
    for number, payment in enumerate(payments, start=1):
        invoice_id = payment.pop("_invoice")
        payment.update(id=transaction_id, tranid=f"PYMT{number:05d}")
        book.applications[transaction_id] = {invoice_id: payment["foreigntotal"]}
        book.transactions.append(payment)
        transaction_id += 1
    return book


def _invoice(rng: random.Random, index: int, transaction_id: int, customer: dict[str, Any], today: date,
             now: datetime, latest: datetime) -> tuple[dict[str, Any], dict[str, Any] | None]:
    terms_name, terms_days = TERMS[customer["terms"]]
    due = today + timedelta(days=_ri(rng, -120, 30))
    tran_day = min(due - timedelta(days=terms_days), today - timedelta(days=1))
    created = min(_whole_seconds(datetime.combine(tran_day, datetime.min.time(), tzinfo=UTC)
                                 + timedelta(seconds=28800 + 36000 * rng.random())), latest)
    updated = created if rng.random() < 0.4 else _between(rng, created, latest)
    total = _amount(rng)
    paid, status, voided = ZERO, "A", "F"
    roll = rng.random()
    if roll < 0.03:
        status, voided = "V", "T"
    elif roll < 0.15:
        paid, status = total, "B"
    elif roll < 0.24:
        paid = (total * _ri(rng, 20, 80)).scaleb(-2).quantize(CENT)
    invoice = {
        "id": transaction_id, "tranid": f"INV{index + 10001}", "type": "CustInvc", "recordtype": "invoice",
        "entity": customer["id"], "trandate": tran_day, "duedate": due, "currency": customer["currency"],
        "exchangerate": Decimal("1.00"), "foreigntotal": total, "foreignamountpaid": paid,
        "foreignamountunpaid": total - paid, "status": status, "voided": voided,
        "class": _pick(rng, CLASSES)["id"] if rng.random() < 0.6 else None,
        "memo": f"{_pick(rng, _ITEMS)} - {tran_day:%B %Y}", "terms": customer["terms"],
        "otherrefnum": f"PO-{_ri(rng, 10000, 99999)}" if rng.random() < 0.3 else None,
        "externalid": None, "posting": "T", "createddate": created, "lastmodifieddate": updated,
    }
    if paid <= 0:
        return invoice, None
    pay_day = min(tran_day + timedelta(days=_ri(rng, 1, terms_days + 30)), today - timedelta(days=1))
    pay_time = min(max(_whole_seconds(datetime.combine(pay_day, datetime.min.time(), tzinfo=UTC)
                                      + timedelta(hours=8 + 10 * rng.random())), created), latest)
    invoice["lastmodifieddate"] = max(invoice["lastmodifieddate"], pay_time)
    payment = {
        "_invoice": transaction_id, "type": "CustPymt", "recordtype": "customerpayment", "entity": customer["id"],
        "trandate": pay_day, "duedate": None, "currency": customer["currency"], "exchangerate": Decimal("1.00"),
        "foreigntotal": paid, "foreignamountpaid": None, "foreignamountunpaid": None, "status": "C",
        "voided": "F", "class": None, "memo": f"Check #{_ri(rng, 1000, 9999)}" if rng.random() < 0.5 else None,
        "terms": None, "otherrefnum": None, "externalid": None, "posting": "T",
        "createddate": pay_time, "lastmodifieddate": pay_time,
    }
    return invoice, payment
