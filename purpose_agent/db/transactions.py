"""Opening units of work on a store's engine: reads, write transactions, the migration lock.

Connections run in autocommit on every backend (a single statement needs no BEGIN/COMMIT round
trips); a write transaction is opened here with an explicit statement, the same way for the
store, pruning and migrations.

A SQLite file store writes on one connection it holds (:class:`HeldWriter`) instead of checking
one out of the pool per transaction: SQLite lets one transaction write at a time anyway, and
the checkout, its reset on return and the connection object around it cost a lone writer
about a third of the Python an append spends. Threads of the process take turns in the order
they asked (:class:`~purpose_agent.db.turns.Turns`), which also hands the write lock over at
once rather than after SQLite's busy handler sleeps.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Executable, pool

from purpose_agent.db.cursor import run_on_cursor
from purpose_agent.db.dialects import Flavor, flavor_for
from purpose_agent.db.engine import shown_url
from purpose_agent.db.forks import close_inherited, note_locked
from purpose_agent.db.held_reads import hold_reads_for_fork, release_reads_after_fork
from purpose_agent.db.queries import run_sql
from purpose_agent.db.sqlite_file import WatchedFile
from purpose_agent.db.turns import TaskTurns, Turns
from purpose_agent.errors import StoreUnavailable

T = TypeVar("T")

# Held writers of this process, so that a forked child drops what it inherited.
_WRITERS: weakref.WeakSet[HeldWriter] = weakref.WeakSet()
# Connections a forked child inherited: kept, never used (see HeldWriter.forget).
_INHERITED: list[Connection] = []


# The writers whose turn each forking thread took (by thread id), given back after its fork:
# two threads may fork at once, and only the turns a thread took are its to give back.
_HELD_FOR_FORK: dict[int, list[HeldWriter]] = {}


def _before_fork() -> None:
    # A write transaction open in another thread as the process forks would stay open in the
    # child for ever: SQLite keeps each file's locks in the process's memory, which the child
    # copies, so every connection the child opened to the file would find the write lock
    # taken (by a connection nobody there will ever commit) and fail after the busy timeout.
    # The fork waits for the write under way to end instead, as the logging module's locks do.
    me = threading.get_ident()
    writers = list(_WRITERS)
    # Not the turns this thread holds (a fork from inside a transaction would wait for itself).
    others = [writer for writer in writers if writer.holder != me]
    # A thread that holds one store's turn may be waiting for another's: neither a turn this
    # thread holds, nor one the fork took before it waits for the next, is held while waiting
    # (that would make the writer wait for the fork and the fork for the writer, each for the
    # busy timeout, and fail the write). So: the fork waits holding nothing, keeps the turn
    # it waited for (given back, it went at once to the next thread waiting for it, and
    # threads writing back to back kept it from the fork until the busy timeout ran out),
    # and takes the others only if they are free; if one is not, it lets go and waits again.
    waits = len(others) == len(writers)
    deadline = time.monotonic() + max((writer.wait for writer in others), default=0.0)
    held: list[HeldWriter] = []
    while True:
        busy = None
        for writer in others:
            if writer in held:
                continue
            if not writer.try_hold():
                busy = writer
                break
            held.append(writer)
        if busy is None:
            break
        for writer in held:
            writer.release_after_fork()
        left = deadline - time.monotonic()
        if not waits or left <= 0 or not busy.wait_for_turn(left):
            # Given up: the turns free now, and no wait (the child may inherit a write).
            held = [writer for writer in others if writer.try_hold()]
            break
        held = [busy]
    _HELD_FOR_FORK[me] = held
    # Then the reads on held connections, which need no write turn (see held_reads).
    hold_reads_for_fork()


def _after_fork_in_parent() -> None:
    release_reads_after_fork()
    for writer in _HELD_FOR_FORK.pop(threading.get_ident(), []):
        writer.release_after_fork()


def _after_fork() -> None:
    idle = _HELD_FOR_FORK.get(threading.get_ident(), [])
    _HELD_FOR_FORK.clear()
    for writer in list(_WRITERS):
        writer.forget(idle=writer in idle)


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork
)


class HeldWriter:
    """The one connection a SQLite file store writes on, taken by one thread at a time.

    Args:
        engine: The store's autocommit engine.
        wait: Seconds a writer waits for its turn before the store reports the database
            locked (the busy timeout a write waits for another process, too).
    """

    def __init__(self, engine: Engine, wait: float) -> None:
        self._engine = engine
        self._wait = wait
        self._turns = Turns()
        self._conn: Connection | None = None
        self._closed = False
        # The file the store opened, checked before each write (see sqlite_file).
        self.watched: WatchedFile | None = None
        # The thread whose turn it is (see _before_fork).
        self._holder: int | None = None
        _WRITERS.add(self)

    def take(self) -> Connection:
        """This thread's turn on the connection (opened, or replaced after a failure).

        Raises:
            StoreUnavailable: The store is closed, or other writers of this process held the
                connection for longer than the busy timeout.
        """
        if not self._turns.take(self._wait):
            raise StoreUnavailable(
                f"writing to {shown_url(self._engine.url)} failed: "
                f"other threads of this process held the write connection for over "
                f"{self._wait:g} s (database is locked)"
            )
        try:
            if self.watched is not None:
                self.watched.check()
            conn = self._conn
            if conn is None or conn.invalidated or conn.closed:
                conn = self._reopen(conn)
        except BaseException:
            self._turns.give_back()
            raise
        self._holder = threading.get_ident()
        return conn

    def try_take(self) -> Connection | None:
        """The connection, if it is open and no thread holds it (then give it back)."""
        if not self._turns.try_take():
            return None
        conn = self._conn
        if conn is None or conn.invalidated or conn.closed:
            self._turns.give_back()
            return None
        self._holder = threading.get_ident()
        return conn

    def _reopen(self, broken: Connection | None) -> Connection:
        if self._closed:
            shown = shown_url(self._engine.url)
            raise StoreUnavailable(f"writing failed on {shown}: the store is closed")
        if broken is not None:
            broken.close()
        conn = self._conn = self._engine.connect()
        return conn

    def give_back(self, conn: Connection) -> None:
        """End the turn; a connection that broke is closed, and the next turn opens another."""
        self._holder = None
        try:
            if conn.invalidated or self._closed:
                self._conn = None
                conn.close()
        finally:
            self._turns.give_back()

    @property
    def holder(self) -> int | None:
        """The thread whose turn it is, if one took it with :meth:`take`."""
        return self._holder

    @property
    def wait(self) -> float:
        """Seconds a writer waits for its turn (the busy timeout)."""
        return self._wait

    def try_hold(self) -> bool:
        """Before a fork: take the turn if it is free (give it back with release_after_fork)."""
        return self._turns.try_take()

    def wait_for_turn(self, timeout: float) -> bool:
        """Before a fork: wait for the turn and hold it (give it back with release_after_fork)."""
        return self._turns.take(min(timeout, self._wait))

    def release_after_fork(self) -> None:
        """In the parent after a fork: give back the turn :meth:`try_hold` took."""
        self._turns.give_back()

    def close(self) -> None:
        """Close the connection; writes after this fail.

        It never waits: a thread writing at the time closes the connection when its turn
        ends (close may be called from a signal handler in the middle of that thread's write).
        """
        self._closed = True
        if not self._turns.try_take():
            return
        try:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
        finally:
            self._turns.give_back()

    def forget(self, *, idle: bool) -> None:
        """In a forked child: drop the parent's connection and lock, never to use them.

        The connection is closed if it was ``idle`` (the fork held its turn) and outside a
        transaction, which releases the file's locks SQLite recorded for it in this process
        (see :mod:`purpose_agent.db.forks`); otherwise it is kept open.
        """
        self._turns = Turns()
        self._holder = None
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Kept either way, never closed through SQLAlchemy, which would return it to a pool.
        _INHERITED.append(conn)
        if conn.invalidated or conn.closed:
            return
        driver = conn.connection.driver_connection
        if idle:
            close_inherited(driver, self._engine.url.database)
        elif getattr(driver, "in_transaction", False):
            # Its thread may have been inside SQLite at the fork: left alone.
            note_locked(self._engine)


class Transactions:
    """How one store opens connections.

    Args:
        engine: The store's engine.
        flavor: Its backend's rules (how a write transaction begins, how to tell one is open).
        owns_engine: Whether the store built the engine (and so set it up in autocommit).
        writer: The connection write transactions run on, if the store holds one; otherwise
            each checks one out of the pool.
        turns: The turn the store's tasks take for every write (the async store on SQLite),
            so that they queue in order instead of in SQLite's busy handler.
        wait: Seconds a write waits for its turn before the store reports the database
            locked.

    """

    def __init__(
        self,
        engine: Engine,
        flavor: Flavor,
        *,
        owns_engine: bool,
        writer: HeldWriter | None = None,
        turns: TaskTurns | None = None,
        wait: float = 60.0,
    ) -> None:
        self.engine = engine
        self._writer = writer
        self._turns = turns
        self._wait = wait
        self._flavor = flavor
        # Every connection runs in autocommit. Engines the store builds are set up so
        # (make_engine); one passed in is switched per connection.
        self._autocommit = engine
        # One connection that every unit shares (an in-memory SQLite database).
        self._shared = isinstance(engine.pool, pool.StaticPool)
        if not owns_engine:
            self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def single(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection for statements that are each a unit of work (reads, one-statement saves).

        On an in-memory SQLite database every task shares its one connection: a unit there
        takes the tasks' turn, as writes do, or its statements would run inside another task's
        transaction (and SQLAlchemy's rollback as it ends, under a listener, would end that
        transaction).
        """
        if self._shared and self._turns is not None:
            return self._in_turn()
        return self._autocommit.connect()

    @contextlib.contextmanager
    def _in_turn(self) -> Iterator[Connection]:
        """A pooled connection in this task's turn, where the store's tasks take turns."""
        self._take_turn()
        try:
            with self._autocommit.connect() as conn:
                yield conn
        finally:
            if self._turns is not None:
                self._turns.give_back()

    @contextlib.contextmanager
    def single_write(self) -> Iterator[Connection]:
        """A connection for a write that is one statement, or one unit sent to the driver whole.

        Where the store holds its write connection, that one, in this thread's turn; where
        its tasks take turns, a pooled one in this task's turn. Either way the write queues
        behind the store's other writes, not in SQLite's busy handler.
        """
        writer = self._writer
        if writer is not None:
            conn = writer.take()
            try:
                yield conn
            finally:
                writer.give_back(conn)
            return
        with self._in_turn() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed when the block ends without error.

        The transaction is opened and ended by explicit statements on an autocommit
        connection, which SQLAlchemy's logging and events see like any other statement.
        """
        writer = self._writer
        self._take_turn()
        try:
            conn = self._autocommit.connect() if writer is None else writer.take()
        except BaseException:
            if self._turns is not None:
                self._turns.give_back()
            raise
        try:
            run_sql(conn, self._flavor.begin_sql)
            try:
                yield conn
            except BaseException:
                self._roll_back(conn)
                raise
            # Alembic, running on this connection, may already have committed (SQLite).
            if self._open(conn):
                run_sql(conn, "COMMIT")
        finally:
            if writer is None:
                conn.close()
            else:
                writer.give_back(conn)
            if self._turns is not None:
                self._turns.give_back()

    @property
    def holds_writer(self) -> bool:
        """Whether write transactions run on a connection the store holds (a SQLite file)."""
        return self._writer is not None

    def write_on_cursor(self, work: Callable[[Any], T], statements: str) -> T:
        """A write transaction on the held connection's driver cursor, in one call.

        ``BEGIN``, ``work(cursor)`` and ``COMMIT`` run as one unit on one cursor: none of the
        per-statement rounds (a cursor each, the check for listeners, the translation frame)
        that :meth:`write` and the store's statements take one by one, which cost a single
        append on SQLite as much as its statements without the commit. Only for a store
        that holds its write connection (:attr:`holds_writer`), and only while nothing
        observes the engine's statements, which must see each statement as it runs.

        Args:
            work: The statements, given the driver's cursor.
            statements: What the unit runs, named in a driver error.

        Raises:
            DBAPIError: As SQLAlchemy raises a driver's error; the transaction was rolled back.
        """
        writer = self._writer
        if writer is None:
            raise AssertionError("write_on_cursor needs a held write connection")
        begin = self._flavor.begin_sql

        def unit(cursor: Any) -> T:
            cursor.execute(begin)
            result = work(cursor)
            cursor.execute("COMMIT")
            return result

        conn = writer.take()
        try:
            return run_on_cursor(conn, statements, unit)
        except BaseException:
            self._roll_back(conn)
            raise
        finally:
            writer.give_back(conn)

    def _take_turn(self) -> None:
        if self._turns is not None and not self._turns.take(self._wait):
            raise StoreUnavailable(
                f"writing to {shown_url(self.engine.url)} failed: "
                f"other tasks of this process held the write turn for over {self._wait:g} s "
                "(database is locked)"
            )

    def close(self) -> None:
        """Close the held write connection, if any (the pool's are the engine's to close)."""
        if self._writer is not None:
            self._writer.close()

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
                    shown = shown_url(self.engine.url)
                    raise StoreUnavailable(
                        f"migrating {shown} failed: another session held its migration lock "
                        "for 10 minutes (a migration still running, or one stuck on a table "
                        "lock: SHOW PROCESSLIST shows it)"
                    )
            else:
                release = None
            try:
                yield conn
            except BaseException:
                if release is not None:
                    _release_or_drop(conn, release)
                raise
            if release is not None:
                conn.execute(release)


def _release_or_drop(conn: Connection, release: Executable) -> None:
    """Release a session lock after a failed (or cancelled) migration, whatever its state.

    The error being raised is the one the caller must see; a connection that cannot run the
    release (cancelled mid-statement, lost) is dropped instead, which ends its session and so
    frees the lock: back in the pool it would hold the lock for every other process.
    """
    if conn.invalidated:
        return
    try:
        conn.execute(release)
    except Exception as exc:  # noqa: BLE001 - the migration's own error matters more
        conn.invalidate(exc)


def migration_lock(engine: Engine) -> contextlib.AbstractContextManager[Connection]:
    """The migration lock on any engine (a store's, a command's, or one Alembic was given)."""
    return Transactions(engine, flavor_for(engine), owns_engine=False).migration_lock()
