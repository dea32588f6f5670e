"""Copying every run from one store to another: streamed, resumable, and checked.

Each run is read as a stream and written in batches, so memory holds one batch whatever the
size of the log. The run's snapshot is read *before* its events, so the events streamed
afterwards cover everything it covers, and it is written with the run's last batch, so a
destination never holds a snapshot ahead of the events its source holds. A source that saves
a newer snapshot during the copy (and may compact the events it covers) is read again, the
newer snapshot with the events after the last one copied.

Between the package's stores (:class:`~purpose_agent.protocol.KeyedEvents` on both sides) each
event keeps its key and each run its group: events are read with ``iter_keyed_events`` and
written at their own seqs with ``save_keyed_events``, every batch carrying the run's group, so
``event_by_key`` and ``list_runs(group=...)`` answer on the copy as on the source (a LangGraph
thread keeps its lookups by checkpoint id). A store without keys on either side (a seed-era
reader, a store written against :class:`~purpose_agent.protocol.Checkpointer` alone) is
copied through ``iter_events`` and ``save_events``, as before; keys and groups a destination
cannot keep are counted in the report's notes.

An interrupted copy is resumed by running it again: every batch is one transaction, and saving
an event equal to a stored one (with the same key) is a no-op, so nothing is duplicated; a
*different* event at a stored position, or the same event under another key, is a
``SequenceConflict``, reported for that run. At the end of each run the destination's count of
events after the snapshot is compared with the number of positions read there, and its group
with the source's. Events the snapshot covers are not counted: a source compacted since an
earlier copy no longer has them, and the destination may keep them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from purpose_agent.errors import CorruptRecord, InvalidInput, SequenceConflict, StoreReadOnly
from purpose_agent.legacy.jsonl import SeedJSONLReader
from purpose_agent.legacy.read_only import LegacyReader
from purpose_agent.ops.summaries import count_events, grouped
from purpose_agent.protocol import Checkpointer, KeyedEvent, KeyedEvents, RunGroups
from purpose_agent.runtime.state import RunState

DEFAULT_BATCH_SIZE = 500
KEYS_DROPPED = "event key dropped: the destination keeps no keys"
GROUP_DROPPED = "run group dropped: the destination keeps no groups"


@dataclass(frozen=True)
class CopyProgress:
    """Where a copy stands, passed to the progress callback after every batch.

    Attributes:
        run_id: The run being copied.
        runs_done: Runs finished so far (copied or reported as a problem).
        runs_total: Runs in the source when the copy started.
        events_done: Events written so far, over all runs.

    """

    run_id: str
    runs_done: int
    runs_total: int
    events_done: int


@dataclass(frozen=True)
class RunProblem:
    """A run that was not copied, or not completely.

    Attributes:
        run_id: The run.
        message: What went wrong, in one line.

    """

    run_id: str
    message: str


@dataclass
class CopyReport:
    """What a copy did and what it checked.

    Attributes:
        runs_total: Runs in the source.
        runs_copied: Runs copied and verified.
        events: Events read and written (re-written ones included: they are no-ops).
        snapshots: Snapshots written.
        problems: Runs that failed (a corrupt record, a conflict, a value the destination
            refuses) or whose counts did not match afterwards.
        notes: What could not be carried over exactly, with how often: seed-era data the
            source mapped, and keys or groups a destination without them dropped.

    """

    runs_total: int = 0
    runs_copied: int = 0
    events: int = 0
    snapshots: int = 0
    problems: list[RunProblem] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every run was copied and verified."""
        return not self.problems and self.runs_copied == self.runs_total


