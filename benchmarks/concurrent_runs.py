"""Many runs at once in one process: steps per second and step latency as concurrency grows.

Each run is a writer thread appending steps of 7 events plus a 1 KB snapshot, one durable
transaction per step. Three sides write the same steps to the same database in the same run:

* ``store``: one shared ``SQLCheckpointer`` (each step commits on its own);
* ``grouped``: the same store with group commit, so steps that overlap share a commit;
* ``raw``: naive raw-driver writers, a connection each, one commit per step, at the same
  durability settings.

Run ``python -m benchmarks.concurrent_runs [--runs 1,8,64] [--seconds 5] [--postgres URL]``.
Figures are printed as a table and as JSON; ratios are against ``raw`` at the same concurrency.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks import workload
from benchmarks.databases import Target, postgres_target, sqlite_target
from purpose_agent import SQLCheckpointer
from purpose_agent.db.group_commit import GroupCommitPolicy

STEP_EVENTS = 7
SNAPSHOT_BYTES = 1024

Step = Callable[[str, int], None]


def _steps(write: Callable[[list[Any], Any], None]) -> Step:
    def step(run_id: str, number: int) -> None:
        first = (number - 1) * STEP_EVENTS + 1
        events = workload.events(run_id, first, STEP_EVENTS)
        write(events, workload.state(run_id, first + STEP_EVENTS - 1, SNAPSHOT_BYTES))

    return step


def run_writers(steps: list[Step], seconds: float, prefix: str) -> tuple[int, float, list[float]]:
    """One thread per run, started together, stepping for ``seconds``.

    Returns:
        Steps committed, wall seconds, and every step's latency in seconds.
    """
    barrier = threading.Barrier(len(steps) + 1)
    latencies: list[list[float]] = [[] for _ in steps]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        clock = time.perf_counter
        mine = latencies[index]
        barrier.wait()
        end = clock() + seconds
        number = 0
        try:
            while clock() < end:
                number += 1
                started = clock()
                steps[index](f"{prefix}-{index}", number)
                mine.append(clock() - started)
        except BaseException as exc:  # reported in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(steps))]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    flat = [value for mine in latencies for value in mine]
    return len(flat), elapsed, flat


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def measure(target: Target, runs: int, seconds: float) -> dict[str, dict[str, float]]:
    """All three sides at one concurrency, one after the other, on the same database."""
    results: dict[str, dict[str, float]] = {}
    sides: dict[str, Callable[[], tuple[list[Step], Callable[[], None]]]] = {}

    def store_side(policy: GroupCommitPolicy | bool) -> tuple[list[Step], Callable[[], None]]:
        store = SQLCheckpointer(target.store_url, group_commit=policy)
        step = _steps(lambda events, state: store.save_events(events, snapshot=state))
        return [step] * runs, store.close

    def raw_side() -> tuple[list[Step], Callable[[], None]]:
        first = target.raw()
        first.create_tables()
        connections = [first] + [first.clone() for _ in range(runs - 1)]
        steps = [_steps(connection.step) for connection in connections]
        return steps, lambda: [connection.close() for connection in connections]  # type: ignore[func-returns-value]

    sides["raw"] = raw_side
    sides["store"] = lambda: store_side(False)
    sides["grouped"] = lambda: store_side(GroupCommitPolicy(max_batch=max(runs, 1)))
    for name, build in sides.items():
        steps, close = build()
        try:
            count, elapsed, latencies = run_writers(steps, seconds, f"{name}-{runs}")
        finally:
            close()
        results[name] = {
            "steps_per_s": count / elapsed,
            "p50_ms": _quantile(latencies, 0.5) * 1000,
            "p99_ms": _quantile(latencies, 0.99) * 1000,
        }
    return results


@contextlib.contextmanager
def _target(backend: str, postgres: str | None) -> Iterator[Target]:
    if backend == "sqlite":
        with sqlite_target() as target:
            yield target
    else:
        assert postgres is not None
        with postgres_target(postgres) as target:
            yield target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1,8,64", help="concurrency levels, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="per side and level")
    parser.add_argument("--postgres", default=None, help="admin URL of a Postgres server")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.runs.split(",")]
    backends = ["sqlite"] + (["postgres"] if args.postgres else [])
    report: dict[str, Any] = {}
    for backend in backends:
        with _target(backend, args.postgres) as target:
            for runs in levels:
                figures = measure(target, runs, args.seconds)
                report[f"{backend}/{runs}"] = figures
                raw = figures["raw"]["steps_per_s"]
                for side, values in figures.items():
                    print(
                        f"{backend:8} runs={runs:<5} {side:8} {values['steps_per_s']:9.0f} steps/s "
                        f"({values['steps_per_s'] / raw:4.2f}x raw)  p50 {values['p50_ms']:7.2f} ms"
                        f"  p99 {values['p99_ms']:7.2f} ms",
                        flush=True,
                    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
