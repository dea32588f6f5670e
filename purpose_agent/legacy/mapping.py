"""Reading what the seed module wrote: its events and snapshots mapped onto today's values.

The seed stored ``PAEvent.to_dict()`` and ``RunState.to_dict()`` of classes whose exact fields
this package does not know, it let ``json.dumps(default=str)`` turn anything into a string, and
its snapshots said nothing about the events they covered. Mapping is therefore lenient where
nothing is lost (a missing ``seq`` is 0, so recovery replays every event) and says what it
could not map instead of dropping it quietly: every decision is counted in :class:`MappingNotes`
so that a copy can report it.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from pydantic import ValidationError

from purpose_agent.errors import CorruptRecord
from purpose_agent.records import _KINDS, _STATUSES
from purpose_agent.runtime.events import EventKind, PAEvent
from purpose_agent.runtime.state import RunState, RunStatus

_EVENT_FIELDS = frozenset(("run_id", "seq", "kind", "ts", "lane_id", "data"))
_STATE_FIELDS = frozenset(("run_id", "seq", "status", "created_at", "updated_at", "data"))
# Words other status enums use for the same three states.
_STATUS_SYNONYMS = {
    "completed": RunStatus.FINISHED,
    "complete": RunStatus.FINISHED,
    "done": RunStatus.FINISHED,
    "succeeded": RunStatus.FINISHED,
    "success": RunStatus.FINISHED,
    "error": RunStatus.FAILED,
    "errored": RunStatus.FAILED,
    "crashed": RunStatus.FAILED,
    "pending": RunStatus.RUNNING,
    "started": RunStatus.RUNNING,
    "in_progress": RunStatus.RUNNING,
}
SEED_FIELDS_KEY = "_seed"
SEED_KIND_KEY = "seed_kind"


class MappingNotes:
    """What could not be carried over exactly, counted per kind of problem.

    Counting (rather than listing every record) keeps memory flat on a log of millions of
    events while still telling the user what happened and how often.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, note: str) -> None:
        """Count one occurrence of ``note``."""
        with self._lock:
            self._counts[note] += 1

    def counts(self) -> dict[str, int]:
        """Return each note with how many records it applied to."""
        with self._lock:
            return dict(self._counts)

    def reset_to(self, counts: dict[str, int]) -> None:
        """Go back to ``counts`` (from :meth:`counts`): a record read again is counted once."""
        with self._lock:
            self._counts = Counter(counts)


def _number(value: object) -> float | None:
    if type(value) in (int, float):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _seed_status(raw: object, notes: MappingNotes) -> RunStatus:
    if isinstance(raw, str):
        status = _STATUSES.get(raw)
        if status is not None:
            return status
        status = _STATUS_SYNONYMS.get(raw.lower())
        if status is not None:
            notes.add(f"snapshot status {raw!r} stored as {status.value!r}")
            return status
    notes.add(f"snapshot status {raw!r} unknown: stored as 'running'")
    return RunStatus.RUNNING


def _seed_data(record: dict[str, Any], notes: MappingNotes) -> dict[str, Any]:
    extra = {key: value for key, value in record.items() if key not in _STATE_FIELDS}
    data = record.get("data")
    if isinstance(data, dict):
        if extra:
            notes.add(
                f"snapshot fields {', '.join(sorted(extra))} kept under data[{SEED_FIELDS_KEY!r}]"
            )
            return {**data, SEED_FIELDS_KEY: extra}
        return data
    if data is not None:
        extra["data"] = data
    if extra:
        notes.add(f"snapshot fields {', '.join(sorted(extra))} kept as the keys of data")
    return extra


def map_seed_state(run_id: str, record: object, notes: MappingNotes) -> RunState:
    """Build a :class:`RunState` from a snapshot the seed wrote.

    Args:
        run_id: The run the snapshot was stored under.
        record: The decoded JSON of the snapshot.
        notes: Where to count what was not mapped exactly.

    Returns:
        The state. Fields this package does not know are kept, under ``data["_seed"]`` when the
        snapshot has a ``data`` object, else as the keys of ``data``.

    Raises:
        CorruptRecord: If the snapshot is not a JSON object or belongs to another run.

    """
    if type(record) is not dict:
        kind = type(record).__name__
        raise CorruptRecord(run_id, None, f"seed snapshot is a {kind}, not an object")
    stored_id = record.get("run_id", run_id)
    if stored_id != run_id:
        raise CorruptRecord(run_id, None, f"seed snapshot belongs to run {stored_id!r}")
    seq = record.get("seq")
    if type(seq) is not int or seq < 0:
        notes.add("snapshot without a valid seq: taken as 0, so recovery replays every event")
        seq = 0
    times = {}
    for name in ("created_at", "updated_at"):
        number = _number(record.get(name))
        if number is None:
            # 0.0 rather than "now": copying twice must write the same snapshot twice.
            notes.add(f"snapshot without a numeric {name}: stored as 0.0")
            number = 0.0
        times[name] = number
    status = _seed_status(record.get("status"), notes)
    data = _seed_data(record, notes)
    try:
        return RunState(run_id=run_id, seq=seq, status=status, data=data, **times)
    except ValidationError as exc:
        raise CorruptRecord(run_id, seq, f"seed snapshot cannot be mapped: {exc}") from exc


def map_seed_event(
    run_id: str, seq: int, record: object, columns: dict[str, Any], notes: MappingNotes
) -> PAEvent:
    """Build a :class:`PAEvent` from an event the seed wrote.

    Args:
        run_id: The run the event was stored under.
        seq: Its position, from the row.
        record: The decoded JSON the seed stored for the event (``PAEvent.to_dict()``).
        columns: The row's own columns (``kind``, ``ts``, ``lane_id``), used where the JSON
            lacks a field.
        notes: Where to count what was not mapped exactly.

    Returns:
        The event. A kind this package does not know becomes ``custom`` with the original in
        ``data["seed_kind"]``; unknown top-level fields are dropped and counted.

    Raises:
        CorruptRecord: If the record is not an object, or names another run or seq.

    """
    if type(record) is not dict:
        raise CorruptRecord(run_id, seq, f"seed event is a {type(record).__name__}, not an object")
    if record.get("run_id", run_id) != run_id or record.get("seq", seq) != seq:
        raise CorruptRecord(run_id, seq, "seed event's JSON names another run or seq")
    data = record.get("data", {})
    if type(data) is not dict:
        notes.add("event data that is not an object: kept under data['value']")
        data = {"value": data}
    raw_kind = record.get("kind", columns.get("kind"))
    kind = _KINDS.get(raw_kind) if isinstance(raw_kind, str) else None
    if kind is None:
        notes.add(
            f"event kind {raw_kind!r} unknown: stored as 'custom' with data[{SEED_KIND_KEY!r}]"
        )
        kind = EventKind.CUSTOM
        data = {**data, SEED_KIND_KEY: raw_kind}
    ts = _number(record.get("ts", columns.get("ts")))
    if ts is None:
        notes.add("event without a numeric ts: stored as 0.0")
        ts = 0.0
    lane_id = record.get("lane_id", columns.get("lane_id")) or "main"
    for key in sorted(set(record) - _EVENT_FIELDS):
        notes.add(f"event field {key!r} not part of PAEvent: dropped")
    try:
        return PAEvent(run_id=run_id, seq=seq, kind=kind, ts=ts, lane_id=lane_id, data=data)
    except ValidationError as exc:
        raise CorruptRecord(run_id, seq, f"seed event cannot be mapped: {exc}") from exc
