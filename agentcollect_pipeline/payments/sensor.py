"""Sensor `payment_events_sensor`: new payment events -> one `post_payment` run per batch.

- The cursor is the last event sequence requested; each tick requests at most `batch_size` new events in
  one run whose run_key is the batch's last sequence, so a re-evaluated tick never launches it twice.
- While a run it requested is still queued or starting, the sensor waits (back-pressure): events that
  arrive meanwhile join the next batch, so a busy instance gets fewer, larger runs instead of a queue of
  small ones that each pay the seconds a run start costs.
- Dagster never re-requests a run_key, even when its run failed. So each tick also sweeps events the
  cursor has passed that are still undecided `retry_after_minutes` after their last request (a failed or
  never-launched run, or an event committed out of sequence order on PostgreSQL) and requests each again
  with a new run_key (event + attempt), up to `max_attempts`; then the event is shown in `needs_review`
  as `posting_failed`. Retrying is safe because posting is exactly-once in the ledger, not in Dagster.
"""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from agentcollect_pipeline.payments.job import PaymentBatchConfig, post_payment
from agentcollect_pipeline.payments.posting import OPEN, posting_key
from agentcollect_pipeline.resources import PaymentSettings, WarehouseResource
from agentcollect_pipeline.settings import env
from agentcollect_pipeline.warehouse.payments_schema import (
    needs_review,
    payment_events,
    payment_run_requests,
    payments_posted,
)
from agentcollect_pipeline.warehouse.store import Warehouse, dialect_insert


def _run_request(run_key: str, events: list[dict], attempt: int) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        run_config=dg.RunConfig(
            ops={"validate_payment_events": PaymentBatchConfig(events=[f"{e['source']}:{e['event_id']}" for e in events])}
        ),
        tags={"agentcollect/payment_events": str(len(events)), "agentcollect/attempt": str(attempt)},
    )


def _record_requests(warehouse: Warehouse, rows: list[dict]) -> None:
    if not rows:
        return
    with warehouse.transaction() as conn:
        stmt = dialect_insert(conn, payment_run_requests).on_conflict_do_nothing(index_elements=["event_sequence", "attempt"])
        conn.execute(stmt, rows)


def _undecided(warehouse: Warehouse, up_to: int) -> list[dict]:
    """Events at or below the cursor with no final ledger decision and no review item, with their attempts."""
    requests = (
        sa.select(
            payment_run_requests.c.event_sequence,
            sa.func.count().label("attempts"),
            sa.func.max(payment_run_requests.c.requested_at).label("last_requested_at"),
        )
        .group_by(payment_run_requests.c.event_sequence)
        .subquery()
    )
    query = (
        sa.select(
            payment_events.c.sequence,
            payment_events.c.source,
            payment_events.c.event_id,
            payment_events.c.received_at,
            requests.c.attempts,
            requests.c.last_requested_at,
        )
        .select_from(
            payment_events.outerjoin(payments_posted, payments_posted.c.event_sequence == payment_events.c.sequence)
            .outerjoin(needs_review, needs_review.c.event_sequence == payment_events.c.sequence)
            .outerjoin(requests, requests.c.event_sequence == payment_events.c.sequence)
        )
        .where(
            payment_events.c.sequence <= up_to,
            sa.or_(payments_posted.c.status.is_(None), payments_posted.c.status.in_(OPEN)),
            needs_review.c.review_id.is_(None),
        )
        .order_by(payment_events.c.sequence)
    )
    with warehouse.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(query)]


