"""``python -m benchmarks.langgraph_savers``: our LangGraph saver against LangGraph's own.

Examples::

    python -m benchmarks.langgraph_savers                       # 2,000 checkpoints per thread
    python -m benchmarks.langgraph_savers --checkpoints 200 --backends sqlite
    python -m benchmarks.langgraph_savers --postgres-url postgresql+psycopg://u@host/db

Each backend gets one throwaway database (a temporary SQLite file; ``CREATE DATABASE
lgbench_<random>`` on the Postgres server, dropped at the end) that both savers write to in
the same run: ``PurposeAgentSaver`` over ``SQLCheckpointer`` and LangGraph's ``SqliteSaver`` or
``PostgresSaver``. Each saver fills its own thread with N checkpoints as a graph does: each
``put`` (the child of the checkpoint before) followed by one ``put_writes`` of two writes keyed
to it, the two timed apart; then reads:
``get_tuple`` of the latest, ``get_tuple`` by id at random, ``list(limit=10)``; and once, the
latest checkpoint through a saver just built (what a new worker process pays first). On
Postgres the statistics are refreshed between filling and reading, as autovacuum would. The two
savers take turns throughout (call by call while filling, in blocks while reading), so that a
machine busy with something else slows both alike.
The ratio is ours over theirs: above 1 means ours did more operations per second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from benchmarks import databases
from benchmarks.databases import DEFAULT_POSTGRES_URL
from purpose_agent import SQLCheckpointer
from purpose_agent.integrations.langgraph import PurposeAgentSaver

OPS = ("put", "put_writes", "get_tuple_latest", "get_tuple_by_id", "list_limit_10")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.langgraph_savers")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--checkpoints", type=int, default=2000, help="checkpoints per thread")
    parser.add_argument("--reads", type=int, default=500, help="calls of each read")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PURPOSE_AGENT_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a Postgres server URL; a throwaway database is created on it",
    )
    parser.add_argument(
        "--database-prefix",
        default="lgbench",
        help="the throwaway Postgres database is named <prefix>_<random>",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


@contextlib.contextmanager
def sqlite_database() -> Iterator[tuple[str, str]]:
    """(our SQLAlchemy URL, SqliteSaver's path) of one fresh file."""
    with tempfile.TemporaryDirectory(prefix="lgbench") as folder:
        path = Path(folder) / "bench.db"
        yield f"sqlite:///{path}", str(path)


@contextlib.contextmanager
def postgres_database(server: str, prefix: str = "lgbench") -> Iterator[tuple[str, str]]:
    """(our SQLAlchemy URL, PostgresSaver's libpq URL) of a database dropped afterwards."""
    with databases.postgres_database(server, prefix) as url:
        libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
        yield url.render_as_string(hide_password=False), libpq


@contextlib.contextmanager
def theirs(backend: str, target: str) -> Iterator[BaseCheckpointSaver[Any]]:
    """LangGraph's saver for the backend, with its tables set up."""
    if backend == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        with SqliteSaver.from_conn_string(target) as saver:
            saver.setup()
            yield saver
        return
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(target) as saver:
        saver.setup()
        yield saver


def checkpoint_at(n: int) -> Checkpoint:
    """The benchmark's checkpoint number ``n``: five short messages and a step counter."""
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=n))
    version = f"{n + 1:032}.0"
    checkpoint["channel_values"] = {
        "messages": [f"message {n}-{k}: " + "x" * 40 for k in range(5)],
        "step": n,
    }
    checkpoint["channel_versions"] = {"messages": version, "step": version}
    return checkpoint


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


class Thread:
    """One saver's thread in the benchmark, and the calls each operation makes on it."""

    def __init__(self, saver: BaseCheckpointSaver[Any], checkpoints: int, rng: random.Random):
        self.saver = saver
        self.checkpoints = checkpoints
        self.rng = rng
        self.thread_id = f"bench-{uuid.uuid4().hex[:8]}"
        self.latest = {"configurable": {"thread_id": self.thread_id, "checkpoint_ns": ""}}
        self.stored: list[dict[str, Any]] = []
        self.parent: str | None = None
        self.spent = dict.fromkeys(OPS, 0.0)
        self.calls = dict.fromkeys(OPS, 0)

    def timed(self, op: str, call: Callable[[], Any], count: int = 1) -> None:
        start = time.perf_counter()
        for _ in range(count):
            call()
        self.spent[op] += time.perf_counter() - start
        self.calls[op] += count

    def put(self) -> None:
        n = len(self.stored)
        checkpoint = checkpoint_at(n)
        version = checkpoint["channel_versions"]["step"]
        configurable: dict[str, Any] = {"thread_id": self.thread_id, "checkpoint_ns": ""}
        if self.parent is not None:
            configurable["checkpoint_id"] = self.parent
        config = self.saver.put(
            {"configurable": configurable},
            checkpoint,
            {"source": "loop", "step": n, "parents": {}},
            {"messages": version, "step": version},
        )
        self.parent = config["configurable"]["checkpoint_id"]
        self.stored.append(config)

    def put_writes(self) -> None:
        n = len(self.stored) - 1
        self.saver.put_writes(
            self.stored[n], [("messages", f"reply {n}"), ("step", n + 1)], f"task-{n}"
        )

    def get_tuple_latest(self) -> None:
        found = self.saver.get_tuple(self.latest)
        assert found is not None
        assert found.checkpoint["id"] == self.parent

    def get_tuple_by_id(self) -> None:
        config = self.rng.choice(self.stored)
        found = self.saver.get_tuple(config)
        assert found is not None
        assert len(found.pending_writes or []) == 2

    def list_limit_10(self) -> None:
        listed = list(self.saver.list(self.latest, limit=10))
        assert len(listed) == min(10, self.checkpoints)

    def figures(self) -> dict[str, float]:
        return {op: _rate(self.calls[op], self.spent[op]) for op in OPS}


