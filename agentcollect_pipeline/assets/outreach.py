"""Group `outreach`: the plan (what is due now, for whom, why) and the attempts (send it, at most once).

`send_due_outreach` materializes both every 15 minutes; quiet hours are decided per debtor in the planner,
so the schedule itself runs around the clock. The clock is injectable: run config `now` (ISO datetime).
"""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from agentcollect_pipeline.agent.composer import Composer
from agentcollect_pipeline.agent.inbound_email import reply_address
from agentcollect_pipeline.agent.message import InvoiceLine, MessageContext
from agentcollect_pipeline.ar_source.base import ARRecordNotFoundError
from agentcollect_pipeline.ar_source.resource import ARSourceResource
from agentcollect_pipeline.assets.collections import collection_cases
from agentcollect_pipeline.assets.metadata import preview
from agentcollect_pipeline.collection_policy import CollectionPolicyResource
from agentcollect_pipeline.outreach import leases, ledger, payment_links
from agentcollect_pipeline.outreach.channels import (
    TWILIO_INVALID,
    TWILIO_OPTED_OUT,
    OutreachSettings,
    SendGridEmailResource,
    SendResult,
    Throttle,
    TwilioResource,
)
from agentcollect_pipeline.outreach.tokens import unsubscribe_token
from agentcollect_pipeline.resources import ARSyncSettings, WarehouseResource
from agentcollect_pipeline.rules import agent_actions
from agentcollect_pipeline.rules.cadence import contact_points, invalid_contact_report, mask, plan_outreach
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse.agent_schema import customer_replies

GROUP = "outreach"
OWNERS = ["team:finance-data"]
LEASE = "send_due_outreach"


class OutreachConfig(dg.Config):
    now: str | None = None
    """Plan and send as if it were this moment (ISO 8601 with offset). Replays a month through the jobs."""


def _now(config: OutreachConfig) -> datetime:
    if not config.now:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(config.now)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _records(frame: pd.DataFrame, table: sa.Table) -> list[dict]:
    out = []
    for row in frame.to_dict("records"):
        out.append({c.name: (None if _missing(row.get(c.name)) else _py(row.get(c.name))) for c in table.columns})
    return out


def _missing(value) -> bool:
    return value is None or (not isinstance(value, list | tuple | str) and bool(pd.isna(value)))


def _py(value):
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


