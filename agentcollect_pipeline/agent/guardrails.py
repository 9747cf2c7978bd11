"""Checks every draft (LLM or template) must pass before it can reach a customer.

`check_draft(channel, subject, text, ctx, policy)` returns the list of reasons a draft is refused (empty:
it passes). The rules (issue 7):
- every amount, invoice number, due date and link in the draft belongs to this case, and the total, the
  oldest invoice number and the payment link are there (email/SMS; voice speaks no link);
- nothing the policy does not allow: discounts or percentages, waivers, settlement offers or payment plans,
  legal threats (lawsuit, attorney, credit bureau, collection agency, arrest...);
- SMS fits in `max_sms_segments` (GSM-7: 160 septets single / 153 per part; UCS-2: 70 / 67 code units);
- opt-out: the unsubscribe link in email, "Reply STOP" in SMS; voice opens with the automated-call disclosure;
- the organisation is named; email and SMS carry "Ref <reference>" (replies and reconciliation find them by it).
Purposes: `reminder` and `copy` (the invoices and link a debtor asked for) as above; `followup` (a promise to
pay that passed) may also name the promised date; `voicemail` is a limited-content message (others may hear
a recording): the disclosure and the organisation, and no amount, invoice number, date or link at all.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from agentcollect_pipeline.agent.message import MessageContext
from agentcollect_pipeline.money import MINOR_UNIT_EXPONENT, MoneyError, to_minor_units

__all__ = ["PURPOSES", "DraftPolicy", "check_draft", "sms_segments"]


@dataclass(frozen=True)
class DraftPolicy:
    max_sms_segments: int = 2
    allow_discounts: bool = False
    allow_waivers: bool = False
    allow_settlement_offers: bool = False
    allow_legal_mentions: bool = False
    max_email_chars: int = 6000


# ---- SMS segment math ------------------------------------------------------------------------------
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


def sms_segments(text: str) -> tuple[str, int]:
    """(encoding, segments) as carriers count them: GSM-7 when every character is in the GSM 03.38 basic
    or extension table (extension characters take two septets), otherwise UCS-2 (UTF-16 code units)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        units = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        single, part = 160, 153
        encoding = "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part = 70, 67
        encoding = "UCS-2"
    if units == 0:
        return encoding, 0
    return encoding, 1 if units <= single else math.ceil(units / part)


# ---- fact extraction -------------------------------------------------------------------------------
_CODES = "|".join(sorted(MINOR_UNIT_EXPONENT))
_SYMBOLS = {"$": "DOLLAR", "€": "EUR", "£": "GBP", "¥": "JPY"}
_CURRENCY_WORDS = {"DOLLAR": ("USD", "CAD", "AUD", "NZD", "SGD", "HKD"), "EURO": ("EUR",), "POUND": ("GBP",)}
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_AMOUNT = re.compile(
    rf"(?P<sym>[$€£¥])\s?(?P<a>{_NUMBER})"
    rf"|(?P<pre>\b(?:{_CODES}))\s?(?P<b>{_NUMBER})"
    rf"|(?P<c>{_NUMBER})\s?(?P<post>(?:{_CODES})\b|dollars?\b|euros?\b|pounds?\b)"
    rf"|(?P<d>\b\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\b\d+\.\d{{2}})\b"
)
_PERCENT = re.compile(r"\d+(?:[.,]\d+)?\s?(?:%|percent\b|per\s+cent\b)")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+")
_INVOICE_REF = re.compile(r"\b(?:inv(?:oice)?s?\.?\s*(?:no\.?|number|num|#)?\s*[:#]?\s*)(?P<n>[A-Za-z0-9][\w/-]*\d[\w/-]*)", re.I)
_INVOICE_SHAPE = re.compile(r"\b[A-Z]{2,6}-\d{3,}\b")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_MONTH_RE = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATES = re.compile(
    rf"\b(?P<iso>20\d\d-\d\d-\d\d)\b"
    rf"|\b(?P<m1>{_MONTH_RE})\s+(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(?P<y1>20\d\d))?\b"
    rf"|\b(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m2>{_MONTH_RE})(?:,?\s+(?P<y2>20\d\d))?\b"
    rf"|\b(?P<sm>\d{{1,2}})/(?P<sd>\d{{1,2}})(?:/(?P<sy>\d{{2,4}}))?\b",
    re.I,
)
DISCOUNT = re.compile(r"\bdiscount\w*|\b\d+\s?%\s?off\b|\bcoupon\b|\bpromo(?:tion(?:al)?)?\b|\breduc(?:e|ed|tion)\s+(?:your|the)\s+(?:balance|amount|price|bill)|\bcheaper\b|\blower\s+(?:amount|price|balance)", re.I)
WAIVER = re.compile(r"\bwaiv\w*|\bforgiv\w*|\bwrite[\s-]?off\b|\bwritten\s+off\b|\bcancel\w*\s+(?:the|your|any)\s+(?:late\s+)?(?:fees?|balance|debt|interest)|\bno\s+late\s+fees?\b|\bfee[\s-]free\b", re.I)
SETTLEMENT = re.compile(r"\bsettle(?:ment)?\s+(?:for|offer|at|the\s+account\s+for)\b|\bsettlement\b|\baccept\s+(?:a\s+)?(?:lower|partial|reduced|smaller)|\bpayment\s+plan\b|\binstal?l?ments?\b|\bpay\s+(?:only|just)\b|\bhalf\s+(?:the|of\s+the)\s+(?:balance|amount)", re.I)
LEGAL = re.compile(r"\blegal\s+(?:action|proceedings?|steps|measures)\b|\blaw\s*suit\b|\bsue\b|\bsued\b|\bsuing\b|\battorneys?\b|\blawyers?\b|\bcourt\b|\bjudge?ments?\b|\bgarnish\w*|\barrest\w*|\bpolice\b|\bjail\b|\bprosecut\w*|\bcredit\s+(?:bureaus?|reports?|score|rating)|\bcollections?\s+agency\b|\bdebt\s+collectors?\b|\bor\s+else\b|\bseiz\w*|\blien\b", re.I)


