"""Job `post_payment`: validate -> match -> post -> write note -> refresh the invoice, for a batch of events.

One run per batch (a run start costs seconds). Each op handles every event of the batch and lets one
event's failure not stop the others; the last op fails the run when any event failed, so the run history
shows it, and the sensor re-requests those events later. Exactly-once lives in PaymentPoster's ledger, so
re-executing any of these runs, in whole or from failure, posts nothing twice.
"""

import dagster as dg

from agentcollect_pipeline.ar_source.resource import ARSourceResource
from agentcollect_pipeline.money import from_minor_units
from agentcollect_pipeline.payments.posting import (
    TERMINAL,
    Outcome,
    PaymentPoster,
    load_events,
    payment_note,
    validate_event,
)
from agentcollect_pipeline.resources import ARSyncSettings, PaymentSettings, WarehouseResource
from agentcollect_pipeline.warehouse.payments_schema import payments_posted

TAGS = {"agentcollect/lane": "payments"}


class PaymentBatchConfig(dg.Config):
    events: list[str]
    """Events of this run as "source:event_id" (e.g. "webhook:evt_123"), in arrival order."""


def _poster(warehouse: WarehouseResource, ar_source: ARSourceResource, ar_settings: ARSyncSettings,
            payment_settings: PaymentSettings) -> PaymentPoster:
    return PaymentPoster(warehouse.get_warehouse(), ar_source.get_source(ar_settings), policy=payment_settings.policy())


def _failed(event: dict, stage: str, exc: Exception) -> dict:
    # No secret can be in here: AR source errors carry codes and messages only (see the clients).
    return {"event": f"{event['source']}:{event['event_id']}", "stage": stage, "error": f"{type(exc).__name__}: {exc}"}


@dg.op(tags=TAGS, description="Load the batch's events; decided ones are skipped, invalid ones go to needs_review.")
def validate_payment_events(
    context: dg.OpExecutionContext,
    config: PaymentBatchConfig,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    payment_settings: PaymentSettings,
) -> dict:
    poster = _poster(warehouse, ar_source, ar_settings, payment_settings)
    events = load_events(poster.warehouse, config.events)
    batch: dict = {"todo": [], "done": [], "failed": []}
    for event in events:
        decided = poster.decided(event)
        if decided is not None:
            context.log.info("%s:%s already %s; nothing to do", event["source"], event["event_id"], decided.status)
            batch["done"].append(decided.as_dict())
            continue
        problem = validate_event(event)
        if problem:
            batch["done"].append(poster.review(event, "invalid_event", problem).as_dict())
        else:
            batch["todo"].append(event)
    return batch


@dg.op(tags=TAGS, pool="ar_source", description="Find each event's invoice at the AR source; unknown or ambiguous -> needs_review.")
def match_payment_invoices(
    context: dg.OpExecutionContext,
    batch: dict,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    payment_settings: PaymentSettings,
) -> dict:
    poster = _poster(warehouse, ar_source, ar_settings, payment_settings)
    matched = []
    for event in batch["todo"]:
        try:
            found = poster.match(event)
        except Exception as exc:  # one event's trouble must not stop the batch; the run fails at the end
            context.log.error("matching %s:%s failed: %s", event["source"], event["event_id"], exc)
            batch["failed"].append(_failed(event, "match", exc))
            continue
        if found.invoice is None:
            batch["done"].append(poster.review(event, found.reason or "unknown_invoice", found.detail or "").as_dict())
        else:
            matched.append({"event": event, "invoice": found.invoice})
    return {**batch, "todo": matched}


