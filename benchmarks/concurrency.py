"""Several writers at once, each appending single durable events to its own run.

Threads share one store (it is thread-safe, and that is how an application uses it) while each
raw-driver thread has its own connection, since a DB-API connection is not shared across
threads. Processes are started with ``spawn`` and each builds its own store or connection before
a barrier releases them all together. Every writer builds its events inside the loop (a few
microseconds each, the same on both sides); the figure is total committed events per second.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue as queue_module
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks import workload
from benchmarks.databases import Target, load_factory
from benchmarks.raw import Raw

Writer = Callable[[int], None]


def _loop(write: Writer, duration: float) -> int:
    count = 0
    clock = time.perf_counter
    end = clock() + duration
    while clock() < end:
        count += 1
        write(count)
    return count


def run_threads(writers: list[Writer], duration: float) -> tuple[int, float]:
    """Run one thread per writer for ``duration`` seconds, started together.

    Returns:
        Events written by all threads and the wall seconds from start to the last finish.
    """
    counts = [0] * len(writers)

    def work(index: int) -> None:
        counts[index] = _loop(writers[index], duration)

    elapsed = run_together(len(writers), work)
    return sum(counts), elapsed


def run_together(workers: int, work: Callable[[int], None]) -> float:
    """Run ``work(index)`` on ``workers`` threads, released together once all have started.

    The timing starts at the release, so that starting threads is not counted; a thread's
    error is raised here, in the caller's thread, after all have finished.

    Returns:
        The wall seconds from the release to the last thread's finish.
    """
    barrier = threading.Barrier(workers + 1)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def store_writer(store: Any, run_id: str) -> Writer:
    """Single durable appends to ``run_id`` through the store."""
    return lambda seq: store.save_event(workload.event(run_id, seq))


def raw_writer(raw: Raw, run_id: str) -> Writer:
    """Single durable appends to ``run_id`` through a raw-driver connection."""
    return lambda seq: raw.insert_one(workload.event(run_id, seq))


def open_writer(
    side: str, target: Target, store_spec: str, run_id: str
) -> tuple[Writer, Callable[[], None]]:
    """A writer of single events to ``run_id`` on its own store or connection, and its closer."""
    if side == "store":
        store = load_factory(store_spec)(target.store_url)
        return store_writer(store, run_id), store.close
    raw = target.raw()
    return raw_writer(raw, run_id), raw.close


def _process_main(
    side: str,
    target: Target,
    store_spec: str,
    run_id: str,
    duration: float,
    barrier: Any,
    results: Any,
) -> None:
    try:
        write, close = open_writer(side, target, store_spec, run_id)
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        barrier.abort()
        return
    try:
        barrier.wait(timeout=300)
        results.put(("ok", _loop(write, duration)))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        close()


def run_processes(
    side: str, target: Target, store_spec: str, run_ids: list[str], duration: float
) -> tuple[int, float]:
    """Run one spawned process per run id for ``duration`` seconds, released together.

    Returns:
        Events written by all processes and the wall seconds from release to the last exit.

    Raises:
        RuntimeError: If a writer failed; the message is the writer's error.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(run_ids) + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=_process_main,
            args=(side, target, store_spec, run_id, duration, barrier, results),
            daemon=True,
        )
        for run_id in run_ids
    ]
    for process in processes:
        process.start()
    # A writer that failed to start breaks the barrier; its error arrives on the queue below.
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=300)
    start = time.perf_counter()
    outcomes = []
    for _ in processes:
        try:
            outcomes.append(results.get(timeout=duration + 300))
        except queue_module.Empty:
            outcomes.append(("error", "a writer process did not report"))
            break
    elapsed = time.perf_counter() - start
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()
    failures = [o[1] for o in outcomes if o[0] != "ok"]
    if failures:
        raise RuntimeError(f"writer process failed: {failures[0]}")
    return sum(o[1] for o in outcomes), elapsed
