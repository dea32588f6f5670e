"""Many runs at once in one process: steps per second and step latency as concurrency grows.

Each run is a writer thread appending steps of 7 events plus a 1 KB snapshot, one durable
transaction per step. Three sides write the same steps to the same database in the same run:

* ``store``: one shared ``SQLCheckpointer`` (each step commits on its own);
* ``grouped``: the same store with group commit, so steps that overlap share a commit;
* ``raw``: naive raw-driver writers, a connection each, one commit per step, at the same
  durability settings.

With ``--mode tasks`` the runs are asyncio tasks in one event loop instead of threads, against
``AsyncSQLCheckpointer`` (plain and grouped; on SQLite also ``on-loop``, grouped with
``on_loop=True``, its statements on the loop's thread) and naive raw asyncio writers (aiosqlite
or psycopg's async connection, a connection each, one commit per step); ``--mode both``
measures both.

Run ``python -m benchmarks.concurrent_runs [--runs 1,8,64,1000] [--seconds 5] [--postgres URL]
[--mode threads|tasks|both] [--think-ms 0]``.
Figures are printed as a table and as JSON; ratios are against ``raw`` at the same concurrency,
and each side's p99 is also given over its own p99 with one run (``x lone``).

By default every run steps back to back, so the database is always saturated and a step's
latency is mostly its wait in the queue: by Little's law the mean latency at N runs is N over
the throughput, so it stays under k times a lone writer's only if N runs together go N/k times
as fast as one. ``--think-ms`` pauses each run between its steps, as an agent waits for its
model between steps; latency is still measured over the save alone. Each pause is drawn
uniformly from 0 to twice the given mean (and each run starts after one), so runs do not step
in lockstep. It shows what a step costs when the database is loaded but not saturated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from benchmarks import workload
from benchmarks.concurrency import run_together
from benchmarks.databases import Target, postgres_target, sqlite_target
from benchmarks.raw_async import RawAsyncPostgres, RawAsyncSQLite
from purpose_agent import AsyncSQLCheckpointer, SQLCheckpointer
from purpose_agent.db.group_commit import GroupCommitPolicy

STEP_EVENTS = 7
# Raw writers' connections to a shared Postgres server at most (it has max_connections).
RAW_POSTGRES_CONNECTIONS = 64
SNAPSHOT_BYTES = 1024

Step = Callable[[str, int], None]


def _steps(write: Callable[[list[Any], Any], None]) -> Step:
    def step(run_id: str, number: int) -> None:
        first = (number - 1) * STEP_EVENTS + 1
        events = workload.events(run_id, first, STEP_EVENTS)
        write(events, workload.state(run_id, first + STEP_EVENTS - 1, SNAPSHOT_BYTES))

    return step


def run_writers(
    steps: list[Step], seconds: float, prefix: str, think: float = 0.0
) -> tuple[int, float, list[float]]:
    """One thread per run, started together, stepping for ``seconds``, ``think`` s apart.

    Returns:
        Steps committed, wall seconds, and every step's latency in seconds.
    """
    latencies: list[list[float]] = [[] for _ in steps]
    pauses = [_pauses(think, index) for index in range(len(steps))]

    def work(index: int) -> None:
        clock = time.perf_counter
        mine = latencies[index]
        pause = pauses[index]
        end = clock() + seconds
        number = 0
        if think:
            time.sleep(pause())
        while clock() < end:
            number += 1
            started = clock()
            steps[index](f"{prefix}-{index}", number)
            mine.append(clock() - started)
            if think:
                time.sleep(pause())

    elapsed = run_together(len(steps), work)
    flat = [value for mine in latencies for value in mine]
    return len(flat), elapsed, flat


def _pauses(think: float, index: int) -> Callable[[], float]:
    """A run's pauses between steps: uniform in ``0..2 * think``, the same ones every time."""
    draw = random.Random(index).uniform
    return lambda: draw(0.0, 2 * think)


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def measure(
    target: Target, runs: int, seconds: float, think: float = 0.0
) -> dict[str, dict[str, float]]:
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
        # A connection each, up to what a shared Postgres server allows (max_connections);
        # past that, threads take turns on the connections, still one commit per step.
        count = runs if target.backend == "sqlite" else min(runs, RAW_POSTGRES_CONNECTIONS)
        connections = [first] + [first.clone() for _ in range(count - 1)]
        locks = [threading.Lock() for _ in connections]

        def turn(index: int) -> Step:
            connection, lock = connections[index % count], locks[index % count]

            def write(events: list[Any], state: Any) -> None:
                with lock:
                    connection.step(events, state)

            return _steps(write)

        steps = [turn(index) for index in range(runs)]
        return steps, lambda: [connection.close() for connection in connections]  # type: ignore[func-returns-value]

    sides["raw"] = raw_side
    sides["store"] = lambda: store_side(False)
    sides["grouped"] = lambda: store_side(GroupCommitPolicy(max_batch=max(runs, 1)))
    for name, build in sides.items():
        steps, close = build()
        try:
            count, elapsed, latencies = run_writers(steps, seconds, f"{name}-{runs}", think)
        finally:
            close()
        results[name] = {
            "steps_per_s": count / elapsed,
            "p50_ms": _quantile(latencies, 0.5) * 1000,
            "p99_ms": _quantile(latencies, 0.99) * 1000,
        }
    return results


