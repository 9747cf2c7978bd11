"""Group `payments`: the ledgers finance reads, and the quick "paid at the AR source" check.

- `payments_posted` is an AssetSpec: the post_payment job's ops write the ledger (a side effect per event,
  not a recomputation), and `post_payments` logs an AssetMaterialization for it, so lineage and history
  show in the asset graph like any other table.
- `invoices_paid_in_billcom` records invoices in collection that were paid at the AR source itself (Bill.com,
  QBO or NetSuite: the table keeps its first name) and writes one "paid in <source>" note for each.
- `fee_ledger` is the success-only fee on collected money attributed to our collection (payments/fees.py).
- Job `paid_invoices_check` refreshes the invoices and received payments, re-runs eligibility and cases
  (so a paid invoice stops being collected now, not at the next 4-hourly cycle) and notes paid invoices.
  Sensors request it: `recently_paid_invoices_sensor` polls the AR source (one API call when nothing
  changed); with Bill.com, `billcom_invoice_events_sensor` also reacts to signed invoice.* webhooks at once.
"""

from datetime import UTC, datetime

import dagster as dg

from agentcollect_pipeline.ar_source import sync
from agentcollect_pipeline.ar_source.base import ARRecordNotFoundError
from agentcollect_pipeline.ar_source.resource import ARSourceResource
from agentcollect_pipeline.assets.metadata import definition_metadata, preview
from agentcollect_pipeline.money import from_minor_units
from agentcollect_pipeline.payments import billcom_events, fees, paid_in_billcom, status_notes
from agentcollect_pipeline.payments.posting import PaymentPoster
from agentcollect_pipeline.resources import ARSyncSettings, PaymentSettings, WarehouseResource
from agentcollect_pipeline.settings import AR_SOURCE_NAMES, env
from agentcollect_pipeline.warehouse import payments_schema as ps
from agentcollect_pipeline.warehouse.store import frame_from_rows

GROUP = "payments"
OWNERS = ["team:finance-data"]
TAGS = {"agentcollect/lane": "payments"}
WEBHOOK_BATCH = 500  # invoice ids per run; more arrive in the next tick


payments_posted = dg.AssetSpec(
    "payments_posted",
    deps=["billcom_invoices"],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"sql"},
    description=(
        "One row per payment event: what was posted to the AR source, on which invoice, with the source's "
        "payment id (status posted), or why not (already_recorded, needs_review). Written exactly once per event by "
        "the post_payment job; materialized by its post_payments op."
    ),
    metadata=definition_metadata(ps.payments_posted),
)


def _money(totals: dict[str, dict[str, int]], field: str) -> dict[str, str]:
    return {currency: f"{from_minor_units(t[field], currency):,}" for currency, t in sorted(totals.items())}


