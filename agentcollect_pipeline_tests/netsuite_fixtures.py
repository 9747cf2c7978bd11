"""A seeded NetSuite sandbox on a loopback port, and the real client/source/resource pointed at it.

`start_netsuite()` mirrors conftest's Bill.com `_start`; the `netsuite` and `netsuite_factory` fixtures are
imported by the test modules that need them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from agentcollect_pipeline.ar_source.netsuite import NetSuiteARSource
from agentcollect_pipeline.ar_source.netsuite_resource import NetSuiteResource
from agentcollect_pipeline.clients.netsuite import NetSuiteClient
from agentcollect_pipeline.clients.retry import RetryPolicy
from agentcollect_pipeline.sandboxes.netsuite import NetSuiteSandbox, SandboxClock, SandboxConfig
from agentcollect_pipeline.sandboxes.server import ServerHandle, serve_in_thread

SANDBOX_START = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


@dataclass
class RunningNetSuite:
    sandbox: NetSuiteSandbox
    clock: SandboxClock
    url: str

    def client(self, **overrides: Any) -> NetSuiteClient:
        credentials = self.sandbox.credentials
        options: dict[str, Any] = dict(
            base_url=self.url,
            account_id=credentials["account_id"],
            client_id=credentials["client_id"],
            certificate_id=credentials["certificate_id"],
            private_key=credentials["private_key"],
            retry=RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05),
            read_timeout_s=10.0,
        )
        options.update(overrides)
        return NetSuiteClient(**options)

    def source(self, client: NetSuiteClient | None = None, **overrides: Any) -> NetSuiteARSource:
        options: dict[str, Any] = dict(account_timezone=self.sandbox.config.account_timezone, clock=self.clock.now)
        options.update(overrides)
        return NetSuiteARSource(client or self.client(), **options)

    def resource(self, warehouse: Any = None, **overrides: Any) -> NetSuiteResource:
        """`warehouse` is accepted for symmetry with the other sources; NetSuite keeps no session in it
        (an M2M token is minted from the key in each process)."""
        credentials = self.sandbox.credentials
        options: dict[str, Any] = dict(
            base_url=self.url,
            account_id=credentials["account_id"],
            client_id=credentials["client_id"],
            certificate_id=credentials["certificate_id"],
            private_key=credentials["private_key"],
            account_timezone=credentials["account_timezone"],
            retry_base_delay_s=0.01,
        )
        options.update(overrides)
        return NetSuiteResource(**options)


def start_netsuite(invoices: int = 300, customers: int = 60, seed: int = 7,
                   config: SandboxConfig | None = None) -> tuple[RunningNetSuite, ServerHandle]:
    clock = SandboxClock(start=SANDBOX_START)
    sandbox = NetSuiteSandbox(config=config, clock=clock)
    sandbox.seed(seed=seed, invoices=invoices, customers=customers)
    server = serve_in_thread(sandbox.app)
    return RunningNetSuite(sandbox=sandbox, clock=clock, url=server.url), server


@pytest.fixture
def netsuite() -> Iterator[RunningNetSuite]:
    """A small seeded NetSuite account (300 invoices, 60 customers) on its own port."""
    running, server = start_netsuite()
    try:
        yield running
    finally:
        server.stop()


@pytest.fixture
def netsuite_factory() -> Iterator:
    servers: list[ServerHandle] = []

    def start(invoices: int = 300, customers: int = 60, seed: int = 7, **config: Any) -> RunningNetSuite:
        running, server = start_netsuite(invoices, customers, seed, SandboxConfig(**config) if config else None)
        servers.append(server)
        return running

    yield start
    for server in servers:
        server.stop()
