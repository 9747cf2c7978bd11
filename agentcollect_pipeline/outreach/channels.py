"""Channel resources: SendGrid email, Twilio SMS and voice, and the outreach settings (dry run, links).

Every provider call has a timeout. A 429 (Twilio 20429, SendGrid 429) means the request was not processed,
so it is retried with backoff; a 429 that outlasts the retry budget is still a definite "not accepted"
(`throttled`): the attempt's reservation is released and a later run sends the step (ledger.release). A
send that fails in a way that leaves its outcome unknown (5xx, timeout, broken connection) is NOT retried:
neither provider has an idempotency key, so the attempt stays `reserved` and reconciliation decides
(ledger.reconcile). Reads (listing messages/calls) retry 429 and 5xx.
Secrets are bound with dg.EnvVar and never logged.
"""

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from pydantic import Field

log = logging.getLogger(__name__)
T = TypeVar("T")

# Twilio codes that say this number will never take our message: the contact is invalid / opted out.
TWILIO_OPTED_OUT = {21610}
TWILIO_INVALID = {21211, 21214, 21216, 21217, 21614, 30005, 30006}


@dataclass(frozen=True)
class SendResult:
    # "sent" | "rejected" (never reached anyone) | "unknown" (reconcile) | "throttled" (429 past the retry
    # budget: not accepted, the reservation is released for a later run)
    outcome: str
    provider_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


def _backoff(attempt: int, base: float) -> float:
    return min(30.0, base * 2**attempt) * (0.5 + random.random() / 2)  # jitter: concurrent runs spread out


