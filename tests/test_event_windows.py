"""``event_window``: a read's arguments, checked; the usual ones taken as they are."""

from __future__ import annotations

from typing import Any

import pytest

from purpose_agent import InvalidInput
from purpose_agent.reads import EventWindow, event_window
from purpose_agent.records import BOUND

ARGUMENTS = ("since_seq", "limit", "before", "newest_first", "kinds", "lanes")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((0, None, None, False, None, None), EventWindow(0, None, None, False)),
        ((0, 1, None, True, None, None), EventWindow(0, None, 1, True)),
        ((5, 64, 70, True, None, None), EventWindow(5, 70, 64, True)),
        ((-BOUND, BOUND, BOUND, False, None, None), EventWindow(-BOUND, BOUND, BOUND, False)),
        # Past the range every seq is in: the same events, bounds within it.
        ((-BOUND - 5, None, None, False, None, None), EventWindow(-BOUND, None, None, False)),
        ((BOUND + 5, None, None, False, None, None), EventWindow(BOUND, None, None, False)),
        ((0, BOUND + 5, None, False, None, None), EventWindow(0, None, BOUND, False)),
        ((0, None, BOUND + 1, True, None, None), EventWindow(0, None, None, True)),
        ((0, None, -3, True, None, None), EventWindow(0, 0, None, True)),
        (
            (0, 2, None, True, ["custom"], None),
            EventWindow(0, None, 2, True, frozenset({"custom"})),
        ),
        (
            (0, 2, None, False, None, ["lg", "lg"]),
            EventWindow(0, None, 2, False, None, frozenset({"lg"})),
        ),
    ],
)
def test_a_window_is_what_its_arguments_select(
    given: tuple[Any, ...], expected: EventWindow
) -> None:
    found = event_window(*given)
    assert found == expected
    assert [type(part) for part in found] == [type(part) for part in expected]


@pytest.mark.parametrize(
    "given",
    [
        (True, None, None, False, None, None),
        (1.0, None, None, False, None, None),
        (0, -1, None, False, None, None),
        (0, True, None, False, None, None),
        (0, None, True, False, None, None),
        (0, None, 2.0, False, None, None),
        (0, None, None, 1, None, None),
        (0, None, None, None, None, None),
        (0, None, None, False, "custom", None),
        (0, None, None, False, None, "lg"),
    ],
)
def test_a_window_of_wrong_arguments_is_refused(given: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidInput):
        event_window(*given)
