"""Tables of the collection agent: every reply a debtor sent, what it was understood as, what it changed,
and how finance resolved the disputes those replies opened."""

from __future__ import annotations

import sqlalchemy as sa

from agentcollect_pipeline.warehouse.schema import UTCDateTime, metadata

customer_replies = sa.Table(
    "customer_replies",
    metadata,
    sa.Column("reply_id", sa.Text, primary_key=True,
              comment="provider message id (Twilio SM…, email Message-ID, CallSid:digit), so a re-delivery is one reply"),
    sa.Column("channel", sa.Text, nullable=False, comment="sms | email | voice (a key pressed on our call)"),
    sa.Column("sender", sa.Text, nullable=False, comment="E.164 number or email address (masked in previews)"),
    sa.Column("customer_id", sa.Text, index=True, comment="null when the sender matches no customer"),
    sa.Column("case_id", sa.Text),
    sa.Column("intent", sa.Text, nullable=False,
              comment="paid_already | promise_to_pay | dispute | wrong_contact | invoice_copy | stop | other; "
                      "callback_request (pressed 2 on a call)"),
    sa.Column("promised_date", sa.Date),
    sa.Column("dispute_reason", sa.Text),
    sa.Column("effect", sa.Text, nullable=False, comment="what the reply changed, e.g. opted_out, paused_until:2026-12-03"),
    sa.Column("body", sa.Text, nullable=False, comment="the reply without quoted history"),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("attempt_id", sa.Text, index=True, comment="the outreach attempt answered, when known"),
)

dispute_resolutions = sa.Table(
    "dispute_resolutions",
    metadata,
    sa.Column("dispute_id", sa.Text, primary_key=True, comment="one resolution per dispute (disputes.closed_at set)"),
    sa.Column("outcome", sa.Text, nullable=False,
              comment="upheld (the customer was right: credit/fix the invoice in the AR system) | rejected (collect)"),
    sa.Column("resolved_by", sa.Text, nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("resolved_at", UTCDateTime, nullable=False),
    comment="Who closed a dispute, how and why (agentcollect disputes resolve)",
)
