"""Outreach end to end with the project database on PostgreSQL (a fresh database): the first wave, the
<Gather> follow-ups (their own ledger steps, the callback table, the additive gather_choice column) and the
sender's lease. SQLite forgives what PostgreSQL does not (timestamps, booleans, concurrent claims).
Skipped only when CI is unset and no PostgreSQL answers, and it says so."""

from datetime import timedelta

import pytest

from agentcollect_pipeline.outreach import leases
from agentcollect_pipeline.resources import WarehouseResource

from . import test_outreach_e2e as e2e
from . import test_outreach_gaps as gaps
from . import test_outreach_gaps_closed as closed

pytestmark = pytest.mark.postgres

world = e2e.world


@pytest.fixture
def warehouse_resource(postgres_url) -> WarehouseResource:  # overrides the SQLite one for `world`
    return WarehouseResource(database_url=postgres_url)


def test_first_wave_on_postgres(world):
    e2e.test_first_wave_goes_out_once_within_the_rules(world)


def test_gather_follow_ups_on_postgres(world):
    gaps.test_gather_1_texts_the_link_once_2_requests_a_callback(world)


def test_lease_on_postgres(world):
    store = world["store"]
    assert leases.acquire(store, "send_due_outreach", "other-run", timedelta(minutes=10)) == "other-run"
    assert e2e._send(world, e2e._noon_ny_tomorrow()).success and e2e._attempts(store).empty
    leases.release(store, "send_due_outreach", "other-run")
    assert e2e._send(world, e2e._noon_ny_tomorrow()).success and len(e2e._attempts(store)) > 0


def test_429_release_and_retake_on_postgres(world):
    closed.test_sendgrid_429_past_the_retry_budget_releases_the_attempt_for_the_next_run(world)


def test_billcom_payment_links_cached_on_postgres(world, billcom):
    closed.test_every_message_carries_the_invoices_billcom_link_fetched_once_per_invoice(world, billcom)