def _minor(raw: str, currency: str) -> int | None:
    try:
        return to_minor_units(Decimal(raw.replace(",", "")), currency)
    except (InvalidOperation, MoneyError):
        return None


def _case_dates(ctx: MessageContext, purpose: str = "reminder") -> set[date]:
    dates = {line.due_date for line in ctx.invoices if line.due_date is not None}
    if purpose == "followup" and ctx.promised_date is not None:
        dates.add(ctx.promised_date)
    return dates


def _date_ok(m: re.Match[str], dues: set[date]) -> bool:
    try:
        if m["iso"]:
            return date.fromisoformat(m["iso"]) in dues
        if m["m1"] or m["m2"]:
            name = (m["m1"] or m["m2"]).lower().rstrip(".")
            month = next(i for i, full in enumerate(_MONTHS, 1) if full.startswith(name[:3]))
            day, year = int(m["d1"] or m["d2"]), m["y1"] or m["y2"]
        else:
            month, day, year = int(m["sm"]), int(m["sd"]), m["sy"]
            if year and len(year) == 2:
                year = "20" + year
        return any(d.month == month and d.day == day and (not year or d.year == int(year)) for d in dues)
    except (ValueError, StopIteration):
        return False


PURPOSES = ("reminder", "copy", "followup", "voicemail")


