"""Small LangGraph graphs the tests run through the saver, and a resume from another process.

``python -m tests.integrations.graphs STORE THREAD ANSWER`` opens the store (a SQLAlchemy URL,
or ``jsonl:FOLDER``), resumes the approval graph's interrupted thread with ``ANSWER`` and
prints the final state as JSON. ``python -m tests.integrations.graphs --killed STORE THREAD
JOURNAL`` starts the fan-out graph of :func:`killed_in_a_branch` on a thread, and its process
dies with ``SIGKILL`` inside a branch. ``python -m tests.integrations.graphs --many STORE NAME
THREADS ROUNDS`` runs :func:`fan_out` on ``THREADS`` threads of this process at once (asyncio
tasks on ``AsyncSQLCheckpointer`` if ``STORE`` starts with ``async+``), each for ``ROUNDS``
inputs (see :func:`fan_out_rounds`), and prints the errors it met as JSON.
"""

from __future__ import annotations

import asyncio
import enum
import json
import operator
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.func import entrypoint
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from pydantic import BaseModel

try:
    from langgraph.channels.delta import DeltaChannel
except ImportError:  # a LangGraph release before DeltaChannel
    DeltaChannel = None

from purpose_agent import AsyncSQLCheckpointer, Checkpointer, JSONLCheckpointer, SQLCheckpointer
from purpose_agent.integrations.langgraph import PurposeAgentSaver


class Fan(TypedDict):
    """Parallel branches append to ``log``; ``total`` is set after they join."""

    start: int
    log: Annotated[list[str], operator.add]
    total: int


def fan_out(saver: PurposeAgentSaver) -> Any:
    """``a`` fans out to ``b``, ``c`` and ``d`` in one super-step; ``join`` sums after them."""

    def a(state: Fan) -> dict[str, Any]:
        return {"log": [f"a{state['start']}"]}

    def branch(name: str, factor: int) -> Any:
        def run(state: Fan) -> dict[str, Any]:
            return {"log": [f"{name}{state['start'] * factor}"]}

        return run

    def join(state: Fan) -> dict[str, Any]:
        return {"total": sum(int(item[1:]) for item in state["log"])}

    builder = StateGraph(Fan)
    builder.add_node("a", a)
    for name, factor in (("b", 2), ("c", 3), ("d", 4)):
        builder.add_node(name, branch(name, factor))
        builder.add_edge("a", name)
        builder.add_edge(name, "join")
    builder.add_node("join", join)
    builder.add_edge(START, "a")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=saver)


def fan_out_rounds(graph: Any, thread_id: str, rounds: int) -> None:
    """Input ``start = 1 .. rounds`` to :func:`fan_out` on one thread, one after the other."""
    for start in range(1, rounds + 1):
        graph.invoke({"start": start}, {"configurable": {"thread_id": thread_id}})


async def afan_out_rounds(graph: Any, thread_id: str, rounds: int) -> None:
    """:func:`fan_out_rounds` with ``ainvoke``."""
    for start in range(1, rounds + 1):
        await graph.ainvoke({"start": start}, {"configurable": {"thread_id": thread_id}})


