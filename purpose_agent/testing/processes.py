"""Capability.PROCESSES: handles in several processes share one storage."""

from __future__ import annotations

import multiprocessing
import pickle
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from typing import ClassVar

from purpose_agent import Checkpointer, SequenceConflict
from purpose_agent.testing.capabilities import Backend, Capability
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.needs_pytest import pytest
from purpose_agent.testing.samples import ev
from purpose_agent.testing.steps import TornRead, steps_in_recovery, write_step

# The writer process may run this many steps ahead of the reader's passes, so the reader is
# sure to recover while the run is still growing, however fast the store writes.
STEPS_PER_READ = 4
STEPS_WRITTEN = 40
WAIT_SECONDS = 120.0


def _context() -> ForkServerContext | SpawnContext:
    """A start method that gives each child a fresh interpreter, as separate programs have."""
    if sys.platform == "linux":
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _write_in_process(
    opener: Callable[[], Checkpointer], run_id: str, seqs: list[int], tag: str
) -> list[str]:
    """Child-process body for the append rows: returns what happened per seq."""
    outcome = []
    with opener() as cp:
        for seq in seqs:
            try:
                cp.save_event(ev(run_id, seq, writer=tag))
                outcome.append("saved")
            except SequenceConflict:
                outcome.append("conflict")
    return outcome


def _opener_for_children(backend: Backend) -> Callable[[], Checkpointer]:
    """The backend's opener, failing the row with what to do when a child cannot receive it."""
    try:
        pickle.dumps(backend.open)
    except Exception as exc:  # noqa: BLE001 - pickle raises several kinds; each means the same
        pytest.fail(
            f"{backend.name} declares Capability.PROCESSES, whose rows open the store in child "
            f"processes, but its opener does not pickle ({type(exc).__name__}: {exc}): use a "
            "functools.partial of the store's class, or a function defined at module level",
            pytrace=False,
        )
    return backend.open


def _wait_for_reader(reader_passes: Synchronized[int], needed: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while reader_passes.value < needed:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the reader made no pass in {WAIT_SECONDS}s")
        time.sleep(0.001)


def _write_steps_paced(
    opener: Callable[[], Checkpointer],
    run_id: str,
    reader_passes: Synchronized[int],
    failures: Queue[str],
) -> None:
    """Child-process body: commit steps, never more than a few ahead of the reader."""
    try:
        with opener() as store:
            for number in range(1, STEPS_WRITTEN + 1):
                _wait_for_reader(reader_passes, (number - 1) // STEPS_PER_READ)
                write_step(store, run_id, number)
    except BaseException:
        failures.put(traceback.format_exc())
        raise


def _save_one_event(opener: Callable[[], Checkpointer], run_id: str) -> None:
    """Child-process body: write one event to a run, in a process of its own."""
    with opener() as cp:
        cp.save_event(ev(run_id, 1))


class ProcessesSuite(Rows):
    """Rows where child processes write while this process reads or writes too."""

    capability: ClassVar[Capability] = Capability.PROCESSES

    def test_processes_appending_to_one_run_lose_and_duplicate_nothing(
        self, backend: Backend
    ) -> None:
        opener = _opener_for_children(backend)
        with backend.open():
            pass  # create or migrate the storage once before the writers start
        with _context().Pool(3) as pool:
            jobs = [
                pool.apply_async(_write_in_process, (opener, "r", list(range(w, 91, 3)), str(w)))
                for w in (1, 2, 3)
            ]
            results = [job.get(timeout=WAIT_SECONDS) for job in jobs]
            races = [
                pool.apply_async(_write_in_process, (opener, "race", list(range(1, 31)), str(w)))
                for w in (1, 2, 3)
            ]
            race_results = [job.get(timeout=WAIT_SECONDS) for job in races]
        assert all(result == ["saved"] * 30 for result in results)
        with backend.open() as cp:
            assert [e.seq for e in cp.list_events("r")] == list(range(1, 91))
            stored = cp.list_events("race")
            assert [e.seq for e in stored] == list(range(1, 31))
        for seq_index in range(30):
            assert sorted(r[seq_index] for r in race_results) == ["conflict", "conflict", "saved"]

    def test_recover_is_consistent_while_another_process_writes_steps(
        self, backend: Backend
    ) -> None:
        opener = _opener_for_children(backend)
        context = _context()
        passes: Synchronized[int] = context.Value("i", 0)
        failures: Queue[str] = context.Queue()
        seen = [0]
        with backend.open() as cp:  # also creates or migrates the storage before the writer
            writer = context.Process(
                target=_write_steps_paced, args=(opener, "r", passes, failures)
            )
            writer.start()
            try:
                deadline = time.monotonic() + WAIT_SECONDS
                while time.monotonic() < deadline:
                    last_pass = not writer.is_alive()
                    steps = steps_in_recovery("r", cp.recover("r"))
                    if steps < seen[-1]:
                        raise TornRead(f"recovered {steps} steps after {seen[-1]}")
                    seen.append(steps)
                    with passes.get_lock():
                        passes.value += 1
                    if last_pass:
                        break
            finally:
                passes.value = STEPS_WRITTEN  # a failed reader must not leave the writer waiting
                writer.join(WAIT_SECONDS)
                if writer.is_alive():
                    writer.terminate()
                    writer.join()
        assert writer.exitcode == 0, failures.get(timeout=5) if writer.exitcode else "still running"
        assert seen[-1] == STEPS_WRITTEN
        # The reader's first pass ends before the writer may pass step STEPS_PER_READ, so the
        # recoveries overlapped the writes rather than all coming after them.
        assert min(seen[1:]) <= STEPS_PER_READ

    def test_list_runs_orders_runs_written_by_other_processes_newest_first(
        self, backend: Backend
    ) -> None:
        # Each run is written by another process, a few milliseconds after the one before:
        # the order comes from the store, not from one process's clock or counter.
        opener = _opener_for_children(backend)
        with backend.open():
            pass  # create or migrate the storage once before the writers start
        run_ids = [f"by-process-{n}" for n in range(5)]
        with _context().Pool(2) as pool:
            for run_id in run_ids:
                pool.apply(_save_one_event, (opener, run_id))
        with backend.open() as cp:
            assert cp.list_runs() == run_ids[::-1]
            cp.save_event(ev(run_ids[0], 2))
            assert cp.list_runs(limit=2) == [run_ids[0], run_ids[-1]]
