"""A local stand-in for Twilio's 2010-04-01 REST API: SMS and voice, as outreach uses them.

Written from /work/shared/reference/outreach-channels.md (section 1) and Twilio's OpenAPI description
(/work/shared/reference/specs/twilio_api_v2010.json). The official `twilio` package talks to it over
real HTTP once its host is rewritten (see `LoopbackTwilioHttpClient` in the tests, or set
`client.api.base_url`).

One `TwilioSandbox` holds an in-memory account and exposes it as a raw ASGI app (`.app`):

- `/2010-04-01/Accounts/{AccountSid}/Messages.json`, `Messages/{Sid}.json`, `Calls.json`, `Calls/{Sid}.json`
  with HTTP Basic auth (account SID + auth token), Twilio's classic JSON error body
  (`code`, `message`, `more_info`, `status`), the test-credential magic numbers, opt-out blocking (21610),
  a configurable REST rate (429 / 20429) and per-sender throughput queues (30001 on overflow).
- Status progression driven by the injectable clock: `advance(seconds)` or `tick()` applies due status
  changes and POSTs status callbacks signed with `X-Twilio-Signature` (HMAC-SHA1, as Twilio signs).
- `inbound_sms(from_, to, body)`: a signed inbound-message webhook; STOP/START keywords maintain the
  opt-out list the way Twilio's default and Advanced Opt-Out handling do.
- `/sandbox/...`: a JSON control API (stats, clock, faults, scripting, inbound simulation) for processes
  that cannot reach the Python object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import json
import re
import secrets
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import httpx

from agentcollect_pipeline.asgi import read_body
from agentcollect_pipeline.sandboxes.common import (
    Fault,
    FaultQueue,
    SandboxClock,
    SandboxSurface,
    Ticker,
    asgi_app,
    serve_lifespan,
)

from ..billcom.app import parse_ts

__all__ = [
    "FAULT_KINDS",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "SandboxClock",
    "TwilioSandbox",
    "WebhookDelivery",
    "main",
    "segment_count",
    "twilio_signature",
]

API_VERSION = "2010-04-01"
ACCOUNTS_PREFIX = f"/{API_VERSION}/Accounts/"
DEFAULT_ACCOUNT_SID = "AC" + "5a" * 16
DEFAULT_AUTH_TOKEN = "5a" * 16
FAULT_KINDS = ("http_500", "http_502", "http_503", "http_429", "malformed", "delay")

# Default opt-out handling (long codes and toll-free): whole-body keywords, any case.
OPT_OUT_KEYWORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")
OPT_IN_KEYWORDS = ("START", "YES", "UNSTOP")
HELP_KEYWORDS = ("HELP", "INFO")
OPT_OUT_REPLY = ("You have successfully been unsubscribed. You will not receive any more messages from this "
                 "number. Reply START to resubscribe.")
OPT_IN_REPLY = ("You have successfully been re-subscribed to messages from this number. Reply HELP for help. "
                "Reply STOP to unsubscribe. Msg&Data Rates May Apply.")
HELP_REPLY = "Reply STOP to unsubscribe. Msg&Data Rates May Apply."

# Test-credential magic numbers (https://www.twilio.com/docs/iam/test-credentials).
MAGIC_SMS_TO = {
    "+15005550001": (21211, "Invalid 'To' Phone Number: +15005550001"),
    "+15005550002": (21612, "The 'To' phone number: +15005550002, is not currently reachable using the 'From' "
                            "phone number: {from_} via SMS."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region indicated by the "
                            "'To' number: +15005550003."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
MAGIC_SMS_FROM = {
    "+15005550001": (21212, "The 'From' number +15005550001 is not a valid phone number, shortcode, or "
                            "alphanumeric sender ID."),
    "+15005550007": (21606, "The From phone number +15005550007 is not a valid, SMS-capable inbound phone "
                            "number or short code for your account."),
    "+15005550008": (21611, "This 'From' number has exceeded the maximum number of queued messages"),
}
MAGIC_CALL_TO = {
    "+15005550001": (21217, "Phone number does not appear to be valid"),
    "+15005550002": (21214, "'To' phone number cannot be reached"),
    "+15005550003": (21215, "Account not authorized to call +15005550003. Perhaps you need to enable some "
                            "international permissions"),
    "+15005550004": (21216, "Call blocked by Twilio blocklist"),
}
MAGIC_CALL_FROM = {
    "+15005550001": (21212, "Invalid Caller Phone Number"),
    "+15005550007": (21210, "Caller phone number not verified"),
}
MAGIC_OK_FROM = "+15005550006"
MESSAGE_FINAL = ("delivered", "undelivered", "failed", "canceled", "received", "read")
CALL_FINAL = ("completed", "busy", "no-answer", "failed", "canceled")
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
DEFAULT_SENDER_MPS = {"long_code": 1.0, "toll_free": 3.0, "short_code": 30.0}
SMS_PRICE_PER_SEGMENT = "0.00790"
CALL_PRICE_PER_MINUTE = "0.01400"
_TOLL_FREE = re.compile(r"^\+18(00|33|44|55|66|77|88)\d{7}$")
_SHORT_CODE = re.compile(r"^\d{5,6}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SID = re.compile(r"^[A-Z]{2}[0-9a-f]{32}$")
_GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXT = set("^{}\\[~]|€\f")


# --------------------------------------------------------------------------------------------------------
# Helpers


def rfc2822(moment: datetime | None) -> str | None:
    """Twilio's date form: `Mon, 23 Nov 2026 13:30:00 +0000`."""
    return None if moment is None else format_datetime(moment.astimezone(UTC).replace(microsecond=0))


