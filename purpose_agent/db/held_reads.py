"""SQLite reads on a connection each thread keeps, instead of one checked out per call.

A read of a few rows takes SQLite a few microseconds; checking a connection out of
SQLAlchemy's pool and back in costs about twice that, and a small read (one event by key, the
newest event of a run) paid it on every call. Here each thread opens its own connection to the
store's file once and runs the store's precompiled reads on it (the fast path of
:mod:`purpose_agent.db.cursor`).

Holding a connection is safe for reads because it is in autocommit and every statement's rows
are fetched whole: SQLite ends the statement's read transaction when its cursor is exhausted,
so a held connection keeps no snapshot between calls, reads every commit made before the
statement starts (by this process or another), and never holds back a WAL checkpoint. Only
reads run here: writes run their transactions on the store's write connection.

A read first tries the store's held write connection (see
:class:`~purpose_agent.db.transactions.HeldWriter`), when it is open and no thread is writing
on it: SQLite keeps a page cache per connection, and a read on the connection that made the
last write finds its pages there, where another connection would reload every page that
changed (three small reads after each append: 94-97 µs there, 102-109 µs on the reader's
own connection). A read never waits for it: while a thread writes, reads take their own.

Used only for a file database on an engine the store built (whose URL says how to open the
file), and only while nothing watches the engine's statements; otherwise reads take the pool.
A connection that raised is closed and replaced on the next read; a connection opened by a
parent process is never used by a forked child; :meth:`HeldReads.close` closes every thread's.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from purpose_agent.db.cursor import CursorStatement, driver_error, interrupted
from purpose_agent.db.forks import close_inherited

if TYPE_CHECKING:
    from purpose_agent.db.sqlite_file import WatchedFile
    from purpose_agent.db.transactions import HeldWriter

# The process a held connection belongs to; a forked child gets a new number, so it opens
# its own connections (checked per read: cheaper than os.getpid()).
_process = [0]


# The held reads of this process, whose connections a forked child closes (see _forked).
_EVERY: weakref.WeakSet[HeldReads] = weakref.WeakSet()


class _ReadGate:
    """The reads on held connections under way, which a fork waits for and holds back.

    A thread inside SQLite holds its locks (the connection's, the memory allocator's), which a
    child forked meanwhile inherits taken, with nobody there to release them: the child hung
    at the fork, as CPython dropped the other threads and closed their held connections, or
    at its first read. A fork therefore waits until no thread reads on a held connection, and
    reads asked for meanwhile wait for the fork (reads on the write connection take its turn,
    which the fork holds too: see :mod:`purpose_agent.db.transactions`).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._inside = 0
        self._forks = 0

    def enter(self) -> None:
        """Before a read: wait while a fork is under way, then count this read in."""
        with self._changed:
            while self._forks:
                self._changed.wait()
            self._inside += 1

    def leave(self) -> None:
        """After a read (its connection opened, used or closed)."""
        with self._changed:
            self._inside -= 1
            if not self._inside and self._forks:
                self._changed.notify_all()

    def hold(self, timeout: float) -> None:
        """Before a fork: hold back new reads, wait up to ``timeout`` s for those under way."""
        with self._changed:
            self._forks += 1
            self._changed.wait_for(lambda: not self._inside, timeout)

    def release(self) -> None:
        """In the parent after a fork: let the reads held back go on."""
        with self._changed:
            self._forks -= 1
            if not self._forks:
                self._changed.notify_all()


_gate = _ReadGate()


def hold_reads_for_fork() -> None:
    """Before a fork: hold back held reads and wait for those under way.

    At most the stores' longest busy timeout: no read waits longer for a lock.
    """
    _gate.hold(max((reads.wait for reads in list(_EVERY)), default=0.0))


def release_reads_after_fork() -> None:
    """In the parent after a fork: let the held reads go on."""
    _gate.release()


def _forked() -> None:
    global _gate  # noqa: PLW0603 - the child's gate is new: its lock may have been taken
    _gate = _ReadGate()
    _process[0] += 1
    # The forking thread's connection, idle as it forks: closed at once, for SQLite's lock
    # records (see purpose_agent.db.forks). The other threads' ended with their threads.
    for reads in list(_EVERY):
        held: _Held | None = getattr(reads._local, "held", None)
        if held is not None and close_inherited(held.connection):
            held.connection = None


os.register_at_fork(after_in_child=_forked)


