"""DDL of the outreach tables (issue 5), on the same `metadata` as the other tables.

`outreach_attempts` is the durable ledger and the audit log: one row per (case_id, step), unique, written
*before* a provider is called (status `reserved`) and confirmed after, so a crash, retry or re-execution can
never send a step twice. The other tables are state the planner reads (consent, invalid contacts) or the
audit trail of people's decisions (opt-out clearances) and of provider events (deduplicated).
"""

import sqlalchemy as sa

from agentcollect_pipeline.warehouse.schema import UTCDateTime, metadata

ATTEMPT_STATUSES = (
    "reserved",  # written before the provider call; outcome unknown until confirmed or reconciled
    "sent",  # provider accepted it (message/call id known)
    "delivered", "undelivered", "failed", "bounced", "opened",  # provider events after sending
    "completed", "no-answer", "busy", "canceled",  # call outcomes
    "rejected",  # provider refused it for good before sending (invalid/unsubscribed number): nobody contacted
    "unconfirmed",  # could not be confirmed either way: counts as sent, never re-sent
    "cancelled",  # the freshness check found nothing left to collect after reserving: nothing was sent
    "released",  # the provider answered 429 past the retry budget (not accepted): the next run re-reserves it
)

outreach_attempts = sa.Table(
    "outreach_attempts",
    metadata,
    sa.Column("attempt_id", sa.Text, primary_key=True, comment="att_<hex>; rides in callback URLs and custom_args"),
    sa.Column("case_id", sa.Text, nullable=False),
    sa.Column("step", sa.Text, nullable=False, comment="ladder step name from the policy"),
    sa.Column("customer_id", sa.Text, nullable=False, index=True),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False, comment="email | sms | voice"),
    sa.Column("destination", sa.Text, nullable=False, comment="email address or E.164 number (masked in previews)"),
    sa.Column("tone", sa.Text),
    sa.Column("invoice_ids", sa.Text, nullable=False, comment="invoices the message is about, after the freshness check"),
    sa.Column("total_due_cents", sa.BigInteger, nullable=False),
    sa.Column("consumer", sa.Boolean, nullable=False),
    sa.Column("why", sa.Text),
    sa.Column("status", sa.Text, nullable=False, comment=", ".join(ATTEMPT_STATUSES)),
    sa.Column("provider", sa.Text, comment="sendgrid | twilio"),
    sa.Column("provider_id", sa.Text, comment="SendGrid X-Message-Id, Twilio SM…/CA… sid"),
    sa.Column("error_code", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("answered_by", sa.Text, comment="Twilio AMD result on calls"),
    sa.Column("conversation_at", UTCDateTime, comment="a person answered: consumer rule, no calls for 7 days"),
    sa.Column("gather_choice", sa.Text,
              comment="calls: what the person pressed and what followed (1 link_sent / link_refused:…, 2 callback)"),
    sa.Column("draft_source", sa.Text, comment="who wrote the message sent: template | llm (agent/composer.py)"),
    sa.Column("guardrail_rejections", sa.Text,
              comment="why an LLM draft was refused and the template sent instead ('; '-separated reasons)"),
    sa.Column("run_id", sa.Text),
    sa.Column("release_count", sa.Integer, comment="times a provider's 429 released this reservation for a later run"),
    sa.Column("released_reason", sa.Text, comment="the last release: provider, code, attempts"),
    sa.Column("reserved_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("confirmed_at", UTCDateTime, comment="when the provider's answer, an event or reconciliation confirmed it"),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("case_id", "step", name="uq_outreach_attempts_case_step"),
    comment="At most one attempt per (case, step), whatever retries or crashes happen",
)

outreach_outbox = sa.Table(
    "outreach_outbox",
    metadata,
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("step", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("destination", sa.Text, nullable=False),
    sa.Column("subject", sa.Text),
    sa.Column("body", sa.Text, nullable=False, comment="text, or TwiML for calls"),
    sa.Column("written_at", UTCDateTime, nullable=False),
    comment="dry_run: what would be sent; nothing here reached anyone",
)

contact_consents = sa.Table(
    "contact_consents",
    metadata,
    sa.Column("consent_id", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, nullable=False, comment="sms | voice"),
    sa.Column("address", sa.Text, nullable=False, comment="E.164 number"),
    sa.Column("source", sa.Text, nullable=False, comment="where the number and consent came from (TCPA §4.4)"),
    sa.Column("recorded_by", sa.Text, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
    sa.Index("ix_contact_consents_channel_address", "channel", "address"),
)

invalid_contacts = sa.Table(
    "invalid_contacts",
    metadata,
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("address", sa.Text, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False, comment="bounce, Twilio 21211/21614/30005/30006 …"),
    sa.Column("marked_at", UTCDateTime, nullable=False),
)

opt_out_clearances = sa.Table(
    "opt_out_clearances",
    metadata,
    sa.Column("clearance_id", sa.Text, primary_key=True),
    sa.Column("opt_out_id", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("opted_out_at", UTCDateTime, nullable=False),
    sa.Column("opt_out_source", sa.Text),
    sa.Column("cleared_by", sa.Text, nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("cleared_at", UTCDateTime, nullable=False),
    comment="Opt-outs are permanent until a person clears them; who and why are kept here",
)

outreach_events = sa.Table(
    "outreach_events",
    metadata,
    sa.Column("event_key", sa.Text, primary_key=True, comment="sg_event_id, or Twilio sid:status (dedupe)"),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("attempt_id", sa.Text, index=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("address", sa.Text),
    sa.Column("payload", sa.Text, nullable=False, comment="the event as received (JSON)"),
    sa.Column("received_at", UTCDateTime, nullable=False),
)

call_scripts = sa.Table(
    "outreach_call_scripts",
    metadata,
    sa.Column("attempt_id", sa.Text, primary_key=True),
    sa.Column("full_twiml", sa.Text, nullable=False, comment="for a person: balance, due dates, <Gather>"),
    sa.Column("voicemail_twiml", sa.Text, nullable=False, comment="for an answering machine: no balance details"),
    sa.Column("payment_link", sa.Text, nullable=False, comment="texted when the person presses 1"),
    sa.Column("org_name", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("served", sa.Text, comment="full | voicemail | hangup: what the call's TwiML URL returned"),
    comment="Rendered before the call is placed; served by /webhooks/twilio/voice/{attempt_id} by AnsweredBy",
)

callback_requests = sa.Table(
    "callback_requests",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("attempt_id", sa.Text, nullable=False, unique=True, comment="the call on which 2 was pressed"),
    sa.Column("case_id", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=False, index=True),
    sa.Column("number", sa.Text, nullable=False, comment="E.164 number to call back (masked in previews)"),
    sa.Column("status", sa.Text, nullable=False, comment="open | done"),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("closed_by", sa.Text, comment="who closed it (agentcollect contacts close-callback --by)"),
    sa.Column("close_why", sa.Text, comment="why (--why), e.g. called back, promised to pay Friday"),
    sa.Column("closed_at", UTCDateTime),
    comment="A debtor pressed 2 (talk to a person): someone from finance calls back",
)

invoice_payment_links = sa.Table(
    "invoice_payment_links",
    metadata,
    sa.Column("invoice_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("payment_link", sa.Text, comment="Bill.com's link (POST /v3/invoices/{id}/payment-link); NULL: refused"),
    sa.Column("email", sa.Text, comment="where Bill.com sends the payment receipt (given when the link was made)"),
    sa.Column("error", sa.Text, comment="Bill.com's refusal (code: message); asked again after a day"),
    sa.Column("fetched_at", UTCDateTime, nullable=False),
    comment="One Bill.com payment link per invoice, fetched once and reused by every message about it",
)

job_leases = sa.Table(
    "job_leases",
    metadata,
    sa.Column("name", sa.Text, primary_key=True, comment="e.g. send_due_outreach"),
    sa.Column("holder", sa.Text, nullable=False, comment="run id holding the lease"),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, comment="renewed while the holder works; free after"),
    comment="One holder at a time per job, whatever the run coordinator allows",
)

OUTREACH_TABLES = (
    outreach_attempts, outreach_outbox, contact_consents, invalid_contacts, opt_out_clearances, outreach_events,
    call_scripts, callback_requests, job_leases, invoice_payment_links,
)

outreach_plan = sa.Table(
    "outreach_plan",
    metadata,
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False, comment="due (send now) | waiting (and why)"),
    sa.Column("step", sa.Text),
    sa.Column("channel", sa.Text),
    sa.Column("tone", sa.Text),
    sa.Column("destination", sa.Text),
    sa.Column("currency", sa.Text),
    sa.Column("invoice_ids", sa.Text),
    sa.Column("total_due_cents", sa.BigInteger),
    sa.Column("consumer", sa.Boolean),
    sa.Column("zones", sa.Text, comment="candidate time zones the window was checked in"),
    sa.Column("why", sa.Text, comment="due: step, case, invoices, channel; waiting: the reason"),
    sa.Column("next_at", UTCDateTime, comment="waiting: earliest moment it may go"),
    sa.Column("planned_at", UTCDateTime, nullable=False),
    comment="Snapshot rewritten by each outreach_plan materialization",
)
