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
parent and child share.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from typing import Any

from sqlalchemy import Engine, Pool

# Engines of this process whose pools a forked child must not use.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
# Pools a forked child inherited: kept for the life of the child, never used.
_INHERITED: list[Pool] = []


def keep_apart(engine: Engine) -> None:
    """Give ``engine`` a new pool in every child this process forks from now on.

    Args:
        engine: An engine of a store (built by it or passed in).

    """
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return
    _ENGINES.add(engine)


def close_inherited(connection: Any) -> bool:
    """In a forked child: close a SQLite connection inherited idle; whether it was closed.

    One inside a transaction is left open (see the module): the caller keeps it, unused.
    """
    if not isinstance(connection, sqlite3.Connection):
        return False
    try:
        if connection.in_transaction:
            return False
        connection.close()
    except sqlite3.Error:
        return False
    return True


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        if engine.dialect.name == "sqlite":
            for entry in _idle_entries(engine.pool):
                close_inherited(entry.driver_connection)
        _INHERITED.append(engine.pool)
        engine.dispose(close=False)


def _idle_entries(pool: Pool) -> list[Any]:
    """The connections idle in a pool (checked in: no thread of the parent was using them)."""
    queue = getattr(pool, "_pool", None)
    idle: Any = getattr(queue, "_idle", None)  # the store's fair pools (see pool_queue)
    if idle is None:
        idle = getattr(queue, "queue", ())  # SQLAlchemy's QueuePool
    return list(idle)


os.register_at_fork(after_in_child=_after_fork_in_child)
