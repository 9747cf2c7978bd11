"""Email replies as SendGrid Inbound Parse posts them, reduced to what the reply classifier needs.

Inbound Parse (default, non-raw mode; outreach-channels.md §2.4) POSTs `multipart/form-data` with the
fields `headers` (the raw header block), `text`, `html`, `from`, `to`, `cc`, `subject`, `envelope` (JSON
`{"to": [...], "from": "..."}`), `charsets`, `dkim`, `SPF`, `sender_ip`, `spam_score`, `spam_report`,
`attachments` (count), `attachment-info` and files `attachment1…`. Pure functions, no I/O:

- `form_fields(content_type, body)`: the text fields (files are skipped);
- `InboundEmail.from_fields(fields)`: sender, recipients (To, Cc and the envelope), subject, Message-ID, the
  reply text (the `text` part, else the `html` part as text) with quoted history stripped;
- `reply_address(base, attempt_id)` / `attempt_from_addresses(...)`: our emails carry
  `Reply-To: replies+<attempt_id>@parse.example.com`, so the reply's recipient names the attempt it answers;
- `strip_quoted(text)`: drops the quoted earlier message ("> …", "On … wrote:", Outlook's "From: … Sent:",
  "-----Original Message-----", the same in es/fr/de/pt, signatures after "-- "). Our own footer
  ("To stop these emails: …") is in that history and must never be read as the debtor's opt-out.
"""

from __future__ import annotations

import email
import email.policy
import html
import json
import re
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr

__all__ = ["InboundEmail", "attempt_from_addresses", "form_fields", "reply_address", "strip_quoted"]

ATTEMPT_TAG = re.compile(r"\+(att_[0-9a-f]{20})@", re.IGNORECASE)
_MESSAGE_ID = re.compile(r"^message-id:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
_ATTRIBUTION = re.compile(
    r"^\s*(?:on\b.{0,200}\bwrote|le\b.{0,200}\ba\s+[ée]crit|am\b.{0,200}\bschrieb\b.{0,200}|el\b.{0,200}\bescribi[óo]"
    r"|em\b.{0,200}\bescreveu)\s*:\s*$",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r"^\s*(?:-{2,}\s*(?:original message|mensaje original|message d'origine|urspr[üu]ngliche "
                        r"nachricht|mensagem original)\s*-{2,}|_{10,}|-{10,})\s*$", re.IGNORECASE)
_HEADER_START = re.compile(r"^\s*\*?(?:from|de|von)\s*:\*?\s", re.IGNORECASE)
_HEADER_NEXT = re.compile(r"^\s*\*?(?:sent|date|to|subject|envoy[ée]|gesendet|enviado|fecha|para|an|betreff|objet"
                          r"|asunto|assunto)\s*:", re.IGNORECASE)


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body (uploaded files are skipped). Raises ValueError when the
    body is not multipart/form-data."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type.lower():
        raise ValueError("expected multipart/form-data with a boundary")
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body,
        policy=email.policy.HTTP,
    )
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or part.get_filename():
            continue
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            fields[str(name)] = payload.decode(charset, "replace")
        except LookupError:
            fields[str(name)] = payload.decode("utf-8", "replace")
    return fields


def reply_address(base: str, attempt_id: str) -> str:
    """replies@parse.example.com + att_… -> replies+att_…@parse.example.com (plus addressing)."""
    local, at, domain = base.strip().rpartition("@")
    if not at or not local:
        raise ValueError(f"not an email address: {base!r}")
    return f"{local.split('+', 1)[0]}+{attempt_id}@{domain}"


def attempt_from_addresses(addresses: list[str]) -> str | None:
    for address in addresses:
        if match := ATTEMPT_TAG.search(address):
            return match.group(1).lower()
    return None


def _html_text(markup: str) -> str:
    markup = re.sub(r"(?is)<(blockquote|style|script|head)\b.*?</\1>", " ", markup)
    markup = re.sub(r'(?is)<div[^>]*class="[^"]*(?:gmail_quote|moz-cite-prefix)[^"]*".*', " ", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", markup)
    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


def strip_quoted(text: str) -> str:
    """The new part of a reply: everything before the quoted history and the signature."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        if line.rstrip() == "--" and line.startswith("--"):
            break  # "-- " signature separator
        if _SEPARATOR.match(line):
            break
        # "On Tue, 25 Nov 2026 at 10:00, Acme AR <ar@acme.example>\nwrote:" may wrap over two lines.
        if _ATTRIBUTION.match(line) or (index + 1 < len(lines) and _ATTRIBUTION.match(f"{line} {lines[index + 1]}")
                                        and re.match(r"^\s*(?:on|le|am|el|em)\b", line, re.IGNORECASE)):
            break
        if _HEADER_START.match(line) and any(_HEADER_NEXT.match(nxt) for nxt in lines[index + 1:index + 5]):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


@dataclass(frozen=True)
class InboundEmail:
    sender: str  # the address, lower-case
    recipients: tuple[str, ...]  # To, Cc and the envelope's, as given
    subject: str
    message_id: str | None
    text: str  # the new part of the reply (quoted history stripped)

    @property
    def attempt_id(self) -> str | None:
        return attempt_from_addresses(list(self.recipients))

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> InboundEmail:
        envelope: dict = {}
        try:
            parsed = json.loads(fields.get("envelope") or "{}")
            envelope = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            envelope = {}
        sender = parseaddr(fields.get("from", ""))[1] or str(envelope.get("from") or "")
        recipients = [addr for _, addr in getaddresses([fields.get("to", ""), fields.get("cc", "")]) if addr]
        recipients += [str(a) for a in envelope.get("to") or [] if isinstance(a, str)]
        match = _MESSAGE_ID.search(fields.get("headers", ""))
        body = fields.get("text") or _html_text(fields.get("html", ""))
        return cls(sender=sender.strip().lower(), recipients=tuple(recipients), subject=fields.get("subject", ""),
                   message_id=match.group(1) if match else None, text=strip_quoted(body))
