"""Dagster resource for QuickBooks Online as the AR source: one client per company per process."""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from agentcollect_pipeline.ar_source.qbo import QBOARSource
from agentcollect_pipeline.clients.qbo import DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, QBOClient
from agentcollect_pipeline.clients.retry import RetryPolicy
from agentcollect_pipeline.clients.token_store import WarehouseTokenStore
from agentcollect_pipeline.resources import ARSyncSettings, WarehouseResource, shared_client


class QBOResource(dg.ConfigurableResource):
    """QuickBooks Online Accounting API (AR only). Secrets are bound with dg.EnvVar."""

    base_url: str = Field(default=DEFAULT_BASE_URL,
                          description="API host: https://quickbooks.api.intuit.com (sandbox companies: "
                          "https://sandbox-quickbooks.api.intuit.com)")
    token_url: str = Field(default=DEFAULT_TOKEN_URL, description="Intuit OAuth 2.0 token endpoint")
    client_id: str
    client_secret: str
    realm_id: str = Field(description="the QuickBooks company id (realmId)")
    refresh_token: str | None = Field(
        default=None,
        description="bootstrap only: seeds the token store when it is empty; afterwards the stored (rotated) "
        "token wins. Set a new one after reconnecting the company.",
    )
    token_encryption_key: str | None = Field(
        default=None, description="Fernet key(s) encrypting the stored refresh token (AGENTCOLLECT_TOKEN_ENCRYPTION_KEY)"
    )
    max_in_flight: int = Field(default=10, ge=1, le=10, description="QBO allows 10 concurrent requests per realm")
    requests_per_minute: int = Field(default=490, ge=1, le=500, description="QBO allows 500 per minute per realm")
    page_size: int = Field(default=1000, ge=1, le=1000)
    read_chunk: int = Field(default=200, ge=1, le=1000, description="invoice ids per freshness query")
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = Field(default=6, ge=1, description="bounded retries on 429/5xx/timeouts")
    retry_base_delay_s: float = 0.25
    warehouse: WarehouseResource

    def get_client(self) -> QBOClient:
        return shared_client(
            (
                "qbo", self.base_url, self.token_url, self.client_id, self.client_secret, self.realm_id,
                self.refresh_token or "", self.token_encryption_key or "", self.warehouse.database_url,
                self.max_in_flight, self.requests_per_minute, self.page_size, self.connect_timeout_s,
                self.read_timeout_s, self.max_attempts, self.retry_base_delay_s,
            ),
            self._new_client,
        )

    def _new_client(self) -> QBOClient:
        return QBOClient(
            base_url=self.base_url,
            token_url=self.token_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            realm_id=self.realm_id,
            token_store=WarehouseTokenStore(self.warehouse.get_warehouse(), self.token_encryption_key),
            bootstrap_refresh_token=self.refresh_token,
            max_in_flight=self.max_in_flight,
            requests_per_minute=self.requests_per_minute,
            page_size=self.page_size,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            retry=RetryPolicy(max_attempts=self.max_attempts, base_delay_s=self.retry_base_delay_s),
        )

    def get_source(self, settings: ARSyncSettings) -> QBOARSource:
        return QBOARSource(
            self.get_client(),
            default_currency=settings.validated_currency(),
            overlap=timedelta(seconds=settings.overlap_seconds),
            read_chunk=self.read_chunk,
        )
