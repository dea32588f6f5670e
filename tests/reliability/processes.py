"""Writer processes for the reliability tests, forked from the test so that they start at once.

Each writer reports every call on a pipe as soon as the call returns (``ack STEP``, ``ok SEQ``,
``conflict SEQ``, ``error ...``), so the test knows what was acknowledged before it SIGKILLs
the process. A forked child builds its own store: nothing of the parent's is used after fork.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event as sa_event

from purpose_agent import SequenceConflict, SQLCheckpointer, StoreUnavailable
from purpose_agent.testing.suite import ev
from tests.reliability.workload import describe, save_step

_FORK = multiprocessing.get_context("fork")


class Writer:
    """A forked process running ``target(say, *args)``; its lines are read with :meth:`lines`."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        read, write = os.pipe()
        self.process = _FORK.Process(target=_child, args=(write, target, args), daemon=True)
        self.process.start()
        os.close(write)
        self._read = os.fdopen(read, "r")

    def lines(self) -> list[str]:
        """Every line the writer printed, read until it exits (or is killed)."""
        with self._read:
            return [line.rstrip("\n") for line in self._read]

    def first_line(self) -> str:
        """The next line (blocks until the writer prints one or exits)."""
        return self._read.readline().rstrip("\n")


def _child(write: int, target: Callable[..., None], args: tuple[Any, ...]) -> None:
    with os.fdopen(write, "w", buffering=1) as out:

        def say(line: str) -> None:
            out.write(line + "\n")
            out.flush()

        try:
            target(say, *args)
        except Exception as exc:
            say(f"error {describe(exc)}")


def steps(say: Callable[[str], None], url: str, run_id: str, first: int, size: int) -> None:
    """Save steps from ``first`` on until killed, printing each as it is acknowledged."""
    with SQLCheckpointer(url) as store:
        say("open")
        step = first
        while True:
            save_step(store, run_id, step, size)
            say(f"ack {step}")
            step += 1


def race(
    say: Callable[[str], None], url: str, run_id: str, count: int, tag: str, start: float
) -> None:
    """At ``start``, save events 1..count of ``run_id`` with ``writer=tag``."""
    with SQLCheckpointer(url) as store:
        time.sleep(max(0.0, start - time.time()))
        for seq in range(1, count + 1):
            try:
                store.save_event(ev(run_id, seq, writer=tag))
            except SequenceConflict:
                say(f"conflict {seq}")
            else:
                say(f"ok {seq}")


def resuming_steps(
    say: Callable[[str], None], url: str, read_url: str, run_id: str, size: int
) -> None:
    """Recover ``run_id`` (a replica may serve it), then save its next steps until killed.

    What a replacement worker of a fleet does after a crash: it reads where the run got to
    and goes on from there. A replica that trails the primary gives an older state; the
    steps after it are saved again, identical, which stores nothing twice. A call that fails
    with ``StoreUnavailable`` (the primary is down or failing over) is made again, the same,
    after a pause. Lines: ``resume STEP replica|primary``, ``ack STEP TIME``, ``retry STEP
    ERROR``.
    """
    store = _open_retrying(url, read_url)
    assert store._replicas is not None
    replica_reads = [0]

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "pa_" in statement:
            replica_reads[0] += 1

    sa_event.listen(store._replicas.replicas[0].engine, "before_cursor_execute", count)
    while True:
        try:
            recovered = store.recover(run_id)
        except StoreUnavailable as exc:
            say(f"retry 0 {describe(exc)}")
            time.sleep(RETRY_PAUSE)
            continue
        break
    seq = 0 if recovered is None or recovered.state is None else recovered.state.seq
    step = seq // size + 1
    say(f"resume {step} {'replica' if replica_reads[0] else 'primary'}")
    while True:
        try:
            save_step(store, run_id, step, size)
        except StoreUnavailable as exc:
            say(f"retry {step} {describe(exc)}")
            time.sleep(RETRY_PAUSE)
            continue
        say(f"ack {step} {time.time():.3f}")
        step += 1


RETRY_PAUSE = 0.05


def _open_retrying(url: str, read_url: str) -> SQLCheckpointer:
    while True:
        try:
            return SQLCheckpointer(url, read_url=read_url)
        except StoreUnavailable:
            time.sleep(RETRY_PAUSE)
