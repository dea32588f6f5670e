"""The write-ahead journal that makes a batch across several runs all or nothing.

A batch that writes to several runs is first written whole to a journal entry: a header line
``{"runs": [...]}``, then each run's line in the header's order (the run that gets the snapshot
carries it in the ``{"events": ..., "snapshot": ...}`` form). The entry is written to
``.journal/<run dir>.tmp``, fsynced and renamed to its ``<stamp>-<id>.entry`` name: the rename
is the batch's commit. Then each run gets its line and the entry is removed. Every operation on
a run first completes the entries that name it (under all their runs' locks, lines whose events
are already there being no-ops), so a crash between two runs' lines is rolled forward before
anybody can see one run with the batch and another without. A ``.tmp`` file is a journal entry
that was never committed: it is ignored, and removed by the next writer that holds the lock of
the run it is named after (its writer held that lock until the rename).

A *wide* batch, across more runs than one operation may lock at once (see :mod:`.locks`), cannot
hold every run's lock from its check to its last line, so it holds the store's wide lock instead
and first writes a *claim*, ``.journal/.wide.claim``: a header line naming its runs. A writer
that holds the lock of a claimed run (every writer lists the journal under its locks) lets its
locks go and waits for the wide lock; whoever gets it knows the claim's writer is gone and
removes a claim still there (a claim marks runs as taken; it holds no data). Readers ignore
claims: the batch writes nothing before its entry is committed. The wide batch's entry is
written under ``.journal/.wide.tmp``, which nobody but the holder of the wide lock removes,
and an entry that names more runs than may be locked at once is completed under the wide lock
(its writer holds that lock until the entry is gone), a group of runs at a time.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from purpose_agent.clock import stamp_ns
from purpose_agent.codec import decode, encode
from purpose_agent.errors import CorruptRecord, InvalidInput
from purpose_agent.records import EventRow, StateRow, check_run_id, decode_state, state_row

from .faults import Faults
from .files import fsync_dir, write_temp
from .lines import parse_line, stored_row
from .naming import CLAIM_FILE, CLAIM_TEMP, ENTRY_SUFFIX, TEMP_SUFFIX, WIDE, dir_name

Part = tuple[list[EventRow], StateRow | None]
"""One run's part of a batch: its events, and the snapshot when it is the run that gets it."""


class Entry(NamedTuple):
    """A committed journal entry: a batch that spans several runs, not yet known to be done."""

    path: Path
    run_ids: tuple[str, ...]


class Pending(NamedTuple):
    """What the journal holds for some runs: entries to complete, and whether they are claimed."""

    entries: list[Entry]
    claimed: bool


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


