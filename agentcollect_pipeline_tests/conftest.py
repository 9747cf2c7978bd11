"""Shared fixtures: real local sandboxes over loopback HTTP, a fresh project database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentcollect_pipeline.ar_source.resource import ARSourceResource
from agentcollect_pipeline.clients.billcom import BillComClient, InMemorySessionStore
from agentcollect_pipeline.clients.retry import RetryPolicy
from agentcollect_pipeline.resources import ARSyncSettings, BillComResource, WarehouseResource
from agentcollect_pipeline.sandboxes.billcom import BillComSandbox, SandboxClock
from agentcollect_pipeline.sandboxes.server import serve_in_thread

SANDBOX_START = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


@dataclass
class RunningBillCom:
    sandbox: BillComSandbox
    clock: SandboxClock
    url: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/api/v2"

    def client(self, **overrides) -> BillComClient:
        credentials = self.sandbox.credentials
        options = dict(
            base_url=self.base_url,
            username=credentials["username"],
            password=credentials["password"],
            org_id=credentials["org_id"],
            dev_key=credentials["dev_key"],
            session_store=InMemorySessionStore(),
            retry=RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05),
            read_timeout_s=10.0,
            clock=self.clock.now,
        )
        options.update(overrides)
        return BillComClient(**options)

    def resource(self, warehouse: WarehouseResource, **overrides) -> BillComResource:
        credentials = self.sandbox.credentials
        return BillComResource(
            base_url=self.base_url,
            username=credentials["username"],
            password=credentials["password"],
            org_id=credentials["org_id"],
            dev_key=credentials["dev_key"],
            retry_base_delay_s=0.01,
            warehouse=warehouse,
            **overrides,
        )

    def ar_source(self, warehouse: WarehouseResource, **overrides) -> ARSourceResource:
        return ARSourceResource(kind="billcom", billcom=self.resource(warehouse, **overrides))


def _start(invoices: int, customers: int, seed: int = 7) -> tuple[RunningBillCom, object]:
    clock = SandboxClock(start=SANDBOX_START)
    sandbox = BillComSandbox(clock=clock)
    sandbox.seed(seed=seed, invoices=invoices, customers=customers)
    server = serve_in_thread(sandbox.app)
    return RunningBillCom(sandbox=sandbox, clock=clock, url=server.url), server


@pytest.fixture
def billcom() -> Iterator[RunningBillCom]:
    """A small seeded Bill.com org (300 invoices, 60 customers) on its own port."""
    running, server = _start(invoices=300, customers=60)
    try:
        yield running
    finally:
        server.stop()


@pytest.fixture
def billcom_factory() -> Iterator:
    servers = []

    def start(invoices: int = 300, customers: int = 60, seed: int = 7) -> RunningBillCom:
        running, server = _start(invoices, customers, seed)
        servers.append(server)
        return running

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def warehouse_resource(tmp_path: Path) -> WarehouseResource:
    return WarehouseResource(database_url=f"sqlite:///{tmp_path / 'agentcollect.sqlite'}")


@pytest.fixture
def ar_settings() -> ARSyncSettings:
    return ARSyncSettings(org_currency="USD", org_timezone="America/New_York", overlap_seconds=120, max_invalid_share=0.2)


def postgres_admin_url() -> str:
    return os.environ.get("AGENTCOLLECT_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the test PostgreSQL, dropped afterwards. CI must have one: skipped only when
    CI is unset and none answers, and the skip says so."""
    admin_url = sa.make_url(postgres_admin_url())
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL reachable at {admin_url.render_as_string(hide_password=True)} ({exc.orig})")
    name = f"agentcollect_test_{uuid.uuid4().hex[:12]}"
    with engine.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
        engine.dispose()
