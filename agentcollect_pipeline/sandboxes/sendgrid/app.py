"""A local stand-in for SendGrid's v3 Web API as outreach uses it: mail send, suppressions, webhooks.

Written from /work/shared/reference/outreach-channels.md (section 2) and SendGrid's OpenAPI description
(/work/shared/reference/specs/sendgrid_mail_v3.json). The official `sendgrid` package talks to it with
`SendGridAPIClient(api_key=..., host=sandbox_url)`.

One `SendGridSandbox` holds an in-memory SendGrid user and exposes it as a raw ASGI app (`.app`):

- `POST /v3/mail/send`: Bearer auth (401 without or with an unknown key, 403 for a key without the
  `mail.send` scope), the body validated as SendGrid does (400 with `{"errors": [{message, field, help}]}`,
  every problem reported at once), `202` with an empty body and `X-Message-Id`; `mail_settings.sandbox_mode`
  answers `200` and sends nothing; an optional rate limit answers `429` with `X-RateLimit-*` headers.
- Suppressions: `/v3/suppression/{bounces,blocks,spam_reports,invalid_emails,unsubscribes}`,
  `/v3/asm/groups[/{id}[/suppressions[/{email}]]]`, `/v3/asm/suppressions[/global][/{email}]`. Suppressed
  recipients are accepted (202) and then `dropped`, as SendGrid does.
- Event Webhook: `tick()`/`advance()` POST due events (processed, delivered, deferred, bounce, dropped, and
  the engagement events open/click/unsubscribe/group_unsubscribe/spamreport triggered by `open()`, `click()`,
  `unsubscribe()`, `spamreport()`) as a JSON array to `event_webhook_url`, ECDSA P-256/SHA-256 signed over
  `timestamp + raw body` in `X-Twilio-Email-Event-Webhook-Signature` / `-Timestamp`. The verification key
  is `event_webhook_public_key` (base64 DER SubjectPublicKeyInfo), also served at
  `GET /v3/user/webhooks/event/settings/signed` like the real API.
- Inbound Parse: `inbound_email(from_, to, subject, text)` POSTs `multipart/form-data` (default, non-raw
  mode fields) to `inbound_parse_url`.
- `/sandbox/...`: a JSON control API (stats, clock, faults, scripting, engagement, inbound simulation).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import gzip
import json
import re
import secrets
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

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
    "DEFAULT_API_KEY",
    "FAULT_KINDS",
    "SandboxClock",
    "SendGridSandbox",
    "WebhookDelivery",
    "main",
]

DEFAULT_API_KEY = "SG.sandbox-key-id.sandbox-key-secret"
FAULT_KINDS = ("http_500", "http_502", "http_503", "http_429", "malformed", "delay")
ALL_SCOPES = ("mail.send", "suppression.read", "suppression.create", "suppression.delete", "asm.groups.read",
              "asm.groups.create", "user.webhooks.event.settings.read", "user.webhooks.event.settings.update")
SUPPRESSION_LISTS = ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_MAIL_BYTES = 30 * 1024 * 1024  # SendGrid's total message size limit
INBOUND_BOUNDARY = "xYzZY"  # the boundary SendGrid's Inbound Parse posts with
HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_DROP_REASONS = {"bounces": "Bounced Address", "spam_reports": "Spam Reporting Address",
                 "invalid_emails": "Invalid", "unsubscribes": "Unsubscribed Address"}
_BYPASS = {"bounces": "bypass_bounce_management", "spam_reports": "bypass_spam_management",
           "unsubscribes": "bypass_unsubscribe_management", "invalid_emails": "bypass_list_management"}


class SendGridError(Exception):
    def __init__(self, status: int, errors: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {errors}")
        self.status = status
        self.errors = errors
        self.headers = dict(headers or {})


def _err(message: str, field_name: str | None = None, help_anchor: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field_name, "help": f"{HELP}#{help_anchor}" if help_anchor else None}


def _short_id(length: int = 22) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode("ascii").rstrip("=")[:length]


@dataclass
class WebhookDelivery:
    kind: str  # "events" | "inbound_parse"
    url: str
    body: bytes
    headers: dict[str, str]
    status_code: int | None = None
    response_text: str = ""
    error: str | None = None
    attempt: int = 1

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "body": self.body.decode("utf-8", "replace"),
                "headers": self.headers, "status_code": self.status_code, "error": self.error,
                "attempt": self.attempt, "ok": self.ok}


@dataclass
class _Recipient:
    email: str
    message_id: str
    sg_message_id: str
    base: dict[str, Any]  # custom args, category, asm_group_id: copied into every event
    asm_group_id: int | None
    plan: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)
    delivered: bool = False


def _op_name(path: str) -> str:
    """Stats/fault key: "/v3/suppression/bounces/a@b.c" -> "suppression/bounces/{email}"."""
    parts = path.strip("/").split("/")
    if parts and parts[0] == "v3":
        parts = parts[1:]
    out = []
    for part in parts:
        if "@" in unquote(part):
            out.append("{email}")
        elif part.isdigit():
            out.append("{id}")
        else:
            out.append(part)
    return "/".join(out)


class SendGridSandbox(SandboxSurface):
    """In-memory SendGrid user served as an ASGI app (`.app`). Thread-safe for test-side calls.

    Event timing (seconds of sandbox clock): `processed` at acceptance (or `send_at`), then the final
    delivery event `deliver_after_s` later; a scripted `deferred` recipient is delivered `deferred_retry_s`
    after its deferral.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        clock: SandboxClock | None = None,
        *,
        api_keys: Mapping[str, Iterable[str]] | None = None,
        event_webhook_url: str | None = None,
        inbound_parse_url: str | None = None,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        rate_limit: int | None = None,
        rate_window_s: float = 60.0,
        deliver_after_s: float = 2.0,
        deferred_retry_s: float = 300.0,
        webhook_max_attempts: int = 5,
        webhook_timeout_s: float = 5.0,
    ) -> None:
        self.api_key = api_key
        self.clock = clock or SandboxClock()
        self._keys: dict[str, set[str]] = {api_key: set(ALL_SCOPES)}
        for key, scopes in (api_keys or {}).items():
            self._keys[key] = set(scopes)
        self.event_webhook_url = event_webhook_url
        self.event_webhook_enabled = True
        self.signed_webhook_enabled = True
        self.inbound_parse_url = inbound_parse_url
        self._private_key = private_key or ec.generate_private_key(ec.SECP256R1())
        self.rate_limit = rate_limit
        self.rate_window_s = rate_window_s
        self.deliver_after_s = deliver_after_s
        self.deferred_retry_s = deferred_retry_s
        self.webhook_max_attempts = webhook_max_attempts
        self.webhook_timeout_s = webhook_timeout_s

        self._lock = threading.RLock()
        self._mails: dict[str, dict[str, Any]] = {}
        self._recipients: list[_Recipient] = []
        self._outbox: list[dict[str, Any]] = []
        self._retry: deque[tuple[list[dict[str, Any]], int]] = deque()
        self._deliveries: list[WebhookDelivery] = []
        self._events: list[dict[str, Any]] = []
        self._suppressions: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in SUPPRESSION_LISTS}
        self._groups: dict[int, dict[str, Any]] = {}
        self._group_suppressions: dict[int, dict[str, int]] = {}
        self._next_group_id = 1000
        self._script: dict[str, dict[str, Any]] = {}
        self._windows: dict[str, tuple[int, int]] = {}
        self._faults = FaultQueue(FAULT_KINDS, _op_name)
        self._ticker = Ticker(self.tick, name="sendgrid-sandbox-pump")
        self.reset_stats()

        self._app = asgi_app(self._asgi)

    # ---- public Python surface ------------------------------------------------------------------------

    @property
    def event_webhook_public_key(self) -> str:
        """The verification key, as Mail Settings shows it: base64 DER SubjectPublicKeyInfo (no PEM armour)."""
        der = self._private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode("ascii")

    def reset_stats(self) -> None:
        with self._lock:
            self._stats: dict[str, Any] = {"calls": {}, "total_calls": 0, "errors": {}, "faults_injected": 0,
                                           "rate_limited": 0, "mails_accepted": 0, "recipients": 0,
                                           "events": {}, "webhook_posts": 0, "webhook_failures": 0,
                                           "inbound_emails": 0}

    def inject(self, kind: str, path: str | None = None, times: int = 1, delay_s: float = 0.0,
               after_processing: bool = False, method: str | None = None) -> None:
        """Queue `times` faults for requests to `path` ("mail/send", "/v3/suppression/bounces", None=any)."""
        with self._lock:
            self._faults.add(kind, path, times, delay_s, after_processing, method)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def mails(self) -> list[dict[str, Any]]:
        """Accepted mail-send requests, oldest first: {"message_id", "request", "accepted_at"}."""
        with self._lock:
            return copy.deepcopy(list(self._mails.values()))

    def mail(self, message_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._mails[message_id])

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event the sandbox has emitted (posted or not), in order."""
        with self._lock:
            return copy.deepcopy(self._events)

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        with self._lock:
            return list(self._deliveries)

    def script_recipient(self, email: str, outcome: str = "delivered", *, reason: str | None = None) -> None:
        """What happens to future mail to `email`: delivered, bounce, blocked, deferred (then delivered)."""
        if outcome not in ("delivered", "bounce", "blocked", "deferred"):
            raise ValueError(f"unsupported scripted outcome {outcome!r}")
        with self._lock:
            self._script[email.lower()] = {"outcome": outcome, "reason": reason}

    def add_suppression(self, kind: str, email: str, *, reason: str | None = None) -> None:
        """Put `email` on a global list: bounces, blocks, spam_reports, invalid_emails or unsubscribes."""
        if kind not in SUPPRESSION_LISTS:
            raise ValueError(f"unknown suppression list {kind!r}")
        with self._lock:
            self._suppress(kind, email, reason=reason)

    def suppressions(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._suppressions[kind].values()))

    def add_group(self, name: str, description: str = "", *, group_id: int | None = None,
                  is_default: bool = False) -> int:
        """An unsubscribe group (ASM); returns its id."""
        with self._lock:
            gid = group_id if group_id is not None else self._next_group_id
            self._next_group_id = max(self._next_group_id, gid + 1)
            self._groups[gid] = {"id": gid, "name": name, "description": description, "is_default": is_default}
            self._group_suppressions.setdefault(gid, {})
            return gid

    def group_suppressions(self, group_id: int) -> list[str]:
        with self._lock:
            return list(self._group_suppressions.get(group_id, {}))

    def open(self, email: str, *, message_id: str | None = None, machine: bool = False) -> list[WebhookDelivery]:
        return self._engage(email, message_id, "open", {"useragent": "Mozilla/5.0", "ip": "203.0.113.7",
                                                         "sg_machine_open": machine})

    def click(self, email: str, url: str, *, message_id: str | None = None) -> list[WebhookDelivery]:
        return self._engage(email, message_id, "click", {"url": url, "url_offset": {"index": 0, "type": "html"},
                                                          "useragent": "Mozilla/5.0", "ip": "203.0.113.7"})

    def unsubscribe(self, email: str, *, message_id: str | None = None) -> list[WebhookDelivery]:
        """The recipient clicks the unsubscribe link: a group unsubscribe when the mail had `asm`, else global."""
        return self._engage(email, message_id, "unsubscribe", {})

    def spamreport(self, email: str, *, message_id: str | None = None) -> list[WebhookDelivery]:
        return self._engage(email, message_id, "spamreport", {})

    def tick(self) -> list[WebhookDelivery]:
        """Emit every event due by the clock, then POST them (and earlier failed batches) to the webhook."""
        with self._lock:
            now = self.clock.now()
            for recipient in self._recipients:
                while recipient.plan and recipient.plan[0][0] <= now:
                    at, event = recipient.plan.pop(0)
                    self._emit(recipient, at, event)
        return self._flush()

    def advance(self, seconds: float) -> list[WebhookDelivery]:
        self.clock.advance(seconds)
        return self.tick()

    def inbound_email(self, from_: str, to: str, subject: str, text: str, *, html: str | None = None,
                      url: str | None = None, cc: str | None = None, in_reply_to: str | None = None,
                      references: str | None = None, message_id: str | None = None,
                      envelope_to: Iterable[str] | None = None) -> WebhookDelivery | None:
        """POST an Inbound Parse (default mode) multipart/form-data payload for one received email."""
        target = url or self.inbound_parse_url
        now = self.clock.now()
        from_addr = parseaddr(from_)[1] or from_
        to_addrs = list(envelope_to) if envelope_to is not None else [parseaddr(a)[1] or a for a in to.split(",")]
        header_lines = [
            "MIME-Version: 1.0",
            f"Received: by mx.sendgrid.net with SMTP; {format_datetime(now)}",
            f"From: {from_}", f"Date: {format_datetime(now)}", f"Subject: {subject}", f"To: {to}",
            f"Message-ID: {message_id or '<' + _short_id() + '@mail.example.com>'}",
        ]
        if cc:
            header_lines.append(f"Cc: {cc}")
        if in_reply_to:
            header_lines.append(f"In-Reply-To: {in_reply_to}")
        if references or in_reply_to:
            header_lines.append(f"References: {references or in_reply_to}")
        header_lines.append("Content-Type: multipart/alternative; boundary=\"000000000000sandbox\"")
        fields: list[tuple[str, str]] = [
            ("headers", "\n".join(header_lines) + "\n"),
            ("dkim", f"{{@{from_addr.partition('@')[2] or 'example.com'} : pass}}"),
            ("to", to),
        ]
        if cc:
            fields.append(("cc", cc))
        if html is not None:
            fields.append(("html", html))
        fields += [
            ("from", from_),
            ("text", text),
            ("sender_ip", "203.0.113.25"),
            ("spam_report", "Spam detection software, running on the system \"mx.sendgrid.net\", has NOT "
                            "identified this incoming email as spam.\n"),
            ("envelope", json.dumps({"to": to_addrs, "from": from_addr}, separators=(",", ":"))),
            ("attachments", "0"),
            ("subject", subject),
            ("spam_score", "0.011"),
            ("charsets", json.dumps({"to": "UTF-8", "html": "UTF-8", "subject": "UTF-8", "from": "UTF-8",
                                     "text": "UTF-8"}, separators=(",", ":"))),
            ("SPF", "pass"),
        ]
        body = _multipart(fields, INBOUND_BOUNDARY)
        with self._lock:
            self._stats["inbound_emails"] += 1
        if not target:
            return None
        headers = {"Content-Type": f"multipart/form-data; boundary={INBOUND_BOUNDARY}",
                   "User-Agent": "Sendlib/1.0 mx.sendgrid.net"}
        return self._post("inbound_parse", target, body, headers)

    def start_pump(self, interval_s: float = 1.0) -> None:
        """Tick in a background thread (for a long-running server on a real-time clock)."""
        self._ticker.start(interval_s)

    def stop_pump(self) -> None:
        self._ticker.stop()

    # ---- events (lock held) ---------------------------------------------------------------------------

    def _suppress(self, kind: str, email: str, *, reason: str | None = None, status: str | None = None) -> None:
        entry: dict[str, Any] = {"created": int(self.clock.now().timestamp()), "email": email.lower()}
        if kind in ("bounces", "blocks", "invalid_emails"):
            entry["reason"] = reason or {"bounces": "550 5.1.1 The email account that you tried to reach does "
                                                    "not exist.", "blocks": "550 5.7.1 Blocked by policy",
                                         "invalid_emails": "Mail domain mentioned in email address is unknown"}[kind]
        if kind == "bounces":
            entry["status"] = status or "5.1.1"
        if kind in ("blocks", "spam_reports"):
            entry["ip"] = "149.72.1.1"
        self._suppressions[kind][email.lower()] = entry

    def _emit(self, recipient: _Recipient, at: datetime, partial: dict[str, Any]) -> None:
        event = dict(recipient.base)
        event.update({
            "email": recipient.email, "timestamp": int(at.timestamp()), "smtp-id": f"<{recipient.message_id}"
            "@ismtpd0001p1sandbox.sendgrid.net>", "sg_event_id": _short_id(), "sg_message_id":
            recipient.sg_message_id,
        })
        event.update(partial)
        name = event["event"]
        if name == "delivered":
            recipient.delivered = True
        elif name == "bounce":
            self._suppress("bounces" if event.get("type") == "bounce" else "blocks", recipient.email,
                           reason=event.get("reason"), status=event.get("status"))
        self._events.append(event)
        self._stats["events"][name] = self._stats["events"].get(name, 0) + 1
        self._outbox.append(event)

    def _engage(self, email: str, message_id: str | None, kind: str, extra: dict[str, Any]) -> list[WebhookDelivery]:
        with self._lock:
            candidates = [r for r in self._recipients if r.email == email.lower()
                          and (message_id is None or r.message_id == message_id)]
            if not candidates:
                raise KeyError(f"no mail to {email}" + (f" with X-Message-Id {message_id}" if message_id else ""))
            recipient = candidates[-1]
            now = self.clock.now()
            event = {"event": kind, **extra}
            if kind == "unsubscribe" and recipient.asm_group_id is not None:
                event = {"event": "group_unsubscribe", "asm_group_id": recipient.asm_group_id,
                         "useragent": "Mozilla/5.0", "ip": "203.0.113.7"}
                self._group_suppressions.setdefault(recipient.asm_group_id, {})[recipient.email] = int(now.timestamp())
            elif kind == "unsubscribe":
                self._suppress("unsubscribes", recipient.email)
            elif kind == "spamreport":
                self._suppress("spam_reports", recipient.email)
            self._emit(recipient, now, event)
        return self._flush()

    def _flush(self) -> list[WebhookDelivery]:
        with self._lock:
            url = self.event_webhook_url if self.event_webhook_enabled else None
            if url is None:
                self._outbox.clear()  # SendGrid does not keep events for a disabled webhook
                return []
            batches = list(self._retry)
            self._retry.clear()
            if self._outbox:
                batches.append((self._outbox, 1))
                self._outbox = []
        sent = []
        for events, attempt in batches:
            body = (json.dumps(events, separators=(",", ":")) + "\r\n").encode("utf-8")
            headers = {"Content-Type": "application/json", "User-Agent": "SendGrid Event API"}
            if self.signed_webhook_enabled:
                timestamp = str(int(self.clock.now().timestamp()))
                signature = self._private_key.sign(timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
                headers[SIGNATURE_HEADER] = base64.b64encode(signature).decode("ascii")
                headers[TIMESTAMP_HEADER] = timestamp
            delivery = self._post("events", url, body, headers, attempt=attempt)
            if not delivery.ok and attempt < self.webhook_max_attempts:
                with self._lock:
                    self._retry.append((events, attempt + 1))  # SendGrid retries non-2xx answers
            sent.append(delivery)
        return sent

    def _post(self, kind: str, url: str, body: bytes, headers: dict[str, str], attempt: int = 1) -> WebhookDelivery:
        delivery = WebhookDelivery(kind=kind, url=url, body=body, headers=headers, attempt=attempt)
        try:
            with httpx.Client(timeout=self.webhook_timeout_s, trust_env=False, follow_redirects=False) as client:
                response = client.post(url, content=body, headers=headers)
            delivery.status_code = response.status_code
            delivery.response_text = response.text
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._deliveries.append(delivery)
            self._stats["webhook_posts" if delivery.ok else "webhook_failures"] += 1
        return delivery

    # ---- REST: mail send ------------------------------------------------------------------------------

    def _validate_mail(self, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, dict):
            return [_err("Bad Request", None)]
        errors: list[dict[str, Any]] = []
        template = body.get("template_id")
        sender = body.get("from")
        if not isinstance(sender, dict) or not sender.get("email"):
            errors.append(_err("The from object must be provided for every email send. It is an object that "
                               "requires the email parameter, but may also contain a name parameter.",
                               "from.email", "message.from"))
        elif not _EMAIL.match(str(sender["email"])):
            errors.append(_err("The from email does not contain a valid address.", "from.email", "message.from"))
        personalizations = body.get("personalizations")
        if not isinstance(personalizations, list) or not personalizations:
            errors.append(_err("The personalizations field is required and must have at least one "
                               "personalization.", "personalizations", "message.personalizations"))
            personalizations = []
        elif len(personalizations) > 1000:
            errors.append(_err("The personalizations field is limited to 1000 personalizations per request.",
                               "personalizations", "message.personalizations"))
        total = 0
        for i, p in enumerate(personalizations):
            where = f"personalizations.{i}"
            if not isinstance(p, dict):
                errors.append(_err("The personalization must be an object.", where, "message.personalizations"))
                continue
            if not isinstance(p.get("to"), list) or not p["to"]:
                errors.append(_err("The to array is required for all personalization objects, and must have at "
                                   "least one email object with a valid email address.", f"{where}.to",
                                   "message.personalizations.to"))
            seen: dict[str, str] = {}
            for kind in ("to", "cc", "bcc"):
                items = p.get(kind) or []
                if not isinstance(items, list):
                    errors.append(_err(f"The {kind} field must be an array.", f"{where}.{kind}",
                                       f"message.personalizations.{kind}"))
                    continue
                for j, item in enumerate(items):
                    address = item.get("email") if isinstance(item, dict) else None
                    if not isinstance(address, str) or not _EMAIL.match(address):
                        errors.append(_err("Does not contain a valid address.", f"{where}.{kind}.{j}.email",
                                           f"message.personalizations.{kind}"))
                        continue
                    total += 1
                    if address.lower() in seen:
                        errors.append(_err("Each email address in the personalization block should be unique "
                                           "between to, cc, and bcc. We found the first duplicate instance of "
                                           f"[{address}] in the {where}.{kind} field.", f"{where}.{kind}",
                                           "message.recipient-errors"))
                    seen[address.lower()] = kind
            args = p.get("custom_args")
            if args is not None and (not isinstance(args, dict)
                                     or any(not isinstance(v, str) for v in args.values())):
                errors.append(_err("Custom args must be an object of string keys and string values.",
                                   f"{where}.custom_args", "message.custom_args"))
            if "subject" in p and (not isinstance(p["subject"], str) or not p["subject"]):
                errors.append(_err("The subject of a personalization must be a string at least one character "
                                   "in length.", f"{where}.subject", "message.personalizations.subject"))
        if total > 1000 and len(personalizations) <= 1000:
            errors.append(_err("The total number of recipients must be no more than 1000.", "personalizations",
                               "message.personalizations"))
        subject = body.get("subject")
        if not template and not (isinstance(subject, str) and subject) and not (
                personalizations and all(isinstance(p, dict) and p.get("subject") for p in personalizations)):
            errors.append(_err("The subject is required. You can get around this requirement if you use a "
                               "template with a subject defined or if every personalization has a subject "
                               "defined.", "subject", "message.subject"))
        content = body.get("content")
        if content is None:
            if not template:
                errors.append(_err("Unless a valid template_id is provided, the content parameter is required. "
                                   "There must be at least one defined content block. We typically suggest both "
                                   "text/plain and text/html blocks are included, but only one block is "
                                   "required.", "content", "message.content"))
        elif not isinstance(content, list) or (not content and not template):
            errors.append(_err("The content field must be an array with at least one content block.", "content",
                               "message.content"))
        else:
            types = []
            for k, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str) or not block["type"]:
                    errors.append(_err("The content type must be a string at least one character in length.",
                                       f"content.{k}.type", "message.content.type"))
                    continue
                if not isinstance(block.get("value"), str) or not block["value"]:
                    errors.append(_err("The content value must be a string at least one character in length.",
                                       f"content.{k}.value", "message.content.value"))
                types.append(block["type"])
            if "text/plain" in types and types.index("text/plain") != 0:
                errors.append(_err("If present, text/plain content must be first, followed by text/html, followed "
                                   "by any other content.", "content", "message.content.type"))
        if template is not None and (not isinstance(template, str) or not template):
            errors.append(_err("The template_id must be a valid template id.", "template_id", "message.template_id"))
        categories = body.get("categories")
        if categories is not None:
            if not isinstance(categories, list) or any(not isinstance(c, str) or len(c) > 255 for c in categories):
                errors.append(_err("Categories must be an array of strings of at most 255 characters.",
                                   "categories", "message.categories"))
            elif len(categories) > 10:
                errors.append(_err("Too many categories. The maximum is 10.", "categories", "message.categories"))
            elif len(set(categories)) != len(categories):
                errors.append(_err("The categories must be unique.", "categories", "message.categories"))
        asm = body.get("asm")
        if asm is not None:
            if not isinstance(asm, dict) or not isinstance(asm.get("group_id"), int) or isinstance(
                    asm.get("group_id"), bool):
                errors.append(_err("The asm group_id must be an integer.", "asm.group_id", "message.asm.group_id"))
            elif len(asm.get("groups_to_display") or []) > 25:
                errors.append(_err("The asm groups_to_display is limited to 25 groups.", "asm.groups_to_display",
                                   "message.asm.groups_to_display"))
        args = body.get("custom_args")
        if args is not None and not isinstance(args, dict | str):
            errors.append(_err("Custom args must be an object.", "custom_args", "message.custom_args"))
        all_args = [args if isinstance(args, dict) else {}] + [p.get("custom_args") or {} for p in personalizations
                                                               if isinstance(p, dict)]
        if sum(len(json.dumps(a)) for a in all_args if isinstance(a, dict)) > 10000:
            errors.append(_err("The custom_args are limited to 10,000 bytes.", "custom_args", "message.custom_args"))
        send_at = body.get("send_at")
        if send_at is not None:
            now = self.clock.now().timestamp()
            if not isinstance(send_at, int) or isinstance(send_at, bool):
                errors.append(_err("The send_at parameter must be an integer unix timestamp.", "send_at",
                                   "message.send_at"))
            elif send_at > now + 72 * 3600:
                errors.append(_err("The send_at parameter can't be scheduled more than 72 hours in advance.",
                                   "send_at", "message.send_at"))
        reply_to = body.get("reply_to")
        if reply_to is not None and (not isinstance(reply_to, dict)
                                     or not _EMAIL.match(str(reply_to.get("email", "")))):
            errors.append(_err("The reply_to email does not contain a valid address.", "reply_to.email",
                               "message.reply_to"))
        return errors

    def _send(self, body: Any) -> tuple[int, bytes, dict[str, str]]:
        errors = self._validate_mail(body)
        if errors:
            raise SendGridError(400, errors)
        settings = body.get("mail_settings") or {}
        if (settings.get("sandbox_mode") or {}).get("enable"):
            return 200, b"", {}  # validated, not sent
        now = self.clock.now()
        message_id = _short_id()
        self._mails[message_id] = {"message_id": message_id, "request": copy.deepcopy(body),
                                   "accepted_at": now.isoformat()}
        self._stats["mails_accepted"] += 1
        top_args = body.get("custom_args") if isinstance(body.get("custom_args"), dict) else {}
        categories = body.get("categories")
        asm = body.get("asm") or {}
        group_id = asm.get("group_id")
        index = 0
        for p in body["personalizations"]:
            start = now
            send_at = p.get("send_at", body.get("send_at"))
            if isinstance(send_at, int) and send_at > now.timestamp():
                start = datetime.fromtimestamp(send_at, UTC)
            for kind in ("to", "cc", "bcc"):
                for item in p.get(kind) or []:
                    email = item["email"].lower()
                    base: dict[str, Any] = {**top_args, **(p.get("custom_args") or {})}
                    if categories:
                        base["category"] = list(categories)
                    if group_id is not None:
                        base["asm_group_id"] = group_id
                    recipient = _Recipient(email=email, message_id=message_id, base=base, asm_group_id=group_id,
                                           sg_message_id=f"{message_id}.recvd-sandbox-{index}-"
                                                         f"{secrets.token_hex(4).upper()}-0.0")
                    index += 1
                    recipient.plan = self._plan(email, start, group_id, settings)
                    self._recipients.append(recipient)
                    self._stats["recipients"] += 1
        return 202, b"", {"X-Message-Id": message_id}

    def _plan(self, email: str, start: datetime, group_id: int | None,
              settings: dict[str, Any]) -> list[tuple[datetime, dict[str, Any]]]:
        processed = (start, {"event": "processed"})

        def bypass(name: str) -> bool:
            return bool((settings.get(name) or {}).get("enable")) or bool(
                (settings.get("bypass_list_management") or {}).get("enable"))

        if group_id is not None and email in self._group_suppressions.get(group_id, {}) and not bypass(
                "bypass_unsubscribe_management"):
            return [processed, (start, {"event": "dropped", "reason": "Unsubscribed Address", "status": "5.0.0"})]
        for kind in ("unsubscribes", "bounces", "spam_reports", "invalid_emails"):
            if email in self._suppressions[kind] and not bypass(_BYPASS[kind]):
                return [processed, (start, {"event": "dropped", "reason": _DROP_REASONS[kind], "status": "5.0.0"})]
        script = self._script.get(email, {"outcome": "delivered", "reason": None})
        final = start + timedelta(seconds=self.deliver_after_s)
        delivered = {"event": "delivered", "response": "250 2.0.0 OK sandbox", "ip": "149.72.1.1", "tls": 1}
        outcome = script["outcome"]
        if outcome == "bounce":
            return [processed, (final, {"event": "bounce", "type": "bounce", "status": "5.1.1",
                                        "reason": script["reason"] or "550 5.1.1 The email account that you tried "
                                        "to reach does not exist.", "bounce_classification": "Invalid Address",
                                        "ip": "149.72.1.1", "tls": 1})]
        if outcome == "blocked":
            return [processed, (final, {"event": "bounce", "type": "blocked", "status": "5.7.1",
                                        "reason": script["reason"] or "550 5.7.1 Message rejected due to local "
                                        "policy", "bounce_classification": "Reputation", "ip": "149.72.1.1",
                                        "tls": 1})]
        if outcome == "deferred":
            return [processed, (final, {"event": "deferred", "response": script["reason"] or "421 4.7.0 Try "
                                        "again later", "attempt": "1", "ip": "149.72.1.1", "tls": 1}),
                    (final + timedelta(seconds=self.deferred_retry_s), delivered)]
        return [processed, (final, delivered)]

    # ---- REST: suppressions, groups, settings -----------------------------------------------------------

    def _route(self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes,
               scopes: set[str]) -> tuple[int, bytes, dict[str, str]]:
        def need(scope: str) -> None:
            if scope not in scopes:
                raise SendGridError(403, [{"field": None, "message": "access forbidden", "help": None}])

        def payload() -> Any:
            try:
                return json.loads(body) if body.strip() else {}
            except ValueError:
                raise SendGridError(400, [_err("Bad Request", None)]) from None

        def ok(data: Any, status: int = 200) -> tuple[int, bytes, dict[str, str]]:
            return status, json.dumps(data).encode(), {}

        def group(raw: str) -> int:
            if not raw.isdigit() or int(raw) not in self._groups:
                raise SendGridError(404, [{"field": None, "message": "Unsubscribe group not found", "help": None}])
            return int(raw)

        match (method, *parts):
            case ("POST", "mail", "send"):
                need("mail.send")
                if len(body) > MAX_MAIL_BYTES:
                    raise SendGridError(413, [{"field": None, "message": "content too large", "help": None}])
                return self._send(payload())
            case (_, "mail", "send"):
                raise SendGridError(405, [{"field": None, "message": "method not allowed", "help": None}])
            case ("GET", "suppression", kind) if kind in SUPPRESSION_LISTS:
                need("suppression.read")
                return ok(self._list_suppressions(kind, query))
            case ("GET", "suppression", kind, email) if kind in SUPPRESSION_LISTS:
                need("suppression.read")
                entry = self._suppressions[kind].get(email.lower())
                return ok([entry] if entry else [])
            case ("DELETE", "suppression", kind, email) if kind in SUPPRESSION_LISTS and kind != "unsubscribes":
                need("suppression.delete")
                self._suppressions[kind].pop(email.lower(), None)
                return 204, b"", {}
            case ("POST", "asm", "suppressions", "global"):
                need("suppression.create")
                emails = [e.lower() for e in (payload().get("recipient_emails") or [])]
                for email in emails:
                    self._suppress("unsubscribes", email)
                return ok({"recipient_emails": emails}, 201)
            case ("GET", "asm", "suppressions", "global", email):
                need("suppression.read")
                return ok({"recipient_email": email.lower()} if email.lower() in self._suppressions["unsubscribes"]
                          else {})
            case ("DELETE", "asm", "suppressions", "global", email):
                need("suppression.delete")
                self._suppressions["unsubscribes"].pop(email.lower(), None)
                return 204, b"", {}
            case ("GET", "asm", "suppressions"):
                need("suppression.read")
                return ok([{"email": email, "group_id": gid, "group_name": self._groups[gid]["name"],
                            "created_at": created} for gid, emails in self._group_suppressions.items()
                           for email, created in emails.items()])
            case ("GET", "asm", "suppressions", email):
                need("suppression.read")
                return ok({"suppressions": [{"description": g["description"], "id": gid, "is_suppressed":
                                             email.lower() in self._group_suppressions.get(gid, {}),
                                             "name": g["name"]} for gid, g in self._groups.items()]})
            case ("GET", "asm", "groups"):
                need("asm.groups.read")
                return ok([self._group_json(gid) for gid in self._groups])
            case ("POST", "asm", "groups"):
                need("asm.groups.create")
                data = payload()
                if not isinstance(data.get("name"), str) or not data["name"]:
                    raise SendGridError(400, [_err("name is required", "name")])
                gid = self.add_group(data["name"], data.get("description", ""),
                                     is_default=bool(data.get("is_default")))
                return ok(self._group_json(gid), 201)
            case ("GET", "asm", "groups", raw):
                need("asm.groups.read")
                return ok(self._group_json(group(raw)))
            case ("GET", "asm", "groups", raw, "suppressions"):
                need("suppression.read")
                return ok(list(self._group_suppressions.get(group(raw), {})))
            case ("POST", "asm", "groups", raw, "suppressions"):
                need("suppression.create")
                gid = group(raw)
                emails = [e.lower() for e in (payload().get("recipient_emails") or [])]
                for email in emails:
                    self._group_suppressions[gid][email] = int(self.clock.now().timestamp())
                return ok({"recipient_emails": emails}, 201)
            case ("DELETE", "asm", "groups", raw, "suppressions", email):
                need("suppression.delete")
                self._group_suppressions[group(raw)].pop(email.lower(), None)
                return 204, b"", {}
            case ("GET", "user", "webhooks", "event", "settings", "signed"):
                need("user.webhooks.event.settings.read")
                return ok({"public_key": self.event_webhook_public_key if self.signed_webhook_enabled else ""})
            case ("PATCH", "user", "webhooks", "event", "settings", "signed"):
                need("user.webhooks.event.settings.update")
                self.signed_webhook_enabled = bool(payload().get("enabled", True))
                return ok({"public_key": self.event_webhook_public_key if self.signed_webhook_enabled else ""})
            case ("GET", "user", "webhooks", "event", "settings"):
                need("user.webhooks.event.settings.read")
                return ok(self._webhook_settings())
            case ("PATCH", "user", "webhooks", "event", "settings"):
                need("user.webhooks.event.settings.update")
                data = payload()
                if "url" in data:
                    self.event_webhook_url = data["url"] or None
                if "enabled" in data:
                    self.event_webhook_enabled = bool(data["enabled"])
                return ok(self._webhook_settings())
        raise SendGridError(404, [{"field": None, "message": "not found", "help": None}])

    def _list_suppressions(self, kind: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        def number(name: str) -> int | None:
            raw = (query.get(name) or [None])[0]
            if raw in (None, ""):
                return None
            if not raw.isdigit():
                raise SendGridError(400, [_err(f"{name} must be an integer", name)])
            return int(raw)

        start, end, limit, offset = number("start_time"), number("end_time"), number("limit"), number("offset")
        email = (query.get("email") or [None])[0]
        items = sorted(self._suppressions[kind].values(), key=lambda e: e["created"], reverse=True)
        items = [e for e in items if (start is None or e["created"] >= start) and (end is None or e["created"] <= end)
                 and (email is None or e["email"] == email.lower())]
        items = items[offset or 0:]
        return copy.deepcopy(items if limit is None else items[:limit])

    def _group_json(self, gid: int) -> dict[str, Any]:
        group = self._groups[gid]
        return {**group, "unsubscribes": len(self._group_suppressions.get(gid, {})), "last_email_sent_at": None}

    def _webhook_settings(self) -> dict[str, Any]:
        flags = ("bounce", "click", "deferred", "delivered", "dropped", "group_resubscribe", "group_unsubscribe",
                 "open", "processed", "spam_report", "unsubscribe")
        return {"enabled": self.event_webhook_enabled, "url": self.event_webhook_url or "",
                **dict.fromkeys(flags, True), "oauth_client_id": "", "oauth_token_url": ""}

    # ---- ASGI -----------------------------------------------------------------------------------------

    def _rate_headers(self, op: str) -> tuple[bool, dict[str, str]]:
        if not self.rate_limit:
            return False, {}
        now = self.clock.now().timestamp()
        window = int(now // self.rate_window_s)
        current, used = self._windows.get(op, (window, 0))
        if current != window:
            used = 0
        reset = int((window + 1) * self.rate_window_s)
        limited = used >= self.rate_limit
        if not limited:
            used += 1
        self._windows[op] = (window, used)
        return limited, {"X-RateLimit-Limit": str(self.rate_limit),
                         "X-RateLimit-Remaining": str(max(self.rate_limit - used, 0)),
                         "X-RateLimit-Reset": str(reset)}

    def _error(self, error: SendGridError) -> tuple[int, bytes, dict[str, str]]:
        key = str(error.status)
        self._stats["errors"][key] = self._stats["errors"].get(key, 0) + 1
        return error.status, json.dumps({"errors": error.errors}).encode(), dict(error.headers)

    def _fault_response(self, fault: Fault, rate: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if fault.kind == "http_429":
            self._stats["rate_limited"] += 1
            headers = rate or {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                               "X-RateLimit-Reset": str(int(self.clock.now().timestamp()) + 60)}
            return self._error(SendGridError(429, [{"field": None, "message": "too many requests", "help": None}],
                                             {**headers, "X-RateLimit-Remaining": "0"}))
        if fault.kind == "malformed":
            return 200, b'{"errors": [', {}
        status = int(fault.kind[5:])
        return self._error(SendGridError(status, [{"message": "internal server error" if status == 500 else
                                                   "service unavailable" if status == 503 else "bad gateway"}]))

    def _take_fault(self, op: str, method: str) -> Fault | None:
        fault = self._faults.take(op, method)
        if fault is not None:
            self._stats["faults_injected"] += 1
        return fault

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
            scopes = self._auth(headers)
            if isinstance(scopes, SendGridError):
                await _respond(send, *self._error(scopes))
                return
            limited, rate = self._rate_headers(op)
            if limited:
                self._stats["rate_limited"] += 1
                await _respond(send, *self._error(SendGridError(429, [{"field": None, "message": "too many requests",
                                                                       "help": None}], rate)))
                return
            fault = self._take_fault(op, method)
        if fault is not None and not fault.after_processing:
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay_s)
                fault = None
            else:
                with self._lock:
                    response = self._fault_response(fault, rate)
                await _respond(send, *response)
                return
        if headers.get(b"content-encoding", b"").lower() == b"gzip":
            try:
                body = gzip.decompress(body)
            except OSError:
                body = b"\x00"
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self._lock:
            try:
                if not parts or parts[0] != "v3":
                    raise SendGridError(404, [{"field": None, "message": "not found", "help": None}])
                status, payload, extra = self._route(method, parts[1:], query, body, scopes)
                response = (status, payload, {**rate, **extra})
            except SendGridError as error:
                status, payload, extra = self._error(error)
                response = (status, payload, {**rate, **extra})
        if fault is not None:
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay_s)
            else:
                with self._lock:
                    response = self._fault_response(fault, rate)
        await _respond(send, *response)

    def _auth(self, headers: dict[bytes, bytes]) -> set[str] | SendGridError:
        raw = headers.get(b"authorization", b"").decode("latin-1").strip()
        if not raw:
            return SendGridError(401, [{"field": None, "message": "authorization required", "help": None}])
        scheme, _, token = raw.partition(" ")
        scopes = self._keys.get(token.strip()) if scheme.lower() in ("bearer", "token") else None
        if scopes is None:
            return SendGridError(401, [{"field": None, "message": "The provided authorization grant is invalid, "
                                                                  "expired, or revoked", "help": None}])
        return scopes

    # ---- control API ----------------------------------------------------------------------------------

    async def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"error": "body must be JSON"}
        parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
        try:
            result = await asyncio.to_thread(self._control_route, method, parts,
                                             payload if isinstance(payload, dict) else {})
            return 200, result
        except KeyError as exc:
            return 404, {"error": str(exc.args[0] if exc.args else exc)}
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}

    def _control_route(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        def out(items: list[WebhookDelivery]) -> list[dict[str, Any]]:
            return [d.as_dict() for d in items]

        match (method, *parts):
            case ("GET", "stats"):
                return self.stats
            case ("POST", "stats", "reset"):
                self.reset_stats()
                return self.stats
            case ("GET", "credentials"):
                return {"api_key": self.api_key}
            case ("GET", "public-key"):
                return {"public_key": self.event_webhook_public_key}
            case ("GET", "clock"):
                return {"now": self.clock.now().isoformat()}
            case ("POST", "clock"):
                if "now" in body:
                    self.clock.set(parse_ts(body["now"]))
                if "advance_seconds" in body:
                    self.clock.advance(float(body["advance_seconds"]))
                return {"now": self.clock.now().isoformat(), "deliveries": out(self.tick())}
            case ("POST", "tick"):
                return {"deliveries": out(self.tick())}
            case ("POST", "inject"):
                self.inject(body["kind"], path=body.get("path"), times=int(body.get("times", 1)),
                            delay_s=float(body.get("delay_s", 0.0)),
                            after_processing=bool(body.get("after_processing", False)), method=body.get("method"))
                return {"queued": len(self._faults)}
            case ("POST", "inject", "clear") | ("POST", "faults", "clear"):
                self.clear_faults()
                return {"queued": 0}
            case ("POST", "config"):
                for name in ("event_webhook_url", "inbound_parse_url", "rate_limit", "rate_window_s",
                             "deliver_after_s", "deferred_retry_s", "webhook_max_attempts"):
                    if name in body:
                        setattr(self, name, body[name])
                return {"ok": True}
            case ("POST", "script"):
                self.script_recipient(body["email"], body.get("outcome", "delivered"), reason=body.get("reason"))
                return {"ok": True}
            case ("POST", "suppressions", kind):
                self.add_suppression(kind, body["email"], reason=body.get("reason"))
                return self.suppressions(kind)
            case ("POST", "groups"):
                return {"id": self.add_group(body["name"], body.get("description", ""), group_id=body.get("id"))}
            case ("POST", "engage", kind) if kind in ("open", "click", "unsubscribe", "spamreport"):
                extra = {"url": body["url"]} if kind == "click" else {}
                return out(getattr(self, kind)(body["email"], message_id=body.get("message_id"), **extra))
            case ("POST", "inbound-email"):
                delivery = self.inbound_email(body["from"], body["to"], body.get("subject", ""), body.get("text", ""),
                                              html=body.get("html"), url=body.get("url"),
                                              in_reply_to=body.get("in_reply_to"))
                return delivery.as_dict() if delivery else None
            case ("GET", "mails"):
                return self.mails()
            case ("GET", "events"):
                return self.events
            case ("GET", "deliveries"):
                return out(self.deliveries)
        raise KeyError(f"no control route {method} /sandbox/{'/'.join(parts)}")


def _multipart(fields: list[tuple[str, str]], boundary: str) -> bytes:
    chunks = []
    for name, value in fields:
        chunks.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    chunks.append(f"--{boundary}--\r\n")
    return "".join(chunks).encode("utf-8")


async def _respond(send: Callable[..., Any], status: int, body: bytes, headers: Mapping[str, str]) -> None:
    raw = [(b"content-length", str(len(body)).encode())]
    if body:
        raw.append((b"content-type", b"application/json"))
    raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    try:
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
    except OSError:
        pass


# --------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    """Serve a SendGrid sandbox until killed; prints one "listening on" line once the port is live."""
    from ..server import serve_forever

    parser = argparse.ArgumentParser(prog="sendgrid-sandbox", description="Local SendGrid v3 API sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--event-webhook-url", default=None, help="where signed Event Webhook batches go")
    parser.add_argument("--inbound-parse-url", default=None, help="where simulated inbound emails are POSTed")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per window per endpoint (429 above)")
    parser.add_argument("--rate-window-s", type=float, default=60.0)
    parser.add_argument("--tick-interval", type=float, default=1.0,
                        help="seconds between event emission/webhook flushes (0 disables the pump)")
    args = parser.parse_args(argv)

    sandbox = SendGridSandbox(args.api_key, event_webhook_url=args.event_webhook_url,
                              inbound_parse_url=args.inbound_parse_url, rate_limit=args.rate_limit,
                              rate_window_s=args.rate_window_s)
    if args.tick_interval > 0:
        sandbox.start_pump(args.tick_interval)

    def announce(url: str) -> None:
        print(f"sendgrid sandbox listening on {url}", flush=True)
        print(f"event webhook public key: {sandbox.event_webhook_public_key}", file=sys.stderr, flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve_forever(sandbox.app, host=args.host, port=args.port, on_started=announce)
    finally:
        sandbox.stop_pump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
