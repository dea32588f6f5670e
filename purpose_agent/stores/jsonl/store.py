"""The JSONL checkpointer: each run a directory of plain files that survive crashes."""

from __future__ import annotations

import bisect
import contextlib
import enum
import itertools
import logging
import operator
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple, TypeVar

from purpose_agent.appends import (
    Draft,
    Placement,
    check_expected,
    check_label,
    check_run_listing,
    drafts,
    place,
    run_filter,
    snapshot_row,
)
from purpose_agent.clock import stamp_ns
from purpose_agent.errors import (
    CorruptRecord,
    InvalidInput,
    InvalidRunId,
    SequenceConflict,
    StoreUnavailable,
    translated,
)
from purpose_agent.protocol import (
    ClosingContext,
    KeyedEvent,
    Recovery,
    keyed_rows,
    new_keyed_rows,
)
from purpose_agent.reads import event_window
from purpose_agent.records import (
    EventRow,
    StateRow,
    batch_snapshot_row,
    check_page,
    check_run_id,
    check_since,
    decode_events,
    decode_state,
    event_row,
    event_rows,
    state_row,
)
from purpose_agent.runtime.events import EventKind, NewEvent, PAEvent
from purpose_agent.runtime.state import RunState

from .compaction import compacted_log
from .faults import Faults, no_faults
from .files import (
    BINARY,
    file_identity,
    fsync_dir,
    identity,
    pread_exact,
    undo_append,
    write_all,
    write_temp,
    written_ns,
)
from .index import TAIL, Index, LineReader, refreshed
from .journal import Entry, Journal, Part
from .lines import encoded_line, parse_line, record_key, stored_row
from .locks import LOCKS_AT_ONCE, Run, Runs
from .long_lines import NotStreamed, read_tail
from .meta import read_group, write_group
from .naming import (
    EVENTS_FILE,
    EVENTS_TEMP,
    JOURNAL_DIR,
    LOCKS_DIR,
    META_FILE,
    RUN_ID_FILE,
    SNAPSHOT_FILE,
    SNAPSHOT_TEMP,
    TEMP_SUFFIX,
    WIDE,
    dir_name,
    is_run_dir,
    plain_run_id,
)
from .snapshots import StoredSnapshot, read_snapshot_file, snapshot_bytes

_PAGE = 1000
_log = logging.getLogger(__name__)
# The hidden name a deleted run's folder is renamed to before it is removed.
DELETED = ".deleted-"
_T = TypeVar("_T")
# Reads where this process may not take a run's lock (see JSONLCheckpointer._without_lock):
# attempts, and the pause before the next, doubling from the first up to the last.
_UNLOCKED_ATTEMPTS = 12
_UNLOCKED_PAUSE = 0.001
_UNLOCKED_MAX_PAUSE = 0.05
# How long such a read waits for a writer at work to finish a batch across runs.
_JOURNAL_WAIT_SECONDS = 2.0


class _NotRead(enum.Enum):
    NOT_READ = enum.auto()


_NOT_READ = _NotRead.NOT_READ


def _current(stored: StoredSnapshot | None, index: Index) -> StoredSnapshot | None:
    """``snapshot.json`` as it counts against the indexed log.

    A file written before the log was last compacted names no rewrite of the log, or another
    one: the compacted log's header holds a snapshot at least as good, so the file is ignored.
    A file that names a rewrite the log does not show is returned: the log lost its header,
    which :meth:`JSONLCheckpointer._refresh` reports as damage.
    """
    if stored is None or stored.log_id == index.log_id:
        return stored
    if stored.log_id is not None and index.log_id is None:
        return stored
    return None


class _Unsure(Exception):
    """A read without the file lock found the log shorter than ``snapshot.json`` says.

    A writer (or a delete and a new run) may have come between its steps, so the read is done
    again under the lock before anything is reported.
    """


@dataclass
class _Plan:
    """What one run's part of a write will do, decided under the run's locks."""

    run_id: str
    run: Run
    rows: list[EventRow]
    snapshot: StateRow | None
    snapshot_wins: bool
    size: int
    exists: bool
    keys: dict[int, str] = field(default_factory=dict)


class _Appended(NamedTuple):
    plan: _Plan
    path: Path
    start: int
    line: bytes
    identity: tuple[int, int]
    snap_seq: int | None
    starts: list[int] | None
    tail_at: int


def _groups(items: list[_T]) -> Iterator[list[_T]]:
    """Split a wide batch's runs into groups small enough to hold all their locks at once."""
    for start in range(0, len(items), LOCKS_AT_ONCE):
        yield items[start : start + LOCKS_AT_ONCE]


