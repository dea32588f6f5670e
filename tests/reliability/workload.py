"""Steps, outcomes and the checks every reliability test makes after its failure.

Each test asserts the same four things: nothing acknowledged is lost, no step is
half-written, only ``purpose_agent`` errors (never a driver's) reach the caller, and no call
hangs. The helpers here build deterministic steps (so that a retry is an identical save) and
record what each call returned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import URL

from purpose_agent import CheckpointError, PAEvent, RunState, SQLCheckpointer, StoreUnavailable
from purpose_agent.testing.suite import ev, st
from tests.servers import LocalServer

# Every thread a test starts must end within this; one that does not is a hang (a deadlock or
# a retry loop), reported as a failure rather than left to block the run.
JOIN_TIMEOUT = 60.0


def step_events(run_id: str, step: int, size: int) -> list[PAEvent]:
    """The events of step ``step`` (1-based): seqs ``size * (step - 1) + 1`` .. ``size * step``."""
    first = size * (step - 1) + 1
    return [ev(run_id, seq, step=step) for seq in range(first, first + size)]


def step_state(run_id: str, step: int, size: int) -> RunState:
    """The state after step ``step``, covering its last event."""
    return st(run_id, size * step, step=step)


def save_step(store: SQLCheckpointer, run_id: str, step: int, size: int) -> None:
    """A step as an agent saves it: its events and the state after it, in one transaction."""
    store.save_events(step_events(run_id, step, size), snapshot=step_state(run_id, step, size))


def describe(error: BaseException | None) -> str:
    """``module.Class: message`` (first line), to show which layer an error came from."""
    if error is None:
        return "ok"
    message = (str(error).splitlines() or [""])[0][:160]
    return f"{type(error).__module__}.{type(error).__qualname__}: {message}"


def attempt(call: Callable[[], object]) -> BaseException | None:
    """Run ``call``; return what it raised, or ``None`` when it returned."""
    try:
        call()
    except Exception as exc:
        return exc
    return None


def foreign(errors: list[BaseException]) -> list[str]:
    """The errors that are not ``purpose_agent``'s own (driver or SQLAlchemy exceptions)."""
    return [describe(error) for error in errors if not isinstance(error, CheckpointError)]


def check_steps(store: SQLCheckpointer, run_id: str, acknowledged: set[int], size: int) -> None:
    """Every acknowledged step is stored whole, and nothing stored is a partial step.

    A step whose call failed may or may not be stored (the commit may have happened before
    the connection dropped), but only as a whole: its events and its snapshot together.
    """
    stored = store.list_events(run_id)
    seqs = [event.seq for event in stored]
    assert seqs == list(range(1, len(seqs) + 1)), f"{run_id}: gaps in the log"
    assert len(seqs) % size == 0, f"{run_id}: {len(seqs)} events is a half-written step"
    steps = len(seqs) // size
    for step in range(1, steps + 1):
        assert stored[size * (step - 1) : size * step] == step_events(run_id, step, size)
    missing = sorted(step for step in acknowledged if step > steps)
    assert not missing, f"{run_id}: acknowledged steps {missing} are lost"
    latest = store.load_latest(run_id)
    if steps:
        assert latest == step_state(run_id, steps, size), f"{run_id}: snapshot and log disagree"
    else:
        assert latest is None