@dg.op(tags=TAGS, pool="ar_source", description="Post each payment exactly once (ledger reservation + our key in the payment's reference at the source).")
def post_payments(
    context: dg.OpExecutionContext,
    batch: dict,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    payment_settings: PaymentSettings,
) -> dict:
    poster = _poster(warehouse, ar_source, ar_settings, payment_settings)
    done = list(batch["done"])
    for item in batch["todo"]:
        event = item["event"]
        try:
            outcome = poster.post(event, item["invoice"])
        except Exception as exc:
            context.log.error("posting %s:%s failed: %s", event["source"], event["event_id"], exc)
            batch["failed"].append(_failed(event, "post", exc))
            continue
        context.log.info(
            "%s:%s -> %s %s", event["source"], event["event_id"], outcome.status,
            outcome.received_payment_id or outcome.reason or outcome.detail or "",
        )
        done.append(outcome.as_dict())
    decided = [o for o in done if o["status"] in TERMINAL]
    if decided:
        # payments_posted is an AssetSpec written by this op (a side effect per event, not a recomputation):
        # one materialization per run that decided something, so the asset's history is the run history.
        posted = [o for o in decided if o["status"] == "posted"]
        amounts: dict[str, int] = {}
        for o in posted:
            amounts[o["currency"]] = amounts.get(o["currency"], 0) + o["amount_cents"]
        context.log_event(
            dg.AssetMaterialization(
                asset_key="payments_posted",
                description=f"{len(posted)} payment(s) posted to the AR source by this run",
                metadata={
                    "dagster/row_count": dg.MetadataValue.int(poster.warehouse.count(payments_posted)),
                    "dagster/table_name": payments_posted.name,
                    **{status: dg.MetadataValue.int(sum(o["status"] == status for o in decided)) for status in TERMINAL},
                    "posted_amount": dg.MetadataValue.json(
                        {c: f"{from_minor_units(cents, c):,}" for c, cents in sorted(amounts.items())}
                    ),
                    "received_payment_ids": dg.MetadataValue.text(", ".join(o["received_payment_id"] for o in posted)),
                },
            )
        )
    return {"outcomes": done, "failed": batch["failed"]}


@dg.op(tags=TAGS, pool="ar_source", description="Write one private status note per fact on the customer at the AR source.")
def write_payment_notes(
    context: dg.OpExecutionContext,
    batch: dict,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    payment_settings: PaymentSettings,
) -> dict:
    poster = _poster(warehouse, ar_source, ar_settings, payment_settings)
    outcomes = [Outcome(**o) for o in batch["outcomes"]]
    # An outcome replayed from the ledger does not know the balance left; ask the AR source so a partial
    # payment's note does not claim collection stopped.
    unknown_due = [o.invoice_id for o in outcomes if o.status == "posted" and o.amount_due_after_cents is None]
    if unknown_due:
        due = {r["invoice_id"]: r["amount_due_cents"] for r in poster.source.read_invoices(unknown_due, poster.currency_of)}
        for o in outcomes:
            if o.status == "posted" and o.amount_due_after_cents is None:
                o.amount_due_after_cents = due.get(o.invoice_id)
    for outcome in outcomes:
        note = payment_note(outcome, poster.source.display_name)
        if note is None:
            continue
        try:
            message_id = poster.write_note(note[0], outcome.customer_id, note[1])
        except Exception as exc:
            context.log.error("note for %s failed: %s", outcome.posting_key, exc)
            batch["failed"].append(_failed({"source": outcome.source, "event_id": outcome.event_id}, "note", exc))
            continue
        context.log.info("note %s on customer %s: %s", message_id, outcome.customer_id, note[0])
    return {"outcomes": [o.as_dict() for o in outcomes], "failed": batch["failed"]}


@dg.op(tags=TAGS, pool="ar_source", description="Re-read paid invoices into the AR source's invoices table so collection stops now.")
def refresh_paid_invoices(
    context: dg.OpExecutionContext,
    batch: dict,
    warehouse: WarehouseResource,
    ar_source: ARSourceResource,
    ar_settings: ARSyncSettings,
    payment_settings: PaymentSettings,
) -> list:
    poster = _poster(warehouse, ar_source, ar_settings, payment_settings)
    outcomes = batch["outcomes"]
    ids = [o["invoice_id"] for o in outcomes if o["status"] in ("posted", "already_recorded") and o["invoice_id"]]
    rows = poster.refresh_invoices(ids)
    for row in rows:
        context.log.info("invoice %s now has %s due (status %s)", row["invoice_number"], row["amount_due_cents"],
                         row["payment_status"])
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o["status"]] = counts.get(o["status"], 0) + 1
    context.add_output_metadata({**{k: dg.MetadataValue.int(v) for k, v in counts.items()},
                                 "failed": dg.MetadataValue.int(len(batch["failed"]))})
    if batch["failed"]:
        raise dg.Failure(
            description=f"{len(batch['failed'])} payment event(s) failed; the sensor requests them again",
            metadata={"failed": dg.MetadataValue.json(batch["failed"])},
        )
    return outcomes


@dg.job(
    tags=TAGS,
    executor_def=dg.in_process_executor,
    description="Post a batch of payment events to the AR source exactly once, note the customer, refresh the invoice.",
)
def post_payment():
    refresh_paid_invoices(write_payment_notes(post_payments(match_payment_invoices(validate_payment_events()))))