READS = ("get_tuple_latest", "get_tuple_by_id", "list_limit_10")
ROUNDS = 10


def workload(
    savers: dict[str, BaseCheckpointSaver[Any]],
    fresh: dict[str, Callable[[], contextlib.AbstractContextManager[BaseCheckpointSaver[Any]]]],
    checkpoints: int,
    reads: int,
    rng: random.Random,
    after_fill: Callable[[], None] = lambda: None,
) -> dict[str, dict[str, float]]:
    """Ops per second of each operation of each saver on its own new thread.

    The savers take turns, call by call while filling and block by block while reading, so
    that whatever else the machine does at the time weighs on both alike.
    """
    threads = {name: Thread(saver, checkpoints, rng) for name, saver in savers.items()}
    order = list(threads.values())
    for n in range(checkpoints):
        turn = order if n % 2 == 0 else order[::-1]
        for thread in turn:
            thread.timed("put", thread.put)
        for thread in turn:
            thread.timed("put_writes", thread.put_writes)
    after_fill()
    rounds = max(1, min(ROUNDS, reads))
    for round_number in range(rounds):
        count = reads // rounds + (1 if round_number < reads % rounds else 0)
        turn = order if round_number % 2 == 0 else order[::-1]
        for op in READS:
            for thread in turn:
                thread.timed(op, getattr(thread, op), count)
    results = {}
    for name, thread in threads.items():
        figures = thread.figures()
        start = time.perf_counter()
        with fresh[name]() as saver:
            assert saver.get_tuple(thread.latest) is not None
            figures["first_get_tuple_ms"] = (time.perf_counter() - start) * 1000
        results[name] = figures
    return results


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    database = (
        sqlite_database()
        if backend == "sqlite"
        else postgres_database(args.postgres_url, args.database_prefix)
    )
    rng = random.Random(args.seed)
    with database as (url, target), SQLCheckpointer(url) as store, theirs(backend, target) as lg:
        name = type(lg).__name__
        return workload(
            {"PurposeAgentSaver": PurposeAgentSaver(store), name: lg},
            # As a new worker starts: a saver of its own, opened on the database (each checks
            # its schema: ours when the store opens, LangGraph's in setup()).
            {
                "PurposeAgentSaver": lambda: PurposeAgentSaver.from_url(url),
                name: lambda: theirs(backend, target),
            },
            args.checkpoints,
            args.reads,
            rng,
            after_fill=lambda: analyze(backend, url),
        )


def analyze(backend: str, url: str) -> None:
    """Refresh Postgres's statistics of every table, as autovacuum would on a live database.

    A new database has none, and the plans made without them are not the plans a database
    in use runs (for either saver).
    """
    if backend != "postgres":
        return
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def print_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    line = f"{'backend':9} {'operation':20} {'ours ops/s':>12} {'theirs ops/s':>13} {'ratio':>7}"
    print(line)
    print("-" * len(line))
    for backend, savers in results.items():
        ours = savers["PurposeAgentSaver"]
        (their_name,) = (name for name in savers if name != "PurposeAgentSaver")
        their = savers[their_name]
        for op in OPS:
            print(
                f"{backend:9} {op:20} {ours[op]:12,.0f} {their[op]:13,.0f} "
                f"{ours[op] / their[op]:7.2f}"
            )
        print(
            f"{backend:9} {'first get_tuple':20} {ours['first_get_tuple_ms']:10.1f}ms "
            f"{their['first_get_tuple_ms']:11.1f}ms   (theirs: {their_name})"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = {
        backend: run_backend(backend, args)
        for backend in (b.strip() for b in args.backends.split(","))
        if backend
    }
    print(f"{args.checkpoints} checkpoints per thread, {args.reads} calls per read")
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
