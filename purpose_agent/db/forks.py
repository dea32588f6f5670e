"""Pools and SQLite connections a forked child does not share with its parent.

A process that forks (``multiprocessing`` with the ``fork`` start method, gunicorn's
``--preload``, Celery's prefork pool) gives its children a copy of every pooled connection:
the same socket, or the same SQLite file handle and lock state. A child that checked one out
talked over its parent's session: the two interleaved their messages on one socket (psycopg
reported "the last operation didn't produce records", PyMySQL's reads came back empty or out
of step), and a child that closed one ended its parent's session too.

After a fork, the child's copy of each engine gets a new, empty pool (what SQLAlchemy's
documentation prescribes: ``engine.dispose(close=False)``); the inherited pools are kept,
never used, so that no connection of the parent is closed from the child, not even when the
child's objects are collected as it exits. A shared in-memory SQLite database keeps its
pool: its one connection is the child's own copy of the database, not shared.

SQLite connections are the exception: the child closes the idle ones it inherited, at once.
SQLite keeps the locks of a file in the memory of the process (one record per file, shared by
every connection of the process to it), and a connection asks the operating system for a lock
only when no other connection of the process holds it already. A child inherits that record
with the parent's connections, and POSIX locks are not inherited: while an inherited
connection stayed open, the child's own connections held their locks only on paper. The
parent, closing its last connection, then found itself alone with the file, checkpointed the
WAL and deleted it, and every commit the child made afterwards went into the deleted file and
was lost; and a child forked while the parent held the write lock found it taken for ever.
Closing an inherited connection in the child releases only the child's records (its locks at
the operating system are the parent's, which the close cannot touch), so it is safe for a
connection that no thread was using at the fork and that is not inside a transaction: closing
one inside a transaction would roll it back, and SQLite's rollback edits the WAL index that
parent and child share. aiosqlite runs each connection on a thread of its own, which the loop
does not wait for: across a fork those threads are parked, after the statement they are
running, so that the child inherits none mid-statement. A transaction of several statements
still open at the fork (an async store's, when the loop's own thread forks) cannot be waited
for; the child's writes to that file then fail, saying why (see :func:`locked_advice`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from typing import Any

from sqlalchemy import Engine, Pool, event

# Engines of this process whose pools a forked child must not use.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
# Pools a forked child inherited: kept for the life of the child, never used.
_INHERITED: list[Pool] = []
# aiosqlite connections of this process, and how long a fork waits for each one's thread.
_WORKERS: weakref.WeakKeyDictionary[Any, tuple[float, str]] = weakref.WeakKeyDictionary()
# Per forking thread: what gives the parked threads back, and the connections parked idle.
_PARKED: dict[int, tuple[list[threading.Event], list[Any]]] = {}
# In a forked child: the SQLite files an inherited connection, left open inside a transaction,
# keeps locked for the child's life (SQLite's lock records say it holds them).
_LOCKED: set[str] = set()
# What a write to such a file says instead of only "database is locked".
_LOCKED_ADVICE = (
    "this process was forked while its parent was inside a transaction on the file, and the "
    "lock records SQLite keeps in a process's memory, copied into this one, keep it locked "
    "here for good: fork before the parent writes, open the store in each child, or start "
    "children with multiprocessing's 'spawn' or 'forkserver'"
)


def keep_apart(engine: Engine) -> None:
    """Give ``engine`` a new pool in every child this process forks from now on.

    Args:
        engine: An engine of a store (built by it or passed in).

    """
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return
    _ENGINES.add(engine)


def park_across_forks(engine: Engine, wait: float) -> None:
    """Park the threads of ``engine``'s aiosqlite connections while the process forks.

    Args:
        engine: The synchronous face of an aiosqlite engine.
        wait: Seconds a fork waits for a connection's thread to finish what it runs.

    """
    database = engine.url.database or ""

    @event.listens_for(engine, "connect")
    def _track(dbapi_connection: Any, _record: Any) -> None:
        with contextlib.suppress(TypeError):  # a driver without weak references
            _WORKERS[dbapi_connection.driver_connection] = (wait, database)


def close_inherited(connection: Any, database: str | None = None) -> bool:
    """In a forked child: close a SQLite connection inherited idle; whether it was closed.

    One inside a transaction is left open (see the module): the caller keeps it, unused, and
    the child's writes to ``database`` then say why they fail (see :func:`locked_advice`).
    """
    if not isinstance(connection, sqlite3.Connection):
        return False
    try:
        if connection.in_transaction:
            if database:
                _LOCKED.add(database)
            return False
        connection.close()
    except sqlite3.Error:
        return False
    return True


def note_locked(engine: Engine) -> None:
    """In a forked child: ``engine``'s file is locked by a transaction the parent had open."""
    _LOCKED.add(engine.url.database or "")


