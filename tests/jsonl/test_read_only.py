"""A JSONL folder this process may read but not write: every read works, every write says why.

Such a process cannot create or open a run's lock file, so the reads that take the lock
(``recover``, and any read that looks again at what seemed damage) read without it, and still
never see half of a write. The tests drop root where they run as root, since root writes
anywhere; a writer with write access works in the same folder meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from purpose_agent import CorruptRecord, JSONLCheckpointer, Recovery, StoreUnavailable
from purpose_agent.stores.jsonl import FaultPoint
from purpose_agent.testing.samples import ev, new, st
from tests.users import NOBODY, run_as

T = TypeVar("T")


@pytest.fixture
def folder() -> Iterator[Path]:
    """A store's folder that ``nobody`` can reach (pytest's own temporary root is private)."""
    root = Path(tempfile.mkdtemp(prefix="pa-jsonl-read-only-"))
    root.chmod(0o755)
    try:
        yield root / "store"
    finally:
        _chmod_tree(root, writable=True)
        shutil.rmtree(root)


def _chmod_tree(root: Path, *, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)


def _as_reader_without_write_access(probe: Callable[[], T]) -> T:
    """Run ``probe`` where the file permissions bind: as ``nobody`` under root."""
    return run_as(NOBODY, probe)


def _refusal(call: Callable[[], object]) -> str:
    try:
        call()
    except StoreUnavailable as exc:
        return str(exc)
    return "the write went through"


def test_a_read_only_folder_serves_every_read_and_refuses_writes_saying_why(
    folder: Path,
) -> None:
    with JSONLCheckpointer(folder) as cp:
        cp.append("r", [new(key="k", n=1), new(n=2)], group="g")
        cp.save_events([ev("r", 3)], snapshot=st("r", 2))
        cp.save_events([ev("other", 1)])
        expected = cp.recover("r")
        assert expected is not None

    def reads(store: JSONLCheckpointer) -> tuple[object, ...]:
        return (
            store.recover("r"),
            store.recover("nobody-wrote-this"),
            store.load_latest("r"),
            [event.seq for event in store.list_events("r")],
            [event.seq for event in store.iter_events("r")],
            store.list_runs(),
            store.last_seq("r"),
            store.event_by_key("r", "k") is not None,
            (store.run_group("r"), store.list_groups()),
        )

    with JSONLCheckpointer(folder) as warm:
        reads(warm)  # as root first: what the child calls is imported and has run once
    _chmod_tree(folder.parent, writable=False)

    def probe() -> tuple[tuple[object, ...], dict[str, str]]:
        with JSONLCheckpointer(folder) as store:
            writes: dict[str, Callable[[], object]] = {
                "save_event": lambda: store.save_event(ev("r", 4)),
                "save_events": lambda: store.save_events([ev("r", 4), ev("new", 1)]),
                "save_snapshot": lambda: store.save_snapshot("r", st("r", 3)),
                "append": lambda: store.append("r", [new()]),
                "compact": lambda: store.compact("r"),
                "delete_run": lambda: store.delete_run("r"),
            }
            return reads(store), {name: _refusal(write) for name, write in writes.items()}

    read, refused = _as_reader_without_write_access(probe)
    assert read == (
        expected,
        None,
        st("r", 2),
        [1, 2, 3],
        [1, 2, 3],
        ["other", "r"],
        3,
        True,
        ("g", ["g"]),
    )
    for name, message in refused.items():
        assert "Permission denied" in message, (name, message)  # as it said before
        assert ".locks" in message, (name, message)


def test_damage_in_a_read_only_folder_is_reported_as_damage(folder: Path) -> None:
    # A read that meets what looks like damage looks again under the lock, which this reader
    # cannot take: it looks again without it, and then reports the damage for what it is.
    with JSONLCheckpointer(folder) as cp:
        cp.save_events([ev("r", 1), ev("r", 2)], snapshot=st("r", 2))
        cp.save_event(ev("r", 3))
        log = cp.run_path("r") / "events.jsonl"
        log.write_bytes(log.read_bytes()[:-1] + b"#")  # the last line's newline, changed
        with pytest.raises(CorruptRecord):
            cp.list_events("r")  # as root first: what the child calls has run once
    _chmod_tree(folder.parent, writable=False)

    def probe() -> dict[str, str]:
        found: dict[str, str] = {}
        with JSONLCheckpointer(folder) as store:
            reads: dict[str, Callable[[], object]] = {
                "list_events": lambda: store.list_events("r"),
                "load_latest": lambda: store.load_latest("r"),
                "recover": lambda: store.recover("r"),
                "last_seq": lambda: store.last_seq("r"),
            }
            for name, read in reads.items():
                try:
                    read()
                except CorruptRecord as exc:
                    found[name] = f"CorruptRecord at seq {exc.seq}"
                except StoreUnavailable as exc:
                    found[name] = f"StoreUnavailable: {exc}"
        return found

    found = _as_reader_without_write_access(probe)
    assert found == dict.fromkeys(
        ["list_events", "load_latest", "recover", "last_seq"], "CorruptRecord at seq 3"
    )


class _Stopped(Exception):
    """Stops a writer right after its batch across runs is committed to the journal."""


def _stop_after_the_journal(point: FaultPoint, run_id: str | None = None) -> None:
    if point == "journal":
        raise _Stopped


def test_a_batch_a_stopped_writer_left_is_reported_to_a_read_only_reader(folder: Path) -> None:
    # Completing the batch takes its runs' locks, which only a process that can write takes.
    with JSONLCheckpointer(folder) as cp:
        cp.save_event(ev("other", 1))
        cp.recover("other")  # as root first: what the child calls has run once
    with (
        JSONLCheckpointer(folder, faults=_stop_after_the_journal) as cp,
        pytest.raises(_Stopped),
    ):
        cp.save_events([ev("a", 1), ev("b", 1)])
    _chmod_tree(folder.parent, writable=False)

    def probe() -> tuple[Recovery | None, str, float]:
        with JSONLCheckpointer(folder) as store:
            other = store.recover("other")
            started = time.monotonic()
            refused = _refusal(lambda: store.recover("a"))
            return other, refused, time.monotonic() - started

    other, refused, waited = _as_reader_without_write_access(probe)
    assert other == Recovery(None, [ev("other", 1)])  # runs the batch does not name: as ever
    assert "a writer left unfinished" in refused
    assert "a process that can write to the folder" in refused
    assert waited >= 1  # it gave a writer at work time to finish first
    _chmod_tree(folder.parent, writable=True)
    with JSONLCheckpointer(folder) as writer:  # and a process that can write completes it
        assert writer.recover("a") == Recovery(None, [ev("a", 1)])
        assert writer.recover("b") == Recovery(None, [ev("b", 1)])


# Writes the run's lives, each differing from the last in its data, and deletes each: one
# step with its snapshot (across runs "r" and "s", so through the journal), one event more, a
# snapshot saved alone. A read that paired one life's snapshot with another's events, or
# missed a step's snapshot, shows it in the data.
LIVES = """
import sys, time
from purpose_agent import JSONLCheckpointer
from purpose_agent.testing.samples import ev, st

