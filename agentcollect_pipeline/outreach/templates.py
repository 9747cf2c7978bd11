"""Simple per channel/tone templates. The agent issue replaces them with a composer; the contract stays:
every message names the organisation, the balance and the oldest invoice, carries the payment link, and
every email and text carries an opt-out (Reg F §1006.6(e), CTIA), every call an automated-call disclosure.
"""

from dataclasses import dataclass
from datetime import date

from twilio.twiml.voice_response import Gather, VoiceResponse

from agentcollect_pipeline.money import format_money


@dataclass(frozen=True)
class InvoiceLine:
    invoice_id: str
    number: str
    due_date: date | None
    amount_due_cents: int


@dataclass(frozen=True)
class MessageContext:
    org_name: str
    customer_name: str
    currency: str
    invoices: tuple[InvoiceLine, ...]  # oldest due first
    payment_link: str
    unsubscribe_url: str
    reference: str  # short attempt reference, also used to find the message again when reconciling
    gather_url: str | None = None

    @property
    def total(self) -> str:
        return format_money(sum(i.amount_due_cents for i in self.invoices), self.currency)

    @property
    def oldest(self) -> InvoiceLine:
        return self.invoices[0]


@dataclass(frozen=True)
class Message:
    subject: str | None
    text: str
    html: str | None = None


_OPENERS = {
    "friendly": "A friendly reminder",
    "firm": "Our records show a past-due balance",
    "final": "Final notice before we escalate",
}


def _due(line: InvoiceLine) -> str:
    return line.due_date.isoformat() if line.due_date else "no due date"


def render_email(tone: str, ctx: MessageContext) -> Message:
    count = len(ctx.invoices)
    lines = "\n".join(
        f"  - {line.number}: {format_money(line.amount_due_cents, ctx.currency)} (due {_due(line)})"
        for line in ctx.invoices
    )
    subject = f"{ctx.org_name}: {count} invoice{'s' if count > 1 else ''} past due, {ctx.total}"
    text = (
        f"Hello {ctx.customer_name},\n\n{_OPENERS.get(tone, _OPENERS['friendly'])} from {ctx.org_name}: "
        f"{ctx.total} is past due.\n\n{lines}\n\nPay online: {ctx.payment_link}\n\n"
        f"Already paid, or something wrong with an invoice? Just reply to this email.\n\n"
        f"To stop these emails: {ctx.unsubscribe_url}\nRef {ctx.reference}\n"
    )
    html = "<p>" + text.replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p>"
    return Message(subject=subject, text=text, html=html)


def render_sms(tone: str, ctx: MessageContext) -> Message:
    # One or two GSM-7 segments: no curly quotes, no emoji.
    opener = {"friendly": "Reminder", "firm": "Past due", "final": "Final notice"}.get(tone, "Reminder")
    text = (
        f"{ctx.org_name}: {opener} - {ctx.total} past due (invoice {ctx.oldest.number}, due {_due(ctx.oldest)}). "
        f"Pay: {ctx.payment_link} Ref {ctx.reference}. Reply STOP to opt out."
    )
    return Message(subject=None, text=text)


def render_voice(tone: str, ctx: MessageContext) -> Message:
    """TwiML for a person: disclosure, balance and due date, then <Gather> 1 = link by text, 2 = a person."""
    response = VoiceResponse()
    intro = (
        f"Hello. This is an automated call from {ctx.org_name} about your account. "
        f"Your balance of {ctx.total.replace(' ', ' ')} is past due; the oldest invoice, {ctx.oldest.number}, "
        f"was due on {_due(ctx.oldest)}."
    )
    response.say(intro)
    gather = Gather(input="dtmf", num_digits=1, timeout=6, action=ctx.gather_url) if ctx.gather_url else Gather(
        input="dtmf", num_digits=1, timeout=6)
    gather.say("Press 1 to get a payment link by text message. Press 2 to talk to a person.")
    response.append(gather)
    response.say("We did not receive a choice. You can pay online at any time. Goodbye.")
    response.hangup()
    return Message(subject=None, text=str(response))


def render_voicemail(tone: str, ctx: MessageContext) -> Message:
    """The shorter script for an answering machine (no balance details: others may hear a voicemail)."""
    response = VoiceResponse()
    response.say(
        f"Hello, this is an automated message from {ctx.org_name} for {ctx.customer_name} about your account. "
        f"Please call us back or check your email for a payment link. Thank you."
    )
    response.hangup()
    return Message(subject=None, text=str(response))


def render(channel: str, tone: str, ctx: MessageContext) -> Message:
    return {"email": render_email, "sms": render_sms, "voice": render_voice}[channel](tone, ctx)
