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

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

T = TypeVar("T")


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
        lost = conn.dialect.is_disconnect(exc, proxied.dbapi_connection, cursor)
        if lost:
            # As SQLAlchemy does for its own statements: a lost connection means the server
            # went away, so every pooled connection older than now is replaced on checkout,
            # not only this one (after a restart all of them are dead).
            conn.engine.pool._invalidate(proxied, exc, _checkin=False)
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, None, exc, error, connection_invalidated=lost, dialect=conn.dialect
        ) from exc
    except BaseException as exc:
        if not isinstance(exc, Exception) and not getattr(cursor, "recovers_on_return", False):
            # Cancelled (or interrupted) with the statement under way: what the connection
            # was doing is unknown (aiomysql closes it, "Cancelled during execution"), so
            # the pool must not hand it out again. SQLAlchemy does the same for its own.
            conn.invalidate(exc)
        raise
    finally:
        if not conn.invalidated:
            cursor.close()


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

    def params(self, values: Mapping[str, Any]) -> Any:
        """The driver parameters for ``values``, in the order or form the driver wants."""
        merged = {**self._defaults, **values} if self._defaults else values
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
        """Run the statement once per parameter set, through the driver's executemany."""
        params = [self.params(row) for row in rows]
        run_on_cursor(conn, self.sql, lambda cursor: cursor.executemany(self.sql, params))

    def run_tuples(self, conn: Connection, fields: Sequence[str], rows: Sequence[Any]) -> None:
        """Run the statement once per row of ``fields`` values, through executemany.

        Where the driver takes positional parameters in exactly this order (SQLite), the rows
        go to the driver as they are, without a dict per row.
        """
        if self._positions is not None and list(self._positions) == list(fields):
            params: Any = rows
        else:
            params = [self.params(dict(zip(fields, row, strict=True))) for row in rows]
        run_on_cursor(conn, self.sql, lambda cursor: cursor.executemany(self.sql, params))

    def execute_on(self, cursor: Any, values: Mapping[str, Any]) -> None:
        """Run with ``values`` on a driver cursor the caller holds (inside its own unit)."""
        cursor.execute(self.sql, self.params(values))

    def executemany_on(self, cursor: Any, fields: Sequence[str], rows: Sequence[Any]) -> None:
        """Run once per row of ``fields`` values on a driver cursor the caller holds."""
        if self._positions is not None and list(self._positions) == list(fields):
            params: Any = rows
        else:
            params = [self.params(dict(zip(fields, row, strict=True))) for row in rows]
        if len(params) == 1:
            cursor.execute(self.sql, params[0])
        else:
            cursor.executemany(self.sql, params)

    def fetch(self, conn: Connection, values: Mapping[str, Any]) -> list[Any]:
        """Run a query with ``values`` and return every row as the driver's tuples."""
        params = self.params(values)

        def call(cursor: Any) -> list[Any]:
            cursor.execute(self.sql, params)
            return list(cursor.fetchall())

        return run_on_cursor(conn, self.sql, call)
