"""Which stored writes count: a writes run of one event reads as the rule for many says."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.base")

from purpose_agent import CorruptRecord, EventKind, PAEvent
from purpose_agent.integrations.langgraph import payloads

RUN = "lgw:t::c"


def stored(seq: int, data: dict[str, Any]) -> PAEvent:
    return PAEvent(run_id=RUN, seq=seq, kind=EventKind.CUSTOM, lane_id="lg", data=data)


def task_writes(seq: int, writes: list[list[Any]], **extra: Any) -> PAEvent:
    return stored(seq, {"langgraph": "writes", "task": "t", "path": "", "writes": writes, **extra})


def shown(found: payloads.Writes) -> tuple[bool, list[tuple[int, str, Any]], bool]:
    return found.deleted, [(w.idx, w.channel, w.value) for w in found.pending], found.unparented


@pytest.mark.parametrize(
    ("writes", "expected"),
    [
        ([[0, "a", 1], [1, "b", 2]], [(0, "a", 1), (1, "b", 2)]),
        ([[1, "b", 2], [0, "a", 1]], [(0, "a", 1), (1, "b", 2)]),
        # A regular write keeps its first value, a special one (negative idx) its last.
        ([[0, "a", 1], [0, "a", 2]], [(0, "a", 1)]),
        ([[-1, "x", 1], [-1, "x", 2]], [(-1, "x", 2)]),
        ([[0, "a", 1], [-3, "x", 1], [-3, "x", 2]], [(-3, "x", 2), (0, "a", 1)]),
        ([], []),
    ],
)
def test_one_event_s_writes_count_as_among_many(
    writes: list[list[Any]], expected: list[tuple[int, str, Any]]
) -> None:
    alone = payloads.writes([task_writes(1, writes)])
    assert shown(alone) == (False, expected, False)
    # The same event after a marker that changes nothing reads the same.
    marker = stored(1, {"langgraph": "retracted", "run": "other"})
    assert shown(payloads.writes([marker, task_writes(2, writes)])) == shown(alone)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"langgraph": "deleted"}, (True, [], False)),
        ({"langgraph": "unparented"}, (False, [], True)),
        ({"langgraph": "retracted", "run": "r"}, (False, [], False)),
        ({"other": 1}, (False, [], False)),
    ],
)
def test_a_run_of_one_marker_reads_as_the_marker_says(
    data: dict[str, Any], expected: tuple[bool, list[Any], bool]
) -> None:
    assert shown(payloads.writes([stored(1, data)])) == expected
    assert shown(payloads.writes([])) == (False, [], False)


def test_damaged_writes_alone_in_their_run_raise() -> None:
    with pytest.raises(CorruptRecord):
        payloads.writes([task_writes(1, [[0, "a"]])])
