"""Statements compiled once per store and executed as driver SQL.

SQLAlchemy caches compiled statements, but it still walks a statement to build its cache key
on every execution; for the store's hot statements (a CTE with an upsert, a union for
recovery) that walk costs more than the database round trip it precedes. The statements are
still built with Core on the mapped tables; only the compiling is done once, here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, CursorResult
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class Compiled:
    """A statement compiled for one dialect, with its fixed parameters filled in.

    Args:
        statement: The Core statement.
        dialect: The engine's dialect (which decides the driver's parameter style).

    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
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

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> CursorResult[Any]:
        """Run the statement on ``conn`` with ``values`` for its named parameters."""
        return conn.exec_driver_sql(self.sql, self.params(values))

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set, through the driver's executemany."""
        conn.exec_driver_sql(self.sql, [self.params(row) for row in rows])
