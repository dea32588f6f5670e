"""Steps, outcomes and the checks every reliability test makes after its failure.

Each test asserts the same four things: nothing acknowledged is lost, no step is
half-written, only ``purpose_agent`` errors (never a driver's) reach the caller, and no call
hangs. The helpers here build deterministic steps (so that a retry is an identical save) and
record what each call returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import (
    AsyncSQLCheckpointer,
    CheckpointError,
    PAEvent,
    RunState,
    SQLCheckpointer,
    StoreUnavailable,
)
from purpose_agent.db.group_commit import Pending
from purpose_agent.db.task_group_commit import TaskGroupCommit
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


def run_workers(work: Callable[[int], None], threads: int) -> None:
    """Run ``work(i)`` in ``threads`` threads at once; fail if one is still running after its wait.

    A call that hangs (a lost connection nobody times out) is the failure these tests look for.
    """
    workers = [threading.Thread(target=work, args=(worker,)) for worker in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(JOIN_TIMEOUT * 2)
    assert not any(worker.is_alive() for worker in workers), "a call hung"


def check_steps(store: SQLCheckpointer, run_id: str, acknowledged: set[int], size: int) -> None:
    """Every acknowledged step is stored whole, and nothing stored is a partial step.

    A step whose call failed may or may not be stored (the commit may have happened before
    the connection dropped), but only as a whole: its events and its snapshot together.
    """
    check_stored(run_id, store.list_events(run_id), store.load_latest(run_id), acknowledged, size)


def check_stored(
    run_id: str,
    stored: list[PAEvent],
    latest: RunState | None,
    acknowledged: set[int],
    size: int,
) -> None:
    """:func:`check_steps` on a run's stored events and latest snapshot, however they were read."""
    seqs = [event.seq for event in stored]
    assert seqs == list(range(1, len(seqs) + 1)), f"{run_id}: gaps in the log"
    assert len(seqs) % size == 0, f"{run_id}: {len(seqs)} events is a half-written step"
    steps = len(seqs) // size
    for step in range(1, steps + 1):
        assert stored[size * (step - 1) : size * step] == step_events(run_id, step, size)
    missing = sorted(step for step in acknowledged if step > steps)
    assert not missing, f"{run_id}: acknowledged steps {missing} are lost"
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
    _acked: threading.Condition = field(default_factory=threading.Condition)

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
                with self._acked:
                    self._acked.notify_all()
                step += 1
                continue
            with self._lock:
                self.failures.append((started, time.monotonic(), error))
            if not isinstance(error, StoreUnavailable):
                return  # anything else is a bug the test reports; retrying would hide it
            time.sleep(0.05)
        with self._acked:
            self._acked.notify_all()  # a thread that ended wakes advance()

    def advance(self, steps: int) -> bool:
        """Wait until every run has acknowledged ``steps`` more steps than now.

        Returns:
            Whether they did; ``False`` as soon as a thread has ended (on an error other
            than ``StoreUnavailable``), or after ``PROGRESS_TIMEOUT``.

        """
        with self._lock:
            target = {run_id: len(acked) + steps for run_id, acked in self.acknowledged.items()}

        def reached() -> bool:
            with self._lock:
                done = all(len(self.acknowledged[run]) >= n for run, n in target.items())
            return done or not all(worker.is_alive() for worker in self._workers)

        with self._acked:
            self._acked.wait_for(reached, PROGRESS_TIMEOUT)
        with self._lock:
            return all(len(self.acknowledged[run]) >= n for run, n in target.items())

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
    assert writers.advance(2), "the writers saved no step before the storm"
    for _ in range(STORM_ROUNDS):
        kill()
        time.sleep(STORM_PAUSE)
    assert writers.advance(2), "the writers saved no step after the storm"
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
        assert writers.advance(2), "the writers saved no step before the outage"
        if outage == "restart":
            server.restart()
        else:
            server.stop()
            time.sleep(1.0)
            server.start()
        back = time.monotonic()
        first = attempt(lambda: store.save_event(ev("first-after", 1)))
        first_idle = attempt(lambda: idle.save_event(ev("idle", 2)))
        writers.advance(2)  # calls started after the outage (compared below)
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