def check_draft(channel: str, subject: str | None, text: str, ctx: MessageContext,
                policy: DraftPolicy | None = None, purpose: str = "reminder") -> list[str]:
    """Reasons this draft must not be sent (empty list: it may be sent)."""
    policy = policy or DraftPolicy()
    reasons: list[str] = []
    full = f"{subject}\n{text}" if subject else text
    if not text or not text.strip():
        return ["empty draft"]
    if purpose == "voicemail":
        return _check_voicemail(text, ctx, policy)

    # Links first (they may contain digits), then known tokens are masked before amounts/dates are read.
    allowed_links = {ctx.payment_link, ctx.unsubscribe_url}
    for url in _URL.findall(full):
        cleaned = url.rstrip(".,;:!?")
        if cleaned not in allowed_links:
            reasons.append(f"link not in case: {cleaned}")
    masked = _URL.sub(" ", full)
    for token in sorted({line.number for line in ctx.invoices} | {ctx.reference}, key=len, reverse=True):
        masked = masked.replace(token, " ")
    if ctx.org_name:
        masked = masked.replace(ctx.org_name, " ")

    for m in _INVOICE_REF.finditer(masked):
        reasons.append(f"invoice number not in case: {m['n']}")
    for m in _INVOICE_SHAPE.finditer(masked):
        reasons.append(f"invoice number not in case: {m.group(0)}")

    dues = _case_dates(ctx, purpose)
    for m in _DATES.finditer(masked):
        if not _date_ok(m, dues):
            reasons.append(f"date not a due date of the case: {m.group(0)}")
    masked = _DATES.sub(" ", masked)

    if _PERCENT.search(masked) and not policy.allow_discounts:
        reasons.append(f"percentage (discount/fee) not allowed: {_PERCENT.search(masked).group(0)}")
    masked = _PERCENT.sub(" ", masked)
    allowed_amounts = {sum(line.amount_due_cents for line in ctx.invoices)} | {line.amount_due_cents for line in ctx.invoices}
    seen: set[int] = set()
    for m in _AMOUNT.finditer(masked):
        raw = m["a"] or m["b"] or m["c"] or m["d"]
        code = _SYMBOLS.get(m["sym"] or "") or (m["pre"] or m["post"] or "").upper()
        if code in MINOR_UNIT_EXPONENT and code != ctx.currency:
            reasons.append(f"amount in another currency: {m.group(0).strip()}")
            continue
        word = code.rstrip("S")
        if word in _CURRENCY_WORDS and ctx.currency not in _CURRENCY_WORDS[word]:
            reasons.append(f"amount in another currency: {m.group(0).strip()}")
            continue
        minor = _minor(raw, ctx.currency)
        if minor is None or minor not in allowed_amounts:
            reasons.append(f"amount not in case: {m.group(0).strip()}")
        else:
            seen.add(minor)

    total = sum(line.amount_due_cents for line in ctx.invoices)
    if total not in seen:
        reasons.append("total balance missing")
    numbers = [line.number for line in ctx.invoices] if channel == "email" else [ctx.oldest.number]
    for number in numbers:
        if number not in full:
            reasons.append(f"invoice number missing: {number}")
    if ctx.org_name and ctx.org_name not in full:
        reasons.append("organisation not named")
    if channel in ("email", "sms") and ctx.payment_link not in full:
        reasons.append("payment link missing")
    if channel in ("email", "sms") and ctx.reference and not re.search(rf"\bRef\W{{0,3}}{re.escape(ctx.reference)}\b", full):
        reasons.append(f"reference missing (Ref {ctx.reference}: how replies and reconciliation find the message)")

    reasons += _promises(full, policy)

    if channel == "email":
        if ctx.unsubscribe_url not in text:
            reasons.append("opt-out (unsubscribe link) missing")
        if len(text) > policy.max_email_chars:
            reasons.append(f"email longer than {policy.max_email_chars} characters")
    elif channel == "sms":
        if not re.search(r"\bSTOP\b", text):
            reasons.append("opt-out (Reply STOP) missing")
        encoding, segments = sms_segments(text)
        if segments > policy.max_sms_segments:
            reasons.append(f"SMS is {segments} {encoding} segments (max {policy.max_sms_segments})")
    elif channel == "voice" and "automated" not in text.lower():
        reasons.append("automated-call disclosure missing")
    return reasons


def _promises(full: str, policy: DraftPolicy) -> list[str]:
    reasons = []
    for allowed, pattern, label in ((policy.allow_discounts, DISCOUNT, "discount"),
                                    (policy.allow_waivers, WAIVER, "waiver"),
                                    (policy.allow_settlement_offers, SETTLEMENT, "settlement/payment-plan offer"),
                                    (policy.allow_legal_mentions, LEGAL, "legal threat")):
        found = pattern.search(full)
        if found and not allowed:
            reasons.append(f"{label} not allowed by policy: {found.group(0)!r}")
    return reasons


def _check_voicemail(text: str, ctx: MessageContext, policy: DraftPolicy) -> list[str]:
    """A recording may be heard by anyone: no balance, invoice, date or link; disclosure and organisation."""
    reasons: list[str] = []
    masked = text.replace(ctx.org_name, " ") if ctx.org_name else text
    if _URL.search(masked):
        reasons.append("voicemail carries a link")
    if any(line.number in text for line in ctx.invoices) or _INVOICE_REF.search(masked) or _INVOICE_SHAPE.search(masked):
        reasons.append("voicemail names an invoice")
    if _DATES.search(masked):
        reasons.append("voicemail names a date")
    if _AMOUNT.search(masked) or _PERCENT.search(masked):
        reasons.append("voicemail names an amount")
    if ctx.org_name and ctx.org_name not in text:
        reasons.append("organisation not named")
    if "automated" not in text.lower():
        reasons.append("automated-call disclosure missing")
    return reasons + _promises(text, policy)
