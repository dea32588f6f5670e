"""Every difference between the SQL backends, in one place.

The store asks its :class:`SqlDialect` for the statements that differ (upserts, the batched
insert, the migration lock) and for what a driver error means (a taken key, a lost
connection, a deadlock worth retrying), decided by SQLSTATE or error code, never by message.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Double,
    Engine,
    Insert,
    Text,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from purpose_agent.db.compiled import Compiled, run_on_cursor
from purpose_agent.db.models import EventRecord, RunRecord, SnapshotRecord
from purpose_agent.records import EventRow, StateRow

MIGRATION_LOCK_NAME = "purpose_agent.migrate"
MIGRATION_LOCK_KEY = zlib.crc32(MIGRATION_LOCK_NAME.encode())


class SqlDialect:
    """The generic behaviour; each backend overrides what it does differently."""

    name: ClassVar[str] = "generic"
    # Whether write_events is one statement, so that it can run in autocommit with no
    # BEGIN/COMMIT round trips and still be atomic.
    one_statement_events: ClassVar[bool] = False
    # Single statements (reads, and writes that are one statement) run in autocommit: a
    # driver in transaction mode would wrap each in BEGIN ... COMMIT round trips. Write
    # transactions switch a connection to this isolation level for their duration.
    autocommit: ClassVar[bool] = False
    transaction_isolation: ClassVar[str | None] = None

    def __init__(self, dialect: Dialect) -> None:
        self.sa_dialect = dialect
        self._events_insert = Compiled(
            insert(EventRecord).values({name: bindparam(name) for name in EventRow._fields}),
            dialect,
        )
        self._runs_upsert = Compiled(self.build_runs_upsert(), dialect)
        self._snapshot_upsert = Compiled(self.build_snapshot_upsert(), dialect)

    # -- statements ---------------------------------------------------------------------

    # ``INSERT ... ON CONFLICT`` (SQLite and Postgres spell it alike); MariaDB overrides the
    # builders with ``ON DUPLICATE KEY UPDATE``.
    upsert_insert: Callable[[Any], Any] = staticmethod(postgresql.insert)
    greatest: Callable[..., Any] = staticmethod(func.greatest)

    def build_runs_upsert(self) -> Insert:
        """``INSERT`` a run row, or move its ``updated_ns`` and ``last_seq`` forward."""
        return self._runs_on_conflict(self.upsert_insert(RunRecord))

    def _runs_on_conflict(self, stmt: Any) -> Insert:
        result: Insert = stmt.on_conflict_do_update(
            index_elements=[RunRecord.run_id],
            set_={
                "updated_ns": stmt.excluded.updated_ns,
                "last_seq": self.greatest(RunRecord.last_seq, stmt.excluded.last_seq),
            },
        )
        return result

    def build_snapshot_upsert(self) -> Insert:
        """``INSERT`` a snapshot, or replace the stored one unless it has a higher ``seq``."""
        stmt: Any = self.upsert_insert(SnapshotRecord)
        result: Insert = stmt.on_conflict_do_update(
            index_elements=[SnapshotRecord.run_id],
            set_={
                "seq": stmt.excluded.seq,
                "state": stmt.excluded.state,
                "written_ns": stmt.excluded.written_ns,
            },
            where=SnapshotRecord.seq <= stmt.excluded.seq,
        )
        return result

    def write_events(self, conn: Connection, rows: Sequence[EventRow], now: int) -> None:
        """Insert the events and touch their runs; raises ``IntegrityError`` on a taken key."""
        if len(rows) == 1:
            self._events_insert.run(conn, rows[0].as_params())
        else:
            self._events_insert.run_tuples(conn, EventRow._fields, rows)
        self.touch_runs(conn, _last_seqs(rows), now)

    def touch_runs(self, conn: Connection, last_seqs: dict[str, int], now: int) -> None:
        """Record that runs were written at ``now`` (creating their rows if needed)."""
        touched = [
            {"run_id": run_id, "created_ns": now, "updated_ns": now, "last_seq": seq}
            for run_id, seq in sorted(last_seqs.items())
        ]
        if len(touched) == 1:
            self._runs_upsert.run(conn, touched[0])
        elif touched:
            self._runs_upsert.run_many(conn, touched)

    def write_snapshot_and_run(self, conn: Connection, snap: StateRow, now: int) -> None:
        """Save a snapshot and touch its run in one statement (dialects that can)."""
        raise NotImplementedError

    def write_snapshot(self, conn: Connection, snap: StateRow, now: int) -> None:
        """Upsert the snapshot, keeping the one with the highest ``seq``."""
        self._snapshot_upsert.run(
            conn, {"run_id": snap.run_id, "seq": snap.seq, "state": snap.state, "written_ns": now}
        )

    @contextlib.contextmanager
    def write_transaction(self, engine: Engine) -> Iterator[Connection]:
        """A connection in a write transaction, committed when the block ends without error."""
        with self.transactional(engine).begin() as conn:
            yield conn

    def transactional(self, engine: Engine) -> Engine:
        """The engine's connections in transaction mode (they are in autocommit otherwise)."""
        if self.transaction_isolation is None:
            return engine
        return engine.execution_options(isolation_level=self.transaction_isolation)

    # -- errors -------------------------------------------------------------------------

    def is_unique_violation(self, exc: DBAPIError) -> bool:
        """Whether the error is a primary-key or unique violation."""
        raise NotImplementedError

    def is_transient(self, exc: DBAPIError) -> bool:
        """Whether the error is a deadlock or serialization failure worth one more try."""
        return False

    # -- migrations ---------------------------------------------------------------------

    @contextlib.contextmanager
    def migration_lock(self, engine: Engine) -> Iterator[Connection]:
        """A connection holding the lock that lets one process at a time migrate."""
        with engine.connect() as conn:
            yield conn
            conn.commit()


