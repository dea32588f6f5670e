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

from purpose_agent import SequenceConflict, SQLCheckpointer
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
