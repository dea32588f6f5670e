"""What the fair pools' queues share: the idle connections, and how long extra ones linger.

:mod:`purpose_agent.db.thread_pool` and :mod:`purpose_agent.db.task_pool` differ in how a
thread or a task waits for a connection and is handed one; the idle side, which SQLAlchemy's
pool inspects (``empty``, ``qsize``), and the closing of connections the pool no longer needs
are the same for both.

SQLAlchemy's ``QueuePool`` closes a connection beyond its ``pool_size`` the moment it comes
back while ``pool_size`` others are idle. Under bursty load (64 agent runs pausing for their
model calls between steps) that closed and reopened Postgres connections all the time: 117
new connections in 3 s for 64 runs, a step's p99 at 88 ms against 14 ms for naive writers
that each kept a connection. Here a connection beyond the pool's size stays idle, and is
closed only once it has been idle for :data:`LINGER` seconds while ``pool_size`` others were
idle too. Idle connections are taken newest first, so under light load the ones not needed
age and go, and the pool shrinks back to ``pool_size``. The check runs whenever a connection
comes back: a process that goes quiet altogether keeps what it had until its next call. A
store's ``engine.pool.linger`` sets the seconds (0: closed as they come back, as SQLAlchemy's
own pool does).
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import AbstractContextManager, nullcontext

from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.util.queue import QueueCommon

LINGER = 60.0


class IdleConnections(QueueCommon[ConnectionPoolEntry]):
    """The pool's idle connections; subclasses add the waiting and the handing over.

    ``maxsize`` is the pool's ``pool_size``: how many idle connections are kept however long
    they are idle. More may be idle for a while (see the module).
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._idle: deque[ConnectionPoolEntry] = deque()
        self._since: deque[float] = deque()  # when each idle connection came back, in order

    def empty(self) -> bool:
        """Whether no connection is idle."""
        return not self._idle

    def full(self) -> bool:
        """Whether as many connections are idle as the pool keeps for good."""
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

    def _guard(self) -> AbstractContextManager[object]:
        """What a change to the idle connections holds (a lock where threads share them)."""
        return nullcontext()

    def _keep_idle(self, item: ConnectionPoolEntry) -> None:
        self._idle.append(item)
        self._since.append(time.monotonic())

    def _take_idle(self) -> ConnectionPoolEntry:
        """The idle connection the pool's order names (newest with ``use_lifo``); one must be."""
        if self.use_lifo:
            self._since.pop()
            return self._idle.pop()
        self._since.popleft()
        return self._idle.popleft()

    def take_lingering(self, linger: float) -> list[ConnectionPoolEntry]:
        """Remove and return the connections idle for over ``linger`` s beyond ``maxsize``."""
        if self.maxsize == 0 or len(self._idle) <= self.maxsize:
            return []  # a pool_size of 0 keeps every connection, as SQLAlchemy's does
        cutoff = time.monotonic() - linger
        taken: list[ConnectionPoolEntry] = []
        with self._guard():
            # The longest idle are on the left whichever order connections are taken in.
            while len(self._idle) > self.maxsize and self._since[0] < cutoff:
                self._since.popleft()
                taken.append(self._idle.popleft())
        return taken


class LingeringPool(QueuePool):
    """A ``QueuePool`` that keeps connections beyond its size idle for a while (see the module).

    Mixed into the fair pools, whose queues are :class:`IdleConnections`.
    """

    _pool: IdleConnections
    linger = LINGER

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("use_lifo", True)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def recreate(self) -> QueuePool:
        """A new pool like this one (``Engine.dispose``), keeping a ``linger`` that was set."""
        pool = super().recreate()
        pool.linger = self.linger  # type: ignore[attr-defined]
        return pool

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        for stale in self._pool.take_lingering(self.linger):
            try:
                stale.close()
            finally:
                self._dec_overflow()
