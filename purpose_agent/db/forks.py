"""Pools a forked child does not share with its parent.

A process that forks (``multiprocessing`` with the ``fork`` start method, gunicorn's
``--preload``, Celery's prefork pool) gives its children a copy of every pooled connection:
the same socket, or the same SQLite file handle and lock state. A child that checked one out
talked over its parent's session: the two interleaved their messages on one socket (psycopg
reported "the last operation didn't produce records", PyMySQL's reads came back empty or out
of step), and a child that closed one ended its parent's session too.

After a fork, the child's copy of each engine gets a new, empty pool (what SQLAlchemy's
documentation prescribes: ``engine.dispose(close=False)``); the inherited pools are kept,
never used or closed, so that no connection of the parent is closed from the child, not even
when the child's objects are collected as it exits. A shared in-memory SQLite database keeps
its pool: its one connection is the child's own copy of the database, not shared.
"""

from __future__ import annotations

import os
import weakref

from sqlalchemy import Engine, Pool

# Engines of this process whose pools a forked child must not use.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
# Pools a forked child inherited: kept for the life of the child, never used or closed.
_INHERITED: list[Pool] = []


def keep_apart(engine: Engine) -> None:
    """Give ``engine`` a new pool in every child this process forks from now on.

    Args:
        engine: An engine of a store (built by it or passed in).

    """
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return
    _ENGINES.add(engine)


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        _INHERITED.append(engine.pool)
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)
