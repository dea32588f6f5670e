"""The JSONL store's appends, groups and compaction: what its files add to the shared suite.

The behaviour suite checks what every backend does. These tests check what only a store made of
files can get wrong: a compaction killed before or after the rename that commits it, a
``snapshot.json`` left from before a compaction, a compacted log that lost its header, a
damaged ``meta.json``, another handle's index of a log that was rewritten, and processes racing
appends (and a compaction) on one run through the file locks.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from purpose_agent import (
    CorruptRecord,
    EventKind,
    JSONLCheckpointer,
    NewEvent,
    Recovery,
    SequenceConflict,
    StoreUnavailable,
)
from purpose_agent.testing.suite import ev, st
from tests.forks import exit_code_in_forked_child
from tests.jsonl.crashes import kill_when_stopped

WAIT = 60


def new(key: str | None = None, **data: Any) -> NewEvent:
    return NewEvent(kind=EventKind.CUSTOM, data=data, key=key, ts=1.0)


def log_lines(base: Path, run_id: str) -> list[Any]:
    return [json.loads(line) for line in (base / run_id / "events.jsonl").read_bytes().splitlines()]


def fill(cp: JSONLCheckpointer) -> Recovery:
    """A run whose best snapshot is in ``snapshot.json``, with keyed events after it.

    The events the snapshot covers are large, so the old ``snapshot.json`` records a log
    length that the compacted log is far shorter than.
    """
    cp.save_events(
        [ev("r", seq, pad="x" * 2000) for seq in (1, 2, 3)], snapshot=st("r", 3, at="log")
    )
    cp.save_snapshot("r", st("r", 3, at="file"))  # same seq, later write: this one counts
    cp.append("r", [new("k4", n=4), new("k5", n=5)])
    recovery = cp.recover("r")
    assert recovery == Recovery(st("r", 3, at="file"), cp.list_events("r", since_seq=3))
    return recovery


# -- compaction and crashes ------------------------------------------------------------------

CRASHING_COMPACTION = """
import sys
from purpose_agent import JSONLCheckpointer

base, point = sys.argv[1], sys.argv[2]

def stop_here(at, run_id=None):
    if at == point:
        print("stopped", flush=True)
        sys.stdin.read()

with JSONLCheckpointer(base, faults=stop_here) as cp:
    cp.compact("r")
