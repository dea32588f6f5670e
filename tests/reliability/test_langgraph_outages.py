"""LangGraph graphs on the saver while their private server restarts, or crashes and recovers.

Threads (or asyncio tasks) each run one LangGraph thread of a three-node graph, one input per
round, through ``PurposeAgentSaver`` on one store, while the server restarts under them (or is
killed with SIGKILL and started again, recovering from its log). A
call that meets the outage fails with the store's ``StoreUnavailable`` (through LangGraph,
which raises what the saver raised); the caller then does what LangGraph prescribes after an
error: it resumes the thread with ``invoke(None, config)`` if the round's input was stored,
and sends the input again if it was not. New input after a failure would instead drop the
failed step's pending writes, which is LangGraph's rule with every saver, its own included.

What must hold: no driver error reaches the caller, no worker hangs, every worker finishes
rounds after the server is back, and each thread's state is exactly that of a run that was
never interrupted (no node's write lost, none applied twice).
"""

from __future__ import annotations

import asyncio
import functools
import operator
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from sqlalchemy.engine import URL

from purpose_agent import AsyncSQLCheckpointer, CheckpointError, SQLCheckpointer
from purpose_agent.integrations.langgraph import PurposeAgentSaver
from tests.reliability.conftest import Private
from tests.reliability.workload import JOIN_TIMEOUT, describe
from tests.servers import LocalPgBouncer, LocalPostgres, LocalServer, throwaway_database

pytestmark = pytest.mark.reliability

WORKERS = 12
NODES = ("a", "b", "c")
# A round that has not finished after this long is a stuck thread, not an outage (PgBouncer
# answers for itself for its server_login_retry, 15 s, after the server is back).
ROUND_DEADLINE = 60.0
RETRY_PAUSE = 0.05
# After the outage, the workers stop once each has finished a round, or after this long.
SETTLE = 90.0


class Log(TypedDict):
    log: Annotated[list[str], operator.add]


def _graph(saver: PurposeAgentSaver) -> Any:
    """``a`` -> ``b`` -> ``c``, each appending its name and the round it ran in."""
    builder = StateGraph(Log)
    previous = START
    for name in NODES:

        def node(state: Log, name: str = name) -> dict[str, list[str]]:
            round_number = sum(item.startswith("in") for item in state["log"]) - 1
            return {"log": [f"{name}{round_number}"]}

        builder.add_node(name, node)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=saver)


def _round(number: int) -> list[str]:
    return [f"in{number}", *(f"{name}{number}" for name in NODES)]


class Outcome:
    """What the workers saw: failures by kind, foreign errors, rounds done, stuck threads."""

    def __init__(self) -> None:
        self.failures = 0
        self.foreign: list[str] = []
        self.rounds: dict[int, int] = {}
        self.after: dict[int, int] = {}
        self.logs: dict[int, list[str]] = {}
        self.stuck: list[str] = []

    def seen(self) -> dict[str, object]:
        return {
            "driver errors": self.foreign,
            "stuck threads": self.stuck,
            "workers without a round after the outage": [
                worker for worker in range(WORKERS) if self.after.get(worker, 0) < 1
            ],
            "threads not as if uninterrupted": [
                worker
                for worker, log in self.logs.items()
                if log != [item for number in range(self.rounds[worker]) for item in _round(number)]
            ],
        }


CALM: dict[str, object] = {
    "driver errors": [],
    "stuck threads": [],
    "workers without a round after the outage": [],
    "threads not as if uninterrupted": [],
}