class Throttle:
    """Spaces sends out to at most `rate` per second per key (provider + sender), in the sender loop.

    Twilio queues above a sender's throughput (a US long code: 1 message segment/s) and fails the overflow
    with 30001; SendGrid answers 429. Pacing ourselves keeps both from happening. Monotonic clock; the
    sleep is injectable for tests. A rate of 0 or None means unlimited.
    """

    def __init__(self, rates: dict[str, float | None], *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._interval = {key: (1.0 / rate if rate else 0.0) for key, rate in rates.items()}
        self._next: dict[str, float] = {}
        self._clock, self._sleep = clock, sleep
        self.waited_s = 0.0
        self._refused: set[str] = set()

    def refuse(self, provider: str) -> None:
        """The provider answered 429 past the retry budget: send it nothing more in this run."""
        self._refused.add(provider)

    def refused(self, provider: str) -> bool:
        return provider in self._refused

    def wait(self, key: str) -> None:
        interval = self._interval.get(key, 0.0)
        if not interval:
            return
        now = self._clock()
        slot = max(now, self._next.get(key, now))
        if slot > now:
            self._sleep(slot - now)
            self.waited_s += slot - now
        self._next[key] = slot + interval


def _reset_wait(headers: Any, now: float, cap: float) -> float | None:
    """Seconds until SendGrid's X-RateLimit-Reset (epoch seconds), or None when absent/unusable."""
    try:
        raw = headers.get("X-RateLimit-Reset") if headers is not None else None
        reset = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    if reset is None:
        return None
    wait = reset - now
    if wait < 0 or wait > cap:  # clocks disagree, or a reset too far away to hold a run for: back off instead
        return None
    return wait + 0.05  # the window has turned over when we retry


class OutreachSettings(dg.ConfigurableResource):
    """How outreach behaves, apart from the policy file: dry run, links, the public webhook URL."""

    dry_run: bool = Field(default=False, description="write what would be sent to outreach_outbox; send nothing")
    org_name: str = Field(default="Accounts Receivable", description="who the messages are from")
    payment_link_template: str = Field(
        default="https://pay.example.com/invoices/{invoice_id}",
        description="payment link when Bill.com's v3 payment link is unavailable (outreach/payment_links.py); "
        "{invoice_id} (oldest invoice), {customer_id}, {case_id}",
    )
    unsubscribe_url_template: str = Field(
        default="{public_base_url}/webhooks/sendgrid/unsubscribe?attempt_id={attempt_id}&token={token}",
        description="email opt-out link; {public_base_url}, {attempt_id}, {token} (HMAC of attempt id + address)",
    )
    lease_seconds: float = Field(
        default=600, gt=0, description="the sender's job lease expires this long after its last renewal",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8090", description="public URL of `agentcollect webhooks` (callbacks, links)"
    )
    default_timezone: str = Field(default="America/New_York", description="debtor zone when nothing is known")
    reconcile_after_seconds: float = Field(
        default=120, ge=0, description="a reservation older than this without an outcome is reconciled"
    )
    max_sends_per_run: int = Field(default=500, ge=1, description="bounds one run; the rest waits 15 minutes")


class SendGridEmailResource(dg.ConfigurableResource):
    api_key: str = Field(description="SendGrid API key (secret: bind with EnvVar)")
    base_url: str = Field(default="https://api.sendgrid.com", description="host; the sandbox's URL in tests")
    from_email: str
    from_name: str = "Accounts Receivable"
    reply_to: str | None = Field(default=None, description="replies go here (Inbound Parse address)")
    timeout_s: float = 10.0
    max_attempts: int = Field(default=4, ge=1)
    retry_base_delay_s: float = 0.5
    messages_per_second: float | None = Field(
        default=10.0, ge=0, description="send pace of the sender loop (SendGrid publishes no fixed mail/send "
        "limit; 429s are waited out until X-RateLimit-Reset); 0 = unpaced")
    max_reset_wait_s: float = Field(default=60.0, ge=0, description="longest wait for X-RateLimit-Reset on a 429")
    asm_group_id: int | None = Field(default=None, description="SendGrid unsubscribe group (ASM), optional")
    unsubscribe_secret: str = Field(
        default="",
        description="key of the unsubscribe-link HMAC (secret: bind with EnvVar AGENTCOLLECT_UNSUBSCRIBE_SECRET; "
        "the webhook receiver needs the same value). Without it no email is sent",
    )

    def send(self, attempt_id: str, to: str, subject: str, text: str, html: str | None,
             unsubscribe_url: str | None = None, reply_to: str | None = None) -> SendResult:
        from python_http_client.exceptions import HTTPError
        from sendgrid import SendGridAPIClient
        from sendgrid.helpers.mail import (
            Asm,
            CustomArg,
            From,
            GroupId,
            GroupsToDisplay,
            Header,
            Mail,
            Personalization,
            ReplyTo,
            To,
        )

        client = SendGridAPIClient(api_key=self.api_key, host=self.base_url)
        client.client.timeout = self.timeout_s  # python_http_client has no default timeout
        message = Mail(from_email=From(self.from_email, self.from_name), subject=subject,
                       plain_text_content=text, html_content=html)
        personalization = Personalization()
        personalization.add_to(To(to))
        # Per-personalization custom_args: the spec types the top-level one as a string (reference §2.2).
        personalization.add_custom_arg(CustomArg("attempt_id", attempt_id))
        message.add_personalization(personalization)
        if reply_to or self.reply_to:  # per attempt (replies+att_…@…) when given: Inbound Parse matches the case
            message.reply_to = ReplyTo(reply_to or self.reply_to, self.from_name)
        if unsubscribe_url:
            # One-click unsubscribe in mail clients (RFC 8058) goes to the same signed link as the body's.
            message.header = Header("List-Unsubscribe", f"<{unsubscribe_url}>")
            message.header = Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
        if self.asm_group_id is not None:
            message.asm = Asm(GroupId(self.asm_group_id), GroupsToDisplay([self.asm_group_id]))
        for attempt in range(self.max_attempts):
            try:
                response = client.send(message)
            except HTTPError as exc:
                status = getattr(exc, "status_code", None) or 0
                if status == 429 and attempt + 1 < self.max_attempts:
                    # Not processed: wait until the window resets (X-RateLimit-Reset), not a blind backoff
                    # that would hit the limit again and again.
                    wait = _reset_wait(getattr(exc, "headers", None), time.time(), self.max_reset_wait_s)
                    time.sleep(wait if wait is not None else _backoff(attempt, self.retry_base_delay_s))
                    continue
                if status == 429:
                    # Still refused after the retry budget: SendGrid did not accept it (nothing to reconcile).
                    return SendResult("throttled", error_code="429",
                                      error_message=f"SendGrid 429 on {attempt + 1} attempt(s)")
                if status >= 500:
                    # 5xx: SendGrid may have queued it; a resend could double-email.
                    return SendResult("unknown", error_code=str(status), error_message="SendGrid HTTP error")
                return SendResult("rejected", error_code=str(status), error_message=_sendgrid_error(exc))
            except (TimeoutError, OSError) as exc:
                return SendResult("unknown", error_message=type(exc).__name__)
            headers = {k.lower(): v for k, v in dict(response.headers or {}).items()}
            return SendResult("sent", provider_id=headers.get("x-message-id"))
        return SendResult("unknown", error_message="retries exhausted")  # pragma: no cover


def _sendgrid_error(exc: Any) -> str:
    body = getattr(exc, "body", b"") or b""
    return (body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body))[:300]


