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
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only


def _run(raw: Any, sql: str, parameters: Any, many: bool) -> tuple[Any, int, Any, list[Any]]:
    """The statement on the connection's own thread: its description, counts and rows."""
    cursor = raw.executemany(sql, parameters) if many else raw.execute(sql, parameters or ())
    try:
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose every statement is one call on aiosqlite's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: Any = None

    @property
    def description(self) -> Any:
        """The result's columns, as the DBAPI describes them."""
        return self._description

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        """The rowid of the last inserted row."""
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        """Rows per fetchmany; the rows are buffered already."""
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    def _call(self, sql: str, parameters: Any, many: bool) -> None:
        connection = self._connection
        # Cleared only when the statement's answer came back: a task cancelled while it ran
        # leaves the mark, and the connection is rolled back when it returns to the pool.
        connection.pa_in_flight = True
        try:
            found = await_only(connection._execute(_run, connection._conn, sql, parameters, many))
        except Exception as error:  # noqa: BLE001 - the adapter raises it as the DBAPI's error
            connection.pa_in_flight = False
            self._adapt_connection._handle_exception(error)
        connection.pa_in_flight = False
        self._description, self._rowcount, self._lastrowid, rows = found
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> None:
        """Run one statement and buffer its rows."""
        self._call(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        """Run one statement per parameter set, in one trip."""
        self._call(operation, seq_of_parameters, many=True)

    def close(self) -> None:
        """Forget the buffered rows (the driver's cursor is closed already)."""
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection, handing out :class:`OneTripCursor`."""

    __slots__ = ()
    _cursor_cls = OneTripCursor


def use_one_trip_cursors(engine: AsyncEngine) -> None:
    """Give every new connection of an aiosqlite engine the one-trip cursor.

    The engine must be built with ``pool_reset_on_return=None``: a connection is rolled back
    when it returns to the pool only if a transaction is open or a statement may still be
    running (its task was cancelled), which saves a trip to its thread on every call.
    """

    @event.listens_for(engine.sync_engine, "reset")
    def _reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        driver = dbapi_connection.driver_connection
        if getattr(driver, "pa_in_flight", True) or driver.in_transaction:
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "connect", insert=True)
    def _swap(dbapi_connection: Any, _record: Any) -> None:
        if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
            dbapi_connection.__class__ = OneTripConnection
