"""Payment events in: validation shared by the webhook and the CSV import, and the append-only store.

An event is stored once per (source, event_id): the unique constraint, not a read-then-write, decides, so
two deliveries of the same webhook racing each other still store one row.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentcollect_pipeline.ar_source.billcom import PAYMENT_TYPES
from agentcollect_pipeline.money import MoneyError, to_minor_units
from agentcollect_pipeline.warehouse.payments_schema import payment_events
from agentcollect_pipeline.warehouse.store import Warehouse, dialect_insert

SIGNATURE_HEADER = "X-AgentCollect-Signature"
SIGNATURE_TOLERANCE_S = 300
CSV_COLUMNS = ("event_id", "paid_at", "amount", "currency", "invoice_number", "customer_id", "method", "reference")
MAX_ID_LENGTH = 200


class EventInvalid(ValueError):
    """The event cannot be stored; the message lists every problem found."""


@dataclass(frozen=True)
class StoreResult:
    sequence: int | None  # None when the event id was seen before (a replay): nothing was stored
    duplicate: bool


# -- validation -----------------------------------------------------------------------------------------


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise EventInvalid(f"{key}: expected a string")
    text = str(value).strip()
    return text or None


def _moment(value: str, key: str) -> datetime:
    try:
        if len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EventInvalid(f"{key}: not an ISO 8601 date or timestamp: {value!r}") from None
    # A bank file's date has no zone; UTC midnight keeps the calendar date it states.
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def normalise_event(raw: Mapping[str, Any], *, time_key: str = "occurred_at") -> dict[str, Any]:
    """Fields of a payment event -> a payment_events row (without source, raw payload, received_at)."""
    problems: list[str] = []

    def field(key: str, required: bool = False) -> str | None:
        try:
            value = _text(raw, key)
        except EventInvalid as exc:
            problems.append(str(exc))
            return None
        if required and value is None:
            problems.append(f"{key}: missing")
        return value

    event_id = field("event_id", required=True)
    if event_id and len(event_id) > MAX_ID_LENGTH:
        problems.append(f"event_id: longer than {MAX_ID_LENGTH} characters")
    when_text = field(time_key, required=True)
    occurred_at = None
    if when_text:
        try:
            occurred_at = _moment(when_text, time_key)
        except EventInvalid as exc:
            problems.append(str(exc))
    currency = (field("currency", required=True) or "").upper() or None
    amount_cents = None
    amount = raw.get("amount")
    if amount in (None, ""):
        problems.append("amount: missing")
    elif isinstance(amount, float):
        problems.append("amount: send a decimal string, not a binary float")
    elif currency:
        try:
            amount_cents = to_minor_units(amount if isinstance(amount, Decimal) else str(amount), currency)
            if amount_cents <= 0:
                problems.append(f"amount: must be positive, got {amount}")
        except MoneyError as exc:
            problems.append(f"amount: {exc}")
    invoice_id = field("invoice_id")
    invoice_number = field("invoice_number")
    customer_id = field("customer_id")
    if invoice_id is None and not (invoice_number and customer_id):
        problems.append("invoice: give invoice_id, or invoice_number together with customer_id")
    method = (field("method") or "other").lower()
    if method not in PAYMENT_TYPES:
        problems.append(f"method: {method!r} is not one of {', '.join(sorted(PAYMENT_TYPES))}")
    if problems:
        raise EventInvalid("; ".join(problems))
    return {
        "event_id": event_id,
        "occurred_at": occurred_at,
        "amount_cents": amount_cents,
        "currency": currency,
        "invoice_id": invoice_id,
        "invoice_number": invoice_number,
        "customer_id": customer_id,
        "method": method,
        "reference": field("reference"),
        "payer": field("payer"),
    }


# -- storage ----------------------------------------------------------------------------------------------


def _insert_ignoring_duplicates(conn: sa.Connection, row: Mapping[str, Any]) -> int | None:
    stmt = (
        dialect_insert(conn, payment_events)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(payment_events.c.sequence)
    )
    return conn.execute(stmt).scalar_one_or_none()


def store_events(
    warehouse: Warehouse, source: str, events: Sequence[tuple[dict[str, Any], str]], *, now: datetime | None = None
) -> list[StoreResult]:
    """Append (normalised event, raw payload) pairs in ONE transaction: all are stored or none."""
    received_at = now or datetime.now(UTC)
    results = []
    with warehouse.transaction() as conn:
        for event, raw in events:
            sequence = _insert_ignoring_duplicates(
                conn, {**event, "source": source, "raw_payload": raw, "received_at": received_at}
            )
            results.append(StoreResult(sequence=sequence, duplicate=sequence is None))
    return results


# -- webhook signature ------------------------------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value a sender computes: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str | None, body: bytes, now: float) -> str | None:
    """None when the signature is valid and fresh, else why not (for our log, never for the sender)."""
    if not header:
        return "missing signature header"
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return "signature header has no valid t="
    # The timestamp is inside the signed text, so a captured request cannot be replayed after 5 minutes.
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_S:
        return "signature timestamp outside the 5-minute tolerance"
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    # Several v1= values let a sender sign with the old and the new secret while rotating.
    if any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", [])):
        return None
    return "signature mismatch"


def webhook_event(body: bytes) -> tuple[dict[str, Any], str]:
    try:
        raw = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise EventInvalid("body is not JSON") from None
    if not isinstance(raw, dict):
        raise EventInvalid("body must be a JSON object")
    return normalise_event(raw, time_key="occurred_at"), body.decode("utf-8")


# -- CSV import -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportReport:
    stored: int
    duplicates: int
    errors: list[str]  # "line N: problem"; non-empty means nothing was stored


def parse_csv(text: str) -> tuple[list[tuple[dict[str, Any], str]], list[str]]:
    """(events with their raw line, errors by line number). Line numbers count the header as line 1."""
    lines = text.splitlines()
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        return [], [f"line 1: missing column(s) {', '.join(missing)}"]
    events, errors, seen = [], [], {}
    for row in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in row.values()):
            continue  # blank lines carry no payment
        if None in row:
            errors.append(f"line {line}: more fields than columns")
            continue
        try:
            event = normalise_event(row, time_key="paid_at")
        except EventInvalid as exc:
            errors.append(f"line {line}: {exc}")
            continue
        if event["event_id"] in seen:
            # Within one file the same id twice is a file error, not a replay to ignore.
            errors.append(f"line {line}: event_id {event['event_id']} repeats line {seen[event['event_id']]}")
            continue
        seen[event["event_id"]] = line
        raw_line = lines[line - 1] if 0 < line <= len(lines) else json.dumps(row)
        events.append((event, raw_line))
    return events, errors


def import_csv(warehouse: Warehouse, path: Path) -> ImportReport:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return ImportReport(0, 0, [f"cannot read {path}: {exc}"])
    events, errors = parse_csv(text)
    if errors:
        return ImportReport(0, 0, errors)
    results = store_events(warehouse, "csv", events)
    duplicates = sum(r.duplicate for r in results)
    return ImportReport(stored=len(results) - duplicates, duplicates=duplicates, errors=[])
