"""Outreach webhooks: Twilio status callbacks, inbound SMS, call scripts and keypresses; SendGrid events and
Inbound Parse (email replies). Raw ASGI, like app.py.

Every request is authenticated before anything is read into the database: Twilio's X-Twilio-Signature
(HMAC-SHA1 over the exact public URL + sorted form params), SendGrid's ECDSA signature over the raw body
(+ a 5-minute timestamp window against replays), and for Inbound Parse - which SendGrid does not sign unless
a security policy is attached - the secret token in the Parse URL's path and/or the basic-auth credentials
in it (`https://user:password@host/webhooks/sendgrid/inbound/<token>`). A bad or missing signature or
credential gets 403 and changes nothing. Events are deduplicated (Twilio on sid:status, SendGrid on
sg_event_id, replies on the provider's message id) because providers redeliver."""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import sqlalchemy as sa

from agentcollect_pipeline.agent import effects
from agentcollect_pipeline.agent.composer import Composer
from agentcollect_pipeline.agent.effects import handle_reply
from agentcollect_pipeline.agent.inbound_email import InboundEmail, form_fields
from agentcollect_pipeline.agent.llm import LLMConfig, LLMReplyClassifier
from agentcollect_pipeline.agent.message import InvoiceLine, MessageContext
from agentcollect_pipeline.asgi import read_body
from agentcollect_pipeline.outreach import ledger
from agentcollect_pipeline.outreach.channels import TWILIO_INVALID, TWILIO_OPTED_OUT
from agentcollect_pipeline.outreach.tokens import SECRET_ENV, UNSUBSCRIBE_PATH, token_ok
from agentcollect_pipeline.rules.quiet_hours import Window, allowed_at, candidate_zones
from agentcollect_pipeline.settings import configured_ar_source
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.store import Warehouse

log = logging.getLogger(__name__)

PREFIXES = ("/webhooks/twilio/", "/webhooks/sendgrid/")
INBOUND_PATH = "/webhooks/sendgrid/inbound"
INBOUND_TOKEN_ENV = "AGENTCOLLECT_INBOUND_PARSE_TOKEN"  # noqa: S105 - the variable's name, not a secret
INBOUND_BASIC_AUTH_ENV = "AGENTCOLLECT_INBOUND_PARSE_BASIC_AUTH"
# Inbound Parse posts the whole email, attachments included (SendGrid accepts messages up to 30 MB).
MAX_INBOUND_BODY = 32 * 1024 * 1024
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
# AnsweredBy values that get the short voicemail script (no balance details for whoever hears a recording).
# `unknown` too: when AMD cannot tell, the conservative script; `fax` gets a hang-up.
VOICEMAIL_ANSWERS = {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "unknown"}
HANGUP = b'<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>'


def is_opt_out(body: str) -> bool:
    text = " ".join(body.strip().split())
    return text.upper() in STOP_WORDS or any(phrase in text.lower() for phrase in STOP_PHRASES)


