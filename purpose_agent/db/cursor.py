"""The fast path: statements compiled once per store and run on the driver's own cursor.

SQLAlchemy caches compiled statements, but every execution still builds the statement's cache
key, creates an execution context and a result object, and dispatches events; for the store's
hot statements that costs more than SQLite takes to run them, and a large share of a Postgres
round trip. This path is taken only while nothing listens to the engine (no ``echo``, no
cursor-execute listeners such as OpenTelemetry's instrumentation): see
:func:`purpose_agent.db.queries.observed`. Otherwise every statement goes through
``Connection.execute`` and is seen like any other.

The statements are still built with Core on the mapped tables and run on a pooled SQLAlchemy
connection; only the compiling is done once. Driver errors are raised as SQLAlchemy's
``DBAPIError`` subclasses, as SQLAlchemy itself would raise them, and a lost connection is
invalidated so that the pool replaces it.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Insert
from sqlalchemy.sql.compiler import SQLCompiler

T = TypeVar("T")

# A statement as the driver takes it: SQL, parameters, and whether they are many sets.
DriverCall = tuple[str, Any, bool]


def run_on_cursor(conn: Connection, sql: str, call: Callable[[Any], T]) -> T:
    """Run ``call(cursor)`` on the connection's DBAPI cursor, translating driver errors."""
    proxied = conn.connection
    error = conn.dialect.loaded_dbapi.Error
    try:
        cursor = proxied.cursor()
    except error as exc:
        # No statement was sent: the connection itself is unusable (closed under the store,
        # or left broken by a cancelled call). It is replaced, and the work may run again.
        conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, None, exc, error, connection_invalidated=True, dialect=conn.dialect
        ) from exc
    try:
        return call(cursor)
    except error as exc:
        raise driver_error(conn, proxied, cursor, sql, exc) from exc
    except BaseException as exc:
        interrupted(conn, cursor, exc)
        raise
    finally:
        if not conn.invalidated:
            cursor.close()


def driver_error(conn: Connection, proxied: Any, cursor: Any, sql: str, exc: Any) -> DBAPIError:
    """A driver's error running ``sql`` on ``conn``, as SQLAlchemy raises it.

    A lost connection is invalidated first.
    """
    lost = conn.dialect.is_disconnect(exc, proxied.dbapi_connection, cursor)
    if lost:
        # As SQLAlchemy does for its own statements: a lost connection means the server
        # went away, so every pooled connection older than now is replaced on checkout,
        # not only this one (after a restart all of them are dead).
        conn.engine.pool._invalidate(proxied, exc, _checkin=False)
        conn.invalidate(exc)
    error = conn.dialect.loaded_dbapi.Error
    found: DBAPIError = DBAPIError.instance(
        sql, None, exc, error, connection_invalidated=lost, dialect=conn.dialect
    )
    return found


def interrupted(conn: Connection, cursor: Any, exc: BaseException) -> None:
    """Invalidate a connection whose statement was cancelled or interrupted under way."""
    if not isinstance(exc, Exception) and not getattr(cursor, "recovers_on_return", False):
        # Cancelled (or interrupted) with the statement under way: what the connection
        # was doing is unknown (aiomysql closes it, "Cancelled during execution"), so
        # the pool must not hand it out again. SQLAlchemy does the same for its own.
        conn.invalidate(exc)


