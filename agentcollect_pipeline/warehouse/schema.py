"""Explicit DDL for every table AgentCollect writes to the project's database.

Tables are created if missing and never dropped or replaced, so views finance builds on them survive.
Money is always `<name>_cents BIGINT` plus a `currency` column. Timestamps are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from agentcollect_pipeline.settings import AR_SOURCE_CHOICES

metadata = sa.MetaData()


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in Python; TIMESTAMPTZ on PostgreSQL, naive UTC text on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: AgentCollect stores only aware UTC timestamps")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _validation_columns() -> list[sa.Column]:
    return [
        sa.Column("validation_status", sa.Text, nullable=False, comment="valid | warning | invalid"),
        sa.Column("validation_errors", sa.Text, nullable=True, comment="'; '-separated 'field: problem' list"),
        sa.Column("created_at", UTCDateTime, nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=True, comment="source updatedTime; the sync watermark"),
        sa.Column("synced_at", UTCDateTime, nullable=False),
    ]


# Each AR source of truth has its own synced tables with identical columns, so lineage shows which one fed
# the rules; everything downstream reads the configured one's.


def _customers_table(source: str) -> sa.Table:
    return sa.Table(
        f"{source}_customers",
        metadata,
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("company_name", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text, comment="as entered at the source"),
        sa.Column("phone_e164", sa.Text, comment="normalised; null when the number is not valid"),
        sa.Column("alt_phone", sa.Text),
        sa.Column("account_type", sa.Text, comment="Bill.com accountType code; business|person for QBO/NetSuite"),
        sa.Column("parent_customer_id", sa.Text),
        sa.Column("bill_address1", sa.Text),
        sa.Column("bill_address2", sa.Text),
        sa.Column("bill_city", sa.Text),
        sa.Column("bill_state", sa.Text),
        sa.Column("bill_zip", sa.Text),
        sa.Column("bill_country", sa.Text),
        sa.Column("currency", sa.Text, nullable=False, comment="customer's invoice currency, else the org's"),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("has_authorized_to_charge", sa.Boolean, nullable=False),
        sa.Column("description", sa.Text),
        *_validation_columns(),
    )


def _contacts_table(source: str) -> sa.Table:
    return sa.Table(
        f"{source}_customer_contacts",
        metadata,
        sa.Column("contact_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("first_name", sa.Text),
        sa.Column("last_name", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("phone_e164", sa.Text),
        sa.Column("is_active", sa.Boolean, nullable=False),
        *_validation_columns(),
    )


def _invoices_table(source: str) -> sa.Table:
    return sa.Table(
        f"{source}_invoices",
        metadata,
        sa.Column("invoice_id", sa.Text, primary_key=True),
        sa.Column("invoice_number", sa.Text),
        sa.Column("customer_id", sa.Text),
        sa.Column("invoice_date", sa.Date),
        sa.Column("due_date", sa.Date),
        sa.Column("amount_cents", sa.BigInteger, comment="invoice total in minor units"),
        sa.Column("amount_due_cents", sa.BigInteger, comment="open balance in minor units"),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("payment_status", sa.Text, comment="0 paid, 1 open, 2 partial, 4 scheduled (Bill.com's codes)"),
        sa.Column("is_active", sa.Boolean, nullable=False, comment="false when voided, deleted or archived"),
        sa.Column("actg_class_id", sa.Text, comment="accounting class id (Bill.com actgClassId, QBO ClassRef, NetSuite class)"),
        sa.Column("has_auto_pay", sa.Boolean, nullable=False),
        sa.Column("last_sent_at", UTCDateTime),
        sa.Column("description", sa.Text),
        *_validation_columns(),
    )


def _received_payments_table(source: str) -> sa.Table:
    return sa.Table(
        f"{source}_received_payments",
        metadata,
        sa.Column("received_payment_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text),
        sa.Column("payment_date", sa.Date),
        sa.Column("amount_cents", sa.BigInteger),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("payment_type", sa.Text, comment="0 cash, 1 check, 2 card, 3 ACH, 4 PayPal, 5 other"),
        sa.Column("status", sa.Text),
        sa.Column("is_online", sa.Boolean, nullable=False, comment="true when paid through the source's own portal"),
        sa.Column("ref_number", sa.Text),
        sa.Column("description", sa.Text),
        *_validation_columns(),
    )


def _received_payment_lines_table(source: str) -> sa.Table:
    return sa.Table(
        f"{source}_received_payment_lines",
        metadata,
        sa.Column("invoice_pay_id", sa.Text, primary_key=True),
        sa.Column("received_payment_id", sa.Text, nullable=False, index=True),
        sa.Column("invoice_id", sa.Text, index=True),
        sa.Column("amount_cents", sa.BigInteger),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("synced_at", UTCDateTime, nullable=False),
    )


@dataclass(frozen=True)
class ARTables:
    """One AR source's synced tables."""

    source: str
    customers: sa.Table
    customer_contacts: sa.Table
    invoices: sa.Table
    received_payments: sa.Table
    received_payment_lines: sa.Table


_AR_TABLES = {
    source: ARTables(
        source=source,
        customers=_customers_table(source),
        customer_contacts=_contacts_table(source),
        invoices=_invoices_table(source),
        received_payments=_received_payments_table(source),
        received_payment_lines=_received_payment_lines_table(source),
    )
    for source in AR_SOURCE_CHOICES
}


def ar_tables(source: str) -> ARTables:
    try:
        return _AR_TABLES[source]
    except KeyError:
        raise ValueError(f"unknown AR source {source!r}; expected one of {', '.join(AR_SOURCE_CHOICES)}") from None


# Bill.com's tables by name: the payments lane's Bill.com-only parts (v3 webhooks) and older code read them.
billcom_customers = _AR_TABLES["billcom"].customers
billcom_customer_contacts = _AR_TABLES["billcom"].customer_contacts
billcom_invoices = _AR_TABLES["billcom"].invoices
billcom_received_payments = _AR_TABLES["billcom"].received_payments
billcom_received_payment_lines = _AR_TABLES["billcom"].received_payment_lines

sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("stream", sa.Text, primary_key=True, comment="e.g. billcom_invoices"),
    sa.Column("high_water_mark", UTCDateTime, comment="largest source updatedTime stored"),
    sa.Column("last_synced_at", UTCDateTime, nullable=False),
    sa.Column("last_mode", sa.Text, nullable=False, comment="full | incremental"),
    sa.Column("last_rows_changed", sa.BigInteger, nullable=False),
)

api_sessions = sa.Table(
    "api_sessions",
    metadata,
    sa.Column("session_key", sa.Text, primary_key=True, comment="provider:base_url:org:user"),
    sa.Column("session_id", sa.Text, nullable=False),
    sa.Column("logged_in_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=False),
)
