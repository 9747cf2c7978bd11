"""Outreach webhooks: Twilio status callbacks and inbound SMS, SendGrid events. Raw ASGI, like app.py.

Every request is signature-checked before anything is read into the database: Twilio's X-Twilio-Signature
(HMAC-SHA1 over the exact public URL + sorted form params) and SendGrid's ECDSA signature over the raw body
(+ a 5-minute timestamp window against replays). A bad or missing signature gets 403 and changes nothing.
Events are deduplicated (Twilio on sid:status, SendGrid on sg_event_id) because both providers redeliver.
"""

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa

from agentcollect_pipeline.outreach import ledger
from agentcollect_pipeline.outreach.channels import TWILIO_INVALID, TWILIO_OPTED_OUT
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse.store import Warehouse

log = logging.getLogger(__name__)

PREFIXES = ("/webhooks/twilio/", "/webhooks/sendgrid/")
# SendGrid batches events into one POST of undocumented size (hundreds of events after a wave);
# a cap keeps a hostile body from exhausting memory without refusing a real batch.
MAX_BODY = 8 * 1024 * 1024
# Twilio's default keywords plus the FCC's "revoke"/"opt out"; matched on the whole body, any case.
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT"}
# Looser phrasing a reasonable person reads as revocation (FCC 2024): ours to catch, Twilio will not.
STOP_PHRASES = ("stop texting", "stop calling", "stop contacting", "do not contact", "don't contact",
                "unsubscribe", "remove me", "opt me out", "leave me alone")
EMAIL_OPT_OUT_EVENTS = {"unsubscribe", "group_unsubscribe", "spamreport"}
CALL_FINAL = {"completed", "busy", "no-answer", "failed", "canceled"}
MESSAGE_FINAL = {"delivered", "undelivered", "failed", "sent", "read"}


def is_opt_out(body: str) -> bool:
    text = " ".join(body.strip().split())
    return text.upper() in STOP_WORDS or any(phrase in text.lower() for phrase in STOP_PHRASES)


