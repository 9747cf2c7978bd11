"""Group `collections`: which invoices will be collected and why not, the cases, and AR aging.

Each asset reads the synced AR source tables (and the state tables), runs the pure rules of
agentcollect_pipeline/rules, and rewrites its snapshot table with DELETE + insert in one transaction
(tables are never dropped, so finance's views survive). No AR source call is made here.
"""

from collections.abc import Iterable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from agentcollect_pipeline.ar_source.resource import ARSourceResource
from agentcollect_pipeline.assets.metadata import definition_metadata, preview
from agentcollect_pipeline.collection_policy import CollectionPolicyResource
from agentcollect_pipeline.money import format_money
from agentcollect_pipeline.resources import ARSyncSettings, WarehouseResource
from agentcollect_pipeline.rules.aging import (
    age_receivables,
    days_sales_outstanding,
    open_mask,
    sales_in_window,
)
from agentcollect_pipeline.rules.cases import assign_case_ids, build_cases
from agentcollect_pipeline.rules.eligibility import (
    CollectionState,
    customer_channels,
    evaluate_eligibility,
    reason_counts,
)
from agentcollect_pipeline.rules.keys import BookKeys
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse.store import Warehouse

GROUP = "collections"
OWNERS = ["team:finance-data"]
KINDS = {"pandas", "sql"}
PREVIEW_ROWS = 10
_WRITE_BATCH = 5_000


class RulesConfig(dg.Config):
    as_of: str | None = None
    """Evaluate as of this date (YYYY-MM-DD) instead of today in the organisation's timezone."""
    now: str | None = None
    """Stamp the case register (opened/seen/closed) with this moment (ISO 8601) instead of the real clock;
    with `as_of` and the outreach assets' `now` it replays a month through the jobs (benchmarks/replay_month.py)."""


def _as_of(config: RulesConfig, settings: ARSyncSettings) -> date:
    if config.as_of:
        return date.fromisoformat(config.as_of)
    return datetime.now(ZoneInfo(settings.org_timezone)).date()


def _state(store: Warehouse) -> CollectionState:
    return CollectionState(
        disputes=store.read_frame(cs.disputes),
        promises_to_pay=store.read_frame(cs.promises_to_pay),
        opt_outs=store.read_frame(cs.opt_outs),
        customer_pauses=store.read_frame(cs.customer_pauses),
    )


def _records(frame: pd.DataFrame, table: sa.Table) -> list[dict]:
    """Rows for `table` from `frame`: Python values, None for missing, dates as date, ints as int."""
    columns: dict[str, list] = {}
    for column in table.columns:
        values = frame[column.name]
        if isinstance(column.type, sa.Date) and pd.api.types.is_datetime64_any_dtype(values):
            values = values.dt.date
        missing = values.isna().to_numpy(dtype=bool)
        python = values.tolist()  # numpy scalars -> int/bool/float, which every DB driver accepts
        columns[column.name] = [None if gone else value for value, gone in zip(python, missing, strict=True)]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _rewrite(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    conn.execute(table.delete())
    for start in range(0, len(rows), _WRITE_BATCH):
        conn.execute(table.insert(), rows[start : start + _WRITE_BATCH])


def _money_by_currency(frame: pd.DataFrame, column: str) -> dict[str, str]:
    if frame.empty:
        return {}
    sums = frame.groupby("currency")[column].sum()
    return {str(currency): format_money(int(cents), str(currency)) for currency, cents in sums.items()}


def _md_table(rows: Iterable[tuple], header: tuple[str, ...]) -> dg.MetadataValue:
    frame = pd.DataFrame(list(rows), columns=list(header))
    return dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "none")


