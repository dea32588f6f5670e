"""How a run id becomes a directory name, and the names of the store's own files.

A run id becomes a directory name by a reversible escape: ``a-z``, ``0-9``, ``_`` and ``-`` stay,
every other UTF-8 byte becomes ``%XX``. Upper-case letters are escaped too, so that a
case-insensitive file system cannot merge ``"A"`` and ``"a"``, and ``.`` is escaped, so that no
name starts with a dot (those are the store's own: locks, the journal and runs being deleted)
and no run id can name ``..``. A name longer than 200 bytes is replaced by ``~`` and the SHA-256
of the run id, and the run id is kept in a ``run_id`` file inside the directory.
"""

from __future__ import annotations

import functools
import hashlib
import re
import urllib.parse

from purpose_agent.errors import InvalidRunId
from purpose_agent.records import check_run_id

EVENTS_FILE = "events.jsonl"
SNAPSHOT_FILE = "snapshot.json"
RUN_ID_FILE = "run_id"
META_FILE = "meta.json"
LOCKS_DIR = ".locks"
JOURNAL_DIR = ".journal"
ENTRY_SUFFIX = ".entry"
TEMP_SUFFIX = ".tmp"
SNAPSHOT_TEMP = SNAPSHOT_FILE + TEMP_SUFFIX
EVENTS_TEMP = EVENTS_FILE + TEMP_SUFFIX
META_TEMP = META_FILE + TEMP_SUFFIX
# A batch too wide to hold every run's lock at once (see JSONLCheckpointer._write_wide): its
# lock in LOCKS_DIR, its claim in JOURNAL_DIR (written to CLAIM_TEMP first), and the name its
# journal entry is written under before its commit. A leading dot: no run directory has one.
WIDE = ".wide"
WIDE_LOCK = WIDE + ".lock"
CLAIM_FILE = WIDE + ".claim"
CLAIM_TEMP = WIDE + ".claiming"

# 200 leaves room for the ".lock" and ".tmp" suffixes under the common 255-byte name limit.
_MAX_NAME = 200
_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{port}{n}" for port in ("com", "lpt") for n in range(10)]
)
_PLAIN_NAME = re.compile(r"(?:[a-z0-9_-]|%[0-9A-F]{2})+")
_HASHED_NAME = re.compile(r"~[0-9a-f]{64}")


@functools.lru_cache(maxsize=4096)
def dir_name(run_id: str) -> str:
    """Return the name of the directory that holds a (checked) run id's files."""
    raw = run_id.encode("utf-8")
    name = "".join(chr(byte) if byte in _KEPT else f"%{byte:02X}" for byte in raw)
    if name in _WINDOWS_DEVICES:
        # Windows refuses these names whatever the case; escaping one letter keeps them valid.
        name = f"%{raw[0]:02X}{name[1:]}"
    if len(name) > _MAX_NAME:
        return "~" + hashlib.sha256(raw).hexdigest()
    return name


def plain_run_id(name: str) -> str | None:
    """Invert :func:`dir_name` for unhashed names; ``None`` for a name the store never writes."""
    if not _PLAIN_NAME.fullmatch(name):
        return None
    try:
        run_id = check_run_id(urllib.parse.unquote_to_bytes(name).decode("utf-8"))
    except (UnicodeDecodeError, InvalidRunId):
        return None
    # Only the canonical spelling is a run: "%61" and "a" must not both claim run "a".
    return run_id if dir_name(run_id) == name else None


def is_run_dir(name: str) -> bool:
    """Whether ``name`` is one the store gives a run's directory (hashed or not)."""
    return bool(_HASHED_NAME.fullmatch(name)) or plain_run_id(name) is not None
