"""Every statement the SQL store and its maintenance run, in one place.

The store, the run summaries, pruning and copying all read and write through :class:`Queries`;
nothing else in the package writes SQL. Statements are Core statements on the mapped tables,
built once per store from the backend's :class:`~purpose_agent.db.dialects.Flavor`, and run on
a connection the caller opened for its unit of work (see :mod:`purpose_agent.db.transactions`).

Every statement is visible to SQLAlchemy: while the engine echoes, logs at INFO, or has
execute listeners (OpenTelemetry's instrumentation is one), statements go through
``Connection.execute``. Only while nothing listens do the hot statements take the cursor fast
path of :mod:`purpose_agent.db.cursor`, which skips the per-execution work nobody would see.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Connection,
    Double,
    Engine,
    Executable,
    LargeBinary,
    Select,
    String,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    null,
    or_,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import await_only

from purpose_agent.db.cursor import CursorStatement, DriverCall, run_on_cursor
from purpose_agent.db.dialects import EVENT_FIELDS, Flavor
from purpose_agent.db.held_reads import HeldReads
from purpose_agent.db.models import EventRecord, RunRecord, SnapshotRecord
from purpose_agent.errors import StoreUnavailable
from purpose_agent.reads import EventWindow
from purpose_agent.records import EventRow, StateRow

# One append of a batch: run id, drafts ``(kind, ts, lane_id, data, key)``, expected last seq
# (or ``None``) and group (or ``None``).
Appending = tuple[str, Sequence[Any], int | None, str | None]
# Keys looked up per statement when checking a batch that hit a taken key.
LOOKUP_CHUNK = 5000
# Shapes of bounded reads kept built per store (a shape: which bounds, how many kinds, lanes).
_WINDOW_SHAPES = 256
# Up to this many kinds or lanes, a read binds one parameter each, in a statement per count
# (the common case: a few lanes); more are bound as one list (see Flavor.in_list), in one
# statement for any count, since a parameter each would go past the backends' limits on
# parameters (65,535 on Postgres) and compile a statement per count.
_LISTED = 32
_MANY = _LISTED + 1
# Runs read per statement by events_of_runs.
RUNS_PER_READ = 64
# Keys looked up with a prepared statement per count; more are looked up in chunks.
_FEW_KEYS = 16

EVENT_COLUMNS = (
    EventRecord.seq,
    EventRecord.kind,
    EventRecord.ts,
    EventRecord.lane_id,
    EventRecord.data,
)


def observed(engine: Engine) -> bool:
    """Whether anything watches the engine's statements (echo, INFO logging, listeners).

    Checked per call: it costs a few attribute reads, and an instrumentation attached after the
    store was built is honoured at once. The engine's own logger is asked, which follows its
    ``echo`` and its ``logging_name`` (``sqlalchemy.engine.Engine.<name>``). A ``handle_error``
    listener (a dialect event) counts too: only SQLAlchemy's execution calls it.
    """
    if engine.logger.isEnabledFor(logging.INFO):
        return True
    dispatch = engine.dispatch
    return bool(
        dispatch.before_cursor_execute
        or dispatch.after_cursor_execute
        or dispatch.before_execute
        or dispatch.after_execute
        or engine.dialect.dispatch.handle_error
    )


class Statement:
    """One Core statement with its precompiled twin for the fast path.

    Args:
        engine: The store's engine.
        statement: The Core statement.
        binary: As for :class:`~purpose_agent.db.cursor.CursorStatement`.
        compiled: The twin, when it was compiled already (see :meth:`Queries._made`).
    """

    def __init__(
        self,
        engine: Engine,
        statement: Executable,
        binary: Sequence[str] = (),
        compiled: CursorStatement | None = None,
    ) -> None:
        self.statement = statement
        self._engine = engine
        if compiled is None:
            compiled = CursorStatement(statement, engine.dialect, binary)  # type: ignore[arg-type]
        self._cursor = compiled

    @property
    def compiled(self) -> CursorStatement:
        """The precompiled twin, for a unit that runs its statements on one driver cursor."""
        return self._cursor

    def run(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run with one parameter set; returns the row count."""
        if observed(self._engine):
            return int(conn.execute(self.statement, dict(values)).rowcount)
        return self._cursor.run(conn, values)

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once per parameter set (the driver's executemany)."""
        if observed(self._engine):
            conn.execute(self.statement, [dict(row) for row in rows])
        else:
            self._cursor.run_many(conn, rows)

    def run_tuples(self, conn: Connection, fields: Sequence[str], rows: Sequence[Any]) -> None:
        """Run once per row of ``fields`` values, without a dict per row on the fast path."""
        if observed(self._engine):
            conn.execute(self.statement, [dict(zip(fields, row, strict=True)) for row in rows])
        else:
            self._cursor.run_tuples(conn, fields, rows)

    def driver_call(self, values: Mapping[str, Any]) -> tuple[str, Any]:
        """The SQL and parameters the driver is given for ``values`` (for a pipeline)."""
        return self._cursor.sql, self._cursor.params(values)

    def fetch(self, conn: Connection | HeldReads, values: Mapping[str, Any]) -> list[Any]:
        """Run a query and return every row as a tuple.

        ``conn`` is a pooled connection, or the store's held read connections, which the
        store passes only while nothing watches the engine.
        """
        if isinstance(conn, HeldReads):
            return conn.fetch(self._cursor, values)
        if observed(self._engine):
            return [tuple(row) for row in conn.execute(self.statement, dict(values))]
        return self._cursor.fetch(conn, values)


def run_pipelined(conn: Connection, calls: Sequence[tuple[str, Any]]) -> list[list[Any]]:
    """Run statements on psycopg in pipeline mode: one round trip, every statement's rows.

    The first statement that fails raises its error (translated as for any statement), and
    the server skips the rest. On psycopg's asyncio connection the same runs on the loop.

    After a failure the connection is replaced. psycopg counts a statement as prepared when
    it sent the ``Parse`` that prepares it, even where the server skipped that ``Parse``
    because an earlier statement of the pipeline had failed; the connection's next use of
    the statement then fails with "prepared statement ... does not exist" (6 of 40 runs of
    many tasks appending with keys, in group commit).
    """
    error = conn.dialect.loaded_dbapi.Error

    def call(_cursor: Any) -> list[list[Any]]:
        driver = conn.connection.driver_connection
        if conn.dialect.is_async:
            return list(await_only(_pipelined_async(driver, calls, error)))
        cursors: list[Any] = []
        failed: BaseException | None = None
        try:
            with driver.pipeline():  # type: ignore[union-attr]
                failed = _send_all(driver, calls, cursors, error)
            if failed is not None:
                raise failed
            return [list(cursor.fetchall()) for cursor in cursors]
        except error:
            if failed is None:
                raise
            raise failed from None
        finally:
            for cursor in cursors:
                cursor.close()

    try:
        return run_on_cursor(conn, calls[0][0] if calls else "", call)
    except DBAPIError as exc:
        if not conn.invalidated:
            conn.invalidate(exc)
        raise


def _send_all(
    driver: Any, calls: Sequence[tuple[str, Any]], cursors: list[Any], error: type[Exception]
) -> BaseException | None:
    """Send each statement into the open pipeline; the first error met, if one was.

    A statement's error can come back while later ones are still being sent. The sending
    stops there, and the error is returned rather than raised: raised inside the pipeline's
    block, psycopg would end the pipeline while handling it, fail again ("pipeline aborted")
    and log that as a warning ("error ignored terminating ...") on every such batch.
    """
    for sql, parameters in calls:
        cursor = driver.cursor()
        cursors.append(cursor)
        try:
            cursor.execute(sql, parameters)
        except error as exc:
            return exc
    return None


async def _pipelined_async(
    driver: Any, calls: Sequence[tuple[str, Any]], error: type[Exception]
) -> list[list[Any]]:
    """As :func:`run_pipelined` does on psycopg's synchronous connection (see :func:`_send_all`)."""
    cursors: list[Any] = []
    failed: BaseException | None = None
    try:
        async with driver.pipeline():
            for sql, parameters in calls:
                cursor = driver.cursor()
                cursors.append(cursor)
                try:
                    await cursor.execute(sql, parameters)
                except error as exc:
                    failed = exc
                    break
        if failed is not None:
            raise failed
        return [list(await cursor.fetchall()) for cursor in cursors]
    except error:
        if failed is None:
            raise
        raise failed from None
    finally:
        for cursor in cursors:
            await cursor.close()


def run_sql(conn: Connection, sql: str) -> None:
    """Run a bare statement (``BEGIN IMMEDIATE``, ``COMMIT``), visibly when anything listens."""
    if observed(conn.engine):
        conn.exec_driver_sql(sql)
    else:
        run_on_cursor(conn, sql, lambda cursor: cursor.execute(sql))


class RunLine(NamedTuple):
    """A run as a listing shows it: its row joined with its snapshot.

    Attributes:
        run_id: The run.
        group: Its group, or ``None``.
        last_seq: The highest seq it ever stored.
        updated_ns: When it was last written (nanoseconds).
        snapshot_seq: The seq its snapshot covers, ``None`` without one.
        state: The snapshot's JSON text; ``None`` without one or when not asked for.
        events: How many events it stores; ``None`` when not asked for.
        covered: How many of them its snapshot covers; ``None`` when not asked for.

    """

    run_id: str
    group: str | None
    last_seq: int
    updated_ns: int
    snapshot_seq: int | None
    state: str | None
    events: int | None = None
    covered: int | None = None


class KindCount(NamedTuple):
    """How many events of one kind a run holds, and the lowest seq among them."""

    kind: str
    events: int
    first_seq: int


# Runs a row check names in one statement: well under every backend's limit on parameters.
_GAP_BATCH = 500


class RowGap(NamedTuple):
    """A run whose row in ``pa_runs`` is missing, or behind the events it stores.

    The store writes a run's row in the transaction of each of its writes, so a gap was left
    by something else: the events table restored alone, a manual fix. Listings and retention
    go by the rows, so a run without one is invisible to them.

    Attributes:
        run_id: The run.
        last_seq: The row's ``last_seq``; ``None`` when there is no row.
        stored_seq: The highest seq among its stored events; ``None`` when it has none (a
            snapshot alone).

    """

    run_id: str
    last_seq: int | None
    stored_seq: int | None


def _events_after(*, limited: bool) -> Select[int, str, float, str, str]:
    stmt = (
        select(*EVENT_COLUMNS)
        .where(EventRecord.run_id == bindparam("run_id"), EventRecord.seq > bindparam("since"))
        .order_by(EventRecord.seq)
    )
    return stmt.limit(bindparam("limit")) if limited else stmt


def _listed_count(flavor: Flavor, values: frozenset[str] | None) -> int | None:
    """A filter's part of a read's shape: how many parameters it binds, or :data:`_MANY`.

    Where a long list is a parameter per value (MariaDB), their number is rounded up to a
    power of two (the last value repeated), so that a statement is built for each power,
    not for each count: one of 70,000 parameters takes a second to build.
    """
    if values is None:
        return None
    if len(values) < _MANY:
        return len(values)
    return _MANY if flavor.lists_in_one_parameter else 1 << (len(values) - 1).bit_length()


def _one_of(flavor: Flavor, column: Any, name: str, count: int) -> ColumnElement[bool]:
    """``column`` among a filter's values: ``count`` parameters, or one list for :data:`_MANY`."""
    if count == _MANY and flavor.lists_in_one_parameter:
        return flavor.in_list(column, name)
    result: ColumnElement[bool] = column.in_([bindparam(f"{name}_{i}") for i in range(count)])
    return result


def _listed_values(flavor: Flavor, name: str, values: frozenset[str], into: dict[str, Any]) -> None:
    """Bind a filter's values as :func:`_one_of` expects them, sorted for a stable order."""
    ordered = sorted(values)
    if len(ordered) >= _MANY and flavor.lists_in_one_parameter:
        into[name] = flavor.list_value(ordered)
        return
    into.update((f"{name}_{index}", value) for index, value in enumerate(ordered))
    count = _listed_count(flavor, values) or 0
    into.update((f"{name}_{index}", ordered[-1]) for index in range(len(ordered), count))


def _window(
    flavor: Flavor,
    before: bool,
    newest_first: bool,
    limited: bool,
    kinds: int | None,
    lanes: int | None,
) -> Select[Any]:
    """A bounded read of one shape, every value a bound parameter.

    ``kinds`` and ``lanes`` are each filter's :func:`_listed_count`.
    """
    stmt: Select[Any] = select(*EVENT_COLUMNS).where(  # type: ignore[assignment]
        EventRecord.run_id == bindparam("run_id"), EventRecord.seq > bindparam("since")
    )
    if before:
        stmt = stmt.where(EventRecord.seq < bindparam("before"))
    if kinds is not None:
        stmt = stmt.where(_one_of(flavor, EventRecord.kind, "kind", kinds))
    if lanes is not None:
        stmt = stmt.where(_one_of(flavor, EventRecord.lane_id, "lane", lanes))
    stmt = stmt.order_by(EventRecord.seq.desc() if newest_first else EventRecord.seq)
    return stmt.limit(bindparam("limit")) if limited else stmt


def _recovery() -> CompoundSelect[Any]:
    # Snapshot and tail in ONE statement: a single statement reads one consistent view on
    # every backend, without a multi-statement transaction (and its round trips).
    #
    # Rows have the events' shape, so the tail is decoded as it comes; the snapshot's row is
    # the one with no kind (a column events never leave empty). Every tail event's seq is
    # above the snapshot's, so ordering by seq alone puts the snapshot first, and lets SQLite
    # read each side in its primary key's order and merge them: ordering by a second column,
    # or over a subquery, made it sort every row through a temporary b-tree, state included,
    # which cost a third of the statement.
    run_id = bindparam("run_id", type_=String)
    snapshot_seq = (
        select(SnapshotRecord.seq).where(SnapshotRecord.run_id == run_id).scalar_subquery()
    )
    snapshot = select(
        SnapshotRecord.seq.label("seq"),
        type_coerce(null(), String).label("kind"),
        type_coerce(null(), Double).label("ts"),
        type_coerce(null(), String).label("lane_id"),
        SnapshotRecord.state.label("data"),
    ).where(SnapshotRecord.run_id == run_id)
    tail = select(*EVENT_COLUMNS).where(
        EventRecord.run_id == run_id, EventRecord.seq > func.coalesce(snapshot_seq, 0)
    )
    both = union_all(snapshot, tail)
    return both.order_by(both.selected_columns.seq)


def _run_scope(group: str | None, prefix: str | None) -> list[ColumnElement[bool]]:
    """Conditions on ``pa_runs`` for a group and an exact, case-sensitive id prefix.

    The prefix is compared as a substring, not with ``LIKE``: SQLite's ``LIKE`` ignores ASCII
    case, and ``%`` or ``_`` in a run id would be wildcards.
    """
    where: list[ColumnElement[bool]] = []
    if group is not None:
        where.append(RunRecord.group_id == group)
    if prefix:
        where.append(func.substr(RunRecord.run_id, 1, len(prefix)) == prefix)
    return where


def _utf8(value: bytes | None) -> bool:
    try:
        (value or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _last_seqs(rows: Iterable[EventRow]) -> dict[str, int]:
    last: dict[str, int] = {}
    for row in rows:
        if row.seq > last.get(row.run_id, 0):
            last[row.run_id] = row.seq
    return last


# A store's fixed statements, built and compiled once per process for each state of a dialect
# (see _dialect_state) and shared by every store on it: building and compiling them took 26 ms
# of a Postgres store's 34 ms open, and 6 of a SQLite store's 8.5.
_Prepared = dict[str, tuple[Executable, CursorStatement] | None]
_PREPARED: dict[tuple[Any, ...], _Prepared] = {}
_PREPARED_STATES = 64
_PREPARED_STATEMENTS = 1024
_ABSENT: Any = object()
_PLAIN = (bool, int, float, str, tuple, type(None))


def _dialect_state(dialect: Any, flavor: Flavor) -> tuple[Any, ...]:
    """What decides how the statements compile: the dialect's class and its plain settings.

    A dialect sets some of these when its engine first connects (the server's version,
    whether MariaDB returns rows from an ``INSERT``), so a store built on a connected engine
    and one built on a new engine get statements compiled for each state.
    """
    settings = sorted(
        (name, value) for name, value in vars(dialect).items() if type(value) in _PLAIN
    )
    return (type(dialect), type(flavor), tuple(settings))


def _prepared_for(dialect: Any, flavor: Flavor) -> _Prepared:
    """The statements prepared so far for this state of the dialect."""
    state = _dialect_state(dialect, flavor)
    if state not in _PREPARED and len(_PREPARED) >= _PREPARED_STATES:
        _PREPARED.clear()  # one per server and database at most; a bound all the same
    return _PREPARED.setdefault(state, {})


# Times an append makes its run's row again when a delete removed it before it was locked.
_LOCK_ATTEMPTS = 5


class Queries:
    """The statements of one store, built for its engine's backend.

    Args:
        engine: The store's engine (its dialect decides how statements compile).
        flavor: The backend's statement builders.

    """

    def __init__(self, engine: Engine, flavor: Flavor) -> None:
        self.flavor = flavor
        self._engine = engine
        prepared = _prepared_for(engine.dialect, flavor)

        def made(
            name: str, make: Callable[[], Executable | None], binary: Sequence[str] = ()
        ) -> Statement | None:
            return self._made(name, make, binary, prepared)

        def build(
            name: str, make: Callable[[], Executable], binary: Sequence[str] = ()
        ) -> Statement:
            return self._shared(name, make, binary, prepared)

        self._build = functools.partial(Statement, engine)
        self._windows: dict[tuple[bool, bool, bool, int | None, int | None], Statement] = {}
        self._few_keys: dict[int, Statement] = {}
        self._runs_events: dict[int, Statement] = {}

        self._insert_events = build("insert_events", flavor.events_insert)
        self._touch_runs = build("touch_runs", flavor.runs_upsert)
        self._upsert_snapshot = build("upsert_snapshot", flavor.snapshot_upsert)
        self._ensure_run = build("ensure_run", flavor.run_ensure)
        self._lock_run = build(
            "lock_run",
            lambda: (
                select(RunRecord.last_seq)
                .where(RunRecord.run_id == bindparam("run_id"))
                .with_for_update()
            ),
        )
        self._insert_keyed = build(
            "insert_keyed",
            lambda: insert(EventRecord).values(
                {name: bindparam(name) for name in (*EVENT_FIELDS, "key")}
            ),
        )
        # An UPDATE's bind parameters must not be named after its table's columns:
        # SQLAlchemy's own path reserves those names for the SET clause.
        self._advance_run = build(
            "advance_run",
            lambda: (
                update(RunRecord)
                .where(RunRecord.run_id == bindparam("the_run"))
                .values(last_seq=bindparam("new_last_seq"), updated_ns=self._written_at_least())
            ),
        )
        self._advance_run_group = build(
            "advance_run_group",
            lambda: (
                update(RunRecord)
                .where(RunRecord.run_id == bindparam("the_run"))
                .values(
                    last_seq=bindparam("new_last_seq"),
                    updated_ns=self._written_at_least(),
                    group_id=bindparam("new_group"),
                )
            ),
        )
        # Appends in one statement, where the backend has it: by expectation and batch shape.
        self._append_in_one: dict[tuple[str, bool], Statement] = {}
        for expect in ("any", "zero", "match"):
            for batch in (False, True):
                appending = made(
                    f"append_in_one {expect} {batch}",
                    functools.partial(flavor.append_in_one, expect, many=batch),
                    ("kind", "ts", "lane_id", "data", "key") if batch else (),
                )
                if appending is not None:
                    self._append_in_one[(expect, batch)] = appending
        # Built on first use: whether the backend returns rows from an upsert is known only
        # once the engine has connected (MariaDB 10.5 and later do, MySQL does not).
        self._advance_for_append: Statement | None = None
        self._last_seq = build(
            "last_seq",
            lambda: select(RunRecord.last_seq).where(RunRecord.run_id == bindparam("run_id")),
        )
        self._by_key = build(
            "by_key",
            lambda: select(*EVENT_COLUMNS).where(
                EventRecord.run_id == bindparam("run_id"), EventRecord.key == bindparam("key")
            ),
        )
        self._one_event_and_run = made(
            "one_event_and_run", functools.partial(flavor.events_and_runs, many=False)
        )
        # psycopg's text format quotes every array element with a regular expression, which
        # costs several times what the server takes to insert the batch: send them binary.
        self._events_and_runs = made(
            "events_and_runs", functools.partial(flavor.events_and_runs, many=True), EVENT_FIELDS
        )
        self._saves_in_one = made(
            "saves_in_one",
            flavor.saves_in_one,
            (*EVENT_FIELDS, "snapshot_run_id", "snapshot_seq", "snapshot_state"),
        )
        self._snapshot_and_run = made("snapshot_and_run", flavor.snapshot_and_run)
        self._events = build("events", lambda: _events_after(limited=False))
        self._events_limited = build("events_limited", lambda: _events_after(limited=True))
        self._recovery = build("recovery", _recovery)
        self._snapshot = build(
            "snapshot",
            lambda: select(SnapshotRecord.seq, SnapshotRecord.state).where(
                SnapshotRecord.run_id == bindparam("run_id")
            ),
        )

    def _written_at_least(self) -> Any:
        """A run's new write time (:meth:`Flavor.write_time`), unless the row holds a later one.

        Where the time is the writer's stamp it is taken before the write waits for its run's
        lock, and a writer of the same run that came later may commit first; a server's clock
        may step back. Storing the earlier time would move the run back behind runs written
        after it, in ``list_runs`` and for retention by age or count.
        """
        now = self.flavor.write_time(bindparam("now", type_=BigInteger), locked=True)
        return self.flavor.greatest(RunRecord.updated_ns, now)

    def _made(
        self,
        name: str,
        make: Callable[[], Executable | None],
        binary: Sequence[str] = (),
        prepared: _Prepared | None = None,
    ) -> Statement | None:
        """The named statement, built and compiled by the first store of this dialect's state.

        ``None`` where the backend has no such statement (``make`` returned ``None``).
        """
        dialect = self._engine.dialect
        if prepared is None:
            prepared = _prepared_for(dialect, self.flavor)
        found = prepared.get(name, _ABSENT)
        if found is _ABSENT:  # one lookup: another thread may clear the dict meanwhile
            if len(prepared) >= _PREPARED_STATEMENTS:  # window shapes are many: a bound
                prepared.clear()
            statement = make()
            found = (
                None
                if statement is None
                else (statement, CursorStatement(statement, dialect, binary))  # type: ignore[arg-type]
            )
            prepared[name] = found
        return None if found is None else Statement(self._engine, found[0], compiled=found[1])

    def _shared(
        self,
        name: str,
        make: Callable[[], Executable],
        binary: Sequence[str] = (),
        prepared: _Prepared | None = None,
    ) -> Statement:
        """:meth:`_made` of a statement every backend has."""
        built = self._made(name, make, binary, prepared)
        if built is None:  # pragma: no cover - these builders always return a statement
            raise AssertionError(f"statement {name} was not built")
        return built

    # -- writes ---------------------------------------------------------------------------

    def insert_events(self, conn: Connection, rows: Sequence[EventRow], now: int) -> None:
        """Insert events and touch their runs; raises ``IntegrityError`` on a taken key.

        Where the backend has it, events and runs are one statement, so that a lone save can
        run in autocommit and still be atomic.
        """
        if self._events_and_runs is not None and self._one_event_and_run is not None:
            if len(rows) == 1:
                self._one_event_and_run.run(conn, {**rows[0]._asdict(), "now": now})
                return
            ordered = sorted(rows, key=lambda row: (row.run_id, row.seq))  # one lock order
            columns: dict[str, Any] = {
                name: [row[index] for row in ordered] for index, name in enumerate(EVENT_FIELDS)
            }
            self._events_and_runs.run(conn, {**columns, "now": now})
            return
        # The run rows first, as an append locks them: a save that inserted its events first
        # and an append of the same run (its row locked, then its events) waited for each
        # other on MariaDB (gap locks on the events' index) and deadlocked.
        self.touch_runs(conn, _last_seqs(rows), now)
        if len(rows) == 1:
            self._insert_events.run(conn, rows[0]._asdict())
        else:
            self._insert_events.run_tuples(conn, EVENT_FIELDS, rows)

    def touch_runs(self, conn: Connection, last_seqs: Mapping[str, int], now: int) -> None:
        """Record that runs were written at ``now`` (creating their rows if needed).

        Rows are touched in run id order, so two transactions lock them in the same order.
        """
        touched = [
            {"run_id": run_id, "created_ns": now, "updated_ns": now, "last_seq": seq}
            for run_id, seq in sorted(last_seqs.items())
        ]
        if len(touched) == 1:
            self._touch_runs.run(conn, touched[0])
        elif touched:
            self._touch_runs.run_many(conn, touched)

    def upsert_snapshot(self, conn: Connection, snap: StateRow, now: int) -> None:
        """Save a snapshot unless the stored one has a higher ``seq``."""
        self._upsert_snapshot.run(
            conn, {"run_id": snap.run_id, "seq": snap.seq, "state": snap.state, "written_ns": now}
        )

    @property
    def saves_in_one(self) -> bool:
        """Whether the saves of a group commit are one autocommit statement on this backend."""
        return self._saves_in_one is not None

    def save_many(
        self, conn: Connection, rows: Sequence[EventRow], snaps: Sequence[StateRow], now: int
    ) -> None:
        """Store the events and snapshots of many saves at once; ``IntegrityError`` on a taken key.

        ``snaps`` holds at most one snapshot per run (the one a sequence of saves would leave).
        Where the backend has it (:attr:`saves_in_one`) this is one statement, atomic in
        autocommit; otherwise it must run inside a write transaction.
        """
        ordered = sorted(rows, key=lambda row: (row.run_id, row.seq))  # one lock order
        snaps = sorted(snaps, key=lambda snap: snap.run_id)
        if self._saves_in_one is not None:
            values: dict[str, Any] = {
                name: [row[index] for row in ordered] for index, name in enumerate(EVENT_FIELDS)
            }
            for index, name in enumerate(("run_id", "seq", "state")):
                values[f"snapshot_{name}"] = [snap[index] for snap in snaps]
            self._saves_in_one.run(conn, {**values, "now": now})
            return
        last = _last_seqs(ordered)
        for snap in snaps:
            last[snap.run_id] = max(last.get(snap.run_id, 0), snap.seq)
        self.touch_runs(conn, last, now)  # run rows before events, as appends lock them
        if len(ordered) == 1:
            self._insert_events.run(conn, ordered[0]._asdict())
        elif ordered:
            self._insert_events.run_tuples(conn, EVENT_FIELDS, ordered)
        if snaps:
            states = [
                {"run_id": snap.run_id, "seq": snap.seq, "state": snap.state, "written_ns": now}
                for snap in snaps
            ]
            if len(states) == 1:
                self._upsert_snapshot.run(conn, states[0])
            else:
                self._upsert_snapshot.run_many(conn, states)

    def save_many_on_cursor(
        self, cursor: Any, rows: Sequence[EventRow], snaps: Sequence[StateRow], now: int
    ) -> None:
        """What :meth:`save_many` writes in a transaction, on a driver cursor the caller holds.

        For a unit that runs its whole transaction in one call on one cursor (see
        :meth:`~purpose_agent.db.transactions.Transactions.write_on_cursor`): the same
        statements in the same order, without a connection round per statement.
        """
        ordered = sorted(rows, key=lambda row: (row.run_id, row.seq))  # one lock order
        last = _last_seqs(ordered)
        for snap in snaps:
            last[snap.run_id] = max(last.get(snap.run_id, 0), snap.seq)
        self._touch_runs.compiled.run_many_on(
            cursor,
            [
                {"run_id": run_id, "created_ns": now, "updated_ns": now, "last_seq": seq}
                for run_id, seq in sorted(last.items())
            ],
        )
        if ordered:
            self._insert_events.compiled.executemany_on(cursor, EVENT_FIELDS, ordered)
        if snaps:
            self._upsert_snapshot.compiled.run_many_on(
                cursor,
                [
                    {"run_id": snap.run_id, "seq": snap.seq, "state": snap.state, "written_ns": now}
                    for snap in sorted(snaps, key=lambda snap: snap.run_id)
                ],
            )

    @property
    def one_statement_snapshot(self) -> bool:
        """Whether a snapshot and its run row can be saved in one autocommit statement."""
        return self._snapshot_and_run is not None

    def save_snapshot_alone(self, conn: Connection, snap: StateRow, now: int) -> None:
        """Save a snapshot and touch its run; one statement where the backend allows it."""
        if self._snapshot_and_run is None:
            self.upsert_snapshot(conn, snap, now)
            self.touch_runs(conn, {snap.run_id: snap.seq}, now)
            return
        self._snapshot_and_run.run(
            conn,
            {
                "run_id": snap.run_id,
                "seq": snap.seq,
                "state": snap.state,
                "written_ns": now,
                "snapshot_run_id": snap.run_id,
                "snapshot_seq": snap.seq,
                "now": now,
            },
        )

    def delete_run(self, conn: Connection, run_id: str) -> None:
        """Remove a run's events, snapshot and row, its row locked first.

        Appends to a run serialise on its row. Taken first, the lock makes an append either
        commit before the delete (and go with the run) or wait for it (and start the run
        afresh); deleting the events first let an append commit between the two deletes and
        leave an event with no run row, above a ``last_seq`` that later appends reused. The
        row is made if it is missing, as an append makes it: a run an append is creating
        right now is waited for, not missed (its events would outlive the delete).
        """
        self.lock_run(conn, run_id, 0)
        for model in (EventRecord, SnapshotRecord, RunRecord):
            conn.execute(delete(model).where(model.run_id == run_id))

    # -- appends --------------------------------------------------------------------------

    def lock_run(self, conn: Connection, run_id: str, now: int) -> int:
        """Create the run's row if needed and lock it; returns its ``last_seq``.

        Inside a write transaction. Every append to a run takes this lock first, so appends
        to one run are serialised and each sees the last seq the one before it wrote.
        """
        row = {"run_id": run_id, "created_ns": now, "updated_ns": now, "last_seq": 0}
        for _ in range(_LOCK_ATTEMPTS):
            self._ensure_run.run(conn, row)
            locked = self._lock_run.fetch(conn, {"run_id": run_id})
            if locked:
                return int(locked[0][0])
            # A delete of the run committed between the two statements (each sees what is
            # committed when it starts): the row is made again, and locked this time.
        raise StoreUnavailable(
            f"appending to run {run_id!r} failed: the run was deleted {_LOCK_ATTEMPTS} times "
            "while the append took its lock"
        )

    def catch_up_run(self, conn: Connection, run_id: str, now: int) -> bool:
        """Move a run row that is behind its events up to their last seq; whether it was.

        The store writes a run's row in the transaction of every event, so a row behind its
        events (or missing) was left by something else: a restore of the events table alone,
        a manual fix, a damaged row. Appends would take seqs that are already stored.
        """
        last = self.lock_run(conn, run_id, now)
        stored = conn.execute(
            select(func.max(EventRecord.seq)).where(EventRecord.run_id == run_id)
        ).scalar()
        if stored is None or int(stored) <= last:
            return False
        conn.execute(
            update(RunRecord).where(RunRecord.run_id == run_id).values(last_seq=int(stored))
        )
        return True

    @property
    def appends_in_one(self) -> bool:
        """Whether an append is one autocommit statement on this backend."""
        return bool(self._append_in_one)

    def append_in_one(
        self,
        conn: Connection,
        run_id: str,
        items: Sequence[Any],
        expected: int | None,
        group: str | None,
        now: int,
    ) -> list[int]:
        """Append drafts ``(kind, ts, lane_id, data, key)`` in one statement; their seqs.

        Returns no seqs when ``expected`` did not match. Raises ``IntegrityError`` when a key
        is already stored.
        """
        statement, values = self._append_values(run_id, items, expected, group, now)
        rows = statement.fetch(conn, values)
        return sorted(int(row[0]) for row in rows)

    def _append_values(
        self,
        run_id: str,
        items: Sequence[Any],
        expected: int | None,
        group: str | None,
        now: int,
    ) -> tuple[Statement, dict[str, Any]]:
        expect = "any" if expected is None else "zero" if expected == 0 else "match"
        many = len(items) > 1
        values: dict[str, Any] = {
            "the_run": run_id,
            "n": len(items),
            "now": now,
            "new_group": group,
        }
        if expect == "match":
            values["expected"] = expected
        if many:
            for index, name in enumerate(("kind", "ts", "lane_id", "data", "key")):
                values[name] = [item[index] for item in items]
        else:
            values.update(zip(("kind", "ts", "lane_id", "data", "key"), items[0], strict=True))
        return self._append_in_one[(expect, many)], values

    @property
    def appends_in_short_transaction(self) -> bool:
        """Whether an append can advance its run's row first and learn its seqs from it.

        Where an append is not one statement, but the backend returns the row an upsert left
        (SQLite 3.35 and later, MariaDB 10.5 and later): decided by the engine's dialect,
        once per engine.
        """
        return not self._append_in_one and bool(self._engine.dialect.insert_returning)

    def advance_for_append(
        self, conn: Connection, run_id: str, count: int, group: str | None, now: int
    ) -> int:
        """Advance the run's row for ``count`` new events, creating it if needed; its new last seq.

        Inside a write transaction: the upsert takes the run's write lock, so the events may
        take the ``count`` seqs up to the returned one. What it writes is what
        :meth:`lock_run` and :meth:`advance_run` write for the same append. SQLite has no
        overflow error: a last seq past ``2**63 - 1`` comes back as ``2**63`` or above, and
        the caller refuses the append (rolling the row back).
        """
        values = {"the_run": run_id, "n": count, "now": now, "new_group": group}
        return int(self._advance_statement().fetch(conn, values)[0][0])

    def _advance_statement(self) -> Statement:
        statement = self._advance_for_append
        if statement is None:
            statement = self._advance_for_append = self._build(
                self.flavor.append_advance().returning(RunRecord.last_seq)
            )
        return statement

    def short_append_calls(
        self, run_id: str, count: int, group: str | None, now: int
    ) -> tuple[
        tuple[str, Any], Callable[[Sequence[EventRow], Sequence[str | None]], list[DriverCall]]
    ]:
        """The short append's statements as the driver takes them, for a unit run elsewhere.

        Returns:
            The SQL and parameters of :meth:`advance_for_append`, and a function giving the
            driver calls of :meth:`insert_keyed` (for :func:`~purpose_agent.db.cursor.run_calls`)
            once the rows are placed.
        """
        values = {"the_run": run_id, "n": count, "now": now, "new_group": group}
        insert = self._insert_keyed
        fields = (*EVENT_FIELDS, "key")

        def insert_call(rows: Sequence[EventRow], keys: Sequence[str | None]) -> list[DriverCall]:
            return insert.compiled.calls_for(
                [
                    insert.driver_call(dict(zip(fields, (*row, key), strict=True)))[1]
                    for row, key in zip(rows, keys, strict=True)
                ]
            )

        return self._advance_statement().driver_call(values), insert_call

    def appends_pipelined(
        self, conn: Connection, appends: Sequence[Appending], now: int
    ) -> list[tuple[list[int], int | None]]:
        """Run many one-statement appends in order, sent together in one round trip.

        Inside a write transaction on psycopg, in its pipeline mode: the statements are sent
        one after another without waiting for each answer. After an append with an expected
        last seq, the run's last seq is read in the same pipeline, so that an append whose
        expectation failed is told what the run held at its turn.

        Returns:
            Per append, its seqs (none when its expectation failed) and, for an append
            with an expectation, the run's last seq right after it.

        Raises:
            IntegrityError: A key is already stored; the transaction is then aborted.

        """
        calls: list[tuple[str, Any]] = []
        for run_id, items, expected, group in appends:
            statement, values = self._append_values(run_id, items, expected, group, now)
            calls.append(statement.driver_call(values))
            if expected is not None:
                calls.append(self._last_seq.driver_call({"run_id": run_id}))
        answers = iter(run_pipelined(conn, calls))
        results: list[tuple[list[int], int | None]] = []
        for _run_id, _items, expected, _group in appends:
            seqs = sorted(int(row[0]) for row in next(answers))
            last = int(next(answers)[0][0]) if expected is not None else None
            results.append((seqs, last))
        return results

    def insert_keyed(
        self, conn: Connection, rows: Sequence[EventRow], keys: Sequence[str | None]
    ) -> None:
        """Insert appended events with their keys (the run row is advanced separately)."""
        fields = (*EVENT_FIELDS, "key")
        values = [(*row, key) for row, key in zip(rows, keys, strict=True)]
        if len(values) == 1:
            self._insert_keyed.run(conn, dict(zip(fields, values[0], strict=True)))
        else:
            self._insert_keyed.run_tuples(conn, fields, values)

    def advance_run(
        self, conn: Connection, run_id: str, last_seq: int, now: int, group: str | None
    ) -> None:
        """Set a locked run's ``last_seq`` and write time, and its group when one is given."""
        values = {"the_run": run_id, "new_last_seq": last_seq, "now": now}
        if group is None:
            self._advance_run.run(conn, values)
        else:
            self._advance_run_group.run(conn, {**values, "new_group": group})

    def events_by_keys(
        self, conn: Connection, run_id: str, keys: Sequence[str]
    ) -> dict[str, EventRow]:
        """The run's stored events with any of ``keys``, by key."""
        found: dict[str, EventRow] = {}
        if len(keys) == 1:  # the common case (one keyed event), on a prepared statement
            rows = self._by_key.fetch(conn, {"run_id": run_id, "key": keys[0]})
            return {keys[0]: EventRow(run_id, *rows[0])} if rows else {}
        if len(keys) <= _FEW_KEYS:
            # A few keyed events (a step's writes): a prepared statement per count, since
            # building the statement per call cost more than the transaction's other reads.
            values = {f"key_{index}": key for index, key in enumerate(keys)}
            values["run_id"] = run_id
            for key, seq, kind, ts, lane_id, data in self._by_few_keys(len(keys)).fetch(
                conn, values
            ):
                if key is not None:
                    found[key] = EventRow(run_id, seq, kind, ts, lane_id, data)
            return found
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start : start + LOOKUP_CHUNK]
            stmt = select(EventRecord.key, *EVENT_COLUMNS).where(
                EventRecord.run_id == run_id, self.flavor.one_of(EventRecord.key, chunk)
            )
            for key, seq, kind, ts, lane_id, data in conn.execute(stmt):
                if key is not None:
                    found[key] = EventRow(run_id, seq, kind, ts, lane_id, data)
        return found

    def events_of_runs(self, conn: Connection | HeldReads, run_ids: Sequence[str]) -> list[Any]:
        """Rows ``(run_id, seq, kind, ts, lane_id, data)`` of every event of a few runs.

        Ordered by run, then seq. One prepared statement per count of runs (at most
        :data:`RUNS_PER_READ`), so that reading many small runs costs one statement.
        """
        count = len(run_ids)
        statement = self._runs_events.get(count)
        if statement is None:
            statement = self._runs_events[count] = self._shared(
                f"runs_events {count}",
                lambda: (
                    select(EventRecord.run_id, *EVENT_COLUMNS)
                    .where(EventRecord.run_id.in_([bindparam(f"run_{i}") for i in range(count)]))
                    .order_by(EventRecord.run_id, EventRecord.seq)
                ),
            )
        return statement.fetch(conn, {f"run_{i}": run_id for i, run_id in enumerate(run_ids)})

    def _by_few_keys(self, count: int) -> Statement:
        statement = self._few_keys.get(count)
        if statement is None:
            statement = self._few_keys[count] = self._shared(
                f"few_keys {count}",
                lambda: select(EventRecord.key, *EVENT_COLUMNS).where(
                    EventRecord.run_id == bindparam("run_id"),
                    EventRecord.key.in_([bindparam(f"key_{index}") for index in range(count)]),
                ),
            )
        return statement

    def event_by_key(self, conn: Connection | HeldReads, run_id: str, key: str) -> list[Any]:
        """The row ``(seq, kind, ts, lane_id, data)`` of the run's event with ``key``, if any."""
        return self._by_key.fetch(conn, {"run_id": run_id, "key": key})

    def last_seq(self, conn: Connection, run_id: str) -> int:
        """The run's ``last_seq``; 0 for an unknown run."""
        rows = self._last_seq.fetch(conn, {"run_id": run_id})
        return int(rows[0][0]) if rows else 0

    # -- groups and retention -------------------------------------------------------------

    @functools.cached_property
    def _run_group(self) -> Statement:
        return self._build(
            select(RunRecord.group_id).where(RunRecord.run_id == bindparam("run_id"))
        )

    def run_group(self, conn: Connection | HeldReads, run_id: str) -> str | None:
        """The run's group, or ``None``."""
        # Compiled once: a copy asks it of every run on both sides, and SQLAlchemy's own
        # execution of a one-row lookup costs ten times what the database takes.
        rows = self._run_group.fetch(conn, {"run_id": run_id})
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def group_names(self, conn: Connection, limit: int | None, offset: int) -> list[str]:
        """Group names, the group with the most recently written run first."""
        stmt = (
            select(RunRecord.group_id)
            .where(RunRecord.group_id.is_not(None))
            .group_by(RunRecord.group_id)
            .order_by(
                func.max(RunRecord.updated_ns).desc(), self.flavor.by_code_point(RunRecord.group_id)
            )
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        return [name for name in conn.execute(stmt).scalars() if name is not None]

    def compact(
        self, conn: Connection, run_id: str, after: int | None = None
    ) -> tuple[int, int | None]:
        """Delete the run's oldest events above ``after`` and at or below its snapshot's seq.

        At most the flavor's :attr:`~purpose_agent.db.dialects.Flavor.compact_chunk` events.

        Returns:
            How many were deleted, and the last seq of the chunk if covered events may be
            left after it (the next chunk's ``after``: the deleted rows the server has not
            purged yet are not walked again), else ``None``.
        """
        covered = (
            select(SnapshotRecord.seq).where(SnapshotRecord.run_id == run_id).scalar_subquery()
        )
        in_run = [EventRecord.run_id == run_id, EventRecord.seq <= covered]
        if after is not None:
            in_run.append(EventRecord.seq > after)
        # The chunk's last seq, read on the primary key; None if fewer events are covered.
        bound = conn.execute(
            select(EventRecord.seq)
            .where(*in_run)
            .order_by(EventRecord.seq)
            .limit(1)
            .offset(self.flavor.compact_chunk - 1)
        ).scalar()
        stmt = delete(EventRecord).where(*in_run)
        if bound is not None:
            stmt = stmt.where(EventRecord.seq <= bound)
        return int(conn.execute(stmt).rowcount), None if bound is None else int(bound)

    def scoped_runs(
        self,
        conn: Connection,
        run_ids: Sequence[str] | None,
        group: str | None,
        prefix: str | None,
        written_before: int | None = None,
    ) -> list[tuple[str, int]]:
        """``(run_id, updated_ns)`` of the runs in scope, locked until the transaction ends.

        With ``written_before``, only runs last written before that stamp are read and
        locked: a run being written now is neither locked nor waited for (on Postgres, a row
        written while this waited for its lock is checked again against the stamp).
        """
        base = select(RunRecord.run_id, RunRecord.updated_ns).where(*_run_scope(group, prefix))
        if written_before is not None:
            base = base.where(RunRecord.updated_ns < written_before)
        if run_ids is None:
            return [(run_id, int(ns)) for run_id, ns in conn.execute(base.with_for_update())]
        found: list[tuple[str, int]] = []
        for start in range(0, len(run_ids), LOOKUP_CHUNK):
            chunk = run_ids[start : start + LOOKUP_CHUNK]
            stmt = base.where(self.flavor.one_of(RunRecord.run_id, chunk)).with_for_update()
            found.extend((run_id, int(ns)) for run_id, ns in conn.execute(stmt))
        return found

    def group_members(self, conn: Connection, run_ids: Sequence[str]) -> list[tuple[str, str]]:
        """``(run_id, group)`` of every run in the groups of these runs, locked.

        The rows stay locked until the transaction ends: a writer of any run of the groups
        waits for it. The runs given are read without a lock (their caller locked them).
        """
        groups: set[str] = set()
        for start in range(0, len(run_ids), LOOKUP_CHUNK):
            chunk = run_ids[start : start + LOOKUP_CHUNK]
            stmt = select(RunRecord.group_id).where(
                self.flavor.one_of(RunRecord.run_id, chunk), RunRecord.group_id.is_not(None)
            )
            groups.update(group for group in conn.execute(stmt).scalars() if group is not None)
        named = sorted(groups)
        members: list[tuple[str, str]] = []
        for start in range(0, len(named), LOOKUP_CHUNK):
            chunk = named[start : start + LOOKUP_CHUNK]
            locked = (
                select(RunRecord.run_id, RunRecord.group_id)
                .where(self.flavor.one_of(RunRecord.group_id, chunk))
                .with_for_update()
            )
            members.extend(
                (run_id, group) for run_id, group in conn.execute(locked) if group is not None
            )
        return members

    def delete_runs(self, conn: Connection, run_ids: Sequence[str]) -> None:
        """Remove the runs' events, snapshots and rows."""
        for start in range(0, len(run_ids), LOOKUP_CHUNK):
            chunk = run_ids[start : start + LOOKUP_CHUNK]
            for model in (EventRecord, SnapshotRecord, RunRecord):
                conn.execute(delete(model).where(self.flavor.one_of(model.run_id, chunk)))

    # -- reads ----------------------------------------------------------------------------

    def stored_events(self, conn: Connection, run_id: str, seqs: Sequence[int]) -> list[EventRow]:
        """The stored rows of a run at the given positions (ascending ``seqs``).

        Positions that are mostly contiguous (a step, a re-sent batch) are read as one key
        range, which costs what reading them costs; an ``IN`` list of thousands of parameters
        costs the client more than the server, per statement.
        """
        low, high = seqs[0], seqs[-1]
        where = (
            EventRecord.seq.between(low, high)
            if high - low < 2 * len(seqs)
            else EventRecord.seq.in_(seqs)
        )
        found = conn.execute(select(*EVENT_COLUMNS).where(EventRecord.run_id == run_id, where))
        wanted = set(seqs)
        return [EventRow(run_id, *row) for row in found if row[0] in wanted]

    def events_after(
        self, conn: Connection | HeldReads, run_id: str, since: int, limit: int | None
    ) -> list[Any]:
        """Rows ``(seq, kind, ts, lane_id, data)`` after ``since``, ascending."""
        if limit is None:
            return self._events.fetch(conn, {"run_id": run_id, "since": since})
        return self._events_limited.fetch(conn, {"run_id": run_id, "since": since, "limit": limit})

    def events_in(
        self, conn: Connection | HeldReads, run_id: str, window: EventWindow
    ) -> list[Any]:
        """Rows ``(seq, kind, ts, lane_id, data)`` of a bounded read, in the window's order.

        The statement is built once per shape of window (which bounds, how many kinds and
        lanes) and then runs like the store's other prepared statements: building and
        compiling a statement per read cost 50 times what SQLite takes to answer it. Past
        :data:`_LISTED` values a filter is one list parameter, so any number of lanes is one
        statement of one shape.
        """
        before, limit, kinds, lanes = window.before, window.limit, window.kinds, window.lanes
        shape = (
            before is not None,
            window.newest_first,
            limit is not None,
            None if kinds is None else _listed_count(self.flavor, kinds),
            None if lanes is None else _listed_count(self.flavor, lanes),
        )
        statement = self._windows.get(shape)
        if statement is None:
            if len(self._windows) >= _WINDOW_SHAPES:
                self._windows.clear()
            # A long list goes binary on psycopg: its text format quotes each element.
            statement = self._windows[shape] = self._shared(
                f"window {shape}", functools.partial(_window, self.flavor, *shape), ("kind", "lane")
            )
        values: dict[str, Any] = {"run_id": run_id, "since": window.since_seq}
        if before is not None:
            values["before"] = before
        if limit is not None:
            values["limit"] = limit
        if kinds:
            _listed_values(self.flavor, "kind", kinds, values)
        if lanes:
            _listed_values(self.flavor, "lane", lanes, values)
        return statement.fetch(conn, values)

    def recovery_rows(self, conn: Connection | HeldReads, run_id: str) -> list[Any]:
        """Rows ``(seq, kind, ts, lane_id, data)``: the snapshot, then its tail, by seq.

        The snapshot's row, if the run has one, is the first, and the only one whose ``kind``
        is ``None``; its ``data`` is the state.
        """
        return self._recovery.fetch(conn, {"run_id": run_id})

    def snapshot(self, conn: Connection | HeldReads, run_id: str) -> tuple[int, str] | None:
        """The stored snapshot's ``(seq, state)``, or ``None``."""
        rows = self._snapshot.fetch(conn, {"run_id": run_id})
        return (rows[0][0], rows[0][1]) if rows else None

    def undecodable(self, conn: Connection, run_id: str) -> tuple[int | None, str]:
        """The first record of a run with a text column that is not UTF-8, and that column.

        Reads the run's text columns as bytes, so it works where reading them as text fails;
        it runs only after such a failure.
        """
        columns = ("kind", "lane_id", "data")
        events = select(
            EventRecord.seq, *(cast(getattr(EventRecord, name), LargeBinary) for name in columns)
        )
        for seq, *values in conn.execute(
            events.where(EventRecord.run_id == run_id).order_by(EventRecord.seq)
        ):
            for name, value in zip(columns, values, strict=True):
                if not _utf8(value):
                    return int(seq), name
        snapshot = select(SnapshotRecord.seq, cast(SnapshotRecord.state, LargeBinary))
        for seq, value in conn.execute(snapshot.where(SnapshotRecord.run_id == run_id)):
            if not _utf8(value):
                return int(seq), "state of the snapshot"
        return None, "unknown"

    def run_ids(
        self,
        conn: Connection,
        limit: int | None,
        offset: int,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        """Run ids, most recently written first, of a group and an id prefix if given."""
        stmt = (
            select(RunRecord.run_id)
            .where(*_run_scope(group, prefix))
            .order_by(RunRecord.updated_ns.desc(), self.flavor.by_code_point(RunRecord.run_id))
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        return list(conn.execute(stmt).scalars())

    # -- summaries ------------------------------------------------------------------------

    def run_lines(
        self,
        conn: Connection,
        limit: int | None,
        offset: int = 0,
        *,
        after: tuple[int, str] | None = None,
        group: str | None = None,
        prefix: str | None = None,
        written_before: int | None = None,
        covering: bool = False,
        states: bool = True,
        counts: bool = False,
    ) -> list[RunLine]:
        """A page of runs with their snapshots, most recently written first.

        Args:
            conn: The connection.
            limit: At most this many; ``None`` for all.
            offset: Skip this many first.
            after: Start after this ``(updated_ns, run_id)``, the last line of the previous
                page: a walk over every run pages without ``OFFSET``, which the database
                would count through again on every page.
            group: Only runs of this group.
            prefix: Only runs whose id starts with this.
            written_before: Only runs last written before this stamp (nanoseconds).
            covering: Only runs whose snapshot covers a stored event (what compacting would
                delete from).
            states: Read the snapshot's text (a listing decodes its status); without it,
                ``state`` is ``None`` and no payload is read.
            counts: Count each run's events and those its snapshot covers.

        Returns:
            The runs, in ``(updated_ns desc, run_id)`` order.

        """
        covered_events = and_(
            EventRecord.run_id == RunRecord.run_id, EventRecord.seq <= SnapshotRecord.seq
        )
        columns: list[Any] = [
            RunRecord.run_id,
            RunRecord.group_id,
            RunRecord.last_seq,
            RunRecord.updated_ns,
            SnapshotRecord.seq,
            SnapshotRecord.state if states else type_coerce(null(), String),
        ]
        if counts:
            every = select(func.count()).where(EventRecord.run_id == RunRecord.run_id)
            columns.append(every.correlate(RunRecord).scalar_subquery())
            covered = select(func.count()).where(covered_events)
            columns.append(covered.correlate(RunRecord, SnapshotRecord).scalar_subquery())
        stmt = (
            select(*columns)
            .outerjoin(SnapshotRecord, SnapshotRecord.run_id == RunRecord.run_id)
            .where(*_run_scope(group, prefix))
            .order_by(RunRecord.updated_ns.desc(), self.flavor.by_code_point(RunRecord.run_id))
        )
        if after is not None:
            # Written as a range on updated_ns first, so the index on it bounds the scan.
            ns, run_id = after
            stmt = stmt.where(
                RunRecord.updated_ns <= ns,
                or_(
                    RunRecord.updated_ns < ns,
                    self.flavor.by_code_point(RunRecord.run_id) > run_id,
                ),
            )
        if written_before is not None:
            stmt = stmt.where(RunRecord.updated_ns < written_before)
        if covering:
            stmt = stmt.where(select(EventRecord.seq).where(covered_events).exists())
        if offset:
            stmt = stmt.offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [RunLine(*row) for row in conn.execute(stmt)]

    def row_gaps(self, conn: Connection, run_ids: Sequence[str] | None = None) -> list[RowGap]:
        """Runs whose row is missing or behind their events, of ``run_ids`` or of the store.

        Over the whole store this reads every event's key once (a scan of the primary key),
        which is what a verification costs anyway.
        """
        if run_ids is None:
            return self._row_gaps(conn, None)
        chosen = list(dict.fromkeys(run_ids))
        return [
            gap
            for start in range(0, len(chosen), _GAP_BATCH)
            for gap in self._row_gaps(conn, chosen[start : start + _GAP_BATCH])
        ]

    def _row_gaps(self, conn: Connection, run_ids: Sequence[str] | None) -> list[RowGap]:
        # Each run's highest seq first (a walk of the primary key, per partition on a
        # partitioned table), then its row: not every event joined to its row.
        tops = select(EventRecord.run_id, func.max(EventRecord.seq).label("top"))
        if run_ids is not None:
            tops = tops.where(EventRecord.run_id.in_(run_ids))
        top = tops.group_by(EventRecord.run_id).subquery()
        events = (
            select(top.c.run_id, RunRecord.last_seq, top.c.top)
            .outerjoin(RunRecord, RunRecord.run_id == top.c.run_id)
            .where(or_(RunRecord.last_seq.is_(None), top.c.top > RunRecord.last_seq))
        )
        snapshots = (
            select(SnapshotRecord.run_id)
            .outerjoin(RunRecord, RunRecord.run_id == SnapshotRecord.run_id)
            .where(RunRecord.run_id.is_(None))
        )
        if run_ids is not None:
            snapshots = snapshots.where(SnapshotRecord.run_id.in_(run_ids))
        gaps: dict[str, RowGap] = {}
        for run_id, last, top in conn.execute(events):
            try:
                gap = RowGap(str(run_id), None if last is None else int(last), int(top))
            except (TypeError, ValueError):
                continue  # a damaged seq (SQLite keeps what it is given): its reads report it
            gaps[gap.run_id] = gap
        for (run_id,) in conn.execute(snapshots):
            gaps.setdefault(str(run_id), RowGap(str(run_id), None, None))
        return sorted(gaps.values(), key=lambda gap: gap.run_id)

    def run_row(self, conn: Connection, run_id: str) -> tuple[int, int] | None:
        """A run's ``(last_seq, updated_ns)``, or ``None`` for an unknown run."""
        row = conn.execute(
            select(RunRecord.last_seq, RunRecord.updated_ns).where(RunRecord.run_id == run_id)
        ).first()
        return (int(row[0]), int(row[1])) if row is not None else None

    def kind_counts(self, conn: Connection, run_id: str) -> list[KindCount]:
        """How many stored events a run has of each kind."""
        stmt = (
            select(EventRecord.kind, func.count(), func.min(EventRecord.seq))
            .where(EventRecord.run_id == run_id)
            .group_by(EventRecord.kind)
            .order_by(EventRecord.kind)
        )
        rows = conn.execute(stmt)
        return [KindCount(kind, int(count), int(first)) for kind, count, first in rows]

    @functools.cached_property
    def _count_after(self) -> Statement:
        return self._build(
            select(func.count())
            .select_from(EventRecord)
            .where(EventRecord.run_id == bindparam("run_id"), EventRecord.seq > bindparam("since"))
        )

    def count_events(self, conn: Connection | HeldReads, run_id: str, since_seq: int = 0) -> int:
        """How many events a run has stored after ``since_seq`` (compiled once, as above)."""
        return int(self._count_after.fetch(conn, {"run_id": run_id, "since": since_seq})[0][0])

    # -- copies that keep event keys and groups ----------------------------------------------

    @functools.cached_property
    def _keyed_page(self) -> Statement:
        return self._build(
            select(*EVENT_COLUMNS, EventRecord.key)
            .where(EventRecord.run_id == bindparam("run_id"), EventRecord.seq > bindparam("since"))
            .order_by(EventRecord.seq)
            .limit(bindparam("limit"))
        )

    def keyed_events_after(
        self, conn: Connection | HeldReads, run_id: str, since: int, limit: int
    ) -> list[Any]:
        """Rows ``(seq, kind, ts, lane_id, data, key)`` after ``since``, ascending; ``limit``."""
        return self._keyed_page.fetch(conn, {"run_id": run_id, "since": since, "limit": limit})

    def stored_keyed(
        self, conn: Connection, run_id: str, seqs: Sequence[int]
    ) -> dict[int, tuple[EventRow, str | None]]:
        """The run's stored rows and their keys at the given positions (ascending), by seq.

        Read as one key range where the positions are mostly contiguous, as
        :meth:`stored_events` does.
        """
        low, high = seqs[0], seqs[-1]
        where = (
            EventRecord.seq.between(low, high)
            if high - low < 2 * len(seqs)
            else EventRecord.seq.in_(seqs)
        )
        found = conn.execute(
            select(*EVENT_COLUMNS, EventRecord.key).where(EventRecord.run_id == run_id, where)
        )
        wanted = set(seqs)
        return {
            seq: (EventRow(run_id, seq, kind, ts, lane_id, data), key)
            for seq, kind, ts, lane_id, data, key in found
            if seq in wanted
        }

    def clock_ns(self, conn: Connection) -> int | None:
        """The present as the server stamps writes; ``None`` where writers stamp them."""
        query = self.flavor.clock()
        return None if query is None else int(conn.execute(query).scalar_one())

    def regroup_run(self, conn: Connection, run_id: str, group: str, now: int) -> None:
        """Put a stored run in ``group`` and count it as written; an unknown run is left alone."""
        conn.execute(
            update(RunRecord)
            .where(RunRecord.run_id == run_id)
            .values(
                group_id=group,
                updated_ns=self.flavor.greatest(
                    RunRecord.updated_ns, self.flavor.write_time(now, locked=True)
                ),
            )
        )
