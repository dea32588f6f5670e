"""Capability.BOUNDED_READS: ``list_events`` bounded by seq window, order, kind and lane."""

from __future__ import annotations

from typing import ClassVar, cast

from purpose_agent import Checkpointer, EventKind, InvalidInput, PAEvent
from purpose_agent.protocol import BoundedReads
from purpose_agent.testing.capabilities import Capability
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.needs_pytest import pytest
from purpose_agent.testing.samples import ev

_KINDS = (EventKind.MODEL_REQUEST, EventKind.TOOL_CALL, EventKind.TOOL_RESULT)


def _mixed_run(
    cp: Checkpointer, lanes: tuple[str, ...] = ("side", "main"), count: int = 12
) -> list[PAEvent]:
    """Events cycling through three kinds and the lanes, saved out of order."""
    events = [
        PAEvent(
            run_id="r",
            seq=seq,
            kind=_KINDS[seq % 3],
            ts=1_700_000_000.0 + seq,
            lane_id=lanes[seq % len(lanes)],
            data={"n": seq},
        )
        for seq in range(1, count + 1)
    ]
    half = count // 2
    cp.save_events(events[half:])
    cp.save_events(events[:half])
    cp.save_event(ev("other", 1))  # another run's events never leak into a read
    return events


class BoundedReadsSuite(Rows):
    """Reads the store bounds itself, so a caller never reads a whole run to get a page."""

    capability: ClassVar[Capability] = Capability.BOUNDED_READS

    def test_newest_first_returns_the_last_events_descending(self, cp: Checkpointer) -> None:
        events = _mixed_run(cp)
        reader = cast(BoundedReads, cp)
        assert reader.list_events("r", newest_first=True) == events[::-1]
        assert reader.list_events("r", newest_first=True, limit=3) == events[:-4:-1]
        assert reader.list_events("r", since_seq=10, newest_first=True) == [events[11], events[10]]

    def test_before_bounds_the_window_from_above(self, cp: Checkpointer) -> None:
        events = _mixed_run(cp)
        reader = cast(BoundedReads, cp)
        assert reader.list_events("r", before=4) == events[:3]
        assert reader.list_events("r", since_seq=2, before=6) == events[2:5]
        assert reader.list_events("r", before=6, newest_first=True, limit=2) == [
            events[4],
            events[3],
        ]
        assert reader.list_events("r", since_seq=5, before=6) == []
        assert reader.list_events("r", since_seq=5, before=2) == []
        assert reader.list_events("r", before=99) == events

    def test_kinds_and_lanes_filter_inside_the_window(self, cp: Checkpointer) -> None:
        events = _mixed_run(cp)
        reader = cast(BoundedReads, cp)
        calls = [e for e in events if e.kind is EventKind.TOOL_CALL]
        assert reader.list_events("r", kinds=[EventKind.TOOL_CALL]) == calls
        assert reader.list_events("r", kinds={"tool_call"}) == calls  # the stored strings too
        side = [e for e in events if e.lane_id == "side"]
        assert reader.list_events("r", lanes=["side"]) == side
        both = [e for e in side if e.kind in (EventKind.TOOL_CALL, EventKind.TOOL_RESULT)]
        assert (
            reader.list_events(
                "r",
                kinds=(EventKind.TOOL_CALL, EventKind.TOOL_RESULT),
                lanes=["side"],
                newest_first=True,
                limit=2,
            )
            == both[:-3:-1]
        )
        assert reader.list_events("r", kinds=[]) == []
        assert reader.list_events("r", lanes=["nowhere"]) == []
        assert reader.list_events("r", kinds=[EventKind.TOOL_CALL], limit=1) == calls[:1]

    def test_bounds_and_lanes_no_event_can_have_select_what_they_select(
        self, cp: Checkpointer
    ) -> None:
        # No stored seq reaches 2**63 and no stored lane holds NUL or a surrogate or is longer
        # than 255 characters: such arguments are answered, never passed to a driver that
        # cannot take them.
        events = _mixed_run(cp)
        reader = cast(BoundedReads, cp)
        for huge in (2**63, 2**64, 10**30):
            assert reader.list_events("r", before=huge) == events
            assert (
                reader.list_events("r", before=huge, newest_first=True, limit=huge)
                == (events[::-1])
            )
            assert reader.list_events("r", before=-huge) == []
        impossible = ["\ud800", "a\x00", "\ud83d\ude00", "x" * 256]
        assert reader.list_events("r", lanes=impossible) == []
        side = [e for e in events if e.lane_id == "side"]
        assert reader.list_events("r", lanes=["side", *impossible]) == side

    def test_a_lane_filter_of_any_length_selects_the_lanes_it_names(self, cp: Checkpointer) -> None:
        # More lanes than a statement may have parameters (65,535 on Postgres, 32,766 by
        # default on SQLite) are still a filter, answered like a short one. The lanes differ
        # from stored ones only in case, trailing space or escaping, which must not match.
        lanes = ("main", "side", "Side", "side ", 'q"uote', "back\\slash", "é", "😀", "t\tab")
        events = _mixed_run(cp, lanes, 27)
        reader = cast(BoundedReads, cp)
        absent = [f"absent-{index}" for index in range(70_000)]
        for named in (["side"], ["side", 'q"uote', "é", "😀"], list(lanes[2:])):
            chosen = [e for e in events if e.lane_id in named]
            for others in (absent[:31], absent[:32], absent):
                assert reader.list_events("r", lanes=[*others, *named]) == chosen
            calls = [e for e in chosen if e.kind is EventKind.TOOL_CALL]
            assert reader.list_events("r", lanes=named + absent, kinds=["tool_call"]) == calls
            assert (
                reader.list_events("r", lanes=absent + named, newest_first=True, limit=2)
                == chosen[:-3:-1]
            )
        assert reader.list_events("r", lanes=absent) == []

    @pytest.mark.parametrize(
        "arguments",
        [
            {"before": "5"},
            {"before": 2.0},
            {"newest_first": 1},
            {"kinds": "tool_call"},
            {"kinds": ["no_such_kind"]},
            {"lanes": "main"},
            {"lanes": [1]},
            {"limit": -1},
        ],
        ids=repr,
    )
    def test_a_bad_bound_is_invalid_input(
        self, cp: Checkpointer, arguments: dict[str, object]
    ) -> None:
        cp.save_event(ev("r", 1))
        with pytest.raises(InvalidInput):
            cast(BoundedReads, cp).list_events("r", **arguments)  # type: ignore[arg-type]
