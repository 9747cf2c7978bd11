"""Dagster resource for QuickBooks Online as the AR source: one client per company per process."""

import atexit
import contextlib
import hashlib
import threading
from datetime import timedelta

import dagster as dg
from pydantic import Field

from agentcollect_pipeline.ar_source.qbo import QBOARSource
from agentcollect_pipeline.clients.billcom import RetryPolicy
from agentcollect_pipeline.clients.qbo import DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, QBOClient
from agentcollect_pipeline.clients.token_store import WarehouseTokenStore
from agentcollect_pipeline.resources import ARSyncSettings, WarehouseResource


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
        return _shared_client(self)

    def get_source(self, settings: ARSyncSettings) -> QBOARSource:
        return QBOARSource(
            self.get_client(),
            default_currency=settings.validated_currency(),
            overlap=timedelta(seconds=settings.overlap_seconds),
            read_chunk=self.read_chunk,
        )


_CLIENTS: dict[str, QBOClient] = {}
_CLIENTS_LOCK = threading.Lock()


def _shared_client(resource: QBOResource) -> QBOClient:
    # The key hashes the secrets so that a credential change gets a new client, without keeping them in clear.
    fingerprint = hashlib.sha256(
        "\0".join(
            str(part)
            for part in (
                resource.base_url, resource.token_url, resource.client_id, resource.client_secret,
                resource.realm_id, resource.refresh_token or "", resource.token_encryption_key or "",
                resource.warehouse.database_url, resource.max_in_flight, resource.requests_per_minute,
                resource.page_size, resource.connect_timeout_s, resource.read_timeout_s, resource.max_attempts,
                resource.retry_base_delay_s,
            )
        ).encode()
    ).hexdigest()
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(fingerprint)
        if client is None:
            store = WarehouseTokenStore(resource.warehouse.get_warehouse(), resource.token_encryption_key)
            client = QBOClient(
                base_url=resource.base_url,
                token_url=resource.token_url,
                client_id=resource.client_id,
                client_secret=resource.client_secret,
                realm_id=resource.realm_id,
                token_store=store,
                bootstrap_refresh_token=resource.refresh_token,
                max_in_flight=resource.max_in_flight,
                requests_per_minute=resource.requests_per_minute,
                page_size=resource.page_size,
                connect_timeout_s=resource.connect_timeout_s,
                read_timeout_s=resource.read_timeout_s,
                retry=RetryPolicy(max_attempts=resource.max_attempts, base_delay_s=resource.retry_base_delay_s),
            )
            _CLIENTS[fingerprint] = client
        return client


@atexit.register
def _close_clients() -> None:
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            # Best effort at interpreter exit: a failure here must not mask the run's own outcome.
            with contextlib.suppress(Exception):
                client.close()