class TwilioResource(dg.ConfigurableResource):
    account_sid: str = Field(description="Twilio account SID (secret: bind with EnvVar)")
    auth_token: str = Field(description="Twilio auth token (secret: bind with EnvVar); also validates webhooks")
    from_number: str = Field(description="E.164 sender number")
    base_url: str | None = Field(default=None, description="send every *.twilio.com request here (sandbox)")
    timeout_s: float = 10.0
    max_attempts: int = Field(default=4, ge=1)
    retry_base_delay_s: float = 0.5
    machine_detection: str = Field(default="DetectMessageEnd", description="Enable | DetectMessageEnd")
    messages_per_second: float | None = Field(
        default=1.0, ge=0, description="SMS pace per sender number (US long code: 1 segment/s; toll-free 3; "
        "short code 30; 10DLC per campaign); enforced by the sender loop; 0 = unpaced")
    calls_per_second: float | None = Field(default=1.0, ge=0, description="call pace (Twilio default: 1 CPS)")

    def client(self):
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        http = _LoopbackHttpClient(self.base_url, timeout=self.timeout_s) if self.base_url else TwilioHttpClient(
            timeout=self.timeout_s)
        return Client(self.account_sid, self.auth_token, http_client=http)

    def _create(self, call: Callable[[], T]) -> T | SendResult:
        import requests
        from twilio.base.exceptions import TwilioRestException, TwilioServiceException

        for attempt in range(self.max_attempts):
            try:
                return call()
            except (TwilioRestException, TwilioServiceException) as exc:
                status = getattr(exc, "status", 0) or 0
                code = getattr(exc, "code", None)
                if (status == 429 or code == 20429) and attempt + 1 < self.max_attempts:
                    time.sleep(_backoff(attempt, self.retry_base_delay_s))  # never processed: safe to retry
                    continue
                if status == 429 or code == 20429:
                    # Twilio: a 429'd request was never processed (error 20429), however often it repeats.
                    return SendResult("throttled", error_code=str(code or status),
                                      error_message=f"Twilio 429 on {attempt + 1} attempt(s)")
                if status >= 500:
                    return SendResult("unknown", error_code=str(code or status), error_message="Twilio HTTP error")
                return SendResult("rejected", error_code=str(code or status), error_message=str(getattr(exc, "msg", ""))[:300])
            except requests.RequestException as exc:
                return SendResult("unknown", error_message=type(exc).__name__)
        return SendResult("unknown", error_message="retries exhausted")  # pragma: no cover

    def send_sms(self, to: str, body: str, status_callback: str | None) -> SendResult:
        client = self.client()
        kwargs = {"to": to, "from_": self.from_number, "body": body}
        if status_callback:
            kwargs["status_callback"] = status_callback
        result = self._create(lambda: client.messages.create(**kwargs))
        return result if isinstance(result, SendResult) else SendResult("sent", provider_id=result.sid)

    def place_call(self, to: str, status_callback: str | None, *, url: str | None = None,
                   twiml: str | None = None) -> SendResult:
        """A call whose script comes from `url` (our TwiML route: the full script or, on an answering
        machine, the voicemail script) or, without one, the given TwiML."""
        client = self.client()
        kwargs = {"to": to, "from_": self.from_number, "machine_detection": self.machine_detection}
        if url:
            kwargs.update(url=url, method="POST")
        else:
            kwargs["twiml"] = twiml
        if status_callback:
            kwargs.update(status_callback=status_callback, status_callback_method="POST",
                          status_callback_event=["initiated", "ringing", "answered", "completed"])
        result = self._create(lambda: client.calls.create(**kwargs))
        return result if isinstance(result, SendResult) else SendResult("sent", provider_id=result.sid)

    def _read(self, call: Callable[[], T]) -> T:
        from twilio.base.exceptions import TwilioRestException, TwilioServiceException

        for attempt in range(self.max_attempts):
            try:
                return call()
            except (TwilioRestException, TwilioServiceException) as exc:
                status = getattr(exc, "status", 0) or 0
                if (status == 429 or status >= 500) and attempt + 1 < self.max_attempts:
                    time.sleep(_backoff(attempt, self.retry_base_delay_s))
                    continue
                raise
        raise RuntimeError("unreachable")  # pragma: no cover

    def find_message(self, to: str, since: datetime, reference: str) -> str | None:
        """Our message to `to` sent since `since`, recognised by the reference in its body."""
        client = self.client()
        # Not filtered on DateSent: a message still queued has no date_sent yet. Newest first, so the last
        # 50 to this number from our sender cover any reservation within the reconcile window.
        messages = self._read(lambda: client.messages.list(to=to, from_=self.from_number, limit=50))
        for message in messages:
            created = message.date_created
            if reference in (message.body or "") and (created is None or created >= since):
                return message.sid
        return None

    def find_call(self, to: str, since: datetime) -> str | None:
        """A call from our number to `to` since `since` (we place at most one per case step)."""
        client = self.client()
        calls = self._read(lambda: client.calls.list(to=to, from_=self.from_number, start_time_after=since, limit=20))
        return calls[0].sid if calls else None


def _loopback_class():
    from twilio.http.http_client import TwilioHttpClient

    class LoopbackTwilioHttpClient(TwilioHttpClient):
        """Sends every *.twilio.com request to `base_url` (reference §1.1: works with TWILIO_REGION/EDGE set)."""

        def __init__(self, base_url: str, **kwargs: Any):
            super().__init__(**kwargs)
            self._base = urlsplit(base_url)

        def request(self, method, url, *args, **kwargs):
            parts = urlsplit(url)
            if parts.hostname and parts.hostname.endswith(".twilio.com"):
                url = urlunsplit((self._base.scheme, self._base.netloc, parts.path, parts.query, parts.fragment))
            return super().request(method, url, *args, **kwargs)

    return LoopbackTwilioHttpClient


def _LoopbackHttpClient(base_url: str, **kwargs: Any):  # noqa: N802 - a class factory used like a class
    return _loopback_class()(base_url, **kwargs)
