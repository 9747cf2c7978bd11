"""One composer for every message outreach sends: email, SMS, call script and voicemail, for every step/tone
(friendly -> firm -> final) and purpose (a reminder, the voicemail of a call, the invoice copy a debtor asked
for, the follow-up of a promise to pay that passed).

By default it renders the Jinja2 templates shipped in `agent/templates/` (sandboxed, StrictUndefined), each
overridable by a file with the same relative path in the policy's `messaging.templates_dir`. When an LLM is
configured (AGENTCOLLECT_LLM_*, see `agent.llm`) and the policy allows it (`messaging.llm`), it asks the model
to write the message from a structured brief holding only this case's facts (no keys, no other customer),
then runs the guardrails (`agent.guardrails`); a draft that fails any check, or an LLM that fails to answer,
is logged with the reason and replaced by the template. Callers record `Draft.source` and `Draft.rejected`.

Template files: `<channel>/<tone>.<part>.j2` for reminders (email: subject, text; sms: text; voice: say),
`voice/<tone>.voicemail.j2` for the answering-machine script, `<channel>/copy.<part>.j2` and
`<channel>/followup.<part>.j2` for a requested copy and a promise follow-up.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from twilio.twiml.voice_response import Gather, VoiceResponse

from agentcollect_pipeline.agent.guardrails import PURPOSES, DraftPolicy, check_draft, sms_segments
from agentcollect_pipeline.agent.llm import ChatClient, LLMConfig, LLMError
from agentcollect_pipeline.agent.message import InvoiceLine, Message, MessageContext
from agentcollect_pipeline.money import format_money

if TYPE_CHECKING:
    from agentcollect_pipeline.rules.messaging_policy import MessagingPolicy

__all__ = ["CHANNELS", "PURPOSES", "TONES", "Composer", "Draft", "DraftPolicy", "draft_policy", "tone_for_step"]

log = logging.getLogger(__name__)

CHANNELS = ("email", "sms", "voice")
TONES = ("friendly", "firm", "final")
PACKAGE_TEMPLATES = Path(__file__).parent / "templates"

SYSTEM_PROMPT = """You write one accounts-receivable reminder for a business, from the JSON brief you are given.
Rules:
- Use only the facts in the brief. Copy amounts, invoice numbers, due dates and links exactly as written there.
- Never mention any other amount, invoice, date or link. No percentages.
- Never offer discounts, waivers, fee removal, settlements, payment plans or reduced amounts.
- Never threaten: no legal action, lawyers, courts, credit bureaus, collection agencies.
- Name the organisation. Keep the tone asked for, polite and factual, even for a final notice.
- email and sms: end with "Ref " followed by the brief's reference, exactly.
- email: include the payment link and the opt-out line exactly as given; answer JSON {"subject": ..., "text": ...}.
- sms: plain GSM characters only, at most the given number of segments, include the payment link and
  "Reply STOP to opt out."; answer JSON {"text": ...}.
- voice: the words spoken at the start of an automated call; start by saying it is an automated call from the
  organisation; no links; answer JSON {"text": ...}.
