"""The events, states and values the suite's rows are built from.

They need nothing but the package, so tests outside the suite reuse them too.
"""

from __future__ import annotations

from typing import Any

from purpose_agent import EventKind, NewEvent, PAEvent, RunState, RunStatus


def ev(run_id: str, seq: int, kind: EventKind = EventKind.STEP_FINISHED, **data: Any) -> PAEvent:
    """Build an event with a fixed timestamp so that equal calls build equal events.

    Args:
        run_id: The run.
        seq: Its position in the run.
        kind: The event kind.
        **data: The event's data.

    Returns:
        The event, its ``ts`` derived from ``seq``.

    """
    return PAEvent(run_id=run_id, seq=seq, kind=kind, ts=1_700_000_000.0 + seq, data=data)


def new(
    kind: EventKind = EventKind.STEP_FINISHED,
    *,
    key: str | None = None,
    lane_id: str = "main",
    ts: float = 1_700_000_000.0,
    **data: Any,
) -> NewEvent:
    """Build an event to append, with a fixed timestamp so that equal calls build equal events.

    Args:
        kind: The event kind.
        key: The caller's name for the event, or ``None``.
        lane_id: The lane.
        ts: Unix seconds.
        **data: The event's data.

    Returns:
        The event, without a seq: the store gives it one.

    """
    return NewEvent(kind=kind, ts=ts, lane_id=lane_id, data=data, key=key)


def st(run_id: str, seq: int, **data: Any) -> RunState:
    """Build a state with fixed timestamps so that equal calls build equal states.

    Args:
        run_id: The run.
        seq: The last event seq the state includes.
        **data: The state's data.

    Returns:
        The state.

    """
    return RunState(run_id=run_id, seq=seq, data=data, created_at=1.5, updated_at=2.5 + seq)


def covering(state: RunState, seq: int) -> RunState:
    """The state as ``append`` stores it: the same, but covering up to ``seq``.

    Args:
        state: The snapshot passed to ``append``.
        seq: The last seq the append assigned.

    Returns:
        The state the store should return.

    """
    return RunState.from_dict({**state.to_dict(), "seq": seq})


def raw_event(**fields: Any) -> PAEvent:
    """An event built without validation, as a caller bypassing pydantic could.

    Args:
        **fields: Fields that replace the defaults of a valid event.

    Returns:
        The unvalidated event.

    """
    base = {"run_id": "r", "seq": 1, "kind": EventKind.CUSTOM, "ts": 1.0, "lane_id": "main"}
    return PAEvent.model_construct(**{**base, "data": {}, **fields})


def raw_state(**fields: Any) -> RunState:
    """A state built without validation, as a caller bypassing pydantic could.

    Args:
        **fields: Fields that replace the defaults of a valid state.

    Returns:
        The unvalidated state.

    """
    base = {"run_id": "r", "seq": 1, "status": RunStatus.RUNNING, "created_at": 1.0}
    return RunState.model_construct(**{**base, "updated_at": 1.0, "data": {}, **fields})


def raw_new_event(**fields: Any) -> NewEvent:
    """An event to append built without validation, as a caller bypassing pydantic could.

    Args:
        **fields: Fields that replace the defaults of a valid event.

    Returns:
        The unvalidated event.

    """
    base = {"kind": EventKind.CUSTOM, "ts": 1.0, "lane_id": "main", "key": None}
    return NewEvent.model_construct(**{**base, "data": {}, **fields})


def nested(depth: int) -> Any:
    """A value nested ``depth`` levels deep, alternating lists and dicts.

    Args:
        depth: How many containers wrap the leaf.

    Returns:
        The nested value.

    """
    value: Any = "leaf"
    for i in range(depth):
        value = {"d": value} if i % 2 else [value]
    return value


# Values that must come back bit for bit; rows check them with repr() as well as ==, because
# -0.0 == 0.0 and 1 == 1.0 would hide a lossy round trip.
EXACT_VALUES: dict[str, Any] = {
    "key_order": {"z": 1, "a": 2, "m": {"y": None, "b": [3, 2, 1]}},
    "negative_zero": -0.0,
    "floats": [0.1, 1e-310, 5e-324, 1.7976931348623157e308, -2.5, 1e16, 123456789.123456789],
    "float_vs_int": [1.0, 1, 0, 0.0, -1.0],
    "big_ints": [2**63, -(2**63) - 1, 2**64 + 1, 10**100, -(10**300)],
    "longest_int": int("9" * 4300),
    "nul": "a\x00b",
    "nul_key": {"k\x00": "\x00"},
    "unicode": "héllo ✓ 🙂 \u200d \ufeff \U0010ffff",
    "lone_surrogate": "\ud800x\udfff",
    "controls": "".join(chr(c) for c in range(32)) + "\x7f",
    "escapes": '"\\/\b\f\n\r\t',
    "bools_none": [True, False, None, [], {}],
    "empty": "",
}

_contains_itself: dict[str, Any] = {}
_contains_itself["self"] = _contains_itself


class _OddKey(str):
    """A str that hashes otherwise than its text: as a key, the loaded dict would miss it."""

    def __hash__(self) -> int:
        return hash(("odd", str.__str__(self)))


# Values that are not JSON; every store refuses them before writing anything.
NOT_JSON: dict[str, Any] = {
    "object": object(),
    "set": {1, 2},
    "tuple": (1, 2),
    "bytes": b"abc",
    "nan": float("nan"),
    "inf": float("inf"),
    "minus_inf": float("-inf"),
    "int_key": {1: "a"},
    "none_key": {None: "a"},
    # It would come back as the str "k", which the loaded dict would find by another hash.
    "odd_str_key": {_OddKey("k"): "a"},
    "nested_bad": {"a": [{"b": [1, {2, 3}]}]},
    "too_many_digits": 10**4300,
    "exception": ValueError("x"),
    "contains_itself": _contains_itself,
    "too_deep": nested(2000),
    # JSON writes a pair as it writes the character it encodes: it would come back as that.
    "surrogate_pair": "\ud83d\ude00",
    "surrogate_pair_key": {"\ud83d\ude00": 1},
}

# Run ids every method refuses with InvalidRunId, reads included.
BAD_RUN_IDS: dict[str, Any] = {
    "empty": "",
    "too_long": "r" * 256,
    "slash": "a/b",
    "backslash": "a\\b",
    "dot": ".",
    "dotdot": "..",
    "parent_escape": "../../etc",
    "nul": "a\x00b",
    "newline": "a\nb",
    "tab": "a\tb",
    "del": "a\x7fb",
    "c1_control": "a\x85b",
    "lone_surrogate": "a\ud800b",
    "not_a_str": 123,
}
