"""The async engine's connection pool: a connection given back goes to the longest-waiting task.

SQLAlchemy's ``AsyncAdaptedQueuePool`` hands a connection that comes back to whichever task
asks next, and a task that has just given one back asks again before any waiting task has
run: the store runs a call in greenlets without yielding to the loop between one call's
check-in and the next call's checkout, and a waiting task that woke to an empty queue queues
again at the back. With more tasks than the pool holds connections (8 + 16 on a server), the
tasks beyond those got nothing while the others wrote thousands of steps, and failed with the
pool's timeout after 30 s (``QueuePool limit of size 8 overflow 16 reached``). Here a
connection given back is handed to the task that has waited longest, as
:mod:`purpose_agent.db.turns` hands over the write turn, and a task never takes an idle
connection while others wait (none is idle then).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_only
from sqlalchemy.util.queue import Empty

from purpose_agent.db.pool_queue import IdleConnections, LingeringPool


class HandOverQueue(IdleConnections):
    """The pool's idle connections, and the tasks waiting for one, first come, first served.

    Used from the loop's greenlets only (the pool's checkouts and check-ins), so it needs no
    lock. A connection given back while a task waits goes to that task; only when nobody
    waits does it join the idle ones.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiting: deque[asyncio.Future[ConnectionPoolEntry]] = deque()

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        """Hand a connection to the longest-waiting task, or keep it idle."""
        if self._hand_over(item):
            return
        self._keep_idle(item)

    def _hand_over(self, item: ConnectionPoolEntry) -> bool:
        """Give a connection to the longest-waiting task; whether one was waiting."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return True
        return False

    def get_nowait(self) -> ConnectionPoolEntry:
        """An idle connection.

        Raises:
            Empty: None is idle.
        """
        if not self._idle:
            raise Empty()
        return self._take_idle()

    def get(self, block: bool = True, timeout: float | None = None) -> ConnectionPoolEntry:
        """An idle connection, or the next one given back after the tasks waiting before this.

        Raises:
            Empty: None was idle (``block`` false), or none came within ``timeout``.
        """
        if self._idle or not block:
            return self.get_nowait()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[ConnectionPoolEntry] = loop.create_future()
        self._waiting.append(waiter)
        # The future itself is awaited, with a timer, rather than through asyncio.wait: a
        # hand-over then costs half as much (one per checkout while tasks outnumber connections).
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            return await_only(waiter)
        except BaseException:
            self._withdraw(waiter)  # timed out or cancelled
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _withdraw(self, waiter: asyncio.Future[ConnectionPoolEntry]) -> None:
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            # Handed over as the task was cancelled: to the next task, else idle.
            item = waiter.result()
            if not self._hand_over(item):
                self._keep_idle(item)
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiting.remove(waiter)


def _expire(waiter: asyncio.Future[ConnectionPoolEntry]) -> None:
    """End a wait that lasted its timeout (the pool reports it as its own timeout)."""
    if not waiter.done():
        waiter.set_exception(Empty())


class TaskQueuePool(LingeringPool, AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` whose connections go to waiting tasks in the order they asked.

    Connections beyond its size linger idle for a while before they are closed (see
    :mod:`purpose_agent.db.pool_queue`).
    """

    _queue_class = HandOverQueue
