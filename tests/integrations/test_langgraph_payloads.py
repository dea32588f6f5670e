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


@pytest.mark.parametrize(
    ("writes", "usual"),
    [
        ([[0, "a", 1], [1, "b", [2]]], True),
        ([[-3, "x", 1], [0, "a", 1]], True),
        ([], True),
        ([[1, "b", 2], [0, "a", 1]], False),
        ([[0, "a", 1], [0, "a", 2]], False),
        ([[-1, "x", 1], [-1, "x", 2]], False),
        ([[0, "a"]], False),
        ([[0, 1, "a"]], False),
    ],
)
def test_the_usual_writes_run_reads_as_the_rule_says(writes: list[Any], usual: bool) -> None:
    """``one_task`` (a checkpoint read's shortcut) agrees with ``writes``, or leaves it to it."""
    event = task_writes(1, writes)
    one = payloads.one_task(event)
    if not usual:
        assert one is None
        return
    assert one is not None
    task, seq, found = one
    expected = [(w.task, w.channel, w.value, w.seq) for w in payloads.writes([event]).pending]
    assert [(task, channel, value, seq) for channel, value in found] == expected


def test_markers_and_damaged_writes_are_not_the_usual_writes_run() -> None:
    for data in ({"langgraph": "deleted"}, {"langgraph": "unparented"}, {"other": 1}):
        assert payloads.one_task(stored(1, data)) is None
    assert payloads.one_task(task_writes(1, [[0, "a", 1]], path=None)) is None
