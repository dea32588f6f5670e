"""The pool of an in-memory SQLite database: its one connection, lent to one thread at a time.

An in-memory database lives in the connection that made it, so every use of the store shares
that one connection (SQLAlchemy's ``StaticPool``). ``StaticPool`` hands it to every thread at
once: two threads' transactions then interleaved on it ("cannot start a transaction within a
transaction"), and one thread's rollback ended another's transaction, so a commit failed for
writes that were stored. Here a thread borrows the connection until it gives it back, and
others wait their turn; the thread holding it may borrow it again (a read inside its write).
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import exc, pool
from sqlalchemy.pool import ConnectionPoolEntry

# How long a thread waits for the connection before the call fails (as a pool's timeout).
WAIT_SECONDS = 60.0


class _Turn:
    """Whose turn it is with the connection; re-entrant for its holder.

    Given back by whichever thread ends the use, since SQLAlchemy may return a connection
    from the garbage collector's thread.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._holder: int | None = None
        self._depth = 0

    def take(self, timeout: float) -> bool:
        me = threading.get_ident()
        with self._changed:
            if self._holder == me:
                self._depth += 1
                return True
            if not self._changed.wait_for(lambda: self._holder is None, timeout):
                return False
            self._holder, self._depth = me, 1
            return True

    def give_back(self) -> None:
        with self._changed:
            self._depth -= 1
            if self._depth <= 0:
                self._holder, self._depth = None, 0
                self._changed.notify()


class SerialStaticPool(pool.StaticPool):
    """``StaticPool`` whose one connection serves one thread at a time."""

    def __init__(self, creator: Any, **kwargs: Any) -> None:
        super().__init__(creator, **kwargs)
        self._turn = _Turn()

    def _do_get(self) -> ConnectionPoolEntry:
        if not self._turn.take(WAIT_SECONDS):
            raise exc.TimeoutError(
                f"the in-memory database's connection was held by another thread for over "
                f"{WAIT_SECONDS:g} s"
            )
        try:
            return super()._do_get()
        except BaseException:
            self._turn.give_back()
            raise

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            self._turn.give_back()
