"""A resumable agent loop: checkpoint every step, pick up after any crash.

Run it, kill it while it works (Ctrl-C, or `kill -9` from another terminal), run it again: it
continues after the last committed step and never repeats one. Each step's events and the state
after the step are saved in one `save_events(..., snapshot=...)` call, so a step is stored whole
or not at all.

    python examples/resumable_agent.py                      # sqlite:///purpose_agent.db
    python examples/resumable_agent.py postgresql+psycopg://user@host/db
    purpose-agent runs events example                        # what it wrote
"""

from __future__ import annotations

import sys
import time

from purpose_agent import EventKind, PAEvent, RunState, SQLCheckpointer

RUN_ID = "example"
STEPS = 6
USAGE = (
    "usage: python examples/resumable_agent.py [DATABASE_URL]\n"
    "  DATABASE_URL defaults to $PURPOSE_AGENT_DB_URL, else sqlite:///purpose_agent.db"
)


def do_step(step: int) -> int:
    """The agent's work for one step (a model or tool call in a real agent)."""
    time.sleep(0.5)
    return step * step


def main(url: str | None) -> None:
    with SQLCheckpointer(url) as store:
        recovery = store.recover(RUN_ID)
        if recovery is None or recovery.state is None:
            state = RunState(run_id=RUN_ID, data={"squares": []})
        else:
            # This loop always saves a step's state with its events, so nothing follows the
            # snapshot; an agent that saves events on their own would apply recovery.events here.
            state = recovery.state
            print(f"resuming after step {len(state.data['squares'])} (seq {state.seq})")
        while len(state.data["squares"]) < STEPS:
            step = len(state.data["squares"]) + 1
            result = do_step(step)
            seq = state.seq
            kinds_and_data = [
                (EventKind.STEP_STARTED, {"step": step}),
                (EventKind.TOOL_RESULT, {"square": result}),
                (EventKind.STEP_FINISHED, {"step": step}),
            ]
            events = [
                PAEvent(run_id=RUN_ID, seq=seq + n, kind=kind, data=data)
                for n, (kind, data) in enumerate(kinds_and_data, start=1)
            ]
            squares = [*state.data["squares"], result]
            state = state.model_copy(update={"seq": events[-1].seq, "data": {"squares": squares}})
            store.save_events(events, snapshot=state)
            print(f"step {step} committed: {result}")
        print(f"done: {state.data['squares']}")


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(USAGE)
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else None)
