"""Environment variables the project reads, with their defaults. Secrets are bound with dg.EnvVar only."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

# name -> (secret?, default, meaning). The README's table is generated from the same facts.
ENVIRONMENT: dict[str, tuple[bool, str | None, str]] = {
    "BILLCOM_BASE_URL": (False, None, "Bill.com v2 base URL, e.g. https://api.bill.com/api/v2 (stage: https://api-stage.bill.com/api/v2)"),
    "BILLCOM_USERNAME": (True, None, "Bill.com API user name"),
    "BILLCOM_PASSWORD": (True, None, "Bill.com API user password"),
    "BILLCOM_ORG_ID": (True, None, "Bill.com organisation id (starts with 008)"),
    "BILLCOM_DEV_KEY": (True, None, "Bill.com developer key"),
    "QBO_BASE_URL": (False, "https://quickbooks.api.intuit.com", "QuickBooks Online API host (sandbox companies: https://sandbox-quickbooks.api.intuit.com)"),
    "QBO_TOKEN_URL": (False, "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer", "Intuit OAuth 2.0 token endpoint"),
    "QBO_CLIENT_ID": (True, None, "QuickBooks app client id"),
    "QBO_CLIENT_SECRET": (True, None, "QuickBooks app client secret"),
    "QBO_REALM_ID": (False, None, "QuickBooks company id (realmId)"),
    "QBO_REFRESH_TOKEN": (True, None, "bootstrap refresh token from the connect flow; seeds the encrypted token store once, which then keeps the rotated token"),
    "AGENTCOLLECT_TOKEN_ENCRYPTION_KEY": (True, None, "Fernet key encrypting stored OAuth refresh tokens (comma-separated to rotate keys); QuickBooks refuses to run without it"),
    "BILLCOM_V3_BASE_URL": (False, None, "Bill.com v3 base URL for invoice payment links, e.g. https://gateway.prod.bill.com/connect (stage: https://gateway.stage.bill.com/connect); unset = AGENTCOLLECT_PAYMENT_LINK_TEMPLATE"),
    "AGENTCOLLECT_DATABASE_URL": (True, None, "project database; default sqlite file under AGENTCOLLECT_HOME; PostgreSQL as postgresql+psycopg2://user:pw@host/db"),
    "AGENTCOLLECT_HOME": (False, ".agentcollect", "folder of the default SQLite database"),
    "AGENTCOLLECT_AR_SOURCE": (False, "billcom", "the AR source of truth: billcom, qbo or netsuite (synced assets, payments and notes all use it)"),
    "AGENTCOLLECT_BILLCOM_SYNCS_AR_TO": (False, "none", "none, qbo or netsuite: the accounting system Bill.com's own AR sync writes payments into; that system cannot also be the AR source (payments would be recorded twice)"),
    "AGENTCOLLECT_ORG_CURRENCY": (False, "USD", "currency of invoices whose customer names none (v2 invoices carry no currency)"),
    "AGENTCOLLECT_ORG_TIMEZONE": (False, "America/New_York", "the organisation's timezone: decides 'today' for overdue"),
    "AGENTCOLLECT_SYNC_OVERLAP_SECONDS": (False, "120", "incremental reads re-read this many seconds before the high-water mark"),
    "AGENTCOLLECT_MAX_INVALID_SHARE": (False, "0.05", "asset checks fail when a larger share of synced records is invalid"),
    "AGENTCOLLECT_SCHEDULE_TIMEZONE": (False, "UTC", "timezone of the 4-hour collection_cycle schedule"),
    "AGENTCOLLECT_ALERT_WEBHOOK_URL": (True, None, "Slack-compatible incoming webhook for failed runs and checks; unset = log only"),
    "AGENTCOLLECT_POLICY_PATH": (False, None, "collection policy YAML; default collection_policy.yaml (working directory, else repository root)"),
    "AGENTCOLLECT_PAYMENT_WEBHOOK_SECRET": (True, None, "HMAC-SHA256 key of POST /webhooks/payments signatures; the receiver refuses to start without it"),
    "AGENTCOLLECT_PAYMENT_SENSOR_INTERVAL_SECONDS": (False, "15", "minimum seconds between payment_events_sensor ticks"),
    "AGENTCOLLECT_PAYMENT_BATCH_SIZE": (False, "50", "payment events per post_payment run"),
    "AGENTCOLLECT_PAYMENT_RETRY_AFTER_MINUTES": (False, "5", "re-request an event still unposted this long after its last run request"),
    "AGENTCOLLECT_PAYMENT_MAX_ATTEMPTS": (False, "4", "run requests per payment event before it is listed as posting_failed"),
    "AGENTCOLLECT_PAYMENT_MATCH_WINDOW_DAYS": (False, "7", "a payment already in Bill.com (same invoice and amount) within this many days counts as already recorded"),
    "AGENTCOLLECT_PAYMENT_RESERVATION_LEASE_SECONDS": (False, "600", "a posting reservation older than this may be taken over; must outlast any Bill.com call"),
    "BILLCOM_WEBHOOK_SECURITY_KEY": (True, None, "securityKey of the Bill.com v3 webhook subscription; verifies x-bill-sha-signature on POST /webhooks/billcom (unset: that endpoint refuses everything)"),
    "AGENTCOLLECT_PAID_INVOICES_SENSOR_INTERVAL_SECONDS": (False, "900", "minimum seconds between recently_paid_invoices_sensor polls of Bill.com (one API call when nothing changed)"),
    "AGENTCOLLECT_BILLCOM_EVENTS_SENSOR_INTERVAL_SECONDS": (False, "15", "minimum seconds between billcom_invoice_events_sensor ticks (reads stored invoice.* webhooks; no API call)"),
    "AGENTCOLLECT_FEE_PERCENT": (False, "10", "success-only fee: percent (exact decimal, e.g. 12.5) of attributed amounts collected"),
    "AGENTCOLLECT_FEE_ATTRIBUTION_WINDOW_DAYS": (False, "30", "a payment up to this many days after our last outreach about the invoice still earns the fee"),
    "AGENTCOLLECT_OUTREACH_DRY_RUN": (False, "false", "true: outreach writes what it would send to outreach_outbox and sends nothing"),
    "AGENTCOLLECT_ORG_NAME": (False, "Accounts Receivable", "who outreach messages are from"),
    "AGENTCOLLECT_PAYMENT_LINK_TEMPLATE": (False, "https://pay.example.com/invoices/{invoice_id}", "payment link when Bill.com's v3 payment link is unavailable (BILLCOM_V3_BASE_URL unset, refused, unreachable): {invoice_id} {customer_id} {case_id}"),
    "AGENTCOLLECT_PUBLIC_BASE_URL": (False, "http://127.0.0.1:8090", "public URL of the webhook receiver (Twilio callbacks are signed for it)"),
    "AGENTCOLLECT_UNSUBSCRIBE_SECRET": (True, None, "HMAC key of the signed unsubscribe link in every email (sender and webhook receiver); unset = no email is sent and every link is refused"),
    "SENDGRID_API_KEY": (True, None, "SendGrid API key"),
    "SENDGRID_BASE_URL": (False, "https://api.sendgrid.com", "SendGrid API host (a sandbox URL in tests and the demo)"),
    "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY": (True, None, "SendGrid signed event webhook public key (base64 DER); unset = events refused"),
    "AGENTCOLLECT_EMAIL_FROM": (False, "ar@example.com", "sender address of collection emails"),
    "AGENTCOLLECT_EMAIL_REPLY_TO": (False, None, "reply-to address (Inbound Parse) of collection emails"),
    "TWILIO_ACCOUNT_SID": (True, None, "Twilio account SID"),
    "TWILIO_AUTH_TOKEN": (True, None, "Twilio auth token (also validates Twilio webhooks)"),
    "TWILIO_FROM_NUMBER": (False, None, "E.164 number texts and calls come from"),
    "TWILIO_BASE_URL": (False, None, "send Twilio API requests to this base URL (sandbox); unset = api.twilio.com"),
    "NETSUITE_BASE_URL": (False, None, "NetSuite REST base URL, e.g. https://1234567-sb1.suitetalk.api.netsuite.com; unset = derived from NETSUITE_ACCOUNT_ID"),
    "NETSUITE_ACCOUNT_ID": (False, None, "NetSuite account id, e.g. 1234567 or 1234567_SB1"),
    "NETSUITE_CLIENT_ID": (True, None, "client id of the NetSuite integration record (OAuth 2.0 client credentials)"),
    "NETSUITE_CERTIFICATE_ID": (False, None, "certificate id from NetSuite's OAuth 2.0 Client Credentials (M2M) Setup"),
    "NETSUITE_PRIVATE_KEY": (True, None, "PEM private key of that certificate (RSA: PS256, EC: ES256)"),
    "NETSUITE_MAX_IN_FLIGHT": (False, "5", "concurrent NetSuite requests per process; at most the account's concurrency limit"),
    "NETSUITE_ACCOUNT_TIMEZONE": (False, "UTC", "time zone of the NetSuite integration user's preferences (SuiteQL renders dates in it)"),
    "AGENTCOLLECT_INBOUND_PARSE_TOKEN": (True, None, "secret path token of the SendGrid Inbound Parse URL (/webhooks/sendgrid/inbound/<token>); with AGENTCOLLECT_INBOUND_PARSE_BASIC_AUTH unset too, every inbound email is refused"),
    "AGENTCOLLECT_INBOUND_PARSE_BASIC_AUTH": (True, None, "user:password of the Inbound Parse URL's basic auth (https://user:password@host/...); checked when set"),
    "AGENTCOLLECT_LLM_BASE_URL": (False, None, "OpenAI-compatible chat-completions endpoint (with AGENTCOLLECT_LLM_MODEL: the composer and the reply classifier use it); unset = templates and rules only"),
    "AGENTCOLLECT_LLM_MODEL": (False, None, "model name sent to the LLM endpoint"),
    "AGENTCOLLECT_LLM_API_KEY": (True, None, "Bearer key of the LLM endpoint (never logged, never in a prompt)"),
    "AGENTCOLLECT_LLM_TIMEOUT_S": (False, "20", "per-request timeout of LLM calls, seconds"),
    "AGENTCOLLECT_LLM_RETRIES": (False, "2", "retries of an LLM call on 429/5xx/timeouts (exponential backoff, Retry-After honoured)"),
}


def env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else ENVIRONMENT[name][1]


# The AR sources of truth and the names finance reads in notes, logs and asset descriptions.
AR_SOURCE_NAMES = {"billcom": "Bill.com", "qbo": "QuickBooks Online", "netsuite": "NetSuite"}
AR_SOURCE_CHOICES = tuple(AR_SOURCE_NAMES)


def configured_ar_source() -> str:
    """AGENTCOLLECT_AR_SOURCE, validated; refuses a configuration that would record a payment twice."""
    source = (env("AGENTCOLLECT_AR_SOURCE") or "billcom").strip().lower()
    if source not in AR_SOURCE_CHOICES:
        raise ValueError(f"AGENTCOLLECT_AR_SOURCE={source!r}: expected one of {', '.join(AR_SOURCE_CHOICES)}")
    synced_to = (env("AGENTCOLLECT_BILLCOM_SYNCS_AR_TO") or "none").strip().lower()
    if synced_to not in ("none", "qbo", "netsuite"):
        raise ValueError(f"AGENTCOLLECT_BILLCOM_SYNCS_AR_TO={synced_to!r}: expected none, qbo or netsuite")
    if synced_to == source:
        # Bill.com's AR sync carries payments one way into QBO/NetSuite; posting there directly as well would
        # record every payment Bill.com also received twice (reference qbo-netsuite.md §0).
        raise ValueError(
            f"AGENTCOLLECT_AR_SOURCE={source} while AGENTCOLLECT_BILLCOM_SYNCS_AR_TO={synced_to}: payments would "
            f"reach {source} twice (from us and from Bill.com's sync). Make Bill.com the AR source "
            "(AGENTCOLLECT_AR_SOURCE=billcom): payments then go to Bill.com only and its sync carries them over."
        )
    return source


def default_database_url() -> str:
    home = Path(env("AGENTCOLLECT_HOME") or ".agentcollect").resolve()
    return f"sqlite:///{home / 'agentcollect.sqlite'}"


def secret_or_default(name: str, default: str | None) -> str | dg.EnvVar | None:
    """An EnvVar when the variable is set (the UI then shows only its name), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default
