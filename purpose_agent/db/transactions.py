"""Opening units of work on a store's engine: reads, write transactions, the migration lock.

Connections run in autocommit on every backend (a single statement needs no BEGIN/COMMIT round
trips); a write transaction is opened here with an explicit statement, the same way for the
store, pruning and migrations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Connection, Engine

from purpose_agent.db.dialects import Flavor, flavor_for
from purpose_agent.db.queries import run_sql


class Transactions:
    """How one store opens connections.

    Args:
        engine: The store's engine.
        flavor: Its backend's rules (how a write transaction begins, how to tell one is open).
        owns_engine: Whether the store built the engine (and so set it up in autocommit).

    """

    def __init__(self, engine: Engine, flavor: Flavor, *, owns_engine: bool) -> None:
        self.engine = engine
        self._flavor = flavor
        # Every connection runs in autocommit. Engines the store builds are set up so
        # (make_engine); one passed in is switched per connection.
        self._autocommit = engine
        if not owns_engine:
            self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def single(self) -> Connection:
        """A connection for statements that are each a unit of work (reads, one-statement saves)."""
        return self._autocommit.connect()

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed when the block ends without error.

        The transaction is opened and ended by explicit statements on an autocommit
        connection, which SQLAlchemy's logging and events see like any other statement.
        """
        with self._autocommit.connect() as conn:
            run_sql(conn, self._flavor.begin_sql)
            try:
                yield conn
            except BaseException:
                self._roll_back(conn)
                raise
            # Alembic, running on this connection, may already have committed (SQLite).
            if self._open(conn):
                run_sql(conn, "COMMIT")

    def _open(self, conn: Connection) -> bool:
        return not conn.invalidated and self._flavor.in_transaction(
            conn.connection.driver_connection
        )

    def _roll_back(self, conn: Connection) -> None:
        try:
            if self._open(conn):
                run_sql(conn, "ROLLBACK")
        except Exception as exc:  # noqa: BLE001 - the error being raised matters more
            # A connection whose transaction state is unknown must not go back to the pool.
            if not conn.invalidated:
                conn.invalidate(exc)

    @contextlib.contextmanager
    def migration_lock(self) -> Iterator[Connection]:
        """A connection holding the lock that lets one process at a time migrate.

        The upgrade runs inside a write transaction (SQLite's immediate transaction is itself
        the lock); Postgres adds a transaction-level advisory lock, MariaDB, whose DDL
        commits implicitly, a named server lock released at the end.
        """
        lock = self._flavor.migration_lock()
        with self.write() as conn:
            if lock is not None:
                take, release = lock
                got = conn.execute(take).scalar()
                if release is not None and got != 1:
                    raise TimeoutError("another process held the migration lock for 10 minutes")
            else:
                release = None
            try:
                yield conn
            finally:
                if release is not None:
                    conn.execute(release)


def migration_lock(engine: Engine) -> contextlib.AbstractContextManager[Connection]:
    """The migration lock on any engine (a store's, a command's, or one Alembic was given)."""
    return Transactions(engine, flavor_for(engine), owns_engine=False).migration_lock()
