"""One trip to aiosqlite's thread per statement, instead of three or four.

aiosqlite runs each connection in a thread of its own and every call is a trip there and
back (a queue put, a wake-up of the loop). SQLAlchemy's adapter makes one trip to create a
cursor, one to execute, one to fetch and one to close it: for the store's short statements the
trips cost several times the statement. The cursor here runs the whole statement, fetch and
close included, as one function on the connection's thread, and keeps the rows on the loop.

It is installed on the connections of the async store's own SQLite engines (see
:func:`use_one_trip_cursors`); everything else about the adapter (errors, isolation level,
closing) is SQLAlchemy's.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Connection, event
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from purpose_agent.db.cursor import run_on_cursor
from purpose_agent.db.queries import observed, run_sql

T = TypeVar("T")

# A write held back: its SQL, parameters, and whether it runs once per parameter set.
Held = tuple[str, Any, bool]


def _run(
    raw: Any, held: list[Held], sql: str, parameters: Any, many: bool
) -> tuple[Any, int, Any, list[Any]]:
    """The statements held back, then this one, on the connection's own thread.

    Returns this statement's description, counts and rows. A held statement that fails
    raises its error, and neither the statements after it nor this one run.
    """
    for held_sql, held_parameters, held_many in held:
        done = (
            raw.executemany(held_sql, held_parameters)
            if held_many
            else raw.execute(held_sql, held_parameters or ())
        )
        done.close()
    cursor = raw.executemany(sql, parameters) if many else raw.execute(sql, parameters or ())
    try:
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor:
    """A buffered DBAPI cursor whose every statement is one call on aiosqlite's thread.

    It stands alone rather than extending SQLAlchemy's adapted cursor, whose layout differs
    between SQLAlchemy 2.0 and 2.1: all it shares with it is the adapted connection it runs on
    (its driver connection and its error translation).
    """

    __slots__ = (
        "_adapt_connection",
        "_connection",
        "_rows",
        "arraysize",
        "description",
        "lastrowid",
        "rowcount",
    )

    server_side = False
    # A task cancelled while its statement ran leaves pa_in_flight set, and the connection is
    # rolled back when it returns to the pool (use_one_trip_cursors): it need not be dropped.
    recovers_on_return = True

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows: collections.deque[Any] = collections.deque()
        self.arraysize = 1
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: Any = None

    def _call(self, sql: str, parameters: Any, many: bool) -> None:
        connection = self._connection
        held: list[Held] = connection.pa_held
        if connection.pa_holding and _writes_only(sql):
            held.append((sql, parameters, many))
            self.description, self.rowcount, self.lastrowid = None, -1, None
            self._rows = collections.deque()
            return
        if held:
            connection.pa_held = []
            if sql == "ROLLBACK":
                if held[0][0].startswith("BEGIN"):
                    return  # nothing of the transaction was sent: nothing to undo
                held = []
        # Cleared only when the statement's answer came back: a task cancelled while it ran
        # leaves the mark, and the connection is rolled back when it returns to the pool.
        connection.pa_in_flight = True
        try:
            found = await_only(
                connection._execute(_run, connection._conn, held, sql, parameters, many)
            )
        except Exception as error:  # noqa: BLE001 - the adapter raises it as the DBAPI's error
            connection.pa_in_flight = False
            self._adapt_connection._handle_exception(error)
        connection.pa_in_flight = False
        self.description, self.rowcount, self.lastrowid, rows = found
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> None:
        """Run one statement and buffer its rows."""
        self._call(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        """Run one statement per parameter set, in one trip."""
        self._call(operation, seq_of_parameters, many=True)

    def setinputsizes(self, *sizes: Any) -> None:
        """Nothing to set: SQLite takes every value as it is."""

    def fetchone(self) -> Any:
        """The next buffered row, or ``None``."""
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` buffered rows (``arraysize`` by default)."""
        count = min(self.arraysize if size is None else size, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    def fetchall(self) -> list[Any]:
        """Every buffered row left."""
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self) -> Iterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    def close(self) -> None:
        """Forget the buffered rows (the driver's cursor is closed already)."""
        self._rows.clear()