def _many(location: str, name: str, threads: int, rounds: int) -> list[str]:
    """Run :func:`fan_out_rounds` on threads ``{name}-0`` ... at once; the errors met."""
    errors: list[str] = []
    if location.startswith("async+"):

        async def tasks() -> None:
            async with AsyncSQLCheckpointer(location.removeprefix("async+")) as store:
                graph = fan_out(PurposeAgentSaver(store))
                found = await asyncio.gather(
                    *(afan_out_rounds(graph, f"{name}-{n}", rounds) for n in range(threads)),
                    return_exceptions=True,
                )
                errors.extend(repr(error) for error in found if error is not None)

        asyncio.run(tasks())
        return errors
    store = open_store(location)
    graph = fan_out(PurposeAgentSaver(store))

    def work(thread_id: str) -> None:
        try:
            fan_out_rounds(graph, thread_id, rounds)
        except Exception as exc:
            errors.append(repr(exc))

    workers = [threading.Thread(target=work, args=(f"{name}-{n}",)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store.close()
    return errors


def killed_in_a_branch(saver: PurposeAgentSaver, journal: Path, kill: bool) -> Any:
    """:func:`fan_out` whose nodes note each run in ``journal``, and whose ``d`` may kill.

    With ``kill``, ``d`` waits until the saver holds the writes of ``b`` and ``c`` (which
    finish first, in the same super-step), then sends its own process ``SIGKILL``: the
    process dies in the middle of a step whose other tasks are done and saved.
    """

    def noted(name: str, factor: int) -> Any:
        def run(state: Fan, config: RunnableConfig) -> dict[str, Any]:
            with journal.open("a") as notes:
                notes.write(f"{name}\n")
            if name == "d" and kill:
                _wait_for_writes(saver, config, {"b", "c"})
                os.kill(os.getpid(), signal.SIGKILL)
            if name == "join":
                return {"total": sum(int(item[1:]) for item in state["log"])}
            return {"log": [f"{name}{state['start'] * factor}"]}

        return run

    builder = StateGraph(Fan)
    builder.add_node("a", noted("a", 1))
    for name, factor in (("b", 2), ("c", 3), ("d", 4)):
        builder.add_node(name, noted(name, factor))
        builder.add_edge("a", name)
        builder.add_edge(name, "join")
    builder.add_node("join", noted("join", 0))
    builder.add_edge(START, "a")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=saver)


def _wait_for_writes(saver: PurposeAgentSaver, config: RunnableConfig, tasks: set[str]) -> None:
    """Until the thread's latest checkpoint has pending writes from each of ``tasks``."""
    thread: RunnableConfig = {"configurable": {"thread_id": config["configurable"]["thread_id"]}}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = saver.get_tuple(thread)
        pending = found.pending_writes if found is not None else None
        written = [value for _, channel, value in pending or [] if channel == "log"]
        if tasks <= {item[:1] for value in written for item in value}:
            return
        time.sleep(0.01)
    raise TimeoutError(f"the writes of {sorted(tasks)} never reached the saver")


class Approval(TypedDict):
    """A request that waits for a human's answer."""

    request: str
    answer: str
    outcome: str


def approval(saver: PurposeAgentSaver) -> Any:
    """``draft`` prepares, ``ask`` interrupts for an answer, ``finish`` records the outcome."""

    def draft(state: Approval) -> dict[str, Any]:
        return {"request": state["request"].upper()}

    def ask(state: Approval) -> dict[str, Any]:
        return {"answer": interrupt({"question": f"approve {state['request']}?"})}

    def finish(state: Approval) -> dict[str, Any]:
        return {"outcome": f"{state['request']}:{state['answer']}"}

    builder = StateGraph(Approval)
    builder.add_node("draft", draft)
    builder.add_node("ask", ask)
    builder.add_node("finish", finish)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "ask")
    builder.add_edge("ask", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=saver)


class Review(TypedDict):
    """A request that two reviewers answer in parallel, each through an interrupt."""

    request: str
    answers: Annotated[list[str], operator.add]


REVIEWERS = ("legal", "finance")


def parallel_review(saver: PurposeAgentSaver) -> Any:
    """``legal`` and ``finance`` run in one super-step and both interrupt; ``done`` joins."""

    def reviewer(name: str) -> Any:
        def run(state: Review) -> dict[str, Any]:
            answer = interrupt({"reviewer": name, "request": state["request"]})
            return {"answers": [f"{name}:{answer}"]}

        return run

    builder = StateGraph(Review)
    for name in REVIEWERS:
        builder.add_node(name, reviewer(name))
        builder.add_edge(START, name)
        builder.add_edge(name, "done")
    builder.add_node("done", lambda state: {"answers": ["done"]})
    builder.add_edge("done", END)
    return builder.compile(checkpointer=saver)


class Outer(TypedDict):
    """The parent graph's state; ``steps`` is shared with the subgraph."""

    steps: Annotated[list[str], operator.add]


def nested(saver: PurposeAgentSaver) -> Any:
    """A parent whose middle node is a subgraph that interrupts for a value."""

    def inner_ask(state: Outer) -> dict[str, Any]:
        return {"steps": [f"inner:{interrupt('value?')}"]}

    inner = StateGraph(Outer)
    inner.add_node("inner_ask", inner_ask)
    inner.add_node("inner_done", lambda state: {"steps": ["inner:done"]})
    inner.add_edge(START, "inner_ask")
    inner.add_edge("inner_ask", "inner_done")
    inner.add_edge("inner_done", END)

    outer = StateGraph(Outer)
    outer.add_node("before", lambda state: {"steps": ["before"]})
    outer.add_node("child", inner.compile())
    outer.add_node("after", lambda state: {"steps": ["after"]})
    outer.add_edge(START, "before")
    outer.add_edge("before", "child")
    outer.add_edge("child", "after")
    outer.add_edge("after", END)
    return outer.compile(checkpointer=saver)


