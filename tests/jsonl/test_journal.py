"""The JSONL journal: a batch across runs is all or nothing, even when its writer is killed.

Crash tests hand the store a ``faults`` callable that stops the writer at one step of the batch;
the parent then SIGKILLs the child there and checks what the next handle makes of the files.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from purpose_agent import (
    CorruptRecord,
    JSONLCheckpointer,
    PAEvent,
    Recovery,
    StoreUnavailable,
)
from purpose_agent.stores.jsonl import FaultPoint
from purpose_agent.testing.suite import ev, st
from tests.jsonl.crashes import kill_when_stopped

# -- batches across runs: the journal ----------------------------------------------------------

# The child saves BATCH (below, spelled out again for the parent) and stops at the fault point
# named on its command line, holding every lock and file as they are, until the parent kills it.
CRASHING_WRITER = """
import sys
from purpose_agent import JSONLCheckpointer
from purpose_agent.testing.suite import ev, st

base, point, victim = sys.argv[1], sys.argv[2], sys.argv[3] or None

def stop_here(at, run_id=None):
    if (at, run_id) == (point, victim):
        print("stopped", flush=True)
        sys.stdin.read()

with JSONLCheckpointer(base, faults=stop_here) as cp:
    cp.save_events(
        [ev("a", 1), ev("a", 2), ev("a", 3, x=1), ev("b", 1), ev("b", 2, y=[1, 2])],
        snapshot=st("b", 2, done=True),
    )
