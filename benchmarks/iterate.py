"""One ``iter_events`` pass in a process of its own, to read its peak memory.

``python -m benchmarks.iterate SIDE URL RUN_ID EXPECTED [STORE_SPEC]`` streams every event of
the run through the store (``SIDE`` = ``store``) or the raw driver (``raw-sqlite``,
``raw-postgres``), and prints one JSON line: events, seconds, and the peak RSS before and after
the pass. Peak RSS only grows, so each size is measured in a fresh process.

The peak is read from ``VmHWM`` in ``/proc/self/status``, the high-water mark of this process's
own address space. ``ru_maxrss`` is reported too but is not used on Linux: it survives
``execve``, so a child started by a large parent (``subprocess`` forks or vforks it) starts with
the parent's peak and a small pass would look as big as the benchmark runner itself.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux


def _peak_kb() -> int:
    """This address space's peak RSS in kilobytes (``ru_maxrss`` where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return _maxrss_kb()


def main(argv: list[str]) -> int:
    side, url, run_id, expected = argv[0], argv[1], argv[2], int(argv[3])
    store_spec = argv[4] if len(argv) > 4 else "purpose_agent:SQLCheckpointer"
    if side == "store":
        from benchmarks.databases import load_factory

        source = load_factory(store_spec)(url)
        iterate = source.iter_events
    else:
        from benchmarks.raw import RawPostgres, RawSQLite

        source = RawSQLite(url) if side == "raw-sqlite" else RawPostgres(url)
        iterate = source.iter_events
    # Warm the path (imports, first query) on an empty range so the baseline includes it.
    for _ in iterate(run_id, since_seq=expected):
        pass
    before = _peak_kb()
    count = 0
    start = time.perf_counter()
    for _ in iterate(run_id):
        count += 1
    seconds = time.perf_counter() - start
    after = _peak_kb()
    source.close()
    if count != expected:
        print(json.dumps({"error": f"expected {expected} events, iterated {count}"}))
        return 1
    print(
        json.dumps(
            {
                "events": count,
                "seconds": seconds,
                "rss_before_kb": before,
                "rss_peak_kb": after,
                "ru_maxrss_kb": _maxrss_kb(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