# -- invoice_eligibility ------------------------------------------------------------------------------


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    deps=["billcom_invoices", "billcom_customers", "billcom_customer_contacts", "billcom_received_payments"],
    metadata=definition_metadata(cs.invoice_eligibility),
)
def invoice_eligibility(
    context: dg.AssetExecutionContext,
    config: RulesConfig,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    collection_policy: CollectionPolicyResource,
) -> dg.MaterializeResult:
    """Every synced invoice with `eligible` true/false and, when false, why (first reason + all reasons).

    Overdue is derived (active, amount due > 0, due before today - threshold in the org's timezone);
    reason codes and their precedence are documented in the README and in rules/eligibility.Reason.
    """
    policy = collection_policy.load()
    as_of = _as_of(config, ar_settings)
    store = warehouse.get_warehouse()
    invoices = store.read_frame(ar_source.tables.invoices)
    customers = store.read_frame(ar_source.tables.customers)
    contacts = store.read_frame(ar_source.tables.customer_contacts)
    state = _state(store)
    keys = BookKeys.of(invoices, customers)
    channels = customer_channels(customers, contacts, state.opt_outs)
    result = evaluate_eligibility(invoices, customers, channels, policy, as_of, state, keys)

    evaluated_at = datetime.now(UTC)
    table = result.assign(
        reason=result["reason"].astype("string"),
        reasons=result["reasons"].map(",".join),
        as_of=as_of,
        evaluated_at=evaluated_at,
    )
    with store.transaction() as conn:
        _rewrite(conn, cs.invoice_eligibility, _records(table, cs.invoice_eligibility))

    counts = reason_counts(result)
    eligible = result[result["eligible"]]
    context.log.info("invoice_eligibility as of %s: %d of %d invoices eligible", as_of, len(eligible), len(result))
    shown = ["invoice_number", "customer_id", "currency", "amount_due_cents", "due_date", "days_overdue"]
    not_eligible = result[~result["eligible"] & open_mask(invoices)]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(result)),
            "dagster/table_name": cs.invoice_eligibility.name,
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
            "policy_file": dg.MetadataValue.path(str(collection_policy.resolved_path())),
            "overdue_threshold_days": dg.MetadataValue.int(policy.overdue_threshold_days),
            "eligible_invoices": dg.MetadataValue.int(len(eligible)),
            "eligible_due": dg.MetadataValue.json(_money_by_currency(eligible, "amount_due_cents")),
            **{f"reason/{code}": dg.MetadataValue.int(n) for code, n in counts.items() if code != "eligible"},
            "reason_counts": _md_table(counts.items(), ("reason", "invoices")),
            "preview_eligible": preview(
                eligible.sort_values("days_overdue", ascending=False)[[*shown, "channels"]].head(PREVIEW_ROWS)
            ),
            "preview_not_eligible_open": preview(
                not_eligible[[*shown, "reason", "reason_detail"]].head(PREVIEW_ROWS)
            ),
        }
    )


@dg.asset_check(
    asset=invoice_eligibility,
    blocking=True,
    description="No eligible invoice is paid (amount due <= 0 or paymentStatus 0), void/inactive, or unknown "
    "to the synced invoices. Re-derived with SQL from the AR source's invoices table, not from the rules' output.",
)
def no_paid_or_void_invoice_is_eligible(warehouse: WarehouseResource, ar_source: ARSourceResource) -> dg.AssetCheckResult:
    store = warehouse.get_warehouse()
    e, i = cs.invoice_eligibility, ar_source.tables.invoices
    query = (
        sa.select(e.c.invoice_id, e.c.invoice_number, i.c.amount_due_cents, i.c.payment_status, i.c.is_active)
        .select_from(e.outerjoin(i, e.c.invoice_id == i.c.invoice_id))
        .where(
            e.c.eligible,
            sa.or_(
                i.c.invoice_id.is_(None),
                sa.not_(i.c.is_active),
                sa.func.coalesce(i.c.amount_due_cents, 0) <= 0,
                i.c.payment_status == "0",
            ),
        )
    )
    with store.engine.connect() as conn:
        bad = pd.DataFrame(conn.execute(query).mappings().all())
        eligible = conn.execute(sa.select(sa.func.count()).select_from(e).where(e.c.eligible)).scalar_one()
    return dg.AssetCheckResult(
        passed=bad.empty,
        metadata={
            "eligible_invoices": int(eligible),
            "paid_or_void_eligible": len(bad),
            "examples": dg.MetadataValue.md(bad.head(5).astype("string").to_markdown(index=False) if len(bad) else "none"),
        },
    )


