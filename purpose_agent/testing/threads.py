"""Capability.THREADS: handles used from several threads at once, writers and readers alike."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ClassVar

from purpose_agent import Checkpointer, SequenceConflict
from purpose_agent.testing.capabilities import Backend, Capability
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.samples import ev
from purpose_agent.testing.steps import TornRead, steps_in_log, steps_in_recovery, write_step

# Writers may run this many steps ahead of the slowest reader's passes, so that readers are
# sure to read while the runs are still growing, however fast the store writes.
STEPS_PER_READ = 5
STEPS_PER_WRITER = 30
WAIT_SECONDS = 120


def _handles(backend: Backend) -> list[Checkpointer]:
    """Two handles on the storage when a second one sees the first one's writes, else one."""
    if backend.has(Capability.DURABLE):
        return [backend.open(), backend.open()]
    return [backend.open()]


def _close_all(handles: list[Checkpointer]) -> None:
    for handle in handles:
        handle.close()


class _ReaderProgress:
    """How many passes each reader has made; writers wait on it to stay close behind."""

    def __init__(self, readers: int) -> None:
        self._passes = [0] * readers
        self._changed = threading.Condition()

    def passed(self, reader: int) -> None:
        with self._changed:
            self._passes[reader] += 1
            self._changed.notify_all()

    def stopped(self, reader: int) -> None:
        """A reader that stops (done or failed) holds no writer back any more."""
        with self._changed:
            self._passes[reader] = STEPS_PER_WRITER
            self._changed.notify_all()

    def wait_before(self, step_number: int) -> None:
        needed = (step_number - 1) // STEPS_PER_READ
        with self._changed:
            if not self._changed.wait_for(lambda: min(self._passes) >= needed, WAIT_SECONDS):
                raise TimeoutError(f"readers made no pass in {WAIT_SECONDS}s")


class ThreadsSuite(Rows):
    """Rows that share the storage between threads, through one handle and through several."""

    capability: ClassVar[Capability] = Capability.THREADS

    def test_threads_appending_to_one_run_lose_nothing(self, backend: Backend) -> None:
        stores = _handles(backend)
        try:

            def write(worker: int) -> None:
                store = stores[worker % len(stores)]
                for seq in range(worker * 50 + 1, worker * 50 + 51):
                    store.save_event(ev("r", seq))

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(write, range(4)))
            assert [e.seq for e in stores[0].list_events("r")] == list(range(1, 201))
        finally:
            _close_all(stores)

    def test_threads_racing_for_one_seq_have_one_winner(self, backend: Backend) -> None:
        with backend.open() as cp:
            barrier = threading.Barrier(4)
            outcome: list[str] = []

            def race(worker: int) -> None:
                barrier.wait()
                try:
                    cp.save_event(ev("r", 1, writer=worker))
                    outcome.append("saved")
                except SequenceConflict:
                    outcome.append("conflict")

            threads = [threading.Thread(target=race, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(outcome) == ["conflict"] * 3 + ["saved"]
            [stored] = cp.list_events("r")
            assert stored.data["writer"] in range(4)

    def test_readers_alongside_writers_never_see_a_gap_or_half_a_step(
        self, backend: Backend
    ) -> None:
        runs = ["left", "right"]
        stores = _handles(backend)
        progress = _ReaderProgress(readers=2)
        writers_done = threading.Event()

        def write(index: int) -> None:
            store = stores[index % len(stores)]
            for number in range(1, STEPS_PER_WRITER + 1):
                progress.wait_before(number)
                write_step(store, runs[index], number)

        def read(index: int) -> dict[str, list[int]]:
            store = stores[(index + 1) % len(stores)]
            seen: dict[str, list[int]] = {run_id: [0] for run_id in runs}
            try:
                while True:
                    last_pass = writers_done.is_set()
                    for run_id in runs:
                        for read_steps in _reads(store, run_id):
                            steps = read_steps()
                            if steps < seen[run_id][-1]:
                                raise TornRead(f"{run_id}: read {steps} steps after {seen[run_id]}")
                            seen[run_id].append(steps)
                    progress.passed(index)
                    if last_pass:
                        return seen
            finally:
                progress.stopped(index)

        try:
            with ThreadPoolExecutor(4) as pool:
                readers = [pool.submit(read, index) for index in range(2)]
                writers = [pool.submit(write, index) for index in range(2)]
                _wait_then(writers, writers_done.set)
                views = [reader.result(timeout=WAIT_SECONDS) for reader in readers]
        finally:
            _close_all(stores)
        for seen in views:
            for run_id in runs:
                assert seen[run_id][-1] == STEPS_PER_WRITER
                # A reader's first pass ends before a writer may pass step STEPS_PER_READ, so
                # the reads overlapped the writes rather than all coming after them.
                assert min(seen[run_id][1:]) <= STEPS_PER_READ


def _reads(store: Checkpointer, run_id: str) -> list[Callable[[], int]]:
    """Each way to read a run, as a call returning how many whole steps it saw."""
    return [
        lambda: steps_in_log(run_id, store.list_events(run_id)),
        lambda: steps_in_log(run_id, store.iter_events(run_id)),
        lambda: steps_in_recovery(run_id, store.recover(run_id)),
    ]


def _wait_then(futures: list[Future[None]], then: Callable[[], None]) -> None:
    """Wait for every future, run ``then`` whatever happened, and re-raise the first failure."""
    try:
        for future in futures:
            future.result(timeout=WAIT_SECONDS)
    finally:
        for future in futures:
            future.cancel()
        then()