def _as_utc(moment) -> datetime:
    # func.max over the column may come back as text on SQLite, bypassing the column type.
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def evaluate(warehouse: Warehouse, settings: PaymentSettings, cursor: str | None, now: datetime):
    """(run requests, new cursor, events given up). Pure enough to test without Dagster."""
    last_seen = int(cursor or 0)
    requests: list[dg.RunRequest] = []
    recorded: list[dict] = []
    with warehouse.engine.connect() as conn:
        new = [
            r._asdict()
            for r in conn.execute(
                sa.select(payment_events.c.sequence, payment_events.c.source, payment_events.c.event_id)
                .where(payment_events.c.sequence > last_seen)
                .order_by(payment_events.c.sequence)
                .limit(settings.batch_size)
            )
        ]
    if new:
        batch_key = str(new[-1]["sequence"])
        requests.append(_run_request(batch_key, new, attempt=1))
        recorded += [{"event_sequence": e["sequence"], "run_key": batch_key, "attempt": 1, "requested_at": now}
                     for e in new]
    retry_after = timedelta(minutes=settings.retry_after_minutes)
    given_up: list[dict] = []
    retries = 0
    for event in _undecided(warehouse, last_seen):
        attempts = event["attempts"] or 0
        last = _as_utc(event["last_requested_at"] or event["received_at"])
        if now - last < retry_after:
            continue
        if attempts >= settings.max_attempts:
            given_up.append(event)
            continue
        if retries >= settings.batch_size:
            continue  # the next tick takes the rest
        retries += 1
        attempt = attempts + 1
        run_key = f"{event['source']}:{event['event_id']}:{attempt}"
        requests.append(_run_request(run_key, [event], attempt=attempt))
        recorded.append({"event_sequence": event["sequence"], "run_key": run_key, "attempt": attempt,
                         "requested_at": now})
    _record_requests(warehouse, recorded)
    if given_up:
        with warehouse.transaction() as conn:
            for event in given_up:
                conn.execute(
                    dialect_insert(conn, needs_review)
                    .values(
                        posting_key=posting_key(event["source"], event["event_id"]),
                        event_sequence=event["sequence"],
                        source=event["source"],
                        event_id=event["event_id"],
                        reason="posting_failed",
                        detail=f"still undecided after {event['attempts'] or 0} run requests; see the failed runs",
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["posting_key"])
                )
    new_cursor = str(new[-1]["sequence"]) if new else (cursor or "0")
    return requests, new_cursor, given_up


_NOT_STARTED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING]
# A run that has not started within this long is stuck (e.g. created by a daemon that died before queueing
# it): stop waiting for it rather than hold every payment behind it.
_WAIT_FOR_START = timedelta(minutes=10)


def _run_not_started(instance: dg.DagsterInstance, now: datetime) -> str | None:
    """The id of a recent run this sensor requested that is still queued or starting, if any."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=post_payment.name,
            statuses=_NOT_STARTED,
            tags={"dagster/sensor_name": "payment_events_sensor"},
            created_after=now - _WAIT_FOR_START,
        ),
        limit=1,
    )
    return records[0].dagster_run.run_id if records else None


@dg.sensor(
    name="payment_events_sensor",
    job=post_payment,
    minimum_interval_seconds=int(env("AGENTCOLLECT_PAYMENT_SENSOR_INTERVAL_SECONDS") or 15),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one post_payment run per batch of new payment events, and re-requests stuck ones.",
)
def payment_events_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, payment_settings: PaymentSettings
):
    waiting = _run_not_started(context.instance, datetime.now(UTC))
    if waiting is not None:
        # Back-pressure: while our last run is still queued or booting, new events wait here and join the
        # next, larger batch, instead of piling up as many small runs that each pay the start-up cost.
        return dg.SkipReason(f"post_payment run {waiting} has not started yet; new events join the next batch")
    requests, cursor, given_up = evaluate(
        warehouse.get_warehouse(), payment_settings, context.cursor, datetime.now(UTC)
    )
    for event in given_up:
        context.log.warning("payment event %s:%s given up after %s attempts; listed in needs_review",
                            event["source"], event["event_id"], event["attempts"])
    if not requests:
        return dg.SkipReason(f"no payment events after sequence {cursor} and none to retry")
    context.log.info("requesting %s", json.dumps([r.run_key for r in requests]))
    return dg.SensorResult(run_requests=requests, cursor=cursor)
