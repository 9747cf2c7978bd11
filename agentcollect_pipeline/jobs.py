"""Jobs. `collection_cycle` materializes the collection assets; later groups join its selection."""

import dagster as dg

# "payments": the 4-hourly sync also notes invoices paid at the AR source and refreshes the fee ledger (the
# payments_posted AssetSpec in that group has no compute; asset jobs skip it).
COLLECTION_GROUPS = ["ar_source", "collections", "payments"]

collection_cycle = dg.define_asset_job(
    name="collection_cycle",
    # The cycle also plans outreach (the root of the outreach group, outreach_plan); sending is
    # send_due_outreach's job, every 15 minutes, so a step due at night waits for the debtor's morning
    # instead of for the next 4-hour tick. A group selection, unlike a key, tolerates a code location
    # (or a test) that leaves outreach out.
    selection=dg.AssetSelection.groups(*COLLECTION_GROUPS) | dg.AssetSelection.groups("outreach").roots(),
    description="Sync the AR source, run the collection rules and plan outreach. Runs every 4 hours and from the UI.",
    # One process per run: every AR source call of the run shares one client (session or token, and the
    # source's in-flight limit); the `ar_source` pool keeps concurrent runs within the same limit.
    executor_def=dg.in_process_executor,
    tags={"agentcollect/lane": "collection"},
)
