"""collection_cycle on a Dagster instance and a project database in PostgreSQL (a fresh database per run).

CI must run this: it is skipped only when CI is unset and no PostgreSQL answers, and it says so.
"""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from agentcollect_pipeline.assets.ar_source import build_ar_source_assets
from agentcollect_pipeline.assets.collections import COLLECTIONS_ASSETS, COLLECTIONS_CHECKS
from agentcollect_pipeline.collection_policy import CollectionPolicyResource
from agentcollect_pipeline.resources import AlertWebhookResource, ARSyncSettings, WarehouseResource
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import schema

AR_SOURCE_ASSETS, AR_SOURCE_CHECKS = build_ar_source_assets("billcom")

pytestmark = pytest.mark.postgres


def test_sync_and_rules_on_postgres_instance_and_warehouse(billcom, postgres_url):
    warehouse_resource = WarehouseResource(database_url=postgres_url)
    resources = {
        "ar_source": billcom.ar_source(warehouse_resource),
        "warehouse": warehouse_resource,
        "ar_settings": ARSyncSettings(max_invalid_share=0.2),
        "collection_policy": CollectionPolicyResource(),
        "alerts": AlertWebhookResource(),
    }
    overrides = {"storage": {"postgres": {"postgres_url": postgres_url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize(
            [*AR_SOURCE_ASSETS, *AR_SOURCE_CHECKS, *COLLECTIONS_ASSETS, *COLLECTIONS_CHECKS],
            resources=resources,
            instance=instance,
        )
        assert result.success
        assert instance.get_runs_count() == 1
        records = instance.fetch_materializations(dg.AssetKey("billcom_invoices"), limit=1).records
        assert records[0].asset_materialization.metadata["dagster/row_count"].value == len(
            billcom.sandbox.entities("Invoice")
        )
    warehouse = warehouse_resource.get_warehouse()
    assert warehouse.engine.dialect.name == "postgresql"
    assert warehouse.count(schema.billcom_invoices) == len(billcom.sandbox.entities("Invoice"))
    with warehouse.engine.connect() as conn:
        column_type = conn.execute(
            sa.text("select data_type from information_schema.columns "
                    "where table_name = 'billcom_invoices' and column_name = 'amount_due_cents'")
        ).scalar_one()
    assert column_type == "bigint"
    assert warehouse.count(cs.invoice_eligibility) == len(billcom.sandbox.entities("Invoice"))
    assert warehouse.count(cs.collection_cases) > 0
    warehouse.engine.dispose()
