"""What a message is about (`MessageContext`: one case's facts) and what it is (`Message`).

The contract every outgoing message keeps, whoever drafts it (template or LLM, see agent/composer.py): it
names the organisation, the balance and the oldest invoice, carries the payment link, every email and text
carries an opt-out (Reg F §1006.6(e), CTIA), every call an automated-call disclosure. The guardrails
(agent/guardrails.py) check exactly these facts.
"""

from dataclasses import dataclass
from datetime import date

from agentcollect_pipeline.money import format_money

__all__ = ["InvoiceLine", "Message", "MessageContext"]


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
    reference: str  # short attempt reference ("Ref …"), also how a text is found again when reconciling
    gather_url: str | None = None
    promised_date: date | None = None  # a promise-to-pay follow-up names the date the debtor gave

    @property
    def total(self) -> str:
        return format_money(sum(i.amount_due_cents for i in self.invoices), self.currency)

    @property
    def oldest(self) -> InvoiceLine:
        return self.invoices[0]


@dataclass(frozen=True)
class Message:
    subject: str | None
    text: str  # plain text; TwiML for calls
    html: str | None = None
