"""Jobs. `collection_cycle` materializes the collection assets; later groups join its selection."""

import dagster as dg

# "payments": the 4-hourly sync also notes invoices paid in Bill.com and refreshes the fee ledger (the
# payments_posted AssetSpec in that group has no compute; asset jobs skip it).
COLLECTION_GROUPS = ["ar_source", "collections", "payments"]

collection_cycle = dg.define_asset_job(
    name="collection_cycle",
    selection=dg.AssetSelection.groups(*COLLECTION_GROUPS),
    description="Sync the AR source and run the collection rules. Runs every 4 hours and from the UI.",
    # One process per run: every Bill.com call of the run shares one session and one 3-in-flight
    # semaphore; the `billcom` pool keeps concurrent runs within the same limit.
    executor_def=dg.in_process_executor,
    tags={"agentcollect/lane": "collection"},
)
