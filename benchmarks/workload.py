"""What the benchmarks write: events and states shaped like an agent run's.

Events carry a tool-call payload of about 250 bytes of JSON (strings, numbers, a nested object),
the common case of an agent step. States are built up to a requested encoded size from chat-like
messages, so that a 1 MB state is a realistic 1 MB of JSON rather than one long string.
"""

from __future__ import annotations

import functools
import json

from purpose_agent import EventKind, PAEvent, RunState

BASE_TS = 1_700_000_000.0
_KINDS = (
    EventKind.TOOL_CALL,
    EventKind.TOOL_RESULT,
    EventKind.MODEL_REQUEST,
    EventKind.MODEL_RESPONSE,
)


def payload(seq: int) -> dict[str, object]:
    """The data of the ``seq``-th event of a run (about 250 bytes as JSON)."""
    return {
        "tool": "web_search",
        "call_id": f"call_{seq:010d}",
        "args": {"query": f"durable execution for agent runs, step {seq}", "max_results": 5},
        "tokens": {"prompt": 1200 + seq % 97, "completion": 40 + seq % 13},
        "latency_ms": 12.5 + (seq % 7),
        "cached": seq % 3 == 0,
        "note": "the quick brown fox jumps over the lazy dog",
    }


def event(run_id: str, seq: int) -> PAEvent:
    """The ``seq``-th event of ``run_id``."""
    return PAEvent(
        run_id=run_id,
        seq=seq,
        kind=_KINDS[seq % len(_KINDS)],
        ts=BASE_TS + seq / 1000,
        data=payload(seq),
    )


def events(run_id: str, first: int, count: int) -> list[PAEvent]:
    """``count`` consecutive events of ``run_id`` starting at seq ``first``."""
    return [event(run_id, seq) for seq in range(first, first + count)]


@functools.lru_cache(maxsize=16)
def state_data(size: int) -> dict[str, object]:
    """A state's data whose JSON encoding is at least ``size`` bytes (and not much more).

    Built once per size and shared (callers must not change it): sizing it takes several
    ``json.dumps`` calls, which cost more than a store's whole save of the state, and a
    benchmark of many writers in one process would otherwise measure mostly that.
    """
    messages: list[dict[str, object]] = []
    data: dict[str, object] = {
        "goal": "answer the user's question",
        "step": 0,
        "messages": messages,
    }
    # Each message is ~190 bytes; build close to the size, then top up with a short filler.
    filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2
    approx = 80
    index = 0
    while approx < size - 200:
        message: dict[str, object] = {
            "role": "assistant" if index % 2 else "user",
            "n": index,
            "content": filler,
        }
        messages.append(message)
        approx += len(json.dumps(message)) + 1
        index += 1
    data["step"] = index
    data["pad"] = "x" * max(0, size - len(json.dumps(data, separators=(",", ":"))))
    return data


def state(run_id: str, seq: int, size: int) -> RunState:
    """A state of ``run_id`` covering events up to ``seq``, about ``size`` bytes as JSON."""
    return RunState(
        run_id=run_id, seq=seq, data=state_data(size), created_at=BASE_TS, updated_at=BASE_TS + seq
    )
