"""What the fair pools' queues share: the idle connections, and how many the pool keeps.

:mod:`purpose_agent.db.thread_pool` and :mod:`purpose_agent.db.task_pool` differ in how a
thread or a task waits for a connection and is handed one; the idle side, which SQLAlchemy's
pool inspects (``empty``, ``full``, ``qsize``), is the same for both.
"""

from __future__ import annotations

from collections import deque

from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util.queue import QueueCommon


class IdleConnections(QueueCommon[ConnectionPoolEntry]):
    """The pool's idle connections; subclasses add the waiting and the handing over."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._idle: deque[ConnectionPoolEntry] = deque()

    def empty(self) -> bool:
        """Whether no connection is idle."""
        return not self._idle

    def full(self) -> bool:
        """Whether the pool holds as many idle connections as it keeps."""
        return 0 < self.maxsize <= len(self._idle)

    def qsize(self) -> int:
        """How many connections are idle."""
        return len(self._idle)

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        """Give a connection back: to a waiter, else idle (each subclass decides how)."""
        raise NotImplementedError

    def put(
        self, item: ConnectionPoolEntry, block: bool = True, timeout: float | None = None
    ) -> None:
        """As :meth:`put_nowait`: giving a connection back never waits."""
        self.put_nowait(item)

    def _take_idle(self) -> ConnectionPoolEntry:
        """The idle connection the pool's order names (newest with ``use_lifo``); one must be."""
        return self._idle.pop() if self.use_lifo else self._idle.popleft()
