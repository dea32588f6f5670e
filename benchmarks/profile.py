"""Where the store's time goes on one case: ``python -m benchmarks.profile CASE``.

Runs the store side of a case (or the raw side, ``--side raw``) under pyinstrument on a
throwaway database for a few seconds, then prints the call tree and a flat table of own time
per ``file:function`` with its share of the total, the view that points at a hot path.
Needs ``pip install pyinstrument``.

pyinstrument hooks every Python call, which inflates Python-heavy code against time spent in
the driver. For unbiased shares, sample from outside with py-spy (``pip install py-spy``) and
summarise its collapsed stacks; only samples inside the measured loop are counted::

    python -m benchmarks.profile append_single --backend postgres --seconds 5
    py-spy record --idle -r 2000 -f raw -o /tmp/stacks.txt -- \
        python -m benchmarks.profile append_single --profiler none --seconds 10
    python -m benchmarks.profile --summarize /tmp/stacks.txt
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks import workload
from benchmarks.databases import DEFAULT_STORE, Target, load_factory, store_settings
from benchmarks.run import _postgres_admin_url, open_target
from purpose_agent import RunState

CASES = (
    "append_single",
    "append_batch_100",
    "append_batch_1000",
    "snapshot_1KB",
    "snapshot_1MB",
    "recover",
    "list_events",
    "list_events_page",
    "iter_events",
)


def _operation(case: str, side: Any, prepared: dict[str, Any]) -> Callable[[], Any]:
    run_id = f"profile-{case}-{os.getpid()}"
    counter = itertools.count(1)
    if case == "append_single":
        save = side.save_event if hasattr(side, "save_event") else side.insert_one
        return lambda: save(workload.event(run_id, next(counter)))
    if case.startswith("append_batch_"):
        size = int(case.rsplit("_", 1)[1])
        save = side.save_events if hasattr(side, "save_events") else side.batch(side.batch_paths[0])
        return lambda: save(workload.events(run_id, (next(counter) - 1) * size + 1, size))
    if case.startswith("snapshot_"):
        size = {"1KB": 1024, "1MB": 1024 * 1024}[case.split("_", 1)[1]]
        data = workload.state_data(size)

        def round_trip() -> None:
            side.save_snapshot(run_id, RunState(run_id=run_id, seq=next(counter), data=data))
            side.load_latest(run_id)

        return round_trip
    run = prepared["run_id"]
    if case == "recover":
        return lambda: side.recover(run)
    if case == "list_events":
        return lambda: side.list_events(run)
    if case == "list_events_page":
        return lambda: side.list_events(run, prepared["events"] // 2, 100)
    if case == "iter_events":
        return lambda: sum(1 for _ in side.iter_events(run))
    raise ValueError(case)


def _prepare(case: str, store: Any, raw: Any, events: int) -> dict[str, Any]:
    if case not in ("recover", "list_events", "list_events_page", "iter_events"):
        return {}
    run_id = f"profile-read-{os.getpid()}"
    tail = 100 if case == "recover" else 0
    for start in range(1, events + tail + 1, 10_000):
        chunk = workload.events(run_id, start, min(10_000, events + tail + 1 - start))
        store.save_events(chunk)
        raw.batch(raw.batch_paths[0])(chunk)
    if case == "recover":
        state = workload.state(run_id, events, 10 * 1024)
        store.save_snapshot(run_id, state)
        raw.save_snapshot(run_id, state)
    return {"run_id": run_id, "events": events}


def _profiled_loop(op: Callable[[], Any], seconds: float) -> int:
    # Named so that py-spy samples of the measured loop can be told from the setup's.
    ops = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        op()
        ops += 1
    return ops


def summarize_collapsed(path: str, top: int) -> None:
    """Print own-time shares from py-spy's collapsed stacks, for samples in the measured loop.

    Samples spent building the operation's input (``benchmarks/workload.py`` and the pydantic
    constructors it calls) are left out, so the shares are of the operation's own time, the
    part a benchmark case times.
    """
    own: dict[str, int] = {}
    areas: dict[str, int] = {}
    total = skipped = 0
    with open(path) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            marks = [i for i, f in enumerate(frames) if f.startswith("_profiled_loop ")]
            if not marks or len(frames) <= marks[0] + 1:
                continue
            frames = frames[marks[0] + 1 :]
            samples = int(count)
            if any("benchmarks/workload.py" in f for f in frames):
                skipped += samples
                continue
            total += samples
            function, _, where = frames[-1].partition(" (")
            file_name = where.rsplit(":", 1)[0]
            for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
                if marker in file_name:
                    file_name = file_name.split(marker, 1)[1]
            key = f"{file_name}:{function}"
            own[key] = own.get(key, 0) + samples
            area = _area(key)
            if key.startswith("re/") and any("psycopg/" in f for f in frames):
                area = "psycopg (Python part)"  # regex escaping inside psycopg's text dumpers
            areas[area] = areas.get(area, 0) + samples
    if not total:
        print("no samples inside the measured loop")
        return
    print(
        f"{total} samples in the measured operation ({skipped} more spent building its input, "
        f"left out)\n\n{'own %':>6}  file:function (leaf frame)"
    )
    for key, samples in sorted(own.items(), key=lambda item: item[1], reverse=True)[:top]:
        print(f"{100 * samples / total:6.1f}  {key}")
    print(f"\n{'own %':>6}  by area")
    for area, samples in sorted(areas.items(), key=lambda item: item[1], reverse=True):
        print(f"{100 * samples / total:6.1f}  {area}")


def own_time_table(session: Any, top: int) -> list[tuple[float, float, str]]:
    """Own (self) time per ``file:function``, largest first, with its share of the total."""
    totals: dict[str, float] = {}

    def walk(frame: Any) -> None:
        # Synthetic "[self]" frames hold their parent's own time, which total_self_time
        # already counts; C functions show as <built-in> with their own name.
        if frame.is_synthetic:
            return
        where = frame.file_path_short or "<built-in>"
        key = f"{where}:{frame.class_name + '.' if frame.class_name else ''}{frame.function}"
        totals[key] = totals.get(key, 0.0) + frame.total_self_time
        for child in frame.children:
            walk(child)

    root = session.root_frame()
    walk(root)
    whole = root.time or 1.0
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]
    return [(seconds, 100 * seconds / whole, key) for key, seconds in ranked]


# Python frames whose own time is really a driver call into the database (the C call below
# them is not a Python frame, so py-spy charges its time to the caller).
DRIVER_CALLS = (
    ":DefaultDialect.do_commit",
    ":DefaultDialect.do_execute",
    ":DefaultDialect.do_executemany",
    ":DefaultDialect.do_rollback",
    ":PGDialect_psycopg.do_commit",
    "raw.py:",
    "psycopg/cursor.py:",
    "psycopg/connection.py:",
    "psycopg/generators.py:",
    "psycopg/waiting.py:",
)
AREAS = (
    (DRIVER_CALLS, "driver and database (execute, commit, fetch: waiting on the DB)"),
    (("<built-in>",), "C calls (driver and database, json C code)"),
    (("purpose_agent/",), "purpose_agent (validation, encoding, decoding, store logic)"),
    (("sqlalchemy/",), "sqlalchemy (engine, pool, events, results)"),
    (("pydantic",), "pydantic"),
    (("json/",), "json (stdlib)"),
    (("psycopg/",), "psycopg (Python part)"),
    (("benchmarks/",), "benchmark loop (building the input events)"),
)


def _area(key: str) -> str:
    # A closure in the store's database layer that is a leaf frame is a thin wrapper around one
    # driver call (``lambda cursor: cursor.execute(...)``): its own time is the driver's.
    if key.startswith("purpose_agent/db/") and ".<locals>." in key:
        return AREAS[0][1]
    return next((name for markers, name in AREAS if any(m in key for m in markers)), "other Python")


def by_area(table: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Own time summed by library, from the full own-time table."""
    sums: dict[str, list[float]] = {}
    for seconds, share, key in table:
        area = _area(key)
        entry = sums.setdefault(area, [0.0, 0.0])
        entry[0] += seconds
        entry[1] += share
    ranked = sorted(sums.items(), key=lambda item: item[1][0], reverse=True)
    return [(seconds, share, area) for area, (seconds, share) in ranked]