class Rounds:
    """One worker's rounds on its LangGraph thread: what to send next, and what came back.

    The threads' and the tasks' workers differ only in how they call the graph; this holds
    what they decide. A round under way is finished before the worker stops: a thread left
    half-way through one is not the uninterrupted run's.
    """

    def __init__(self, number: int, outcome: Outcome, stop: Any, back: Any) -> None:
        self.number = number
        self.config: Any = {"configurable": {"thread_id": f"t{number}"}}
        self._outcome, self._stop, self._back = outcome, stop, back
        self.done = 0
        self.resume = False
        self.deadline = time.monotonic() + ROUND_DEADLINE

    def going(self) -> bool:
        """Whether to call the graph again (``False`` also when the round is stuck)."""
        if self._stop.is_set() and not self.resume:
            return False
        if time.monotonic() > self.deadline:
            self._outcome.stuck.append(f"t{self.number} round {self.done}")
            return False
        return True

    def request(self) -> dict[str, list[str]] | None:
        """The graph's input: the round's, or ``None`` to resume the thread."""
        return None if self.resume else {"log": [f"in{self.done}"]}

    def failed(self, log: list[str] | None) -> None:
        """A call failed with the store's error; ``log`` is the thread's, if it could be read.

        If the round's input reached the store, the thread is resumed; if not, the input is
        sent again. If even the read failed, resuming is the safe guess: a resume with
        nothing to resume does nothing, and the next call decides again.
        """
        self._outcome.failures += 1
        self.resume = log is None or f"in{self.done}" in log

    def foreign(self, exc: BaseException) -> None:
        """A call failed with an error that is not the store's."""
        self._outcome.foreign.append(describe(exc))

    def returned(self, log: list[str]) -> bool:
        """The call returned and the thread holds ``log``; ``False`` if the round is wrong."""
        if log[-4:] != _round(self.done):
            if f"in{self.done}" not in log:  # a resume with nothing stored to resume
                self.resume = False
                return True
            self._outcome.stuck.append(f"t{self.number} round {self.done} returned {log[-4:]}")
            return False
        self.done, self.resume = self.done + 1, False
        self.deadline = time.monotonic() + ROUND_DEADLINE
        if self._back.is_set():
            self._outcome.after[self.number] = self._outcome.after.get(self.number, 0) + 1
        return True

    def finished(self, log: list[str] | None) -> bool:
        """The thread's log once stopped, if it could be read; ``False`` to try again."""
        self._outcome.rounds[self.number] = self.done
        if log is not None:
            self._outcome.logs[self.number] = log
            return True
        if time.monotonic() > self.deadline:
            self._outcome.stuck.append(f"t{self.number} unreadable")
            return True
        return False


def _run_threads(url: URL, outage: Callable[[], None]) -> Outcome:
    outcome = Outcome()
    stop = threading.Event()
    back = threading.Event()
    with SQLCheckpointer(url) as store:
        graph = _graph(PurposeAgentSaver(store))

        def log_of(rounds: Rounds) -> list[str] | None:
            try:
                found: list[str] = graph.get_state(rounds.config).values.get("log", [])
            except CheckpointError:
                return None
            return found

        def worker(number: int) -> None:
            rounds = Rounds(number, outcome, stop, back)
            while rounds.going():
                try:
                    graph.invoke(rounds.request(), rounds.config)
                    log = graph.get_state(rounds.config).values["log"]
                except CheckpointError:
                    time.sleep(RETRY_PAUSE)
                    rounds.failed(log_of(rounds))
                    continue
                except Exception as exc:
                    rounds.foreign(exc)
                    time.sleep(RETRY_PAUSE)
                    continue
                if not rounds.returned(log):
                    return
            while not rounds.finished(log_of(rounds)):
                time.sleep(RETRY_PAUSE)

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
        for thread in workers:
            thread.start()
        time.sleep(1.0)
        outage()
        back.set()
        settled = time.monotonic() + SETTLE
        while len(outcome.after) < WORKERS and time.monotonic() < settled:
            time.sleep(0.1)
        stop.set()
        for thread in workers:
            thread.join(JOIN_TIMEOUT)
        outcome.stuck += [f"t{n} hung" for n, thread in enumerate(workers) if thread.is_alive()]
    return outcome


async def _run_tasks(url: URL, outage: Callable[[], None], group_commit: bool) -> Outcome:
    outcome = Outcome()
    stop = asyncio.Event()
    back = asyncio.Event()
    async with AsyncSQLCheckpointer(url, group_commit=group_commit) as store:
        graph = _graph(PurposeAgentSaver(store))

        async def log_of(rounds: Rounds) -> list[str] | None:
            try:
                found: list[str] = (await graph.aget_state(rounds.config)).values.get("log", [])
            except CheckpointError:
                return None
            return found

        async def worker(number: int) -> None:
            rounds = Rounds(number, outcome, stop, back)
            while rounds.going():
                try:
                    await graph.ainvoke(rounds.request(), rounds.config)
                    log = (await graph.aget_state(rounds.config)).values["log"]
                except CheckpointError:
                    await asyncio.sleep(RETRY_PAUSE)
                    rounds.failed(await log_of(rounds))
                    continue
                except Exception as exc:
                    rounds.foreign(exc)
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                if not rounds.returned(log):
                    return
            while not rounds.finished(await log_of(rounds)):
                await asyncio.sleep(RETRY_PAUSE)

        tasks = [asyncio.create_task(worker(n)) for n in range(WORKERS)]
        await asyncio.sleep(1.0)
        # The outage blocks for a second or two; the tasks wait meanwhile, as they would
        # for any server that is away.
        await asyncio.to_thread(outage)
        back.set()
        settled = time.monotonic() + SETTLE
        while len(outcome.after) < WORKERS and time.monotonic() < settled:
            await asyncio.sleep(0.1)
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=JOIN_TIMEOUT)
        outcome.stuck += [f"task {tasks.index(task)} hung" for task in pending]
        for task in pending:
            task.cancel()
    return outcome


