"""Threads taking turns on one resource in the order they asked.

``threading.Lock`` is not fair: a thread that releases it and asks again at once (a writer
looping over steps) usually gets it back before a waiting thread wakes up, so with many
writers on one connection some waited over a second while others wrote hundreds of steps.
Here a released turn is handed to the longest-waiting thread, and a thread that asks while
others wait queues behind them. A thread that asks while nobody holds or waits pays two
uncontended lock operations.
"""

from __future__ import annotations

import threading
from collections import deque


class Turns:
    """A lock handed over first come, first served."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()
        self._held = False

    def take(self, timeout: float) -> bool:
        """Wait for this thread's turn, at most ``timeout`` seconds; whether it came."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            baton = threading.Lock()
            baton.acquire()
            self._waiting.append(baton)
        if baton.acquire(timeout=timeout):
            return True  # handed over by give_back
        with self._mutex:
            try:
                self._waiting.remove(baton)
            except ValueError:
                return True  # handed over just as the wait ran out: the turn is ours
            return False

    def try_take(self) -> bool:
        """Take the turn only if nobody holds it or waits for it."""
        with self._mutex:
            if self._held:
                return False
            self._held = True
            return True

    def give_back(self) -> None:
        """End this turn: the longest-waiting thread gets the next one."""
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._held = False