class OutreachWebhooks:
    def __init__(self, warehouse: Warehouse, *, twilio_auth_token: str | None, sendgrid_public_key: str | None,
                 public_base_url: str, clock: Callable[[], float] = time.time):
        self._warehouse = warehouse
        self._twilio_token = twilio_auth_token
        self._sendgrid_key = sendgrid_public_key
        self._public = public_base_url.rstrip("/")
        self._clock = clock

    def __repr__(self) -> str:  # never the secrets
        return "OutreachWebhooks()"

    def handles(self, path: str) -> bool:
        return path.startswith(PREFIXES)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        path, method = scope["path"], scope["method"]
        if method != "POST":
            await _respond(send, 405, b'{"error": "POST only"}', "application/json")
            return
        body = await _read_body(receive)
        if body is None:
            await _respond(send, 413, b'{"error": "body too large"}', "application/json")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = scope.get("query_string", b"").decode("latin-1")
        if path.startswith("/webhooks/twilio/"):
            await self._twilio(path, query, headers, body, send)
        elif path == "/webhooks/sendgrid/events":
            await self._sendgrid(headers, body, send)
        else:
            await _respond(send, 404, b'{"error": "not found"}', "application/json")

    # -- Twilio -----------------------------------------------------------------------------------------

    async def _twilio(self, path, query, headers, body, send) -> None:
        from twilio.request_validator import RequestValidator

        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        url = f"{self._public}{path}" + (f"?{query}" if query else "")
        signature = headers.get("x-twilio-signature", "")
        if not self._twilio_token or not signature or not RequestValidator(self._twilio_token).validate(
                url, params, signature):
            log.warning("twilio webhook refused: bad signature on %s", path)
            await _respond(send, 403, b'{"error": "invalid signature"}', "application/json")
            return
        attempt_id = dict(parse_qsl(query)).get("attempt_id")
        now = datetime.now(UTC)
        if path == "/webhooks/twilio/status":
            self._status(attempt_id, params, now)
            await _respond(send, 204, b"", "text/plain")
        elif path == "/webhooks/twilio/inbound":
            self._inbound(params, now)
            await _respond(send, 200, b'<?xml version="1.0" encoding="UTF-8"?><Response />', "application/xml")
        elif path == "/webhooks/twilio/gather":
            self._event("twilio", f"gather:{params.get('CallSid')}:{params.get('Digits')}", attempt_id, "gather",
                        params.get("To"), params, now)
            reply = ("We will text you a payment link." if params.get("Digits") == "1"
                     else "Someone from our team will call you back." if params.get("Digits") == "2" else "Goodbye.")
            twiml = f'<?xml version="1.0" encoding="UTF-8"?><Response><Say>{reply}</Say><Hangup /></Response>'
            await _respond(send, 200, twiml.encode(), "application/xml")
        else:
            await _respond(send, 404, b'{"error": "not found"}', "application/json")

    def _status(self, attempt_id: str | None, params: dict, now: datetime) -> None:
        sid = params.get("MessageSid") or params.get("CallSid")
        status = params.get("MessageStatus") or params.get("CallStatus")
        if not self._event("twilio", f"{sid}:{status}", attempt_id, status or "status", params.get("To"), params, now):
            return  # a redelivery
        A = os_.outreach_attempts
        code = params.get("ErrorCode")
        with self._warehouse.transaction() as conn:
            row = conn.execute(sa.select(A).where(A.c.attempt_id == attempt_id)).mappings().first() if attempt_id else None
            if row is None:
                return
            values: dict[str, Any] = {"updated_at": now}
            if status in MESSAGE_FINAL | CALL_FINAL:
                values.update(status=status, confirmed_at=now)
            if row["provider_id"] is None and sid:
                values.update(provider_id=sid, provider="twilio")
            if row["status"] in ("reserved",) and status:
                values.setdefault("sent_at", now)
                values.setdefault("status", "sent")
            if code:
                values["error_code"] = code
            answered = params.get("AnsweredBy")
            if answered:
                values["answered_by"] = answered
            if status == "completed" and answered == "human":
                values["conversation_at"] = now  # consumer rule: no calls for 7 days after this
            conn.execute(A.update().where(A.c.attempt_id == attempt_id).values(**values))
            if code and code.isdigit():
                number = row["destination"]
                if int(code) in TWILIO_OPTED_OUT:
                    ledger.record_opt_out(conn, row["channel"], number, f"twilio error {code}", now)
                elif int(code) in TWILIO_INVALID:
                    ledger.mark_invalid(conn, row["channel"], number, f"twilio error {code}", now)

    def _inbound(self, params: dict, now: datetime) -> None:
        sender, body = params.get("From", ""), params.get("Body", "")
        self._event("twilio", f"inbound:{params.get('MessageSid')}", None, "inbound_sms", sender, params, now)
        if sender and (is_opt_out(body) or params.get("OptOutType") == "STOP"):
            with self._warehouse.transaction() as conn:
                # Revocation by text covers automated calls to that number too (FCC reasonable-means rule).
                for channel in ("sms", "voice"):
                    ledger.record_opt_out(conn, channel, sender, "inbound SMS: " + body.strip()[:40], now)

    # -- SendGrid ---------------------------------------------------------------------------------------

    async def _sendgrid(self, headers, body, send) -> None:
        from sendgrid.helpers.eventwebhook import EventWebhook

        signature = headers.get("x-twilio-email-event-webhook-signature")
        stamp = headers.get("x-twilio-email-event-webhook-timestamp")
        ok = False
        if self._sendgrid_key and signature and stamp and stamp.isdigit() and abs(self._clock() - int(stamp)) <= 300:
            try:
                ok = EventWebhook(self._sendgrid_key).verify_signature(body.decode("utf-8"), signature, stamp)
            except Exception:  # malformed key/signature: treated as unsigned
                ok = False
        if not ok:
            log.warning("sendgrid webhook refused: bad or stale signature")
            await _respond(send, 403, b'{"error": "invalid signature"}', "application/json")
            return
        try:
            events = json.loads(body)
        except ValueError:
            await _respond(send, 400, b'{"error": "not JSON"}', "application/json")
            return
        now = datetime.now(UTC)
        for event in events if isinstance(events, list) else []:
            self._sendgrid_event(event, now)
        await _respond(send, 200, b'{"status": "ok"}', "application/json")

    def _sendgrid_event(self, event: dict, now: datetime) -> None:
        kind, email, attempt_id = event.get("event"), event.get("email"), event.get("attempt_id")
        key = event.get("sg_event_id") or f"{event.get('sg_message_id')}:{kind}:{event.get('timestamp')}"
        if not self._event("sendgrid", str(key), attempt_id, str(kind), email, event, now):
            return
        A = os_.outreach_attempts
        with self._warehouse.transaction() as conn:
            if attempt_id:
                status = {"delivered": "delivered", "bounce": "bounced", "dropped": "failed", "open": None}.get(kind)
                values: dict[str, Any] = {"updated_at": now}
                message_id = str(event.get("sg_message_id") or "").split(".")[0] or None
                conn.execute(A.update().where(A.c.attempt_id == attempt_id, A.c.provider_id.is_(None))
                             .values(provider_id=message_id, updated_at=now))
                conn.execute(A.update().where(A.c.attempt_id == attempt_id, A.c.status.in_(["reserved", "unconfirmed"]))
                             .values(status="sent", sent_at=now, confirmed_at=now, updated_at=now))
                if status:
                    values.update(status=status, confirmed_at=now)
                    conn.execute(A.update().where(A.c.attempt_id == attempt_id).values(**values))
            if email and kind in EMAIL_OPT_OUT_EVENTS:
                ledger.record_opt_out(conn, "email", email, f"sendgrid {kind}", now)
            elif email and (kind == "dropped" or (kind == "bounce" and event.get("type", "bounce") == "bounce")):
                # Hard bounces and drops: stop emailing the address. `blocked` bounces and deferrals are retryable.
                ledger.mark_invalid(conn, "email", email, f"sendgrid {kind}: {str(event.get('reason', ''))[:80]}", now)

    # -- shared -----------------------------------------------------------------------------------------

    def _event(self, provider, key, attempt_id, kind, address, payload, now) -> bool:
        """Store the event once; False when it was already stored (a redelivery)."""
        try:
            with self._warehouse.transaction() as conn:
                conn.execute(os_.outreach_events.insert(), [{
                    "event_key": f"{provider}:{key}", "provider": provider, "attempt_id": attempt_id, "kind": kind,
                    "address": address, "payload": json.dumps(payload, default=str), "received_at": now}])
        except sa.exc.IntegrityError:
            return False
        return True


async def _read_body(receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def outreach_from_environment(warehouse: Warehouse) -> OutreachWebhooks:
    """Without TWILIO_AUTH_TOKEN / SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY the matching routes refuse everything."""
    import os

    return OutreachWebhooks(
        warehouse,
        twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None,
        sendgrid_public_key=os.environ.get("SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY") or None,
        public_base_url=os.environ.get("AGENTCOLLECT_PUBLIC_BASE_URL") or "http://127.0.0.1:8090",
    )