def joined(saver: Any) -> Any:
    """``a`` fans out to ``b`` and ``c``, which join into ``d``: a barrier channel between."""
    builder = StateGraph(Log)
    for name in "abcd":
        builder.add_node(name, lambda state, name=name: {"log": [name]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("a", "c")
    builder.add_edge(["b", "c"], "d")
    builder.add_edge("d", END)
    return builder.compile(checkpointer=saver)


class Log(TypedDict):
    """Nodes append their names."""

    log: Annotated[list[str], operator.add]


def asking_entrypoint(saver: Any) -> Any:
    """A functional-API workflow that returns its input with an answer it interrupts for."""

    @entrypoint(checkpointer=saver)
    def workflow(given: int) -> dict[str, Any]:
        return {"given": given, "answer": interrupt({"given": given})}

    return workflow


def open_store(location: str) -> Checkpointer:
    """The store a location names: ``jsonl:FOLDER`` or a SQLAlchemy URL."""
    if location.startswith("jsonl:"):
        return JSONLCheckpointer(location.removeprefix("jsonl:"))
    return SQLCheckpointer(location)


def main(argv: list[str]) -> None:
    if argv[0] == "--many":
        location, name, threads, rounds = argv[1:]
        sys.stdout.write(json.dumps(_many(location, name, int(threads), int(rounds))) + "\n")
        return
    if argv[0] == "--killed":
        location, thread_id, journal = argv[1:]
        graph = killed_in_a_branch(PurposeAgentSaver(open_store(location)), Path(journal), True)
        graph.invoke({"start": 5, "log": []}, {"configurable": {"thread_id": thread_id}})
        raise AssertionError("the graph was to kill this process")
    location, thread_id, answer = argv
    store = open_store(location)
    try:
        graph = approval(PurposeAgentSaver(store))
        config = {"configurable": {"thread_id": thread_id}}
        result = graph.invoke(Command(resume=answer), config)
    finally:
        store.close()
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])


def _concat(state: list[str], writes: list[list[str]]) -> list[str]:
    return [*state, *(item for write in writes for item in write)]


class Chat(TypedDict, total=False):
    """``items`` on a ``DeltaChannel`` (evaluated only when :func:`delta_chat` builds it)."""

    items: Annotated[list[str], DeltaChannel(_concat)]


class ShortChat(TypedDict, total=False):
    """:class:`Chat` whose channel snapshots every 8 updates, so a thread soon has seeds."""

    items: Annotated[list[str], DeltaChannel(_concat, snapshot_frequency=8)]
    turns: int


def delta_chat(saver: Any, *, short: bool = False) -> Any:
    """One ``reply`` per input on a ``DeltaChannel``: most checkpoints hold only its change.

    With ``short``, on :class:`ShortChat`: a snapshot every 8 updates of ``items``, and a
    plain channel ``turns`` counted up in every checkpoint. Only on LangGraph releases with
    ``DeltaChannel`` (the tests that use it are defined only there).
    """

    def reply(state: Chat) -> dict[str, Any]:
        return {"items": [f"reply{len(state['items'])}"]}

    def counted(state: ShortChat) -> dict[str, Any]:
        return {"items": [f"reply{len(state['items'])}"], "turns": state.get("turns", 0) + 1}

    if short:
        short_builder = StateGraph(ShortChat)
        short_builder.add_node("reply", counted)
        short_builder.add_edge(START, "reply")
        short_builder.add_edge("reply", END)
        return short_builder.compile(checkpointer=saver)
    builder = StateGraph(Chat)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


class Priority(enum.Enum):
    """An enum in a graph's state: msgpack keeps it only if the serializer allows it."""

    HIGH = "high"


class Ticket(BaseModel):
    """A pydantic model in a graph's state (see :class:`Priority`)."""

    title: str
    priority: Priority


class Tickets(TypedDict, total=False):
    """``make`` stores a :class:`Ticket`; ``read`` records the type it gets back."""

    ticket: Ticket
    seen: str


def ticket(saver: Any) -> Any:
    """``make`` then, after an interrupt before it, ``read``: the ticket comes back stored."""

    def make(state: Tickets) -> dict[str, Any]:
        return {"ticket": Ticket(title="refund", priority=Priority.HIGH)}

    def read(state: Tickets) -> dict[str, Any]:
        return {"seen": type(state["ticket"]).__name__}

    builder = StateGraph(Tickets)
    builder.add_node("make", make)
    builder.add_node("read", read)
    builder.add_edge(START, "make")
    builder.add_edge("make", "read")
    builder.add_edge("read", END)
    return builder.compile(checkpointer=saver, interrupt_before=["read"])


class Nested(TypedDict, total=False):
    """What every level of :func:`deeply_nested` appends to."""

    log: Annotated[list[str], operator.add]


def deeply_nested(saver: Any, depth: int = 4) -> Any:
    """Subgraphs ``depth`` levels deep, the innermost asking with ``interrupt()``.

    Each level adds its node's name and a task id to the namespace, so the innermost
    namespace is longer than a run id may be once encoded.
    """

    def ask(state: Nested) -> dict[str, Any]:
        return {"log": [str(interrupt("approve?"))]}

    builder = StateGraph(Nested)
    builder.add_node("ask_human", ask)
    builder.add_edge(START, "ask_human")
    builder.add_edge("ask_human", END)
    graph = builder.compile()
    for level in range(depth - 1):
        outer = StateGraph(Nested)
        name = f"level_{level}_research_and_planning_agent"
        outer.add_node(name, graph)
        outer.add_edge(START, name)
        outer.add_edge(name, END)
        graph = outer.compile(checkpointer=saver) if level == depth - 2 else outer.compile()
    return graph