def run_in_thread(conn: Connection, sql: str, work: Callable[[Any], T]) -> T:
    """Run ``work(sqlite3_connection)`` on aiosqlite's thread: one trip, whatever it runs.

    For a unit that needs an answer between its statements (an append learns its seqs from
    the run row's upsert before it inserts them), which statement by statement would cost a
    trip per answer. ``work`` opens and ends its own transaction. The driver's errors come
    back as any statement's do (see :func:`~purpose_agent.db.cursor.run_on_cursor`; ``sql``
    names the work in them); other exceptions as ``work`` raised them.
    """

    def call(cursor: OneTripCursor) -> T:
        connection = cursor._connection
        connection.pa_in_flight = True  # as for a statement: see OneTripCursor._call
        try:
            result: T = await_only(connection._execute(work, connection._conn))
        except Exception as error:
            connection.pa_in_flight = False
            if isinstance(error, ValueError) and error.args and isinstance(error.args[0], str):
                # aiosqlite's "no active connection" becomes the DBAPI's OperationalError.
                cursor._adapt_connection._handle_exception(error)
            raise  # the driver's own errors, and what ``work`` raised, as they are
        connection.pa_in_flight = False
        return result

    return run_on_cursor(conn, sql, call)


def one_trip(conn: Connection) -> bool:
    """Whether :func:`run_in_thread` can serve this connection (aiosqlite, nothing watching)."""
    return isinstance(conn.connection.dbapi_connection, OneTripConnection) and not observed(
        conn.engine
    )


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection, handing out :class:`OneTripCursor`.

    ``cursor()`` itself is overridden (SQLAlchemy 2.1 builds cursors from a class attribute,
    2.0 names its class in ``cursor()``): a transaction whose writes were held for a cursor
    that never sends them would commit each of them alone.
    """

    __slots__ = ()

    def cursor(self, server_side: bool = False) -> Any:
        """A one-trip cursor; a server-side one is SQLAlchemy's (the store uses none)."""
        if server_side:
            return super().cursor(server_side=True)
        return OneTripCursor(self)


def use_one_trip_cursors(engine: AsyncEngine) -> None:
    """Give every new connection of an aiosqlite engine the one-trip cursor.

    The engine must be built with ``pool_reset_on_return=None``: a connection is rolled back
    when it returns to the pool only if a transaction is open or a statement may still be
    running (its task was cancelled), which saves a trip to its thread on every call.
    """

    @event.listens_for(engine.sync_engine, "reset")
    def _reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        driver = dbapi_connection.driver_connection
        driver.pa_held = []  # writes held by a transaction that was never sent
        driver.pa_holding = False
        if getattr(driver, "pa_in_flight", True) or driver.in_transaction:
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "connect", insert=True)
    def _swap(dbapi_connection: Any, _record: Any) -> None:
        if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
            dbapi_connection.__class__ = OneTripConnection
            driver = dbapi_connection.driver_connection
            driver.pa_held = []
            driver.pa_holding = False


def _writes_only(sql: str) -> bool:
    """Whether a statement answers with nothing but counts (which a held write does not give)."""
    verb = sql[:7].upper()
    return verb.startswith(("INSERT", "UPDATE", "DELETE")) and "RETURNING" not in sql.upper()


@contextlib.contextmanager
def one_trip_transaction(conn: Connection, begin_sql: str) -> Iterator[Connection]:
    """A write transaction sent to aiosqlite's thread as one trip, with its COMMIT.

    Its writes (statements that return no rows) are held back and sent with the next
    statement that returns rows, or with the COMMIT: a step's BEGIN, inserts, upserts and
    COMMIT make one trip instead of five or six, each of which wakes a thread and the event
    loop. A held write that fails raises its error from the statement it was sent with; the
    transaction is then rolled back. If the block raises before anything was sent, nothing
    is sent at all.

    On a connection without one-trip cursors, or while anything observes the engine's
    statements (which must see each statement when it runs), it is a plain transaction.

    Args:
        conn: An autocommit connection.
        begin_sql: The statement that opens a write transaction (``BEGIN IMMEDIATE``).

    """
    driver: Any = conn.connection.driver_connection
    holding = getattr(driver, "pa_held", None) is not None and not observed(conn.engine)
    try:
        if holding:
            driver.pa_held = [(begin_sql, None, False)]
            driver.pa_holding = True
        else:
            run_sql(conn, begin_sql)
        try:
            yield conn
        finally:
            if holding:
                driver.pa_holding = False
        run_sql(conn, "COMMIT")
    except BaseException:
        try:
            pending = getattr(driver, "pa_held", None)
            if not conn.invalidated and (pending or getattr(driver, "in_transaction", True)):
                run_sql(conn, "ROLLBACK")
        except Exception as exc:  # noqa: BLE001 - the error being raised matters more
            if not conn.invalidated:
                conn.invalidate(exc)
        raise
