"""Asset `customer_replies`: what debtors answered, how each reply was understood, and what it changed.

Replies arrive through the webhook receiver at any time and are written there (agent/effects.py); this
asset is finance's window on that table, refreshed by every collection cycle (it is a root of the outreach
group, which the cycle selects).
"""

import dagster as dg
import sqlalchemy as sa

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
    """Every reply (SMS, email) with its intent — paid already, promise to pay (and date), dispute, wrong
    contact, invoice copy, stop, other — the customer and case it answers, and its effect on collection."""
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
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(sum(by_intent.values())),
            "dagster/table_name": replies_table.name,
            "replies_by_intent": dg.MetadataValue.json(by_intent),
            "unmatched_replies": dg.MetadataValue.int(unmatched),
            "preview_latest": preview(frame),
        }
    )