class PaidInvoicesConfig(dg.Config):
    invoice_ids: list[str] = []
    """Invoices named by AR source notifications (Bill.com invoice.* webhooks): re-read first, whatever the
    sync saw."""


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"sql"},
    pool="ar_source",
    deps=["billcom_invoices", "collection_cases", "payments_posted"],
    metadata=definition_metadata(ps.invoices_paid_in_billcom),
)
def invoices_paid_in_billcom(
    context: dg.AssetExecutionContext,
    config: PaidInvoicesConfig,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    payment_settings: PaymentSettings,
) -> dg.MaterializeResult:
    """Invoices we were collecting that the AR source now shows paid without our posting (its own payment
    link, or recorded by hand), each with one private note on the customer: "paid in <source> … collection
    stopped".

    In collection = a case for the customer and currency was open when the invoice turned paid, and it
    was overdue then (payments/paid_in_billcom.py). Recorded once per invoice; notes once per invoice.
    """
    store = warehouse.get_warehouse()
    source = ar_source.get_source(ar_settings)
    poster = PaymentPoster(store, source, policy=payment_settings.policy())
    reread = 0
    for invoice_id in sorted(set(config.invoice_ids)):
        try:
            reread += len(poster.refresh_invoices([invoice_id]))
        except ARRecordNotFoundError:
            # A notification for an invoice we may not read (deleted since, another org's key) is only a prompt.
            context.log.warning("invoice %s from a notification is not readable; skipped", invoice_id)
    new = paid_in_billcom.detect(store, ar_source.tables, timezone=ar_settings.org_timezone, now=datetime.now(UTC))
    noted, failed = paid_in_billcom.write_notes(
        paid_in_billcom.unnoted(store), poster.write_note, ar_settings.org_timezone, source.display_name
    )
    for row in new:
        context.log.info("invoice %s paid in %s while in case %s", row["invoice_number"] or row["invoice_id"],
                         source.display_name, row["case_id"])
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(store.count(ps.invoices_paid_in_billcom)),
        "dagster/table_name": ps.invoices_paid_in_billcom.name,
        "invoices_reread": dg.MetadataValue.int(reread),
        "newly_paid": dg.MetadataValue.int(len(new)),
        "notes_written": dg.MetadataValue.int(len(noted)),
        "notes_failed": dg.MetadataValue.int(len(failed)),
        "preview_newly_paid": preview(frame_from_rows(ps.invoices_paid_in_billcom, new[:10])),
    }
    if failed:
        # The rows are recorded; the next materialization writes the missing notes. Fail so it is seen.
        raise dg.Failure(
            description=f"{len(failed)} 'paid in {source.display_name}' note(s) failed; retried by the next check",
            metadata={**metadata, "failures": dg.MetadataValue.json(failed[:20])},
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"sql"},
    deps=["payments_posted", "billcom_received_payments", "billcom_invoices", "outreach_attempts"],
    metadata=definition_metadata(ps.fee_ledger),
)
def fee_ledger(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    payment_settings: PaymentSettings,
) -> dg.MaterializeResult:
    """Success-only fee: one row per payment line attributed to our collection, with the fee in minor units.

    Attributed = the invoice was overdue when paid and our outreach named it before the payment: the payment
    date lies between the first contact about the invoice and `fee_attribution_window_days` after the last.
    fee = amount x `fee_percent` / 100 in Decimal, rounded half-even per line to the minor unit.
    """
    rule = fees.FeeRule(
        percent=fees.parse_percent(payment_settings.fee_percent),
        window_days=payment_settings.fee_attribution_window_days,
        timezone=ar_settings.org_timezone,
    )
    store = warehouse.get_warehouse()
    rows = fees.compute(store, ar_source.tables, rule, datetime.now(UTC))
    fees.rewrite(store, rows)
    totals = fees.totals(rows)
    context.log.info("fee_ledger: %d attributed payment lines at %s%%", len(rows), rule.percent)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(rows)),
            "dagster/table_name": ps.fee_ledger.name,
            "fee_percent": dg.MetadataValue.text(format(rule.percent, "f")),
            "attribution_window_days": dg.MetadataValue.int(rule.window_days),
            "collected_attributed": dg.MetadataValue.json(_money(totals, "collected_cents")),
            "fee": dg.MetadataValue.json(_money(totals, "fee_cents")),
            "preview_latest": preview(frame_from_rows(ps.fee_ledger, rows[-10:])),
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"sql"},
    pool="ar_source",
    deps=["collection_cases", "billcom_customer_contacts"],
    metadata=definition_metadata(ps.customer_notes),
)
def customer_status_notes(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    payment_settings: PaymentSettings,
) -> dg.MaterializeResult:
    """Private notes on the AR source's customer for disputes, promises to pay, opt-outs and contacts found
    wrong — one per fact, dated, addresses masked — so finance sees at the source why collection changed.
    Payment notes are written by post_payment and invoices_paid_in_billcom; all share `customer_notes`."""
    store = warehouse.get_warehouse()
    pending = status_notes.unwritten(store, status_notes.note_facts(store, ar_source.tables, ar_settings.org_timezone))
    written, failed = [], []
    if pending:
        poster = PaymentPoster(store, ar_source.get_source(ar_settings), policy=payment_settings.policy())
        written, failed = status_notes.write_notes(pending, poster.write_note)
    by_kind: dict[str, int] = {}
    for fact in written:
        kind = fact.fact_key.split(":", 1)[0]
        by_kind[kind] = by_kind.get(kind, 0) + 1
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(store.count(ps.customer_notes)),
        "dagster/table_name": ps.customer_notes.name,
        "notes_written": dg.MetadataValue.int(len(written)),
        "notes_written_by_fact": dg.MetadataValue.json(by_kind),
        "notes_failed": dg.MetadataValue.int(len(failed)),
    }
    if failed:
        # Written notes stay written; the next cycle retries the rest. Fail so someone sees it.
        raise dg.Failure(
            description=f"{len(failed)} customer status note(s) failed; retried next cycle",
            metadata={**metadata, "failures": dg.MetadataValue.json([
                {"fact": fact.fact_key, "error": why} for fact, why in failed[:20]
            ])},
        )
    context.log.info("customer_status_notes: %d written", len(written))
    return dg.MaterializeResult(metadata=metadata)


