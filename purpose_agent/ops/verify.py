"""Reading every record of a store to find damage before a resume trips over it.

A damaged row or line (a bad migration, a manual fix, a bit flip, a file edited by hand) is
reported by the store as ``CorruptRecord`` when a read reaches it, which is usually when a
crashed run is resumed, at the worst moment. :func:`verify_runs` reads every event and the
latest snapshot of each run through the store's own reads, so it decodes exactly what a
resume decodes, and it goes on after each damaged record: the run is read again after the
damaged position, so one bad row hides nothing behind it.

Nothing is written. The reads are the store's streaming ones, so memory stays flat whatever
the size of a run.

A SQL store's run rows are checked against what the runs store: listings and retention go by
the rows, so a run whose row is missing (the events table restored alone, a manual fix) would
pass unseen and never be pruned. Such runs are read too, and reported.

A whole SQLite store is also checked page by page (``PRAGMA quick_check``): a damaged page of
an index that no read of a run goes through (an event key's, a group's) would otherwise pass,
and break the first lookup or write that needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from purpose_agent.errors import CheckpointError, CorruptRecord, InvalidRunId, StoreUnavailable
from purpose_agent.legacy.read_only import LegacyReader
from purpose_agent.protocol import Checkpointer
from purpose_agent.records import BOUND
from purpose_agent.runtime.events import PAEvent
from purpose_agent.stores.sql import SQLCheckpointer

EVENT = "event"
SNAPSHOT = "snapshot"
RUN = "run"
FILE = "file"
# The problems quick_check lists at most: enough to show what is wrong, not a page of each.
_FILE_PROBLEMS = 10
# Progress is reported after this many events of a long run, not only between runs.
_TICK = 10_000

EventCheck = Callable[[PAEvent], "str | None"]
"""What is wrong with an event that decodes, for the reads of the integration that wrote it."""


@dataclass(frozen=True)
class Damage:
    """One record that cannot be read.

    Attributes:
        run_id: The run it belongs to.
        record: ``"event"``, ``"snapshot"`` or ``"run"`` (a run the store lists but cannot
            read at all: an id a damaged listing holds, a seed-era file it cannot open; or a
            SQL run whose row is missing or behind its events), or ``"file"`` (a SQLite
            file's own pages, whatever run they hold; ``run_id`` empty).
        seq: The damaged event's seq, or the snapshot's; ``None`` when it cannot be read.
        detail: What is wrong, as the store reported it.

    """

    run_id: str
    record: str
    seq: int | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "run_id": self.run_id,
            "record": self.record,
            "seq": self.seq,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class VerifyProgress:
    """Where a verification stands: passed to the callback after each run and every 10,000 events.

    Attributes:
        run_id: The run being read.
        runs_done: Runs finished so far.
        runs_total: Runs to read.
        events_done: Events read so far, over all runs.

    """

    run_id: str
    runs_done: int
    runs_total: int
    events_done: int


@dataclass
class VerifyReport:
    """What a verification read and what it could not.

    Attributes:
        runs: Runs read.
        events: Events read and decoded.
        snapshots: Snapshots read and decoded (a run's latest).
        damaged: The records that could not be read, in the order they were met.

    """

    runs: int = 0
    events: int = 0
    snapshots: int = 0
    damaged: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every record read back."""
        return not self.damaged

    @property
    def damaged_runs(self) -> int:
        """How many runs hold at least one damaged record."""
        return len({damage.run_id for damage in self.damaged if damage.record != FILE})

    @property
    def damaged_file(self) -> bool:
        """Whether the database file itself is damaged (SQLite's page check)."""
        return any(damage.record == FILE for damage in self.damaged)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "ok": self.ok,
            "runs": self.runs,
            "events": self.events,
            "snapshots": self.snapshots,
            "damaged_runs": self.damaged_runs,
            "damaged": [damage.to_dict() for damage in self.damaged],
        }


def _file_problems(store: Checkpointer) -> list[Damage]:
    """What SQLite's ``quick_check`` finds wrong with a SQL store's file; other stores pass."""
    engine, reading = getattr(store, "engine", None), getattr(store, "reading", None)
    if engine is None or reading is None or engine.dialect.name != "sqlite":
        return []
    try:
        with reading("checking the SQLite file's pages") as conn:
            found = [str(row[0]) for row in conn.exec_driver_sql("PRAGMA quick_check")]
    except CheckpointError as exc:  # a page so damaged that the check itself stops
        found = [str(exc)]
    if found == ["ok"]:
        return []
    return [
        Damage("", FILE, None, f"SQLite's quick_check: {line}") for line in found[:_FILE_PROBLEMS]
    ]


def _row_problems(store: Checkpointer, run_ids: list[str] | None) -> list[Damage]:
    """Runs of a SQL store whose row is missing or behind their events; other stores pass."""
    if not isinstance(store, SQLCheckpointer):
        return []
    with store.reading("checking the runs' rows") as conn:
        gaps = store.queries.row_gaps(conn, run_ids)
    found = []
    for gap in gaps:
        stored = "a snapshot" if gap.stored_seq is None else f"events up to seq {gap.stored_seq}"
        if gap.last_seq is None:
            detail = (
                f"it stores {stored} but has no run row, so run listings and retention do not "
                "see it; its next append makes the row, or `purpose-agent runs delete` removes it"
            )
        else:
            detail = (
                f"its run row says its last seq is {gap.last_seq} but it stores {stored}; "
                "its next append moves the row up"
            )
        found.append(Damage(gap.run_id, RUN, None, detail))
    return found


def verify_runs(
    store: Checkpointer,
    run_ids: Iterable[str] | None = None,
    progress: Callable[[VerifyProgress], None] | None = None,
    check: EventCheck | None = None,
) -> VerifyReport:
    """Read every event and the latest snapshot of each run, and report what cannot be read.

    Args:
        store: The store to read.
        run_ids: The runs to read; by default every run the store lists.
        progress: Called after each run, and every 10,000 events within one.
        check: Also asked of every event that decodes: what an integration's reads of it
            would find wrong (the LangGraph saver's, say), or ``None``.

    Returns:
        The report; ``report.ok`` says whether every record read back.

    Raises:
        StoreUnavailable: The store cannot be reached (the verification stops).

    """
    report = VerifyReport()
    if run_ids is None:
        pages = _file_problems(store)
        try:
            chosen = store.list_runs()
        except StoreUnavailable as exc:
            if not pages:
                raise
            # The damage reaches the runs' own table: what the page check found is the report.
            report.damaged += [*pages, Damage("", FILE, None, f"the runs cannot be listed: {exc}")]
            return report
        # Runs a seed-era store holds but cannot list would otherwise go unmentioned.
        if isinstance(store, LegacyReader):
            report.damaged.extend(
                Damage(name, RUN, None, message) for name, message in store.unread_runs()
            )
        report.damaged.extend(pages)
        rows = _row_problems(store, None)
        listed = set(chosen)
        # A run with no row is not listed, and its events are read like any other's.
        chosen = [*chosen, *(damage.run_id for damage in rows if damage.run_id not in listed)]
    else:
        chosen = list(run_ids)
        rows = _row_problems(store, chosen)
    report.damaged.extend(rows)
    total = len(chosen)

    def tell(run_id: str) -> None:
        if progress is not None:
            progress(VerifyProgress(run_id, report.runs, total, report.events))

    for run_id in chosen:
        try:
            _verify_run(store, run_id, report, tell, check)
        except InvalidRunId as exc:
            report.damaged.append(Damage(run_id, RUN, None, str(exc)))
        report.runs += 1
        tell(run_id)
    return report


def _verify_run(
    store: Checkpointer,
    run_id: str,
    report: VerifyReport,
    tell: Callable[[str], None],
    check: EventCheck | None,
) -> None:
    found: list[Damage] = []
    try:
        state = store.load_latest(run_id)
    except CorruptRecord as exc:
        snapshot: Damage | None = Damage(run_id, SNAPSHOT, exc.seq, exc.detail)
    else:
        snapshot = None
        report.snapshots += state is not None
    _verify_events(store, run_id, report, tell, found, check)
    # A store that checks a snapshot against its log (JSONL) fails it on a damaged event: that
    # is one damaged record, not two.
    if snapshot is not None and not any(
        (event.seq, event.detail) == (snapshot.seq, snapshot.detail) for event in found
    ):
        found.insert(0, snapshot)
    report.damaged.extend(found)


def _verify_events(
    store: Checkpointer,
    run_id: str,
    report: VerifyReport,
    tell: Callable[[str], None],
    found: list[Damage],
    check: EventCheck | None,
) -> None:
    since = -BOUND  # a damaged row below seq 1 is read too, to be reported
    while True:
        try:
            for event in store.iter_events(run_id, since):
                report.events += 1
                since = event.seq
                _check(event, check, found)
                if report.events % _TICK == 0:
                    tell(run_id)
        except CorruptRecord as exc:
            damaged = exc
        else:
            return
        # A page is decoded before it is handed out, so the good events between the last one
        # seen and the damaged one were not: they are read one at a time.
        while True:
            try:
                page = store.list_events(run_id, since, 1)
            except CorruptRecord as exc:
                damaged = exc
                break
            if not page or (damaged.seq is not None and page[0].seq >= damaged.seq):
                break
            report.events += 1
            since = page[0].seq
            _check(page[0], check, found)
        damage = Damage(run_id, EVENT, damaged.seq, damaged.detail)
        if not found or found[-1] != damage:
            found.append(damage)
        if damaged.seq is None or damaged.seq <= since:
            return  # no position to read on from (a store that cannot skip a damaged line)
        since = damaged.seq


def _check(event: PAEvent, check: EventCheck | None, found: list[Damage]) -> None:
    problem = check(event) if check is not None else None
    if problem is not None:
        found.append(Damage(event.run_id, EVENT, event.seq, problem))