def twilio_signature(auth_token: str, url: str, params: Mapping[str, Any] | None = None) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(token, url + name+value for each POST param sorted by name)).

    Repeated parameters are sorted by value, as Twilio documents (and as `RequestValidator` recomputes).
    """
    payload = url
    for name in sorted(params or {}):
        raw = params[name]  # type: ignore[index]
        values = raw if isinstance(raw, list | tuple) else [raw]
        for value in sorted({str(v) for v in values}):
            payload += name + value
    digest = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def segment_count(body: str) -> int:
    """GSM-7 bodies split at 160 characters (153 per part); anything else is UCS-2 at 70 (67 per part)."""
    if not body:
        return 1
    if all(ch in _GSM7 or ch in _GSM7_EXT for ch in body):
        units = sum(2 if ch in _GSM7_EXT else 1 for ch in body)
        return 1 if units <= 160 else -(-units // 153)
    units = sum(2 if ord(ch) > 0xFFFF else 1 for ch in body)  # UTF-16 code units
    return 1 if units <= 70 else -(-units // 67)


def sender_type(number: str) -> str:
    if _SHORT_CODE.match(number):
        return "short_code"
    if _TOLL_FREE.match(number):
        return "toll_free"
    return "long_code"


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _is_magic(number: str) -> bool:
    return number.startswith("+1500555")


def _normalize_number(raw: str) -> str | None:
    """E.164 for phone numbers (US default region), the digits for short codes, None when invalid."""
    value = raw.strip()
    if _SHORT_CODE.match(value):
        return value
    if _is_magic(value) and len(value) == 12:
        return value
    try:
        import phonenumbers
    except ImportError:  # pragma: no cover - phonenumbers is a project dependency
        return value if _E164.match(value) else None
    try:
        parsed = phonenumbers.parse(value, "US")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _formatted(number: str) -> str:
    if number.startswith("+1") and len(number) == 12:
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number


def _valid_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class TwilioError(Exception):
    """A Twilio REST error: HTTP status plus the classic error body."""

    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}", "status": self.status}


@dataclass
class WebhookDelivery:
    """One webhook the sandbox sent (status callback, inbound message, voice URL fetch)."""

    kind: str
    url: str
    method: str
    params: dict[str, Any]
    signature: str
    status_code: int | None = None
    response_text: str = ""
    error: str | None = None
    at: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class _Step:
    at: datetime
    status: str
    error_code: int | None = None
    event: str | None = None  # call progress event name for status callbacks


@dataclass
class _Record:
    kind: str  # "message" | "call"
    data: dict[str, Any]
    created: datetime
    plan: list[_Step] = field(default_factory=list)
    status_callback: str | None = None
    callback_method: str = "POST"
    callback_events: tuple[str, ...] = ()
    sequence: int = 0
    request: dict[str, Any] = field(default_factory=dict)  # the create form as received
    extra: dict[str, Any] = field(default_factory=dict)  # sandbox bookkeeping

    @property
    def sid(self) -> str:
        return self.data["sid"]


def _op_name(path: str) -> str:
    """Stats/fault key: "/2010-04-01/Accounts/AC.../Messages/SM....json" -> "Messages/{Sid}"."""
    rest = path
    if rest.startswith(ACCOUNTS_PREFIX):
        rest = rest[len(ACCOUNTS_PREFIX):].partition("/")[2]
    rest = rest.strip("/")
    if rest.endswith(".json"):
        rest = rest[:-5]
    return "/".join("{Sid}" if _SID.match(part) else part for part in rest.split("/"))


# --------------------------------------------------------------------------------------------------------
# The sandbox


class TwilioSandbox(SandboxSurface):
    """In-memory Twilio account served as an ASGI app (`.app`). Thread-safe for test-side calls.

    Timing knobs (seconds of sandbox clock): a message leaves the sender queue at its throughput slot, is
    `sent` `sent_after_s` later and reaches its final status `delivered_after_s` after that. A call rings
    `ring_after_s` after creation, is answered `answer_after_s` later and lasts `call_duration_s`.
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        clock: SandboxClock | None = None,
        *,
        phone_numbers: Iterable[str] | None = None,
        inbound_sms_url: str | None = None,
        magic_numbers: bool = True,
        requests_per_second: float | None = None,
        burst: int | None = None,
        max_concurrent: int | None = None,
        sender_mps: Mapping[str, float] | None = None,
        sender_overflow: str = "queue",
        queue_hours: float = 10.0,
        sent_after_s: float = 1.0,
        delivered_after_s: float = 2.0,
        ring_after_s: float = 1.0,
        answer_after_s: float = 5.0,
        call_duration_s: float = 30.0,
        webhook_timeout_s: float = 5.0,
    ) -> None:
        if sender_overflow not in ("queue", "reject"):
            raise ValueError("sender_overflow must be 'queue' (Twilio's behaviour) or 'reject' (429 at once)")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.clock = clock or SandboxClock()
        self.magic_numbers = magic_numbers
        self.phone_numbers: set[str] | None = set(phone_numbers) if phone_numbers is not None else None
        self.inbound_sms_url = inbound_sms_url
        self.requests_per_second = requests_per_second
        self.burst = burst
        self.max_concurrent = max_concurrent
        self.sender_mps = {**DEFAULT_SENDER_MPS, **(sender_mps or {})}
        self.sender_overflow = sender_overflow
        self.queue_hours = queue_hours
        self.sent_after_s = sent_after_s
        self.delivered_after_s = delivered_after_s
        self.ring_after_s = ring_after_s
        self.answer_after_s = answer_after_s
        self.call_duration_s = call_duration_s
        self.webhook_timeout_s = webhook_timeout_s

        self._lock = threading.RLock()
        self._messages: dict[str, _Record] = {}
        self._calls: dict[str, _Record] = {}
        self._services: dict[str, dict[str, Any]] = {}
        self._number_urls: dict[str, str] = {}
        self._opt_outs: set[tuple[str, str]] = set()
        self._sms_script: dict[str, tuple[str, int | None]] = {}
        self._call_script: dict[str, dict[str, Any]] = {}
        self._sender_free: dict[str, datetime] = {}
        self._faults = FaultQueue(FAULT_KINDS, _op_name)
        self._outbox: deque[tuple[str, str, str, dict[str, Any]]] = deque()
        self._deliveries: list[WebhookDelivery] = []
        self._tokens: float | None = None
        self._tokens_at: datetime | None = None
        self._in_flight = 0
        self._ticker = Ticker(self.tick, name="twilio-sandbox-pump")
        self.reset_stats()

        self._app = asgi_app(self._asgi)

    # ---- public Python surface ------------------------------------------------------------------------

    @property
    def credentials(self) -> dict[str, str]:
        return {"account_sid": self.account_sid, "auth_token": self.auth_token}

    def reset_stats(self) -> None:
        with self._lock:
            self._stats: dict[str, Any] = {
                "calls": {}, "total_calls": 0, "errors": {}, "faults_injected": 0, "rate_limited": 0,
                "messages_created": 0, "calls_created": 0, "inbound_messages": 0, "webhooks_sent": 0,
                "webhooks_failed": 0, "max_in_flight_seen": self._in_flight if hasattr(self, "_in_flight") else 0,
            }

    def inject(self, kind: str, path: str | None = None, times: int = 1, delay_s: float = 0.0,
               after_processing: bool = False, method: str | None = None) -> None:
        """Queue `times` faults for requests to `path` ("Messages", "Calls.json", "Messages/{Sid}", None=any).

        `after_processing=True` does the work (the message is created) and then answers with the fault,
        which is the ambiguous failure a sender must reconcile. `delay` sleeps `delay_s` before answering.
        """
        with self._lock:
            self._faults.add(kind, path, times, delay_s, after_processing, method)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def add_phone_number(self, number: str, *, sms_url: str | None = None) -> None:
        """Own `number` (From is then checked against owned numbers) and optionally set its inbound SMS URL."""
        with self._lock:
            if self.phone_numbers is None:
                self.phone_numbers = set()
            self.phone_numbers.add(number)
            if sms_url is not None:
                self._number_urls[number] = sms_url

    def set_inbound_url(self, url: str | None, number: str | None = None) -> None:
        with self._lock:
            if number is None:
                self.inbound_sms_url = url
            elif url is None:
                self._number_urls.pop(number, None)
            else:
                self._number_urls[number] = url

    def add_messaging_service(self, numbers: Iterable[str], *, sid: str | None = None,
                              advanced_opt_out: bool = False, friendly_name: str = "Sandbox service") -> str:
        """A Messaging Service (MG...) whose sender pool is `numbers`; opt-outs then apply service-wide."""
        service_sid = sid or _new_sid("MG")
        with self._lock:
            self._services[service_sid] = {"numbers": list(numbers), "advanced_opt_out": advanced_opt_out,
                                           "friendly_name": friendly_name, "next": 0}
        return service_sid

    def script_sms(self, to: str, status: str = "delivered", error_code: int | None = None) -> None:
        """Final status of future messages to `to`: delivered, undelivered (30003) or failed (30005)."""
        if status not in ("delivered", "undelivered", "failed", "sent", "read"):
            raise ValueError(f"unsupported scripted SMS status {status!r}")
        if error_code is None and status in ("undelivered", "failed"):
            error_code = 30003 if status == "undelivered" else 30005
        with self._lock:
            self._sms_script[to] = (status, error_code)

    def script_call(self, to: str, outcome: str = "completed", *, answered_by: str | None = None,
                    duration_s: float | None = None) -> None:
        """Outcome of future calls to `to`: completed, no-answer, busy or failed; `answered_by` for AMD."""
        if outcome not in ("completed", "no-answer", "busy", "failed"):
            raise ValueError(f"unsupported scripted call outcome {outcome!r}")
        with self._lock:
            self._call_script[to] = {"outcome": outcome, "answered_by": answered_by, "duration_s": duration_s}

    def opt_out(self, recipient: str, sender: str) -> None:
        with self._lock:
            self._opt_outs.add((self._opt_scope(sender), recipient))

    def opt_in(self, recipient: str, sender: str) -> None:
        with self._lock:
            self._opt_outs.discard((self._opt_scope(sender), recipient))

    @property
    def opt_outs(self) -> list[dict[str, str]]:
        with self._lock:
            return [{"sender": s, "recipient": r} for s, r in sorted(self._opt_outs)]

    def is_opted_out(self, recipient: str, sender: str) -> bool:
        with self._lock:
            return (self._opt_scope(sender), recipient) in self._opt_outs

    def messages(self) -> list[dict[str, Any]]:
        """Every message (outbound and inbound), newest first, in the API's JSON shape."""
        with self._lock:
            return [self._message_json(r) for r in self._sorted(self._messages)]

    def message(self, sid: str) -> dict[str, Any]:
        with self._lock:
            return self._message_json(self._messages[sid])

    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._call_json(r) for r in self._sorted(self._calls)]

    def call(self, sid: str) -> dict[str, Any]:
        with self._lock:
            return self._call_json(self._calls[sid])

    def message_request(self, sid: str) -> dict[str, Any]:
        """The form the message was created with (repeated fields as lists)."""
        with self._lock:
            return copy.deepcopy(self._messages[sid].request)

    def call_request(self, sid: str) -> dict[str, Any]:
        """The form the call was created with (Twiml/Url, MachineDetection, StatusCallbackEvent list, ...)."""
        with self._lock:
            return copy.deepcopy(self._calls[sid].request)

    def call_twiml(self, sid: str) -> str | None:
        """The TwiML the sandbox fetched from the call's Url when it was answered (None if not fetched)."""
        with self._lock:
            return self._calls[sid].extra.get("twiml_fetched")

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        with self._lock:
            return list(self._deliveries)

    def tick(self) -> list[WebhookDelivery]:
        """Apply every status change due by the clock, then POST the queued webhooks (outside the lock)."""
        with self._lock:
            self._apply_due(self.clock.now())
        return self._flush()

    def advance(self, seconds: float) -> list[WebhookDelivery]:
        self.clock.advance(seconds)
        return self.tick()

    def set_message_status(self, sid: str, status: str, error_code: int | None = None) -> dict[str, Any]:
        """Force a message status now (drops its remaining plan) and send its status callback."""
        with self._lock:
            record = self._messages[sid]
            record.plan = []
            self._apply_message(record, _Step(self.clock.now(), status, error_code))
            result = self._message_json(record)
        self._flush()
        return result

    def set_call_status(self, sid: str, status: str, *, answered_by: str | None = None) -> dict[str, Any]:
        """Force a call status now (drops its remaining plan) and send its status callback."""
        event = {"ringing": "ringing", "in-progress": "answered"}.get(status, "completed")
        with self._lock:
            record = self._calls[sid]
            record.plan = []
            if answered_by is not None:
                record.data["answered_by"] = answered_by
            self._apply_call(record, _Step(self.clock.now(), status, event=event))
            result = self._call_json(record)
        self._flush()
        return result

    def inbound_sms(self, from_: str, to: str, body: str, *, url: str | None = None,
                    media_urls: Iterable[str] = ()) -> dict[str, Any]:
        """Simulate a handset texting `to`: record it, apply opt-out keywords, POST the signed webhook.

        Returns {"message_sid", "opt_out_type", "delivery" (WebhookDelivery or None), "replies": [sids]}.
        Any `<Message>` in the TwiML answer is recorded as an outbound-reply message.
        """
        media = list(media_urls)
        with self._lock:
            now = self.clock.now()
            keyword = body.strip().upper()
            service_sid = self._service_of(to)
            service = self._services.get(service_sid) if service_sid else None
            sid = _new_sid("MM" if media else "SM")
            data = self._base_message(sid, to=to, from_=from_, body=body, now=now, direction="inbound",
                                      status="received", service_sid=service_sid)
            data["num_media"] = str(len(media))
            data["date_sent"] = rfc2822(now)
            self._messages[sid] = _Record("message", data, now)
            self._stats["inbound_messages"] += 1
            opt_type = None
            auto_reply = None
            if keyword in OPT_OUT_KEYWORDS:
                opt_type, auto_reply = "STOP", OPT_OUT_REPLY
                self._opt_outs.add((self._opt_scope(to), from_))
            elif keyword in OPT_IN_KEYWORDS:
                opt_type, auto_reply = "START", OPT_IN_REPLY
                self._opt_outs.discard((self._opt_scope(to), from_))
            elif keyword in HELP_KEYWORDS:
                opt_type, auto_reply = "HELP", HELP_REPLY
            replies = []
            if auto_reply is not None:
                replies.append(self._record_reply(from_=to, to=from_, body=auto_reply, service_sid=service_sid))
            params: dict[str, Any] = {
                "ToCountry": "US", "ToState": "", "SmsMessageSid": sid, "NumMedia": str(len(media)),
                "ToCity": "", "FromZip": "", "SmsSid": sid, "FromState": "", "SmsStatus": "received",
                "FromCity": "", "Body": body, "FromCountry": "US", "To": to, "ToZip": "",
                "NumSegments": str(segment_count(body)), "MessageSid": sid, "AccountSid": self.account_sid,
                "From": from_, "ApiVersion": API_VERSION,
            }
            if service_sid:
                params["MessagingServiceSid"] = service_sid
            if opt_type is not None and service is not None and service.get("advanced_opt_out"):
                params["OptOutType"] = opt_type
            for index, media_url in enumerate(media):
                params[f"MediaUrl{index}"] = media_url
                params[f"MediaContentType{index}"] = "image/jpeg"
            target = url or self._number_urls.get(to) or self.inbound_sms_url
        delivery = self._post(target, params, kind="inbound_sms") if target else None
        if delivery is not None and delivery.ok:
            with self._lock:
                for text in _twiml_messages(delivery.response_text):
                    if not self._blocked(to, from_):
                        replies.append(self._record_reply(from_=to, to=from_, body=text, service_sid=service_sid))
        return {"message_sid": sid, "opt_out_type": opt_type, "delivery": delivery, "replies": replies}

    def start_pump(self, interval_s: float = 0.5) -> None:
        """Tick in a background thread (for a long-running server on a real-time clock)."""
        self._ticker.start(interval_s)

    def stop_pump(self) -> None:
        self._ticker.stop()

    # ---- state helpers (call with the lock held) ------------------------------------------------------

    def _sorted(self, records: dict[str, _Record]) -> list[_Record]:
        # Newest first, as Twilio lists; insertion order breaks ties deterministically.
        items = list(records.values())
        order = {id(r): i for i, r in enumerate(items)}
        return sorted(items, key=lambda r: (r.created, order[id(r)]), reverse=True)

    def _service_of(self, number: str) -> str | None:
        for sid, service in self._services.items():
            if number in service["numbers"]:
                return sid
        return None

    def _opt_scope(self, sender: str) -> str:
        """Opt-outs block the sender-recipient pair; a number in a Messaging Service blocks the service."""
        if sender.startswith("MG"):
            return sender
        return self._service_of(sender) or sender

    def _blocked(self, sender: str, recipient: str) -> bool:
        return (self._opt_scope(sender), recipient) in self._opt_outs

    def _uri(self, kind: str, sid: str | None = None) -> str:
        base = f"{ACCOUNTS_PREFIX}{self.account_sid}/{kind}"
        return f"{base}/{sid}.json" if sid else f"{base}.json"

    def _base_message(self, sid: str, *, to: str, from_: str | None, body: str, now: datetime, direction: str,
                      status: str, service_sid: str | None) -> dict[str, Any]:
        uri = self._uri("Messages", sid)
        return {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": body,
            "date_created": rfc2822(now), "date_sent": None, "date_updated": rfc2822(now),
            "direction": direction, "error_code": None, "error_message": None, "from": from_,
            "messaging_service_sid": service_sid, "num_media": "0", "num_segments": str(segment_count(body)),
            "price": None, "price_unit": "USD", "sid": sid, "status": status,
            "subresource_uris": {"media": uri[:-5] + "/Media.json", "feedback": uri[:-5] + "/Feedback.json"},
            "to": to, "uri": uri,
        }

    def _record_reply(self, *, from_: str, to: str, body: str, service_sid: str | None) -> str:
        now = self.clock.now()
        sid = _new_sid("SM")
        data = self._base_message(sid, to=to, from_=from_, body=body, now=now, direction="outbound-reply",
                                  status="sent", service_sid=service_sid)
        data["date_sent"] = rfc2822(now)
        record = _Record("message", data, now)
        record.plan = [_Step(now + timedelta(seconds=self.delivered_after_s), "delivered")]
        self._messages[sid] = record
        return sid

    def _message_json(self, record: _Record) -> dict[str, Any]:
        return copy.deepcopy(record.data)

    def _call_json(self, record: _Record) -> dict[str, Any]:
        return copy.deepcopy(record.data)

    def _apply_due(self, now: datetime) -> None:
        for record in list(self._messages.values()):
            while record.plan and record.plan[0].at <= now:
                self._apply_message(record, record.plan.pop(0))
        for record in list(self._calls.values()):
            while record.plan and record.plan[0].at <= now:
                self._apply_call(record, record.plan.pop(0))

    def _apply_message(self, record: _Record, step: _Step) -> None:
        data = record.data
        data["status"] = step.status
        data["date_updated"] = rfc2822(step.at)
        if step.status == "sent" and data["date_sent"] is None:
            data["date_sent"] = rfc2822(step.at)
            segments = int(data["num_segments"])
            data["price"] = f"-{float(SMS_PRICE_PER_SEGMENT) * segments:.5f}"
        if step.error_code is not None:
            data["error_code"] = step.error_code
            data["error_message"] = _DELIVERY_ERRORS.get(step.error_code)
        if record.status_callback and data["direction"] == "outbound-api":
            params = {
                "SmsSid": data["sid"], "SmsStatus": step.status, "MessageStatus": step.status, "To": data["to"],
                "MessageSid": data["sid"], "AccountSid": self.account_sid, "From": data["from"] or "",
                "ApiVersion": API_VERSION,
            }
            if data["messaging_service_sid"]:
                params["MessagingServiceSid"] = data["messaging_service_sid"]
            if step.error_code is not None:
                params["ErrorCode"] = str(step.error_code)
            if step.status == "delivered":
                params["RawDlrDoneDate"] = step.at.strftime("%y%m%d%H%M")
            self._outbox.append(("message_status", record.status_callback, record.callback_method, params))

    def _apply_call(self, record: _Record, step: _Step) -> None:
        data = record.data
        event = step.event or ("completed" if step.status in CALL_FINAL else None)
        if step.status != "initiated":
            data["status"] = step.status
        data["date_updated"] = rfc2822(step.at)
        if step.status == "in-progress":
            record.extra["answered_at"] = step.at.isoformat()
            if record.request.get("MachineDetection") and not data.get("answered_by"):
                data["answered_by"] = record.extra.get("scripted_answered_by") or "human"
            if record.request.get("Url") and "twiml_fetched" not in record.extra:
                record.extra["fetch_twiml"] = True
        if step.status in ("initiated", "ringing") and data["start_time"] is None:  # when dialing began
            data["start_time"] = rfc2822(step.at)
        if step.status in CALL_FINAL:
            data["end_time"] = rfc2822(step.at)
            answered = record.extra.get("answered_at")
            seconds = int((step.at - datetime.fromisoformat(answered)).total_seconds()) if answered else 0
            data["duration"] = str(max(seconds, 0))
            minutes = -(-seconds // 60)
            data["price"] = f"-{float(CALL_PRICE_PER_MINUTE) * minutes:.5f}" if minutes else None
        if record.extra.pop("fetch_twiml", False):
            self._outbox.append(("voice_url", record.request["Url"], record.request.get("Method", "POST"),
                                 self._call_params(record, "in-progress", step.at) | {"_call_sid": data["sid"]}))
        if record.status_callback and event and event in record.callback_events:
            params = self._call_params(record, step.status if event != "answered" else "in-progress", step.at)
            params.update({"CallbackSource": "call-progress-events", "SequenceNumber": str(record.sequence),
                           "Timestamp": rfc2822(step.at)})
            record.sequence += 1
            if step.status in CALL_FINAL:
                params["CallDuration"] = data["duration"]
                params["Duration"] = str(-(-int(data["duration"]) // 60))
            self._outbox.append(("call_status", record.status_callback, record.callback_method, params))

    def _call_params(self, record: _Record, status: str, at: datetime) -> dict[str, Any]:
        data = record.data
        params = {
            "AccountSid": self.account_sid, "ApiVersion": API_VERSION, "CallSid": data["sid"],
            "CallStatus": status, "Called": data["to"], "Caller": data["from"], "Direction": data["direction"],
            "From": data["from"], "To": data["to"],
        }
        if data.get("answered_by"):
            params["AnsweredBy"] = data["answered_by"]
        return params

    # ---- webhooks -------------------------------------------------------------------------------------

    def _flush(self) -> list[WebhookDelivery]:
        sent: list[WebhookDelivery] = []
        while True:
            with self._lock:
                if not self._outbox:
                    return sent
                kind, url, method, params = self._outbox.popleft()
            call_sid = params.pop("_call_sid", None)
            delivery = self._post(url, params, kind=kind, method=method)
            if call_sid is not None:
                with self._lock:
                    extra = self._calls[call_sid].extra
                    extra["twiml_fetched"] = delivery.response_text if delivery.ok else None
                    extra["twiml_fetch_status"] = delivery.status_code
            sent.append(delivery)

    def _post(self, url: str, params: dict[str, Any], *, kind: str, method: str = "POST") -> WebhookDelivery:
        """Send one webhook the way Twilio does: form-encoded POST (or GET with a query), signed."""
        method = (method or "POST").upper()
        if method == "GET":
            parts = urlsplit(url)
            query = "&".join(q for q in (parts.query, urlencode(params, doseq=True)) if q)
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
            signature = twilio_signature(self.auth_token, target, {})
        else:
            target = url
            signature = twilio_signature(self.auth_token, url, params)
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1",
                   "I-Twilio-Idempotency-Token": str(uuid.uuid4()), "Accept": "*/*"}
        delivery = WebhookDelivery(kind=kind, url=target, method=method, params=dict(params), signature=signature,
                                   at=self.clock.now().isoformat())
        try:
            with httpx.Client(timeout=self.webhook_timeout_s, trust_env=False) as client:
                if method == "GET":
                    response = client.get(target, headers=headers)
                else:
                    response = client.post(target, data=params, headers=headers)
            delivery.status_code = response.status_code
            delivery.response_text = response.text
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._deliveries.append(delivery)
            self._stats["webhooks_sent" if delivery.ok else "webhooks_failed"] += 1
        return delivery

    # ---- REST operations ------------------------------------------------------------------------------

    def _create_message(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        def one(name: str) -> str | None:
            values = form.get(name)
            return values[0] if values else None

        raw_to, raw_from, service_sid = one("To"), one("From"), one("MessagingServiceSid")
        body = one("Body") or ""
        media = form.get("MediaUrl") or []
        callback = one("StatusCallback")
        if not raw_to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        if not raw_from and not service_sid:
            raise TwilioError(400, 21603, "A 'From' phone number is required.")
        if not body and not media and not one("ContentSid"):
            raise TwilioError(400, 21602, "Message body is required.")
        if len(body) > 1600:
            raise TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if callback is not None and not _valid_url(callback):
            raise TwilioError(400, 21609, f"Invalid StatusCallback url: {callback}")
        if service_sid is not None and service_sid not in self._services:
            raise TwilioError(400, 21701, f"The Messaging Service Sid {service_sid} is invalid.")
        from_ = None
        if raw_from:
            if self.magic_numbers and raw_from in MAGIC_SMS_FROM:
                code, message = MAGIC_SMS_FROM[raw_from]
                raise TwilioError(400, code, message)
            from_ = _normalize_number(raw_from)
            if from_ is None:
                raise TwilioError(400, 21212, f"The 'From' number {raw_from} is not a valid phone number, "
                                              "shortcode, or alphanumeric sender ID.")
            owned = self.phone_numbers
            if owned is not None and from_ not in owned and from_ != MAGIC_OK_FROM:
                raise TwilioError(400, 21606, f"The From phone number {from_} is not a valid, SMS-capable "
                                              "inbound phone number or short code for your account.")
        if self.magic_numbers and raw_to in MAGIC_SMS_TO:
            code, message = MAGIC_SMS_TO[raw_to]
            raise TwilioError(400, code, message.format(from_=from_ or service_sid))
        to = _normalize_number(raw_to)
        if to is None:
            raise TwilioError(400, 21211, f"Invalid 'To' Phone Number: {raw_to}")
        if from_ is not None and to == from_:
            raise TwilioError(400, 21266, "'To' and 'From' number cannot be the same")

        now = self.clock.now()
        sender = from_ if from_ is not None else self._pick_sender(service_sid, now)  # type: ignore[arg-type]
        if sender is None:
            raise TwilioError(400, 21703, f"The Messaging Service {service_sid} has no phone numbers in its "
                                          "sender pool.")
        if self._blocked(service_sid or sender, to) or (service_sid and self._blocked(sender, to)):
            raise TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")

        segments = segment_count(body) if body else 1
        mps = self._mps(sender)
        slot = max(now, self._sender_free.get(sender, now))
        backlog_s = (slot - now).total_seconds()
        if backlog_s > 0 and self.sender_overflow == "reject":
            self._stats["rate_limited"] += 1
            raise TwilioError(429, 20429, "Too Many Requests", {"Retry-After": str(max(1, round(backlog_s)))})

        sid = _new_sid("MM" if media else "SM")
        status = "accepted" if service_sid else "queued"
        data = self._base_message(sid, to=to, from_=sender, body=body, now=now, direction="outbound-api",
                                  status=status, service_sid=service_sid)
        data["num_media"] = str(len(media))
        data["num_segments"] = str(segments)
        record = _Record("message", data, now, status_callback=callback,
                         callback_method=(one("StatusCallbackMethod") or "POST").upper())
        record.request = {key: values if len(values) > 1 else values[0] for key, values in form.items()}
        if backlog_s * mps + segments > self.queue_hours * 3600 * mps:
            # The sender's queue holds about `queue_hours` of traffic; beyond that Twilio fails the message.
            record.plan = [_Step(now, "failed", 30001)]
        else:
            # Rounded up to whole microseconds so that N slots at N MPS never finish inside the second.
            self._sender_free[sender] = slot + timedelta(microseconds=-(-segments * 1_000_000 // mps))
            sent_at = slot + timedelta(seconds=self.sent_after_s)
            final, error = self._sms_script.get(to, ("delivered", None))
            steps = [_Step(now, "queued")] if service_sid else []
            if final == "failed":
                steps.append(_Step(sent_at, "failed", error))
            else:
                steps.append(_Step(sent_at, "sent"))
                if final != "sent":
                    steps.append(_Step(sent_at + timedelta(seconds=self.delivered_after_s), final, error))
            record.plan = steps
        self._messages[sid] = record
        self._stats["messages_created"] += 1
        if not service_sid and callback:
            # The queued status is reported too; it is true at once, so it goes out with the next flush.
            self._apply_message(record, _Step(now, "queued"))
        return 201, self._message_json(record)

    def _pick_sender(self, service_sid: str, now: datetime) -> str | None:
        numbers = self._services[service_sid]["numbers"]
        if not numbers:
            return None
        # Twilio spreads a service's traffic over its pool: take the sender that frees up first.
        return min(numbers, key=lambda n: (max(now, self._sender_free.get(n, now)), numbers.index(n)))

    def _mps(self, sender: str) -> float:
        return float(self.sender_mps.get(sender) or self.sender_mps[sender_type(sender)])

    def _create_call(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        def one(name: str) -> str | None:
            values = form.get(name)
            return values[0] if values else None

        raw_to, raw_from = one("To"), one("From")
        url, twiml, app_sid = one("Url"), one("Twiml"), one("ApplicationSid")
        callback = one("StatusCallback")
        if not raw_to:
            raise TwilioError(400, 21201, "No 'To' number is specified")
        if not raw_from:
            raise TwilioError(400, 21213, "No 'From' number is specified")
        if not (url or twiml or app_sid):
            raise TwilioError(400, 21205, "Url parameter is required.")
        if url is not None and not _valid_url(url):
            raise TwilioError(400, 21205, f"Url is not a valid URL: {url}")
        if callback is not None and not _valid_url(callback):
            raise TwilioError(400, 21609, f"Invalid StatusCallback url: {callback}")
        machine_detection = one("MachineDetection")
        if machine_detection is not None and machine_detection not in ("Enable", "DetectMessageEnd"):
            raise TwilioError(400, 21218, f"Invalid MachineDetection value: {machine_detection}")
        if self.magic_numbers and raw_from in MAGIC_CALL_FROM:
            code, message = MAGIC_CALL_FROM[raw_from]
            raise TwilioError(400, code, message)
        from_ = _normalize_number(raw_from)
        if from_ is None:
            raise TwilioError(400, 21212, "Invalid Caller Phone Number")
        if self.magic_numbers and raw_to in MAGIC_CALL_TO:
            code, message = MAGIC_CALL_TO[raw_to]
            raise TwilioError(400, code, message)
        to = _normalize_number(raw_to)
        if to is None:
            raise TwilioError(400, 21217, "Phone number does not appear to be valid")

        now = self.clock.now()
        sid = _new_sid("CA")
        uri = self._uri("Calls", sid)
        data = {
            "account_sid": self.account_sid, "annotation": None, "answered_by": None, "api_version": API_VERSION,
            "caller_name": None, "date_created": rfc2822(now), "date_updated": rfc2822(now), "direction":
            "outbound-api", "duration": None, "end_time": None, "forwarded_from": None, "from": from_,
            "from_formatted": _formatted(from_), "group_sid": None, "parent_call_sid": None,
            "phone_number_sid": None, "price": None, "price_unit": "USD", "queue_time": "0", "sid": sid,
            "start_time": None, "status": "queued", "subresource_uris": {
                name: uri[:-5] + f"/{name.title().replace('_', '')}.json"
                for name in ("notifications", "recordings", "payments", "events", "siprec", "streams",
                             "transcriptions", "user_defined_message_subscriptions", "user_defined_messages")},
            "to": to, "to_formatted": _formatted(to), "trunk_sid": None, "uri": uri,
        }
        events = tuple(e.lower() for e in form.get("StatusCallbackEvent", [])) or ("completed",)
        record = _Record("call", data, now, status_callback=callback,
                         callback_method=(one("StatusCallbackMethod") or "POST").upper(), callback_events=events)
        record.request = {key: values if len(values) > 1 else values[0] for key, values in form.items()}
        script = self._call_script.get(to, {})
        record.extra["scripted_answered_by"] = script.get("answered_by")
        outcome = script.get("outcome", "completed")
        timeout = float(one("Timeout") or 60)
        ring = now + timedelta(seconds=self.ring_after_s)
        plan = [_Step(now, "initiated", event="initiated")]
        if outcome == "failed":
            plan.append(_Step(ring, "failed"))
        else:
            plan.append(_Step(ring, "ringing", event="ringing"))
            if outcome == "busy":
                plan.append(_Step(ring + timedelta(seconds=1), "busy"))
            elif outcome == "no-answer":
                plan.append(_Step(ring + timedelta(seconds=timeout), "no-answer"))
            else:
                answer = ring + timedelta(seconds=self.answer_after_s)
                duration = script.get("duration_s") or self.call_duration_s
                time_limit = one("TimeLimit")
                if time_limit:
                    duration = min(duration, float(time_limit))
                plan.append(_Step(answer, "in-progress", event="answered"))
                plan.append(_Step(answer + timedelta(seconds=duration), "completed"))
        record.plan = plan
        self._calls[sid] = record
        self._stats["calls_created"] += 1
        return 201, self._call_json(record)

    def _list(self, kind: str, query: dict[str, list[str]], path: str) -> tuple[int, dict[str, Any]]:
        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        records = self._sorted(self._messages if kind == "Messages" else self._calls)
        to, from_ = one("To"), one("From")
        if to:
            records = [r for r in records if r.data["to"] == (_normalize_number(to) or to)]
        if from_:
            records = [r for r in records if r.data["from"] == (_normalize_number(from_) or from_)]
        if kind == "Messages":
            records = _date_filter(records, "date_sent", query, "DateSent")
        else:
            status = one("Status")
            if status:
                records = [r for r in records if r.data["status"] == status]
            records = _date_filter(records, "start_time", query, "StartTime")
            records = _date_filter(records, "end_time", query, "EndTime")
            parent = one("ParentCallSid")
            if parent:
                records = [r for r in records if r.data["parent_call_sid"] == parent]
        try:
            page_size = int(one("PageSize") or 50)
            page = int(one("Page") or 0)
        except ValueError:
            raise TwilioError(400, 20001, "Invalid paging parameter") from None
        if not 1 <= page_size <= 1000 or page < 0:
            raise TwilioError(400, 20001, "PageSize must be between 1 and 1000 and Page must be >= 0")
        token = one("PageToken")
        sids = [r.sid for r in records]
        start_index = page * page_size
        if token and token[:2] in ("PA", "PB") and token[2:] in sids:
            pivot = sids.index(token[2:])
            start_index = pivot + 1 if token[:2] == "PA" else max(pivot - page_size, 0)
        chunk = records[start_index:start_index + page_size]
        filters = [(name, values[0]) for name, values in query.items()
                   if name not in ("PageSize", "Page", "PageToken") and values]
        base = self._uri(kind)

        def page_uri(number: int, page_token: str | None) -> str:
            params = [*filters, ("PageSize", str(page_size)), ("Page", str(number))]
            if page_token:
                params.append(("PageToken", page_token))
            return f"{base}?{urlencode(params)}"

        has_next = start_index + page_size < len(records)
        start = page * page_size
        key = "messages" if kind == "Messages" else "calls"
        render = self._message_json if kind == "Messages" else self._call_json
        return 200, {
            "end": start + max(len(chunk) - 1, 0),
            "first_page_uri": page_uri(0, None),
            key: [render(r) for r in chunk],
            "next_page_uri": page_uri(page + 1, "PA" + chunk[-1].sid) if has_next and chunk else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1, "PB" + chunk[0].sid) if page > 0 and chunk else None,
            "start": start,
            "uri": path + ("?" + urlencode(list(_flatten(query))) if query else ""),
        }

    # ---- ASGI -----------------------------------------------------------------------------------------

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        raw = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = raw.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.account_sid) and hmac.compare_digest(password, self.auth_token)

    def _rate_limited(self, now: datetime) -> bool:
        rps = self.requests_per_second
        if not rps:
            return False
        capacity = float(self.burst or max(1, int(rps)))
        if self._tokens is None or self._tokens_at is None:
            self._tokens, self._tokens_at = capacity, now
        elapsed = max((now - self._tokens_at).total_seconds(), 0.0)
        self._tokens = min(capacity, self._tokens + elapsed * rps)
        self._tokens_at = now
        if self._tokens < 1.0:
            return True
        self._tokens -= 1.0
        return False

    def _route(self, method: str, path: str, query: dict[str, list[str]],
               form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if not path.startswith(ACCOUNTS_PREFIX):
            raise TwilioError(404, 20404, f"The requested resource {path} was not found")
        account, _, rest = path[len(ACCOUNTS_PREFIX):].partition("/")
        if account != self.account_sid:
            raise TwilioError(404, 20404, f"The requested resource {path} was not found")
        parts = rest.split("/")
        if parts in (["Messages.json"], ["Calls.json"]):
            kind = parts[0][:-5]
            if method == "POST":
                return self._create_message(form) if kind == "Messages" else self._create_call(form)
            if method == "GET":
                return self._list(kind, query, path)
            raise TwilioError(405, 20004, "Method not allowed")
        if len(parts) == 2 and parts[0] in ("Messages", "Calls") and parts[1].endswith(".json"):
            store = self._messages if parts[0] == "Messages" else self._calls
            record = store.get(parts[1][:-5])
            if record is None:
                raise TwilioError(404, 20404, f"The requested resource {path} was not found")
            if method == "GET":
                return 200, copy.deepcopy(record.data)
            raise TwilioError(405, 20004, "Method not allowed")
        raise TwilioError(404, 20404, f"The requested resource {path} was not found")

    def _take_fault(self, op: str, method: str) -> Fault | None:
        fault = self._faults.take(op, method)
        if fault is not None:
            self._stats["faults_injected"] += 1
        return fault

    def _error(self, error: TwilioError) -> tuple[int, bytes, dict[str, str]]:
        errors = self._stats["errors"]
        errors[str(error.code)] = errors.get(str(error.code), 0) + 1
        headers = dict(error.headers)
        if error.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return error.status, json.dumps(error.body()).encode(), headers

    def _fault_response(self, fault: Fault) -> tuple[int, bytes, dict[str, str]]:
        if fault.kind == "http_429":
            self._stats["rate_limited"] += 1
            return self._error(TwilioError(429, 20429, "Too Many Requests"))
        if fault.kind == "malformed":
            return 200, b'{"account_sid": "AC', {}
        status = int(fault.kind[5:])
        return self._error(TwilioError(status, 20500, "Internal Server Error" if status == 500 else
                                       "Service Unavailable" if status == 503 else "Bad Gateway"))

    async def _asgi(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        body = await read_body(receive)
        if path == "/sandbox" or path.startswith("/sandbox/"):
            status, payload = await self._control(scope["method"], path, body)
            await _respond(send, status, json.dumps(payload, default=str).encode(), {})
            return
        await self._api(scope, path, body, send)

    async def _api(self, scope: dict[str, Any], path: str, body: bytes, send: Callable[..., Any]) -> None:
        method = scope["method"]
        op = _op_name(path)
        headers = dict(scope.get("headers") or [])
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        with self._lock:
            key = f"{method} {op}"
            self._stats["calls"][key] = self._stats["calls"].get(key, 0) + 1
            self._stats["total_calls"] += 1
            if not self._authorized(headers):
                await _respond(send, *self._error(TwilioError(401, 20003, "Authenticate")))
                return
            limited = self._rate_limited(self.clock.now())
            if not limited and self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
                limited = True
            if limited:
                self._stats["rate_limited"] += 1
                response = self._error(TwilioError(429, 20429, "Too Many Requests"))
            else:
                self._in_flight += 1
                self._stats["max_in_flight_seen"] = max(self._stats["max_in_flight_seen"], self._in_flight)
                response = None
        if response is not None:
            await _respond(send, *response)
            return
        try:
            with self._lock:
                fault = self._take_fault(op, method)
            if fault is not None and not fault.after_processing:
                if fault.kind == "delay":
                    await asyncio.sleep(fault.delay_s)
                    fault = None
                else:
                    with self._lock:
                        response = self._fault_response(fault)
                    await _respond(send, *response)
                    return
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            form = (parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
                    if method == "POST" and ("x-www-form-urlencoded" in content_type or not content_type) else {})
            with self._lock:
                try:
                    status, payload = self._route(method, path, query, form)
                    response = (status, json.dumps(payload).encode(), {})
                except TwilioError as error:
                    response = self._error(error)
            if fault is not None:
                if fault.kind == "delay":
                    await asyncio.sleep(fault.delay_s)
                else:
                    with self._lock:
                        response = self._fault_response(fault)
            await _respond(send, *response)
        finally:
            with self._lock:
                self._in_flight -= 1

    # ---- control API ----------------------------------------------------------------------------------

    async def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"error": "body must be JSON"}
        parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
        try:
            # Some routes POST webhooks synchronously; keep them off the event loop.
            result = await asyncio.to_thread(self._control_route, method, parts,
                                             payload if isinstance(payload, dict) else {})
            return 200, result
        except KeyError as exc:
            return 404, {"error": str(exc.args[0] if exc.args else exc)}
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}

    def _control_route(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        def deliveries(items: list[WebhookDelivery]) -> list[dict[str, Any]]:
            return [d.__dict__ | {"ok": d.ok} for d in items]

        match (method, *parts):
            case ("GET", "stats"):
                return self.stats
            case ("POST", "stats", "reset"):
                self.reset_stats()
                return self.stats
            case ("GET", "credentials"):
                return self.credentials
            case ("GET", "clock"):
                return {"now": self.clock.now().isoformat()}
            case ("POST", "clock"):
                if "now" in body:
                    self.clock.set(parse_ts(body["now"]))
                if "advance_seconds" in body:
                    self.clock.advance(float(body["advance_seconds"]))
                return {"now": self.clock.now().isoformat(), "deliveries": deliveries(self.tick())}
            case ("POST", "tick"):
                return {"deliveries": deliveries(self.tick())}
            case ("POST", "inject"):
                self.inject(body["kind"], path=body.get("path"), times=int(body.get("times", 1)),
                            delay_s=float(body.get("delay_s", 0.0)),
                            after_processing=bool(body.get("after_processing", False)), method=body.get("method"))
                return {"queued": len(self._faults)}
            case ("POST", "inject", "clear") | ("POST", "faults", "clear"):
                self.clear_faults()
                return {"queued": 0}
            case ("POST", "config"):
                for name in ("requests_per_second", "burst", "max_concurrent", "sender_overflow", "queue_hours",
                             "sent_after_s", "delivered_after_s", "ring_after_s", "answer_after_s",
                             "call_duration_s", "inbound_sms_url", "magic_numbers"):
                    if name in body:
                        setattr(self, name, body[name])
                if "sender_mps" in body:
                    self.sender_mps.update(body["sender_mps"])
                return {"ok": True}
            case ("POST", "numbers"):
                self.add_phone_number(body["number"], sms_url=body.get("sms_url"))
                return {"numbers": sorted(self.phone_numbers or ())}
            case ("POST", "services"):
                return {"sid": self.add_messaging_service(body.get("numbers", []), sid=body.get("sid"),
                                                          advanced_opt_out=bool(body.get("advanced_opt_out")))}
            case ("POST", "script", "sms"):
                self.script_sms(body["to"], body.get("status", "delivered"), body.get("error_code"))
                return {"ok": True}
            case ("POST", "script", "call"):
                self.script_call(body["to"], body.get("outcome", "completed"), answered_by=body.get("answered_by"),
                                 duration_s=body.get("duration_s"))
                return {"ok": True}
            case ("POST", "inbound-sms"):
                result = self.inbound_sms(body["from"], body["to"], body.get("body", ""), url=body.get("url"),
                                          media_urls=body.get("media_urls", ()))
                delivery = result["delivery"]
                return result | {"delivery": deliveries([delivery])[0] if delivery else None}
            case ("GET", "opt-outs"):
                return self.opt_outs
            case ("POST", "opt-outs"):
                self.opt_out(body["recipient"], body["sender"])
                return self.opt_outs
            case ("POST", "opt-outs", "remove"):
                self.opt_in(body["recipient"], body["sender"])
                return self.opt_outs
            case ("GET", "messages"):
                return self.messages()
            case ("POST", "messages", sid, "status"):
                return self.set_message_status(sid, body["status"], body.get("error_code"))
            case ("GET", "calls"):
                return self.calls()
            case ("POST", "calls", sid, "status"):
                return self.set_call_status(sid, body["status"], answered_by=body.get("answered_by"))
            case ("GET", "deliveries"):
                return deliveries(self.deliveries)
        raise KeyError(f"no control route {method} /sandbox/{'/'.join(parts)}")


_DELIVERY_ERRORS = {
    30001: "Queue overflow", 30003: "Unreachable destination handset", 30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier", 30007: "Message filtered", 30008: "Unknown error",
    21610: "Attempt to send to unsubscribed recipient",
}


def _flatten(query: dict[str, list[str]]) -> Iterable[tuple[str, str]]:
    for name, values in query.items():
        for value in values:
            yield name, value


def _parse_moment(value: str) -> tuple[datetime, bool]:
    """A Twilio date filter value: `YYYY-MM-DD` (a whole day) or an ISO-8601 datetime. Returns (moment, is_day)."""
    text = value.strip()
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC), True
    return parse_ts(text.replace("Z", "+0000") if text.endswith("Z") else text), False


def _date_filter(records: list[_Record], field_name: str, query: dict[str, list[str]], param: str) -> list[_Record]:
    from email.utils import parsedate_to_datetime

    tests: list[Callable[[datetime], bool]] = []
    for suffix in ("", "<", ">"):
        raw = query.get(param + suffix)
        if not raw or not raw[0]:
            continue
        try:
            moment, is_day = _parse_moment(raw[0])
        except ValueError:
            raise TwilioError(400, 20001, f"Invalid {param}{suffix} value: {raw[0]}") from None
        day_end = moment + timedelta(days=1)
        if suffix == "":
            tests.append((lambda m, a=moment, b=day_end: a <= m < b) if is_day else
                         (lambda m, a=moment: m.date() == a.date()))
        elif suffix == "<":  # on or before
            tests.append((lambda m, b=day_end: m < b) if is_day else (lambda m, b=moment: m <= b))
        else:  # on or after
            tests.append(lambda m, a=moment: m >= a)
    if not tests:
        return records
    kept = []
    for record in records:
        raw_value = record.data.get(field_name)
        if raw_value is None:
            continue
        moment = parsedate_to_datetime(raw_value)
        if all(test(moment) for test in tests):
            kept.append(record)
    return kept


def _twiml_messages(text: str) -> list[str]:
    """Bodies of `<Message>` verbs in a TwiML answer (empty `<Response/>` means no reply)."""
    try:
        root = ET.fromstring(text.strip()) if text and text.strip().startswith("<") else None
    except ET.ParseError:
        return []
    if root is None or root.tag != "Response":
        return []
    bodies = []
    for verb in root.iter("Message"):
        body = verb.find("Body")
        value = (body.text if body is not None else verb.text) or ""
        if value.strip():
            bodies.append(value.strip())
    return bodies


async def _respond(send: Callable[..., Any], status: int, body: bytes, headers: Mapping[str, str]) -> None:
    raw = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode()),
           (b"twilio-request-id", ("RQ" + secrets.token_hex(16)).encode())]
    raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    try:
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
    except OSError:
        pass  # the client gave up (e.g. timed out during an injected delay)


# --------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    """Serve a Twilio sandbox until killed; prints one "listening on" line once the port is live."""
    from ..server import serve_forever

    parser = argparse.ArgumentParser(prog="twilio-sandbox", description="Local Twilio REST API sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--inbound-sms-url", default=None, help="where simulated inbound SMS are POSTed")
    parser.add_argument("--phone-number", action="append", default=None,
                        help="an owned number (repeatable); without any, every valid From is accepted")
    parser.add_argument("--requests-per-second", type=float, default=None, help="REST rate; above it 429/20429")
    parser.add_argument("--max-concurrent", type=int, default=None)
    parser.add_argument("--tick-interval", type=float, default=0.5,
                        help="seconds between status progressions/callback flushes (0 disables the pump)")
    args = parser.parse_args(argv)

    sandbox = TwilioSandbox(args.account_sid, args.auth_token, phone_numbers=args.phone_number,
                            inbound_sms_url=args.inbound_sms_url, requests_per_second=args.requests_per_second,
                            max_concurrent=args.max_concurrent)
    if args.tick_interval > 0:
        sandbox.start_pump(args.tick_interval)

    def announce(url: str) -> None:
        print(f"twilio sandbox listening on {url}", flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve_forever(sandbox.app, host=args.host, port=args.port, on_started=announce)
    finally:
        sandbox.stop_pump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
