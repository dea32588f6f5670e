"""``python -m benchmarks.busy_process``: SQLite saves while other threads run Python.

An agent server saves steps from one thread while others parse JSON, render prompts or stream a
model's answer. Python's sqlite3 lets go of the interpreter's lock around each statement it
steps, and a busy thread that takes it keeps it for up to the switch interval (5 ms) before
the saving thread gets it back. A statement that waits (a ``COMMIT``'s fsync) always loses it;
a short one now and then. This study measures a step (7 events and a 1 KB snapshot, one durable
transaction), a single event, and a batch (one ``save_events`` of 7 events in each of 33 runs),
with 0, 1 and 2 threads spinning in Python beside the writer:

- ``raw``: sqlite3 ``BEGIN IMMEDIATE``, ``executemany`` of the events, the snapshot, ``COMMIT``
  (``benchmarks.raw``; a single event is ``BEGIN IMMEDIATE``, ``INSERT``, ``COMMIT``, and a
  batch the same with ``executemany``);
- ``store``: ``SQLCheckpointer.save_events(events, snapshot=state)``, ``save_event`` and
  ``save_events(events)``;
- ``row by row``: the same store sending its inserts one row per statement, as ``executemany``
  does (:class:`RowByRowSQLCheckpointer`), which is what the store did before it sent many rows
  per statement (:class:`purpose_agent.db.cursor.RowsAtOnce`).

Sides take turns in rounds, each on its own file at ``synchronous=FULL``. Printed per busy level:
each side's median rate and its median per-round ratio to raw, and its p50/p99 latency.

Usage: ``python -m benchmarks.busy_process [--busy 0,1,2] [--rounds 6] [--per-round 40]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.raw import RawSQLite
from purpose_agent import SQLCheckpointer

SIDES = ("raw", "store", "row by row")
OPS = ("step", "event", "batch")
STEP_EVENTS = 7
BATCH_RUNS = 33  # a batch: one save of a step's events for each of 33 runs (231 events)
_ROW_STATEMENTS = ("_insert_events", "_insert_keyed", "_touch_runs", "_upsert_snapshot")


class RowByRowSQLCheckpointer(SQLCheckpointer):
    """``SQLCheckpointer`` whose inserts of many rows go one row per statement (executemany)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Statements are shared by every store of the process: this one gets its own copies.
        queries = copy.copy(self._queries)
        for name in _ROW_STATEMENTS:
            statement = copy.copy(getattr(queries, name))
            compiled = copy.copy(statement.compiled)
            compiled._rows = None
            statement._cursor = compiled
            setattr(queries, name, statement)
        self._queries = queries


@contextlib.contextmanager
def busy(threads: int) -> Iterator[None]:
    """``threads`` threads spinning in Python (as a model client's parsing would) for the block."""
    stop = threading.Event()

    def spin() -> None:
        total = 0
        while not stop.is_set():
            for n in range(2_000):
                total += n

    spinning = [threading.Thread(target=spin, daemon=True) for _ in range(threads)]
    for thread in spinning:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in spinning:
            thread.join()


def _sides(root: Path) -> tuple[dict[str, dict[str, Callable[[str, int], None]]], list[Any]]:
    raw = RawSQLite(str(root / "raw.db"))
    raw.create_tables()
    store = SQLCheckpointer(f"sqlite:///{root / 'store.db'}")
    rows = RowByRowSQLCheckpointer(f"sqlite:///{root / 'rows.db'}")

    def steps(save: Callable[[list[Any], Any], None]) -> Callable[[str, int], None]:
        def step(run_id: str, number: int) -> None:
            first = (number - 1) * STEP_EVENTS + 1
            events = workload.events(run_id, first, STEP_EVENTS)
            save(events, workload.state(run_id, first + STEP_EVENTS - 1, 1024))

        return step

    def events(save: Callable[[Any], None]) -> Callable[[str, int], None]:
        return lambda run_id, number: save(workload.event(run_id, number))

    def batches(save: Callable[[list[Any]], None]) -> Callable[[str, int], None]:
        def batch(run_id: str, number: int) -> None:
            first = (number - 1) * STEP_EVENTS + 1
            save(
                [
                    event
                    for run in range(BATCH_RUNS)
                    for event in workload.events(f"{run_id}-{run}", first, STEP_EVENTS)
                ]
            )

        return batch

    sides = {
        "raw": {
            "step": steps(raw.step),
            "event": events(raw.insert_one),
            "batch": batches(raw.insert_many),
        },
        "store": {
            "step": steps(lambda evs, state: store.save_events(evs, snapshot=state)),
            "event": events(store.save_event),
            "batch": batches(store.save_events),
        },
        "row by row": {
            "step": steps(lambda evs, state: rows.save_events(evs, snapshot=state)),
            "event": events(rows.save_event),
            "batch": batches(rows.save_events),
        },
    }
    return sides, [raw.conn, store, rows]


def measure(root: Path, threads: int, rounds: int, per_round: int) -> dict[str, dict[str, Any]]:
    """Per op and side: median rate, median per-round ratio to raw, p50/p99 latency (ms)."""
    sides, opened = _sides(root)
    rates: dict[tuple[str, str], list[float]] = {(op, side): [] for op in OPS for side in SIDES}
    latencies: dict[tuple[str, str], list[float]] = {key: [] for key in rates}
    try:
        with busy(threads):
            for number in range(rounds):
                order = SIDES if number % 2 == 0 else SIDES[::-1]
                for op in OPS:
                    calls = per_round if op != "batch" else max(1, per_round // 8)
                    for side in order:
                        call = sides[side][op]
                        run_id = f"{threads}-{op}-{number}"
                        mine = latencies[op, side]
                        started = time.perf_counter()
                        for n in range(1, calls + 1):
                            begun = time.perf_counter()
                            call(run_id, n)
                            mine.append(time.perf_counter() - begun)
                        rates[op, side].append(calls / (time.perf_counter() - started))
    finally:
        for thing in opened:
            thing.close()
    results: dict[str, dict[str, Any]] = {}
    for op in OPS:
        for side in SIDES:
            values = sorted(latencies[op, side])
            results[f"{op}/{side}"] = {
                "per_s": statistics.median(rates[op, side]),
                "of_raw": statistics.median(
                    mine / raw for mine, raw in zip(rates[op, side], rates[op, "raw"], strict=True)
                ),
                "p50_ms": values[len(values) // 2] * 1000,
                "p99_ms": values[min(len(values) - 1, round(len(values) * 0.99))] * 1000,
            }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.busy_process")
    parser.add_argument("--busy", default="0,1,2", help="busy threads, comma-separated levels")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"switch_interval_s": sys.getswitchinterval()}
    print(f"switch interval {sys.getswitchinterval() * 1000:.0f} ms; synchronous=FULL")
    print(
        f"{'busy':>4} {'op':6} {'side':11} {'per s':>8} {'of raw':>7} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for threads in (int(level) for level in args.busy.split(",")):
        with tempfile.TemporaryDirectory(prefix="busy") as folder:
            figures = measure(Path(folder), threads, args.rounds, args.per_round)
        report[str(threads)] = figures
        for key, values in figures.items():
            op, side = key.split("/")
            print(
                f"{threads:>4} {op:6} {side:11} {values['per_s']:8.0f} {values['of_raw']:8.2f} "
                f"{values['p50_ms']:8.2f} {values['p99_ms']:8.2f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