class OutreachWebhooks:
    def __init__(self, warehouse: Warehouse, *, twilio_auth_token: str | None, sendgrid_public_key: str | None,
                 public_base_url: str, clock: Callable[[], float] = time.time, unsubscribe_secret: str | None = None,
                 sms_sender: Any = None, default_timezone: str = "America/New_York",
                 sms_window: Window | None = None, inbound_token: str | None = None,
                 inbound_basic_auth: str | None = None, reply_classifier: Any = None,
                 composer_factory: Callable[[], Composer] | None = None):
        self._warehouse = warehouse
        self._twilio_token = twilio_auth_token
        self._sendgrid_key = sendgrid_public_key
        self._public = public_base_url.rstrip("/")
        self._clock = clock
        # Without it every unsubscribe link is refused (403): nothing unsigned changes an opt-out.
        self._unsubscribe_secret = unsubscribe_secret or None
        # Anything with send_sms(to, body, status_callback) -> SendResult (TwilioResource); None: no texts.
        self._sms_sender = sms_sender
        self._default_tz = default_timezone
        self._sms_window = sms_window or Window()
        # Inbound Parse: a secret path token and/or basic-auth "user:password"; with neither, everything is refused.
        self._inbound_token = inbound_token or None
        self._inbound_basic = inbound_basic_auth or None
        # The LLM reply classifier when configured (rules inside it keep opt-outs); None: the rules.
        self._classifier = reply_classifier
        # Writes the payment-link text of keypress 1 (templates, or the LLM within the guardrails).
        self._composer_factory = composer_factory or Composer

    def __repr__(self) -> str:  # never the secrets
        return "OutreachWebhooks()"

    def handles(self, path: str) -> bool:
        return path.startswith(PREFIXES)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        path, method = scope["path"], scope["method"]
        if path == UNSUBSCRIBE_PATH and method in ("GET", "POST"):
            await read_body(receive, MAX_BODY)  # one-click POST body (List-Unsubscribe=One-Click) carries nothing we need
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            await self._unsubscribe(query, send)
            return
        if method != "POST":
            await _respond(send, 405, b'{"error": "POST only"}', "application/json")
            return
        inbound = path == INBOUND_PATH or path.startswith(INBOUND_PATH + "/")
        body = await read_body(receive, MAX_INBOUND_BODY if inbound else MAX_BODY)
        if body is None:
            await _respond(send, 413, b'{"error": "body too large"}', "application/json")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = scope.get("query_string", b"").decode("latin-1")
        if path.startswith("/webhooks/twilio/"):
            await self._twilio(path, query, headers, body, send)
        elif path == "/webhooks/sendgrid/events":
            await self._sendgrid(headers, body, send)
        elif inbound:
            await self._inbound_parse(path, headers, body, send)
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
        now = datetime.fromtimestamp(self._clock(), UTC)  # injectable, like the providers' clocks in tests
        if path == "/webhooks/twilio/status":
            self._status(attempt_id, params, now)
            await _respond(send, 204, b"", "text/plain")
        elif path == "/webhooks/twilio/inbound":
            # Classifying may ask the LLM: off the event loop.
            await asyncio.to_thread(self._inbound, params, now)
            await _respond(send, 200, b'<?xml version="1.0" encoding="UTF-8"?><Response />', "application/xml")
        elif path.startswith("/webhooks/twilio/voice/"):
            twiml = self._voice(path.rsplit("/", 1)[-1], params, now)
            await _respond(send, 200, twiml, "application/xml")
        elif path == "/webhooks/twilio/gather":
            self._event("twilio", f"gather:{params.get('CallSid')}:{params.get('Digits')}", attempt_id,
                        "gather", params.get("To"), params, now)
            # Sending the text talks to Twilio: off the event loop.
            reply = await asyncio.to_thread(self._gather, attempt_id, params.get("Digits") or "",
                                            params.get("CallSid"), now)
            twiml = f'<?xml version="1.0" encoding="UTF-8"?><Response><Say>{escape(reply)}</Say><Hangup /></Response>'
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

    def _voice(self, attempt_id: str, params: dict, now: datetime) -> bytes:
        """The call's TwiML, fetched by Twilio when it is answered: full script for a person, the voicemail
        script for an answering machine (AnsweredBy machine_* / unknown), a hang-up for a fax."""
        C, A = os_.call_scripts, os_.outreach_attempts
        answered = params.get("AnsweredBy") or None
        with self._warehouse.transaction() as conn:
            script = conn.execute(sa.select(C).where(C.c.attempt_id == attempt_id)).mappings().first()
            if script is None:
                log.warning("voice TwiML requested for an unknown attempt; hanging up")
                return HANGUP
            if answered == "fax":
                served, twiml = "hangup", HANGUP
            elif answered in VOICEMAIL_ANSWERS:
                served, twiml = "voicemail", script["voicemail_twiml"].encode()
            else:  # human, or AMD off
                served, twiml = "full", script["full_twiml"].encode()
            conn.execute(C.update().where(C.c.attempt_id == attempt_id).values(served=served))
            values: dict[str, Any] = {"updated_at": now}
            if answered:
                values["answered_by"] = answered
            conn.execute(A.update().where(A.c.attempt_id == attempt_id).values(**values))
        return twiml

    def _gather(self, attempt_id: str | None, digits: str, call_sid: str | None, now: datetime) -> str:
        """A key pressed on our call is a reply with the same effects (agent/effects.py record_keypress):
        1 asks for the payment link, texted now as its own ledger step (quiet hours, consent, opt-outs checked;
        written by the composer like every message); 2 asks for a person (a callback request). Each is a
        `customer_replies` row (so it gets its Customer note) and is recorded on the call (gather_choice)."""
        A = os_.outreach_attempts
        with self._warehouse.engine.connect() as conn:
            row = conn.execute(sa.select(A).where(A.c.attempt_id == attempt_id)).mappings().first() if attempt_id else None
        if row is None or row["channel"] != "voice" or digits not in effects.KEYPRESS_INTENTS:
            return "Goodbye."
        pressed = effects.record_keypress(self._warehouse, attempt=row, digits=digits, call_sid=call_sid or "",
                                          received_at=now)
        if digits == "2":
            self._choice(row["attempt_id"], "2:callback_requested", now)
            return "Thank you. Someone from our team will call you back."
        refused = self._link_refusal(row, now)
        if refused:
            if not pressed.duplicate:
                effects.set_effect(self._warehouse, pressed.reply_id, f"link_refused:{refused}")
                self._choice(row["attempt_id"], f"1:link_refused:{refused}", now)
            return "We cannot send a text to this number. You can pay online with the link in our email. Goodbye."
        action = {key: row[key] for key in ("case_id", "customer_id", "currency", "tone", "invoice_ids",
                                            "total_due_cents", "consumer")}
        action.update(step=f"{row['step']}:link", channel="sms", destination=row["destination"],
                      why=f"pressed 1 on call {row['attempt_id']}")
        link_attempt = ledger.reserve(self._warehouse, action, now, None)
        if link_attempt is None:  # at most once per (case, step): already texted; the first choice stays
            return "We have already texted you a payment link. Goodbye."
        draft = self._link_draft(row, link_attempt)
        ledger.record_draft(self._warehouse, link_attempt, draft.source, list(draft.rejected), now)
        result = self._sms_sender.send_sms(
            row["destination"], draft.message.text, f"{self._public}/webhooks/twilio/status?attempt_id={link_attempt}")
        if result.outcome == "sent":
            ledger.confirm(self._warehouse, link_attempt, now, status="sent", provider="twilio",
                           provider_id=result.provider_id, sent_at=now)
        elif result.outcome == "rejected":
            ledger.confirm(self._warehouse, link_attempt, now, status="rejected", provider="twilio",
                           error_code=result.error_code, error_message=result.error_message)
        elif result.outcome == "throttled":  # 429 past the retry budget: not sent; pressing 1 again retries
            ledger.release(self._warehouse, link_attempt, now, "twilio", f"{result.error_code}: {result.error_message}")
        # unknown: stays reserved; the next send_due_outreach run reconciles it, never resends
        self._choice(row["attempt_id"], f"1:link_{result.outcome}:{link_attempt}", now)
        effects.set_effect(self._warehouse, pressed.reply_id, f"link_{result.outcome}:{link_attempt}")
        if result.outcome == "rejected":
            return "We could not send a text to this number. Goodbye."
        if result.outcome == "throttled":
            return "We could not send the text just now. You can pay online with the link in our email. Goodbye."
        return "Thank you. We have texted you a payment link. Goodbye."

    def _link_draft(self, row, link_attempt: str):
        """The text with the invoices and payment link, from the call's facts (invoices as last synced)."""
        tables = schema.ar_tables(configured_ar_source())
        invoices, customers = tables.invoices, tables.customers
        ids = [i for i in str(row["invoice_ids"]).split(",") if i]
        with self._warehouse.engine.connect() as conn:
            script = conn.execute(sa.select(os_.call_scripts).where(
                os_.call_scripts.c.attempt_id == row["attempt_id"])).mappings().first()
            found = conn.execute(sa.select(invoices.c.invoice_id, invoices.c.invoice_number, invoices.c.due_date,
                                           invoices.c.amount_due_cents).where(invoices.c.invoice_id.in_(ids))).all()
            customer = conn.execute(sa.select(customers.c.company_name, customers.c.name).where(
                customers.c.customer_id == row["customer_id"])).first()
        lines = [InvoiceLine(i, str(n or i), d, int(a or 0)) for i, n, d, a in found if (a or 0) > 0]
        if not lines:  # not synced here: the call's own total, under its first invoice id
            lines = [InvoiceLine(ids[0] if ids else "-", ids[0] if ids else "-", None, int(row["total_due_cents"]))]
        ctx = MessageContext(
            org_name=script["org_name"], customer_name=str((customer and (customer[0] or customer[1])) or "there"),
            currency=row["currency"], invoices=tuple(sorted(lines, key=lambda x: (x.due_date is None, x.due_date))),
            payment_link=script["payment_link"], unsubscribe_url="", reference=ledger.reference(link_attempt))
        composer = self._composer_factory()
        try:
            return composer.compose("sms", row["tone"] if row["tone"] in ("friendly", "firm", "final") else "friendly",
                                    ctx, "copy")
        finally:
            composer.close()

    def _link_refusal(self, row, now: datetime) -> str | None:
        """Why the payment-link text may not go now (None: it may): no sender, quiet hours in any candidate
        zone, no consent, opted out or invalid number, nothing left to collect."""
        number = row["destination"]
        if self._sms_sender is None:
            return "no_sms_sender"
        customers, consents, optouts, invalid = (schema.ar_tables(configured_ar_source()).customers,
                                                 os_.contact_consents, cs.opt_outs, os_.invalid_contacts)
        with self._warehouse.engine.connect() as conn:
            customer = conn.execute(sa.select(customers.c.bill_state, customers.c.bill_country).where(
                customers.c.customer_id == row["customer_id"])).first()
            consent = conn.execute(sa.select(consents.c.consent_id).where(
                consents.c.channel == "sms", consents.c.address == number, consents.c.revoked_at.is_(None))).first()
            opted = conn.execute(sa.select(optouts.c.opt_out_id).where(
                optouts.c.channel == "sms", optouts.c.address == number)).first()
            bad = conn.execute(sa.select(invalid.c.address).where(
                invalid.c.channel == "sms", invalid.c.address == number)).first()
            disputed = conn.execute(sa.select(cs.disputes.c.invoice_id).where(
                cs.disputes.c.invoice_id.in_(str(row["invoice_ids"]).split(",")),
                cs.disputes.c.closed_at.is_(None))).first()
        zones = candidate_zones(state=customer[0] if customer else None, country=customer[1] if customer else None,
                                phones=[number], default=self._default_tz)
        if not allowed_at(now, zones, self._sms_window):
            return "quiet_hours"
        if consent is None:
            return "no_consent"
        if opted is not None:
            return "opted_out"
        if bad is not None:
            return "invalid_number"
        if disputed is not None:
            return "disputed"
        return None

    def _choice(self, attempt_id: str, choice: str, now: datetime) -> None:
        A = os_.outreach_attempts
        with self._warehouse.transaction() as conn:
            conn.execute(A.update().where(A.c.attempt_id == attempt_id).values(gather_choice=choice, updated_at=now))

    # -- email opt-out link -----------------------------------------------------------------------------

    async def _unsubscribe(self, query: dict[str, str], send) -> None:
        attempt_id, token = query.get("attempt_id", ""), query.get("token")
        A = os_.outreach_attempts
        row = None
        if attempt_id and token and self._unsubscribe_secret:
            with self._warehouse.engine.connect() as conn:
                row = conn.execute(sa.select(A.c.channel, A.c.destination).where(
                    A.c.attempt_id == attempt_id)).first()
        if row is None or row[0] != "email" or not token_ok(self._unsubscribe_secret, attempt_id, row[1], token):
            log.warning("unsubscribe link refused: bad token")
            await _respond(send, 403, b"<p>This link is not valid.</p>", "text/html; charset=utf-8")
            return
        now = datetime.fromtimestamp(self._clock(), UTC)  # injectable (a replayed month runs on its clock)
        with self._warehouse.transaction() as conn:
            ledger.record_opt_out(conn, "email", row[1], f"unsubscribe link ({attempt_id})", now)
        self._event("agentcollect", f"unsubscribe:{attempt_id}", attempt_id, "unsubscribe_link", row[1],
                    {"attempt_id": attempt_id}, now)
        await _respond(send, 200, b"<p>You have been unsubscribed. You will get no more emails about this "
                       b"account.</p>", "text/html; charset=utf-8")

    def _inbound(self, params: dict, now: datetime) -> None:
        sender, body = params.get("From", ""), params.get("Body", "")
        self._event("twilio", f"inbound:{params.get('MessageSid')}", None, "inbound_sms", sender, params, now)
        if sender and (is_opt_out(body) or params.get("OptOutType") == "STOP"):
            with self._warehouse.transaction() as conn:
                # Revocation by text covers automated calls to that number too (FCC reasonable-means rule).
                for channel in ("sms", "voice"):
                    ledger.record_opt_out(conn, channel, sender, "inbound SMS: " + body.strip()[:40], now)
        if sender and body.strip():
            # Every reply is understood and has its effect (promise, dispute, "I paid" pause, wrong number…);
            # the MessageSid makes a re-delivered webhook one reply.
            handle_reply(self._warehouse, channel="sms", sender=sender, body=body,
                         reply_id=params.get("MessageSid") or None, received_at=now, classifier=self._classify)

    def _classify(self, text: str, received_at: datetime):
        if self._classifier is None:
            from agentcollect_pipeline.agent.replies import classify

            return classify(text, received_at)
        return self._classifier.classify(text, received_at)

    # -- SendGrid Inbound Parse (email replies) --------------------------------------------------------

    def _inbound_authorized(self, path: str, headers: dict[str, str]) -> bool:
        """Every configured mechanism must pass, and at least one must be configured."""
        if not self._inbound_token and not self._inbound_basic:
            return False
        if self._inbound_token:
            given = path.removeprefix(INBOUND_PATH).strip("/")
            if not given or not hmac.compare_digest(_digest(given), _digest(self._inbound_token)):
                return False
        if self._inbound_basic:
            scheme, _, credentials = headers.get("authorization", "").partition(" ")
            try:
                given = base64.b64decode(credentials, validate=True).decode("utf-8") if scheme.lower() == "basic" else ""
            except (ValueError, UnicodeDecodeError):
                given = ""
            if not given or not hmac.compare_digest(_digest(given), _digest(self._inbound_basic)):
                return False
        return True

    async def _inbound_parse(self, path: str, headers: dict[str, str], body: bytes, send) -> None:
        if not self._inbound_authorized(path, headers):
            log.warning("inbound parse refused: bad or missing credentials")  # never the token itself
            await _respond(send, 403, b'{"error": "forbidden"}', "application/json")
            return
        try:
            mail = InboundEmail.from_fields(form_fields(headers.get("content-type", ""), body))
        except ValueError:
            # 2xx, or SendGrid retries for 3 days: an unreadable post will not become readable.
            log.warning("inbound parse: body is not multipart/form-data; ignored")
            await _respond(send, 200, b'{"status": "ignored"}', "application/json")
            return
        if not mail.sender or not mail.text:
            await _respond(send, 200, b'{"status": "ignored"}', "application/json")
            return
        now = datetime.fromtimestamp(self._clock(), UTC)
        outcome = await asyncio.to_thread(self._inbound_email, mail, now)
        answer = {"status": "duplicate" if outcome.duplicate else "stored", "intent": outcome.intent,
                  "effect": outcome.effect}
        await _respond(send, 200, json.dumps(answer).encode(), "application/json")

    def _inbound_email(self, mail: InboundEmail, now: datetime):
        reply_id = mail.message_id or "eml_" + hashlib.sha256(
            f"{mail.sender}\n{mail.subject}\n{mail.text}".encode()).hexdigest()[:24]
        attempt_id = mail.attempt_id
        A = os_.outreach_attempts
        if attempt_id:
            with self._warehouse.engine.connect() as conn:
                known = conn.execute(sa.select(A.c.channel).where(A.c.attempt_id == attempt_id)).scalar()
            attempt_id = attempt_id if known == "email" else None  # a token we never sent names nothing
        self._event("sendgrid", f"inbound:{reply_id}", attempt_id, "inbound_email", mail.sender,
                    {"message_id": mail.message_id, "subject": mail.subject[:200], "to": list(mail.recipients)}, now)
        return handle_reply(self._warehouse, channel="email", sender=mail.sender, body=mail.text, reply_id=reply_id,
                            received_at=now, attempt_id=attempt_id, classifier=self._classify)

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
        now = datetime.fromtimestamp(self._clock(), UTC)  # injectable, as for Twilio's callbacks
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


