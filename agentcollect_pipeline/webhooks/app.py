"""The webhook receiver as a raw ASGI app: `POST /webhooks/payments` (signed payment events) and
`POST /webhooks/billcom` (Bill.com v3 invoice notifications).

Contract of /webhooks/payments (also in the README):
- header `X-AgentCollect-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with
  AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET, at most 5 minutes old -> otherwise 403 and nothing is stored;
- a valid body is stored once per event_id: 200 {"status": "stored", "sequence": n}, and a replay of the
  same event_id gets 200 {"status": "duplicate"} so the sender stops retrying;
- a signed body that is not a valid payment event gets 422 with the problems, and nothing is stored.

Contract of /webhooks/billcom:
- header `x-bill-sha-signature: base64(HMAC-SHA256(securityKey, raw body))`, the key from
  BILLCOM_WEBHOOK_SECURITY_KEY -> otherwise (or with no key configured) 403 and nothing is stored;
- `invoice.*` notifications are stored once per metadata.eventId (200 stored / duplicate); other event
  types get 200 {"status": "ignored"} so Bill.com does not retry them; a signed body we cannot read, 422.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from agentcollect_pipeline.asgi import read_body
from agentcollect_pipeline.payments import billcom_events
from agentcollect_pipeline.payments.intake import (
    SIGNATURE_HEADER,
    EventInvalid,
    store_events,
    verify_signature,
    webhook_event,
)
from agentcollect_pipeline.warehouse.store import Warehouse

log = logging.getLogger(__name__)

SECRET_ENV = "AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET"
BILLCOM_KEY_ENV = "BILLCOM_WEBHOOK_SECURITY_KEY"
MAX_BODY_BYTES = 64 * 1024  # a payment event is a few hundred bytes; anything larger is not one


class WebhookReceiver:
    def __init__(
        self,
        warehouse: Warehouse,
        secret: str,
        *,
        billcom_security_key: str | None = None,
        billcom_org_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not secret:
            raise ValueError(f"{SECRET_ENV} is empty: the receiver refuses to run without a signing secret")
        self._warehouse = warehouse
        self._secret = secret
        # Optional: without it /webhooks/billcom refuses every request (nothing unsigned is ever stored).
        self._billcom_key = billcom_security_key or None
        # Notifications are org-specific; one signed for another org we sync (a shared key) is not ours.
        self._billcom_org_id = billcom_org_id or None
        self._clock = clock

    def __repr__(self) -> str:  # never the secret
        return "WebhookReceiver()"

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method == "GET":
            await _respond(send, 200, {"status": "ok"})
            return
        # Outreach routes (Twilio, SendGrid) live in webhooks/outreach.py, with their own signature checks.
        outreach = getattr(self, "outreach", None)
        if outreach is not None and outreach.handles(path):
            await outreach(scope, receive, send)
            return
        if path not in ("/webhooks/payments", "/webhooks/billcom"):
            await _respond(send, 404, {"error": "not found"})
            return
        if method != "POST":
            await _respond(send, 405, {"error": "POST only"})
            return
        body = await read_body(receive, MAX_BODY_BYTES)
        if body is None:
            await _respond(send, 413, {"error": "body too large"})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path == "/webhooks/billcom":
            await self._billcom(headers, body, send)
            return
        problem = verify_signature(self._secret, headers.get(SIGNATURE_HEADER.lower()), body, self._clock())
        if problem is not None:
            # The reason goes to our log only: telling the caller which check failed helps an attacker.
            log.warning("payment webhook refused: %s", problem)
            await _respond(send, 403, {"error": "invalid signature"})
            return
        try:
            event, raw = webhook_event(body)
        except EventInvalid as exc:
            await _respond(send, 422, {"error": "invalid payment event", "problems": str(exc)})
            return
        # The database call blocks; one short insert does not justify a thread hop for this receiver.
        (result,) = store_events(self._warehouse, "webhook", [(event, raw)])
        if result.duplicate:
            await _respond(send, 200, {"status": "duplicate", "event_id": event["event_id"]})
        else:
            await _respond(send, 200, {"status": "stored", "event_id": event["event_id"], "sequence": result.sequence})


    async def _billcom(self, headers: dict[str, str], body: bytes, send: Callable[..., Any]) -> None:
        problem = billcom_events.verify_signature(
            self._billcom_key, headers.get(billcom_events.SIGNATURE_HEADER), body
        )
        if problem is not None:
            log.warning("Bill.com webhook refused: %s", problem)
            await _respond(send, 403, {"error": "invalid signature"})
            return
        try:
            notification = billcom_events.parse_notification(body)
        except billcom_events.NotificationInvalid as exc:
            await _respond(send, 422, {"error": "unreadable notification", "problems": str(exc)})
            return
        if notification.invoice_id is None:
            await _respond(send, 200, {"status": "ignored", "event_id": notification.event_id})
            return
        if self._billcom_org_id and notification.organization_id not in (None, self._billcom_org_id):
            log.warning("Bill.com notification %s is for another organisation; ignored", notification.event_id)
            await _respond(send, 200, {"status": "ignored", "event_id": notification.event_id})
            return
        sequence = billcom_events.store_notification(self._warehouse, notification, body.decode("utf-8", "replace"))
        status = "duplicate" if sequence is None else "stored"
        await _respond(send, 200, {"status": status, "event_id": notification.event_id, "sequence": sequence})


def receiver_from_environment(database_url: str) -> WebhookReceiver:
    from agentcollect_pipeline.resources import _warehouse

    receiver = WebhookReceiver(
        _warehouse(database_url),
        os.environ.get(SECRET_ENV, ""),
        billcom_security_key=os.environ.get(BILLCOM_KEY_ENV) or None,
        billcom_org_id=os.environ.get("BILLCOM_ORG_ID") or None,
    )
    from agentcollect_pipeline.webhooks.outreach import outreach_from_environment

    receiver.outreach = outreach_from_environment(_warehouse(database_url))
    return receiver


async def _respond(send: Callable[..., Any], status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