def _assert_calm(outcome: Outcome) -> None:
    """What every outage must leave: nothing foreign, stuck or lost, and rounds done."""
    assert outcome.seen() == CALM
    assert sum(outcome.rounds.values()) > WORKERS


def _crash(server: LocalServer) -> None:
    """SIGKILL the server, as a crash would, and start it again (it recovers from its log)."""
    server.kill()
    server.start()


OUTAGES: dict[str, Callable[[LocalServer], Callable[[], None]]] = {
    "restart": lambda server: server.restart,
    "crash": lambda server: functools.partial(_crash, server),
}
OUTAGE = pytest.mark.parametrize("outage", OUTAGES)


@OUTAGE
def test_graphs_on_threads_lose_nothing_across_a_restart(private: Private, outage: str) -> None:
    outcome = _run_threads(private.url, OUTAGES[outage](private.server))
    _assert_calm(outcome)


# Grouped, the tasks' saves share commits, through the outage too.
GROUPING = pytest.mark.parametrize("group_commit", [False, True], ids=["plain", "grouped"])


@GROUPING
def test_graphs_on_tasks_lose_nothing_across_a_restart(
    private: Private, group_commit: bool
) -> None:
    outcome = asyncio.run(_run_tasks(private.url, private.server.restart, group_commit))
    _assert_calm(outcome)


def test_a_saver_on_an_async_store_is_made_while_the_server_is_down_and_serves_once_it_is_up(
    private: Private,
) -> None:
    """The saver built the async store's synchronous twin, connecting (on the event loop's
    thread, blocking it) as it was made: made while the server was down, it failed, where
    the async store itself opens on its first call."""
    private.server.stop()
    try:

        async def scenario() -> Any:
            async with AsyncSQLCheckpointer(private.url) as store:
                saver = PurposeAgentSaver(store)
                await asyncio.to_thread(private.server.start)
                graph = _graph(saver)
                config = {"configurable": {"thread_id": "t"}}
                return await graph.ainvoke({"log": ["in0"]}, config)

        done = asyncio.run(scenario())
    finally:
        if not private.server.running():
            private.server.start()
    assert done == {"log": ["in0", "a0", "b0", "c0"]}


@pytest.fixture
def bouncer_db(private_postgres: LocalPostgres, private_pgbouncer: LocalPgBouncer) -> Iterator[URL]:
    """A throwaway database on the private Postgres, as a URL through its PgBouncer."""
    with throwaway_database(private_postgres.url, "pa_lg_bouncer") as direct:
        yield private_pgbouncer.url.set(database=direct.database)


# Behind PgBouncer (transaction pooling, its defaults), calls fail for up to its
# server_login_retry (15 s) after the server is back: PgBouncer answers for itself until it
# logs in again. The callers resume their threads the same way, only for longer.
@pytest.mark.postgres
def test_graphs_on_threads_lose_nothing_across_a_postgres_restart_behind_pgbouncer(
    private_postgres: LocalServer, bouncer_db: URL
) -> None:
    outcome = _run_threads(bouncer_db, private_postgres.restart)
    _assert_calm(outcome)


@pytest.mark.postgres
def test_grouped_graphs_on_tasks_lose_nothing_across_a_postgres_restart_behind_pgbouncer(
    private_postgres: LocalServer, bouncer_db: URL
) -> None:
    outcome = asyncio.run(_run_tasks(bouncer_db, private_postgres.restart, group_commit=True))
    _assert_calm(outcome)