@dg.asset_check(
    asset=invoice_eligibility,
    blocking=True,
    description="Every eligible invoice belongs to an active customer that the policy does not exclude, "
    "with at least one channel left (a valid email, or an E.164 phone, on the customer or an active "
    "contact, not opted out).",
)
def eligible_invoices_have_a_reachable_customer(
    warehouse: WarehouseResource, collection_policy: CollectionPolicyResource, ar_source: ARSourceResource
) -> dg.AssetCheckResult:
    store = warehouse.get_warehouse()
    policy = collection_policy.load()
    eligible = store.read_frame(cs.invoice_eligibility, cs.invoice_eligibility.c.eligible)
    customers = store.read_frame(ar_source.tables.customers).set_index("customer_id")
    contacts = store.read_frame(ar_source.tables.customer_contacts)
    opt_outs = store.read_frame(cs.opt_outs)
    ids = pd.Index(eligible["customer_id"].dropna().unique())
    known = ids.isin(customers.index)
    found = customers.reindex(ids).rename_axis("customer_id")
    active = found["is_active"].fillna(False).to_numpy(dtype=bool)
    excluded_ids = (
        set(policy.excluded_customer_ids) | set(policy.do_not_contact) | set(policy.excluded_tier_members)
        | set(policy.excluded_parent_customer_ids)
    )
    excluded = (
        ids.isin(excluded_ids)
        | found["account_type"].isin(policy.excluded_account_types).to_numpy(dtype=bool)
        | found["parent_customer_id"].isin(policy.excluded_parent_customer_ids).to_numpy(dtype=bool)
    )
    # Addresses on the customer and its active contacts, minus opted-out ones, checked independently.
    people = pd.concat(
        [
            found.reset_index()[["customer_id", "email", "phone_e164", "validation_errors"]],
            contacts[contacts["is_active"].fillna(False).astype(bool) & contacts["customer_id"].isin(ids)][
                ["customer_id", "email", "phone_e164", "validation_errors"]
            ],
        ]
    )
    out = {ch: set(opt_outs.loc[opt_outs["channel"] == ch, "address"].dropna()) for ch in ("email", "sms", "voice")}
    email_ok = (
        people["email"].notna()
        & ~people["validation_errors"].fillna("").str.contains("email:", regex=False)
        & ~people["email"].fillna("").str.lower().isin({a.lower() for a in out["email"]})
    )
    phone = people["phone_e164"]
    phone_ok = phone.notna() & ~(phone.isin(out["sms"]) & phone.isin(out["voice"]))
    reachable = set(people.loc[(email_ok | phone_ok).to_numpy(dtype=bool), "customer_id"])
    has_channel = ids.isin(reachable)
    bad = ids[~(known & active & ~excluded & has_channel)]
    problems = pd.DataFrame(
        {
            "customer_id": bad,
            "known": known[~(known & active & ~excluded & has_channel)],
            "active": active[~(known & active & ~excluded & has_channel)],
            "excluded": excluded[~(known & active & ~excluded & has_channel)],
            "has_channel": has_channel[~(known & active & ~excluded & has_channel)],
        }
    )
    orphans = int(eligible["customer_id"].isna().sum())
    return dg.AssetCheckResult(
        passed=problems.empty and orphans == 0,
        metadata={
            "eligible_invoices": len(eligible),
            "customers_with_eligible_invoices": len(ids),
            "bad_customers": len(problems),
            "eligible_without_customer": orphans,
            "examples": dg.MetadataValue.md(problems.head(5).to_markdown(index=False) if len(problems) else "none"),
        },
    )


