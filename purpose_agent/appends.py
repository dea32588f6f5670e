"""What every store shares for appends, keys, groups and retention: checks and decisions.

A store appends in its own way (a locked row, a file lock, a dict under a lock), but the rules
are the same everywhere, so they live here once: how a :class:`NewEvent` is checked and encoded,
when a keyed event counts as already stored, what ``expected_last_seq`` refuses, and which runs a
``delete_runs`` call selects.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pydantic import TypeAdapter, ValidationError

from purpose_agent.codec import encode
from purpose_agent.errors import InvalidInput, SequenceConflict
from purpose_agent.records import (
    EventRow,
    StateRow,
    check_limit,
    check_page,
    check_run_id,
    same_data,
    state_row,
)
from purpose_agent.runtime.events import SEQ_LIMIT, CheckedFields, EventKey, NewEvent, refusal
from purpose_agent.runtime.state import RunState

_KEY = TypeAdapter(EventKey)


class Draft(NamedTuple):
    """A :class:`NewEvent` checked and encoded, waiting for its seq."""

    kind: str
    ts: float
    lane_id: str
    data: str
    key: str | None

    def at(self, run_id: str, seq: int) -> EventRow:
        """The row this draft becomes at ``seq``."""
        return EventRow(run_id, seq, self.kind, self.ts, self.lane_id, self.data)

    def same_as(self, row: EventRow) -> bool:
        """Whether a stored row is this event: same kind, lane and data (``ts`` is not compared).

        A caller retrying an append may rebuild its events, which gives them a new ``ts``; the
        key says which event is meant, and the content says whether it is the same one.

        Raises:
            CorruptRecord: If they differ and the stored row does not decode.

        """
        if self.kind == row.kind and self.lane_id == row.lane_id and same_data(row.data, self.data):
            return True
        row.check_decodes()  # a damaged row is a CorruptRecord, not another event
        return False


def drafts(run_id: str, events: Iterable[NewEvent]) -> list[Draft]:
    """Check and encode the events of an append.

    Raises:
        InvalidInput: No events, a value that is not a ``NewEvent``, a field that cannot be
            stored exactly, or one key given to two events.

    """
    if isinstance(events, NewEvent | str | bytes | dict):
        raise InvalidInput("append takes an iterable of NewEvent, not a single value")
    try:
        each = iter(events)
    except TypeError:
        raise InvalidInput(
            f"append takes an iterable of NewEvent, not {type(events).__name__}"
        ) from None
    out: list[Draft] = []
    keys: set[str] = set()
    for event in each:
        if not isinstance(event, NewEvent):
            raise InvalidInput(f"append takes NewEvent values, got {type(event).__name__}")
        fields = event.__dict__
        if type(fields) is not CheckedFields:
            try:
                fields = NewEvent.__pydantic_validator__.validate_python(fields).__dict__
            except ValidationError as exc:
                raise refusal(NewEvent, exc) from None
        key = fields["key"]
        if key is not None:
            if key in keys:
                raise InvalidInput(f"run {run_id!r}: key {key!r} is given to two events")
            keys.add(key)
        try:
            data = encode(fields["data"])
        except InvalidInput as exc:
            raise InvalidInput(f"run {run_id!r}, appended event {len(out) + 1}: {exc}") from exc
        out.append(Draft(fields["kind"].value, fields["ts"], fields["lane_id"], data, key))
    if not out:
        raise InvalidInput(f"run {run_id!r}: append needs at least one event")
    return out


def check_expected(expected_last_seq: object) -> int | None:
    """Refuse an ``expected_last_seq`` that is not ``None`` or a seq a run can have."""
    if expected_last_seq is None:
        return None
    if type(expected_last_seq) is not int or not 0 <= expected_last_seq < SEQ_LIMIT:
        raise InvalidInput(
            f"expected_last_seq must be None or an int from 0, not {expected_last_seq!r}"
        )
    return expected_last_seq


def check_label(value: object, what: str) -> str:
    """Refuse a group name or key that no backend could keep exactly."""
    try:
        checked: str = _KEY.validate_python(value)
    except ValidationError:
        raise InvalidInput(
            f"{what} must be 1 to 255 characters of text without NUL, not {value!r}"
        ) from None
    return checked


def check_run_listing(
    limit: object, offset: object, group: object, prefix: object
) -> tuple[int | None, int, str | None, str | None]:
    """Check the arguments of ``list_runs``: a page and the optional group and prefix.

    Returns:
        The limit (``None`` for all), the offset, the group and the prefix (as
        :func:`check_prefix` returns it), ``None`` for a filter not given.

    Raises:
        InvalidInput: A negative or non-int ``limit`` or ``offset``, or a malformed group or
            prefix.

    """
    limit, offset = check_page(limit, offset)
    if group is not None:
        group = check_label(group, "group")
    if prefix is not None:
        prefix = check_prefix(prefix)
    return limit, offset, group, prefix


# What a prefix that no run id can start with becomes: "/" is in no run id either, and it is
# text every database takes, where a NUL or a surrogate would fail in the driver.
NO_RUN_PREFIX = "/"


def check_prefix(prefix: object) -> str:
    r"""Refuse a run id prefix that is not a string (``""`` selects every run).

    Returns:
        The prefix, or :data:`NO_RUN_PREFIX` if it holds a character no run id has (a control
        character, a surrogate, ``/`` or ``\``): it selects no run, on every store.

    """
    if type(prefix) is not str or len(prefix) > 255:
        raise InvalidInput(f"prefix must be a str of at most 255 characters, not {prefix!r}")
    if prefix and not _could_start_a_run_id(prefix):
        return NO_RUN_PREFIX
    return prefix


# What no run id holds (see RunId): control characters, surrogates, "/" and "\".
_NOT_IN_RUN_IDS = re.compile(r"[\x00-\x1f\x7f-\x9f/\\\ud800-\udfff]")


def _could_start_a_run_id(prefix: str) -> bool:
    return _NOT_IN_RUN_IDS.search(prefix) is None


class Placement(NamedTuple):
    """What an append writes, decided against what the run holds.

    Attributes:
        rows: The new events with their seqs, in the order given.
        keys: Each new row's key, or ``None``.
        result: Every event of the call, as stored (existing keyed events keep their seq).
        last_seq: The run's last seq after the append.

    """

    rows: list[EventRow]
    keys: list[str | None]
    result: list[EventRow]
    last_seq: int


def place(
    run_id: str,
    items: Sequence[Draft],
    last_seq: int,
    stored: Mapping[str, EventRow],
    expected_last_seq: int | None,
) -> Placement:
    """Decide the seqs of an append: keyed events already stored are not written again.

    Args:
        run_id: The run.
        items: The checked events.
        last_seq: The run's last seq, read under the run's write lock.
        stored: The run's stored events with the keys among ``items``, by key.
        expected_last_seq: The caller's expectation, or ``None``.

    Raises:
        SequenceConflict: A key is stored with other content, or some event is new and the
            run's last seq is not ``expected_last_seq``.

    """
    rows: list[EventRow] = []
    keys: list[str | None] = []
    result: list[EventRow] = []
    next_seq = last_seq
    for item in items:
        old = stored.get(item.key) if item.key is not None else None
        if old is not None:
            if not item.same_as(old):
                raise SequenceConflict(
                    run_id,
                    old.seq,
                    f"run {run_id!r} already has a different event with key {item.key!r} "
                    f"(at seq {old.seq}); nothing was written",
                )
            result.append(old)
            continue
        next_seq += 1
        row = item.at(run_id, next_seq)
        rows.append(row)
        keys.append(item.key)
        result.append(row)
    if rows and expected_last_seq is not None and expected_last_seq != last_seq:
        raise SequenceConflict(
            run_id,
            expected_last_seq + 1,
            f"run {run_id!r} has last seq {last_seq}, not the expected {expected_last_seq}: "
            "another writer appended first; nothing was written",
        )
    if next_seq >= SEQ_LIMIT:
        raise InvalidInput(f"run {run_id!r} has no seq left below 2**63")
    return Placement(rows, keys, result, next_seq)


def snapshot_row(run_id: str, snapshot: RunState | None, seq: int) -> StateRow | None:
    """The snapshot of an append, at the last seq the append leaves the run with.

    Raises:
        InvalidInput: ``snapshot`` is not a ``RunState`` of ``run_id``, or cannot be stored.

    """
    if snapshot is None:
        return None
    if not isinstance(snapshot, RunState):
        raise InvalidInput(f"expected a RunState, got {type(snapshot).__name__}")
    return state_row(run_id, snapshot.model_copy(update={"seq": seq}))


@dataclass(frozen=True)
class RunFilter:
    """Which runs a ``delete_runs`` call selects.

    Attributes:
        run_ids: Only these runs; ``None`` for any.
        group: Only runs of this group.
        prefix: Only runs whose id starts with this.
        cutoff_ns: Only runs last written before this stamp (nanoseconds).
        keep_newest: Spare this many, the most recently written of the runs the id, group
            and prefix filters select.

    """

    run_ids: frozenset[str] | None = None
    group: str | None = None
    prefix: str | None = None
    cutoff_ns: int | None = None
    keep_newest: int | None = None

    def scoped(self, run_id: str, group: str | None) -> bool:
        """Whether a run is in scope of the id, group and prefix filters."""
        return (
            (self.run_ids is None or run_id in self.run_ids)
            and (self.group is None or group == self.group)
            and (self.prefix is None or run_id.startswith(self.prefix))
        )

    def choose(self, scoped: Sequence[tuple[str, int]]) -> list[str]:
        """The runs to delete among those in scope, given as ``(run_id, written_ns)``.

        Returns:
            Their ids, sorted.

        """
        newest = sorted(scoped, key=lambda run: (-run[1], run[0]))
        if self.keep_newest is not None:
            newest = newest[self.keep_newest :]
        return sorted(
            run_id
            for run_id, written in newest
            if self.cutoff_ns is None or written < self.cutoff_ns
        )


def run_filter(
    run_ids: Iterable[str] | None,
    group: str | None,
    prefix: str | None,
    older_than: timedelta | datetime | None,
    keep_newest: int | None,
    now_ns: int | None = None,
) -> RunFilter:
    """Check the filters of ``delete_runs``.

    Raises:
        InvalidInput: No filter, or a filter of the wrong type.

    """
    if (run_ids, group, prefix, older_than, keep_newest) == (None,) * 5:
        raise InvalidInput(
            "delete_runs needs a filter: run_ids, group, prefix, older_than or keep_newest "
            '(prefix="" selects every run)'
        )
    if isinstance(run_ids, str):
        raise InvalidInput("run_ids takes an iterable of run ids, not a single str")
    ids = frozenset(check_run_id(run_id) for run_id in run_ids) if run_ids is not None else None
    if keep_newest is not None:
        keep_newest = check_limit(keep_newest, "keep_newest")  # capped where no count reaches
    return RunFilter(
        run_ids=ids,
        group=check_label(group, "group") if group is not None else None,
        prefix=check_prefix(prefix) if prefix is not None else None,
        cutoff_ns=cutoff_ns(older_than, now_ns) if older_than is not None else None,
        keep_newest=keep_newest,
    )


def cutoff_ns(older_than: timedelta | datetime | Any, now_ns: int | None = None) -> int:
    """The write stamp before which a run is old: a time, or an age before now.

    Raises:
        InvalidInput: Neither a ``timedelta`` nor an aware or naive ``datetime``, or a
            negative age (a moment still to come: every run would be old, even one being
            written; a time in the future says so on purpose).

    """
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise InvalidInput(
                f"older_than must not be a negative age, got {older_than}; to delete every run "
                "pass timedelta(0)"
            )
        now = time.time_ns() if now_ns is None else now_ns
        return _stamp(now - int(older_than / timedelta(microseconds=1)) * 1000)
    if isinstance(older_than, datetime):
        try:
            micros = int(older_than.timestamp() * 1_000_000)
        except (ValueError, OverflowError, OSError):
            # A naive time is local, and the platform converts none near year 1 or 9999
            # (``datetime.min``: "year 0 is out of range"); at that distance the hours of a
            # time zone change nothing, so it is taken as it reads.
            naive = older_than.replace(tzinfo=None)
            micros = (naive - datetime(1970, 1, 1)) // timedelta(microseconds=1)
        return _stamp(micros * 1000)
    raise InvalidInput(f"older_than takes a timedelta or a datetime, not {older_than!r}")


def _stamp(ns: int) -> int:
    """A moment within the 64 bits a write stamp is stored in.

    An age of a million years, or ``datetime.max``, still means what it says (no run is
    that old; every run is older) instead of overflowing the database's integer.
    """
    return max(-(2**63), min(ns, 2**63 - 1))


class Undecided(Exception):
    """An append (or a pipelined batch of them) that only a full transaction can decide."""
