"""``python -m benchmarks.busy_loop``: SQLite steps from an event loop that is never idle.

An asyncio agent server under load always has a task ready to run: the loop never waits in
``select``, it only polls it (with a zero timeout) between tasks. aiosqlite runs each
connection in a thread of its own, which needs the interpreter's lock to start a statement,
to go on after one, and to hand the answer back. Each poll of the loop lets go of the lock
for a moment and takes it straight back, and CPython's waiting thread counts that as a switch
and waits a whole switch interval (5 ms) more before it asks for the lock again: while the
loop's tasks keep it busy in slices shorter than that, the aiosqlite thread may not get the
lock for seconds. A step (7 events and a 1 KB snapshot) is written, while one task spins in
Python in slices of about 1 ms, by:

- ``raw aiosqlite``: ``BEGIN IMMEDIATE``, ``executemany``, the snapshot, ``COMMIT``, awaited
  (``benchmarks.raw_async``);
- ``async store``: ``AsyncSQLCheckpointer.save_events(events, snapshot=state)`` (aiosqlite,
  each step one trip to its thread);
- ``async store, on_loop``: the same with ``AsyncSQLCheckpointer(url, on_loop=True)``, which
  runs the statements on the loop's own thread (the loop is blocked for the save, and no
  other thread is needed).

Each side has a time budget; a side that has not finished its steps by then is stopped, and
how many it finished is reported. Usage: ``python -m benchmarks.busy_loop [--steps 40]
[--budget 20] [--slice-ms 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.raw import RawSQLite
from benchmarks.raw_async import RawAsyncSQLite
from purpose_agent import AsyncSQLCheckpointer

SIDES = ("raw aiosqlite", "async store", "async store, on_loop")
STEP_EVENTS = 7


async def _spin(stop: asyncio.Event, slice_s: float) -> None:
    """A task busy in Python, yielding to the loop every ``slice_s`` seconds."""
    clock = time.perf_counter
    total = 0
    while not stop.is_set():
        end = clock() + slice_s
        while clock() < end:
            for n in range(200):
                total += n
        await asyncio.sleep(0)


async def _side(name: str, root: Path, steps: int, budget: float, slice_s: float) -> dict[str, Any]:
    path = root / f"{name.replace(' ', '-')}.db"
    close: Callable[[], Awaitable[None]]
    if name == "raw aiosqlite":
        RawSQLite(str(path)).create_tables()
        raw = await RawAsyncSQLite.open(str(path))
        save: Callable[[list[Any], Any], Awaitable[None]] = raw.step
        close = raw.close
    elif name == "async store":
        store = AsyncSQLCheckpointer(f"sqlite+aiosqlite:///{path}")
        save = lambda events, state: store.save_events(events, snapshot=state)  # noqa: E731
        close = store.close
    else:
        on_loop = AsyncSQLCheckpointer(f"sqlite:///{path}", on_loop=True)
        save = lambda events, state: on_loop.save_events(events, snapshot=state)  # noqa: E731
        close = on_loop.close

    await save(workload.events("warm", 1, STEP_EVENTS), workload.state("warm", 7, 1024))
    stop = asyncio.Event()
    spinner = asyncio.create_task(_spin(stop, slice_s))
    latencies: list[float] = []
    deadline = time.perf_counter() + budget
    try:
        for number in range(1, steps + 1):
            first = (number - 1) * STEP_EVENTS + 1
            events = workload.events("r", first, STEP_EVENTS)
            state = workload.state("r", first + STEP_EVENTS - 1, 1024)
            started = time.perf_counter()
            left = deadline - started
            if left <= 0:
                break
            try:
                await asyncio.wait_for(save(events, state), left)
            except TimeoutError:
                break
            latencies.append(time.perf_counter() - started)
    finally:
        stop.set()
        await spinner
        with contextlib.suppress(Exception):
            await close()
    ordered = sorted(latencies)
    return {
        "steps_done": len(latencies),
        "p50_ms": statistics.median(ordered) * 1000 if ordered else None,
        "max_ms": ordered[-1] * 1000 if ordered else None,
    }


def measure(root: Path, steps: int, budget: float, slice_s: float) -> dict[str, dict[str, Any]]:
    """Each side in an event loop of its own, beside one spinning task."""
    return {name: asyncio.run(_side(name, root, steps, budget, slice_s)) for name in SIDES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.busy_loop")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per side")
    parser.add_argument("--slice-ms", type=float, default=1.0, help="the busy task's slices")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    print(
        f"switch interval {sys.getswitchinterval() * 1000:.1f} ms; a task spins in slices of "
        f"{args.slice_ms} ms; {args.steps} steps, {args.budget:.0f} s per side"
    )
    with tempfile.TemporaryDirectory(prefix="busyloop") as folder:
        figures = measure(Path(folder), args.steps, args.budget, args.slice_ms / 1000)
    for name, values in figures.items():
        p50, worst = values["p50_ms"], values["max_ms"]
        shown = f"p50 {p50:8.2f} ms  max {worst:9.1f} ms" if p50 is not None else "no step"
        print(f"{name:22} {values['steps_done']:4} of {args.steps} steps  {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