- purpose "copy": the debtor asked for the invoices; list them with the payment link, do not press for payment.
- purpose "followup": the debtor promised to pay by promised_date and the money has not arrived; say so politely.
- purpose "voicemail": a recorded message others may hear: say it is an automated message from the organisation
  and ask to call back or check email; NO amounts, invoice numbers, dates or links; answer JSON {"text": ...}."""

# Which purposes each channel has: a voicemail is a call's; a copy answers a text or an email.
CHANNEL_PURPOSES = {"email": ("reminder", "copy", "followup"), "sms": ("reminder", "copy", "followup"),
                    "voice": ("reminder", "followup", "voicemail")}


def tone_for_step(step: int) -> str:
    """Cadence step (1-based) -> tone: 1 friendly, 2 firm, 3 and later final."""
    return TONES[min(max(step, 1), len(TONES)) - 1]


@dataclass(frozen=True)
class Draft:
    channel: str
    tone: str
    message: Message
    source: str  # "template" | "llm"
    rejected: tuple[str, ...] = ()  # why an LLM draft was refused (empty when it passed or none was asked)
    problems: tuple[str, ...] = field(default=())  # guardrail findings on the draft actually returned
    purpose: str = "reminder"


def _due(line: InvoiceLine) -> str:
    return line.due_date.isoformat() if line.due_date else "no due date"


def _facts(ctx: MessageContext) -> dict[str, Any]:
    lines = [{"number": line.number, "amount": format_money(line.amount_due_cents, ctx.currency), "due": _due(line)}
             for line in ctx.invoices]
    return {"org_name": ctx.org_name, "customer_name": ctx.customer_name, "currency": ctx.currency,
            "total": ctx.total, "invoices": lines, "oldest": lines[0], "count": len(lines),
            "payment_link": ctx.payment_link, "unsubscribe_url": ctx.unsubscribe_url, "reference": ctx.reference,
            "promised_date": ctx.promised_date.isoformat() if ctx.promised_date else None}


def _html(text: str) -> str:
    return "<p>" + html.escape(text).replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p>"


def draft_policy(messaging: MessagingPolicy | None) -> DraftPolicy:
    """The guardrails' limits from the policy's `messaging:` block (defaults without one)."""
    if messaging is None:
        return DraftPolicy()
    return DraftPolicy(max_sms_segments=messaging.sms_max_segments, allow_discounts=messaging.allow_discounts,
                       allow_waivers=messaging.allow_waivers, allow_settlement_offers=messaging.allow_settlement_offers)


class Composer:
    def __init__(self, *, templates_dir: str | Path | None = None, llm: ChatClient | None = None,
                 policy: DraftPolicy | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir:
            loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
        loaders.append(jinja2.FileSystemLoader(str(PACKAGE_TEMPLATES)))
        self._env = SandboxedEnvironment(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                                         autoescape=False, keep_trailing_newline=False)
        self.llm = llm
        self.policy = policy or DraftPolicy()

    @classmethod
    def from_policy(cls, messaging: MessagingPolicy | None = None, environ: dict[str, str] | None = None) -> Composer:
        """Templates (and the override folder) and limits from the policy; the LLM from AGENTCOLLECT_LLM_*
        when configured and the policy does not turn it off (`messaging.llm: false`)."""
        config = LLMConfig.from_env(environ) if messaging is None or messaging.use_llm else None
        return cls(templates_dir=messaging.templates_dir if messaging else None,
                   llm=ChatClient(config) if config else None, policy=draft_policy(messaging))

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()

    # ---- templates ------------------------------------------------------------------------------------
    def _render(self, name: str, facts: dict[str, Any]) -> str:
        return self._env.get_template(name).render(**facts).strip()

    def template(self, channel: str, tone: str, ctx: MessageContext, purpose: str = "reminder") -> Message:
        self._validate(channel, tone, purpose)
        facts = {**_facts(ctx), "tone": tone, "step": TONES.index(tone) + 1, "purpose": purpose}
        stem = tone if purpose == "reminder" else purpose
        if purpose == "voicemail":
            return Message(subject=None, text=self._voicemail(self._render(f"voice/{tone}.voicemail.j2", facts)))
        if channel == "email":
            text = self._render(f"email/{stem}.text.j2", facts) + "\n"
            return Message(subject=self._render(f"email/{stem}.subject.j2", facts), text=text, html=_html(text))
        if channel == "sms":
            return Message(subject=None, text=self._render(f"sms/{stem}.text.j2", facts))
        return Message(subject=None, text=self._twiml(self._render(f"voice/{stem}.say.j2", facts), ctx))

    @staticmethod
    def _voicemail(spoken: str) -> str:
        response = VoiceResponse()
        response.say(spoken)
        response.hangup()
        return str(response)

    @staticmethod
    def _twiml(spoken: str, ctx: MessageContext) -> str:
        response = VoiceResponse()
        response.say(spoken)
        options: dict[str, Any] = {"input": "dtmf", "num_digits": 1, "timeout": 6}
        if ctx.gather_url:
            options["action"] = ctx.gather_url
        gather = Gather(**options)
        gather.say("Press 1 to get a payment link by text message. Press 2 to talk to a person.")
        response.append(gather)
        response.say("We did not receive a choice. You can pay online at any time. Goodbye.")
        response.hangup()
        return str(response)

    # ---- LLM ------------------------------------------------------------------------------------------
    def brief(self, channel: str, tone: str, ctx: MessageContext, purpose: str = "reminder") -> dict[str, Any]:
        """Everything the model sees: this case's facts and the limits, nothing else (a voicemail brief not
        even the amounts: the recording may be heard by anyone)."""
        facts = _facts(ctx)
        if purpose == "voicemail":
            return {"channel": channel, "purpose": purpose, "tone": tone, "organisation": facts["org_name"],
                    "customer": facts["customer_name"]}
        brief: dict[str, Any] = {
            "channel": channel, "tone": tone, "step": TONES.index(tone) + 1,
            "organisation": facts["org_name"], "customer": facts["customer_name"], "currency": ctx.currency,
            "total_due": facts["total"],
            "invoices": [{"number": i["number"], "amount_due": i["amount"], "due_date": i["due"]} for i in facts["invoices"]],
            "reference": ctx.reference,
        }
        if channel == "email":
            brief["payment_link"] = ctx.payment_link
            brief["opt_out_line"] = f"To stop these emails: {ctx.unsubscribe_url}"
        elif channel == "sms":
            brief["payment_link"] = ctx.payment_link
            brief["opt_out_line"] = "Reply STOP to opt out."
            brief["max_sms_segments"] = self.policy.max_sms_segments
        if purpose != "reminder":
            brief["purpose"] = purpose
        if purpose == "followup" and ctx.promised_date is not None:
            brief["promised_date"] = ctx.promised_date.isoformat()
        return brief

    def _ask(self, channel: str, tone: str, ctx: MessageContext, purpose: str) -> tuple[str | None, str]:
        assert self.llm is not None
        content = self.llm.complete(
            [{"role": "system", "content": SYSTEM_PROMPT},
             {"role": "user", "content": json.dumps(self.brief(channel, tone, ctx, purpose), ensure_ascii=False)}],
            json_schema={"name": "draft", "strict": True, "schema": {
                "type": "object", "additionalProperties": False, "required": ["subject", "text"],
                "properties": {"subject": {"type": ["string", "null"]}, "text": {"type": "string"}}}})
        try:
            answer = json.loads(content)
        except ValueError:
            return None, content.strip()  # servers without json_schema support answer plain text
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise LLMError("answer has no text")
        subject = answer.get("subject")
        return (subject.strip() if isinstance(subject, str) and subject.strip() else None), answer["text"].strip()

    def compose(self, channel: str, tone: str, ctx: MessageContext, purpose: str = "reminder") -> Draft:
        """The message to send: the LLM's if configured and it passes every guardrail, else the template's."""
        self._validate(channel, tone, purpose)
        rejected: tuple[str, ...] = ()
        if self.llm is not None:
            try:
                subject, text = self._ask(channel, tone, ctx, purpose)
            except LLMError as exc:
                rejected = (f"llm unavailable: {exc}",)
            else:
                fallback_subject = self.template(channel, tone, ctx, purpose).subject if channel == "email" else None
                subject = subject or fallback_subject
                reasons = check_draft(channel, subject, text, ctx, self.policy, purpose)
                if not reasons:
                    return Draft(channel, tone, self._message(channel, subject, text, ctx, purpose), "llm",
                                 purpose=purpose)
                rejected = tuple(reasons)
            # Reasons name facts of this case only; never the key, never the whole draft.
            log.warning("LLM %s %s draft (%s, ref %s) replaced by the template: %s", channel, purpose, tone,
                        ctx.reference, "; ".join(rejected))
        message = self.template(channel, tone, ctx, purpose)
        problems = self._check_template(channel, message, ctx, purpose)
        return Draft(channel, tone, message, "template", rejected, problems, purpose)

    def _message(self, channel: str, subject: str | None, text: str, ctx: MessageContext, purpose: str) -> Message:
        if purpose == "voicemail":
            return Message(subject=None, text=self._voicemail(text))
        if channel == "email":
            body = text + "\n"
            return Message(subject=subject, text=body, html=_html(body))
        if channel == "sms":
            return Message(subject=None, text=text)
        return Message(subject=None, text=self._twiml(text, ctx))

    def _check_template(self, channel: str, message: Message, ctx: MessageContext, purpose: str) -> tuple[str, ...]:
        if channel == "voice":
            return ()  # TwiML: the spoken part was rendered from the case's facts
        problems = tuple(check_draft(channel, message.subject, message.text, ctx, self.policy, purpose))
        if problems:
            log.error("template %s %s draft (ref %s) fails the guardrails: %s", channel, purpose, ctx.reference,
                      "; ".join(problems))
        return problems

    @staticmethod
    def _validate(channel: str, tone: str, purpose: str = "reminder") -> None:
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
        if tone not in TONES:
            raise ValueError(f"unknown tone {tone!r}; expected one of {TONES}")
        if purpose not in CHANNEL_PURPOSES[channel]:
            raise ValueError(f"no {purpose!r} message on {channel}; expected one of {CHANNEL_PURPOSES[channel]}")


__all__ += ["sms_segments"]