class _Held:
    """One thread's connection, closed when the thread ends (its holder is collected)."""

    __slots__ = ("__weakref__", "connection", "process")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.process = _process[0]

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def __del__(self) -> None:
        # In the collecting thread: the connection was opened with check_same_thread off.
        self.close()


class HeldReads:
    """The per-thread read connections of one SQLite file store.

    Args:
        engine: The store's engine, built by the store for a SQLite file.
        busy_timeout: Seconds a read waits for a lock (a WAL reset, a checkpoint).
        writer: The store's held write connection, which reads use while it is idle.
    """

    def __init__(
        self,
        engine: Engine,
        busy_timeout: float,
        writer: HeldWriter | None = None,
        watched: WatchedFile | None = None,
    ) -> None:
        self._writer = writer
        self._watched = watched
        dialect = engine.dialect
        cargs, cparams = dialect.create_connect_args(engine.url)
        self._dialect = dialect
        self._dbapi = dialect.loaded_dbapi
        self._cargs = cargs
        # Autocommit (no transaction is ever opened on it); closed from the thread that calls
        # close() or collects a finished thread's holder.
        self._cparams = {**cparams, "check_same_thread": False, "isolation_level": None}
        self._timeout_ms = int(busy_timeout * 1000)
        self.wait = busy_timeout  # how long a fork waits for a read under way
        self._local = threading.local()
        self._every: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        _EVERY.add(self)

    def _open(self) -> _Held:
        """Open this thread's connection (the first read, or the first after one failed)."""
        connection = self._dbapi.connect(*self._cargs, **self._cparams)
        try:
            connection.execute(f"PRAGMA busy_timeout = {self._timeout_ms}")
        except BaseException:
            connection.close()
            raise
        held = _Held(connection)
        with self._lock:
            if self._closed:
                held.close()
                raise self._dbapi.ProgrammingError("the store is closed")
            self._every.add(held)
        self._local.held = held
        return held

    def fetch(self, statement: CursorStatement, values: Mapping[str, Any]) -> list[Any]:
        """Run a precompiled query on this thread's connection; every row as a tuple.

        Raises:
            DBAPIError: The driver's error, wrapped as SQLAlchemy wraps it (so the store
                translates it like any other); the connection is dropped.
        """
        if self._watched is not None:
            self._watched.check_read()
        writer = self._writer
        if writer is not None:
            conn = writer.try_take()
            if conn is not None:
                try:
                    return self._fetch_on(conn, statement, values)
                finally:
                    writer.give_back(conn)
        params = statement.params(values)
        gate = _gate
        gate.enter()
        try:
            held: _Held | None = getattr(self._local, "held", None)
            if held is None or held.connection is None or held.process != _process[0]:
                held = self._open()
            cursor = held.connection.execute(statement.sql, params)
            try:
                return cursor.fetchall()  # type: ignore[no-any-return]
            finally:
                cursor.close()
        except self._dbapi.Error as exc:
            self._drop()
            raise DBAPIError.instance(
                statement.sql,
                None,
                exc,
                self._dbapi.Error,
                connection_invalidated=self._dialect.is_disconnect(exc, None, None),
                dialect=self._dialect,
            ) from exc
        finally:
            gate.leave()

    def _fetch_on(
        self, conn: Connection, statement: CursorStatement, values: Mapping[str, Any]
    ) -> list[Any]:
        """``statement.fetch(conn, values)`` on the write connection, as this class's own reads.

        The driver connection's ``execute``, without the cursor a pooled connection's read
        opens through the pool's proxy; the same errors, and a lost or interrupted connection
        invalidated (see :func:`~purpose_agent.db.cursor.run_on_cursor`).
        """
        params = statement.params(values)
        proxied = conn.connection
        driver: Any = proxied.dbapi_connection
        try:
            cursor = driver.execute(statement.sql, params)
            try:
                return cursor.fetchall()  # type: ignore[no-any-return]
            finally:
                cursor.close()
        except self._dbapi.Error as exc:
            raise driver_error(conn, proxied, None, statement.sql, exc) from exc
        except BaseException as exc:
            interrupted(conn, None, exc)
            raise

    def _drop(self) -> None:
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            held.close()

    def close(self) -> None:
        """Close every thread's connection; reads after this fail."""
        with self._lock:
            self._closed = True
            every = list(self._every)
        for held in every:
            held.close()