def locked_advice(engine: Engine, exc: BaseException) -> str | None:
    """Why a forked child finds its database locked, when an inherited transaction keeps it so.

    Args:
        engine: The store's engine.
        exc: The error a statement raised (SQLAlchemy's, or the driver's).

    Returns:
        What to do, or ``None`` if the error is not that.
    """
    if not _LOCKED or engine.dialect.name != "sqlite" or engine.url.database not in _LOCKED:
        return None
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return _LOCKED_ADVICE if isinstance(code, int) and code & 0xFF == 5 else None  # SQLITE_BUSY


def _park(parked: threading.Event, resume: threading.Event) -> None:
    parked.set()
    resume.wait()


class _NoOne:
    """The future a parking item gives aiosqlite's thread to report to: nobody listens.

    Releases before 0.22.1 report every item's result through ``future.get_loop()``
    unconditionally; ``None`` there raised in the thread, which then ended for good.
    """

    def get_loop(self) -> _NoOne:
        return self

    def call_soon_threadsafe(self, *_args: object) -> None:
        return None


def _worker_thread(driver: Any) -> threading.Thread | None:
    """The thread an aiosqlite connection runs on: the connection itself before 0.22."""
    if isinstance(driver, threading.Thread):
        return driver
    thread = getattr(driver, "_thread", None)
    return thread if isinstance(thread, threading.Thread) else None


def _before_fork() -> None:
    me = threading.get_ident()
    resumes: list[threading.Event] = []
    asked: list[tuple[Any, threading.Event]] = []
    longest = 0.0
    for driver, (wait, _) in list(_WORKERS.items()):
        thread = _worker_thread(driver)
        if not getattr(driver, "_running", False) or thread is None or not thread.is_alive():
            continue
        if thread.ident == me:
            continue  # forked from that thread itself: nothing runs there meanwhile
        parked, resume = threading.Event(), threading.Event()
        driver._tx.put_nowait((_NoOne(), lambda p=parked, r=resume: _park(p, r)))
        resumes.append(resume)
        asked.append((driver, parked))
        longest = max(longest, wait)
    # The threads finish what they run without the event loop (which may be this thread).
    deadline = time.monotonic() + longest
    idle = [driver for driver, parked in asked if parked.wait(max(deadline - time.monotonic(), 0))]
    _PARKED[me] = (resumes, idle)


def _after_fork_in_parent() -> None:
    resumes, _ = _PARKED.pop(threading.get_ident(), ([], []))
    for resume in resumes:
        resume.set()


def _after_fork_in_child() -> None:
    _, idle = _PARKED.pop(threading.get_ident(), ([], []))
    _PARKED.clear()
    _LOCKED.clear()
    workers = dict(_WORKERS)
    _WORKERS.clear()
    for driver, (_, database) in workers.items():
        connection = getattr(driver, "_connection", None)
        if driver not in idle:
            # Its thread may have been inside SQLite at the fork: left alone.
            if isinstance(connection, sqlite3.Connection) and connection.in_transaction:
                _LOCKED.add(database)
        elif close_inherited(connection, database):
            # Its thread is not in this process; no statement of it was under way.
            driver._connection = None
            driver._running = False
    for engine in list(_ENGINES):
        if engine.dialect.name == "sqlite":
            for entry in _idle_entries(engine.pool):
                close_inherited(entry.driver_connection, engine.url.database)
        _INHERITED.append(engine.pool)
        engine.dispose(close=False)


def _idle_entries(pool: Pool) -> list[Any]:
    """The connections idle in a pool (checked in: no thread of the parent was using them)."""
    queue = getattr(pool, "_pool", None)
    idle: Any = getattr(queue, "_idle", None)  # the store's fair pools (see pool_queue)
    if idle is None:
        idle = getattr(queue, "queue", ())  # SQLAlchemy's QueuePool
    return list(idle)


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