def _last_seqs(rows: Sequence[EventRow]) -> dict[str, int]:
    last: dict[str, int] = {}
    for row in rows:
        if row.seq > last.get(row.run_id, 0):
            last[row.run_id] = row.seq
    return last


class SQLiteDialect(SqlDialect):
    """SQLite: writers take the lock with BEGIN IMMEDIATE; everything runs in-process."""

    name = "sqlite"

    upsert_insert = staticmethod(sqlite.insert)
    greatest = staticmethod(func.max)  # SQLite's two-argument max() is GREATEST

    def is_unique_violation(self, exc: DBAPIError) -> bool:  # noqa: D102
        # SQLITE_CONSTRAINT_PRIMARYKEY and SQLITE_CONSTRAINT_UNIQUE
        return getattr(exc.orig, "sqlite_errorcode", None) in (1555, 2067)

    @contextlib.contextmanager
    def write_transaction(self, engine: Engine) -> Iterator[Connection]:
        """``BEGIN IMMEDIATE``: take the write lock before the first statement.

        pysqlite's own transactions begin deferred, so a transaction that reads and then
        writes can fail at once with "database is locked" when another writer got in
        between; an immediate transaction waits for the lock (up to the busy timeout)
        instead. The statements are issued explicitly, with the driver in autocommit mode
        (see ``configure_sqlite``), rather than through a "begin" event hook, which would put
        SQLAlchemy's event dispatch on every statement the store runs.
        """
        with engine.connect() as conn:
            run_on_cursor(conn, "BEGIN IMMEDIATE", lambda cursor: cursor.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
            except BaseException:
                driver: Any = conn.connection.driver_connection
                if getattr(driver, "in_transaction", False):
                    driver.rollback()
                raise
            # Alembic, running on this connection, may already have committed through the driver.
            if getattr(conn.connection.driver_connection, "in_transaction", True):
                run_on_cursor(conn, "COMMIT", lambda cursor: cursor.execute("COMMIT"))

    @contextlib.contextmanager
    def migration_lock(self, engine: Engine) -> Iterator[Connection]:
        """An immediate transaction: a second process waits until the first one has migrated."""
        with self.write_transaction(engine) as conn:
            yield conn


class PostgresDialect(SqlDialect):
    """Postgres: a batch and its run rows go in one statement, so one round trip per save."""

    name = "postgresql"
    upsert_insert = staticmethod(postgresql.insert)
    one_statement_events = True
    autocommit = True
    transaction_isolation = "READ COMMITTED"

    def __init__(self, dialect: Dialect) -> None:
        super().__init__(dialect)
        self._one_event = Compiled(self._events_and_runs(self._one_event_insert()), dialect)
        self._many_events = Compiled(
            self._events_and_runs(self._many_events_insert()), dialect, binary=EventRow._fields
        )
        self._snapshot_and_run = Compiled(self._snapshot_and_run_statement(), dialect)

    def _snapshot_and_run_statement(self) -> Insert:
        """One statement: upsert the snapshot and touch its run (both CTE parts always run)."""
        snapshot = self.build_snapshot_upsert().cte("snapshot")
        now = bindparam("now", type_=BigInteger)
        touch = postgresql.insert(RunRecord).values(
            run_id=bindparam("snapshot_run_id"), created_ns=now, updated_ns=now, last_seq=0
        )
        return self._runs_on_conflict(touch).add_cte(snapshot)

    def write_snapshot_and_run(self, conn: Connection, snap: StateRow, now: int) -> None:
        """Save a snapshot alone in one autocommit statement (see write_snapshot)."""
        self._snapshot_and_run.run(
            conn,
            {
                "run_id": snap.run_id,
                "seq": snap.seq,
                "state": snap.state,
                "written_ns": now,
                "snapshot_run_id": snap.run_id,
                "now": now,
            },
        )

    @staticmethod
    def _one_event_insert() -> Insert:
        # Plain scalar parameters: for one event, adapting six one-element arrays would cost
        # the client more than the whole statement costs the server.
        return insert(EventRecord).values({name: bindparam(name) for name in EventRow._fields})

    @staticmethod
    def _many_events_insert() -> Insert:
        # unnest() over one array per column: the statement text is the same for 2 or 10,000
        # events, so it is compiled once, and the whole batch is one round trip.
        columns = (
            ("run_id", Text),
            ("seq", BigInteger),
            ("kind", Text),
            ("ts", Double),
            ("lane_id", Text),
            ("data", Text),
        )
        source = (
            func.unnest(*(cast(bindparam(name), ARRAY(kind)) for name, kind in columns))
            .table_valued(*(name for name, _ in columns))
            .render_derived(name="batch")
        )
        return insert(EventRecord).from_select([name for name, _ in columns], select(*source.c))

    def _events_and_runs(self, events: Insert) -> Insert:
        """One statement: insert the events, then upsert their runs from what was inserted."""
        inserted = events.returning(EventRecord.run_id, EventRecord.seq).cte("inserted")
        now = bindparam("now", type_=BigInteger)
        touched = (
            select(inserted.c.run_id, now, now, func.max(inserted.c.seq))
            .group_by(inserted.c.run_id)
            .order_by(inserted.c.run_id)
        )
        return self._runs_on_conflict(
            postgresql.insert(RunRecord).from_select(
                ["run_id", "created_ns", "updated_ns", "last_seq"], touched
            )
        )

    def write_events(self, conn: Connection, rows: Sequence[EventRow], now: int) -> None:  # noqa: D102
        if len(rows) == 1:
            self._one_event.run(conn, {**rows[0].as_params(), "now": now})
            return
        ordered = sorted(rows, key=lambda row: (row.run_id, row.seq))  # one lock order
        self._many_events.run(
            conn,
            {
                "run_id": [row.run_id for row in ordered],
                "seq": [row.seq for row in ordered],
                "kind": [row.kind for row in ordered],
                "ts": [row.ts for row in ordered],
                "lane_id": [row.lane_id for row in ordered],
                "data": [row.data for row in ordered],
                "now": now,
            },
        )

    def is_unique_violation(self, exc: DBAPIError) -> bool:  # noqa: D102
        return getattr(exc.orig, "sqlstate", None) == "23505"

    def is_transient(self, exc: DBAPIError) -> bool:  # noqa: D102
        return getattr(exc.orig, "sqlstate", None) in ("40001", "40P01")

    @contextlib.contextmanager
    def migration_lock(self, engine: Engine) -> Iterator[Connection]:
        """A transaction-level advisory lock: released by the commit that ends the upgrade."""
        with self.transactional(engine).connect() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(literal(MIGRATION_LOCK_KEY))))
            yield conn
            conn.commit()