def _digest(value: str) -> bytes:
    """Compare secrets as fixed-length digests: compare_digest then leaks nothing about their length."""
    return hashlib.sha256(value.encode("utf-8")).digest()


async def _respond(send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def outreach_from_environment(warehouse: Warehouse) -> OutreachWebhooks:
    """Without TWILIO_AUTH_TOKEN / SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY the matching routes refuse everything."""
    import os

    sender = None
    if os.environ.get("TWILIO_ACCOUNT_SID") and os.environ.get("TWILIO_AUTH_TOKEN"):
        from agentcollect_pipeline.outreach.channels import TwilioResource

        sender = TwilioResource(account_sid=os.environ["TWILIO_ACCOUNT_SID"],
                                auth_token=os.environ["TWILIO_AUTH_TOKEN"],
                                from_number=os.environ.get("TWILIO_FROM_NUMBER") or "+15005550006",
                                base_url=os.environ.get("TWILIO_BASE_URL") or None)
    return OutreachWebhooks(
        warehouse,
        twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None,
        sendgrid_public_key=os.environ.get("SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY") or None,
        public_base_url=os.environ.get("AGENTCOLLECT_PUBLIC_BASE_URL") or "http://127.0.0.1:8090",
        unsubscribe_secret=os.environ.get(SECRET_ENV) or None,
        sms_sender=sender,
        default_timezone=os.environ.get("AGENTCOLLECT_ORG_TIMEZONE") or "America/New_York",
        inbound_token=os.environ.get(INBOUND_TOKEN_ENV) or None,
        inbound_basic_auth=os.environ.get(INBOUND_BASIC_AUTH_ENV) or None,
        reply_classifier=LLMReplyClassifier(config) if (config := LLMConfig.from_env()) and _messaging().use_llm else None,
        composer_factory=lambda: Composer.from_policy(_messaging()),
    )


def _messaging():
    """The policy's `messaging:` block, read when needed (a policy edit applies without a restart). A broken
    policy file must not stop a debtor's reply from being handled: defaults, and the error in the log."""
    from agentcollect_pipeline.collection_policy import CollectionPolicyResource
    from agentcollect_pipeline.rules.messaging_policy import MessagingPolicy
    from agentcollect_pipeline.rules.policy import PolicyError

    try:
        return CollectionPolicyResource().load().messaging
    except PolicyError as exc:
        log.error("collection policy unreadable (%s); messaging defaults used", exc)
        return MessagingPolicy()
