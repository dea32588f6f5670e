"""``python -m benchmarks.langgraph_import``: how fast threads move from LangGraph's savers.

A chat graph (one node appending a reply to a growing message list, three checkpoints and
their writes per ``invoke``) is run on LangGraph's ``SqliteSaver`` or ``PostgresSaver`` for
``--threads`` threads of about ``--checkpoints`` checkpoints each; then
:func:`~purpose_agent.integrations.langgraph.import_threads` moves every thread into a fresh
store on each ``--targets`` backend. Reported per pair: the checkpoints imported per second
(all of the import: finding the threads, reading them, comparing with the target, writing),
the part of it spent reading the source (the same reads, timed alone), and a re-run's time
(everything found already there).

Usage: ``python -m benchmarks.langgraph_import [--threads 20] [--checkpoints 200]
[--sources sqlite,postgres] [--targets sqlite,postgres] [--workers 1,4]``; Postgres from
``PURPOSE_AGENT_TEST_POSTGRES_URL`` (a database is created and dropped for each side).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import operator
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from sqlalchemy.engine import make_url

from benchmarks import databases
from benchmarks.databases import DEFAULT_POSTGRES_URL
from purpose_agent.integrations.langgraph import PurposeAgentSaver, import_threads

CHECKPOINTS_PER_INVOKE = 3


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]


def chat(saver: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(Chat)
    builder.add_node("reply", lambda state: {"messages": [f"reply {len(state['messages'])}"]})
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A SQLAlchemy URL of a database created for this run, dropped afterwards."""
    server = os.environ.get("PURPOSE_AGENT_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    with databases.postgres_database(server, prefix) as url:
        yield url.render_as_string(hide_password=False)


@contextlib.contextmanager
def source_saver(kind: str, folder: Path) -> Iterator[BaseCheckpointSaver[Any]]:
    if kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        with SqliteSaver.from_conn_string(str(folder / "langgraph.sqlite")) as saver:
            saver.setup()
            yield saver
        return
    from langgraph.checkpoint.postgres import PostgresSaver

    with postgres_database("pa_lgbench_src") as url:
        libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with PostgresSaver.from_conn_string(libpq) as saver:
            saver.setup()
            yield saver


@contextlib.contextmanager
def target_url(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'store-{uuid.uuid4().hex[:6]}.db'}"
        return
    with postgres_database("pa_lgbench_dst") as url:
        yield url


def fill(saver: BaseCheckpointSaver[Any], threads: int, checkpoints: int) -> None:
    graph = chat(saver)
    invokes = max(1, checkpoints // CHECKPOINTS_PER_INVOKE)
    for thread in range(threads):
        config = {"configurable": {"thread_id": f"thread-{thread}"}}
        for turn in range(invokes):
            graph.invoke({"messages": [f"question {turn}"]}, config)


def read_all(saver: BaseCheckpointSaver[Any]) -> int:
    """The importer's reads alone: every thread found, then each listed with its writes."""
    threads = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    count = 0
    for thread in threads:
        count += sum(1 for _ in saver.list({"configurable": {"thread_id": thread}}))
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--checkpoints", type=int, default=200)
    parser.add_argument("--sources", default="sqlite,postgres")
    parser.add_argument("--targets", default="sqlite,postgres")
    parser.add_argument("--workers", default="1,4", help="worker counts to run, comma-separated")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="pa_lgbench") as tmp:
        folder = Path(tmp)
        for source_kind in args.sources.split(","):
            with source_saver(source_kind, folder) as source:
                started = time.perf_counter()
                fill(source, args.threads, args.checkpoints)
                filled = time.perf_counter() - started
                started = time.perf_counter()
                total = read_all(source)
                reading = time.perf_counter() - started
                pairs = [
                    (target_kind, int(workers))
                    for target_kind in args.targets.split(",")
                    for workers in args.workers.split(",")
                ]
                for target_kind, workers in pairs:
                    with (
                        target_url(target_kind, folder) as url,
                        PurposeAgentSaver.from_url(url) as target,
                    ):
                        started = time.perf_counter()
                        report = import_threads(source, target, workers=workers)
                        seconds = time.perf_counter() - started
                        started = time.perf_counter()
                        again = import_threads(source, target, workers=workers)
                        rerun = time.perf_counter() - started
                    assert report.ok
                    assert again.ok
                    assert report.checkpoints == total
                    results.append(
                        {
                            "source": source_kind,
                            "target": target_kind,
                            "workers": workers,
                            "threads": report.threads_total,
                            "checkpoints": report.checkpoints,
                            "writes": report.writes,
                            "seconds": round(seconds, 2),
                            "checkpoints_per_s": round(report.checkpoints / seconds),
                            "source_read_s": round(reading, 2),
                            "rerun_s": round(rerun, 2),
                            "graph_run_s": round(filled, 2),
                        }
                    )
                    print(json.dumps(results[-1]), flush=True)
    print()
    print(
        f"{'source':<9}{'target':<9}{'workers':>8}{'checkpoints':>12}{'writes':>8}{'s':>8}"
        f"{'ckpt/s':>8}"
        f"{'read s':>8}{'rerun s':>9}"
    )
    for row in results:
        print(
            f"{row['source']:<9}{row['target']:<9}{row['workers']:>8}{row['checkpoints']:>12}"
            f"{row['writes']:>8}{row['seconds']:>8}{row['checkpoints_per_s']:>8}{row['source_read_s']:>8}"
            f"{row['rerun_s']:>9}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
