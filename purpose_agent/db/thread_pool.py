"""The synchronous engines' pool: a connection given back goes to the longest-waiting thread.

SQLAlchemy's ``QueuePool`` keeps its idle connections in a queue guarded by a condition: a
connection given back wakes one waiting thread, but a thread that has just given one back and
asks again at once (a writer saving steps back to back) usually takes it before the woken
thread runs, and the woken thread waits again. With more threads than the pool holds
connections (8 + 16 on a server), 48 threads each saving steps: when the first had saved 20,
24 of them had saved only their first, and in longer runs such threads failed with the
pool's timeout after 30 s (``QueuePool limit of size 8 overflow 16 reached``). Here a
connection given back is handed to the thread that has waited longest, as
:mod:`purpose_agent.db.turns` hands over the write turn, and a thread never takes an idle
connection while others wait (none is idle then). The asyncio twin is
:mod:`purpose_agent.db.task_pool`.
"""

from __future__ import annotations

import threading
from collections import deque

from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util.queue import Empty

from purpose_agent.db.pool_queue import IdleConnections, LingeringPool


class _Waiter:
    """A thread waiting for a connection: a held lock, released when one is handed to it."""

    __slots__ = ("baton", "item")

    item: ConnectionPoolEntry  # set before the baton is released

    def __init__(self) -> None:
        self.baton = threading.Lock()
        self.baton.acquire()


class ThreadHandOverQueue(IdleConnections):
    """The pool's idle connections, and the threads waiting for one, first come, first served.

    A connection given back while a thread waits goes to that thread; only when nobody waits
    does it join the idle ones. A thread that asks while nobody waits and a connection is
    idle pays one uncontended lock.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._mutex = threading.Lock()
        self._waiting: deque[_Waiter] = deque()

    def _guard(self) -> threading.Lock:
        return self._mutex

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        """Hand a connection to the longest-waiting thread, or keep it idle."""
        with self._mutex:
            if self._waiting:
                waiter = self._waiting.popleft()
                waiter.item = item
                waiter.baton.release()
                return
            self._keep_idle(item)

    def get_nowait(self) -> ConnectionPoolEntry:
        """An idle connection.

        Raises:
            Empty: None is idle.
        """
        return self.get(block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> ConnectionPoolEntry:
        """An idle connection, or the next one given back after the threads waiting before this.

        Raises:
            Empty: None was idle (``block`` false), or none came within ``timeout`` (the pool
                reports it as its own timeout).
        """
        with self._mutex:
            # Idle connections and waiting threads never coexist: a connection given back
            # goes to a waiting thread, and a thread waits only when none is idle.
            if self._idle:
                return self._take_idle()
            if not block:
                raise Empty()
            waiter = _Waiter()
            self._waiting.append(waiter)
        try:
            got = waiter.baton.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
        except BaseException:
            # Interrupted while waiting (Ctrl-C): left queued, the waiter would be handed the
            # next connection given back, and the pool would count it checked out for good.
            with self._mutex:
                try:
                    self._waiting.remove(waiter)
                except ValueError:
                    handed = True
                else:
                    handed = False
            if handed:
                self.put_nowait(waiter.item)
            raise
        if got:
            return waiter.item
        with self._mutex:
            try:
                self._waiting.remove(waiter)
            except ValueError:
                # Handed over just as the wait ran out: the connection is this thread's.
                return waiter.item
        raise Empty()


class ThreadQueuePool(LingeringPool):
    """``QueuePool`` whose connections go to waiting threads in the order they asked.

    Connections beyond its size linger idle for a while before they are closed (see
    :mod:`purpose_agent.db.pool_queue`).
    """

    _queue_class = ThreadHandOverQueue
