"""``python -m benchmarks.langgraph_delta``: a graph with a ``DeltaChannel``, on each saver.

A ``DeltaChannel`` keeps only its changes in most checkpoints; each ``invoke`` rebuilds it from
the writes stored along the parent chain, back to its last snapshot (every 100 updates by
default), through the saver's ``get_delta_channel_history``. This runs one such graph (one
node appending a reply to a chat on a ``DeltaChannel``) through ``PurposeAgentSaver`` and
through LangGraph's ``SqliteSaver`` or ``PostgresSaver``, on the same database, taking turns
invoke by invoke, and reports per saver:

* ``invoke``: milliseconds per ``invoke`` over the last half of the thread (by then a resume
  walks 50 to 150 checkpoints back);
* ``history``: milliseconds per ``get_delta_channel_history`` of the latest checkpoint;
* for ``PurposeAgentSaver`` also ``default history``: LangGraph's default walk (one
  ``get_tuple`` per ancestor) through the same saver, which is what it ran before it had a
  walk of its own.

Usage: ``python -m benchmarks.langgraph_delta [--invokes 150] [--backends sqlite,postgres]``.
Needs a LangGraph release with ``DeltaChannel``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from benchmarks.langgraph_savers import DEFAULT_POSTGRES_URL, postgres_database, sqlite_database
from benchmarks.langgraph_savers import theirs as their_saver
from purpose_agent import SQLCheckpointer
from purpose_agent.integrations.langgraph import PurposeAgentSaver

FIGURES = ("invoke", "history")
OURS = "PurposeAgentSaver"
CHANNELS = ["items"]


def _concat(state: list[str], writes: Sequence[list[str]]) -> list[str]:
    return [*state, *(item for write in writes for item in write)]


class Chat(TypedDict, total=False):
    items: Annotated[list[str], DeltaChannel(_concat)]


def chat(saver: BaseCheckpointSaver[Any]) -> Any:
    """One node that appends a reply to ``items`` after each input."""

    def reply(state: Chat) -> dict[str, Any]:
        return {"items": [f"reply {len(state['items'])}: " + "x" * 80]}

    builder = StateGraph(Chat)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.langgraph_delta")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--invokes", type=int, default=150, help="invokes of the one thread")
    parser.add_argument("--reads", type=int, default=20, help="history reads per saver")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


@contextlib.contextmanager
def savers(backend: str, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Both savers on one throwaway database of the backend."""
    database = sqlite_database() if backend == "sqlite" else postgres_database(args.postgres_url)
    with (
        database as (url, target),
        SQLCheckpointer(url) as store,
        their_saver(backend, target) as lg,
    ):
        yield {OURS: PurposeAgentSaver(store), type(lg).__name__: lg}


def measure(found: dict[str, Any], invokes: int, reads: int) -> dict[str, dict[str, float]]:
    """Milliseconds per invoke and per history read of each saver (see the module's doc)."""
    graphs = {name: chat(saver) for name, saver in found.items()}
    config = {"configurable": {"thread_id": "chat"}}
    spent = dict.fromkeys(graphs, 0.0)
    timed = 0
    order = list(graphs)
    for n in range(invokes):
        for name in order if n % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            graphs[name].invoke({"items": [f"message {n}"]}, config)
            if n >= invokes // 2:
                spent[name] += time.perf_counter() - start
        timed += n >= invokes // 2
    answers = {name: graph.get_state(config).values for name, graph in graphs.items()}
    if len({json.dumps(answer) for answer in answers.values()}) != 1:
        raise AssertionError(f"the savers' graphs disagree: {answers}")
    results: dict[str, dict[str, float]] = {}
    for name, graph in graphs.items():
        latest = graph.get_state(config).config
        saver = found[name]
        results[name] = {
            "invoke": spent[name] / max(timed, 1) * 1000,
            "history": _per_call(
                lambda s=saver, c=latest: s.get_delta_channel_history(config=c, channels=CHANNELS),
                reads,
            ),
        }
        if name == OURS:
            results[name]["default history"] = _per_call(
                lambda s=saver, c=latest: BaseCheckpointSaver.get_delta_channel_history(
                    s, config=c, channels=CHANNELS
                ),
                reads,
            )
    return results


def _per_call(call: Any, count: int) -> float:
    call()  # warm
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count * 1000


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for backend in (b.strip() for b in args.backends.split(",") if b.strip()):
        with savers(backend, args) as found:
            results[backend] = measure(found, args.invokes, args.reads)
    print(f"one thread, {args.invokes} invokes of a DeltaChannel graph (ms per call)")
    print(f"{'backend':9} {'saver':18} {'invoke':>8} {'history':>8} {'default history':>16}")
    for backend, figures in results.items():
        for name, values in figures.items():
            default = values.get("default history")
            shown = f"{default:16.2f}" if default is not None else f"{'':16}"
            print(f"{backend:9} {name:18} {values['invoke']:8.2f} {values['history']:8.2f} {shown}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
