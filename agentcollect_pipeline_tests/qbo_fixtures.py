"""A seeded QuickBooks Online sandbox on a loopback port, and the real client/resource pointed at it.

`start_qbo()` mirrors conftest's Bill.com `_start`; the `qbo` and `qbo_factory` fixtures are imported by
the test modules that need them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from agentcollect_pipeline.ar_source.qbo import QBOARSource
from agentcollect_pipeline.ar_source.qbo_resource import QBOResource
from agentcollect_pipeline.clients.qbo import QBOClient
from agentcollect_pipeline.clients.retry import RetryPolicy
from agentcollect_pipeline.clients.token_store import InMemoryTokenStore
from agentcollect_pipeline.resources import WarehouseResource
from agentcollect_pipeline.sandboxes.qbo import QBOSandbox, SandboxClock, SandboxConfig
from agentcollect_pipeline.sandboxes.qbo.app import TOKEN_PATH
from agentcollect_pipeline.sandboxes.server import ServerHandle, serve_in_thread

SANDBOX_START = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
# A fixed Fernet key for tests only (32 bytes, url-safe base64).
TEST_ENCRYPTION_KEY = base64.urlsafe_b64encode(b"agentcollect-test-key-0123456789").decode()


@dataclass
class RunningQBO:
    sandbox: QBOSandbox
    clock: SandboxClock
    url: str

    @property
    def token_url(self) -> str:
        return f"{self.url}{TOKEN_PATH}"

    def client(self, **overrides) -> QBOClient:
        credentials = self.sandbox.credentials
        options = dict(
            base_url=self.url,
            token_url=self.token_url,
            client_id=credentials["client_id"],
            client_secret=credentials["client_secret"],
            realm_id=credentials["realm_id"],
            token_store=InMemoryTokenStore(),
            bootstrap_refresh_token=credentials["refresh_token"],
            retry=RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05),
            read_timeout_s=10.0,
            clock=self.clock.now,
        )
        options.update(overrides)
        return QBOClient(**options)

    def source(self, client: QBOClient | None = None, **overrides) -> QBOARSource:
        return QBOARSource(client or self.client(), clock=self.clock.now, **overrides)

    def resource(self, warehouse: WarehouseResource, **overrides) -> QBOResource:
        credentials = self.sandbox.credentials
        options = dict(
            base_url=self.url,
            token_url=self.token_url,
            client_id=credentials["client_id"],
            client_secret=credentials["client_secret"],
            realm_id=credentials["realm_id"],
            refresh_token=credentials["refresh_token"],
            token_encryption_key=TEST_ENCRYPTION_KEY,
            retry_base_delay_s=0.01,
            warehouse=warehouse,
        )
        options.update(overrides)
        return QBOResource(**options)


def start_qbo(invoices: int = 300, customers: int = 60, seed: int = 7,
              config: SandboxConfig | None = None) -> tuple[RunningQBO, ServerHandle]:
    clock = SandboxClock(start=SANDBOX_START)
    sandbox = QBOSandbox(config=config, clock=clock)
    sandbox.seed(seed=seed, invoices=invoices, customers=customers)
    server = serve_in_thread(sandbox.app)
    return RunningQBO(sandbox=sandbox, clock=clock, url=server.url), server


@pytest.fixture
def qbo() -> Iterator[RunningQBO]:
    """A small seeded QBO company (300 invoices, 60 customers) on its own port."""
    running, server = start_qbo()
    try:
        yield running
    finally:
        server.stop()


@pytest.fixture
def qbo_factory() -> Iterator:
    servers: list[ServerHandle] = []

    def start(invoices: int = 300, customers: int = 60, seed: int = 7, **config) -> RunningQBO:
        running, server = start_qbo(invoices, customers, seed, SandboxConfig(**config) if config else None)
        servers.append(server)
        return running

    yield start
    for server in servers:
        server.stop()
