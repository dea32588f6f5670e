"""The JSONL store: plain files that survive crashes, readable with any text tool.

Layout::

    base_dir/
        .locks/<run dir>.lock   one lock file per run, outside the run's directory, so that
                                deleting a run never deletes a lock somebody holds
        .journal/<stamp>-<id>.entry
                                a batch that spans several runs, until every run has it
        <run dir>/
            events.jsonl        the run's log, one line per write
            snapshot.json       the latest snapshot saved on its own
            run_id              the real run id, only in directories with a hashed name

A run id becomes a directory name by a reversible escape: ``a-z``, ``0-9``, ``_`` and ``-`` stay,
every other UTF-8 byte becomes ``%XX``. Upper-case letters are escaped too, so that a
case-insensitive file system cannot merge ``"A"`` and ``"a"``, and ``.`` is escaped, so that no
name starts with a dot (those are the store's own: locks and runs being deleted) and no run id
can name ``..``. A name longer than 200 bytes is replaced by ``~`` and the SHA-256 of the run id.

Each write is one line, so that a crash tears at most one line and a batch is all or nothing:

- ``{...}``: one event, as ``PAEvent.to_dict()``;
- ``[{...}, ...]``: a batch of one run's events;
- ``{"events": [...], "snapshot": {...}}``: a batch saved together with the state after it.

A batch saved with a snapshot is also copied to ``snapshot.json``. ``snapshot.json`` holds
``{"log_end": N, "state": {...}}``, where ``N`` is the length of the log when it was written:
a snapshot in the log that ends after ``N`` was written later. Readers take the best of the two
(highest ``seq``, the later write on a tie), so a crash between the log line and the file loses
nothing. Files written by the seed (one event per line, a bare state in ``snapshot.json``) read
as they are.

A batch that writes to several runs is first written whole to a journal entry: a header line
``{"runs": [...]}``, then each run's line in the header's order (the run that gets the snapshot
carries it in the ``{"events": ..., "snapshot": ...}`` form). The entry is written to
``.journal/<run dir>.tmp``, fsynced and renamed to its ``.entry`` name: the rename is the
batch's commit. Then each run gets its line and the entry is removed. Every operation on a run
first completes the entries that name it (under all their runs' locks, lines whose events are
already there being no-ops), so a crash between two runs' lines is rolled forward before
anybody can see one run with the batch and another without. A ``.tmp`` file is a journal entry
that was never committed: it is ignored, and removed by the next writer that holds the lock of
the run it is named after (its writer held that lock until the rename).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import itertools
import os
import re
import shutil
import threading
import urllib.parse
import uuid
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from filelock import FileLock

from purpose_agent.clock import stamp_ns
from purpose_agent.codec import decode, encode
from purpose_agent.errors import (
    CorruptRecord,
    InvalidInput,
    InvalidRunId,
    SequenceConflict,
    StoreUnavailable,
)
from purpose_agent.protocol import ClosingContext, Recovery
from purpose_agent.records import (
    EventRow,
    StateRow,
    check_limit,
    check_run_id,
    check_since,
    decode_event_dict,
    decode_state,
    event_row,
    event_rows,
    state_row,
)
from purpose_agent.runtime.events import PAEvent
from purpose_agent.runtime.state import RunState

EVENTS_FILE = "events.jsonl"
SNAPSHOT_FILE = "snapshot.json"
RUN_ID_FILE = "run_id"
_LOCKS_DIR = ".locks"
_JOURNAL_DIR = ".journal"
_ENTRY_SUFFIX = ".entry"
_TEMP_SUFFIX = ".tmp"
_SNAPSHOT_TEMP = SNAPSHOT_FILE + _TEMP_SUFFIX

# 200 leaves room for the ".lock" and ".tmp" suffixes under the common 255-byte name limit.
_MAX_NAME = 200
_PAGE = 1000
_CHUNK = 1 << 20
_TAIL = 32
_CACHED_LINES = 8
_MAX_SEQ = 2**63
# Contended writers poll the lock; a short interval keeps several processes appending to one run
# at disk speed instead of at the poll rate.
_POLL_SECONDS = 0.001

_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{port}{n}" for port in ("com", "lpt") for n in range(10)]
)
_PLAIN_NAME = re.compile(r"(?:[a-z0-9_-]|%[0-9A-F]{2})+")
_HASHED_NAME = re.compile(r"~[0-9a-f]{64}")
_SEQ_IN_LINE = re.compile(rb'"seq"\s*:\s*(\d{1,19})')
_BINARY = getattr(os, "O_BINARY", 0)
_generations = itertools.count()


@functools.lru_cache(maxsize=4096)
def _dir_name(run_id: str) -> str:
    raw = run_id.encode("utf-8")
    name = "".join(chr(byte) if byte in _KEPT else f"%{byte:02X}" for byte in raw)
    if name in _WINDOWS_DEVICES:
        # Windows refuses these names whatever the case; escaping one letter keeps them valid.
        name = f"%{raw[0]:02X}{name[1:]}"
    if len(name) > _MAX_NAME:
        return "~" + hashlib.sha256(raw).hexdigest()
    return name


def _plain_run_id(name: str) -> str | None:
    """Invert :func:`_dir_name` for unhashed names; ``None`` for a name the store never writes."""
    if not _PLAIN_NAME.fullmatch(name):
        return None
    try:
        run_id = check_run_id(urllib.parse.unquote_to_bytes(name).decode("utf-8"))
    except (UnicodeDecodeError, InvalidRunId):
        return None
    # Only the canonical spelling is a run: "%61" and "a" must not both claim run "a".
    return run_id if _dir_name(run_id) == name else None


@dataclass(eq=False)
class _Index:
    """What this process knows about one run's log, extended by reading only new bytes.

    ``seqs`` and ``offsets`` are parallel and sorted by seq: the start of the line that holds
    each event. ``lines`` holds the start of every line in file order, so a line's end is the
    next line's start. ``tail`` is the last bytes indexed: if they changed, the file was
    replaced (a deleted run written again can reuse the inode and grow past the old size).
    """

    identity: tuple[int, int] | None = None
    generation: int = field(default_factory=lambda: next(_generations))
    scanned: int = 0
    tail: bytes = b""
    seqs: array[int] = field(default_factory=lambda: array("q"))
    offsets: array[int] = field(default_factory=lambda: array("q"))
    lines: array[int] = field(default_factory=lambda: array("q"))
    snap_seq: int = -1
    snap_offset: int = -1
    snap_end: int = -1

    def find(self, seq: int) -> int | None:
        """Return the offset of the line holding ``seq``, or ``None``."""
        i = bisect.bisect_left(self.seqs, seq)
        if i < len(self.seqs) and self.seqs[i] == seq:
            return self.offsets[i]
        return None

    def add_line(self, start: int, end: int, seqs: Iterable[int], snap_seq: int | None) -> None:
        """Record a complete line from ``start`` to ``end`` (just past its newline)."""
        for seq in seqs:
            if not self.seqs or seq > self.seqs[-1]:
                self.seqs.append(seq)
                self.offsets.append(start)
            else:
                i = bisect.bisect_left(self.seqs, seq)
                self.seqs.insert(i, seq)
                self.offsets.insert(i, start)
        # ">=": of two snapshots with one seq, the later line is the later write.
        if snap_seq is not None and snap_seq >= self.snap_seq:
            self.snap_seq, self.snap_offset, self.snap_end = snap_seq, start, end
        self.lines.append(start)
        self.scanned = end


class _Run:
    """One run's in-process state: a mutex for this process's threads, a file lock for others."""

    def __init__(self, name: str, lock_path: Path) -> None:
        self.name = name
        self.names = frozenset([name])
        self.mutex = threading.Lock()
        self.file_lock = FileLock(str(lock_path), poll_interval=_POLL_SECONDS)
        self.index = _Index()


class _Line(NamedTuple):
    records: list[dict[str, Any]]
    snapshot: dict[str, Any] | None


class _StoredSnapshot(NamedTuple):
    state: RunState
    log_end: int


@dataclass
class _Plan:
    """What one run's part of a write will do, decided under the run's locks."""

    run_id: str
    run: _Run
    rows: list[EventRow]
    snapshot: StateRow | None
    snapshot_wins: bool
    size: int
    exists: bool


class _Entry(NamedTuple):
    """A committed journal entry: a batch that spans several runs, not yet known to be done."""

    path: Path
    run_ids: tuple[str, ...]


class _Appended(NamedTuple):
    plan: _Plan
    path: Path
    start: int
    line: bytes
    identity: tuple[int, int]
    snap_seq: int | None


def _test_hook(point: str, run_id: str | None = None) -> None:
    """Do nothing: a test hook, called at each step of a batch that spans several runs.

    ``point`` is ``"journal-temp"`` (the entry is written but not yet renamed into place),
    ``"journal"`` (the entry is committed, no run has its line yet) or ``"appended"`` (``run_id``
    has its line). Crash tests replace this module attribute in a child process to stop or kill
    it at one of these steps. It is not part of the package's API.
    """


@contextlib.contextmanager
def _os_errors(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StoreUnavailable(f"{action} failed: {exc}") from exc


def _seq_hint(line: bytes) -> int | None:
    match = _SEQ_IN_LINE.search(line)
    return int(match.group(1)) if match else None


def _record_seq(run_id: str, record: object, hint: int | None) -> int:
    seq = record.get("seq") if isinstance(record, dict) else None
    if type(seq) is not int or not 1 <= seq < _MAX_SEQ:
        shown = seq if type(seq) is int else hint
        raise CorruptRecord(run_id, shown, f"not an event with a valid seq: {record!r:.80}")
    return seq


def _parse_line(run_id: str, line: bytes, offset: int) -> _Line:
    """Decode one log line in any of its three forms (or the seed's)."""
    try:
        value = decode(line)
    except (ValueError, UnicodeDecodeError) as exc:
        detail = f"the line at byte {offset} of {EVENTS_FILE} is not JSON: {exc}"
        raise CorruptRecord(run_id, _seq_hint(line), detail) from exc
    snapshot = None
    if isinstance(value, dict) and "events" in value:
        snapshot, value = value.get("snapshot"), value["events"]
        if not isinstance(snapshot, dict) or not isinstance(value, list):
            raise CorruptRecord(
                run_id, _seq_hint(line), f"the batch at byte {offset} of {EVENTS_FILE} is malformed"
            )
        seq = snapshot.get("seq")
        if type(seq) is not int or not 0 <= seq < _MAX_SEQ:
            raise CorruptRecord(run_id, None, f"the snapshot at byte {offset} has no valid seq")
    elif isinstance(value, dict):
        value = [value]
    elif not isinstance(value, list):
        raise CorruptRecord(run_id, None, f"the line at byte {offset} is not an event or a batch")
    for record in value:
        _record_seq(run_id, record, _seq_hint(line))
    return _Line(value, snapshot)


def _stored_row(run_id: str, record: dict[str, Any], seq: int) -> EventRow:
    """Encode a stored event the way a new one is encoded, so the two compare exactly."""
    event = decode_event_dict(run_id, record, seq)
    try:
        return event_row(event)
    except InvalidInput as exc:
        raise CorruptRecord(run_id, seq, f"stored event is not storable as it is: {exc}") from exc


def _event_json(row: EventRow) -> str:
    head = encode(
        {
            "run_id": row.run_id,
            "seq": row.seq,
            "kind": row.kind,
            "ts": row.ts,
            "lane_id": row.lane_id,
        }
    )
    # row.data was encoded (and checked) by event_row; splicing it in saves encoding it twice.
    return f'{head[:-1]},"data":{row.data}}}'


def _line_bytes(rows: list[EventRow], snapshot: StateRow | None) -> bytes:
    events = [_event_json(row) for row in rows]
    if snapshot is not None:
        text = f'{{"events":[{",".join(events)}],"snapshot":{snapshot.state}}}'
    elif len(events) == 1:
        text = events[0]
    else:
        text = f"[{','.join(events)}]"
    return f"{text}\n".encode()


def _header_runs(header: bytes) -> tuple[str, ...]:
    """Decode a journal entry's first line: the distinct runs its batch writes to."""
    record = decode(header)
    run_ids = record.get("runs") if isinstance(record, dict) else None
    if not isinstance(run_ids, list) or len(run_ids) < 2:
        raise ValueError("the header names no list of runs")
    checked = tuple(check_run_id(run_id) for run_id in run_ids)
    if len(set(checked)) != len(checked):
        raise ValueError("the header names a run twice")
    return checked


def _pread_exact(run_id: str, fd: int, offset: int, size: int) -> bytes:
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            raise CorruptRecord(run_id, None, f"{EVENTS_FILE} ends before byte {offset + size}")
        parts.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    # One os.write normally takes the whole line; the loop only matters after a partial write
    # (a signal, a nearly full disk), and the run's lock keeps anybody from writing in between.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    """Make a create, rename or delete in ``path`` durable."""
    if os.name == "nt":  # directories cannot be opened there; NTFS journals renames itself
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, stamp: int | None) -> None:
    """Write ``data`` to ``path`` durably, ready to be renamed over the real file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _BINARY, 0o644)
    try:
        _write_all(fd, data)
        if stamp is not None:
            os.utime(path, ns=(stamp, stamp))
        os.fsync(fd)
    finally:
        os.close(fd)


def _written_ns(run_dir: Path) -> int | None:
    stamps = []
    for name in (EVENTS_FILE, SNAPSHOT_FILE):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            info = (run_dir / name).stat()
            # An empty log is a write that was rolled back or never happened: no run yet.
            if info.st_size:
                stamps.append(info.st_mtime_ns)
    return max(stamps) if stamps else None


def _undo_append(plan: _Plan, path: Path, start: int) -> bool:
    """Cut a line of a failed write back off, so that no part of the write stays behind.

    Returns whether that worked. It is best effort: the error that stopped the write is the one
    the caller needs to see.
    """
    try:
        if plan.exists:
            os.truncate(path, start)
        else:
            os.unlink(path)
    except OSError:
        return False
    return True


class _LineReader:
    """Decodes each log line once per read, however many of its events the read returns.

    Each record is handed out once and then dropped, so events returned to a caller never share
    a ``data`` dict with a cache, and a batch line of thousands of events is decoded once, not
    once per event.
    """

    def __init__(self) -> None:
        self._lines: OrderedDict[tuple[int, int], dict[int, dict[str, Any]]] = OrderedDict()

    def record(self, run_id: str, fd: int, index: _Index, seq: int, offset: int) -> dict[str, Any]:
        key = (index.generation, offset)
        records = self._lines.get(key)
        if records is None or seq not in records:
            i = bisect.bisect_right(index.lines, offset)
            end = index.lines[i] if i < len(index.lines) else index.scanned
            line = _parse_line(run_id, _pread_exact(run_id, fd, offset, end - offset), offset)
            records = {record["seq"]: record for record in line.records}
            self._lines[key] = records
            if len(self._lines) > _CACHED_LINES:
                self._lines.popitem(last=False)
        else:
            self._lines.move_to_end(key)
        record = records.pop(seq, None)
        if not records:
            self._lines.pop(key, None)
        if record is None:
            raise CorruptRecord(run_id, seq, f"the line at byte {offset} no longer holds this seq")
        return record

    def event(self, run_id: str, fd: int, index: _Index, seq: int, offset: int) -> PAEvent:
        return decode_event_dict(run_id, self.record(run_id, fd, index, seq, offset), seq)


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
    batch that writes to one run only needs no journal (its line is atomic on its own).

    Args:
        base_dir: The directory that holds the runs; created if missing.

    Raises:
        StoreUnavailable: If ``base_dir`` cannot be created.

    """

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        self.base_dir = Path(base_dir)
        self._locks_dir = self.base_dir / _LOCKS_DIR
        self._journal_dir = self.base_dir / _JOURNAL_DIR
        self._journal_str = str(self._journal_dir)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        with _os_errors(f"creating {self.base_dir}"):
            self._locks_dir.mkdir(parents=True, exist_ok=True)
            self._journal_dir.mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.base_dir)!r})"

    def run_path(self, run_id: str) -> Path:
        """Return the directory that holds a run's files, for backups and inspection.

        Args:
            run_id: The run.

        Returns:
            The directory (it may not exist yet).

        Raises:
            InvalidRunId: If the run id is not acceptable.

        """
        return self.base_dir / _dir_name(check_run_id(run_id))

    # -- writes ---------------------------------------------------------------------------

    def save_event(self, event: PAEvent) -> None:
        """Append one event; durable when this returns.

        Args:
            event: The event to append.

        Raises:
            InvalidInput: The event cannot be stored exactly; nothing is written.
            SequenceConflict: The run holds a different event at this seq. An equal event is
                a no-op, so retrying after an ambiguous failure is safe.
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
            StoreUnavailable: The file system refused the write; nothing is written.

        """
        rows = event_rows(events)
        snap = state_row(snapshot.run_id, snapshot) if snapshot is not None else None
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

    def _write(self, rows: list[EventRow], snap: StateRow | None) -> None:
        by_run: dict[str, list[EventRow]] = {}
        for row in rows:
            by_run.setdefault(row.run_id, []).append(row)
        if snap is not None:
            by_run.setdefault(snap.run_id, [])
        if not by_run:
            return
        # Every writer takes the locks of a batch in the same order, so batches cannot deadlock.
        ordered = sorted(by_run, key=_dir_name)
        action = "writing to " + ", ".join(map(repr, ordered))
        runs = {run_id: self._run(run_id) for run_id in ordered}
        with _os_errors(action), self._settled(ordered, [runs[run_id] for run_id in ordered]):
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
        entry = self._write_entry(parts)
        self._commit(plans, entry)
        self._drop_entry(entry)

    def _plan(self, run_id: str, run: _Run, rows: list[EventRow], snap: StateRow | None) -> _Plan:
        """Check one run's part of a write against what is stored; nothing is written here."""
        fd = self._open_log(run)
        try:
            size = self._refresh(run_id, run, fd)
            index = run.index
            reader = _LineReader()
            new: list[EventRow] = []
            for row in rows:
                offset = index.find(row.seq)
                if offset is None:
                    new.append(row)
                    continue
                assert fd is not None  # an indexed seq implies an open log
                record = reader.record(run_id, fd, index, row.seq, offset)
                if not _stored_row(run_id, record, row.seq).same_as(row):
                    raise SequenceConflict(run_id, row.seq)
        finally:
            if fd is not None:
                os.close(fd)
        wins = False
        if snap is not None:
            stored_snap = self._read_snapshot_file(run_id, run)
            best = max(stored_snap.state.seq if stored_snap else -1, index.snap_seq)
            wins = snap.seq >= best
        return _Plan(run_id, run, new, snap, wins, size, fd is not None)

    def _commit(self, plans: list[_Plan], entry: Path | None = None) -> None:
        """Append each run's line, then rename the new snapshot file into place.

        Until the rename, a failure cuts the appended lines back off, so a failed batch leaves
        no part of itself behind; the rename itself is atomic. ``entry`` is the journal entry
        of the batch when this is its first attempt: it is removed too when everything was cut
        back off, and kept (to be rolled forward) when something could not be.
        """
        appended: list[_Appended] = []
        snapshot_plan = next((plan for plan in plans if plan.snapshot is not None), None)
        target: Path | None = None
        try:
            for plan in plans:
                if plan.rows:
                    appended.append(self._append(plan))
                    if entry is not None:
                        _test_hook("appended", plan.run_id)
            if snapshot_plan is not None and snapshot_plan.snapshot_wins:
                temp, target = self._prepare_snapshot(snapshot_plan, appended)
                os.replace(temp, target)
        except BaseException:
            undone = [_undo_append(done.plan, done.path, done.start) for done in appended]
            if snapshot_plan is not None and snapshot_plan.snapshot_wins:
                # The rename is the try block's last step, so it has not happened.
                with contextlib.suppress(OSError):
                    (self.base_dir / snapshot_plan.run.name / _SNAPSHOT_TEMP).unlink()
            if entry is not None and all(undone):
                with contextlib.suppress(OSError):
                    self._drop_entry(entry)
            raise
        for done in appended:
            self._note_appended(done)
        if target is not None:
            _fsync_dir(target.parent)
        elif snapshot_plan is not None and not snapshot_plan.rows:
            self._touch(snapshot_plan)

    @staticmethod
    def _note_appended(done: _Appended) -> None:
        """Add a line this handle wrote to its index without reading it back."""
        run = done.plan.run
        index = run.index
        if index.identity is None and index.scanned == 0:  # the write created the log
            index.identity = done.identity
        if index.identity != done.identity or index.scanned != done.start:
            # Cannot happen while the lock is held; rebuilding on the next read is always right.
            run.index = _Index()
            return
        seqs = (row.seq for row in done.plan.rows)
        index.add_line(done.start, done.start + len(done.line), seqs, done.snap_seq)
        index.tail = done.line[-_TAIL:]

    def _append(self, plan: _Plan) -> _Appended:
        run_dir = self._ensure_run_dir(plan.run_id, plan.run.name)
        path = run_dir / EVENTS_FILE
        start = plan.run.index.scanned
        embedded = plan.snapshot if plan.snapshot is not None and plan.snapshot_wins else None
        line = _line_bytes(plan.rows, embedded)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _BINARY, 0o644)
            try:
                if plan.size > start:
                    # A crashed writer left a line without its newline; readers skip it, and
                    # the next line must not be glued onto it.
                    os.ftruncate(fd, start)
                _write_all(fd, line)
                stamp = stamp_ns()
                os.utime(path, ns=(stamp, stamp))
                os.fsync(fd)
                info = os.fstat(fd)
            finally:
                os.close(fd)
            if not plan.exists:
                _fsync_dir(run_dir)
        except BaseException:
            _undo_append(plan, path, start)
            raise
        snap_seq = embedded.seq if embedded is not None else None
        return _Appended(plan, path, start, line, (info.st_dev, info.st_ino), snap_seq)

    def _prepare_snapshot(self, plan: _Plan, appended: list[_Appended]) -> tuple[Path, Path]:
        """Write the new snapshot file next to the old one, ready to be renamed over it."""
        assert plan.snapshot is not None
        log_end = plan.run.index.scanned
        for done in appended:
            if done.plan is plan:
                log_end = done.start + len(done.line)
        run_dir = self._ensure_run_dir(plan.run_id, plan.run.name)
        temp = run_dir / _SNAPSHOT_TEMP
        text = f'{{"log_end":{log_end},"state":{plan.snapshot.state}}}\n'
        _write_temp(temp, text.encode(), stamp_ns())
        return temp, run_dir / SNAPSHOT_FILE

    def _touch(self, plan: _Plan) -> None:
        """Count an ignored older snapshot as a write in ``list_runs``, like the memory store."""
        run_dir = self.base_dir / plan.run.name
        stamp = stamp_ns()
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
        _fsync_dir(self.base_dir)
        return path

    @staticmethod
    def _write_run_id(path: Path, run_id: str) -> None:
        temp = path / (RUN_ID_FILE + _TEMP_SUFFIX)
        _write_temp(temp, run_id.encode(), None)
        os.replace(temp, path / RUN_ID_FILE)
        _fsync_dir(path)

    # -- reads ----------------------------------------------------------------------------

    def load_latest(self, run_id: str) -> RunState | None:
        """Return the snapshot with the highest ``seq``, or ``None``.

        Args:
            run_id: The run.

        Returns:
            The best of ``snapshot.json`` and the snapshots saved inside the log.

        Raises:
            CorruptRecord: ``snapshot.json`` or the log cannot be decoded.
            StoreUnavailable: The files cannot be read.

        """
        check_run_id(run_id)
        run = self._run(run_id)
        with _os_errors(f"reading run {run_id!r}"):
            self._settle(run.names, run_id)
            # The file first, then the log: a batch writes the log first, so whatever this
            # misses in the file it finds in the log.
            stored = self._read_snapshot_file(run_id, run)
            with run.mutex:
                fd = self._open_log(run)
                try:
                    self._refresh(run_id, run, fd)
                    return self._best_snapshot(run_id, run, fd, stored)
                finally:
                    if fd is not None:
                        os.close(fd)

    def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[PAEvent]:
        """Return events with ``seq > since_seq`` in ascending ``seq``, at most ``limit``.

        Args:
            run_id: The run.
            since_seq: Only events after this seq.
            limit: At most this many events; ``None`` for all.

        Returns:
            The events, in ascending seq whatever order they were written in.

        Raises:
            CorruptRecord: A line other than a torn last one cannot be decoded.
            StoreUnavailable: The log cannot be read.

        """
        check_run_id(run_id)
        check_since(since_seq, limit)
        run = self._run(run_id)
        with _os_errors(f"reading run {run_id!r}"):
            self._settle(run.names, run_id)
            with run.mutex:
                return self._events_after(run_id, run, since_seq, limit, _LineReader())

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        """Stream events with ``seq > since_seq`` in ascending ``seq``, a page at a time.

        Only one page of events and the lines it comes from are in memory at once, and no lock
        is held between pages.

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
        run = self._run(run_id)
        reader = _LineReader()
        while True:
            with _os_errors(f"reading run {run_id!r}"):
                self._settle(run.names, run_id)
                with run.mutex:
                    page = self._events_after(run_id, run, since_seq, _PAGE, reader)
            yield from page
            if len(page) < _PAGE:
                return
            since_seq = page[-1].seq

    def recover(self, run_id: str) -> Recovery | None:
        """Return the latest snapshot and exactly the events after it.

        Both are read under the run's lock, so no write lands between them.

        Args:
            run_id: The run.

        Returns:
            The recovery, or ``None`` if the run has neither events nor snapshots.

        Raises:
            CorruptRecord: The snapshot or a log line cannot be decoded.
            StoreUnavailable: The files cannot be read.

        """
        check_run_id(run_id)
        run = self._run(run_id)
        with _os_errors(f"recovering run {run_id!r}"), self._settled([run_id], [run]):
            stored = self._read_snapshot_file(run_id, run)
            fd = self._open_log(run)
            try:
                self._refresh(run_id, run, fd)
                state = self._best_snapshot(run_id, run, fd, stored)
                if state is None and not run.index.seqs:
                    return None
                since = state.seq if state is not None else 0
                events = self._events_after(run_id, run, since, None, _LineReader(), fd=fd)
            finally:
                if fd is not None:
                    os.close(fd)
        return Recovery(state, events)

    def _events_after(
        self,
        run_id: str,
        run: _Run,
        since_seq: int,
        limit: int | None,
        reader: _LineReader,
        *,
        fd: int | None = None,
    ) -> list[PAEvent]:
        """Read events after ``since_seq``; the caller holds the run's mutex."""
        own = fd is None
        if own:
            fd = self._open_log(run)
            self._refresh(run_id, run, fd)
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
        self, run_id: str, run: _Run, fd: int | None, stored: _StoredSnapshot | None
    ) -> RunState | None:
        index = run.index
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
        line = _parse_line(
            run_id,
            _pread_exact(run_id, fd, index.snap_offset, index.snap_end - index.snap_offset),
            index.snap_offset,
        )
        return decode_state(run_id, line.snapshot, index.snap_seq)

    def _read_snapshot_file(self, run_id: str, run: _Run) -> _StoredSnapshot | None:
        path = self.base_dir / run.name / SNAPSHOT_FILE
        try:
            text = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            record = decode(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptRecord(
                run_id, None, f"{path} is not JSON ({exc}); restore it from a backup or remove it"
            ) from exc
        if isinstance(record, dict) and "state" in record and "run_id" not in record:
            log_end = record.get("log_end")
            if type(log_end) is not int:
                raise CorruptRecord(run_id, None, f"{path} has no valid log_end")
            return _StoredSnapshot(decode_state(run_id, record["state"]), log_end)
        # The seed wrote the bare state, and no log snapshots: any log snapshot is newer.
        return _StoredSnapshot(decode_state(run_id, record), -1)

    # -- the index ------------------------------------------------------------------------

    def _open_log(self, run: _Run) -> int | None:
        try:
            return os.open(self.base_dir / run.name / EVENTS_FILE, os.O_RDONLY | _BINARY)
        except (FileNotFoundError, NotADirectoryError):
            run.index = _Index()
            return None

    def _refresh(self, run_id: str, run: _Run, fd: int | None) -> int:
        """Bring the run's index up to date with the open log; return the log's size.

        Only bytes after the last indexed line are read. A log that shrank, was replaced or
        whose last indexed bytes changed is indexed again from the start. A last line without
        its newline is a write that crashed or is still in flight: it is left out.
        """
        if fd is None:
            return 0
        info = os.fstat(fd)
        identity = (info.st_dev, info.st_ino)
        index = run.index
        if (
            index.identity != identity
            or info.st_size < index.scanned
            or os.pread(fd, len(index.tail), index.scanned - len(index.tail)) != index.tail
        ):
            index = run.index = _Index(identity=identity)
        if info.st_size > index.scanned:
            self._scan(run_id, fd, index, info.st_size)
        return info.st_size

    def _scan(self, run_id: str, fd: int, index: _Index, size: int) -> None:
        base = index.scanned
        pending = bytearray()
        position = base
        while position < size:
            chunk = os.pread(fd, min(_CHUNK, size - position), position)
            if not chunk:
                break
            position += len(chunk)
            pending += chunk
            cut = 0
            while (newline := pending.find(b"\n", cut)) >= 0:
                self._index_line(run_id, fd, index, bytes(pending[cut:newline]), base + cut)
                cut = newline + 1
            del pending[:cut]
            base += cut
        if index.scanned:
            keep = min(_TAIL, index.scanned)
            index.tail = os.pread(fd, keep, index.scanned - keep)

    def _index_line(self, run_id: str, fd: int, index: _Index, line: bytes, start: int) -> None:
        end = start + len(line) + 1
        if not line.strip():
            index.scanned = end
            return
        parsed = _parse_line(run_id, line, start)
        seqs: list[int] = []
        here: dict[int, dict[str, Any]] = {}
        for record in parsed.records:
            seq: int = record["seq"]
            earlier = here.get(seq)
            if earlier is None and (offset := index.find(seq)) is not None:
                earlier = _LineReader().record(run_id, fd, index, seq, offset)
            if earlier is None:
                here[seq] = record
                seqs.append(seq)
            elif not _stored_row(run_id, earlier, seq).same_as(_stored_row(run_id, record, seq)):
                # Only a log written by hand (or by the seed, which never checked) gets here.
                raise CorruptRecord(run_id, seq, "the log holds two different events at this seq")
        snap_seq = parsed.snapshot["seq"] if parsed.snapshot is not None else None
        index.add_line(start, end, seqs, snap_seq)

    # -- runs -----------------------------------------------------------------------------

    def list_runs(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """Return the ids of runs with events or snapshots, most recently written first.

        Every write stamps the file it wrote with a nanosecond time from
        :func:`~purpose_agent.clock.stamp_ns`, so the order holds for writes within one clock
        tick as well.

        Args:
            limit: At most this many ids; ``None`` for all.
            offset: Skip this many ids first.

        Returns:
            The run ids.

        Raises:
            CorruptRecord: A hashed run directory has lost its ``run_id`` file.
            StoreUnavailable: ``base_dir`` cannot be read.

        """
        check_limit(limit)
        check_limit(offset, "offset")
        with _os_errors(f"listing runs in {self.base_dir}"):
            self._settle(None, str(self._journal_dir))
            found: list[tuple[int, str]] = []
            with os.scandir(self.base_dir) as entries:
                for entry in entries:
                    name = entry.name
                    if not entry.is_dir(follow_symlinks=False) or not (
                        _HASHED_NAME.fullmatch(name) or _plain_run_id(name) is not None
                    ):
                        continue
                    written = _written_ns(Path(entry.path))
                    if written is not None:
                        found.append((written, name))
            found.sort(key=lambda item: (-item[0], item[1]))
            chosen = found[offset:] if limit is None else found[offset : offset + limit]
            ids = (self._run_id_of(name) for _, name in chosen)
            return [run_id for run_id in ids if run_id is not None]

    def _run_id_of(self, name: str) -> str | None:
        plain = _plain_run_id(name)
        if plain is not None:
            return plain
        path = self.base_dir / name / RUN_ID_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if not path.parent.exists():
                return None  # deleted since it was listed
            raise CorruptRecord(name, None, f"{path} is missing") from None
        try:
            run_id = check_run_id(raw.decode("utf-8"))
        except (UnicodeDecodeError, InvalidRunId) as exc:
            raise CorruptRecord(name, None, f"{path} does not hold a valid run id") from exc
        if _dir_name(run_id) != name:
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
        run = self._run(run_id)
        # A batch that names this run is completed first (all its runs get their part), so
        # deleting a run never leaves another run with half a batch.
        with _os_errors(f"deleting run {run_id!r}"), self._settled([run_id], [run]):
            doomed = self.base_dir / f".deleted-{uuid.uuid4().hex}"
            run.index = _Index()
            try:
                (self.base_dir / run.name).rename(doomed)
            except FileNotFoundError:
                return
            _fsync_dir(self.base_dir)
            shutil.rmtree(doomed)

    # -- locks ----------------------------------------------------------------------------

    def _run(self, run_id: str) -> _Run:
        name = _dir_name(run_id)
        with self._lock:
            run = self._runs.get(name)
            if run is None:
                run = self._runs[name] = _Run(name, self._locks_dir / f"{name}.lock")
            return run

    @contextlib.contextmanager
    def _exclusive(self, run: _Run) -> Iterator[None]:
        """Hold the run against this process's threads and against other processes."""
        with run.mutex:
            try:
                run.file_lock.acquire()
            except FileNotFoundError:
                # Somebody removed .locks; the lock file only has to exist while it is held.
                self._locks_dir.mkdir(parents=True, exist_ok=True)
                run.file_lock.acquire()
            try:
                yield
            finally:
                run.file_lock.release()

    @contextlib.contextmanager
    def _settled(self, run_ids: list[str], runs: list[_Run]) -> Iterator[None]:
        """Hold the runs' locks, in the order given, with no journal entry pending for them.

        While the locks are held, an entry that names one of the runs cannot belong to a writer
        at work (it would hold that lock until it removed the entry): its writer died. It is
        completed with the locks let go, since completing takes the locks of all its runs in
        their own order, and then the locks are taken again.
        """
        names = frozenset(run.name for run in runs)
        while True:
            with contextlib.ExitStack() as held:
                for run in runs:
                    held.enter_context(self._exclusive(run))
                pending = self._pending(names, run_ids[0], holding=True)
                if not pending:
                    yield
                    return
            for entry in pending:
                self._complete(entry)

    # -- the journal ----------------------------------------------------------------------

    def _settle(self, names: frozenset[str] | None, subject: str) -> None:
        """Complete the journal entries that name any of these runs (every entry for ``None``).

        The caller holds no lock. An entry whose writer is still at work is waited for: its
        writer holds the locks that completing it takes, and removes it before letting go.
        """
        try:
            if not os.listdir(self._journal_str):
                return  # the hot path: nothing pending anywhere
        except FileNotFoundError:
            return
        for entry in self._pending(names, subject):
            self._complete(entry)

    def _pending(
        self, names: frozenset[str] | None, subject: str, *, holding: bool = False
    ) -> list[_Entry]:
        """Return the committed entries that name any of these runs, oldest first.

        This is the check every operation makes: one directory listing, empty but for a batch
        in flight or a crashed writer's. With ``holding`` (the caller holds the runs' locks),
        uncommitted entries named after these runs are removed: their writers are gone.
        """
        try:
            listing = os.listdir(self._journal_str)
        except FileNotFoundError:
            return []
        if not listing:
            return []
        found: list[_Entry] = []
        for file_name in sorted(listing):
            path = self._journal_dir / file_name
            if file_name.endswith(_ENTRY_SUFFIX):
                run_ids = self._entry_runs(path, subject)
                if run_ids is not None and (
                    names is None or not names.isdisjoint(map(_dir_name, run_ids))
                ):
                    found.append(_Entry(path, run_ids))
            elif (
                holding
                and names is not None
                and file_name.endswith(_TEMP_SUFFIX)
                and file_name[: -len(_TEMP_SUFFIX)] in names
            ):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return found

    @staticmethod
    def _entry_runs(path: Path, subject: str) -> tuple[str, ...] | None:
        """Read the runs an entry names from its first line; ``None`` if it is gone."""
        try:
            with path.open("rb") as file:
                header = file.readline()
        except FileNotFoundError:
            return None  # completed since the listing
        try:
            return _header_runs(header)
        except (ValueError, UnicodeDecodeError) as exc:
            # Committed entries are fsynced before they are renamed into place, so only damage
            # from outside gets here; which runs the batch was for cannot be known.
            raise CorruptRecord(
                subject,
                None,
                f"journal entry {path} has no readable header ({exc}); it may "
                "hold a batch for this run: restore it from a backup or remove it",
            ) from exc

    def _write_entry(self, plans: list[_Plan]) -> Path:
        """Commit a batch to the journal: written, fsynced, then renamed into place."""
        header = encode({"runs": [plan.run_id for plan in plans]}, "journal header")
        data = b"".join(
            [f"{header}\n".encode()] + [_line_bytes(plan.rows, plan.snapshot) for plan in plans]
        )
        # Named after a run whose lock this writer holds until the rename, so that whoever
        # holds that lock next knows a leftover is a dead writer's.
        temp = self._journal_dir / (plans[0].run.name + _TEMP_SUFFIX)
        entry = self._journal_dir / f"{stamp_ns():020d}-{uuid.uuid4().hex}{_ENTRY_SUFFIX}"
        try:
            try:
                _write_temp(temp, data, None)
            except FileNotFoundError:
                self._journal_dir.mkdir(parents=True, exist_ok=True)
                _write_temp(temp, data, None)
            _test_hook("journal-temp")
            os.replace(temp, entry)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        try:
            _fsync_dir(self._journal_dir)
        except BaseException:
            with contextlib.suppress(OSError):
                entry.unlink()
            raise
        _test_hook("journal")
        return entry

    def _drop_entry(self, entry: Path) -> None:
        """Remove a done entry, durably: come back after a power cut, it would be done again."""
        entry.unlink()
        _fsync_dir(self._journal_dir)

    def _complete(self, entry: _Entry) -> None:
        """Roll an entry forward: give each of its runs what it does not have yet, then drop it.

        Its lines are planned like a new write, so events a run already holds are skipped and
        completing an entry twice, or after its writer finished, does nothing more.
        """
        ordered = sorted(entry.run_ids, key=_dir_name)
        runs = {run_id: self._run(run_id) for run_id in ordered}
        with _os_errors(f"completing journal entry {entry.path}"), contextlib.ExitStack() as held:
            for run_id in ordered:
                held.enter_context(self._exclusive(runs[run_id]))
            try:
                data = entry.path.read_bytes()
            except FileNotFoundError:
                return  # its writer finished it, or another handle completed it
            parts = self._entry_parts(entry, data)
            plans: list[_Plan] = []
            for run_id in ordered:
                rows, snap = parts[run_id]
                try:
                    plans.append(self._plan(run_id, runs[run_id], rows, snap))
                except SequenceConflict as exc:
                    # Only a writer that ignores the journal can have taken the position.
                    raise CorruptRecord(
                        run_id,
                        exc.seq,
                        f"journal entry {entry.path} holds another event at "
                        "this seq than the log; remove the entry or the line by hand",
                    ) from exc
            self._commit(plans)
            self._drop_entry(entry.path)

    @staticmethod
    def _entry_parts(
        entry: _Entry, data: bytes
    ) -> dict[str, tuple[list[EventRow], StateRow | None]]:
        """Decode each run's part of a committed entry."""
        lines = data.split(b"\n")
        if lines[-1] or len(lines) != len(entry.run_ids) + 2:
            raise CorruptRecord(
                entry.run_ids[0],
                None,
                f"journal entry {entry.path} does not hold one line for "
                "each of its runs; restore it from a backup or remove it",
            )
        parts: dict[str, tuple[list[EventRow], StateRow | None]] = {}
        for run_id, line in zip(entry.run_ids, lines[1:-1], strict=True):
            try:
                parsed = _parse_line(run_id, line, 0)
                rows = [_stored_row(run_id, record, record["seq"]) for record in parsed.records]
                snap = None
                if parsed.snapshot is not None:
                    state = decode_state(run_id, parsed.snapshot, parsed.snapshot["seq"])
                    snap = state_row(run_id, state)
            except (CorruptRecord, InvalidInput) as exc:
                seq = exc.seq if isinstance(exc, CorruptRecord) else None
                raise CorruptRecord(
                    run_id, seq, f"journal entry {entry.path} cannot be decoded: {exc}"
                ) from exc
            parts[run_id] = (rows, snap)
        return parts

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the in-process indexes; no file stays open between calls.

        The handle remains usable: the indexes are rebuilt on the next read.
        """
        with self._lock:
            self._runs.clear()