class MariaDBDialect(SqlDialect):
    """MariaDB (and MySQL-protocol servers): ``ON DUPLICATE KEY UPDATE`` upserts."""

    name = "mariadb"
    autocommit = True
    # Fewer gap locks than the server's REPEATABLE READ default, so fewer deadlocks between
    # writers of different runs; every write transaction here is a plain insert or upsert.
    transaction_isolation = "READ COMMITTED"

    def build_runs_upsert(self) -> Insert:  # noqa: D102
        stmt = mysql.insert(RunRecord)
        return stmt.on_duplicate_key_update(
            updated_ns=stmt.inserted.updated_ns,
            last_seq=func.greatest(RunRecord.last_seq, stmt.inserted.last_seq),
        )

    def build_snapshot_upsert(self) -> Insert:  # noqa: D102
        stmt = mysql.insert(SnapshotRecord)
        newer = stmt.inserted.seq >= SnapshotRecord.seq
        # MariaDB applies the assignments left to right, each seeing the ones before it, so
        # seq, which the others compare against, is assigned last.
        return stmt.on_duplicate_key_update(
            [
                ("state", case((newer, stmt.inserted.state), else_=SnapshotRecord.state)),
                (
                    "written_ns",
                    case((newer, stmt.inserted.written_ns), else_=SnapshotRecord.written_ns),
                ),
                ("seq", case((newer, stmt.inserted.seq), else_=SnapshotRecord.seq)),
            ]
        )

    def is_unique_violation(self, exc: DBAPIError) -> bool:  # noqa: D102
        return _mysql_errno(exc) == 1062

    def is_transient(self, exc: DBAPIError) -> bool:  # noqa: D102
        return _mysql_errno(exc) in (1205, 1213)  # lock wait timeout, deadlock

    @contextlib.contextmanager
    def migration_lock(self, engine: Engine) -> Iterator[Connection]:
        """A named server lock; DDL commits implicitly on MariaDB, so a transaction would not do."""
        with self.transactional(engine).connect() as conn:
            got = conn.execute(
                text("SELECT GET_LOCK(:name, 600)"), {"name": MIGRATION_LOCK_NAME}
            ).scalar()
            if got != 1:
                raise TimeoutError("another process held the migration lock for 10 minutes")
            try:
                yield conn
                conn.commit()
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK_NAME})
                conn.commit()


def _mysql_errno(exc: DBAPIError) -> int | None:
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def dialect_for(engine: Engine) -> SqlDialect:
    """The glue for an engine's backend.

    Raises:
        ValueError: For a backend the test matrix does not cover.

    """
    name = engine.dialect.name
    if name == "sqlite":
        return SQLiteDialect(engine.dialect)
    if name == "postgresql":
        return PostgresDialect(engine.dialect)
    if name in ("mysql", "mariadb"):
        return MariaDBDialect(engine.dialect)
    raise ValueError(f"unsupported database {name!r}: use SQLite, PostgreSQL or MariaDB")
