"""Write stamps that order runs by when they were last written.

``list_runs`` promises most-recently-written first, in sub-second order. Wall-clock nanoseconds
give that across processes on one machine; within a process two writes in the same clock tick
would tie, so stamps are forced to increase. These stamps are what the single-host stores keep
(memory, JSONL, SQLite); a database server's writers come from many hosts whose clocks differ,
and there the server's clock stamps the writes instead (see
:meth:`purpose_agent.db.dialects.Flavor.write_time`).
"""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_last = 0


def stamp_ns() -> int:
    """Return wall-clock nanoseconds, strictly greater than any stamp this process returned."""
    global _last  # noqa: PLW0603 - one clock per process is the point
    now = time.time_ns()
    with _lock:
        _last = max(now, _last + 1)
        return _last