AsyncStep = Callable[[str, int], Awaitable[None]]


def _async_steps(write: Callable[[list[Any], Any], Awaitable[None]]) -> AsyncStep:
    async def step(run_id: str, number: int) -> None:
        first = (number - 1) * STEP_EVENTS + 1
        events = workload.events(run_id, first, STEP_EVENTS)
        await write(events, workload.state(run_id, first + STEP_EVENTS - 1, SNAPSHOT_BYTES))

    return step


async def run_tasks(
    steps: list[AsyncStep], seconds: float, prefix: str, think: float = 0.0
) -> tuple[int, float, list[float]]:
    """One task per run, started together, stepping for ``seconds``; as :func:`run_writers`."""
    go = asyncio.Event()
    latencies: list[list[float]] = [[] for _ in steps]

    async def work(index: int) -> None:
        clock = time.perf_counter
        mine = latencies[index]
        pause = _pauses(think, index)
        await go.wait()
        end = clock() + seconds
        number = 0
        if think:
            await asyncio.sleep(pause())
        while clock() < end:
            number += 1
            started = clock()
            await steps[index](f"{prefix}-{index}", number)
            mine.append(clock() - started)
            if think:
                await asyncio.sleep(pause())

    tasks = [asyncio.create_task(work(i)) for i in range(len(steps))]
    await asyncio.sleep(0)
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    flat = [value for mine in latencies for value in mine]
    return len(flat), elapsed, flat


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def measure_tasks(
    target: Target, runs: int, seconds: float, with_langgraph: bool = False, think: float = 0.0
) -> dict[str, dict[str, float]]:
    """The asyncio sides at one concurrency, one after the other, on the same database."""
    results: dict[str, dict[str, float]] = {}

    async def raw_side() -> tuple[list[AsyncStep], Callable[[], Awaitable[Any]]]:
        target.raw().create_tables()
        if target.backend == "sqlite":
            opened: list[Any] = [await RawAsyncSQLite.open(target.raw_dsn) for _ in range(runs)]
        else:
            # A connection each, up to what a shared server allows (max_connections); past
            # that, tasks take turns on the connections, still one commit per step.
            count = min(runs, RAW_POSTGRES_CONNECTIONS)
            opened = [await RawAsyncPostgres.open(target.raw_dsn) for _ in range(count)]
        locks = [asyncio.Lock() for _ in opened]

        def turn(index: int) -> AsyncStep:
            raw, lock = opened[index % len(opened)], locks[index % len(opened)]

            async def write(events: list[Any], state: Any) -> None:
                async with lock:
                    await raw.step(events, state)

            return _async_steps(write)

        steps = [turn(index) for index in range(runs)]
        return steps, lambda: asyncio.gather(*(raw.close() for raw in opened))

    async def store_side(
        policy: GroupCommitPolicy | bool, on_loop: bool = False
    ) -> tuple[list[AsyncStep], Callable[[], Awaitable[Any]]]:
        store = await AsyncSQLCheckpointer.open(
            target.store_url, group_commit=policy, on_loop=on_loop
        )

        async def write(events: list[Any], state: Any) -> None:
            await store.save_events(events, snapshot=state)

        return [_async_steps(write)] * runs, store.close

    grouping = GroupCommitPolicy(max_batch=max(min(runs, 256), 1))
    sides: dict[str, Callable[[], Awaitable[tuple[list[AsyncStep], Any]]]] = {
        "raw": raw_side,
        "store": lambda: store_side(False),
        "grouped": lambda: store_side(grouping),
    }
    if target.backend == "sqlite":
        # Grouped, with SQLite's statements on the loop's thread instead of aiosqlite's.
        sides["on-loop"] = lambda: store_side(grouping, on_loop=True)
    if with_langgraph:
        from benchmarks import langgraph_tasks
        from purpose_agent.integrations.langgraph import PurposeAgentSaver

        async def ours() -> tuple[list[AsyncStep], Callable[[], Awaitable[Any]]]:
            store = await AsyncSQLCheckpointer.open(target.store_url, group_commit=grouping)
            step = langgraph_tasks.saver_step(PurposeAgentSaver(store))
            return [step] * runs, store.close

        sides["lg-ours"] = ours
    for name, build in sides.items():
        steps, close = await build()
        try:
            count, elapsed, latencies = await run_tasks(
                steps, seconds, f"task-{name}-{runs}", think
            )
        finally:
            await close()
        results[name] = {
            "steps_per_s": count / elapsed,
            "p50_ms": _quantile(latencies, 0.5) * 1000,
            "p99_ms": _quantile(latencies, 0.99) * 1000,
            "rss_mb": _rss_mb(),
        }
    if with_langgraph:
        async with langgraph_tasks.theirs(target.backend, target.raw_dsn) as saver:
            steps = [langgraph_tasks.saver_step(saver)] * runs
            count, elapsed, latencies = await run_tasks(steps, seconds, f"task-lg-{runs}", think)
        results["lg-theirs"] = {
            "steps_per_s": count / elapsed,
            "p50_ms": _quantile(latencies, 0.5) * 1000,
            "p99_ms": _quantile(latencies, 0.99) * 1000,
            "rss_mb": _rss_mb(),
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
    parser.add_argument("--mode", choices=("threads", "tasks", "both"), default="threads")
    parser.add_argument(
        "--langgraph",
        action="store_true",
        help="tasks mode: also LangGraph's async saver and ours doing the same steps",
    )
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="each run's pause between its steps (its model call), in ms; 0: back to back",
    )
    args = parser.parse_args(argv)
    think = args.think_ms / 1000
    modes = ["threads", "tasks"] if args.mode == "both" else [args.mode]
    levels = [int(level) for level in args.runs.split(",")]
    backends = ["sqlite"] + (["postgres"] if args.postgres else [])
    report: dict[str, Any] = {}
    for backend in backends:
        with _target(backend, args.postgres) as target:
            for mode in modes:
                for runs in levels:
                    if mode == "threads":
                        figures = measure(target, runs, args.seconds, think)
                    else:
                        figures = asyncio.run(
                            measure_tasks(target, runs, args.seconds, args.langgraph, think)
                        )
                    lone = report.get(f"{backend}/{mode}/1")
                    for side, values in figures.items():
                        values["think_ms"] = args.think_ms
                        if lone is not None and side in lone and lone[side]["p99_ms"] > 0:
                            values["p99_over_lone"] = values["p99_ms"] / lone[side]["p99_ms"]
                    report[f"{backend}/{mode}/{runs}"] = figures
                    _print(backend, mode, runs, figures)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    return 0


def _print(backend: str, mode: str, runs: int, figures: dict[str, dict[str, float]]) -> None:
    raw = figures["raw"]["steps_per_s"]
    for side, values in figures.items():
        memory = f"  rss {values['rss_mb']:6.0f} MB" if "rss_mb" in values else ""
        lone = f" ({values['p99_over_lone']:5.1f}x lone)" if "p99_over_lone" in values else ""
        print(
            f"{backend:8} {mode:7} runs={runs:<5} {side:8} {values['steps_per_s']:9.0f} steps/s "
            f"({values['steps_per_s'] / raw:4.2f}x raw)  p50 {values['p50_ms']:7.2f} ms"
            f"  p99 {values['p99_ms']:7.2f} ms{lone}{memory}",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