def _update_promises(store, ar_source: ARSourceResource, now: datetime, timezone: str, grace_days: int) -> pd.DataFrame:
    """Mark pending promises kept (nothing owed any more) or broken (date + grace passed, still owed); the
    status notes asset writes a note for each new status. Returns promises_to_pay after the update."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    promises = store.read_frame(cs.promises_to_pay)
    if promises.empty:
        return promises
    updates = agent_actions.promise_updates(promises, store.read_frame(ar_source.tables.invoices), today, grace_days)
    if len(updates):
        table = cs.promises_to_pay
        with store.transaction() as conn:
            for promise_id, status in updates.itertuples(index=False):
                conn.execute(table.update().where(table.c.promise_id == promise_id, table.c.status == "pending")
                             .values(status=status))
        promises = store.read_frame(cs.promises_to_pay)
    return promises


@dg.asset(group_name=GROUP, owners=OWNERS, kinds={"pandas", "sql"}, deps=[collection_cases])
def outreach_plan(
    context: dg.AssetExecutionContext,
    config: OutreachConfig,
    warehouse: WarehouseResource,
    collection_policy: CollectionPolicyResource,
    outreach_settings: OutreachSettings,
    ar_source: ARSourceResource,
) -> dg.MaterializeResult:
    """Per open case: the step due now (channel, destination, invoices, why) or why it waits and until when."""
    now = _now(config)
    full_policy = collection_policy.load()
    policy = full_policy.outreach
    store = warehouse.get_warehouse()
    customers = store.read_frame(ar_source.tables.customers)
    contacts = store.read_frame(ar_source.tables.customer_contacts)
    invalid = store.read_frame(os_.invalid_contacts)
    cases = store.read_frame(cs.collection_cases)
    history = store.read_frame(os_.outreach_attempts)
    inputs = dict(
        debtors=customers,
        points=contact_points(customers, contacts),
        opt_outs=store.read_frame(cs.opt_outs),
        consents=store.read_frame(os_.contact_consents),
        invalid=invalid,
        history=history,
        now=now,
        policy=policy,
        default_timezone=outreach_settings.default_timezone,
    )
    ladder = plan_outreach(cases=cases, **inputs)
    # What the debtors' replies call for: promises kept or broken (a broken one gets a follow-up), copies asked for.
    promised = _update_promises(store, ar_source, now, outreach_settings.default_timezone, full_policy.promise_grace_days)
    requested = pd.concat([agent_actions.promise_followups(promised, cases, history),
                           agent_actions.copy_requests(store.read_frame(customer_replies), cases, history)],
                          ignore_index=True)
    plan = agent_actions.merge_plans(ladder, agent_actions.plan_requested(requested, cases, **inputs))
    due = plan.due.assign(state="due", next_at=None, planned_at=now)
    waiting = plan.waiting.rename(columns={"reason": "why"}).assign(state="waiting", planned_at=now)
    table = pd.concat([due, waiting], ignore_index=True) if len(waiting) else due
    table = table.drop_duplicates("case_id")
    with store.transaction() as conn:
        conn.execute(os_.outreach_plan.delete())
        rows = _records(table, os_.outreach_plan)
        if rows:
            conn.execute(os_.outreach_plan.insert(), rows)
    context.log.info("outreach_plan at %s: %d due, %d waiting", now.isoformat(), len(due), len(waiting))
    reasons = waiting["why"].str.split(":").str[0].value_counts().to_dict() if len(waiting) else {}
    # Contacts that are never used: numbers that do not parse/validate to E.164, malformed or flagged emails,
    # and addresses a provider reported undeliverable (invalid_contacts). Masked; per customer.
    bad = invalid_contact_report(customers, contacts, invalid)
    if len(bad):
        context.log.warning("outreach_plan: %d invalid contact(s) across %d customer(s), never contacted",
                            len(bad), bad["customer_id"].nunique())
    per_customer = {
        str(cid): {str(ch): int(n) for ch, n in group["kind"].value_counts().items()}
        for cid, group in bad.groupby("customer_id")
    } if len(bad) else {}
    return dg.MaterializeResult(metadata={
        "invalid_contacts": dg.MetadataValue.int(len(bad)),
        "invalid_contacts_by_customer": dg.MetadataValue.json(per_customer),
        "preview_invalid_contacts": dg.MetadataValue.md(
            bad.head(20).to_markdown(index=False) if len(bad) else "none"),
        "dagster/row_count": dg.MetadataValue.int(len(table)),
        "planned_at": dg.MetadataValue.text(now.isoformat()),
        "due": dg.MetadataValue.int(len(due)),
        "due_by_channel": dg.MetadataValue.json(due["channel"].value_counts().to_dict() if len(due) else {}),
        "waiting_reasons": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
        "preview_due": preview(due[["case_id", "step", "channel", "why"]].head(10)),
    })


# -- sending ------------------------------------------------------------------------------------------


def _fresh_invoices(ar_source: ARSourceResource, ar_settings: ARSyncSettings, store, invoice_ids: list[str],
                    currency_of: dict[str, str]) -> dict[str, dict]:
    """Re-read the invoices from the AR source right before sending (one batched read for the whole run)."""
    if not invoice_ids:
        return {}
    source = ar_source.get_source(ar_settings)

    def currency(customer_id: str | None) -> str | None:
        return currency_of.get(customer_id or "")

    try:
        rows = source.read_invoices(invoice_ids, currency)
    except ARRecordNotFoundError as exc:
        # Deleted at the source since the sync: nothing to collect; the rest of the batch still goes.
        gone = set(exc.missing_ids)
        if not gone:
            raise
        rows = source.read_invoices([i for i in invoice_ids if i not in gone], currency)
    return {row["invoice_id"]: row for row in rows}


def _still_collectable(row: dict | None, disputed: set[str], minimum: int | None) -> bool:
    """Paid, voided, disputed, scheduled or now under the policy minimum since the last sync: drop it."""
    if row is None or not row.get("is_active"):
        return False
    due = row.get("amount_due_cents") or 0
    if due <= 0 or row.get("payment_status") in ("0", "4") or row.get("has_auto_pay"):
        return False
    if row["invoice_id"] in disputed:
        return False
    return minimum is None or due >= minimum


# pool: the freshness check reads the AR source, whose concurrency limits hold across all runs.
@dg.asset(group_name=GROUP, owners=OWNERS, kinds={"sql", "twilio", "sendgrid"}, deps=[outreach_plan], pool="ar_source")
def outreach_attempts(
    context: dg.AssetExecutionContext,
    config: OutreachConfig,
    warehouse: WarehouseResource,
    collection_policy: CollectionPolicyResource,
    outreach_settings: OutreachSettings,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    sendgrid: SendGridEmailResource,
    twilio: TwilioResource,
) -> dg.MaterializeResult:
    """Send what the plan says is due: reconcile leftovers, re-check invoices, reserve, send, confirm.

    The audit log: one row per (case, step) in outreach_attempts with provider id, status and timestamps.
    """
    now = _now(config)
    settings = outreach_settings
    policy = collection_policy.load()
    store = warehouse.get_warehouse()
    counts = {"sent": 0, "rejected": 0, "unknown": 0, "already_reserved": 0, "dropped_stale": 0, "dry_run": 0,
              "skipped_no_unsubscribe_secret": 0, "throttled": 0, "deferred_provider_throttled": 0}

    # One sender at a time, even where the run coordinator would allow two overlapping runs.
    holder = context.run.run_id
    ttl = timedelta(seconds=settings.lease_seconds)
    if leases.acquire(store, LEASE, holder, ttl) is None:
        other = leases.holder_of(store, LEASE)
        context.log.warning("send_due_outreach: lease held by run %s; this run sends nothing", other)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": dg.MetadataValue.int(store.count(os_.outreach_attempts)),
            "skipped": dg.MetadataValue.text(f"another run ({other}) holds the send_due_outreach lease"),
            **_callback_metadata(store),
        })
    try:
        return _send_due(context, now, settings, policy, store, ar_source, ar_settings, sendgrid, twilio, counts,
                         holder, ttl)
    finally:
        leases.release(store, LEASE, holder)


def _send_due(context, now, settings, policy, store, ar_source, ar_settings, sendgrid, twilio, counts, holder,
              ttl) -> dg.MaterializeResult:
    dry = settings.dry_run
    reconciled = {"found": 0, "unconfirmed": 0}
    if not dry:
        reconciled = ledger.reconcile(store, now, timedelta(seconds=settings.reconcile_after_seconds), twilio)

    due = store.read_frame(os_.outreach_plan, os_.outreach_plan.c.state == "due").head(settings.max_sends_per_run)
    customers = store.read_frame(ar_source.tables.customers).set_index("customer_id")
    disputes = store.read_frame(cs.disputes)
    disputed = set(disputes.loc[disputes["closed_at"].isna(), "invoice_id"])
    wanted = sorted({i for ids in due["invoice_ids"].dropna() for i in ids.split(",") if i})
    currency_of = customers["currency"].dropna().to_dict()
    fresh = _fresh_invoices(ar_source, ar_settings, store, wanted, currency_of)
    # Bill.com's payment link of each message's first invoice: cached per invoice, missing ones in one batch.
    links = payment_links.prepare(store, ar_source, settings.payment_link_template, due, fresh, customers, now,
                                  context.log)

    sent_rows = []
    throttle = Throttle({"sendgrid": sendgrid.messages_per_second, "sms": twilio.messages_per_second,
                         "voice": twilio.calls_per_second})
    # Every message is written by the composer: templates, or the LLM when configured and allowed, checked by
    # the guardrails (a refused draft is replaced by the template; the ledger row says which and why).
    composer = Composer.from_policy(policy.messaging)
    promised = store.read_frame(cs.promises_to_pay).set_index("promise_id")["promised_date"].to_dict()
    try:
        _send_actions(context, now, settings, policy, store, sendgrid, twilio, counts, holder, ttl, due, customers,
                      disputed, fresh, throttle, composer, promised, sent_rows, links)
    finally:
        composer.close()

    context.log.info("outreach_attempts: %s; reconciled %s; paced %.1fs", counts, reconciled, throttle.waited_s)
    total = store.count(os_.outreach_attempts)
    with store.engine.connect() as conn:
        sources = dict(conn.execute(sa.select(os_.outreach_attempts.c.draft_source, sa.func.count())
                                    .where(os_.outreach_attempts.c.draft_source.is_not(None))
                                    .group_by(os_.outreach_attempts.c.draft_source)).all())
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(total),
        "dry_run": dg.MetadataValue.bool(dry),
        "paced_seconds": dg.MetadataValue.float(round(throttle.waited_s, 3)),
        "drafts_by_source": dg.MetadataValue.json({str(k): int(v) for k, v in sources.items()}),
        **_callback_metadata(store),
        **{k: dg.MetadataValue.int(v) for k, v in links.metadata().items()},
        **{f"this_run/{k}": dg.MetadataValue.int(v) for k, v in counts.items()},
        **{f"reconciled/{k}": dg.MetadataValue.int(v) for k, v in reconciled.items()},
        "preview": dg.MetadataValue.md(pd.DataFrame(sent_rows).head(10).to_markdown(index=False) if sent_rows else "none"),
    })


def _compose(composer: Composer, policy, action: dict, ctx: MessageContext, purpose: str):
    tone = policy.messaging.tone_for(action["step"], action.get("tone"))
    return composer.compose(action["channel"], tone, ctx, purpose)


def _send_actions(context, now, settings, policy, store, sendgrid, twilio, counts, holder, ttl, due, customers,
                  disputed, fresh, throttle, composer, promised, sent_rows, links=None) -> None:
    dry = settings.dry_run
    for action in due.to_dict("records"):
        if not dry and not leases.renew(store, LEASE, holder, ttl):
            context.log.error("send_due_outreach: lease lost (expired and taken); stopping before the next send")
            break
        minimum = policy.minimum_amount_cents.get(action["currency"])
        keep = [i for i in action["invoice_ids"].split(",")
                if _still_collectable(fresh.get(i), disputed, minimum)]
        if not keep:
            counts["dropped_stale"] += 1
            context.log.info("case %s: every invoice paid/voided/disputed since the sync; nothing sent", action["case_id"])
            continue
        action["invoice_ids"] = ",".join(keep)
        action["total_due_cents"] = sum(int(fresh[i]["amount_due_cents"]) for i in keep)
        customer = customers.loc[action["customer_id"]] if action["customer_id"] in customers.index else None
        lines = tuple(
            InvoiceLine(i, str(fresh[i].get("invoice_number") or i), fresh[i].get("due_date"),
                        int(fresh[i]["amount_due_cents"]))
            for i in keep
        )
        lines = tuple(sorted(lines, key=lambda line: line.due_date or date.max))
        if links is not None:
            action["payment_link"] = links.for_action(lines[0].invoice_id, action)

        purpose = agent_actions.purpose_of(str(action["step"]))
        promise_id = str(action["step"]).removeprefix(agent_actions.FOLLOWUP_PREFIX)
        promised_date = _date(promised.get(promise_id)) if purpose == "followup" else None
        if dry:
            message = _compose(composer, policy, action, _context(
                settings, action, customer, lines, "DRYRUN", secret=sendgrid.unsubscribe_secret,
                promised_date=promised_date), purpose).message
            with store.transaction() as conn:
                store.upsert(conn, os_.outreach_outbox, [{
                    "case_id": action["case_id"], "step": action["step"], "channel": action["channel"],
                    "destination": action["destination"], "subject": message.subject, "body": message.text,
                    "written_at": now}])
            counts["dry_run"] += 1
            continue

        if action["channel"] == "email" and not sendgrid.unsubscribe_secret:
            # Every email must carry a working opt-out link; without the key it cannot be signed.
            counts["skipped_no_unsubscribe_secret"] += 1
            context.log.error("case %s: email not sent: AGENTCOLLECT_UNSUBSCRIBE_SECRET is not set", action["case_id"])
            continue
        if throttle.refused("sendgrid" if action["channel"] == "email" else "twilio"):
            counts["deferred_provider_throttled"] += 1  # it answered 429 past the retry budget: next run
            continue
        attempt_id = ledger.reserve(store, action, now, context.run.run_id)
        if attempt_id is None:
            counts["already_reserved"] += 1  # another run or an earlier crash holds this (case, step)
            continue
        ctx = _context(settings, action, customer, lines, ledger.reference(attempt_id), attempt_id,
                       secret=sendgrid.unsubscribe_secret, promised_date=promised_date)
        draft = _compose(composer, policy, action, ctx, purpose)
        message = draft.message
        # LLM drafts refused, and any finding on the template sent (a bad override in messaging.templates_dir).
        rejections = list(draft.rejected) + [f"template: {problem}" for problem in draft.problems]
        voicemail = None
        if action["channel"] == "voice":
            voicemail_draft = _compose(composer, policy, action, ctx, "voicemail")
            voicemail = voicemail_draft.message
            rejections += [f"voicemail: {reason}" for reason in voicemail_draft.rejected]
        ledger.record_draft(store, attempt_id, draft.source, rejections, now)
        callback = f"{settings.public_base_url}/webhooks/twilio/status?attempt_id={attempt_id}"
        if action["channel"] == "email":
            throttle.wait("sendgrid")
            # Reply-To names the attempt (replies+att_…@…): Inbound Parse brings the answer back to this case.
            reply_to = reply_address(sendgrid.reply_to, attempt_id) if sendgrid.reply_to else None
            result = sendgrid.send(attempt_id, action["destination"], message.subject or "", message.text,
                                   message.html, unsubscribe_url=ctx.unsubscribe_url, reply_to=reply_to)
            provider = "sendgrid"
        elif action["channel"] == "sms":
            throttle.wait("sms")
            result = twilio.send_sms(action["destination"], message.text, callback)
            provider = "twilio"
        else:
            # The script is fetched when the call is answered: the full one for a person, the voicemail one
            # for an answering machine (AnsweredBy). Both are stored before the call is placed.
            with store.transaction() as conn:
                store.upsert(conn, os_.call_scripts, [{
                    "attempt_id": attempt_id, "full_twiml": message.text, "voicemail_twiml": voicemail.text,
                    "payment_link": ctx.payment_link, "org_name": settings.org_name, "created_at": now,
                    "served": None}])
            throttle.wait("voice")
            result = twilio.place_call(action["destination"], callback,
                                       url=f"{settings.public_base_url}/webhooks/twilio/voice/{attempt_id}")
            provider = "twilio"
        _record_result(store, attempt_id, action, result, provider, now)
        if result.outcome == "throttled":
            throttle.refuse(provider)
        counts[result.outcome] += 1
        sent_rows.append({"attempt_id": attempt_id, "case_id": action["case_id"], "step": action["step"],
                          "channel": action["channel"], "destination": mask(action["destination"]),
                          "draft": draft.source, "outcome": result.outcome})


def _date(value) -> date | None:
    if value is None or (not isinstance(value, date) and pd.isna(value)):
        return None
    return value.date() if isinstance(value, datetime | pd.Timestamp) else value


def _context(settings: OutreachSettings, action: dict, customer, lines, ref: str, attempt_id: str = "dry_run",
             secret: str = "", promised_date: date | None = None):
    name = None
    if customer is not None:
        name = customer.get("company_name") if not _missing(customer.get("company_name")) else customer.get("name")
    link = action.get("payment_link") or settings.payment_link_template.format(
        invoice_id=lines[0].invoice_id, customer_id=action["customer_id"], case_id=action["case_id"])
    token = unsubscribe_token(secret, attempt_id, action["destination"]) if secret else "unsigned"
    unsubscribe = settings.unsubscribe_url_template.format(
        public_base_url=settings.public_base_url, attempt_id=attempt_id, token=token)
    return MessageContext(
        org_name=settings.org_name, customer_name=str(name or "there"), currency=action["currency"],
        invoices=lines, payment_link=link, unsubscribe_url=unsubscribe, reference=ref,
        gather_url=f"{settings.public_base_url}/webhooks/twilio/gather?attempt_id={attempt_id}",
        promised_date=promised_date,
    )


def _callback_metadata(store) -> dict[str, dg.MetadataValue]:
    """Debtors who pressed 2 on a call and wait for a person to call back (masked numbers)."""
    requests = store.read_frame(os_.callback_requests, os_.callback_requests.c.status == "open")
    # The id is what `agentcollect contacts close-callback <id> --by … --why …` takes once someone called back.
    shown = requests[["request_id", "case_id", "customer_id", "number", "requested_at"]].head(10).assign(
        number=lambda f: f["number"].map(mask)) if len(requests) else requests
    return {
        "callback_requests_open": dg.MetadataValue.int(len(requests)),
        "preview_callback_requests": dg.MetadataValue.md(shown.to_markdown(index=False) if len(shown) else "none"),
    }


def _record_result(store, attempt_id: str, action: dict, result: SendResult, provider: str, now: datetime) -> None:
    if result.outcome == "sent":
        ledger.confirm(store, attempt_id, now, status="sent", provider=provider, provider_id=result.provider_id,
                       sent_at=now, invoice_ids=action["invoice_ids"], total_due_cents=action["total_due_cents"])
        return
    if result.outcome == "rejected":
        ledger.confirm(store, attempt_id, now, status="rejected", provider=provider, error_code=result.error_code,
                       error_message=result.error_message)
        code = int(result.error_code) if (result.error_code or "").isdigit() else None
        with store.transaction() as conn:
            if code in TWILIO_OPTED_OUT:
                ledger.record_opt_out(conn, action["channel"], action["destination"], f"twilio error {code}", now)
            elif code in TWILIO_INVALID:
                ledger.mark_invalid(conn, action["channel"], action["destination"], f"twilio error {code}", now)
        return
    if result.outcome == "throttled":
        # 429 past the retry budget: definitely not accepted. The reservation is released (why is kept) and
        # the next run sends the step; nothing to reconcile, no chance of a second message.
        ledger.release(store, attempt_id, now, provider, f"{result.error_code}: {result.error_message}")
        return
    # Unknown outcome: keep `reserved` (reconciliation decides, never a blind resend); note why.
    with store.transaction() as conn:
        conn.execute(os_.outreach_attempts.update().where(os_.outreach_attempts.c.attempt_id == attempt_id).values(
            provider=provider, error_code=result.error_code, error_message=result.error_message, updated_at=now))


OUTREACH_ASSETS = [outreach_plan, outreach_attempts]

send_due_outreach = dg.define_asset_job(
    name="send_due_outreach",
    selection=dg.AssetSelection.assets(outreach_plan, outreach_attempts),
    description="Plan and send what is due now (quiet hours, caps, consent, opt-outs), at most once per step.",
    executor_def=dg.in_process_executor,
    tags={"agentcollect/lane": "outreach"},
)

send_due_outreach_every_15_minutes = dg.ScheduleDefinition(
    name="send_due_outreach_every_15_minutes",
    job=send_due_outreach,
    cron_schedule="*/15 * * * *",
    # UTC on purpose: each debtor's own window is enforced by the planner, not by the schedule.
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every 15 minutes: send the outreach that is due and allowed now.",
)