# -- collection_cases ---------------------------------------------------------------------------------


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    deps=[invoice_eligibility],
    metadata=definition_metadata(cs.collection_cases),
)
def collection_cases(
    context: dg.AssetExecutionContext,
    config: RulesConfig,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    collection_policy: CollectionPolicyResource,
) -> dg.MaterializeResult:
    """One case per (customer, currency) with eligible invoices: consolidated invoices, total due, oldest
    days overdue, contacts per channel, priority score. Case ids are stable (table `cases`): a case stays
    open while eligible invoices remain (new ones join it) and closes when none is left."""
    policy = collection_policy.load()
    as_of = _as_of(config, ar_settings)
    store = warehouse.get_warehouse()
    eligibility = store.read_frame(cs.invoice_eligibility)
    customers = store.read_frame(ar_source.tables.customers)
    contacts = store.read_frame(ar_source.tables.customer_contacts)
    channels = customer_channels(customers, contacts, store.read_frame(cs.opt_outs))
    current = build_cases(eligibility, channels, policy.priority)
    now = datetime.fromisoformat(config.now).astimezone(UTC) if config.now else datetime.now(UTC)

    with store.transaction() as conn:
        # Read and write the case register in one transaction, so two cycles cannot both open a case.
        open_rows = conn.execute(sa.select(cs.cases).where(cs.cases.c.status == "open")).mappings().all()
        open_cases = pd.DataFrame(list(open_rows), columns=[c.name for c in cs.cases.columns])
        assignment = assign_case_ids(current, open_cases, now)
        if len(assignment.opened):
            rows = assignment.opened.assign(status="open", closed_at=None, last_seen_at=now)
            conn.execute(cs.cases.insert(), _records(rows, cs.cases))
        if assignment.continued:
            for start in range(0, len(assignment.continued), _WRITE_BATCH):
                batch = assignment.continued[start : start + _WRITE_BATCH]
                conn.execute(cs.cases.update().where(cs.cases.c.case_id.in_(batch)).values(last_seen_at=now))
        if assignment.closed:
            for start in range(0, len(assignment.closed), _WRITE_BATCH):
                batch = assignment.closed[start : start + _WRITE_BATCH]
                conn.execute(
                    cs.cases.update().where(cs.cases.c.case_id.in_(batch)).values(status="closed", closed_at=now)
                )
        snapshot = assignment.cases.assign(as_of=as_of)
        _rewrite(conn, cs.collection_cases, _records(snapshot, cs.collection_cases))

    cases = assignment.cases
    context.log.info(
        "collection_cases: %d open (%d opened, %d continued), %d closed",
        len(cases), len(assignment.opened), len(assignment.continued), len(assignment.closed),
    )
    shown = ["case_id", "customer_id", "currency", "invoice_count", "total_due_cents", "oldest_days_overdue",
             "email_contacts", "sms_contacts", "voice_contacts", "priority_score"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(cases)),
            "dagster/table_name": cs.collection_cases.name,
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
            "cases_opened": dg.MetadataValue.int(len(assignment.opened)),
            "cases_continued": dg.MetadataValue.int(len(assignment.continued)),
            "cases_closed": dg.MetadataValue.int(len(assignment.closed)),
            "invoices_in_cases": dg.MetadataValue.int(int(cases["invoice_count"].sum()) if len(cases) else 0),
            "total_due": dg.MetadataValue.json(_money_by_currency(cases, "total_due_cents")),
            "cases_without_email": dg.MetadataValue.int(int((cases["email_contacts"] == 0).sum()) if len(cases) else 0),
            "preview_top_priority": preview(cases[shown].head(PREVIEW_ROWS)),
        }
    )