class JSONLCheckpointer(ClosingContext):
    """Keeps each run in its own directory of plain files: an append-only log and a snapshot.

    Nothing but a file system is needed, the files can be read, copied and backed up with
    ordinary tools, and every write is durable (fsynced) when the call returns. Several
    processes may write to one ``base_dir`` at once: each run has its own lock, so writers of
    different runs never wait for each other. Each handle keeps an index of the logs it has
    read and extends it by reading only what was appended since, so appends and reads do not
    re-read a whole log.

    A batch that spans several runs is checked under all their locks and refused as a whole for
    a conflict or bad input. It is then committed to a journal entry before any run gets its
    line, and every operation on a run completes the entries that name it first, so a crash of
    the writer in the middle is rolled forward: readers see the whole batch or none of it. A
    batch that writes to one run only needs no journal (its line is atomic on its own). A batch
    across more runs than one operation may lock at once (each held lock is an open file, see
    :mod:`~purpose_agent.stores.jsonl.locks`) claims its runs and locks them a group at a time,
    with the same guarantees (see :meth:`_write_wide`).

    Args:
        base_dir: The directory that holds the runs; created if missing.
        faults: Called at each step of a batch that spans several runs, so that crash tests
            can stop or kill the writer exactly there (see
            :class:`~purpose_agent.stores.jsonl.faults.Faults`). The default does nothing.
        adopt_seed_folders: Rename the run folders the seed named after their raw ids
            (``Run-1``, ``job.2024``) to this store's names for them as the store opens, so
            that their runs are read and continued; ``False`` leaves the folder untouched
            (its seed-named runs are then not read).

    Raises:
        InvalidInput: ``base_dir`` is not a path (a str or an ``os.PathLike``).
        StoreUnavailable: If ``base_dir`` cannot be created.

    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        faults: Faults = no_faults,
        adopt_seed_folders: bool = True,
    ) -> None:
        if not isinstance(base_dir, str | os.PathLike):
            raise InvalidInput(f"JSONLCheckpointer takes a folder's path, not {base_dir!r}")
        self.base_dir = Path(base_dir)
        self._adopts = adopt_seed_folders
        self._where = str(self.base_dir)
        self._faults = faults
        self._closed = False
        self._runs = Runs(self.base_dir / LOCKS_DIR)
        self._journal = Journal(self.base_dir / JOURNAL_DIR, faults)
        with translated("creating the store's folders", self._where, OSError):
            self._runs.locks_dir.mkdir(parents=True, exist_ok=True)
            self._journal.path.mkdir(exist_ok=True)
        self._tidy_folder()

    def _tidy_folder(self) -> None:
        """Finish what deletes left behind, and take in the runs the seed named its own way.

        A run is deleted by renaming its folder to a hidden ``.deleted-*`` name, then removing
        that; killed in between, the process left the folder, which no read sees (hidden
        names are not runs) and nothing else would ever remove: the deleted data stayed on
        disk. The rename was the delete, so removing the folder later is always safe.

        The seed named a run's folder after its id as it was (``Run-1``, ``job.2024``);
        this store escapes such ids (see :mod:`~purpose_agent.stores.jsonl.naming`), so the
        folder would not be read, and a write to the run would start a second folder beside
        it. Each such folder is renamed to the store's name for its run (see :meth:`_adopt`).
        """
        try:
            with os.scandir(self.base_dir) as listing:
                entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing]
        except OSError:
            return
        for name, is_dir in entries:
            if name.startswith(DELETED):
                shutil.rmtree(self.base_dir / name, ignore_errors=True)
            elif self._adopts and is_dir and not name.startswith(".") and not is_run_dir(name):
                self._adopt(name)

    def _adopt(self, name: str) -> None:
        """Rename a seed-named run folder to the store's name for it, under the run's lock.

        Only a folder named by a valid run id that holds a seed file is taken, and only while
        the store's own folder for that run does not exist: both existing, neither is moved,
        and ``purpose-agent copy`` reports the seed's folder. A folder this process cannot
        rename (a read-only store) stays as it is, unread, as before.
        """
        try:
            run_id = check_run_id(name)
        except InvalidRunId:
            return
        source = self.base_dir / name
        if not any((source / file).is_file() for file in (EVENTS_FILE, SNAPSHOT_FILE)):
            return
        run = self._runs.get(run_id)
        target = self.base_dir / run.name
        try:
            with self._runs.exclusive(run):
                if target.exists() or not source.is_dir():
                    return
                if run.name.startswith("~"):
                    self._write_run_id(source, run_id)
                os.rename(source, target)
                fsync_dir(self.base_dir)
        except OSError as exc:
            _log.warning("%s: seed folder %r not renamed, so not read: %s", self._where, name, exc)
            return
        _log.info("%s: seed folder %r renamed to %r", self._where, name, run.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r})"

    def run_path(self, run_id: str) -> Path:
        """Return the directory that holds a run's files, for backups and inspection.

        Args:
            run_id: The run.

        Returns:
            The directory (it may not exist yet).

        Raises:
            InvalidRunId: If the run id is not acceptable.

        """
        return self.base_dir / dir_name(check_run_id(run_id))

    def _os_errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        """Translate OS errors of ``action``; refuse it at once if the store is closed.

        Every operation that touches the files goes through here, which makes it the one
        place a closed handle is refused (see :meth:`close`).
        """
        if self._closed:
            raise StoreUnavailable(f"{action} failed on {self._where}: the store is closed")
        return translated(action, self._where, OSError)

    # -- writes ---------------------------------------------------------------------------

    def save_event(self, event: PAEvent) -> None:
        """Append one event; durable when this returns.

        Args:
            event: The event to append.

        Raises:
            InvalidInput: The event cannot be stored exactly; nothing is written.
            SequenceConflict: The run holds a different event at this seq. An equal event is
                a no-op, so retrying after an ambiguous failure is safe.
            CorruptRecord: The run's log is damaged; nothing is written over the damage.
            StoreUnavailable: The file system refused the write.

        """
        self._write([event_row(event)], None)

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        """Append a batch, and optionally the state after it, all or nothing.

        Each run's events go into one line, with the snapshot inside that line when it belongs
        to the run, so that a crash keeps or loses the step and its state together. A batch
        that writes to several runs is committed to the journal before any run gets its line,
        so a crash in between is completed by the next operation on any of those runs.

        Args:
            events: The events; they may belong to several runs.
            snapshot: The state after these events, saved with them.

        Raises:
            InvalidInput: An event or the snapshot cannot be stored; nothing is written.
            SequenceConflict: A position already holds a different event; nothing is written.
            CorruptRecord: A run's log or ``snapshot.json`` is damaged; nothing is written.
            StoreUnavailable: The file system refused the write; nothing is written.

        """
        rows = event_rows(events)
        snap = batch_snapshot_row(snapshot) if snapshot is not None else None
        self._write(rows, snap)

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        """Save a snapshot covering the run's events up to ``state.seq``.

        The file is replaced by renaming a fully written temporary file over it, so a crash
        leaves either the old snapshot or the new one. A lower ``seq`` than the stored
        snapshot's does not replace it.

        Args:
            run_id: The run; must equal ``state.run_id``.
            state: The state to save.

        Raises:
            InvalidInput: The state cannot be stored, or belongs to another run.
            StoreUnavailable: The file system refused the write.

        """
        self._write([], state_row(run_id, state))

    def append(
        self,
        run_id: str,
        events: Iterable[NewEvent],
        *,
        expected_last_seq: int | None = None,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> list[PAEvent]:
        """Append events at the run's next seqs, all or nothing; durable when this returns.

        The run's lock is held from reading its last seq to writing the line, so appends to
        one run, from threads or processes, are serialised and each takes its seqs from the
        one before it. The events, and the snapshot with them, are one line, as for
        :meth:`save_events`. A group is written to ``meta.json`` first (see
        :mod:`~purpose_agent.stores.jsonl.meta`): a crash between the two leaves the run in the
        group without the events, which a retry of the append completes.

        See :class:`~purpose_agent.protocol.Appending` for the arguments.

        Returns:
            The stored events, in the order given.

        Raises:
            InvalidInput: A value cannot be stored, or no events were given.
            SequenceConflict: The run's last seq is not ``expected_last_seq``, or a key is
                stored with other content; nothing was written.
            CorruptRecord: The run's log or ``snapshot.json`` is damaged; nothing is written.
            StoreUnavailable: The file system refused the write; nothing is written.

        """
        check_run_id(run_id)
        expected = check_expected(expected_last_seq)
        items = drafts(run_id, events)
        if group is not None:
            group = check_label(group, "group")
        if snapshot is not None:
            snapshot_row(run_id, snapshot, 0)  # refuse a bad snapshot before taking the lock
        run = self._runs.get(run_id)
        with (
            self._os_errors(f"appending to run {run_id!r}"),
            self._settled([run_id], [run]),
        ):
            plan, placed = self._plan_append(run_id, run, items, expected, snapshot)
            run_dir = self.base_dir / run.name
            old_group = read_group(run_id, run_dir) if group is not None else None
            if group is not None and group != old_group:
                write_group(self._ensure_run_dir(run_id, run.name), group)
            try:
                self._commit([plan])
                if group is not None and not plan.rows and plan.snapshot is None:
                    self._touch(plan)  # joining a group is a write, as on the other stores
            except BaseException:
                if group is not None and group != old_group:
                    with contextlib.suppress(OSError):
                        write_group(run_dir, old_group)
                raise
        return decode_events(run_id, [row[1:] for row in placed.result])

    def save_keyed_events(
        self,
        run_id: str,
        events: Iterable[KeyedEvent],
        *,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> None:
        """Store events of one run at their own seqs with their keys, all or nothing.

        The events (and the snapshot) are one line, as for :meth:`save_events`, with each
        event's key in it as :meth:`append` writes it. A group is written to ``meta.json``
        first, as :meth:`append` does. See :class:`~purpose_agent.protocol.KeyedEvents`.

        Raises:
            InvalidInput: A value cannot be stored, or an event is of another run.
            SequenceConflict: A seq holds another event, or the same with another key, or a
                key is stored at another seq; nothing was written.
            CorruptRecord: The run's log or ``snapshot.json`` is damaged; nothing is written.
            StoreUnavailable: The file system refused the write; nothing is written.

        """
        pairs = keyed_rows(run_id, events)
        snap = state_row(run_id, snapshot) if snapshot is not None else None
        if group is not None:
            group = check_label(group, "group")
        run = self._runs.get(run_id)
        with (
            self._os_errors(f"writing to run {run_id!r}"),
            self._settled([run_id], [run]),
        ):
            keys = {row.seq: key for row, key in pairs}
            plan = self._plan(run_id, run, [row for row, _ in pairs], snap, keys)
            run_dir = self.base_dir / run.name
            writes = bool(plan.rows) or plan.snapshot is not None
            # A group alone does not make a run: a run with nothing stored keeps none.
            grouping = group is not None and (writes or written_ns(run_dir) is not None)
            old_group = read_group(run_id, run_dir) if grouping else None
            if grouping and group != old_group:
                write_group(self._ensure_run_dir(run_id, run.name), group)
            try:
                self._commit([plan])
                if grouping and not writes:
                    self._touch(plan)  # joining a group is a write, as in append
            except BaseException:
                if grouping and group != old_group:
                    with contextlib.suppress(OSError):
                        write_group(run_dir, old_group)
                raise

    def _plan_append(
        self,
        run_id: str,
        run: Run,
        items: list[Draft],
        expected: int | None,
        snapshot: RunState | None,
    ) -> tuple[_Plan, Placement]:
        """Place an append against what the run holds; the caller holds the run's locks."""
        stored_snap = self._read_snapshot_file(run_id, run) if snapshot is not None else None
        fd = self._open_log(run)
        try:
            size = self._refresh(
                run_id, run, fd, locked=True, stored=_NOT_READ if snapshot is None else stored_snap
            )
            index = run.index
            stored = self._rows_by_key(run_id, run, fd, [item.key for item in items])
        finally:
            if fd is not None:
                os.close(fd)
        covered = stored_snap.state.seq if stored_snap else self._file_seq(run_id, run)
        placed = place(
            run_id, items, max(index.last_seq, index.snap_seq, covered), stored, expected
        )
        snap = snapshot_row(run_id, snapshot, max(row.seq for row in placed.result))
        wins = False
        if snap is not None:
            current = _current(stored_snap, index)
            wins = snap.seq >= max(current.state.seq if current else -1, index.snap_seq)
        keys = {row.seq: key for row, key in zip(placed.rows, placed.keys, strict=True) if key}
        plan = _Plan(run_id, run, placed.rows, snap, wins, size, fd is not None, keys)
        return plan, placed

    @staticmethod
    def _rows_by_key(
        run_id: str, run: Run, fd: int | None, keys: Iterable[str | None]
    ) -> dict[str, EventRow]:
        """The stored events that carry these keys, by key; the index is up to date."""
        index = run.index
        reader = LineReader()
        found: dict[str, EventRow] = {}
        for key in keys:
            seq = index.keys.get(key) if key is not None else None
            if key is None or seq is None:
                continue
            offset = index.find(seq)
            # An indexed key implies its line, in an open log.
            assert fd is not None
            assert offset is not None
            found[key] = stored_row(run_id, reader.record(run_id, fd, index, seq, offset), seq)
        return found

    def _write(self, rows: list[EventRow], snap: StateRow | None) -> None:
        by_run: dict[str, list[EventRow]] = {}
        for row in rows:
            by_run.setdefault(row.run_id, []).append(row)
        if snap is not None:
            by_run.setdefault(snap.run_id, [])
        if not by_run:
            return
        # Every writer takes the locks of a batch in the same order, so batches cannot deadlock.
        ordered = sorted(by_run, key=dir_name)
        if len(ordered) > LOCKS_AT_ONCE:
            self._write_wide(ordered, by_run, snap)
            return
        action = "writing to " + ", ".join(map(repr, ordered))
        runs = {run_id: self._runs.get(run_id) for run_id in ordered}
        with self._os_errors(action), self._settled(ordered, [runs[run_id] for run_id in ordered]):
            plans = [
                self._plan(
                    run_id,
                    runs[run_id],
                    by_run[run_id],
                    snap if snap is not None and snap.run_id == run_id else None,
                )
                for run_id in ordered
            ]
            if len(plans) == 1:
                self._commit(plans)
            else:
                self._commit_across_runs(plans)

    def _write_wide(
        self, ordered: list[str], by_run: Mapping[str, list[EventRow]], snap: StateRow | None
    ) -> None:
        """Write a batch across more runs than may be locked at once, all or nothing.

        Each held lock is an open file, so the runs are locked a group of
        :data:`~.locks.LOCKS_AT_ONCE` at a time, and what holding them all would give is had
        otherwise. The batch holds the wide lock throughout, and first claims its runs (see
        :mod:`.journal`): from then on a writer of one of them waits, so what each group's
        check finds stays true while the other groups are checked and written. A conflict or
        bad input found in any group refuses the batch with nothing written. The lines are
        then committed to a journal entry, and each group of runs is given its lines under
        its locks; a failure cuts every line written back off and removes the entry, as for
        a batch across a few runs. A reader, or anybody else, that meets the entry completes
        it under the wide lock, so it waits for the batch to end, and a batch whose writer
        died is rolled forward, as any other entry.

        Args:
            ordered: The batch's runs, in lock order.
            by_run: Each run's events.
            snap: The snapshot of the batch, if any.

        """
        shown = ", ".join(map(repr, ordered[:3]))
        action = f"writing to {len(ordered)} runs ({shown}, ...)"
        with self._os_errors(action), self._runs.wide(), self._journal.claim(ordered):
            parts: list[_Plan] = []
            for group in _groups(ordered):
                runs = [self._runs.get(run_id) for run_id in group]
                with self._settled(group, runs, wide=True):
                    for run_id, run in zip(group, runs, strict=True):
                        mine = snap if snap is not None and snap.run_id == run_id else None
                        plan = self._plan(run_id, run, by_run[run_id], mine)
                        if plan.rows or plan.snapshot is not None:
                            parts.append(plan)
            if len(parts) > LOCKS_AT_ONCE:
                entry = self._journal.write(
                    [plan.run_id for plan in parts],
                    [encoded_line(plan.rows, plan.snapshot).line for plan in parts],
                    WIDE,
                )
                self._apply_wide(parts, entry)
                self._journal.drop(entry)
            elif parts:
                # Few enough runs get a line to hold all their locks: the usual commit, planned
                # again under them since each group's locks were let go after its check.
                ids = [plan.run_id for plan in parts]
                with self._settled(ids, [plan.run for plan in parts], wide=True):
                    self._commit_across_runs(
                        [self._plan(p.run_id, p.run, p.rows, p.snapshot) for p in parts]
                    )

    def _apply_wide(self, parts: list[_Plan], entry: Path) -> None:
        """Give each run of a committed wide batch its line, a group of runs at a time.

        Each run's part is planned again under its locks: they were let go since the check
        (only the claim kept writers off), and the handle's index may have been rebuilt. The
        run with the snapshot comes last, so that renaming its file in is the last step, as
        in :meth:`_commit`: until then a failure cuts every line back off (with only the runs'
        mutexes, since no writer may touch a claimed run), and the entry is removed with them.
        """
        stamp = stamp_ns()
        appended: list[_Appended] = []
        ordered = sorted(parts, key=lambda plan: plan.snapshot is not None)
        snapshot_plan: _Plan | None = None
        target: Path | None = None
        try:
            for group in _groups(ordered):
                with contextlib.ExitStack() as held:
                    for part in sorted(group, key=lambda plan: plan.run.name):
                        held.enter_context(self._runs.exclusive(part.run))
                    for part in group:
                        plan = self._plan(part.run_id, part.run, part.rows, part.snapshot)
                        if plan.rows:
                            done = self._append(plan, stamp)
                            appended.append(done)
                            self._note_appended(done)
                            self._faults("appended", plan.run_id)
                        if plan.snapshot is not None:
                            snapshot_plan = plan
                            if plan.snapshot_wins:
                                temp, path = self._prepare_snapshot(plan, appended, stamp)
                                os.replace(temp, path)
                                target = path
        except BaseException:
            if target is None:  # the snapshot's rename is the last step: nothing came after it
                self._cut_back(appended, snapshot_plan, entry)
            raise
        if target is not None:
            fsync_dir(target.parent)
        elif snapshot_plan is not None and not snapshot_plan.rows:
            self._touch(snapshot_plan, stamp)

    def _cut_back(self, appended: list[_Appended], snapshot: _Plan | None, entry: Path) -> None:
        """Undo a wide batch's lines after a failure; drop its entry if all came off.

        Best effort, as in :meth:`_commit`: the error that stopped the batch is the one the
        caller sees, and an entry that stays is rolled forward by the next operation.
        """
        undone = True
        for done in appended:
            run = done.plan.run
            with run.mutex:
                undone = undo_append(done.path, done.start, done.plan.exists) and undone
                run.index = Index()  # it indexed the line that is gone
        if snapshot is not None:
            with contextlib.suppress(OSError):
                (self.base_dir / snapshot.run.name / SNAPSHOT_TEMP).unlink()
        if undone:
            with contextlib.suppress(OSError):
                self._journal.drop(entry)

    def _commit_across_runs(self, plans: list[_Plan]) -> None:
        """Commit a batch that may write to several runs: through the journal if it does."""
        parts = [plan for plan in plans if plan.rows or plan.snapshot is not None]
        writes = sum(
            1 for plan in parts if plan.rows or (plan.snapshot is not None and plan.snapshot_wins)
        )
        if writes < 2:
            # One run's line (or one snapshot file) is atomic on its own.
            self._commit(plans)
            return
        entry = self._journal.write(
            [plan.run_id for plan in parts],
            [encoded_line(plan.rows, plan.snapshot).line for plan in parts],
            parts[0].run.name,
        )
        self._commit(plans, entry)
        self._journal.drop(entry)

    def _plan(
        self,
        run_id: str,
        run: Run,
        rows: list[EventRow],
        snap: StateRow | None,
        keys: Mapping[int, str | None] | None = None,
    ) -> _Plan:
        """Check one run's part of a write against what is stored; nothing is written here.

        With ``keys`` (each row's key, by seq) the rows are written with their keys, and a
        stored row counts as the same only with the same key (see
        :func:`~purpose_agent.protocol.new_keyed_rows`).
        """
        stored_snap = self._read_snapshot_file(run_id, run) if snap is not None else None
        fd = self._open_log(run)
        stored: dict[int, tuple[EventRow, str | None]] = {}
        try:
            size = self._refresh(
                run_id, run, fd, locked=True, stored=stored_snap if snap is not None else _NOT_READ
            )
            index = run.index
            reader = LineReader()
            new: list[EventRow] = []
            for row in rows:
                offset = index.find(row.seq)
                if offset is None:
                    new.append(row)
                    continue
                assert fd is not None  # an indexed seq implies an open log
                record = reader.record(run_id, fd, index, row.seq, offset)
                found = stored_row(run_id, record, row.seq)
                if keys is not None:
                    stored[row.seq] = (found, record_key(run_id, record))
                elif not found.same_event(row):
                    raise SequenceConflict(run_id, row.seq)
        finally:
            if fd is not None:
                os.close(fd)
        written: dict[int, str] = {}
        if keys is not None:
            taken = {key: index.keys[key] for key in keys.values() if key in index.keys}
            pairs = [(row, keys.get(row.seq)) for row in rows]
            placed = new_keyed_rows(run_id, pairs, stored, taken)
            new = [row for row, _ in placed]
            written = {row.seq: key for row, key in placed if key is not None}
        wins = False
        if snap is not None:
            current = _current(stored_snap, index)
            best = max(current.state.seq if current else -1, index.snap_seq)
            wins = snap.seq >= best
        return _Plan(run_id, run, new, snap, wins, size, fd is not None, written)

    def _commit(self, plans: list[_Plan], entry: Path | None = None) -> None:
        """Append each run's line, then rename the new snapshot file into place.

        Until the rename, a failure cuts the appended lines back off, so a failed batch leaves
        no part of itself behind; the rename itself is atomic. ``entry`` is the journal entry
        of the batch when this is its first attempt: it is removed too when everything was cut
        back off, and kept (to be rolled forward) when something could not be.

        Every file the commit writes gets one stamp: a batch is one write, so its runs share one
        write time in :meth:`list_runs` (and list among themselves by run id), as the rows of
        one transaction do on the other stores.
        """
        stamp = stamp_ns()
        appended: list[_Appended] = []
        snapshot_plan = next((plan for plan in plans if plan.snapshot is not None), None)
        target: Path | None = None
        try:
            for plan in plans:
                if plan.rows:
                    appended.append(self._append(plan, stamp))
                    if entry is not None:
                        self._faults("appended", plan.run_id)
            if snapshot_plan is not None and snapshot_plan.snapshot_wins:
                temp, target = self._prepare_snapshot(snapshot_plan, appended, stamp)
                os.replace(temp, target)
        except BaseException:
            undone = [undo_append(done.path, done.start, done.plan.exists) for done in appended]
            if snapshot_plan is not None and snapshot_plan.snapshot_wins:
                # The rename is the try block's last step, so it has not happened.
                with contextlib.suppress(OSError):
                    (self.base_dir / snapshot_plan.run.name / SNAPSHOT_TEMP).unlink()
            if entry is not None and all(undone):
                with contextlib.suppress(OSError):
                    self._journal.drop(entry)
            raise
        for done in appended:
            self._note_appended(done)
        if target is not None:
            fsync_dir(target.parent)
        elif snapshot_plan is not None and not snapshot_plan.rows:
            self._touch(snapshot_plan, stamp)

    @staticmethod
    def _note_appended(done: _Appended) -> None:
        """Add a line this handle wrote to its index without reading it back."""
        run = done.plan.run
        index = run.index
        if index.identity is None and index.scanned == 0:  # the write created the log
            index.identity = done.identity
        if index.identity != done.identity or index.scanned != done.start:
            # Cannot happen while the lock is held; rebuilding on the next read is always right.
            run.index = Index()
            return
        seqs = (row.seq for row in done.plan.rows)
        keys = ((key, seq) for seq, key in done.plan.keys.items())
        index.add_line(
            done.start,
            done.start + len(done.line),
            seqs,
            done.snap_seq,
            keys,
            starts=[done.start + at for at in done.starts] if done.starts else None,
            snap_at=done.start + done.tail_at if done.tail_at >= 0 else -1,
        )
        index.tail = done.line[-TAIL:]

    def _append(self, plan: _Plan, stamp: int) -> _Appended:
        run_dir = self._ensure_run_dir(plan.run_id, plan.run.name)
        path = run_dir / EVENTS_FILE
        start = plan.run.index.scanned
        embedded = plan.snapshot if plan.snapshot is not None and plan.snapshot_wins else None
        line, starts, tail_at = encoded_line(plan.rows, embedded, plan.keys)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | BINARY, 0o644)
            try:
                if plan.size > start:
                    # A crashed writer left a line without its newline; readers skip it, and
                    # the next line must not be glued onto it.
                    os.ftruncate(fd, start)
                write_all(fd, line)
                os.utime(path, ns=(stamp, stamp))
                os.fsync(fd)
                info = os.fstat(fd)
            finally:
                os.close(fd)
            if not plan.exists:
                fsync_dir(run_dir)
        except BaseException:
            undo_append(path, start, plan.exists)
            raise
        snap_seq = embedded.seq if embedded is not None else None
        return _Appended(
            plan, path, start, line, (info.st_dev, info.st_ino), snap_seq, starts, tail_at
        )

    def _prepare_snapshot(
        self, plan: _Plan, appended: list[_Appended], stamp: int
    ) -> tuple[Path, Path]:
        """Write the new snapshot file next to the old one, ready to be renamed over it."""
        assert plan.snapshot is not None
        log_end = plan.run.index.scanned
        for done in appended:
            if done.plan is plan:
                log_end = done.start + len(done.line)
        run_dir = self._ensure_run_dir(plan.run_id, plan.run.name)
        temp = run_dir / SNAPSHOT_TEMP
        write_temp(temp, snapshot_bytes(plan.snapshot, log_end, plan.run.index.log_id), stamp)
        return temp, run_dir / SNAPSHOT_FILE

    def _touch(self, plan: _Plan, stamp: int | None = None) -> None:
        """Count an ignored older snapshot as a write in ``list_runs``, like the memory store."""
        run_dir = self.base_dir / plan.run.name
        stamp = stamp_ns() if stamp is None else stamp
        for name in (SNAPSHOT_FILE, EVENTS_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.utime(run_dir / name, ns=(stamp, stamp))
                return

    def _ensure_run_dir(self, run_id: str, name: str) -> Path:
        path = self.base_dir / name
        hashed = name.startswith("~")
        try:
            path.mkdir()
        except FileExistsError:
            # A crash between creating the directory and naming it leaves it without run_id.
            if hashed and not (path / RUN_ID_FILE).exists():
                self._write_run_id(path, run_id)
            return path
        if hashed:
            self._write_run_id(path, run_id)
        fsync_dir(self.base_dir)
        return path

    @staticmethod
    def _write_run_id(path: Path, run_id: str) -> None:
        temp = path / (RUN_ID_FILE + TEMP_SUFFIX)
        write_temp(temp, run_id.encode(), None)
        os.replace(temp, path / RUN_ID_FILE)
        fsync_dir(path)

    # -- reads ----------------------------------------------------------------------------

    def load_latest(self, run_id: str) -> RunState | None:
        """Return the snapshot with the highest ``seq``, or ``None``.

        Args:
            run_id: The run.

        Returns:
            The best of ``snapshot.json`` and the snapshots saved inside the log.

        Raises:
            CorruptRecord: ``snapshot.json`` or the log is damaged (see
                :meth:`list_events`); a damaged ``snapshot.json`` names the seq it still shows.
            StoreUnavailable: The files cannot be read.

        """
        check_run_id(run_id)
        run = self._runs.get(run_id)
        with self._os_errors(f"reading run {run_id!r}"):
            self._settle(run.names, run_id)
            with run.mutex:
                return self._lock_free(run, lambda locked: self._latest(run_id, run, locked))

    def _latest(self, run_id: str, run: Run, locked: bool) -> RunState | None:
        # The file first, then the log: a batch writes the log first, so whatever this misses
        # in the file it finds in the log.
        stored = self._read_snapshot_file(run_id, run)
        fd = self._open_log(run)
        try:
            self._refresh(run_id, run, fd, locked=locked, stored=stored)
            return self._best_snapshot(run_id, run, fd, stored)
        finally:
            if fd is not None:
                os.close(fd)

    def list_events(
        self,
        run_id: str,
        since_seq: int = 0,
        limit: int | None = None,
        *,
        before: int | None = None,
        newest_first: bool = False,
        kinds: Iterable[EventKind | str] | None = None,
        lanes: Iterable[str] | None = None,
    ) -> list[PAEvent]:
        """Return events with ``seq > since_seq`` in ascending ``seq``, at most ``limit``.

        Args:
            run_id: The run.
            since_seq: Only events after this seq.
            limit: At most this many events; ``None`` for all.
            before: Only events with a smaller seq.
            newest_first: Descending seq; with ``limit``, the newest events of the window.
            kinds: Only events of these kinds.
            lanes: Only events in these lanes.

        Returns:
            The events, in ascending seq (descending with ``newest_first``) whatever order
            they were written in.

        Raises:
            CorruptRecord: The log is damaged: a line cannot be decoded, the last line lacks
                its newline and is not the start of a write (only a torn append is left out),
                or the log is shorter than ``snapshot.json`` says it was.
            StoreUnavailable: The log cannot be read.

        """
        check_run_id(run_id)
        window = event_window(since_seq, limit, before, newest_first, kinds, lanes)
        if window.empty:
            return []
        if not window.plain:
            return window.select(self.iter_events(run_id, since_seq))
        run = self._runs.get(run_id)
        with self._os_errors(f"reading run {run_id!r}"):
            self._settle(run.names, run_id)
            reader = LineReader()
            with run.mutex:
                return self._lock_free(
                    run,
                    lambda locked: self._events_after(
                        run_id, run, since_seq, limit, reader, locked=locked
                    ),
                )

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        """Stream events with ``seq > since_seq`` in ascending ``seq``, a page at a time.

        Only one page of events and the lines it comes from (or, of a line longer than
        :data:`~.lines.LONG_LINE`, a window on it) are in memory at once, and no lock is held
        between pages.

        Args:
            run_id: The run.
            since_seq: Only events after this seq.

        Returns:
            An iterator over the events.

        Raises:
            InvalidRunId: At once, before iterating, for a bad run id.

        """
        check_run_id(run_id)
        check_since(since_seq)
        return self._iter(run_id, since_seq)

    def _iter(self, run_id: str, since_seq: int) -> Iterator[PAEvent]:
        def page(run: Run, since: int, reader: LineReader, locked: bool) -> list[PAEvent]:
            return self._events_after(run_id, run, since, _PAGE, reader, locked=locked)

        return self._pages(run_id, since_seq, page, lambda event: event.seq)

    def _pages(
        self,
        run_id: str,
        since_seq: int,
        page: Callable[[Run, int, LineReader, bool], list[_T]],
        seq_of: Callable[[_T], int],
    ) -> Iterator[_T]:
        """A run read a page at a time, each page under the run's mutex, none held between."""
        run = self._runs.get(run_id)
        reader = LineReader()
        while True:

            def page_after(locked: bool, since: int = since_seq) -> list[_T]:
                return page(run, since, reader, locked)

            with self._os_errors(f"reading run {run_id!r}"):
                self._settle(run.names, run_id)
                with run.mutex:
                    found = self._lock_free(run, page_after)
            yield from found
            if len(found) < _PAGE:
                return
            since_seq = seq_of(found[-1])

    def iter_keyed_events(self, run_id: str, since_seq: int = 0) -> Iterator[KeyedEvent]:
        """Stream events with ``seq > since_seq`` and their keys, as :meth:`iter_events` does.

        Args:
            run_id: The run.
            since_seq: Only events after this seq.

        Returns:
            An iterator over the events and their keys (``None`` for an event without one).

        Raises:
            InvalidRunId: At once, before iterating, for a bad run id.

        """
        check_run_id(run_id)
        check_since(since_seq)
        return self._iter_keyed(run_id, since_seq)

    def _iter_keyed(self, run_id: str, since_seq: int) -> Iterator[KeyedEvent]:
        def page(run: Run, since: int, reader: LineReader, locked: bool) -> list[KeyedEvent]:
            return self._keyed_after(run_id, run, since, reader, locked=locked)

        return self._pages(run_id, since_seq, page, lambda keyed: keyed.event.seq)

    def _keyed_after(
        self, run_id: str, run: Run, since_seq: int, reader: LineReader, *, locked: bool
    ) -> list[KeyedEvent]:
        """A page of events after ``since_seq`` with their keys; the caller holds the mutex."""
        fd = self._open_log(run)
        if fd is None:
            return []
        try:
            self._refresh(run_id, run, fd, locked=locked)
            index = run.index
            start = bisect.bisect_right(index.seqs, since_seq)
            stop = min(len(index.seqs), start + _PAGE)
            return [
                KeyedEvent(*reader.keyed(run_id, fd, index, index.seqs[i], index.offsets[i]))
                for i in range(start, stop)
            ]
        finally:
            os.close(fd)

    def last_seq(self, run_id: str) -> int:
        """The highest seq the run has stored an event at or a snapshot covers; 0 if unknown.

        A compacted log's header keeps the positions its compaction dropped. Appends take the
        positions after it.

        Args:
            run_id: The run.

        Returns:
            The seq.

        Raises:
            CorruptRecord: The log is damaged (see :meth:`list_events`).
            StoreUnavailable: The log cannot be read.

        """
        check_run_id(run_id)
        run = self._runs.get(run_id)
        with self._os_errors(f"reading run {run_id!r}"):
            self._settle(run.names, run_id)
            with run.mutex:
                return self._lock_free(run, lambda locked: self._indexed(run_id, run, locked))

    def _indexed(self, run_id: str, run: Run, locked: bool) -> int:
        covered = self._file_seq(run_id, run)
        fd = self._open_log(run)
        try:
            self._refresh(run_id, run, fd, locked=locked)
        finally:
            if fd is not None:
                os.close(fd)
        index = run.index
        return max(index.last_seq, index.snap_seq, covered, 0)

    def _file_seq(self, run_id: str, run: Run) -> int:
        """The seq ``snapshot.json`` covers, or -1; read again only when the file changed.

        Every append needs it (a snapshot ahead of the events moves the run's last seq), and
        the file can hold a large state, so its seq is kept with the file's identity.
        """
        path = self.base_dir / run.name / SNAPSHOT_FILE
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return -1
        found = identity(info)
        cached = run.snapshot_seq
        if cached is not None and cached[0] == found:
            return cached[1]
        stored = self._read_snapshot_file(run_id, run)
        if stored is None:
            return -1
        # If the file was replaced since the stat, the next stat differs and reads it again.
        run.snapshot_seq = (found, stored.state.seq)
        return stored.state.seq

    def event_by_key(self, run_id: str, key: str) -> PAEvent | None:
        """The run's event appended with ``key``, or ``None``.

        The handle's index of the log maps keys to seqs, so this reads one line, not the log
        (after the first read of the run, which builds the index).

        Args:
            run_id: The run.
            key: The key.

        Returns:
            The event, or ``None`` (no such key, or its event was compacted away).

        Raises:
            InvalidInput: The key is not one an append accepts.
            CorruptRecord: The log is damaged (see :meth:`list_events`).
            StoreUnavailable: The log cannot be read.

        """
        check_run_id(run_id)
        key = check_label(key, "key")
        run = self._runs.get(run_id)
        with self._os_errors(f"reading run {run_id!r}"):
            self._settle(run.names, run_id)
            with run.mutex:
                return self._lock_free(run, lambda locked: self._by_key(run_id, run, key, locked))

    def _by_key(self, run_id: str, run: Run, key: str, locked: bool) -> PAEvent | None:
        fd = self._open_log(run)
        if fd is None:
            return None
        try:
            self._refresh(run_id, run, fd, locked=locked)
            index = run.index
            seq = index.keys.get(key)
            offset = index.find(seq) if seq is not None else None
            if seq is None or offset is None:
                return None
            return LineReader().event(run_id, fd, index, seq, offset)
        finally:
            os.close(fd)

    def recover(self, run_id: str) -> Recovery | None:
        """Return the latest snapshot and exactly the events after it.

        Both are read under the run's lock, so no write lands between them. Where this process
        may read the folder but not write it, it cannot take the lock: the two are then read
        without it, and read again whenever ``snapshot.json`` changed in between.

        Args:
            run_id: The run.

        Returns:
            The recovery, or ``None`` if the run has neither events nor snapshots.

        Raises:
            CorruptRecord: ``snapshot.json`` or the log is damaged (see :meth:`list_events`).
            StoreUnavailable: The files cannot be read.

        """
        check_run_id(run_id)
        run = self._runs.get(run_id)
        action = f"recovering run {run_id!r}"
        with (
            self._os_errors(action),
            self._settled([run_id], [run], reading=True) as locked,
        ):
            if locked:
                return self._recovered(run_id, run, locked=True)
            return self._without_lock(
                action, run, lambda locked: self._recovered(run_id, run, locked=locked)
            )

    def _recovered(self, run_id: str, run: Run, *, locked: bool) -> Recovery | None:
        """The snapshot, then the events after it from the same open log; see :meth:`recover`."""
        stored = self._read_snapshot_file(run_id, run)
        fd = self._open_log(run)
        try:
            self._refresh(run_id, run, fd, locked=locked, stored=stored)
            state = self._best_snapshot(run_id, run, fd, stored)
            if state is None and not run.index.seqs:
                return None
            since = state.seq if state is not None else 0
            events = self._events_after(
                run_id, run, since, None, LineReader(), locked=locked, fd=fd
            )
        finally:
            if fd is not None:
                os.close(fd)
        return Recovery(state, events)

    def _events_after(
        self,
        run_id: str,
        run: Run,
        since_seq: int,
        limit: int | None,
        reader: LineReader,
        *,
        locked: bool,
        fd: int | None = None,
    ) -> list[PAEvent]:
        """Read events after ``since_seq``; the caller holds the run's mutex.

        ``locked`` says whether it holds the file lock too; ``fd`` is the log when the caller
        has opened and refreshed it.
        """
        own = fd is None
        if own:
            fd = self._open_log(run)
            self._refresh(run_id, run, fd, locked=locked)
        try:
            if fd is None:
                return []
            index = run.index
            start = bisect.bisect_right(index.seqs, since_seq)
            stop = len(index.seqs) if limit is None else min(len(index.seqs), start + limit)
            return [
                reader.event(run_id, fd, index, index.seqs[i], index.offsets[i])
                for i in range(start, stop)
            ]
        finally:
            if own and fd is not None:
                os.close(fd)

    def _best_snapshot(
        self, run_id: str, run: Run, fd: int | None, stored: StoredSnapshot | None
    ) -> RunState | None:
        index = run.index
        stored = _current(stored, index)
        embedded_wins = (
            fd is not None
            and index.snap_seq >= 0
            and (
                stored is None
                or index.snap_seq > stored.state.seq
                or (index.snap_seq == stored.state.seq and index.snap_end > stored.log_end)
            )
        )
        if not embedded_wins:
            return stored.state if stored is not None else None
        assert fd is not None
        if index.snap_at >= 0:  # a long line: read only the part after its events
            try:
                snapshot = read_tail(fd, index.snap_at, index.snap_end - 1).get("snapshot")
            except NotStreamed as exc:
                detail = f"the snapshot at byte {index.snap_at} of {EVENTS_FILE} is unreadable"
                raise CorruptRecord(run_id, index.snap_seq, detail) from exc
        else:
            snapshot = parse_line(
                run_id,
                pread_exact(run_id, fd, index.snap_offset, index.snap_end - index.snap_offset),
                index.snap_offset,
            ).snapshot
        return decode_state(run_id, snapshot, index.snap_seq)

    def _read_snapshot_file(self, run_id: str, run: Run) -> StoredSnapshot | None:
        """Read ``snapshot.json``, noting on ``run`` which file that was.

        The caller holds the run's mutex; :meth:`_without_lock` uses the note.
        """
        stored = read_snapshot_file(run_id, self.base_dir / run.name / SNAPSHOT_FILE)
        run.snapshot_reads += 1
        run.snapshot_read = stored.file if stored is not None else None
        return stored

    # -- the index ------------------------------------------------------------------------

    def _open_log(self, run: Run) -> int | None:
        try:
            return os.open(self.base_dir / run.name / EVENTS_FILE, os.O_RDONLY | BINARY)
        except (FileNotFoundError, NotADirectoryError):
            run.index = Index()
            return None

    def _refresh(
        self,
        run_id: str,
        run: Run,
        fd: int | None,
        *,
        locked: bool,
        stored: StoredSnapshot | _NotRead | None = _NOT_READ,
    ) -> int:
        """Bring the run's index up to date with the open log and check it; return its size.

        The log only ever grows: lines are appended, a torn append is cut off (it is past every
        complete line) and a failed write is cut back before its snapshot file is renamed in.
        ``snapshot.json`` records the log's length when it was written (``log_end``), so a log
        whose complete lines end before that, or that is missing, lost lines it once held:
        that is damage (a truncated or replaced file), and it is reported rather than read as a
        shorter run. Nothing less than that is flagged. A snapshot whose ``seq`` covers events
        the log never held is no damage (a copy from a store that pruned covered events writes
        exactly that), and a log that shrank under a handle's index is not either (a lock-free
        reader may have indexed a write that failed and was cut back, and a deleted run's new
        log may reuse the inode). The check needs ``snapshot.json``: reads that have it check
        every time, others when the index is built from the start, which is where a handle
        first meets a shortened log. A damaged ``snapshot.json`` is left to the reads that use
        the snapshot to report.

        Args:
            run_id: The run.
            run: Its in-process state; the caller holds ``run.mutex``.
            fd: The open log, or ``None`` if there is none.
            locked: Whether the caller holds the run's file lock: without it, apparent damage
                raises :class:`_Unsure` so that the read is repeated under the lock.
            stored: ``snapshot.json`` as the caller read it before opening the log.

        Returns:
            The log's size.

        Raises:
            CorruptRecord: The log is damaged.

        """
        if fd is None:
            size, from_start = 0, True
        else:
            run.index, size, from_start = refreshed(run_id, run.index, fd)
        if stored is _NOT_READ:
            if not from_start:
                return size
            stored = self._snapshot_for_check(run_id, run)
        index = run.index
        stored = _current(stored, index)
        if stored is None or (stored.log_end <= index.scanned and stored.log_id == index.log_id):
            return size
        run.index = Index()  # the next read checks again
        if not locked:
            raise _Unsure
        if fd is None:
            has = f"{EVENTS_FILE} is missing"
        elif stored.log_id != index.log_id:
            has = f"{EVENTS_FILE} does not start with the header of its compaction"
        else:
            has = f"the complete lines of {EVENTS_FILE} end at byte {index.scanned}"
        raise CorruptRecord(
            run_id,
            stored.state.seq,
            f"{has}, but {SNAPSHOT_FILE} (the snapshot at this seq) was saved when the log held "
            f"{stored.log_end} bytes: the log lost lines; restore the run from a backup",
        )

    def _snapshot_for_check(self, run_id: str, run: Run) -> StoredSnapshot | None:
        try:
            return self._read_snapshot_file(run_id, run)
        except CorruptRecord:
            return None

    def _lock_free(self, run: Run, read: Callable[[bool], _T]) -> _T:
        """Do a read that holds only ``run.mutex``; do it again under the file lock if it failed.

        Without the file lock a reader can see a writer in the middle of its work (or a delete
        and a new run between two of its steps), so damage it sees is confirmed under the lock,
        where no writer is at work, before it is reported.
        """
        try:
            return read(False)
        except (_Unsure, CorruptRecord):
            with self._runs.file_locked(run, reading=True) as locked:
                if locked:
                    return read(True)
            return self._without_lock(f"reading run folder {run.name!r}", run, read)

    def _without_lock(self, action: str, run: Run, read: Callable[[bool], _T]) -> _T:
        """Read consistently where this process may not take the run's file lock.

        The caller holds ``run.mutex``. A writer may be at work meanwhile, so the read must be
        one that needs no lock against a single write: ``snapshot.json`` first, then one open
        log (a batch writes its log line before the file, a torn line is left out, a
        compaction renames a whole new log into place). What it cannot see is the run deleted
        and written again between those two steps, which would pair one life's snapshot with
        the next life's events: the read is kept only if the ``snapshot.json`` it read (or
        found missing) is the one in place both before and after it, which a delete (it
        renames the run's folder away) or a new snapshot changes. Apparent damage is looked at
        again too, and reported as damage (as a read under the lock would) only when it stays.

        Raises:
            CorruptRecord: The damage was there at every attempt.
            StoreUnavailable: ``snapshot.json`` changed under every attempt.

        """
        path = self.base_dir / run.name / SNAPSHOT_FILE
        damaged = False
        for attempt in range(_UNLOCKED_ATTEMPTS):
            if attempt:
                time.sleep(min(_UNLOCKED_PAUSE * 2**attempt, _UNLOCKED_MAX_PAUSE))
            before = file_identity(path)
            reads = run.snapshot_reads
            try:
                found = read(False)
            except (_Unsure, CorruptRecord):
                damaged = True
                continue
            damaged = False
            paired = run.snapshot_read if run.snapshot_reads != reads else before
            if paired == before == file_identity(path):
                return found
        if damaged:
            return read(True)  # the same at every attempt: damage, reported as such
        raise StoreUnavailable(
            f"{action} failed on {self._where}: {SNAPSHOT_FILE} changed during each of "
            f"{_UNLOCKED_ATTEMPTS} reads, which this process, unable to take the run's lock "
            "(the folder is read-only for it), must make without it; try again"
        )

    # -- runs -----------------------------------------------------------------------------

    def list_runs(
        self,
        limit: int | None = None,
        *,
        offset: int = 0,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        """Return the ids of runs with events or snapshots, most recently written first.

        Every write stamps the file it wrote with a nanosecond time from
        :func:`~purpose_agent.clock.stamp_ns`, so the order holds for writes within one clock
        tick as well.

        Args:
            limit: At most this many ids; ``None`` for all.
            offset: Skip this many ids first.
            group: Only runs of this group (each run's ``meta.json`` is read).
            prefix: Only runs whose id starts with this (case-sensitive).

        Returns:
            The run ids.

        Raises:
            InvalidInput: A limit, offset, group or prefix is not valid.
            CorruptRecord: A hashed run directory has lost its ``run_id`` file, or a
                ``meta.json`` read for ``group`` is damaged.
            StoreUnavailable: ``base_dir`` cannot be read.

        """
        limit, offset, group, prefix = check_run_listing(limit, offset, group, prefix)
        with self._os_errors("listing runs"):
            self._settle(None, str(self._journal.path))
            found = self._written_runs()
            if group is None and prefix is None:
                chosen = found[offset:] if limit is None else found[offset : offset + limit]
                ids = (self._run_id_of(name) for _, name in chosen)
                return [run_id for run_id in ids if run_id is not None]
            selected: list[str] = []
            for _, name in found:
                if limit is not None and len(selected) >= offset + limit:
                    break
                run_id = self._run_id_of(name)
                if (
                    run_id is not None
                    and (prefix is None or run_id.startswith(prefix))
                    and (group is None or read_group(run_id, self.base_dir / name) == group)
                ):
                    selected.append(run_id)
            return selected[offset:]

    def _written_runs(self) -> list[tuple[int, str]]:
        """Every run directory that holds a write, as ``(written_ns, name)``, newest first."""
        found: list[tuple[int, str]] = []
        with os.scandir(self.base_dir) as entries:
            for entry in entries:
                name = entry.name
                if not entry.is_dir(follow_symlinks=False) or not is_run_dir(name):
                    continue
                written = written_ns(Path(entry.path))
                if written is not None:
                    found.append((written, name))
        found.sort(key=lambda item: (-item[0], item[1]))
        return self._ties_by_run_id(found)

    def _ties_by_run_id(self, found: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Put runs with one write time (one batch wrote them) in run id order.

        That is the order of the other stores. Directory names do not sort as the ids they
        stand for (``"a%2Eb"`` before ``"a-b"``, but ``"a-b"`` before ``"a.b"``), so the ids
        of tied runs are looked up; runs written apart, nearly all of them, need no lookup.
        """
        ordered: list[tuple[int, str]] = []
        for _, group in itertools.groupby(found, key=operator.itemgetter(0)):
            tied = list(group)
            if len(tied) > 1:
                tied.sort(key=lambda item: self._run_id_of(item[1]) or item[1])
            ordered += tied
        return ordered

    def list_groups(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """Return the group names, the group with the most recently written run first.

        Args:
            limit: At most this many names; ``None`` for all.
            offset: Skip this many names first.

        Returns:
            The names.

        Raises:
            InvalidInput: A limit or offset is not valid.
            CorruptRecord: A run's ``meta.json`` or ``run_id`` file is damaged.
            StoreUnavailable: ``base_dir`` cannot be read.

        """
        limit, offset = check_page(limit, offset)
        with self._os_errors("listing groups"):
            self._settle(None, str(self._journal.path))
            latest: dict[str, int] = {}
            for written, name in self._written_runs():
                if not (self.base_dir / name / META_FILE).exists():
                    continue
                run_id = self._run_id_of(name)
                found = read_group(run_id, self.base_dir / name) if run_id is not None else None
                if found is not None and found not in latest:
                    latest[found] = written  # runs come newest first
        names = sorted(latest, key=lambda found: (-latest[found], found))[offset:]
        return names if limit is None else names[:limit]

    def run_group(self, run_id: str) -> str | None:
        """Return the run's group, or ``None`` (no group, or an unknown run).

        Args:
            run_id: The run.

        Returns:
            The group.

        Raises:
            CorruptRecord: The run's ``meta.json`` is damaged.
            StoreUnavailable: The file cannot be read.

        """
        check_run_id(run_id)
        run = self._runs.get(run_id)
        run_dir = self.base_dir / run.name
        with self._os_errors(f"reading run {run_id!r}"):
            self._settle(run.names, run_id)
            group = read_group(run_id, run_dir)
            # A group written by an append that never landed names a run that holds nothing.
            return group if group is not None and written_ns(run_dir) is not None else None

    def _run_id_of(self, name: str) -> str | None:
        plain = plain_run_id(name)
        if plain is not None:
            return plain
        path = self.base_dir / name / RUN_ID_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if not path.parent.exists():
                return None  # deleted since it was listed
            if not any((path.parent / file).exists() for file in (EVENTS_FILE, SNAPSHOT_FILE)):
                # Made an instant ago by a writer that names it next (or by one that died
                # before it wrote anything): not a run yet, and not damage.
                return None
            raise CorruptRecord(name, None, f"{path} is missing") from None
        try:
            run_id = check_run_id(raw.decode("utf-8"))
        except (UnicodeDecodeError, InvalidRunId) as exc:
            raise CorruptRecord(name, None, f"{path} does not hold a valid run id") from exc
        if dir_name(run_id) != name:
            raise CorruptRecord(run_id, None, f"{path} names a run that belongs elsewhere")
        return run_id

    def delete_run(self, run_id: str) -> None:
        """Remove a run's events and snapshots; an unknown run is no error.

        The directory is first renamed to a hidden name, so that other readers see the whole
        run or none of it, then removed. Its lock file stays, because another process may be
        waiting on it. A batch left in the journal by a crashed writer that names the run is
        completed first, so the other runs it names keep their part.

        Args:
            run_id: The run.

        Raises:
            CorruptRecord: A journal entry that may name the run cannot be completed.
            StoreUnavailable: The files could not be removed.

        """
        check_run_id(run_id)
        run = self._runs.get(run_id)
        # A batch that names this run is completed first (all its runs get their part), so
        # deleting a run never leaves another run with half a batch.
        with self._os_errors(f"deleting run {run_id!r}"), self._settled([run_id], [run]):
            self._remove(run)

    def _remove(self, run: Run) -> bool:
        """Remove a run's directory; the caller holds its locks. Whether there was one."""
        doomed = self.base_dir / f"{DELETED}{uuid.uuid4().hex}"
        run.index = Index()
        try:
            (self.base_dir / run.name).rename(doomed)
        except FileNotFoundError:
            return False
        fsync_dir(self.base_dir)
        # The rename was the delete. Another process opening the folder may be removing the
        # same hidden folder (see _sweep_deleted); whatever is left, the next one removes.
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def delete_runs(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        group: str | None = None,
        prefix: str | None = None,
        older_than: timedelta | datetime | None = None,
        keep_newest: int | None = None,
        whole_groups: bool = False,
    ) -> list[str]:
        """Delete every run that matches all the filters given.

        A file system has no transaction across directories, so this is not one: the runs
        are chosen, then each is removed as :meth:`delete_run` removes one, under its own
        lock, atomically for readers of that run (they see all of it or none). A crash part
        way leaves some of the chosen runs deleted and the others whole; the same call made
        again deletes the rest. A run written again after it was chosen by its age or by
        ``keep_newest`` is left alone, and one that left ``group`` meanwhile too. With
        ``whole_groups``, the groups are checked once the runs are chosen, not under one
        lock: a group written between that check and the removal of its runs loses some.

        See :class:`~purpose_agent.protocol.Retention` for the filters.

        Returns:
            The ids of the deleted runs, sorted.

        Raises:
            InvalidInput: No filter was given (deleting every run takes ``prefix=""``), or
                a filter is not valid.
            CorruptRecord: A run's ``meta.json`` or ``run_id`` file is damaged, or a journal
                entry cannot be completed.
            StoreUnavailable: The files could not be read or removed.

        """
        chosen = run_filter(run_ids, group, prefix, older_than, keep_newest)
        timed = chosen.cutoff_ns is not None or chosen.keep_newest is not None
        with self._os_errors("deleting runs"):
            self._settle(None, str(self._journal.path))
            scoped: list[tuple[str, int]] = []
            for written, name, known in self._candidates(chosen.run_ids):
                run_id = known if known is not None else self._run_id_of(name)
                if run_id is None:
                    continue
                found = read_group(run_id, self.base_dir / name) if group is not None else None
                if chosen.scoped(run_id, found):
                    scoped.append((run_id, written))
            when = dict(scoped)
            doomed = chosen.choose(scoped)
            if whole_groups:
                doomed = self._in_whole_groups(doomed)
            deleted: list[str] = []
            for run_id in doomed:
                run = self._runs.get(run_id)
                run_dir = self.base_dir / run.name
                with self._settled([run_id], [run]):
                    if timed and written_ns(run_dir) != when[run_id]:
                        continue  # written again since it was chosen
                    if group is not None and read_group(run_id, run_dir) != group:
                        continue
                    if self._remove(run):
                        deleted.append(run_id)
        return sorted(deleted)

    def _in_whole_groups(self, doomed: list[str]) -> list[str]:
        """The doomed runs whose groups have no run besides the doomed ones."""
        chosen = set(doomed)
        spared: set[str | None] = set()
        for _, name in self._written_runs():
            run_id = self._run_id_of(name)
            if run_id is not None and run_id not in chosen:
                spared.add(read_group(run_id, self.base_dir / name))
        spared.discard(None)
        return [
            run_id
            for run_id in doomed
            if read_group(run_id, self.base_dir / dir_name(run_id)) not in spared
        ]

    def _candidates(self, run_ids: frozenset[str] | None) -> list[tuple[int, str, str | None]]:
        """``(written_ns, name, run_id)`` of the runs to consider: the named ones, or all.

        Named runs are looked up directly rather than by listing ``base_dir``; the run id of
        a listed directory is left to the caller (``None``).
        """
        if run_ids is None:
            return [(written, name, None) for written, name in self._written_runs()]
        found: list[tuple[int, str, str | None]] = []
        for run_id in run_ids:
            name = dir_name(run_id)
            written = written_ns(self.base_dir / name)
            if written is not None:
                found.append((written, name, run_id))
        return found

    def compact(self, run_id: str) -> int:
        """Delete the run's events its latest snapshot covers; how many were deleted.

        The log is rewritten without them and renamed over the old one, so a crash leaves
        one or the other, and ``recover()`` returns the same from both (see
        :mod:`~purpose_agent.stores.jsonl.compaction`). The rewrite keeps the run's place in
        :meth:`list_runs`. The keys of the deleted events are forgotten; :meth:`last_seq`
        still counts their positions. On Windows the rename can be refused while another
        process has the log open; the old log then stays and the call can be repeated.

        Args:
            run_id: The run.

        Returns:
            How many events were deleted; 0 (and nothing rewritten) when the run has no
            snapshot or the snapshot covers none of its events.

        Raises:
            CorruptRecord: The run's log or ``snapshot.json`` is damaged; nothing changes.
            StoreUnavailable: The file system refused the rewrite; the old log stays.

        """
        check_run_id(run_id)
        run = self._runs.get(run_id)
        with self._os_errors(f"compacting run {run_id!r}"), self._settled([run_id], [run]):
            stored = self._read_snapshot_file(run_id, run)
            fd = self._open_log(run)
            if fd is None:
                return 0
            try:
                self._refresh(run_id, run, fd, locked=True, stored=stored)
                state = self._best_snapshot(run_id, run, fd, stored)
                stale = stored is not None and _current(stored, run.index) is None
                dropped = bisect.bisect_right(run.index.seqs, state.seq) if state else 0
                if dropped:
                    self._rewrite_log(run_id, run, fd, state_row(run_id, state))
            finally:
                os.close(fd)
            if stale and not dropped:
                # Left by a compaction that stopped after its rename; the header supersedes it.
                (self.base_dir / run.name / SNAPSHOT_FILE).unlink(missing_ok=True)
        return dropped

    def _rewrite_log(self, run_id: str, run: Run, fd: int, snapshot: StateRow) -> None:
        """Replace the run's log with its compacted form; the caller holds the run's locks."""
        run_dir = self.base_dir / run.name
        temp, target = run_dir / EVENTS_TEMP, run_dir / EVENTS_FILE
        written = written_ns(run_dir)
        try:
            out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | BINARY, 0o644)
            try:
                with os.fdopen(out, "wb", closefd=False) as buffered:
                    for line in compacted_log(run_id, fd, run.index, snapshot):
                        buffered.write(line)
                if written is not None:
                    os.utime(temp, ns=(written, written))  # compaction is not a write
                os.fsync(out)
            finally:
                os.close(out)
            self._faults("compact-temp", run_id)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        finally:
            run.index = Index()  # rebuilt from whichever log is in place
        fsync_dir(run_dir)
        self._faults("compacted", run_id)
        # Superseded by the new log's header; removing it keeps one copy of the state.
        with contextlib.suppress(FileNotFoundError):
            (run_dir / SNAPSHOT_FILE).unlink()

    # -- locks and the journal ------------------------------------------------------------

    @contextlib.contextmanager
    def _settled(
        self, run_ids: list[str], runs: list[Run], *, reading: bool = False, wide: bool = False
    ) -> Iterator[bool]:
        """Hold the runs' locks, in the order given, with no journal entry pending for them.

        While the locks are held, an entry that names one of the runs cannot belong to a writer
        at work (it would hold that lock until it removed the entry; a wide batch holds the
        wide lock instead, which completing its entry waits for): its writer died. It is
        completed with the locks let go, since completing takes the locks of all its runs in
        their own order, and then the locks are taken again. A writer also waits, with the
        locks let go, for a wide batch that claimed one of the runs (see :mod:`.journal`).

        Args:
            run_ids: The runs, at most :data:`~.locks.LOCKS_AT_ONCE` of them.
            runs: Their in-process state, in lock order.
            reading: For a read (see :meth:`Runs.file_locked`); claims do not stop reads.
            wide: The caller is a wide batch, holding the wide lock and the only live claim.

        Yields:
            Whether the file locks are held: always, unless ``reading`` and this process may
            not take them; the mutexes are held either way.

        """
        names = frozenset(run.name for run in runs)
        claims = not (reading or wide)
        while True:
            with contextlib.ExitStack() as held:
                locked = True
                for run in runs:
                    locked &= held.enter_context(self._runs.exclusive(run, reading=reading))
                pending = self._journal.pending(names, run_ids[0], holding=locked, claims=claims)
                if not pending.entries and not pending.claimed:
                    yield locked
                    return
            for entry in pending.entries:
                self._complete(entry, wide=wide)
            if pending.claimed:
                with self._runs.wide():
                    # The claim's batch has let the wide lock go: finished, or died.
                    self._journal.clear_claim()

    def _settle(self, names: frozenset[str] | None, subject: str) -> None:
        """Complete the journal entries that name any of these runs (every entry for ``None``).

        The caller holds no lock. An entry whose writer is still at work is waited for: its
        writer holds the locks that completing it takes, and removes it before letting go.
        """
        if self._journal.idle():
            return  # the hot path: nothing pending anywhere
        for entry in self._journal.pending(names, subject).entries:
            self._complete(entry)

    def _complete(self, entry: Entry, *, wide: bool = False) -> None:
        """Roll an entry forward: give each of its runs what it does not have yet, then drop it.

        Its lines are planned like a new write, so events a run already holds are skipped and
        completing an entry twice, or after its writer finished, does nothing more. An entry
        across more runs than may be locked at once is completed under the wide lock (already
        held when ``wide``), which its writer holds until it is done.
        """
        action = f"completing journal entry {entry.path}"
        if len(entry.run_ids) > LOCKS_AT_ONCE:
            with self._os_errors(action):
                if wide:
                    done = self._roll_forward_wide(entry)
                else:
                    with self._runs.wide(reading=True) as locked:
                        done = locked and self._roll_forward_wide(entry)
                        if done:
                            # Its writer died (it held the wide lock until done): so did its
                            # claim, which would keep every later call off the fast path.
                            self._journal.clear_claim()
            if not done:
                self._await_writer(action, entry)
            return
        ordered = sorted(entry.run_ids, key=dir_name)
        runs = {run_id: self._runs.get(run_id) for run_id in ordered}
        with self._os_errors(action), contextlib.ExitStack() as held:
            for run_id in ordered:
                if not held.enter_context(self._runs.exclusive(runs[run_id], reading=True)):
                    break
            else:
                self._roll_forward(entry, ordered, runs)
                return
        self._await_writer(action, entry)

    def _roll_forward(self, entry: Entry, ordered: list[str], runs: Mapping[str, Run]) -> None:
        """Complete an entry; the caller holds the locks of all its runs."""
        parts = self._journal.read(entry)
        if parts is None:
            return
        plans = [self._plan_part(entry, run_id, runs[run_id], parts[run_id]) for run_id in ordered]
        self._commit(plans)
        self._journal.drop(entry.path)

    def _roll_forward_wide(self, entry: Entry) -> bool:
        """Complete a wide entry a group of runs at a time; the caller holds the wide lock.

        Holding it, the caller knows the entry's writer is gone, so nobody cuts lines back
        meanwhile, and a writer of one of its runs waits for the wide lock too; each group is
        completed under its runs' locks as :meth:`_roll_forward` completes a whole entry.

        Returns:
            Whether it was completed: not where this process may not take the runs' locks.

        """
        parts = self._journal.read(entry)
        if parts is None:
            return True
        for group in _groups(sorted(entry.run_ids, key=dir_name)):
            runs = {run_id: self._runs.get(run_id) for run_id in group}
            with contextlib.ExitStack() as held:
                for run_id in group:
                    if not held.enter_context(self._runs.exclusive(runs[run_id], reading=True)):
                        return False
                self._commit(
                    [
                        self._plan_part(entry, run_id, runs[run_id], parts[run_id])
                        for run_id in group
                    ]
                )
        with contextlib.suppress(FileNotFoundError):  # a writer without the wide lock finished
            self._journal.drop(entry.path)
        return True

    def _plan_part(self, entry: Entry, run_id: str, run: Run, part: Part) -> _Plan:
        """Plan one run's part of a committed entry; the caller holds the run's locks."""
        rows, snap = part
        try:
            return self._plan(run_id, run, rows, snap)
        except SequenceConflict as exc:
            # Only a writer that ignores the journal can have taken the position.
            raise CorruptRecord(
                run_id,
                exc.seq,
                f"journal entry {entry.path} holds another event at "
                "this seq than the log; remove the entry or the line by hand",
            ) from exc

    def _await_writer(self, action: str, entry: Entry) -> None:
        """Wait for a writer at work to finish an entry this process cannot complete itself.

        Completing takes the locks of the entry's runs, which a process that may only read the
        folder cannot. A writer at work removes its entry within moments; one that stays was
        left by a writer that stopped, and only a process that can write may complete it.

        Raises:
            StoreUnavailable: The entry is still there after the wait.

        """
        deadline = time.monotonic() + _JOURNAL_WAIT_SECONDS
        while entry.path.exists():
            if time.monotonic() >= deadline:
                raise StoreUnavailable(
                    f"{action} failed on {self._where}: it holds a batch across runs that a "
                    "writer left unfinished, and this process cannot take the runs' locks "
                    "(the folder is read-only for it) to complete it; open the store once from "
                    "a process that can write to the folder"
                )
            time.sleep(_UNLOCKED_PAUSE)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the in-process indexes and refuse every later call; closing again is no error.

        No file stays open between calls, so there is nothing else to release; the handle is
        refused all the same, as the SQL stores refuse theirs, so that code which goes on
        using a store it closed fails the same way on every backend rather than only where
        closing happens to free something. The files stay for any other handle to open.
        """
        self._closed = True
        self._runs.clear()
