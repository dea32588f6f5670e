"""A LangGraph graph on purpose_agent: killed in the middle of a step, resumed by the next run.

The graph plans a trip, then looks up flights, hotels and weather in parallel (one super-step
of three tasks), then answers. Each tool prints when it runs. Kill the process while the tools
work (Ctrl-C, `kill -9`), or let it kill itself with `--crash-in weather`, and run it again:
the tools that finished before the kill are not run again, because LangGraph saved their
writes as each finished, and the saver kept them.

    pip install 'purpose-agent[langgraph]'
    python examples/langgraph_resume.py --crash-in weather   # dies with SIGKILL in weather
    python examples/langgraph_resume.py                      # resumes: only weather runs again
    purpose-agent runs list --group lg:trip                  # what the thread stored

The store is ``$PURPOSE_AGENT_DB_URL``, else ``sqlite:///purpose_agent.db``; ``--url`` sets it.
"""

from __future__ import annotations

import argparse
import operator
import os
import signal
import sys
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from purpose_agent.integrations.langgraph import PurposeAgentSaver

TOOLS = {
    "flights": "LIS to OSL, 2 stops, 412 EUR",
    "hotels": "3 nights near the harbour, 540 EUR",
    "weather": "8 to 12 C, rain on Saturday",
}


class Trip(TypedDict, total=False):
    request: str
    found: Annotated[list[str], operator.add]
    answer: str


def _say(line: str) -> None:
    """Print a line in one write: the tools run in parallel threads, and ``print`` writes the
    text and its newline apart, so two lines could interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def tool(name: str, crash: str | None, saver: PurposeAgentSaver, thread: str) -> Any:
    def run(state: Trip) -> Trip:
        _say(f"  {name:8} running")
        if name == crash:
            # Let the other tools finish and their writes be saved, then die mid-step.
            while len(_saved(saver, thread)) < len(TOOLS) - 1:
                time.sleep(0.05)
            _say(f"  {name:8} killing this process with SIGKILL")
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.2 if name != crash else 0)  # the lookup
        return {"found": [f"{name}: {TOOLS[name]}"]}

    return run


def _saved(saver: PurposeAgentSaver, thread: str) -> list[str]:
    """The tools whose results the store holds for the step under way."""
    found = saver.get_tuple({"configurable": {"thread_id": thread}})
    writes = found.pending_writes if found is not None else []
    return [value[0].split(":")[0] for _, channel, value in writes or [] if channel == "found"]


def build(saver: PurposeAgentSaver, crash: str | None, thread: str) -> Any:
    builder = StateGraph(Trip)
    builder.add_node("plan", lambda state: {"found": [f"plan: {state['request']}"]})
    builder.add_edge(START, "plan")
    for name in TOOLS:
        builder.add_node(name, tool(name, crash, saver, thread))
        builder.add_edge("plan", name)
        builder.add_edge(name, "answer")
    builder.add_node("answer", lambda state: {"answer": f"{len(state['found'])} facts found"})
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=saver)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("PURPOSE_AGENT_DB_URL"))
    parser.add_argument("--crash-in", choices=sorted(TOOLS), help="SIGKILL inside this tool")
    parser.add_argument("--thread", default="trip", help="the LangGraph thread (default: trip)")
    args = parser.parse_args()
    url, thread = args.url or "sqlite:///purpose_agent.db", args.thread
    with PurposeAgentSaver.from_url(url) as saver:
        graph = build(saver, args.crash_in, thread)
        config = {"configurable": {"thread_id": thread}}
        state = graph.get_state(config)
        if state.next:
            print(f"thread {thread!r} on {url}: resuming; left to run: {', '.join(state.next)}")
            result = graph.invoke(None, config)
        elif state.values:
            print(f"thread {thread!r} on {url}: done already (--thread NAME starts another)")
            result = state.values
        else:
            print(f"thread {thread!r} on {url}: new trip")
            result = graph.invoke({"request": "Oslo in March"}, config)
    print(f"answer: {result['answer']}")
    for fact in sorted(result["found"]):
        print(f"  {fact}")


if __name__ == "__main__":
    main()
