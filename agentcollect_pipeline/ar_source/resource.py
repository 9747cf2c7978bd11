"""`ar_source`: the one AR source of truth the pipeline reads and posts payments to, chosen by configuration.

`AGENTCOLLECT_AR_SOURCE=billcom|qbo|netsuite` picks it when the code location loads; only that source's
credentials are needed, and everything downstream (rules, outreach, payments, notes) goes through it.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from agentcollect_pipeline.ar_source.base import ARSource
from agentcollect_pipeline.ar_source.netsuite_resource import NetSuiteResource
from agentcollect_pipeline.ar_source.qbo_resource import QBOResource
from agentcollect_pipeline.resources import ARSyncSettings, BillComResource
from agentcollect_pipeline.settings import AR_SOURCE_CHOICES
from agentcollect_pipeline.warehouse.schema import ARTables, ar_tables


class ARSourceResource(dg.ConfigurableResource):
    """The configured AR source; exactly one of the nested resources matches `kind` and is configured."""

    kind: str = Field(default="billcom", description="billcom | qbo | netsuite")
    billcom: BillComResource | None = None
    qbo: QBOResource | None = None
    netsuite: NetSuiteResource | None = None

    def _configured(self) -> Any:
        if self.kind not in AR_SOURCE_CHOICES:
            raise ValueError(f"AGENTCOLLECT_AR_SOURCE: {self.kind!r} is not one of {', '.join(AR_SOURCE_CHOICES)}")
        resource = getattr(self, self.kind)
        if resource is None:
            raise ValueError(f"AR source {self.kind!r} is selected but not configured")
        return resource

    @property
    def tables(self) -> ARTables:
        return ar_tables(self.kind)

    def get_source(self, settings: ARSyncSettings) -> ARSource:
        return self._configured().get_source(settings)

    def api_calls(self) -> int:
        """Calls made by this process's client so far (for per-asset call counts in metadata)."""
        return int(self._configured().get_client().stats().get("total_calls", 0))
