"""Opening units of work on a store's engine: reads, write transactions, the migration lock.

Engines the store builds run in autocommit on Postgres and MariaDB (a single statement needs
no BEGIN/COMMIT round trips) and with the driver's own transaction handling off on SQLite;
the write transaction is opened here, the same way for the store, pruning and migrations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine

from purpose_agent.db.dialects import Flavor, flavor_for
from purpose_agent.db.queries import run_sql


class Transactions:
    """How one store opens connections.

    Args:
        engine: The store's engine.
        flavor: Its backend's rules (autocommit, isolation, how a write transaction begins).
        owns_engine: Whether the store built the engine (and so set it up in autocommit).

    """

    def __init__(self, engine: Engine, flavor: Flavor, *, owns_engine: bool) -> None:
        self.engine = engine
        self._flavor = flavor
        # Connections for single statements: in autocommit. Engines the store builds are in
        # autocommit already (make_engine); one passed in is switched per connection.
        self._single = engine
        if flavor.autocommit and not owns_engine:
            self._single = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._writer = engine
        if flavor.transaction_isolation is not None:
            self._writer = engine.execution_options(isolation_level=flavor.transaction_isolation)

    def single(self) -> Connection:
        """A connection for statements that are each a unit of work (reads, one-statement saves)."""
        return self._single.connect()

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed when the block ends without error."""
        begin = self._flavor.begin_sql
        if begin is None:
            with self._writer.begin() as conn:
                yield conn
            return
        # The driver is in autocommit (see configure_sqlite): the transaction is opened and
        # ended by explicit statements, which SQLAlchemy's logging and events see like others.
        with self.engine.connect() as conn:
            run_sql(conn, begin)
            try:
                yield conn
            except BaseException:
                if _in_transaction(conn, default=False):
                    run_sql(conn, "ROLLBACK")
                raise
            # Alembic, running on this connection, may already have committed through the driver.
            if _in_transaction(conn, default=True):
                run_sql(conn, "COMMIT")

    @contextlib.contextmanager
    def migration_lock(self) -> Iterator[Connection]:
        """A connection holding the lock that lets one process at a time migrate."""
        lock = self._flavor.migration_lock()
        if lock is None:
            # The write transaction itself: a second process waits until the first has migrated.
            with self.write() as conn:
                yield conn
            return
        take, release = lock
        with self._writer.connect() as conn:
            got = conn.execute(take).scalar()
            if release is not None and got != 1:
                raise TimeoutError("another process held the migration lock for 10 minutes")
            try:
                yield conn
                conn.commit()
            finally:
                if release is not None:
                    conn.execute(release)
                    conn.commit()


def _in_transaction(conn: Connection, *, default: bool) -> bool:
    if conn.invalidated:
        return False
    driver: Any = conn.connection.driver_connection
    return bool(getattr(driver, "in_transaction", default))


def migration_lock(engine: Engine) -> contextlib.AbstractContextManager[Connection]:
    """The migration lock on any engine (a store's, a command's, or one Alembic was given)."""
    return Transactions(engine, flavor_for(engine), owns_engine=False).migration_lock()