# -- ar_aging -----------------------------------------------------------------------------------------


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    deps=["billcom_invoices", "billcom_customers"],
    metadata=definition_metadata(cs.ar_aging),
)
def ar_aging(
    context: dg.AssetExecutionContext,
    config: RulesConfig,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
) -> dg.MaterializeResult:
    """Open AR (active, amount due > 0) in current / 1-30 / 31-60 / 61-90 / 90+ day buckets, per customer
    and per currency total. Each cycle appends the totals and DSO to `ar_aging_history`."""
    as_of = _as_of(config, ar_settings)
    store = warehouse.get_warehouse()
    invoices = store.read_frame(ar_source.tables.invoices)
    keys = BookKeys.of(invoices)
    per_customer, totals = age_receivables(invoices, as_of, keys)
    sales = sales_in_window(invoices, as_of)
    dso = days_sales_outstanding(totals, sales)
    now = datetime.now(UTC)

    customer_rows = per_customer.assign(
        row_key=per_customer["currency"].astype(str) + ":" + per_customer["customer_id"].fillna("(none)").astype(str),
        is_total=False,
        as_of=as_of,
    )
    total_rows = totals.assign(row_key=totals["currency"] + ":TOTAL", customer_id=None, is_total=True, as_of=as_of)
    history = totals.assign(
        run_id=context.run.run_id,
        as_of=as_of,
        recorded_at=now,
        sales_90d_cents=sales.reindex(totals["currency"]).fillna(0).astype("int64").to_numpy(),
        dso_days=dso.reindex(totals["currency"]).to_numpy(),
    )
    with store.transaction() as conn:
        _rewrite(
            conn,
            cs.ar_aging,
            _records(pd.concat([total_rows, customer_rows], ignore_index=True), cs.ar_aging),
        )
        rows = _records(history, cs.ar_aging_history)
        if rows:
            conn.execute(cs.ar_aging_history.insert(), rows)

    context.log.info("ar_aging as of %s: %d customer rows, %d currencies", as_of, len(per_customer), len(totals))
    buckets = ["current_cents", "days_1_30_cents", "days_31_60_cents", "days_61_90_cents", "days_90_plus_cents"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(customer_rows) + len(total_rows)),
            "dagster/table_name": cs.ar_aging.name,
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
            "customers_with_open_ar": dg.MetadataValue.int(len(per_customer)),
            "total_open": dg.MetadataValue.json(_money_by_currency(totals, "total_open_cents")),
            **{f"dso_days/{c}": dg.MetadataValue.float(float(v)) for c, v in dso.items() if pd.notna(v)},
            "totals_by_bucket": dg.MetadataValue.md(
                totals[["currency", *buckets, "total_open_cents", "invoice_count"]].to_markdown(index=False)
                if len(totals) else "none"
            ),
            "preview_largest": preview(per_customer.head(PREVIEW_ROWS)),
        }
    )


@dg.asset_check(
    asset=ar_aging,
    blocking=True,
    description="Aging totals equal the sum of open amounts (active, amount due > 0) in the AR source's invoices, per "
    "currency (re-derived with SQL); customer rows add up to the totals; each row's buckets add up to it.",
)
def ar_aging_reconciles_to_open_invoices(warehouse: WarehouseResource, ar_source: ARSourceResource) -> dg.AssetCheckResult:
    store = warehouse.get_warehouse()
    i, a = ar_source.tables.invoices, cs.ar_aging
    with store.engine.connect() as conn:
        source = dict(
            conn.execute(
                sa.select(i.c.currency, sa.func.sum(i.c.amount_due_cents))
                .where(i.c.is_active, i.c.amount_due_cents > 0)
                .group_by(i.c.currency)
            ).all()
        )
        aging = pd.DataFrame(conn.execute(sa.select(a)).mappings().all(), columns=[c.name for c in a.columns])
    totals = aging[aging["is_total"].astype(bool)].set_index("currency")["total_open_cents"].astype("int64")
    by_customer = aging[~aging["is_total"].astype(bool)].groupby("currency")["total_open_cents"].sum()
    bucket_columns = ["current_cents", "days_1_30_cents", "days_31_60_cents", "days_61_90_cents", "days_90_plus_cents"]
    rows_balance = bool((aging[bucket_columns].sum(axis=1) == aging["total_open_cents"]).all())
    currencies = sorted(set(source) | set(totals.index) | set(by_customer.index))
    rows = [
        (c, int(source.get(c, 0) or 0), int(totals.get(c, 0)), int(by_customer.get(c, 0))) for c in currencies
    ]
    passed = rows_balance and all(s == t == b for _, s, t, b in rows)
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "reconciliation": _md_table(rows, ("currency", "open_in_invoices_cents", "aging_total_cents", "sum_of_customers_cents")),
            "buckets_add_up": rows_balance,
        },
    )


COLLECTIONS_ASSETS = [invoice_eligibility, collection_cases, ar_aging]
COLLECTIONS_CHECKS = [
    no_paid_or_void_invoice_is_eligible,
    eligible_invoices_have_a_reachable_customer,
    ar_aging_reconciles_to_open_invoices,
]