@dataclass
class StepWriters:
    """Threads that each save steps of their own run until stopped, retrying a failed step.

    Attributes:
        acknowledged: Per run, the steps whose save returned.
        failures: ``(started, finished, error)`` of every call that raised.

    """

    store: SQLCheckpointer
    threads: int = 4
    size: int = 3
    prefix: str = "writer"
    acknowledged: dict[str, set[int]] = field(default_factory=dict)
    failures: list[tuple[float, float, BaseException]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def runs(self) -> list[str]:
        """The run each thread writes."""
        return [f"{self.prefix}-{index}" for index in range(self.threads)]

    def start(self) -> None:
        """Start the threads."""
        for run_id in self.runs():
            self.acknowledged[run_id] = set()
            worker = threading.Thread(target=self._write, args=(run_id,), daemon=True)
            self._workers.append(worker)
            worker.start()

    def _write(self, run_id: str) -> None:
        step = 1
        while not self._stop.is_set():
            started = time.monotonic()
            error = attempt(lambda step=step: save_step(self.store, run_id, step, self.size))
            if error is None:
                with self._lock:
                    self.acknowledged[run_id].add(step)
                step += 1
                continue
            with self._lock:
                self.failures.append((started, time.monotonic(), error))
            if not isinstance(error, StoreUnavailable):
                return  # anything else is a bug the test reports; retrying would hide it
            time.sleep(0.05)

    def stop(self) -> list[str]:
        """Stop the threads; returns the names of the runs whose thread hung."""
        self._stop.set()
        hung = []
        for run_id, worker in zip(self.runs(), self._workers, strict=True):
            worker.join(JOIN_TIMEOUT)
            if worker.is_alive():
                hung.append(run_id)
        return hung

    def failed_after(self, moment: float) -> list[str]:
        """The failures of calls that started after ``moment``."""
        return [describe(error) for started, _, error in self.failures if started > moment]


def storm_under_load(store: SQLCheckpointer, kill: Callable[[], object]) -> dict[str, object]:
    """Kill the store's connections again and again while writers save steps, then look.

    Returns what a caller would have seen, for the test to compare with what it must see: no
    hung writer, no driver error, and a first call after the storm that succeeds. Calls made
    during the storm may fail with ``StoreUnavailable`` (every try can meet a killed
    connection); the writers retry them, as a caller would.
    """
    writers = StepWriters(store)
    writers.start()
    time.sleep(0.5)
    for _ in range(STORM_ROUNDS):
        kill()
        time.sleep(STORM_PAUSE)
    time.sleep(0.5)
    hung = writers.stop()
    first = attempt(lambda: store.save_event(ev("after-the-storm", 1)))
    for run_id, acknowledged in writers.acknowledged.items():
        assert max(acknowledged, default=0) > 0, f"{run_id} never saved a step"
        check_steps(store, run_id, acknowledged, writers.size)
    return {
        "hung writers": hung,
        "driver errors": foreign([error for _, _, error in writers.failures]),
        "first call after the storm": describe(first),
    }


STORM_ROUNDS = 20
STORM_PAUSE = 0.1
CALM = {"hung writers": [], "driver errors": [], "first call after the storm": "ok"}


def outage_under_load(url: URL, server: LocalServer, outage: str) -> None:
    """Restart, or stop and start, ``server`` while writers save steps; check what callers saw.

    A second store sits idle through the outage, as another process would: its pooled
    connection is dead when it makes its first call after the server is back. Both stores'
    first calls after the outage must succeed, no call started after it may fail, and nothing
    acknowledged may be lost.
    """
    idle = SQLCheckpointer(url)
    idle.save_event(ev("idle", 1))
    with idle, SQLCheckpointer(url) as store:
        writers = StepWriters(store)
        writers.start()
        time.sleep(1.0)
        if outage == "restart":
            server.restart()
        else:
            server.stop()
            time.sleep(1.0)
            server.start()
        back = time.monotonic()
        first = attempt(lambda: store.save_event(ev("first-after", 1)))
        first_idle = attempt(lambda: idle.save_event(ev("idle", 2)))
        time.sleep(1.0)
        seen = {
            "hung writers": writers.stop(),
            "driver errors": foreign([error for _, _, error in writers.failures]),
            "first call after the outage": describe(first),
            "first call of the idle store": describe(first_idle),
            "failures of calls started after the outage": writers.failed_after(back),
        }
        assert seen == {
            "hung writers": [],
            "driver errors": [],
            "first call after the outage": "ok",
            "first call of the idle store": "ok",
            "failures of calls started after the outage": [],
        }
        for run_id, acknowledged in writers.acknowledged.items():
            assert max(acknowledged, default=0) > 0
            check_steps(store, run_id, acknowledged, writers.size)