print("finished", flush=True)
"""


def kill_compaction_at(base: Path, point: str) -> None:
    kill_when_stopped(CRASHING_COMPACTION, str(base), point, what="the compaction")


@pytest.mark.parametrize(
    ("point", "kept_seqs"),
    [("compact-temp", [1, 2, 3, 4, 5]), ("compacted", [4, 5])],
    ids=["before-the-rename", "after-the-rename"],
)
def test_compaction_killed_at_either_side_of_its_rename_changes_no_recovery(
    base: Path, point: str, kept_seqs: list[int]
) -> None:
    with JSONLCheckpointer(base) as cp:
        before = fill(cp)
    kill_compaction_at(base, point)
    # The old log with the new one beside it, or the new log with the old snapshot.json
    # (which records a log far longer than the new one) beside it.
    assert (base / "r" / "events.jsonl.tmp").exists() == (point == "compact-temp")
    assert (base / "r" / "snapshot.json").exists()
    with JSONLCheckpointer(base) as fresh:
        assert fresh.recover("r") == before
        assert fresh.load_latest("r") == before.state
        assert [event.seq for event in fresh.list_events("r")] == kept_seqs
        assert fresh.last_seq("r") == 5
        assert fresh.event_by_key("r", "k5") == before.events[-1]
        assert fresh.compact("r") == (3 if point == "compact-temp" else 0)
        assert sorted(os.listdir(base / "r")) == ["events.jsonl"]
        assert fresh.recover("r") == before
        assert [event.seq for event in fresh.append("r", [new(n=6)])] == [6]


@pytest.mark.parametrize("later", ["log", "file"])
def test_the_later_of_two_snapshots_at_one_seq_survives_compaction(
    cp: JSONLCheckpointer, later: str
) -> None:
    events = [ev("r", 1), ev("r", 2)]
    if later == "file":
        cp.save_events(events, snapshot=st("r", 2, at="log"))
        cp.save_snapshot("r", st("r", 2, at="file"))
    else:
        cp.save_snapshot("r", st("r", 2, at="file"))
        cp.save_events(events, snapshot=st("r", 2, at="log"))
    assert cp.compact("r") == 2
    with JSONLCheckpointer(cp.base_dir) as fresh:
        assert fresh.recover("r") == Recovery(st("r", 2, at=later), [])


def test_snapshots_saved_after_a_compaction_count_and_older_ones_do_not(
    cp: JSONLCheckpointer,
) -> None:
    fill(cp)
    cp.compact("r")
    cp.save_snapshot("r", st("r", 2, at="older"))  # below the header's: ignored
    assert cp.load_latest("r") == st("r", 3, at="file")
    cp.save_snapshot("r", st("r", 3, at="after"))  # same seq, later write: counts
    cp.append("r", [new(n=6)])
    for store in (cp, JSONLCheckpointer(cp.base_dir)):
        assert store.recover("r") == Recovery(st("r", 3, at="after"), store.list_events("r"))
        assert [event.seq for event in store.list_events("r")] == [4, 5, 6]
    assert cp.compact("r") == 0
    cp.save_snapshot("r", st("r", 5, at="second"))
    assert cp.compact("r") == 2
    assert cp.recover("r") == Recovery(st("r", 5, at="second"), cp.list_events("r"))
    assert cp.last_seq("r") == 6
    assert log_lines(cp.base_dir, "r")[0]["compacted"]["last_seq"] == 6


def test_a_compaction_another_handle_made_is_seen_by_this_one(base: Path) -> None:
    with JSONLCheckpointer(base) as first, JSONLCheckpointer(base) as second:
        cp_events = first.append("r", [new("a", n=1), new("b", n=2), new("c", n=3)])
        assert first.event_by_key("r", "a") == cp_events[0]  # first indexes the log
        second.save_snapshot("r", st("r", 2))
        assert second.compact("r") == 2
        second.append("r", [new("d", n=4)])
        assert first.event_by_key("r", "a") is None
        assert first.event_by_key("r", "c") == cp_events[2]
        assert first.last_seq("r") == 4
        assert [event.seq for event in first.list_events("r")] == [3, 4]
        assert [event.seq for event in first.append("r", [new(n=5)])] == [5]


def test_appends_follow_a_snapshot_another_handle_saved_ahead_of_the_events(
    base: Path,
) -> None:
    with JSONLCheckpointer(base) as first, JSONLCheckpointer(base) as second:
        first.save_snapshot("r", st("r", 7))
        assert first.append("r", [new(n=8)])[0].seq == 8
        second.save_snapshot("r", st("r", 20))  # replaces the snapshot.json first has read
        assert first.last_seq("r") == 20
        assert first.append("r", [new(n=21)])[0].seq == 21
        assert second.last_seq("r") == 21


def test_a_failed_compaction_leaves_the_old_log_and_no_temporary_file(
    cp: JSONLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fill(cp)
    log = (cp.base_dir / "r" / "events.jsonl").read_bytes()

    def full_disk(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(StoreUnavailable):
        cp.compact("r")
    monkeypatch.undo()
    assert (cp.base_dir / "r" / "events.jsonl").read_bytes() == log
    assert sorted(os.listdir(cp.base_dir / "r")) == ["events.jsonl", "snapshot.json"]
    assert cp.recover("r") == before
    assert cp.compact("r") == 3


def test_readers_on_other_threads_see_the_same_recovery_through_compactions(
    cp: JSONLCheckpointer,
) -> None:
    cp.append("r", [new(n=0)], snapshot=st("r", 0))
    stop = threading.Event()
    seen: list[Recovery | None] = []

    def read() -> None:
        with JSONLCheckpointer(cp.base_dir) as reader:
            while not stop.is_set():
                seen.append(reader.recover("r"))
                seen.append(Recovery(reader.load_latest("r"), []))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        for n in range(1, 40):
            cp.append("r", [new(n=n)], snapshot=st("r", 0, n=n))
            cp.compact("r")
    finally:
        stop.set()
        for thread in readers:
            thread.join(WAIT)
    assert len(seen) > 2
    for recovery in seen:
        assert recovery is not None
        assert recovery.state is not None
        assert recovery.events == []  # every snapshot covers every event of its append
        assert recovery.state.data.get("n", 0) == recovery.state.seq - 1


# -- damage ----------------------------------------------------------------------------------


def test_a_compacted_log_that_lost_its_header_is_reported(cp: JSONLCheckpointer) -> None:
    fill(cp)
    cp.compact("r")
    cp.save_snapshot("r", st("r", 5))  # names the rewrite in snapshot.json
    path = cp.base_dir / "r" / "events.jsonl"
    damaged = b"".join(path.read_bytes().splitlines(keepends=True)[1:])
    path.write_bytes(damaged)
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for read in (fresh.recover, fresh.load_latest, fresh.list_events, fresh.last_seq):
            with pytest.raises(CorruptRecord) as info:
                read("r")
            assert (info.value.run_id, info.value.seq) == ("r", 5)
            assert "header" in str(info.value)
        with pytest.raises(CorruptRecord):
            fresh.append("r", [new(n=6)])
    assert path.read_bytes() == damaged  # nothing was written over the damage


@pytest.mark.parametrize(
    "damage",
    [
        lambda header: {**header, "compacted": {"log": "x", "last_seq": 5}},
        lambda header: {**header, "compacted": {"log": "0" * 32, "last_seq": -1}},
    ],
    ids=["bad-log-id", "bad-last-seq"],
)
def test_a_malformed_compaction_header_is_reported(cp: JSONLCheckpointer, damage: Any) -> None:
    fill(cp)
    cp.compact("r")
    path = cp.base_dir / "r" / "events.jsonl"
    header, *rest = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(json.dumps(damage(json.loads(header))).encode() + b"\n" + b"".join(rest))
    with JSONLCheckpointer(cp.base_dir) as fresh, pytest.raises(CorruptRecord) as info:
        fresh.recover("r")
    assert "compaction header" in str(info.value)


def test_a_compaction_header_after_the_first_line_is_reported(cp: JSONLCheckpointer) -> None:
    fill(cp)
    cp.compact("r")
    path = cp.base_dir / "r" / "events.jsonl"
    header = path.read_bytes().splitlines(keepends=True)[0]
    with path.open("ab") as log:
        log.write(header)
    with JSONLCheckpointer(cp.base_dir) as fresh, pytest.raises(CorruptRecord):
        fresh.list_events("r")


@pytest.mark.parametrize(
    "content", [b'{"group": "g"', b'{"group": 7}\n', b'["g"]\n', b'{"group": ""}\n']
)
def test_a_damaged_meta_json_is_reported_and_not_written_over(
    cp: JSONLCheckpointer, content: bytes
) -> None:
    cp.append("r", [new(n=1)], group="g")
    cp.append("other", [new(n=1)], group="h")
    (cp.base_dir / "r" / "meta.json").write_bytes(content)
    reads = [
        lambda: cp.run_group("r"),
        lambda: cp.list_runs(group="g"),
        cp.list_groups,
        lambda: cp.append("r", [new(n=2)], group="g"),
        lambda: cp.delete_runs(group="h"),
    ]
    for read in reads:
        with pytest.raises(CorruptRecord) as info:
            read()
        assert info.value.run_id == "r"
        assert "meta.json" in str(info.value)
    assert (cp.base_dir / "r" / "meta.json").read_bytes() == content
    assert cp.last_seq("r") == 1
    assert cp.list_runs() == ["other", "r"]  # listing without a group reads no meta.json
    assert cp.append("r", [new(n=2)])[0].seq == 2  # nor does an append without one
    cp.delete_run("r")
    assert cp.list_groups() == ["h"]


def test_a_failed_append_puts_the_run_back_in_its_old_group(
    cp: JSONLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp.append("r", [new(n=1)], group="old")
    real_write = os.write

    def full_disk(fd: int, data: Any) -> int:
        if b'"n":2' in bytes(data):
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(StoreUnavailable):
        cp.append("r", [new(n=2)], group="new")
    monkeypatch.undo()
    with JSONLCheckpointer(cp.base_dir) as fresh:
        assert fresh.run_group("r") == "old"
        assert fresh.list_groups() == ["old"]
        assert fresh.last_seq("r") == 1


def test_a_group_written_for_an_append_that_never_landed_is_not_reported(
    cp: JSONLCheckpointer,
) -> None:
    # What a crash between meta.json and the log line leaves for a new run.
    (cp.base_dir / "r").mkdir()
    (cp.base_dir / "r" / "meta.json").write_bytes(b'{"group":"g"}\n')
    assert cp.run_group("r") is None
    assert cp.list_groups() == []
    assert cp.list_runs(group="g") == []
    cp.append("r", [new(n=1)], group="g")
    assert cp.run_group("r") == "g"


# -- processes -------------------------------------------------------------------------------


def _append_expecting(base: str, expected: int, start: Any) -> str:
    with JSONLCheckpointer(base) as cp:
        start.wait(WAIT)
        try:
            cp.append("r", [new(pid=os.getpid())], expected_last_seq=expected)
        except SequenceConflict:
            return "conflict"
        return "appended"


def _append_many(base: str, worker: int, writes: int, compacting: Any = None) -> None:
    with JSONLCheckpointer(base) as cp:
        if compacting is not None:
            compacting.wait(WAIT)  # a loaded machine may start the compactor last
        for i in range(writes):
            # Every third step carries the state after it, so the compactor has work.
            state = st("r", 0, w=worker, i=i) if i % 3 == 2 else None
            cp.append("r", [new(f"{worker}-{i}", w=worker, i=i)], snapshot=state)


def _compact_until(base: str, done: Any, compacting: Any = None) -> int:
    compactions = 0
    with JSONLCheckpointer(base) as cp:
        while not done.is_set():
            compactions += cp.compact("r") > 0
            if compacting is not None:
                compacting.set()
        # The writers' last snapshot may land after the compaction in flight when they finish.
        compactions += cp.compact("r") > 0
    return compactions


def test_processes_racing_on_one_expected_last_seq_have_exactly_one_winner(base: Path) -> None:
    with JSONLCheckpointer(base) as cp:
        cp.append("r", [new(n=1), new(n=2)])
    context = multiprocessing.get_context("spawn")
    workers = 4
    with context.Manager() as manager, context.Pool(workers) as pool:
        for round_ in range(3):
            start = manager.Barrier(workers)
            expected = 2 + round_
            jobs = [
                pool.apply_async(_append_expecting, (str(base), expected, start))
                for _ in range(workers)
            ]
            results = sorted(job.get(WAIT) for job in jobs)
            assert results == ["appended"] + ["conflict"] * (workers - 1)
    with JSONLCheckpointer(base) as cp:
        assert [event.seq for event in cp.list_events("r")] == [1, 2, 3, 4, 5]


def test_processes_appending_while_another_compacts_lose_nothing(base: Path) -> None:
    with JSONLCheckpointer(base) as cp:
        cp.append("r", [new(n=0)])
    context = multiprocessing.get_context("spawn")
    writers, writes = 3, 30
    with context.Manager() as manager, context.Pool(writers + 1) as pool:
        done, compacting = manager.Event(), manager.Event()
        compactor = pool.apply_async(_compact_until, (str(base), done, compacting))
        jobs = [
            pool.apply_async(_append_many, (str(base), w, writes, compacting))
            for w in range(writers)
        ]
        for job in jobs:
            job.get(WAIT)
        done.set()
        assert compactor.get(WAIT) > 0
    with JSONLCheckpointer(base) as cp:
        recovery = cp.recover("r")
        assert recovery is not None
        assert recovery.state is not None
        total = 1 + writers * writes
        assert cp.last_seq("r") == total
        # Exactly the events after the snapshot remain, each once, in seq order.
        assert [event.seq for event in recovery.events] == list(
            range(recovery.state.seq + 1, total + 1)
        )
        assert cp.list_events("r") == recovery.events
        # Each writer's steps took increasing seqs; the kept ones are found by key.
        for worker in range(writers):
            seqs = []
            for i in range(writes):
                event = cp.event_by_key("r", f"{worker}-{i}")
                if event is not None:
                    assert event.data == {"w": worker, "i": i}
                    seqs.append(event.seq)
            assert seqs == sorted(seqs)
            assert all(seq > recovery.state.seq for seq in seqs)


def _fork_and_append(store: JSONLCheckpointer, run_id: str) -> int | None:
    """Fork a child that appends to ``run_id`` through the inherited handle: its exit code,
    or ``None`` if it was still running after 30 seconds (then killed)."""
    return exit_code_in_forked_child(lambda: store.append(run_id, [new(who="child")]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_child_forked_while_threads_append_can_append_to_the_same_run(tmp_path: Path) -> None:
    """A run's mutex, taken by a thread of the parent at the fork, stayed taken in the child,
    where nobody would release it: the child's first write to that run waited for ever."""
    store = JSONLCheckpointer(tmp_path)
    stop = threading.Event()

    def append_back_to_back() -> None:
        while not stop.is_set():
            store.append("r", [new(who="parent")])

    threads = [threading.Thread(target=append_back_to_back) for _ in range(3)]
    for thread in threads:
        thread.start()
    exits = []
    try:
        while len(exits) < 20 and exits.count(0) == len(exits):
            exits.append(_fork_and_append(store, "r"))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert exits == [0] * 20
    events = store.list_events("r")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(e.data["who"] == "child" for e in events) == 20
