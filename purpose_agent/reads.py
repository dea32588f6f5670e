"""Bounded reads of a run's log: a seq window, newest first, by kind and lane, with a limit.

``list_events`` takes these as keyword arguments on every store. The SQL store turns them into
one query the database answers from the primary key; the memory and JSONL stores stream the
run through :meth:`EventWindow.select`, which keeps at most ``limit`` events in memory.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import NamedTuple

from purpose_agent.errors import InvalidInput
from purpose_agent.records import BOUND, check_limit, check_since
from purpose_agent.runtime.events import EventKind, PAEvent, storable_lane


class EventWindow(NamedTuple):
    """Which events of a run a bounded read returns.

    A named tuple rather than a frozen dataclass: one is built per read, and a frozen
    dataclass's constructor costs several times a tuple's.

    Attributes:
        since_seq: Only events with a larger seq.
        before: Only events with a smaller seq; ``None`` for no upper bound.
        limit: At most this many events; ``None`` for all.
        newest_first: Descending seq: with ``limit``, the newest events of the window.
        kinds: Only events of these kinds (their stored strings); ``None`` for any kind.
        lanes: Only events in these lanes; ``None`` for any lane.

    """

    since_seq: int = 0
    before: int | None = None
    limit: int | None = None
    newest_first: bool = False
    kinds: frozenset[str] | None = None
    lanes: frozenset[str] | None = None

    @property
    def plain(self) -> bool:
        """Whether only ``since_seq`` and ``limit`` are set: the read every store answers first."""
        return (
            self.before is None
            and not self.newest_first
            and self.kinds is None
            and self.lanes is None
        )

    @property
    def empty(self) -> bool:
        """Whether nothing can match, so no store needs to read anything."""
        return (
            self.limit == 0
            or self.since_seq >= BOUND
            or (self.before is not None and self.before <= self.since_seq + 1)
            or self.kinds == frozenset()
            or self.lanes == frozenset()
        )

    def matches(self, event: PAEvent) -> bool:
        """Whether an event inside the seq bounds passes the kind and lane filters."""
        return (self.kinds is None or event.kind.value in self.kinds) and (
            self.lanes is None or event.lane_id in self.lanes
        )

    def select(self, ascending: Iterable[PAEvent]) -> list[PAEvent]:
        """Apply the window to a run's events given in ascending seq from ``since_seq`` on.

        Stops reading at ``before``; newest first with a limit keeps only the last ``limit``
        matches while it reads.
        """
        kept: collections.deque[PAEvent] | list[PAEvent]
        kept = collections.deque(maxlen=self.limit) if self.newest_first else []
        for event in ascending:
            if self.before is not None and event.seq >= self.before:
                break
            if not self.matches(event):
                continue
            kept.append(event)
            if not self.newest_first and self.limit is not None and len(kept) >= self.limit:
                break
        return list(reversed(kept)) if self.newest_first else list(kept)


def event_window(
    since_seq: object,
    limit: object,
    before: object,
    newest_first: object,
    kinds: object,
    lanes: object,
) -> EventWindow:
    """Check the arguments of a bounded read.

    Raises:
        InvalidInput: An argument of the wrong type or out of range; nothing was read.

    """
    if (
        kinds is None
        and lanes is None
        and type(since_seq) is int
        and -BOUND <= since_seq <= BOUND
        and (limit is None or (type(limit) is int and 0 <= limit <= BOUND))
        and (before is None or (type(before) is int and 0 <= before <= BOUND))
        and type(newest_first) is bool
    ):
        # The usual read, valid as given: the checks below would return it as it is.
        return EventWindow(since_seq, before, limit, newest_first)
    since = check_since(since_seq)
    bounded = check_limit(limit)
    if before is not None and type(before) is not int:
        raise InvalidInput(f"before must be None or an int, not {type(before).__name__}")
    if type(newest_first) is not bool:
        raise InvalidInput(f"newest_first must be a bool, not {type(newest_first).__name__}")
    # Every seq is in 1..BOUND: a bound past that range selects what it selects within it.
    if before is not None and before > BOUND:
        before = None
    return EventWindow(
        since,
        None if before is None else max(before, 0),
        bounded,
        newest_first,
        None if kinds is None else _kinds(kinds),
        None if lanes is None else _lanes(lanes),
    )


def _strings(values: object, what: str) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidInput(f"{what} must be an iterable of str (a list or set), not {values!r}")
    found = frozenset(values)
    for value in found:
        if type(value) is not str:
            raise InvalidInput(f"{what} must hold str values, not {value!r}")
    return found


def _lanes(values: object) -> frozenset[str] | None:
    """The lanes to read, without those no event can be in: they match nothing anyway."""
    lanes = _strings(values, "lanes")
    if lanes is None:
        return None
    return frozenset(lane for lane in lanes if storable_lane(lane))


def _kinds(values: object) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidInput(f"kinds must be an iterable of EventKind, not {values!r}")
    found = set()
    for value in values:
        try:
            found.add(EventKind(value).value)
        except ValueError as exc:
            raise InvalidInput(f"kinds holds {value!r}, which is not an EventKind") from exc
    return frozenset(found)
