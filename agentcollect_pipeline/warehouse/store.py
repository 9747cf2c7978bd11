"""The project's database: SQLite by default, PostgreSQL by URL. One SQLAlchemy URL reaches both."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from agentcollect_pipeline.clients.billcom import StoredSession
from agentcollect_pipeline.warehouse import (
    agent_schema,  # noqa: F401  (its tables join schema.metadata)
    collections_schema,  # noqa: F401  (its tables join schema.metadata)
    oauth_schema,  # noqa: F401  (its tables join schema.metadata)
    outreach_schema,  # noqa: F401  (its tables join schema.metadata)
    payments_schema,  # noqa: F401  (its tables join schema.metadata)
    schema,
)
from agentcollect_pipeline.warehouse.schema import UTCDateTime

_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()
_WRITE_BATCH = 5_000


def _engine_for(url: str) -> sa.Engine:
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _create_engine(url)
            _ENGINES[url] = engine
        return engine


def _create_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which this project does not install.
        raise ValueError(
            "database URL uses bare 'postgresql://': write 'postgresql+psycopg2://…' (SQLAlchemy 2.1 would "
            "otherwise look for psycopg 3)"
        )
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - exercised by every SQLite test
            cursor = dbapi_connection.cursor()
            # WAL lets finance read while a sync writes; busy_timeout waits for the other writer.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def dialect_insert(conn: sa.Connection, table: sa.Table):
    """INSERT that supports ON CONFLICT on both our databases (the generic insert() does not)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def masked_url(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


class Warehouse:
    def __init__(self, url: str):
        self.url = url
        self.engine = _engine_for(url)

    def ensure_schema(self) -> None:
        schema.metadata.create_all(self.engine, checkfirst=True)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Additive migration: a nullable column added to an existing table's DDL is added to the database
        (create_all creates missing tables only). Nothing is ever dropped or changed."""
        inspector = sa.inspect(self.engine)
        existing_tables = set(inspector.get_table_names())
        with self.engine.begin() as conn:
            for table in schema.metadata.sorted_tables:
                if table.name not in existing_tables:
                    continue
                present = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name in present or not column.nullable or column.primary_key:
                        continue
                    kind = column.type.compile(dialect=conn.dialect)
                    conn.execute(sa.text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- writes ---------------------------------------------------------------------------------------

    def upsert(self, conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert or update `rows` by the table's primary key, in the caller's transaction."""
        if not rows:
            return 0
        key = [c.name for c in table.primary_key.columns]
        for start in range(0, len(rows), _WRITE_BATCH):
            batch = rows[start : start + _WRITE_BATCH]
            stmt = dialect_insert(conn, table)
            updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
            conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=updates), list(batch))
        return len(rows)

    def delete_where_in(self, conn: sa.Connection, table: sa.Table, column: str, values: Iterable[Any]) -> None:
        values = list(values)
        for start in range(0, len(values), _WRITE_BATCH):
            conn.execute(table.delete().where(table.c[column].in_(values[start : start + _WRITE_BATCH])))

    # -- reads ----------------------------------------------------------------------------------------

    def read_frame(self, table: sa.Table, where: sa.ColumnElement[bool] | None = None) -> pd.DataFrame:
        query = sa.select(table)
        if where is not None:
            query = query.where(where)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return frame_from_rows(table, [r._asdict() for r in rows])

    def count(self, table: sa.Table, where: sa.ColumnElement[bool] | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(table)
        if where is not None:
            query = query.where(where)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- sync watermarks ------------------------------------------------------------------------------

    def high_water_mark(self, stream: str) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(schema.sync_state.c.high_water_mark).where(schema.sync_state.c.stream == stream)
            ).scalar_one_or_none()

    def record_sync(
        self,
        conn: sa.Connection,
        *,
        stream: str,
        high_water_mark: datetime | None,
        synced_at: datetime,
        mode: str,
        rows_changed: int,
    ) -> None:
        self.upsert(
            conn,
            schema.sync_state,
            [
                {
                    "stream": stream,
                    "high_water_mark": high_water_mark,
                    "last_synced_at": synced_at,
                    "last_mode": mode,
                    "last_rows_changed": rows_changed,
                }
            ],
        )


class WarehouseSessionStore:
    """`SessionStore` on the api_sessions table, so separate run processes share one Bill.com session."""

    def __init__(self, warehouse: Warehouse):
        self._warehouse = warehouse

    def load_session(self, key: str) -> StoredSession | None:
        table = schema.api_sessions
        with self._warehouse.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.session_key == key)).first()
        if row is None:
            return None
        return StoredSession(session_id=row.session_id, logged_in_at=row.logged_in_at, last_used_at=row.last_used_at)

    def save_session(self, key: str, session: StoredSession) -> None:
        with self._warehouse.transaction() as conn:
            self._warehouse.upsert(
                conn,
                schema.api_sessions,
                [
                    {
                        "session_key": key,
                        "session_id": session.session_id,
                        "logged_in_at": session.logged_in_at,
                        "last_used_at": session.last_used_at,
                    }
                ],
            )

    def delete_session(self, key: str, session_id: str) -> None:
        table = schema.api_sessions
        with self._warehouse.transaction() as conn:
            conn.execute(table.delete().where(table.c.session_key == key, table.c.session_id == session_id))


def pandas_dtype(column: sa.Column) -> str:
    col_type = column.type
    if isinstance(col_type, UTCDateTime):
        return "datetime64[us, UTC]"
    if isinstance(col_type, sa.BigInteger | sa.Integer):
        return "Int64" if column.nullable else "int64"
    if isinstance(col_type, sa.Boolean):
        return "boolean"
    if isinstance(col_type, sa.Float):
        return "float64"  # scores and ratios only; money is never Float
    if isinstance(col_type, sa.Date):
        return "datetime64[s]"
    return "string"


def frame_from_rows(table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A DataFrame with the table's columns and explicit dtypes (never float for money)."""
    columns = [c.name for c in table.columns]
    frame = pd.DataFrame.from_records(list(rows), columns=columns)
    return frame.astype({c.name: pandas_dtype(c) for c in table.columns})


def column_schema_rows(table: sa.Table) -> list[tuple[str, str, str]]:
    return [(c.name, pandas_dtype(c), c.comment or "") for c in table.columns]
