"""The webhook receiver as a raw ASGI app: `POST /webhooks/payments` (signed payment events).

Contract (also in the README):
- header `X-AgentCollect-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with
  AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET, at most 5 minutes old -> otherwise 403 and nothing is stored;
- a valid body is stored once per event_id: 200 {"status": "stored", "sequence": n}, and a replay of the
  same event_id gets 200 {"status": "duplicate"} so the sender stops retrying;
- a signed body that is not a valid payment event gets 422 with the problems, and nothing is stored.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

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
MAX_BODY_BYTES = 64 * 1024  # a payment event is a few hundred bytes; anything larger is not one


class WebhookReceiver:
    def __init__(self, warehouse: Warehouse, secret: str, *, clock: Callable[[], float] = time.time):
        if not secret:
            raise ValueError(f"{SECRET_ENV} is empty: the receiver refuses to run without a signing secret")
        self._warehouse = warehouse
        self._secret = secret
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
        if path != "/webhooks/payments":
            await _respond(send, 404, {"error": "not found"})
            return
        if method != "POST":
            await _respond(send, 405, {"error": "POST only"})
            return
        body = await _read_body(receive, MAX_BODY_BYTES)
        if body is None:
            await _respond(send, 413, {"error": "body too large"})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
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


def receiver_from_environment(database_url: str) -> WebhookReceiver:
    from agentcollect_pipeline.resources import _warehouse

    return WebhookReceiver(_warehouse(database_url), os.environ.get(SECRET_ENV, ""))


async def _read_body(receive: Callable[..., Any], limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


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