def terminate_postgres_backends(admin: URL, database: str) -> int:
    """``pg_terminate_backend`` every connection to ``database``; returns how many."""
    engine = sa.create_engine(admin, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                        "FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def kill_mariadb_connections(admin: URL, database: str) -> list[int]:
    """``KILL`` every connection to ``database`` (the store's), as a DBA would; returns the ids."""
    engine = sa.create_engine(admin, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            ids = list(
                conn.execute(
                    sa.text(
                        "SELECT ID FROM information_schema.PROCESSLIST "
                        "WHERE DB = :name AND ID <> CONNECTION_ID()"
                    ),
                    {"name": database},
                ).scalars()
            )
            for connection_id in ids:
                try:
                    conn.exec_driver_sql(f"KILL {int(connection_id)}")
                except sa.exc.OperationalError as exc:
                    if "1094" not in str(exc.orig):  # the connection closed since it was listed
                        raise
    finally:
        engine.dispose()
    return ids


# -- the same for asyncio tasks on AsyncSQLCheckpointer -------------------------------------


# A writer whose step failed with StoreUnavailable saves it again after this pause.
RETRY_PAUSE = 0.05
# How long every writer has to get two more steps through. Far longer than a step takes, even
# in an outage; shorter than the pool's timeout (30 s), so that a task starved of connections
# is seen as one, not as a StoreUnavailable it retries.
PROGRESS_TIMEOUT = 20.0


async def asave_step(store: AsyncSQLCheckpointer, run_id: str, step: int, size: int) -> None:
    """:func:`save_step` on the async store."""
    await store.save_events(
        step_events(run_id, step, size), snapshot=step_state(run_id, step, size)
    )


async def aattempt(call: Awaitable[object]) -> BaseException | None:
    """Await ``call``; return what it raised, or ``None`` when it returned."""
    try:
        await call
    except Exception as exc:
        return exc
    return None


async def acheck_steps(
    store: AsyncSQLCheckpointer, run_id: str, acknowledged: set[int], size: int
) -> None:
    """:func:`check_steps`, read through the async store itself."""
    stored = await store.list_events(run_id)
    check_stored(run_id, stored, await store.load_latest(run_id), acknowledged, size)


def batch_sizes(store: AsyncSQLCheckpointer) -> list[int]:
    """The sizes of the batches of queued calls the grouped store commits from now on.

    A call that finds nothing in flight commits alone on its caller's path and is not
    counted: a batch of two or more here means that calls really shared commits.
    """
    sizes: list[int] = []
    assert store._store is not None, "the store is opened by its first call"
    commits = store._store._commits
    assert isinstance(commits, TaskGroupCommit), "not a grouped store"
    run = commits._run_async

    async def recording(batch: list[Pending]) -> None:
        sizes.append(len(batch))
        await run(batch)

    commits._run_async = recording  # type: ignore[method-assign]
    return sizes


@dataclass
class AsyncStepWriters:
    """Tasks that each save steps of their own run until stopped, retrying a failed step.

    The asyncio twin of :class:`StepWriters`: a step that raised ``StoreUnavailable`` is saved
    again (the identical save) after a pause, so the acknowledged steps of a run have no gap;
    any other error ends the task, for the test to report.

    Attributes:
        acknowledged: Per run, the steps whose save returned.
        failures: ``(started, finished, error)`` of every call that raised.

    """

    store: AsyncSQLCheckpointer
    tasks: int = 6
    size: int = 3
    prefix: str = "writer"
    acknowledged: dict[str, set[int]] = field(default_factory=dict)
    failures: list[tuple[float, float, BaseException]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _acked: asyncio.Event = field(default_factory=asyncio.Event)
    _workers: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def runs(self) -> list[str]:
        """The run each task writes."""
        return [f"{self.prefix}-{index}" for index in range(self.tasks)]

    def start(self) -> None:
        """Start the tasks (on the running loop)."""
        for run_id in self.runs():
            self.acknowledged[run_id] = set()
            self._workers[run_id] = asyncio.create_task(self._write(run_id))

    async def _write(self, run_id: str) -> None:
        step = 1
        while not self._stop.is_set():
            started = time.monotonic()
            error = await aattempt(asave_step(self.store, run_id, step, self.size))
            if error is None:
                self.acknowledged[run_id].add(step)
                self._acked.set()
                step += 1
                continue
            self.failures.append((started, time.monotonic(), error))
            self._acked.set()  # wakes advance(), which notices a task that ended
            if not isinstance(error, StoreUnavailable):
                return  # anything else is a bug the test reports; retrying would hide it
            await asyncio.sleep(RETRY_PAUSE)

    async def advance(self, steps: int) -> bool:
        """Wait until every run has acknowledged ``steps`` more steps than now.

        Returns:
            Whether they did; ``False`` as soon as a task has ended (on an error other
            than ``StoreUnavailable``), or after ``PROGRESS_TIMEOUT``.

        """
        target = {run_id: len(acked) + steps for run_id, acked in self.acknowledged.items()}
        deadline = time.monotonic() + PROGRESS_TIMEOUT
        while any(len(self.acknowledged[run_id]) < n for run_id, n in target.items()):
            left = deadline - time.monotonic()
            if left <= 0 or any(worker.done() for worker in self._workers.values()):
                return False
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), left)
        return True

    async def stop(self) -> list[str]:
        """Stop the tasks; returns the names of the runs whose task hung (then cancelled)."""
        self._stop.set()
        _, pending = await asyncio.wait(self._workers.values(), timeout=JOIN_TIMEOUT)
        for worker in pending:
            worker.cancel()
        return [run_id for run_id, worker in self._workers.items() if worker in pending]

    def failed_after(self, moment: float) -> list[str]:
        """The failures of calls that started after ``moment``."""
        return [describe(error) for started, _, error in self.failures if started > moment]

    def errors(self) -> list[BaseException]:
        """Every error a call raised."""
        return [error for _, _, error in self.failures]

    async def check(self) -> None:
        """Every run made progress, its acknowledged steps have no gap and are stored once.

        A step whose save failed is saved again until it returns, so the acknowledged steps
        are ``1..n``; the store may hold step ``n + 1`` as well (the call in flight when the
        writers stopped failed after its commit), never more.
        """
        for run_id, acked in self.acknowledged.items():
            assert acked, f"{run_id} never saved a step"
            assert acked == set(range(1, max(acked) + 1)), f"{run_id}: acknowledged {acked}"
            await acheck_steps(self.store, run_id, acked, self.size)
            stored = len(await self.store.list_events(run_id)) // self.size
            assert stored <= max(acked) + 1, f"{run_id}: {stored} steps stored, {max(acked)} saved"


async def astorm_under_load(
    store: AsyncSQLCheckpointer, kill: Callable[[], int], writers: AsyncStepWriters | None = None
) -> dict[str, object]:
    """:func:`storm_under_load` with asyncio tasks: kill the store's connections in a loop.

    ``kill`` runs in a worker thread (the tasks keep running on the loop) and returns how many
    connections it killed. Returns what callers saw, to compare with :data:`ASYNC_CALM`.
    """
    writers = writers or AsyncStepWriters(store)
    writers.start()
    started = await writers.advance(2)
    killed = 0
    for _ in range(STORM_ROUNDS):
        killed += await asyncio.to_thread(kill)
        await asyncio.sleep(STORM_PAUSE)
    # After the storm every writer gets steps through again, on the same store.
    recovered = await writers.advance(2)
    hung = await writers.stop()
    first = await aattempt(store.save_event(ev("after-the-storm", 1)))
    seen: dict[str, object] = {
        "writers got going": started,
        "connections killed": killed > 0,
        "writers went on after the storm": recovered,
        "hung writers": hung,
        "driver errors": foreign(writers.errors()),
        "errors other than StoreUnavailable": [
            describe(error) for error in writers.errors() if not isinstance(error, StoreUnavailable)
        ],
        "first call after the storm": describe(first),
        "connections left checked out": store.engine.pool.checkedout(),
    }
    if not hung:
        await writers.check()
    return seen


ASYNC_CALM = {
    "writers got going": True,
    "connections killed": True,
    "writers went on after the storm": True,
    "hung writers": [],
    "driver errors": [],
    "errors other than StoreUnavailable": [],
    "first call after the storm": "ok",
    "connections left checked out": 0,
}


async def aoutage_under_load(
    url: URL, server: LocalServer, *, group_commit: bool, tasks: int = 6
) -> dict[str, object]:
    """:func:`outage_under_load` with asyncio tasks: ``server`` restarts under their writes.

    A second async store sits idle through the restart with a pooled connection, as another
    process would. Returns what callers saw, to compare with :data:`ASYNC_OUTAGE_CALM`; the
    runs are checked here.
    """
    idle = AsyncSQLCheckpointer(url, group_commit=group_commit)
    store = AsyncSQLCheckpointer(url, group_commit=group_commit)
    try:
        await idle.save_event(ev("idle", 1))
        await store.save_event(ev("before", 1))  # opens the store
        sizes = batch_sizes(store) if group_commit else None
        writers = AsyncStepWriters(store, tasks=tasks)
        writers.start()
        started = await writers.advance(2)
        await asyncio.to_thread(server.restart)
        back = time.monotonic()
        first = await aattempt(store.save_event(ev("first-after", 1)))
        first_idle = await aattempt(idle.save_event(ev("idle", 2)))
        recovered = await writers.advance(2)
        hung = await writers.stop()
        seen: dict[str, object] = {
            "writers got going": started,
            "writers went on after the outage": recovered,
            "hung writers": hung,
            "driver errors": foreign(writers.errors()),
            "errors other than StoreUnavailable": [
                describe(error)
                for error in writers.errors()
                if not isinstance(error, StoreUnavailable)
            ],
            "first call after the outage": describe(first),
            "first call of the idle store": describe(first_idle),
            "failures of calls started after the outage": writers.failed_after(back),
            "connections left checked out": store.engine.pool.checkedout(),
        }
        if sizes is not None:
            seen["calls shared commits"] = any(size > 1 for size in sizes)
        if not hung:
            await writers.check()
        if first is None:
            assert await store.list_events("first-after") == [ev("first-after", 1)]
        if first_idle is None:
            assert await idle.list_events("idle") == [ev("idle", 1), ev("idle", 2)]
        return seen
    finally:
        await store.close()
        await idle.close()


ASYNC_OUTAGE_CALM = {
    "writers got going": True,
    "writers went on after the outage": True,
    "hung writers": [],
    "driver errors": [],
    "errors other than StoreUnavailable": [],
    "first call after the outage": "ok",
    "first call of the idle store": "ok",
    "failures of calls started after the outage": [],
    "connections left checked out": 0,
}