@contextlib.contextmanager
def _sides(args: argparse.Namespace) -> Iterator[tuple[Target, Any, Any]]:
    with open_target(args.backend, args) as target:
        store = load_factory(args.store)(target.store_url)
        if target.backend == "sqlite":
            settings = store_settings(store, "sqlite")
            target.raw_options = {
                "journal_mode": settings.get("journal_mode", "wal"),
                "synchronous": settings.get("synchronous", 2),
            }
        raw = target.raw()
        raw.create_tables()
        try:
            yield target, store, raw
        finally:
            raw.close()
            store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("case", choices=CASES, nargs="?")
    parser.add_argument(
        "--profiler",
        choices=("pyinstrument", "none"),
        default="pyinstrument",
        help="none: just run the loop (to sample it with py-spy)",
    )
    parser.add_argument("--summarize", default=None, help="py-spy collapsed stacks to summarise")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--side", choices=("store", "raw"), default="store")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--events", type=int, default=10_000, help="events in the run read by read cases"
    )
    parser.add_argument("--interval", type=float, default=0.0002, help="sampling interval, seconds")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--html", default=None, help="also write pyinstrument's HTML report here")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--sqlite-dir", default=None)
    parser.add_argument("--store", default=DEFAULT_STORE)
    args = parser.parse_args(argv)
    if args.summarize:
        summarize_collapsed(args.summarize, args.top)
        return 0
    if args.case is None:
        parser.error("a case is required unless --summarize is given")
    args.postgres_url = _postgres_admin_url(args.postgres_url)
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("pyinstrument is not installed: pip install pyinstrument", file=sys.stderr)
        return 2
    with _sides(args) as (_target, store, raw):
        side = store if args.side == "store" else raw
        prepared = _prepare(args.case, store, raw, args.events)
        op = _operation(args.case, side, prepared)
        for _ in range(20):  # warm up: pools, prepared statements, caches
            op()
        if args.profiler == "none":
            ops = _profiled_loop(op, args.seconds)
            print(f"{args.side} {args.case} on {args.backend}: {ops / args.seconds:,.1f} ops/s")
            return 0
        profiler = Profiler(interval=args.interval)
        profiler.start()
        ops = _profiled_loop(op, args.seconds)
        session = profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        print(
            f"{args.side} {args.case} on {args.backend}: {ops} ops in {session.duration:.2f} s "
            f"({ops / session.duration:,.1f} ops/s under the profiler)\n"
        )
        print(f"{'own s':>8} {'own %':>6}  file:function")
        for seconds, share, key in own_time_table(session, args.top):
            print(f"{seconds:8.3f} {share:6.1f}  {key}")
        print(f"\n{'own s':>8} {'own %':>6}  by area")
        for seconds, share, area in by_area(own_time_table(session, 10_000)):
            print(f"{seconds:8.3f} {share:6.1f}  {area}")
        if args.html:
            with open(args.html, "w") as handle:
                handle.write(profiler.output_html())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