def copy_runs(
    source: Checkpointer,
    dest: Checkpointer,
    progress: Callable[[CopyProgress], None] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> CopyReport:
    """Copy every run of ``source`` into ``dest`` and verify the counts.

    Runs are copied oldest first, so the destination lists them in the source's order. Events
    keep their keys and runs their groups where both stores keep them (see the module).

    Args:
        source: The store to read.
        dest: The store to write.
        progress: Called after every batch and every run.
        batch_size: Events per transaction on the destination.

    Returns:
        The report; ``report.ok`` says whether every run was copied and verified.

    Raises:
        InvalidInput: ``batch_size`` below 1.
        StoreReadOnly: ``dest`` is a seed-era reader, which takes no writes.
        StoreUnavailable: Either store cannot be reached (the copy stops; re-run it).

    """
    if type(batch_size) is not int or batch_size < 1:
        raise InvalidInput(f"batch size must be an int >= 1, got {batch_size!r}")
    if isinstance(dest, LegacyReader):
        # Refused once, here: run by run, the same refusal was reported for every run and an
        # empty source "copied" into the read-only store with success.
        raise StoreReadOnly(dest.write_refusal())
    run_ids = list(reversed(source.list_runs()))
    # Runs the source holds but cannot list would otherwise be skipped without a word.
    unread = source.unread_runs() if isinstance(source, LegacyReader) else []
    report = CopyReport(runs_total=len(run_ids) + len(unread))
    report.problems.extend(RunProblem(name, message) for name, message in unread)
    done = len(unread)

    def tell(run_id: str) -> None:
        if progress is not None:
            progress(CopyProgress(run_id, done, report.runs_total, report.events))

    sides = _Sides.of(source, dest)
    dropped: Counter[str] = Counter()
    for run_id in run_ids:
        try:
            problem = _copy_run(sides, run_id, batch_size, report, dropped, tell)
        except (CorruptRecord, SequenceConflict, InvalidInput) as exc:
            problem = str(exc)
        if problem is None:
            report.runs_copied += 1
        else:
            report.problems.append(RunProblem(run_id, problem))
        done += 1
        tell(run_id)
    notes = source.notes.counts() if isinstance(source, LegacyReader) else {}
    report.notes = {**notes, **dropped}
    return report


@dataclass(frozen=True)
class _Sides:
    """The two stores of a copy, and what each keeps beyond the base protocol.

    Attributes:
        source: The store read (its snapshots, its runs).
        dest: The store written.
        keyed_source: Where the source's events are read with their keys, if it keeps keys.
        groups: Where the source's groups are read, if it keeps groups.
        keyed_dest: The destination, if it keeps keys and groups.
        dest_groups: Where the destination's groups are read back, if it keeps groups.

    """

    source: Checkpointer
    dest: Checkpointer
    keyed_source: KeyedEvents | None
    groups: RunGroups | None
    keyed_dest: KeyedEvents | None
    dest_groups: RunGroups | None

    @classmethod
    def of(cls, source: Checkpointer, dest: Checkpointer) -> _Sides:
        # A JSONL folder is read through the seed-era view (which maps the seed's snapshots);
        # its events, keys and groups are the JSONL store's own.
        reader: object = source.store if isinstance(source, SeedJSONLReader) else source
        keyed_dest = dest if isinstance(dest, KeyedEvents) else None
        return cls(
            source,
            dest,
            reader if isinstance(reader, KeyedEvents) else None,
            grouped(reader) if isinstance(reader, Checkpointer) else None,
            keyed_dest,
            grouped(dest) if keyed_dest is not None else None,
        )

    def events(self, run_id: str, since_seq: int) -> Iterator[KeyedEvent]:
        """The source run's events after ``since_seq``, each with its key (or ``None``)."""
        if self.keyed_source is not None:
            return self.keyed_source.iter_keyed_events(run_id, since_seq)
        return (KeyedEvent(event, None) for event in self.source.iter_events(run_id, since_seq))

    def write(
        self,
        run_id: str,
        batch: list[KeyedEvent],
        state: RunState | None,
        group: str | None,
        dropped: Counter[str],
    ) -> None:
        """Write one batch in one transaction: with keys and group where the destination can."""
        if self.keyed_dest is not None:
            self.keyed_dest.save_keyed_events(run_id, batch, snapshot=state, group=group)
            return
        self.dest.save_events([item.event for item in batch], snapshot=state)
        dropped[KEYS_DROPPED] += sum(item.key is not None for item in batch)


# Times a run's snapshot may move on while it is copied before the run is reported instead.
MAX_SNAPSHOT_ROUNDS = 100


@dataclass
class _Positions:
    """The positions streamed from a run, as ascending ranges (a stream reads them in order).

    Counted above a snapshot's seq, they are what the destination must hold there: a position
    at or below it is covered by the snapshot, whether a compaction removed it from the source
    (during this copy, or before a re-run of it) or not.
    """

    ranges: list[list[int]] = field(default_factory=list)

    def add(self, seq: int) -> None:
        if self.ranges and seq <= self.ranges[-1][1] + 1:
            self.ranges[-1][1] = max(self.ranges[-1][1], seq)
        else:
            self.ranges.append([seq, seq])

    @property
    def last(self) -> int:
        return self.ranges[-1][1] if self.ranges else 0

    def above(self, seq: int) -> int:
        return sum(max(0, high - max(low, seq + 1) + 1) for low, high in self.ranges)


def _copy_run(
    sides: _Sides,
    run_id: str,
    batch_size: int,
    report: CopyReport,
    dropped: Counter[str],
    tell: Callable[[str], None],
) -> str | None:
    """Copy one run; return why its counts do not match, or ``None`` when they do.

    The snapshot is read before the events each time. Should the source save a newer one
    while the run is copied, it is read again, and the events after the last one copied
    are streamed with it: a compaction under the copy removes positions the newer
    snapshot covers, which the stream would otherwise skip without a trace.
    """
    state: RunState | None = sides.source.load_latest(run_id)
    group = sides.groups.run_group(run_id) if sides.groups is not None else None
    positions = _Positions()
    _stream(sides, run_id, positions, state, group, batch_size, report, dropped, tell)
    for _ in range(MAX_SNAPSHOT_ROUNDS):
        newer = _read_again(sides.source, run_id, state)
        if newer is None or newer == state:
            break
        state = newer
        _stream(sides, run_id, positions, state, group, batch_size, report, dropped, tell)
    else:
        return f"its snapshot moved on {MAX_SNAPSHOT_ROUNDS} times while it was copied"
    if group is not None and sides.keyed_dest is None:
        dropped[GROUP_DROPPED] += 1
    covered = state.seq if state is not None else 0
    stored = count_events(sides.dest, run_id, covered)
    expected = positions.above(covered)
    if stored != expected:
        after = f" after seq {covered}" if covered else ""
        return f"the source has {expected} events{after}, the destination {stored} after the copy"
    if state is not None:
        copied = sides.dest.load_latest(run_id)
        if copied is None or copied.seq < state.seq:
            return f"the destination's snapshot does not cover seq {state.seq}"
    if group is not None and sides.dest_groups is not None:
        found = sides.dest_groups.run_group(run_id)
        if found != group:
            return f"the source's run is in group {group!r}, the destination's in {found!r}"
    return None


def _read_again(source: Checkpointer, run_id: str, state: RunState | None) -> RunState | None:
    """The run's snapshot read again; what a seed-era reader mapped counts only if it moved."""
    if not isinstance(source, LegacyReader):
        return source.load_latest(run_id)
    counted = source.notes.counts()
    newer = source.load_latest(run_id)
    if newer == state:
        source.notes.reset_to(counted)
    return newer


def _stream(
    sides: _Sides,
    run_id: str,
    positions: _Positions,
    state: RunState | None,
    group: str | None,
    batch_size: int,
    report: CopyReport,
    dropped: Counter[str],
    tell: Callable[[str], None],
) -> None:
    """Copy the run's events after the last position copied, the snapshot with the last batch."""
    batch: list[KeyedEvent] = []
    for item in sides.events(run_id, positions.last):
        # The seed's log can hold one position twice; the destination keeps one, so positions
        # (not rows) are what its count must match.
        positions.add(item.event.seq)
        batch.append(item)
        if len(batch) >= batch_size:
            sides.write(run_id, batch, None, group, dropped)
            report.events += len(batch)
            batch = []
            tell(run_id)
    if batch or state is not None:
        sides.write(run_id, batch, state, group, dropped)
        report.events += len(batch)
        report.snapshots += state is not None
