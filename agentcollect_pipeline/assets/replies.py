"""Asset `customer_replies`: what debtors answered, how each reply was understood, and what it changed; plus
the disputes those replies opened, for finance to review.

Replies arrive through the webhook receiver at any time (SMS, email through Inbound Parse, keys pressed on
our calls) and are written there (agent/effects.py). This asset is finance's window on that table, refreshed
by every collection cycle and, with `customer_status_notes` (the Customer note of each effect), by job
`reply_notes`, which `customer_replies_sensor` requests as soon as new replies are stored.
"""

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from agentcollect_pipeline.agent.disputes import review_list
from agentcollect_pipeline.assets.metadata import definition_metadata, mask_email, mask_phone, preview
from agentcollect_pipeline.resources import WarehouseResource
from agentcollect_pipeline.warehouse.agent_schema import customer_replies as replies_table
from agentcollect_pipeline.warehouse.store import frame_from_rows


@dg.asset(
    group_name="outreach",
    owners=["team:finance-data"],
    kinds={"sql"},
    metadata=definition_metadata(replies_table),
)
def customer_replies(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Every reply (SMS, email, keypress) with its intent — paid already, promise to pay (and date), dispute,
    wrong contact, invoice copy, stop, other, callback request — the customer and case it answers, and its
    effect on collection. Metadata also lists the open disputes to review (`agentcollect disputes list`)."""
    store = warehouse.get_warehouse()
    with store.engine.connect() as conn:
        by_intent = dict(
            conn.execute(sa.select(replies_table.c.intent, sa.func.count()).group_by(replies_table.c.intent)).all()
        )
        unmatched = conn.execute(
            sa.select(sa.func.count()).select_from(replies_table).where(replies_table.c.customer_id.is_(None))
        ).scalar_one()
        latest = [
            r._asdict()
            for r in conn.execute(sa.select(replies_table).order_by(replies_table.c.received_at.desc()).limit(10))
        ]
    frame = frame_from_rows(replies_table, latest).drop(columns=["body"])
    # A sender is an email address or a phone number: masked either way, as in every preview.
    frame["sender"] = frame["sender"].map(lambda s: mask_email(s) if "@" in str(s) else mask_phone(s))
    disputes = review_list(store)
    shown = pd.DataFrame([{k: row[k] for k in ("dispute_id", "invoice_number", "customer_name", "amount_due",
                                                "reason", "opened_at")} for row in disputes[:20]])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(sum(by_intent.values())),
            "dagster/table_name": replies_table.name,
            "replies_by_intent": dg.MetadataValue.json(by_intent),
            "unmatched_replies": dg.MetadataValue.int(unmatched),
            "preview_latest": preview(frame),
            "disputes_to_review": dg.MetadataValue.int(len(disputes)),
            "preview_disputes_to_review": dg.MetadataValue.md(
                shown.to_markdown(index=False) if len(shown) else "none"),
        }
    )


reply_notes = dg.define_asset_job(
    name="reply_notes",
    selection=dg.AssetSelection.assets("customer_replies", "customer_status_notes"),
    description="New replies: refresh customer_replies and write the Customer note of each effect.",
    executor_def=dg.in_process_executor,
    # Same lane as collection_cycle, which materializes the same two assets.
    tags={"agentcollect/lane": "collection"},
)


@dg.sensor(
    name="customer_replies_sensor",
    job=reply_notes,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Replies stored by the webhook receiver -> reply_notes (their Customer notes) without waiting "
    "for the 4-hourly cycle.",
)
def customer_replies_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    # customer_replies only grows (one row per provider message id): its size is the cursor.
    count = warehouse.get_warehouse().count(replies_table)
    seen = int(context.cursor or 0)
    if count <= seen:
        return dg.SkipReason(f"no new replies (still {count})")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"replies:{count}")], cursor=str(count))