class Journal:
    """The ``.journal`` folder of one store: entries written, listed, read and dropped.

    Args:
        path: The folder.
        faults: Called at each step of writing an entry (see :mod:`.faults`).

    """

    def __init__(self, path: Path, faults: Faults) -> None:
        self.path = path
        self._str = str(path)
        self._faults = faults

    def idle(self) -> bool:
        """Whether nothing at all is in the journal: the check on every operation's hot path."""
        try:
            return not os.listdir(self._str)
        except FileNotFoundError:
            return True

    def pending(
        self,
        names: frozenset[str] | None,
        subject: str,
        *,
        holding: bool = False,
        claims: bool = False,
    ) -> Pending:
        """Return the committed entries that name any of these runs, oldest first.

        This is the check every operation makes: one directory listing, empty but for a batch
        in flight or a crashed writer's. With ``holding`` (the caller holds the runs' locks),
        uncommitted entries named after these runs are removed: their writers are gone.

        Args:
            names: The runs' directory names; ``None`` for every entry.
            subject: The run to name in an error about an entry that cannot be read.
            holding: Whether the caller holds the locks of the runs in ``names``.
            claims: Whether to look for a wide batch's claim on any of these runs too (for a
                writer that holds their locks).

        Returns:
            The entries, and whether a claim names any of the runs.

        Raises:
            CorruptRecord: A committed entry has no readable header.

        """
        try:
            listing = os.listdir(self._str)
        except FileNotFoundError:
            return Pending([], False)
        if not listing:
            return Pending([], False)
        found: list[Entry] = []
        claimed = False
        for file_name in sorted(listing):
            path = self.path / file_name
            if file_name.endswith(ENTRY_SUFFIX):
                run_ids = self._entry_runs(path, subject)
                if run_ids is not None and (
                    names is None or not names.isdisjoint(map(dir_name, run_ids))
                ):
                    found.append(Entry(path, run_ids))
            elif file_name == CLAIM_FILE:
                claimed = claims and names is not None and self._claims_any(path, names)
            elif (
                holding
                and names is not None
                and file_name.endswith(TEMP_SUFFIX)
                and file_name[: -len(TEMP_SUFFIX)] in names
            ):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return Pending(found, claimed)

    @staticmethod
    def _claims_any(path: Path, names: frozenset[str]) -> bool:
        """Whether the claim at ``path`` names any of these runs."""
        try:
            header = path.read_bytes()
        except FileNotFoundError:
            return False  # its batch finished since the listing
        try:
            run_ids = _header_runs(header)
        except (ValueError, UnicodeDecodeError):
            # A claim is not fsynced (it holds no data): after a power cut it may be empty.
            # Counting it as naming every run costs one wait for the wide lock, which removes it.
            return True
        return not names.isdisjoint(map(dir_name, run_ids))

    @contextlib.contextmanager
    def claim(self, run_ids: list[str]) -> Iterator[None]:
        """Mark runs as taken by a wide batch while it is at work; the caller holds the wide lock.

        The claim is complete when it appears (written aside, then renamed into place). It is
        removed when the block ends; one left by a writer that died is removed by
        :meth:`clear_claim`.

        Args:
            run_ids: Every run of the batch.

        """
        header = encode({"runs": run_ids}, "journal claim")
        temp = self.path / CLAIM_TEMP
        try:
            write_temp(temp, f"{header}\n".encode(), None)
        except FileNotFoundError:
            self.path.mkdir(parents=True, exist_ok=True)
            write_temp(temp, f"{header}\n".encode(), None)
        os.replace(temp, self.path / CLAIM_FILE)
        try:
            yield
        finally:
            self.clear_claim()

    def clear_claim(self) -> None:
        """Remove a wide batch's claim and uncommitted entry; the caller holds the wide lock.

        Holding that lock, the caller knows that no wide batch is at work: what is left is
        either its own (its block is ending) or a dead writer's.
        """
        for name in (CLAIM_FILE, CLAIM_TEMP, WIDE + TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()

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

    def write(self, run_ids: list[str], lines: list[bytes], owner: str) -> Path:
        """Commit a batch: written, fsynced, then renamed into place.

        Args:
            run_ids: The runs, in the order of ``lines``.
            lines: Each run's log line.
            owner: The directory name of a run whose lock the caller holds until the rename;
                the temporary file is named after it, so that whoever holds that lock next
                knows a leftover is a dead writer's. For a wide batch, ``.wide``: the caller
                holds the wide lock (see :meth:`clear_claim`).

        Returns:
            The committed entry.

        """
        header = encode({"runs": run_ids}, "journal header")
        data = b"".join([f"{header}\n".encode(), *lines])
        temp = self.path / (owner + TEMP_SUFFIX)
        entry = self.path / f"{stamp_ns():020d}-{uuid.uuid4().hex}{ENTRY_SUFFIX}"
        try:
            try:
                write_temp(temp, data, None)
            except FileNotFoundError:
                self.path.mkdir(parents=True, exist_ok=True)
                write_temp(temp, data, None)
            self._faults("journal-temp")
            os.replace(temp, entry)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        try:
            fsync_dir(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                entry.unlink()
            raise
        self._faults("journal")
        return entry

    def drop(self, entry: Path) -> None:
        """Remove a done entry, durably: come back after a power cut, it would be done again."""
        entry.unlink()
        fsync_dir(self.path)

    @staticmethod
    def read(entry: Entry) -> dict[str, Part] | None:
        """Decode each run's part of a committed entry; ``None`` if it is gone (completed).

        Raises:
            CorruptRecord: The entry does not hold one decodable line for each of its runs.

        """
        try:
            data = entry.path.read_bytes()
        except FileNotFoundError:
            return None  # its writer finished it, or another handle completed it
        lines = data.split(b"\n")
        if lines[-1] or len(lines) != len(entry.run_ids) + 2:
            raise CorruptRecord(
                entry.run_ids[0],
                None,
                f"journal entry {entry.path} does not hold one line for "
                "each of its runs; restore it from a backup or remove it",
            )
        parts: dict[str, Part] = {}
        for run_id, line in zip(entry.run_ids, lines[1:-1], strict=True):
            try:
                parsed = parse_line(run_id, line, 0)
                rows = [stored_row(run_id, record, record["seq"]) for record in parsed.records]
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
