"""Deterministic generator of a realistic Bill.com AR book for the sandbox.

Everything is relative to the sandbox clock's "now" so that overdue ages look the same whenever it runs,
and every created/updated timestamp lies at least an hour in the past: an incremental sync that runs
after `BillComSandbox.mutate()` must see only the rows that were mutated.

A small share of records is deliberately bad (missing email, unusable phone, zero/negative amounts,
invoices pointing at customers that do not exist), because real books contain them and the pipeline
must quarantine rather than crash.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from .app import fmt_date, fmt_ts

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

_ADJECTIVES = ("Northwind", "Blue Ridge", "Summit", "Harbor", "Granite", "Cedar", "Silverline", "Redwood",
               "Lakeshore", "Evergreen", "Ironbridge", "Pioneer", "Maple Leaf", "Atlas", "Beacon", "Crescent",
               "Riverside", "Keystone", "Oakmont", "Sterling", "Highland", "Coastal", "Prairie", "Thames",
               "Windsor", "Bramble", "Falcon", "Copperfield", "Meridian", "Juniper")
_NOUNS = ("Supply", "Logistics", "Dental", "Builders", "Analytics", "Foods", "Engineering", "Design",
          "Hardware", "Veterinary", "Print", "Landscaping", "Medical", "Electric", "Plumbing", "Media",
          "Consulting", "Freight", "Bakery", "Outfitters", "Labs", "Properties", "Auto Repair", "Textiles")
_SUFFIXES = {"US": ("Inc.", "LLC", "Co.", "Corp.", "Group"), "CA": ("Inc.", "Ltd.", "Corp.", "Co."),
             "GB": ("Ltd", "PLC", "LLP", "& Sons Ltd")}
_FIRST = ("James", "Maria", "Robert", "Priya", "Michael", "Aisha", "David", "Chen", "Sarah", "Liam", "Olivia",
          "Noah", "Fatima", "Lucas", "Emma", "Hiroshi", "Sofia", "Daniel", "Grace", "Mateo", "Chloe", "Omar")
_LAST = ("Smith", "Garcia", "Patel", "Nguyen", "Johnson", "Brown", "Tremblay", "Roy", "Williams", "Taylor",
         "Martin", "Lee", "Wilson", "Davies", "Evans", "Thompson", "Okafor", "Kowalski", "Murphy", "Singh")
_STREETS = ("Main", "Oak", "Maple", "Park", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "King",
            "Queen", "High", "Station", "Church", "Mill", "Victoria", "Bay", "Market", "Harbour")
_US_PLACES = (("San Francisco", "CA", "941", "415"), ("Austin", "TX", "787", "512"), ("Chicago", "IL", "606", "312"),
              ("New York", "NY", "100", "212"), ("Denver", "CO", "802", "303"), ("Seattle", "WA", "981", "206"),
              ("Atlanta", "GA", "303", "404"), ("Boston", "MA", "021", "617"), ("Phoenix", "AZ", "850", "602"),
              ("Portland", "OR", "972", "503"), ("Miami", "FL", "331", "305"), ("Columbus", "OH", "432", "614"))
_CA_PLACES = (("Toronto", "ON", "M5V", "416"), ("Vancouver", "BC", "V6B", "604"), ("Montreal", "QC", "H2Y", "514"),
              ("Calgary", "AB", "T2P", "403"), ("Ottawa", "ON", "K1P", "613"), ("Halifax", "NS", "B3J", "902"))
_GB_PLACES = (("London", "Greater London", "EC1A", "20"), ("Manchester", "Greater Manchester", "M1", "161"),
              ("Leeds", "West Yorkshire", "LS1", "113"), ("Bristol", "Bristol", "BS1", "117"),
              ("Edinburgh", "City of Edinburgh", "EH1", "131"), ("Birmingham", "West Midlands", "B1", "121"))
_STREET_KIND = {"US": ("St", "Ave", "Blvd", "Rd", "Dr"), "CA": ("St", "Ave", "Rd", "Blvd"),
                "GB": ("Street", "Road", "Lane", "Way")}
_SERVICES = ("Consulting services", "Monthly subscription", "Hardware supplies", "Freight", "Maintenance plan",
             "Installation", "Software licence", "Training", "Equipment rental", "Professional services")
_BAD_PHONES = ("555-CALL-NOW", "12", "n/a", "000")
# A handful of accounting classes, so tier/class exclusions in the pipeline have something to bite on.
ACCOUNTING_CLASSES = ("0ac01SANDBOXCLASS001", "0ac01SANDBOXCLASS002", "0ac01SANDBOXCLASS003",
                      "0ac01SANDBOXCLASS004", "0ac01SANDBOXCLASS005")
DEPOSIT_ACCOUNT = "0ca01SANDBOXBANK0001"

_ALNUM = "ABCDEFGHJKLMNPRSTUVWXYZ"


_MONTHS = ("", "January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


# random.randint/choice cost several Python frames each; these keep seeding 100k invoices to a few seconds.
def _ri(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def _pick(rng: random.Random, items: Any) -> Any:
    return items[int(rng.random() * len(items))]


def _cents(value: float) -> Decimal:
    return Decimal(round(value * 100)).scaleb(-2)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")[:40]


def _phone(rng: random.Random, country: str, area: str) -> str:
    line = f"01{_ri(rng, 0, 99):02d}"  # 555-01xx is reserved for fiction in North America
    if country == "GB":
        # Ofcom's drama ranges: 020 7946 0xxx and equivalents, never a real subscriber.
        return f"+44 {area} {_pick(rng, ('7946', '496', '4960'))} 0{_ri(rng, 0, 999):03d}"
    style = rng.random()
    if style < 0.5:
        return f"({area}) 555-{line}"
    if style < 0.8:
        return f"{area}-555-{line}"
    return f"+1 {area} 555 {line}"


def _postcode(rng: random.Random, country: str, prefix: str) -> str:
    if country == "US":
        return f"{prefix}{_ri(rng, 0, 99):02d}"
    if country == "CA":
        return f"{prefix} {_ri(rng, 1, 9)}{_pick(rng, _ALNUM)}{_ri(rng, 1, 9)}"
    return f"{prefix} {_ri(rng, 1, 9)}{_pick(rng, _ALNUM)}{_pick(rng, _ALNUM)}"


def _address(rng: random.Random, country: str) -> tuple[dict[str, str], str]:
    places = {"US": _US_PLACES, "CA": _CA_PLACES, "GB": _GB_PLACES}[country]
    city, region, prefix, area = _pick(rng, places)
    street = f"{_ri(rng, 1, 9999)} {_pick(rng, _STREETS)} {_pick(rng, _STREET_KIND[country])}"
    second = f"Suite {_ri(rng, 100, 999)}" if rng.random() < 0.3 else ""
    country_name = {"US": "USA", "CA": "Canada", "GB": "United Kingdom"}[country]
    return {"Address1": street, "Address2": second, "AddressCity": city, "AddressState": region,
            "AddressCountry": country_name, "AddressZip": _postcode(rng, country, prefix)}, area


def _moment_between(rng: random.Random, low: datetime, high: datetime) -> datetime:
    if high <= low:
        return low
    return low + timedelta(seconds=rng.random() * (high - low).total_seconds())


def _day_start(day: date, like: datetime) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=like.tzinfo)


def generate(*, seed: int, invoices: int, customers: int, now: datetime,
             new_id: Callable[[str], str]) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    latest = now - timedelta(hours=1, minutes=5)
    today = now.date()
    book_start = now - timedelta(days=730)

    customer_rows: list[dict[str, Any]] = []
    contact_rows: list[dict[str, Any]] = []
    seen_names: set[str] = set()
    for index in range(customers):
        country = rng.choices(("US", "CA", "GB"), weights=(70, 15, 15))[0]
        person = rng.random() < 0.1
        first, last = _pick(rng, _FIRST), _pick(rng, _LAST)
        if person:
            name, company = f"{first} {last}", ""
        else:
            name = f"{_pick(rng, _ADJECTIVES)} {_pick(rng, _NOUNS)} {_pick(rng, _SUFFIXES[country])}"
            company = name
        if name in seen_names:
            name = f"{name} ({index + 1})"
            company = company and name
        seen_names.add(name)
        domain = f"{_slug(company or last + '-family')}.example.com"
        if person:
            email = f"{first.lower()}.{last.lower()}@mail.example.com"
        else:
            email = f"{_pick(rng, ('ap', 'billing', 'accounts', 'finance'))}@{domain}"
        bill, area = _address(rng, country)
        ship = bill if rng.random() < 0.8 else _address(rng, country)[0]
        # Customers predate their oldest possible invoice (~260 days back), so no invoice precedes its payer.
        created = _moment_between(rng, book_start, latest - timedelta(days=270))
        updated = created if rng.random() < 0.5 else _moment_between(rng, created, latest)
        row: dict[str, Any] = {
            "id": new_id("Customer"), "isActive": "2" if rng.random() < 0.05 else "1",
            "createdTime": fmt_ts(created), "updatedTime": fmt_ts(updated), "name": name,
            "shortName": name[:20], "companyName": company, "contactFirstName": first, "contactLastName": last,
            "accNumber": f"C-{index + 1:05d}", "email": email, "phone": _phone(rng, country, area),
            "altPhone": _phone(rng, country, area) if rng.random() < 0.3 else "",
            "hasAuthorizedToCharge": rng.random() < 0.08, "accountType": "2" if person else "1",
            "printAs": name,
        }
        row.update({f"bill{key}": value for key, value in bill.items()})
        row.update({f"ship{key}": value for key, value in ship.items()})
        if rng.random() < 0.15:
            row["description"] = _pick(rng, ("Net 30 terms agreed", "Prefers email", "Key account",
                                              "Call before 3pm", "Disputed invoices in the past"))
        if country != "US" and rng.random() < 0.17:
            row["invoiceCurrency"] = "CAD" if country == "CA" else _pick(rng, ("GBP", "EUR"))
        if customer_rows and not person and rng.random() < 0.03:
            parent = _pick(rng, customer_rows[: max(1, len(customer_rows) // 2)])
            row["parentCustomerId"] = parent["id"]
        # Deliberately bad contact data at a small rate each.
        if rng.random() < 0.015:
            row["email"] = ""
        if rng.random() < 0.015:
            row["phone"] = _pick(rng, _BAD_PHONES)
        customer_rows.append(row)

        for _ in range(rng.choices((0, 1, 2), weights=(35, 45, 20))[0]):
            cfirst, clast = _pick(rng, _FIRST), _pick(rng, _LAST)
            c_created = _moment_between(rng, created, latest)
            contact_rows.append({
                "id": new_id("CustomerContact"), "customerId": row["id"],
                "isActive": "2" if rng.random() < 0.05 else "1", "createdTime": fmt_ts(c_created),
                "updatedTime": fmt_ts(_moment_between(rng, c_created, latest)), "firstName": cfirst,
                "lastName": clast, "email": f"{cfirst.lower()}.{clast.lower()}@{domain}",
                "phone": _phone(rng, country, area),
            })

    invoice_rows: list[dict[str, Any]] = []
    payment_rows: list[dict[str, Any]] = []
    mu, sigma = math.log(1800), 1.1
    for index in range(invoices):
        if customer_rows and rng.random() >= 0.015:
            # Skewed so a few customers hold many invoices, as in real debtor books.
            customer = customer_rows[int(len(customer_rows) * rng.random() ** 1.6)]
            customer_id = customer["id"]
        else:
            customer, customer_id = None, new_id("Customer")  # points at no existing customer
        due = today + timedelta(days=_ri(rng, -200, 60))
        terms = _pick(rng, (15, 30, 30, 30, 45, 60))
        invoice_day = min(due - timedelta(days=terms), today - timedelta(days=1 + _ri(rng, 0, 5)))
        created = min(_day_start(invoice_day, now) + timedelta(seconds=28800 + 36000 * rng.random()), latest)
        updated = created if rng.random() < 0.4 else _moment_between(rng, created, latest)

        amount = _cents(min(max(math.exp(rng.gauss(mu, sigma)), 50.0), 50000.0))
        bad_amount = rng.random() < 0.015
        if bad_amount:
            amount = ZERO if rng.random() < 0.5 else -Decimal(_ri(rng, 5000, 50000)).scaleb(-2)
        amount_due, status, active = amount, "1", "1"
        roll = rng.random()
        paid = ZERO
        if roll < 0.03:
            active = "2"
        elif bad_amount or customer is None:
            pass
        elif roll < 0.13:
            paid, amount_due, status = amount, ZERO, "0"
        elif roll < 0.21:
            paid = (amount * _ri(rng, 20, 80)).scaleb(-2).quantize(CENT)
            amount_due, status = amount - paid, "2"
        elif roll < 0.24:
            status = "4"

        row = {
            "id": new_id("Invoice"), "isActive": active, "createdTime": fmt_ts(created),
            "updatedTime": fmt_ts(updated), "customerId": customer_id, "invoiceNumber": f"INV-{index + 1:06d}",
            "invoiceDate": fmt_date(invoice_day), "dueDate": fmt_date(due), "amount": amount,
            "amountDue": amount_due, "paymentStatus": status, "terms": f"Net {terms}",
            "description": f"{_pick(rng, _SERVICES)} - {_MONTHS[invoice_day.month]} {invoice_day.year}",
            "isToBeEmailed": rng.random() < 0.7,
        }
        if rng.random() < 0.8:
            row["lastSentTime"] = fmt_ts(min(created + timedelta(minutes=_ri(rng, 1, 120)), latest))
        if rng.random() < 0.6:
            row["actgClassId"] = _pick(rng, ACCOUNTING_CLASSES)
        if rng.random() < 0.3:
            row["poNumber"] = f"PO-{_ri(rng, 10000, 99999)}"
        if customer is not None and rng.random() < (0.4 if customer["hasAuthorizedToCharge"] else 0.02):
            row["hasAutoPay"] = True

        if paid > 0:
            pay_day = min(invoice_day + timedelta(days=_ri(rng, 1, terms + 30)), today - timedelta(days=1))
            pay_time = min(max(_day_start(pay_day, now) + timedelta(hours=rng.uniform(8, 18)), created), latest)
            if pay_time > updated:
                row["updatedTime"] = fmt_ts(pay_time)
            stamp = fmt_ts(pay_time)
            payment_type = rng.choices(("0", "1", "2", "3", "4", "5"), weights=(3, 35, 15, 40, 4, 3))[0]
            online = rng.random() < 0.4
            payment: dict[str, Any] = {
                "id": new_id("ReceivedPay"), "createdTime": stamp, "updatedTime": stamp,
                "customerId": customer_id, "status": "0", "paymentDate": fmt_date(pay_day),
                "depositToAccountId": DEPOSIT_ACCOUNT, "isOnline": online, "paymentType": payment_type,
                "amount": paid, "refNumber": str(_ri(rng, 1000, 99999)) if payment_type == "1" else "",
                "description": "Paid online" if online else "Payment received",
                "invoicePays": [{"entity": "InvoicePay", "id": new_id("InvoicePay"), "invoiceId": row["id"],
                                 "amount": paid, "createdTime": stamp, "updatedTime": stamp}],
            }
            if online:
                payment["onlinePayment"] = True
            payment_rows.append(payment)
        invoice_rows.append(row)

    payment_rows.sort(key=lambda p: p["createdTime"])
    return {"Customer": customer_rows, "CustomerContact": contact_rows, "Invoice": invoice_rows,
            "ReceivedPay": payment_rows}
