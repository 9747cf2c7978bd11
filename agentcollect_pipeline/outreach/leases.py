"""A lease row per job in `job_leases`: at most one holder at a time, whatever the run coordinator allows.

`send_due_outreach` runs in the "outreach" lane (deploy/dagster.yaml: one run at a time), but an instance
without that limit (a local `dagster dev`, a misconfigured deployment, a manual launch) could start two
overlapping runs. The sender takes the lease first; a run that cannot get it sends nothing. A lease expires
(`ttl`) so a killed run does not block sending for ever, and the holder renews it while it works.
Lease times are the wall clock (not the injectable planning clock): they guard real concurrency.
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse.store import Warehouse

L = os_.job_leases


def acquire(store: Warehouse, name: str, holder: str, ttl: timedelta, now: datetime | None = None) -> str | None:
    """Take (or renew) the lease; None when taken. Otherwise returns the holder. Atomic: an insert guarded by
    the primary key, or an update that only matches an expired lease or our own."""
    now = now or datetime.now(UTC)
    try:
        with store.transaction() as conn:
            updated = conn.execute(
                L.update().where(L.c.name == name, sa.or_(L.c.expires_at <= now, L.c.holder == holder))
                .values(holder=holder, acquired_at=now, expires_at=now + ttl)
            ).rowcount
            if updated:
                return holder
            if conn.execute(sa.select(L.c.name).where(L.c.name == name)).first() is not None:
                return None
            conn.execute(L.insert(), [{"name": name, "holder": holder, "acquired_at": now, "expires_at": now + ttl}])
            return holder
    except sa.exc.IntegrityError:  # another run inserted it between our check and insert
        return None


def renew(store: Warehouse, name: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
    """Extend our lease; False when it was lost (expired and taken by another run): stop sending."""
    now = now or datetime.now(UTC)
    with store.transaction() as conn:
        return bool(conn.execute(L.update().where(L.c.name == name, L.c.holder == holder)
                                 .values(expires_at=now + ttl)).rowcount)


def release(store: Warehouse, name: str, holder: str) -> None:
    with store.transaction() as conn:
        conn.execute(L.delete().where(L.c.name == name, L.c.holder == holder))


def holder_of(store: Warehouse, name: str) -> str | None:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(L.c.holder).where(L.c.name == name)).scalar()