class CursorStatement:
    """A statement compiled for one dialect, with its fixed parameters filled in.

    Args:
        statement: The Core statement.
        dialect: The engine's dialect (which decides the driver's parameter style).
        binary: Parameters psycopg should send in its binary format. For arrays of text
            this matters: the text format quotes every element with a regular expression,
            which costs several times what the server takes to insert the batch.
    """

    def __init__(
        self, statement: ClauseElement, dialect: Dialect, binary: Sequence[str] = ()
    ) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        if binary and dialect.driver == "psycopg":
            for name in binary:
                self.sql = self.sql.replace(f"%({name})s", f"%({name})b")
        self._defaults = {
            name: value for name, value in compiled.params.items() if value is not None
        }
        positions = compiled.positiontup if isinstance(compiled, SQLCompiler) else None
        self._positions = positions  # None for named parameter styles
        # Builds the driver's tuple in C: a generator per statement cost more than SQLite
        # takes to answer the smallest reads. itemgetter of one name returns the bare value.
        self._take = operator.itemgetter(*positions) if positions and len(positions) > 1 else None
        self._rows = (
            RowsAtOnce.of(self.sql, len(positions))
            if positions and isinstance(statement, Insert) and dialect.name == "sqlite"
            else None
        )

    def params(self, values: Mapping[str, Any]) -> Any:
        """The driver parameters for ``values``, in the order or form the driver wants."""
        merged = {**self._defaults, **values} if self._defaults else values
        if self._take is not None:
            return self._take(merged)
        if self._positions is None:
            return merged
        return tuple(merged[name] for name in self._positions)

    def run(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run the statement with ``values``; returns the driver's row count."""
        params = self.params(values)

        def call(cursor: Any) -> int:
            cursor.execute(self.sql, params)
            return int(cursor.rowcount)

        return run_on_cursor(conn, self.sql, call)

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set (see :meth:`calls_for`)."""
        calls = self.calls_for([self.params(row) for row in rows])
        run_on_cursor(conn, self.sql, lambda cursor: run_calls(cursor, calls))

    def run_tuples(self, conn: Connection, fields: Sequence[str], rows: Sequence[Any]) -> None:
        """Run the statement once per row of ``fields`` values (see :meth:`calls_for`).

        Where the driver takes positional parameters in exactly this order (SQLite), the rows
        go to the driver as they are, without a dict per row.
        """
        calls = self.calls_for(self._tuples(fields, rows))
        run_on_cursor(conn, self.sql, lambda cursor: run_calls(cursor, calls))

    def execute_on(self, cursor: Any, values: Mapping[str, Any]) -> None:
        """Run with ``values`` on a driver cursor the caller holds (inside its own unit)."""
        cursor.execute(self.sql, self.params(values))

    def executemany_on(self, cursor: Any, fields: Sequence[str], rows: Sequence[Any]) -> None:
        """Run once per row of ``fields`` values on a driver cursor the caller holds."""
        run_calls(cursor, self.calls_for(self._tuples(fields, rows)))

    def run_many_on(self, cursor: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once per parameter set on a driver cursor the caller holds."""
        run_calls(cursor, self.calls_for([self.params(row) for row in rows]))

    def calls_for(self, params: Sequence[Any]) -> list[DriverCall]:
        """The driver calls that run the statement once per parameter set, in order.

        On SQLite an ``INSERT`` of many rows is sent as a few statements of many rows each
        (see :class:`RowsAtOnce`); elsewhere, and for one row, the driver is given the
        statement as it is.
        """
        if len(params) == 1:
            return [(self.sql, params[0], False)]
        if self._rows is not None:
            return self._rows.calls(params)
        return [(self.sql, params, True)]

    def _tuples(self, fields: Sequence[str], rows: Sequence[Any]) -> Sequence[Any]:
        if self._positions is not None and list(self._positions) == list(fields):
            return rows
        return [self.params(dict(zip(fields, row, strict=True))) for row in rows]

    def fetch(self, conn: Connection, values: Mapping[str, Any]) -> list[Any]:
        """Run a query with ``values`` and return every row as the driver's tuples."""
        params = self.params(values)

        def call(cursor: Any) -> list[Any]:
            cursor.execute(self.sql, params)
            return list(cursor.fetchall())

        return run_on_cursor(conn, self.sql, call)


def run_calls(target: Any, calls: Sequence[DriverCall]) -> None:
    """Run driver calls on a DBAPI cursor, or on a sqlite3 connection (whose cursors are closed).

    A cursor's ``execute`` returns the cursor itself (sqlite3), a row count (PyMySQL) or
    ``None``; a sqlite3 connection's returns a new cursor, closed here.
    """
    for sql, params, many in calls:
        done = target.executemany(sql, params) if many else target.execute(sql, params)
        if done is not target and hasattr(done, "close"):
            done.close()


_ONE_ROW = re.compile(r" VALUES (\((?:\?, )*\?\))")


class RowsAtOnce:
    """A one-row ``INSERT`` written out for many rows, so that SQLite runs them in one step.

    Python's sqlite3 lets go of the interpreter's lock around every step of a statement, and
    ``executemany`` steps once per row. Each time, the thread must win the lock back, and
    while another thread of the process is busy in Python that wait lasts up to the switch
    interval (5 ms). The rows of ``executemany`` mostly step too quickly for the other thread
    to take the lock, but not all of them: with one busy thread, a group commit's transaction
    of 231 events and 33 snapshots took 235 ms row by row, and 44 ms in statements of many
    rows. Up to ``EXACT`` rows (a step's events) go in one statement; more are cut into pieces
    of a power of two rows and a last one of up to ``EXACT``, so that a connection's statement
    cache holds a dozen texts per statement, and each piece stays under SQLite's oldest limit
    of 999 parameters.

    A piece is one statement: a row that fails (a taken key) fails its whole piece, where
    ``executemany`` would have kept the rows before it. Every caller rolls the transaction
    (or the savepoint) back on such an error, so nothing else changes. A conflict clause
    (``ON CONFLICT ... DO UPDATE``) is applied row by row, as SQLite does within a statement.
    """

    PARAMETERS = 999
    EXACT = 8

    def __init__(self, head: str, row: str, tail: str, width: int) -> None:
        self._head, self._row, self._tail, self._width = head, row, tail, width
        most = max(1, self.PARAMETERS // width)
        self._largest = 1 << (most.bit_length() - 1)
        self._exact = min(self.EXACT, self._largest)
        self._texts: dict[int, str] = {}

    @classmethod
    def of(cls, sql: str, width: int) -> RowsAtOnce | None:
        """The many-row form of ``sql``, if its one ``VALUES`` row holds all its parameters."""
        found = _ONE_ROW.search(sql)
        if found is None or sql.count("?") != width or found.group(1).count("?") != width:
            return None
        return cls(sql[: found.start(1)], found.group(1), sql[found.end(1) :], width)

    def text(self, rows: int) -> str:
        """The statement for exactly ``rows`` rows."""
        text = self._texts.get(rows)
        if text is None:
            text = self._texts[rows] = self._head + ", ".join([self._row] * rows) + self._tail
        return text

    def calls(self, params: Sequence[Any]) -> list[DriverCall]:
        """Calls inserting ``params`` in order: up to ``EXACT`` rows in one, more in pieces."""
        calls: list[DriverCall] = []
        start, total = 0, len(params)
        while start < total:
            left = total - start
            size = left if left <= self._exact else min(self._largest, 1 << (left.bit_length() - 1))
            piece = params[start : start + size]
            calls.append((self.text(size), list(itertools.chain.from_iterable(piece)), False))
            start += size
        return calls
