"""LangGraph graphs on the saver while their private server restarts.

Threads (or asyncio tasks) each run one LangGraph thread of a three-node graph, one input per
round, through ``PurposeAgentSaver`` on one store, while the server restarts under them. A
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
import operator
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from sqlalchemy.engine import URL

from purpose_agent import AsyncSQLCheckpointer, CheckpointError, SQLCheckpointer
from purpose_agent.integrations.langgraph import PurposeAgentSaver
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


def _run_threads(url: URL, server: LocalServer) -> Outcome:
    outcome = Outcome()
    stop = threading.Event()
    back = threading.Event()
    with SQLCheckpointer(url) as store:
        graph = _graph(PurposeAgentSaver(store))

        def worker(number: int) -> None:
            config = {"configurable": {"thread_id": f"t{number}"}}
            done = 0
            resume = False
            deadline = time.monotonic() + ROUND_DEADLINE
            # A round under way is finished before stopping: a thread left half-way through
            # one is not the uninterrupted run's.
            while not stop.is_set() or resume:
                if time.monotonic() > deadline:
                    outcome.stuck.append(f"t{number} round {done}")
                    return
                try:
                    graph.invoke(None if resume else {"log": [f"in{done}"]}, config)
                    log = graph.get_state(config).values["log"]
                except CheckpointError:
                    outcome.failures += 1
                    time.sleep(RETRY_PAUSE)
                    resume = _input_stored(lambda: graph.get_state(config), done)
                    continue
                except Exception as exc:
                    outcome.foreign.append(describe(exc))
                    time.sleep(RETRY_PAUSE)
                    continue
                if log[-4:] != _round(done):
                    if f"in{done}" not in log:  # a resume with nothing stored to resume
                        resume = False
                        continue
                    outcome.stuck.append(f"t{number} round {done} returned {log[-4:]}")
                    return
                done, resume = done + 1, False
                deadline = time.monotonic() + ROUND_DEADLINE
                if back.is_set():
                    outcome.after[number] = outcome.after.get(number, 0) + 1
            outcome.rounds[number] = done
            while time.monotonic() < deadline:
                try:
                    outcome.logs[number] = graph.get_state(config).values["log"]
                    return
                except CheckpointError:
                    time.sleep(RETRY_PAUSE)
            outcome.stuck.append(f"t{number} unreadable")

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
        for thread in workers:
            thread.start()
        time.sleep(1.0)
        server.restart()
        back.set()
        settled = time.monotonic() + SETTLE
        while len(outcome.after) < WORKERS and time.monotonic() < settled:
            time.sleep(0.1)
        stop.set()
        for thread in workers:
            thread.join(JOIN_TIMEOUT)
        outcome.stuck += [f"t{n} hung" for n, thread in enumerate(workers) if thread.is_alive()]
    return outcome


def _input_stored(state: Any, number: int) -> bool:
    """Whether the round's input reached the store (then resume), or not (then send it again).

    If even this read fails, resuming is the safe guess: a resume with nothing to resume does
    nothing, and the next failure asks again.
    """
    try:
        return f"in{number}" in state().values.get("log", [])
    except CheckpointError:
        return True


async def _run_tasks(url: URL, server: LocalServer, group_commit: bool) -> Outcome:
    outcome = Outcome()
    stop = asyncio.Event()
    back = asyncio.Event()
    async with AsyncSQLCheckpointer(url, group_commit=group_commit) as store:
        graph = _graph(PurposeAgentSaver(store))

        async def worker(number: int) -> None:
            config = {"configurable": {"thread_id": f"t{number}"}}
            done = 0
            resume = False
            deadline = time.monotonic() + ROUND_DEADLINE
            while not stop.is_set() or resume:
                if time.monotonic() > deadline:
                    outcome.stuck.append(f"t{number} round {done}")
                    return
                try:
                    await graph.ainvoke(None if resume else {"log": [f"in{done}"]}, config)
                    log = (await graph.aget_state(config)).values["log"]
                except CheckpointError:
                    outcome.failures += 1
                    await asyncio.sleep(RETRY_PAUSE)
                    try:
                        state = await graph.aget_state(config)
                        resume = f"in{done}" in state.values.get("log", [])
                    except CheckpointError:
                        resume = True
                    continue
                except Exception as exc:
                    outcome.foreign.append(describe(exc))
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                if log[-4:] != _round(done):
                    if f"in{done}" not in log:  # a resume with nothing stored to resume
                        resume = False
                        continue
                    outcome.stuck.append(f"t{number} round {done} returned {log[-4:]}")
                    return
                done, resume = done + 1, False
                deadline = time.monotonic() + ROUND_DEADLINE
                if back.is_set():
                    outcome.after[number] = outcome.after.get(number, 0) + 1
            outcome.rounds[number] = done
            while time.monotonic() < deadline:
                try:
                    outcome.logs[number] = (await graph.aget_state(config)).values["log"]
                    return
                except CheckpointError:
                    await asyncio.sleep(RETRY_PAUSE)
            outcome.stuck.append(f"t{number} unreadable")

        tasks = [asyncio.create_task(worker(n)) for n in range(WORKERS)]
        await asyncio.sleep(1.0)
        # The restart blocks for a second or two; the tasks wait meanwhile, as they would
        # for any server that is away.
        await asyncio.to_thread(server.restart)
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


@pytest.mark.postgres
def test_graphs_on_threads_lose_nothing_across_a_postgres_restart(
    private_postgres: LocalServer, postgres_db: URL
) -> None:
    outcome = _run_threads(postgres_db, private_postgres)
    assert outcome.seen() == CALM
    assert sum(outcome.rounds.values()) > WORKERS


@pytest.mark.mariadb
def test_graphs_on_threads_lose_nothing_across_a_mariadb_restart(
    private_mariadb: LocalServer, mariadb_db: URL
) -> None:
    outcome = _run_threads(mariadb_db, private_mariadb)
    assert outcome.seen() == CALM
    assert sum(outcome.rounds.values()) > WORKERS


# Grouped, the tasks' saves share commits, through the outage too.
GROUPING = pytest.mark.parametrize("group_commit", [False, True], ids=["plain", "grouped"])


@pytest.mark.postgres
@GROUPING
def test_graphs_on_tasks_lose_nothing_across_a_postgres_restart(
    private_postgres: LocalServer, postgres_db: URL, group_commit: bool
) -> None:
    outcome = asyncio.run(_run_tasks(postgres_db, private_postgres, group_commit))
    assert outcome.seen() == CALM
    assert sum(outcome.rounds.values()) > WORKERS


@pytest.mark.mariadb
@GROUPING
def test_graphs_on_tasks_lose_nothing_across_a_mariadb_restart(
    private_mariadb: LocalServer, mariadb_db: URL, group_commit: bool
) -> None:
    outcome = asyncio.run(_run_tasks(mariadb_db, private_mariadb, group_commit))
    assert outcome.seen() == CALM
    assert sum(outcome.rounds.values()) > WORKERS


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
    outcome = _run_threads(bouncer_db, private_postgres)
    assert outcome.seen() == CALM
    assert sum(outcome.rounds.values()) > WORKERS


@pytest.mark.postgres
def test_grouped_graphs_on_tasks_lose_nothing_across_a_postgres_restart_behind_pgbouncer(
    private_postgres: LocalServer, bouncer_db: URL
) -> None:
    outcome = asyncio.run(_run_tasks(bouncer_db, private_postgres, group_commit=True))
    assert outcome.seen() == CALM
    assert sum(outcome.rounds.values()) > WORKERS