with JSONLCheckpointer(sys.argv[1]) as cp:
    print("writing", flush=True)
    end = time.monotonic() + float(sys.argv[2])
    life = 0
    while time.monotonic() < end:
        life += 1
        cp.save_events(
            [ev("r", 1, life=life), ev("r", 2, life=life), ev("s", life)],
            snapshot=st("r", 1, life=life),
        )
        cp.save_event(ev("r", 3, life=life))
        cp.save_snapshot("r", st("r", 2, life=life))
        cp.delete_run("r")
"""


def _torn(recovery: Recovery | None) -> str | None:
    """What is wrong with a recovery of one of LIVES' lives, or ``None``."""
    if recovery is None:
        return None
    state, events = recovery
    if state is None:
        return f"no snapshot, events {[e.seq for e in events]}"
    lives = {state.data["life"]} | {event.data["life"] for event in events}
    seqs = [event.seq for event in events]
    if len(lives) != 1 or seqs not in ([2], [2, 3], [3]) or seqs[0] != state.seq + 1:
        return f"snapshot {state.seq} of life {state.data['life']}, events {events}"
    return None


@pytest.mark.skipif(
    os.geteuid() != 0, reason="a writer and a read-only reader on one folder need two users"
)
def test_recover_without_the_lock_never_pairs_one_write_with_half_of_another(
    folder: Path,
) -> None:
    JSONLCheckpointer(folder).close()
    (folder / ".locks" / "r.lock").touch()  # as a writer leaves it: unwritable for others
    _chmod_tree(folder.parent, writable=False)  # root still writes; nobody no longer can

    def probe() -> tuple[set[str], list[str]]:
        seen: set[str] = set()
        problems: list[str] = []
        with JSONLCheckpointer(folder) as reader:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                recovery = reader.recover("r")
                seen.add("deleted" if recovery is None else f"up to seq {recovery.seq}")
                problem = _torn(recovery)
                if problem is not None:
                    problems.append(problem)
        return seen, problems[:5]

    writer = subprocess.Popen(
        [sys.executable, "-c", LIVES, str(folder), "4"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "writing\n"
        seen, problems = _as_reader_without_write_access(probe)
    finally:
        writer.kill()
        writer.communicate()
    assert problems == []
    assert seen == {"deleted", "up to seq 2", "up to seq 3"}  # it read the run alive and not
