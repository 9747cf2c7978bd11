"""Bill.com v3 `invoice.*` webhook notifications: signature check, parsing, storage once per eventId. No Dagster.

Bill.com has no "payment received" event; `invoice.updated` carries the invoice snapshot but no payment id
(reference §3.8), and webhooks are not a source of truth. So a notification is only a prompt: we store the
invoice id and the `billcom_invoice_events_sensor` runs the same check the poller runs (re-read the
invoice from Bill.com), at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from agentcollect_pipeline.warehouse.payments_schema import billcom_webhook_events
from agentcollect_pipeline.warehouse.store import Warehouse, dialect_insert

SIGNATURE_HEADER = "x-bill-sha-signature"
MAX_ID_LENGTH = 200


class NotificationInvalid(ValueError):
    """A signed body that is not a notification we can use."""


@dataclass(frozen=True)
class Notification:
    event_id: str
    event_type: str
    invoice_id: str | None  # None for event types that name no invoice (ignored)
    organization_id: str | None = None


def sign(security_key: str, body: bytes) -> str:
    """What Bill.com sends in x-bill-sha-signature: base64(HMAC-SHA256(securityKey, raw body))."""
    return base64.b64encode(hmac.new(security_key.encode(), body, hashlib.sha256).digest()).decode()


def verify_signature(security_key: str | None, header: str | None, body: bytes) -> str | None:
    """None when valid, else why not (for our log only). The raw body bytes are what is signed (the
    reference marks the exact input UNVERIFIED; public verifiers all hash the raw body)."""
    if not security_key:
        return "no Bill.com webhook security key configured (BILLCOM_WEBHOOK_SECURITY_KEY)"
    if not header:
        return "missing x-bill-sha-signature header"
    if hmac.compare_digest(sign(security_key, body), header.strip()):
        return None
    return "signature mismatch"


def parse_notification(body: bytes) -> Notification:
    try:
        payload: Any = json.loads(body, parse_float=Decimal)
        # Bill.com delivers the payload JSON-escaped, as a string (reference §3.8): unwrap it once.
        if isinstance(payload, str):
            payload = json.loads(payload, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise NotificationInvalid("body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("metadata"), dict):
        raise NotificationInvalid("no metadata object")
    metadata = payload["metadata"]
    event_id, event_type = metadata.get("eventId"), metadata.get("eventType")
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_ID_LENGTH:
        raise NotificationInvalid("metadata.eventId missing or not a short string")
    if not isinstance(event_type, str) or not event_type:
        raise NotificationInvalid("metadata.eventType missing")
    invoice_id = None
    if event_type.startswith("invoice."):
        invoice = payload.get("invoice")
        invoice_id = invoice.get("id") if isinstance(invoice, dict) else None
        if not isinstance(invoice_id, str) or not invoice_id.strip() or len(invoice_id) > MAX_ID_LENGTH:
            raise NotificationInvalid(f"{event_type} without invoice.id")
    organization_id = metadata.get("organizationId")
    return Notification(
        event_id.strip(),
        event_type,
        invoice_id.strip() if invoice_id else None,
        organization_id.strip() if isinstance(organization_id, str) and organization_id.strip() else None,
    )


def store_notification(
    warehouse: Warehouse, notification: Notification, raw: str, *, now: datetime | None = None
) -> int | None:
    """The stored sequence, or None when this eventId was stored before (Bill.com re-delivers)."""
    with warehouse.transaction() as conn:
        stmt = (
            dialect_insert(conn, billcom_webhook_events)
            .values(
                event_id=notification.event_id,
                event_type=notification.event_type,
                invoice_id=notification.invoice_id,
                received_at=now or datetime.now(UTC),
                raw_payload=raw,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(billcom_webhook_events.c.sequence)
        )
        return conn.execute(stmt).scalar_one_or_none()


def notifications_after(warehouse: Warehouse, sequence: int, limit: int) -> list[dict[str, Any]]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.select(billcom_webhook_events.c.sequence, billcom_webhook_events.c.invoice_id)
            .where(billcom_webhook_events.c.sequence > sequence)
            .order_by(billcom_webhook_events.c.sequence)
            .limit(limit)
        )
        return [r._asdict() for r in rows]
