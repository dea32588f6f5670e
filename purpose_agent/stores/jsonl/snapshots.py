"""``snapshot.json``: the latest snapshot saved on its own, and where the log ended then.

``snapshot.json`` holds ``{"log_end": N, "state": {...}}``, where ``N`` is the length of the log
when it was written: a snapshot in the log that ends after ``N`` was written later. Readers take
the best of the two (highest ``seq``, the later write on a tie), so a crash between a batch's log
line and the file loses nothing. The seed wrote the bare state; such a file reads as it is.

Once the log has been compacted, the file also names the rewrite of the log it was written
against (``"log": ID``, from the log's header): a file that names no rewrite, or another one,
was written before the log was last compacted, and the header's snapshot supersedes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from purpose_agent.codec import decode
from purpose_agent.errors import CorruptRecord
from purpose_agent.records import StateRow, decode_state
from purpose_agent.runtime.state import RunState

from .files import FileIdentity, identity
from .lines import seq_hint


class StoredSnapshot(NamedTuple):
    """A decoded ``snapshot.json``: the state, and the log's length when it was written.

    ``file`` is the identity of the file it was read from, for readers that must know it is
    the one still in place.
    """

    state: RunState
    log_end: int
    log_id: str | None = None
    file: FileIdentity | None = None


def snapshot_bytes(snapshot: StateRow, log_end: int, log_id: str | None) -> bytes:
    """Return the content of ``snapshot.json`` for a state saved when the log was this long.

    Args:
        snapshot: The state.
        log_end: The log's length.
        log_id: The rewrite of the log named by its compaction header, if it has one.

    Returns:
        The file's content.

    """
    log = f'"log":"{log_id}",' if log_id is not None else ""
    return f'{{"log_end":{log_end},{log}"state":{snapshot.state}}}\n'.encode()


def read_snapshot_file(run_id: str, path: Path) -> StoredSnapshot | None:
    """Read a run's ``snapshot.json``; ``None`` if there is none.

    A damaged file names the seq it still shows (the state's ``"seq"``, or the first
    ``"seq": N`` left readable in its text), so that whoever restores it knows which snapshot
    was lost.

    Raises:
        CorruptRecord: The file exists but does not hold a snapshot of this run.
        OSError: The file cannot be read.

    """
    try:
        with path.open("rb") as opened:
            found = identity(os.fstat(opened.fileno()))
            text = opened.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        record = decode(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(
            run_id,
            seq_hint(text),
            f"{path} is not JSON ({exc}); restore it from a backup or remove it",
        ) from exc
    if isinstance(record, dict) and "state" in record and "run_id" not in record:
        state = record["state"]
        seq = _state_seq(state, text)
        log_end = record.get("log_end")
        if type(log_end) is not int:
            raise CorruptRecord(run_id, seq, f"{path} has no valid log_end")
        log_id = record.get("log")
        if log_id is not None and not isinstance(log_id, str):
            raise CorruptRecord(run_id, seq, f"{path} names no valid log")
        return StoredSnapshot(decode_state(run_id, state, seq), log_end, log_id, found)
    # The seed wrote the bare state, and no log snapshots: any log snapshot is newer.
    return StoredSnapshot(decode_state(run_id, record, _state_seq(record, text)), -1, None, found)


def _state_seq(state: object, text: bytes) -> int | None:
    seq = state.get("seq") if isinstance(state, dict) else None
    return seq if type(seq) is int and seq >= 0 else seq_hint(text)