print("finished", flush=True)
"""
A_EVENTS = [ev("a", 1), ev("a", 2), ev("a", 3, x=1)]
B_EVENTS = [ev("b", 1), ev("b", 2, y=[1, 2])]
B_STATE = st("b", 2, done=True)


def crash_mid_batch(base: Path, point: str, run_id: str = "") -> None:
    """Run the batch in a child process and SIGKILL it at the fault point ``(point, run_id)``.

    Event a1 is stored first, so the batch holds an identical retry as well as new events.
    """
    with JSONLCheckpointer(base) as cp:
        cp.save_event(ev("a", 1))
    kill_when_stopped(CRASHING_WRITER, str(base), point, run_id, what="the writer")


def journal_files(base: Path, suffix: str) -> list[str]:
    return sorted(path.name for path in (base / ".journal").iterdir() if path.name.endswith(suffix))


def raw_lines(base: Path, run_id: str) -> list[Any]:
    path = base / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def assert_batch_landed_once(base: Path) -> None:
    with JSONLCheckpointer(base) as fresh:
        assert fresh.list_events("a") == A_EVENTS
        assert fresh.list_events("b", limit=2) == B_EVENTS
        assert fresh.load_latest("b") == B_STATE
    # Rolling forward appended nothing twice: a1's own line, then one line per run for the batch.
    assert raw_lines(base, "a") == [
        ev("a", 1).to_dict(),
        [ev("a", 2).to_dict(), ev("a", 3, x=1).to_dict()],
    ]
    assert raw_lines(base, "b")[0] == {
        "events": [e.to_dict() for e in B_EVENTS],
        "snapshot": B_STATE.to_dict(),
    }
    assert journal_files(base, ".entry") == []


@pytest.mark.parametrize(
    ("point", "run_id", "a_lines", "b_lines"),
    [("journal", "", 1, 0), ("appended", "a", 2, 0), ("appended", "b", 2, 1)],
    ids=["before-any-append", "between-the-appends", "after-the-appends"],
)
def test_writer_killed_mid_batch_is_rolled_forward(
    base: Path, point: str, run_id: str, a_lines: int, b_lines: int
) -> None:
    crash_mid_batch(base, point, run_id)
    # The kill left the runs as the step says, and the committed entry behind.
    assert len(raw_lines(base, "a")) == a_lines
    assert len(raw_lines(base, "b")) == b_lines
    assert len(journal_files(base, ".entry")) == 1
    assert_batch_landed_once(base)


NOTICING: dict[str, Callable[[JSONLCheckpointer], object]] = {
    "list_events-b": lambda cp: cp.list_events("b"),
    "list_events-a": lambda cp: cp.list_events("a"),
    "iter_events-b": lambda cp: list(cp.iter_events("b")),
    "load_latest-b": lambda cp: cp.load_latest("b"),
    "recover-b": lambda cp: cp.recover("b"),
    "list_runs": lambda cp: cp.list_runs(),
    "save_event-b": lambda cp: cp.save_event(ev("b", 3)),
    "save_events-b-c": lambda cp: cp.save_events([ev("b", 3), ev("c", 1)]),
    "save_snapshot-b": lambda cp: cp.save_snapshot("b", st("b", 1)),
}


@pytest.mark.parametrize("first", NOTICING.values(), ids=NOTICING.keys())
def test_first_operation_on_a_run_completes_the_crashed_batch(
    base: Path, first: Callable[[JSONLCheckpointer], object]
) -> None:
    crash_mid_batch(base, "appended", "a")
    with JSONLCheckpointer(base) as fresh:
        first(fresh)
        # Whatever came first, b has the batch's part: nobody saw a with it and b without.
        assert fresh.list_events("b", limit=2) == B_EVENTS
        assert fresh.recover("b") == Recovery(B_STATE, fresh.list_events("b", since_seq=2))
        assert fresh.list_events("a") == A_EVENTS
    assert_batch_landed_once(base)


def test_reads_in_the_same_state_see_the_batch_from_every_run(base: Path) -> None:
    crash_mid_batch(base, "appended", "a")
    with JSONLCheckpointer(base) as fresh:
        assert fresh.recover("b") == Recovery(B_STATE, [])
        assert sorted(fresh.list_runs()) == ["a", "b"]
        assert list(fresh.iter_events("a")) == A_EVENTS


@pytest.mark.parametrize("doomed", ["a", "b"])
def test_delete_run_completes_a_pending_batch_first(base: Path, doomed: str) -> None:
    crash_mid_batch(base, "appended", "a")
    with JSONLCheckpointer(base) as fresh:
        fresh.delete_run(doomed)
        kept = "b" if doomed == "a" else "a"
        assert fresh.list_events(doomed) == []
        assert fresh.load_latest(doomed) is None
        assert fresh.list_runs() == [kept]
        assert fresh.list_events(kept) == (A_EVENTS if kept == "a" else B_EVENTS)
        assert journal_files(base, ".entry") == []
        # Nothing comes back later: the entry was completed, not left to be rolled forward.
        fresh.save_event(ev(doomed, 1, again=True))
        assert fresh.list_events(doomed) == [ev(doomed, 1, again=True)]


def test_batch_torn_while_writing_its_journal_entry_never_happened(base: Path) -> None:
    crash_mid_batch(base, "journal-temp")
    # The entry was written but never renamed into place; no run has anything of the batch.
    assert journal_files(base, ".entry") == []
    assert journal_files(base, ".tmp") == ["a.tmp"]
    # And one torn in the middle of a line, as a crash during the write leaves it.
    (base / ".journal" / "b.tmp").write_bytes(b'{"runs":["b","c"]}\n{"run_id":"b","se')
    with JSONLCheckpointer(base) as fresh:
        assert fresh.list_events("a") == [ev("a", 1)]
        assert fresh.list_events("b") == []
        assert fresh.load_latest("b") is None
        assert fresh.recover("b") is None
        assert fresh.list_runs() == ["a"]
        # A writer holding a run's lock knows a leftover named after that run is a dead one's.
        fresh.save_events([ev("a", 2, other=True), ev("b", 1, other=True)])
        assert journal_files(base, "") == []
        assert fresh.list_events("a") == [ev("a", 1), ev("a", 2, other=True)]
        assert fresh.list_events("b") == [ev("b", 1, other=True)]


def test_reader_of_a_batch_in_flight_waits_for_the_whole_of_it(base: Path) -> None:
    stopped, go = threading.Event(), threading.Event()

    def stop_between_appends(point: FaultPoint, run_id: str | None = None) -> None:
        if (point, run_id) == ("appended", "a"):
            stopped.set()
            assert go.wait(10)

    cp = JSONLCheckpointer(base, faults=stop_between_appends)
    writer = threading.Thread(target=cp.save_events, args=([ev("a", 1), ev("b", 1)],))
    writer.start()
    assert stopped.wait(10)
    # a has its line, b not yet; a reader of b on another handle must not see that state.
    seen: list[list[PAEvent]] = []
    with JSONLCheckpointer(cp.base_dir) as other:
        reader = threading.Thread(target=lambda: seen.append(other.list_events("b")))
        reader.start()
        reader.join(0.5)
        blocked = reader.is_alive()
        go.set()
        writer.join(10)
        reader.join(10)
        assert blocked, "the reader returned while the batch was half written"
        assert seen == [[ev("b", 1)]]
        assert other.list_events("a") == [ev("a", 1)]
    assert journal_files(cp.base_dir, ".entry") == []


def test_single_run_batches_skip_the_journal(base: Path) -> None:
    steps: list[tuple[str, str | None]] = []

    def record(point: FaultPoint, run_id: str | None = None) -> None:
        steps.append((point, run_id))

    cp = JSONLCheckpointer(base, faults=record)
    cp.save_event(ev("a", 1))
    cp.save_events([ev("a", 2), ev("a", 3)], snapshot=st("a", 3))
    cp.save_snapshot("b", st("b", 1))
    cp.save_events([ev("a", 1), ev("b", 1)])  # a1 is a retry: only b is written
    assert steps == []
    cp.save_events([ev("a", 4), ev("b", 2)], snapshot=st("b", 2))
    assert steps == [
        ("journal-temp", None),
        ("journal", None),
        ("appended", "a"),
        ("appended", "b"),
    ]
    assert journal_files(cp.base_dir, "") == []


def test_failed_append_after_the_journal_commit_leaves_nothing_behind(
    cp: JSONLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp.save_event(ev("a", 1))
    real_write = os.write

    def failing_write(fd: int, data: Any) -> int:
        # The journal entry (it starts with its header) is written; b's log line is refused.
        if b'"run_id":"b"' in bytes(data) and not bytes(data).startswith(b'{"runs"'):
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(StoreUnavailable):
        cp.save_events([ev("a", 2), ev("b", 1)], snapshot=st("a", 2))
    monkeypatch.undo()
    assert journal_files(cp.base_dir, "") == []
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert store.list_events("a") == [ev("a", 1)]
            assert store.list_events("b") == []
            assert store.load_latest("a") is None
            assert store.list_runs() == ["a"]


def test_failed_batch_that_cannot_be_cut_back_is_rolled_forward_instead(
    cp: JSONLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp.save_event(ev("a", 1))
    real_write = os.write

    def failing_write(fd: int, data: Any) -> int:
        if bytes(data).startswith(b'{"run_id":"b"'):
            raise OSError(5, "Input/output error")
        return real_write(fd, data)

    def failing_truncate(*args: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "write", failing_write)
    monkeypatch.setattr(os, "truncate", failing_truncate)
    with pytest.raises(StoreUnavailable):
        cp.save_events([ev("a", 2), ev("b", 1)])
    monkeypatch.undo()
    # a kept its line, so the entry stays and the batch is completed rather than left half.
    assert len(journal_files(cp.base_dir, ".entry")) == 1
    with JSONLCheckpointer(cp.base_dir) as fresh:
        assert fresh.list_events("b") == [ev("b", 1)]
        assert fresh.list_events("a") == [ev("a", 1), ev("a", 2)]
    assert journal_files(cp.base_dir, "") == []


def write_entry(base: Path, content: bytes) -> Path:
    path = base / ".journal" / "00000000000000000001-0123456789abcdef.entry"
    path.write_bytes(content)
    return path


def test_unreadable_committed_journal_entry_is_reported(cp: JSONLCheckpointer) -> None:
    cp.save_event(ev("a", 1))
    write_entry(cp.base_dir, b'{"runs":["a",')
    for read in (lambda: cp.list_events("a"), lambda: cp.save_event(ev("z", 1))):
        with pytest.raises(CorruptRecord) as info:
            read()
        assert "journal entry" in str(info.value)


def test_journal_entry_that_contradicts_a_log_is_reported_not_applied(
    cp: JSONLCheckpointer,
) -> None:
    cp.save_event(ev("a", 1))
    line = json.dumps
    entry = write_entry(
        cp.base_dir,
        (
            line({"runs": ["a", "b"]})
            + "\n"
            + line(ev("a", 1, v="other").to_dict())
            + "\n"
            + line(ev("b", 1).to_dict())
            + "\n"
        ).encode(),
    )
    for touch in (lambda: cp.list_events("b"), lambda: cp.save_event(ev("a", 2))):
        with pytest.raises(CorruptRecord) as info:
            touch()
        assert (info.value.run_id, info.value.seq) == ("a", 1)
        assert str(entry) in str(info.value)
    # Neither run got anything of it, and it stays for somebody to look at.
    assert entry.exists()
    assert raw_lines(cp.base_dir, "a") == [ev("a", 1).to_dict()]
    assert raw_lines(cp.base_dir, "b") == []
