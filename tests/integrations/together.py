"""A store wrapper that makes two callers read before either writes: races made certain."""

from __future__ import annotations

import threading
from typing import Any


class AppendsTogether:
    """A store whose first append waits at a barrier for the other caller's first append.

    Two imports or copies of one thread, each on such a store, have both read the target and
    planned what it lacks before either writes: the worst moment for two at once.
    """

    def __init__(self, store: Any, barrier: threading.Barrier) -> None:
        self._store, self._barrier, self._waited = store, barrier, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def append(
        self,
        run_id: str,
        events: Any,
        *,
        expected_last_seq: int | None = None,
        snapshot: Any = None,
        group: str | None = None,
    ) -> Any:
        if not self._waited:
            self._waited = True
            self._barrier.wait()
        return self._store.append(
            run_id, events, expected_last_seq=expected_last_seq, snapshot=snapshot, group=group
        )
