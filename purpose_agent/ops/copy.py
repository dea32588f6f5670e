"""Copying every run from one store to another: streamed, resumable, and checked.

Each run is read as a stream (``iter_events``) and written in batches (``save_events``), so
memory holds one batch whatever the size of the log. The run's snapshot is read *before* its
events, so the events streamed afterwards cover everything it covers, and it is written with
the run's last batch, so a destination never holds a snapshot ahead of its events.

An interrupted copy is resumed by running it again: every batch is one transaction, and saving
an event equal to a stored one is a no-op by contract, so nothing is duplicated; a *different*
event at a stored position is a ``SequenceConflict``, reported for that run. At the end of
each run the destination's count of events is compared with the number of positions read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from purpose_agent.errors import CorruptRecord, InvalidInput, SequenceConflict
from purpose_agent.legacy.read_only import LegacyReader
from purpose_agent.ops.summaries import count_events
from purpose_agent.protocol import Checkpointer
from purpose_agent.runtime.events import PAEvent
from purpose_agent.runtime.state import RunState

DEFAULT_BATCH_SIZE = 500


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
        notes: What the source could not map exactly (seed-era data), with how often.

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

    Runs are copied oldest first, so the destination lists them in the source's order.

    Args:
        source: The store to read.
        dest: The store to write.
        progress: Called after every batch and every run.
        batch_size: Events per transaction on the destination.

    Returns:
        The report; ``report.ok`` says whether every run was copied and verified.

    Raises:
        InvalidInput: ``batch_size`` below 1.
        StoreUnavailable: Either store cannot be reached (the copy stops; re-run it).

    """
    if type(batch_size) is not int or batch_size < 1:
        raise InvalidInput(f"batch size must be an int >= 1, got {batch_size!r}")
    run_ids = list(reversed(source.list_runs()))
    # Runs the source holds but cannot list would otherwise be skipped without a word.
    unread = source.unread_runs() if isinstance(source, LegacyReader) else []
    report = CopyReport(runs_total=len(run_ids) + len(unread))
    report.problems.extend(RunProblem(name, message) for name, message in unread)
    done = len(unread)

    def tell(run_id: str) -> None:
        if progress is not None:
            progress(CopyProgress(run_id, done, report.runs_total, report.events))

    for run_id in run_ids:
        try:
            problem = _copy_run(source, dest, run_id, batch_size, report, tell)
        except (CorruptRecord, SequenceConflict, InvalidInput) as exc:
            problem = str(exc)
        if problem is None:
            report.runs_copied += 1
        else:
            report.problems.append(RunProblem(run_id, problem))
        done += 1
        tell(run_id)
    if isinstance(source, LegacyReader):
        report.notes = source.notes.counts()
    return report


def _copy_run(
    source: Checkpointer,
    dest: Checkpointer,
    run_id: str,
    batch_size: int,
    report: CopyReport,
    tell: Callable[[str], None],
) -> str | None:
    """Copy one run; return why its counts do not match, or ``None`` when they do."""
    state: RunState | None = source.load_latest(run_id)
    positions = 0
    last_seq: int | None = None
    batch: list[PAEvent] = []
    for event in source.iter_events(run_id):
        # The seed's log can hold one position twice; the destination keeps one, so positions
        # (not rows) are what its count must match.
        if event.seq != last_seq:
            positions += 1
            last_seq = event.seq
        batch.append(event)
        if len(batch) >= batch_size:
            dest.save_events(batch)
            report.events += len(batch)
            batch = []
            tell(run_id)
    if batch or state is not None:
        dest.save_events(batch, snapshot=state)
        report.events += len(batch)
        report.snapshots += state is not None
    stored = count_events(dest, run_id)
    if stored != positions:
        return f"the source has {positions} events, the destination {stored} after the copy"
    if state is not None:
        copied = dest.load_latest(run_id)
        if copied is None or copied.seq < state.seq:
            return f"the destination's snapshot does not cover seq {state.seq}"
    return None
