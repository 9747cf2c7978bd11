"""One composer for every channel (email, SMS, voice) and step/tone (friendly -> firm -> final).

By default it renders the Jinja2 templates shipped in `agent/templates/` (sandboxed, StrictUndefined), each
overridable by a file with the same relative path in a folder (`templates_dir` or
AGENTCOLLECT_TEMPLATES_DIR). When an LLM is configured (see `agent.llm`), it asks the model to write the
message from a structured brief holding only this case's facts (no keys, no other customer), then runs the
guardrails (`agent.guardrails`); a draft that fails any check, or an LLM that fails to answer, is logged with
the reason and replaced by the template. The result keeps outreach's `Message` contract.
"""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from twilio.twiml.voice_response import Gather, VoiceResponse

from agentcollect_pipeline.agent.guardrails import DraftPolicy, check_draft, sms_segments
from agentcollect_pipeline.agent.llm import ChatClient, LLMConfig, LLMError
from agentcollect_pipeline.money import format_money
from agentcollect_pipeline.outreach.templates import InvoiceLine, Message, MessageContext

__all__ = ["CHANNELS", "TONES", "Composer", "Draft", "DraftPolicy", "tone_for_step"]

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
- email: include the payment link and the opt-out line exactly as given; answer JSON {"subject": ..., "text": ...}.
- sms: plain GSM characters only, at most the given number of segments, include the payment link and
  "Reply STOP to opt out."; answer JSON {"text": ...}.
- voice: the words spoken at the start of an automated call; start by saying it is an automated call from the
  organisation; no links; answer JSON {"text": ...}."""


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


def _due(line: InvoiceLine) -> str:
    return line.due_date.isoformat() if line.due_date else "no due date"


def _facts(ctx: MessageContext) -> dict[str, Any]:
    lines = [{"number": line.number, "amount": format_money(line.amount_due_cents, ctx.currency), "due": _due(line)}
             for line in ctx.invoices]
    return {"org_name": ctx.org_name, "customer_name": ctx.customer_name, "currency": ctx.currency,
            "total": ctx.total, "invoices": lines, "oldest": lines[0], "count": len(lines),
            "payment_link": ctx.payment_link, "unsubscribe_url": ctx.unsubscribe_url, "reference": ctx.reference}


def _html(text: str) -> str:
    return "<p>" + html.escape(text).replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p>"


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
    def from_env(cls, policy: DraftPolicy | None = None) -> Composer:
        config = LLMConfig.from_env()
        return cls(templates_dir=os.environ.get("AGENTCOLLECT_TEMPLATES_DIR") or None,
                   llm=ChatClient(config) if config else None, policy=policy)

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()

    # ---- templates ------------------------------------------------------------------------------------
    def _render(self, name: str, facts: dict[str, Any]) -> str:
        return self._env.get_template(name).render(**facts).strip()

    def template(self, channel: str, tone: str, ctx: MessageContext) -> Message:
        self._validate(channel, tone)
        facts = {**_facts(ctx), "tone": tone, "step": TONES.index(tone) + 1}
        if channel == "email":
            text = self._render(f"email/{tone}.text.j2", facts) + "\n"
            return Message(subject=self._render(f"email/{tone}.subject.j2", facts), text=text, html=_html(text))
        if channel == "sms":
            return Message(subject=None, text=self._render(f"sms/{tone}.text.j2", facts))
        return Message(subject=None, text=self._twiml(self._render(f"voice/{tone}.say.j2", facts), ctx))

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
    def brief(self, channel: str, tone: str, ctx: MessageContext) -> dict[str, Any]:
        """Everything the model sees: this case's facts and the limits, nothing else."""
        facts = _facts(ctx)
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
        return brief

    def _ask(self, channel: str, tone: str, ctx: MessageContext) -> tuple[str | None, str]:
        assert self.llm is not None
        content = self.llm.complete(
            [{"role": "system", "content": SYSTEM_PROMPT},
             {"role": "user", "content": json.dumps(self.brief(channel, tone, ctx), ensure_ascii=False)}],
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

    def compose(self, channel: str, tone: str, ctx: MessageContext) -> Draft:
        """The message to send: the LLM's if configured and it passes every guardrail, else the template's."""
        self._validate(channel, tone)
        rejected: tuple[str, ...] = ()
        if self.llm is not None:
            try:
                subject, text = self._ask(channel, tone, ctx)
            except LLMError as exc:
                rejected = (f"llm unavailable: {exc}",)
            else:
                fallback_subject = self.template(channel, tone, ctx).subject if channel == "email" else None
                subject = subject or fallback_subject
                reasons = check_draft(channel, subject, text, ctx, self.policy)
                if not reasons:
                    if channel == "email":
                        body = text + "\n"
                        return Draft(channel, tone, Message(subject=subject, text=body, html=_html(body)), "llm")
                    if channel == "sms":
                        return Draft(channel, tone, Message(subject=None, text=text), "llm")
                    return Draft(channel, tone, Message(subject=None, text=self._twiml(text, ctx)), "llm")
                rejected = tuple(reasons)
            # Reasons name facts of this case only; never the key, never the whole draft.
            log.warning("LLM %s draft (%s, ref %s) replaced by the template: %s", channel, tone, ctx.reference,
                        "; ".join(rejected))
        message = self.template(channel, tone, ctx)
        problems = self._check_template(channel, message, ctx)
        return Draft(channel, tone, message, "template", rejected, problems)

    def _check_template(self, channel: str, message: Message, ctx: MessageContext) -> tuple[str, ...]:
        if channel == "voice":
            return ()  # TwiML: the spoken part was rendered from the case's facts
        problems = tuple(check_draft(channel, message.subject, message.text, ctx, self.policy))
        if problems:
            log.error("template %s draft (ref %s) fails the guardrails: %s", channel, ctx.reference, "; ".join(problems))
        return problems

    @staticmethod
    def _validate(channel: str, tone: str) -> None:
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
        if tone not in TONES:
            raise ValueError(f"unknown tone {tone!r}; expected one of {TONES}")


__all__ += ["sms_segments"]
