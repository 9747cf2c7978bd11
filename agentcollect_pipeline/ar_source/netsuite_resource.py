"""Dagster resource for NetSuite as the AR source: one client (one token, one semaphore) per account per process."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import Field

from agentcollect_pipeline.ar_source.netsuite import NetSuiteARSource
from agentcollect_pipeline.clients.netsuite import NetSuiteClient
from agentcollect_pipeline.clients.retry import RetryPolicy
from agentcollect_pipeline.resources import ARSyncSettings, shared_client


class NetSuiteResource(dg.ConfigurableResource):
    """NetSuite REST web services + SuiteQL (AR only), OAuth 2.0 client credentials (M2M).

    Bind `private_key` (and the ids) with dg.EnvVar: NETSUITE_PRIVATE_KEY holds the PEM of the certificate's
    private key uploaded at Setup > Integration > OAuth 2.0 Client Credentials (M2M) Setup.
    """

    base_url: str | None = Field(
        default=None, description="e.g. https://1234567-sb1.suitetalk.api.netsuite.com; empty = derived from account_id"
    )
    account_id: str = Field(description="NetSuite account id, e.g. 1234567 or 1234567_SB1")
    client_id: str = Field(description="the integration record's client id (the JWT's iss)")
    certificate_id: str = Field(description="certificate id from the M2M setup page (the JWT's kid)")
    private_key: str = Field(description="PEM private key of the certificate (a secret: bind with EnvVar)")
    algorithm: str | None = Field(default=None, description="PS256/PS384/PS512 or ES256/ES384/ES512; default from the key type")
    max_in_flight: int = Field(default=5, ge=1, le=100, description="at most the account's concurrency limit (developer accounts: 5)")
    page_size: int = Field(default=1000, ge=1, le=1000)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    max_attempts: int = Field(default=6, ge=1, description="bounded retries on 429/5xx/timeouts")
    retry_base_delay_s: float = 0.25
    account_timezone: str = Field(
        default="UTC", description="time zone of the integration user's NetSuite preferences: SuiteQL renders dates in it"
    )
    currency_map: dict[str, str] | None = Field(
        default=None, description="NetSuite currency internal id -> ISO code, e.g. {'1': 'USD'}; else read from the currency table"
    )
    note_field: str = Field(
        default="custentity_agentcollect_notes", description="custom entity field (Text Area) holding collection notes"
    )
    note_fallback_field: str | None = Field(
        default="comments", description="where notes go when note_field does not exist; empty = nowhere (error)"
    )
    deposit_account_id: str | None = Field(default=None, description="account id payments are deposited to; empty = NetSuite's default")

    def get_client(self) -> NetSuiteClient:
        return shared_client(
            (
                "netsuite", self.base_url, self.account_id, self.client_id, self.certificate_id, self.private_key,
                self.algorithm, self.max_in_flight, self.page_size, self.connect_timeout_s, self.read_timeout_s,
                self.max_attempts, self.retry_base_delay_s,
            ),
            self._new_client,
        )

    def _new_client(self) -> NetSuiteClient:
        return NetSuiteClient(
            base_url=self.base_url or None,
            account_id=self.account_id,
            client_id=self.client_id,
            certificate_id=self.certificate_id,
            private_key=self.private_key,
            algorithm=self.algorithm or None,
            max_in_flight=self.max_in_flight,
            page_size=self.page_size,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            retry=RetryPolicy(max_attempts=self.max_attempts, base_delay_s=self.retry_base_delay_s),
        )

    def get_source(self, settings: ARSyncSettings) -> NetSuiteARSource:
        return NetSuiteARSource(
            self.get_client(),
            default_currency=settings.validated_currency(),
            overlap=timedelta(seconds=settings.overlap_seconds),
            account_timezone=self.account_timezone,
            currency_map=self.currency_map,
            note_field=self.note_field,
            note_fallback_field=self.note_fallback_field or None,
            deposit_account_id=self.deposit_account_id,
        )