PAYMENTS_ASSETS = [payments_posted, invoices_paid_in_billcom, fee_ledger, customer_status_notes]


def build_paid_invoices_lane(kind: str) -> tuple[dg.JobDefinition, list[dg.SensorDefinition]]:
    """Job `paid_invoices_check` over the configured source's tables, and the sensors that request it."""
    source_name = AR_SOURCE_NAMES[kind]
    invoices_stream = sync.streams_for(kind).invoices
    job = dg.define_asset_job(
        name="paid_invoices_check",
        selection=dg.AssetSelection.assets(
            f"{kind}_invoices", f"{kind}_received_payments", "invoice_eligibility", "collection_cases",
            "invoices_paid_in_billcom",
        ),
        # One process per run, like collection_cycle: every AR source call shares one client and its limits.
        executor_def=dg.in_process_executor,
        # Same lane as collection_cycle: both rewrite invoice_eligibility and collection_cases, and the lane's
        # run limit of 1 (deploy/dagster.yaml) keeps them from interleaving those read-then-write steps.
        tags={"agentcollect/lane": "collection"},
        description=f"Quick check for invoices paid in {source_name}: incremental sync of invoices and received "
        "payments, eligibility and cases re-evaluated, one note per newly paid invoice. Requested by sensors.",
    )

    @dg.sensor(
        name="recently_paid_invoices_sensor",
        job=job,
        minimum_interval_seconds=int(env("AGENTCOLLECT_PAID_INVOICES_SENSOR_INTERVAL_SECONDS") or 900),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Polls {source_name} for invoices updated since the last sync (one API call when nothing "
        "changed) and requests paid_invoices_check only when something did.",
    )
    def recently_paid_invoices_sensor(
        context: dg.SensorEvaluationContext,
        warehouse: WarehouseResource,
        ar_source: ARSourceResource,
        ar_settings: ARSyncSettings,
    ):
        store = warehouse.get_warehouse()
        mark = store.high_water_mark(invoices_stream.name)
        if mark is None:
            # The first, full read of the book is collection_cycle's job; this poller only looks for changes.
            return dg.SkipReason(f"{invoices_stream.name} has never been synced; waiting for collection_cycle")
        # The cursor is the newest change a run was already requested for; the sync's mark is what is stored.
        since = max(mark, datetime.fromisoformat(context.cursor)) if context.cursor else mark
        newest = ar_source.get_source(ar_settings).latest_invoice_change(since)
        if newest is None:
            return dg.SkipReason(f"no invoice updated in {source_name} after {since.isoformat()}")
        context.log.info("invoices updated in %s up to %s; requesting paid_invoices_check", source_name,
                         newest.isoformat())
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"invoices-updated:{newest.isoformat()}",
                                        tags={"agentcollect/trigger": "poll"})],
            cursor=newest.isoformat(),
        )

    sensors = [recently_paid_invoices_sensor]
    if kind == "billcom":
        sensors.append(_billcom_invoice_events_sensor(job))
    return job, sensors


def _billcom_invoice_events_sensor(job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="billcom_invoice_events_sensor",
        job=job,
        minimum_interval_seconds=int(env("AGENTCOLLECT_BILLCOM_EVENTS_SENSOR_INTERVAL_SECONDS") or 15),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Signed Bill.com invoice.* webhooks stored by the receiver -> paid_invoices_check at once, "
        "re-reading the invoices they name.",
    )
    def billcom_invoice_events_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        # A notification committed out of sequence order (PostgreSQL) can fall behind the cursor; it is only a
        # prompt, and the poller's next look at Bill.com covers the invoice anyway.
        after = int(context.cursor or 0)
        rows = billcom_events.notifications_after(warehouse.get_warehouse(), after, WEBHOOK_BATCH)
        if not rows:
            return dg.SkipReason(f"no Bill.com invoice notifications after sequence {after}")
        last = rows[-1]["sequence"]
        invoice_ids = sorted({r["invoice_id"] for r in rows})
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"billcom-events:{last}",
                    run_config=dg.RunConfig(
                        ops={"invoices_paid_in_billcom": PaidInvoicesConfig(invoice_ids=invoice_ids)}
                    ),
                    tags={"agentcollect/trigger": "webhook", "agentcollect/invoices": str(len(invoice_ids))},
                )
            ],
            cursor=str(last),
        )

    return billcom_invoice_events_sensor
