"""What only the JSONL store has to prove: its files, its lines, its snapshots and its index.

Batches across runs and their journal are proved in ``test_jsonl_journal.py``.
"""

from __future__ import annotations

import gc
import json
import os
import stat
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from purpose_agent import (
    CorruptRecord,
    EventKind,
    InvalidRunId,
    JSONLCheckpointer,
    PAEvent,
    Recovery,
    RunState,
    SequenceConflict,
    StoreUnavailable,
)
from purpose_agent.stores.jsonl.locks import RECENT_RUNS, Run
from purpose_agent.testing.suite import ev, st


def files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def log_lines(cp: JSONLCheckpointer, run_id: str) -> list[bytes]:
    return (cp.run_path(run_id) / "events.jsonl").read_bytes().splitlines(keepends=True)


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


# -- run ids and directories -------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id", ["../../x", "..", ".", "a/../../b", "..\\x", "/etc/passwd", "a\x00"]
)
def test_bad_run_ids_touch_no_file_anywhere(tmp_path: Path, base: Path, run_id: str) -> None:
    cp = JSONLCheckpointer(base)
    before = files_under(tmp_path)
    calls: list[Callable[[], object]] = [
        lambda: cp.save_event(
            PAEvent.model_construct(
                run_id=run_id, seq=1, kind=EventKind.CUSTOM, ts=1.0, lane_id="main", data={}
            )
        ),
        lambda: cp.save_snapshot(run_id, RunState.model_construct(run_id=run_id)),
        lambda: cp.load_latest(run_id),
        lambda: cp.list_events(run_id),
        lambda: cp.iter_events(run_id),
        lambda: cp.recover(run_id),
        lambda: cp.delete_run(run_id),
        lambda: cp.run_path(run_id),
    ]
    for call in calls:
        with pytest.raises(InvalidRunId):
            call()
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    "run_id",
    ["...", "..x", ".hidden", "%2e%2e", "~" + "a" * 64, "%41", "CON", "con", "a b", "x" * 66],
)
def test_tricky_run_ids_stay_inside_base_dir_and_list_back_exactly(
    tmp_path: Path, cp: JSONLCheckpointer, run_id: str
) -> None:
    outside = files_under(tmp_path) - files_under(cp.base_dir) - {cp.base_dir}
    cp.save_events([ev(run_id, 1)], snapshot=st(run_id, 1))
    run_dir = cp.run_path(run_id)
    assert run_dir.parent == cp.base_dir
    assert not run_dir.name.startswith(".")
    assert run_dir.name.lower() not in {"con", "prn", "aux", "nul"}
    assert files_under(tmp_path) - files_under(cp.base_dir) - {cp.base_dir} == outside
    assert cp.list_runs() == [run_id]
    with JSONLCheckpointer(cp.base_dir) as other:
        assert other.list_runs() == [run_id]
        assert other.recover(run_id) == Recovery(st(run_id, 1), [])


def test_case_distinct_run_ids_get_directories_that_differ_ignoring_case(
    cp: JSONLCheckpointer,
) -> None:
    ids = ["run", "Run", "RUN", "rUn"]
    for run_id in ids:
        cp.save_event(ev(run_id, 1, who=run_id))
    names = [cp.run_path(run_id).name for run_id in ids]
    assert len({name.casefold() for name in names}) == len(ids)
    for run_id in ids:
        assert cp.list_events(run_id) == [ev(run_id, 1, who=run_id)]
    assert sorted(cp.list_runs()) == sorted(ids)


@pytest.mark.parametrize(
    "run_id",
    ["🙂" * 255, "é" * 255, "日本語-" * 60, "r" * 201],
    ids=["emoji-255", "accented-255", "cjk-240", "ascii-201"],
)
def test_long_unicode_run_ids_get_a_hashed_directory_and_list_back_exactly(
    cp: JSONLCheckpointer, run_id: str
) -> None:
    cp.save_event(ev(run_id, 1))
    cp.save_snapshot(run_id, st(run_id, 1))
    run_dir = cp.run_path(run_id)
    assert run_dir.name.startswith("~")
    assert len(os.fsencode(run_dir.name)) <= 200
    assert (run_dir / "run_id").read_bytes().decode("utf-8") == run_id
    with JSONLCheckpointer(cp.base_dir) as other:
        assert other.list_runs() == [run_id]
        assert other.recover(run_id) == Recovery(st(run_id, 1), [])


def test_hashed_directory_without_its_run_id_file_is_reported(cp: JSONLCheckpointer) -> None:
    run_id = "x" * 255
    cp.save_event(ev(run_id, 1))
    (cp.run_path(run_id) / "run_id").unlink()
    with pytest.raises(CorruptRecord):
        cp.list_runs()


def test_list_runs_ignores_hidden_foreign_and_empty_entries(cp: JSONLCheckpointer) -> None:
    cp.save_event(ev("real", 1))
    for name in (".hidden", ".deleted-0123", "Foreign", "%61", "empty", "a.b"):
        (cp.base_dir / name).mkdir()
        (cp.base_dir / name / "events.jsonl").write_bytes(b"{}\n" if name != "empty" else b"")
    (cp.base_dir / "stray-file").write_text("x")
    assert cp.list_runs() == ["real"]


def test_list_runs_orders_by_the_files_written_last(cp: JSONLCheckpointer) -> None:
    for run_id in ("a", "b", "c"):
        cp.save_event(ev(run_id, 1))
    cp.save_snapshot("a", st("a", 1))
    newest = max(
        (cp.run_path(r) / name).stat().st_mtime_ns
        for r in "abc"
        for name in ("events.jsonl", "snapshot.json")
        if (cp.run_path(r) / name).exists()
    )
    # b's log stamped newest of all, a's snapshot in between: the max per run decides.
    os.utime(cp.run_path("b") / "events.jsonl", ns=(newest + 10, newest + 10))
    os.utime(cp.run_path("a") / "snapshot.json", ns=(newest + 5, newest + 5))
    assert cp.list_runs() == ["b", "a", "c"]


def test_runs_of_one_batch_list_in_run_id_order_as_on_every_other_store(
    cp: JSONLCheckpointer,
) -> None:
    # One batch is one write: its runs share one write time, and ties list by run id. As run
    # ids "a-b" < "a.b", as directory names "a%2Eb" < "a-b"; the hashed one ends either way.
    hashed = "é" * 120
    cp.save_event(ev("old", 1))
    cp.save_events([ev("z", 1), ev("a.b", 1), ev(hashed, 1), ev("a-b", 1), ev("x", 1)])
    assert cp.list_runs() == ["a-b", "a.b", "x", "z", hashed, "old"]
    cp.save_events([ev("z", 2), ev("x", 2)])
    assert cp.list_runs() == ["x", "z", "a-b", "a.b", hashed, "old"]
    assert cp.list_runs(limit=2, offset=1) == ["z", "a-b"]
    # The snapshot of one run and the events of another, in one batch, are one write too.
    cp.save_events([ev("q", 1)], snapshot=st("p", 0))
    assert cp.list_runs(limit=3) == ["p", "q", "x"]
    with JSONLCheckpointer(cp.base_dir) as other:
        assert other.list_runs() == ["p", "q", "x", "z", "a-b", "a.b", hashed, "old"]


def test_lock_files_live_outside_run_directories_and_survive_delete(cp: JSONLCheckpointer) -> None:
    cp.save_event(ev("r", 1))
    lock = cp.base_dir / ".locks" / f"{cp.run_path('r').name}.lock"
    assert lock.exists()
    cp.delete_run("r")
    assert not cp.run_path("r").exists()
    assert lock.exists()
    assert [path.name for path in cp.base_dir.iterdir() if not path.name.startswith(".")] == []


# -- the line format ---------------------------------------------------------------------------


def test_a_handle_keeps_state_for_a_bounded_number_of_runs(cp: JSONLCheckpointer) -> None:
    # A long-lived handle (a copy, a server) writes and reads many runs: it kept a lock, a
    # lock file handle and an index for every run it ever touched (570 MB after copying
    # 100,000 runs of two events).
    total = RECENT_RUNS * 3
    for n in range(total):
        cp.save_events([ev(f"r{n}", 1), ev(f"r{n}", 2)])
        assert len(cp.list_events(f"r{n}")) == 2
    gc.collect()
    assert sum(isinstance(obj, Run) for obj in gc.get_objects()) <= RECENT_RUNS
    # A run the handle forgot reads and appends as before, from its files.
    assert cp.list_events("r0") == [ev("r0", 1), ev("r0", 2)]
    cp.save_event(ev("r0", 3))
    assert [e.seq for e in cp.list_events("r0")] == [1, 2, 3]


def test_each_write_is_one_line_and_a_batch_with_snapshot_carries_it(cp: JSONLCheckpointer) -> None:
    cp.save_event(ev("r", 1, a=1))
    cp.save_events([ev("r", 2), ev("r", 3)])
    cp.save_events([ev("r", 4)], snapshot=st("r", 4, s=True))
    lines = log_lines(cp, "r")
    assert len(lines) == 3
    assert all(line.endswith(b"\n") for line in lines)
    single, batch, with_snapshot = (json.loads(line) for line in lines)
    assert single == ev("r", 1, a=1).to_dict()
    assert batch == [ev("r", 2).to_dict(), ev("r", 3).to_dict()]
    assert with_snapshot == {
        "events": [ev("r", 4).to_dict()],
        "snapshot": st("r", 4, s=True).to_dict(),
    }
    snapshot_file = json.loads((cp.run_path("r") / "snapshot.json").read_bytes())
    assert snapshot_file["state"] == st("r", 4, s=True).to_dict()


# -- torn and corrupt lines --------------------------------------------------------------------


def test_torn_last_line_is_ignored_by_readers(cp: JSONLCheckpointer) -> None:
    cp.save_events([ev("r", 1), ev("r", 2)])
    assert cp.list_events("r") == [ev("r", 1), ev("r", 2)]  # the index has seen the clean log
    append_bytes(cp.run_path("r") / "events.jsonl", b'[{"run_id":"r","seq":3,"kind":"cus')
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert store.list_events("r") == [ev("r", 1), ev("r", 2)]
            assert list(store.iter_events("r")) == [ev("r", 1), ev("r", 2)]
            assert store.recover("r") == Recovery(None, [ev("r", 1), ev("r", 2)])


def test_torn_line_that_is_complete_json_but_lacks_its_newline_is_ignored(
    cp: JSONLCheckpointer,
) -> None:
    cp.save_event(ev("r", 1))
    append_bytes(cp.run_path("r") / "events.jsonl", json.dumps(ev("r", 2).to_dict()).encode())
    assert cp.list_events("r") == [ev("r", 1)]


@pytest.mark.parametrize("same_handle", [True, False])
def test_torn_last_line_is_cut_off_by_the_next_write(
    cp: JSONLCheckpointer, same_handle: bool
) -> None:
    cp.save_event(ev("r", 1))
    cp.list_events("r")
    log = cp.run_path("r") / "events.jsonl"
    append_bytes(log, b'{"run_id":"r","seq":2,"ki')
    writer = cp if same_handle else JSONLCheckpointer(cp.base_dir)
    writer.save_event(ev("r", 2, after="repair"))
    raw = log.read_bytes()
    assert raw.endswith(b"\n")
    assert raw.count(b'"seq":2') == 1  # the torn fragment is gone, not glued to the new line
    assert [json.loads(line)["seq"] for line in raw.splitlines()] == [1, 2]
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, writer, fresh):
            assert store.list_events("r") == [ev("r", 1), ev("r", 2, after="repair")]
    writer.close()


def test_invalid_event_in_the_middle_raises_corrupt_record_naming_run_and_seq(
    cp: JSONLCheckpointer,
) -> None:
    for seq in (1, 2, 3):
        cp.save_event(ev("r", seq))
    lines = log_lines(cp, "r")
    bad = ev("r", 2).to_dict() | {"kind": "no-such-kind"}
    lines[1] = json.dumps(bad).encode() + b"\n"
    (cp.run_path("r") / "events.jsonl").write_bytes(b"".join(lines))
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            for read in (lambda s=store: s.list_events("r"), lambda s=store: s.recover("r")):
                with pytest.raises(CorruptRecord) as info:
                    read()
                assert (info.value.run_id, info.value.seq) == ("r", 2)
                assert "'r'" in str(info.value)
                assert "seq 2" in str(info.value)
            assert store.list_events("r", since_seq=2) == [ev("r", 3)]


@pytest.mark.parametrize(
    "garbage", [b"this is not json", b'{"run_id": "r", "seq": 2, "kind": ', b"[1, 2]"]
)
def test_unreadable_line_in_the_middle_raises_corrupt_record(
    cp: JSONLCheckpointer, garbage: bytes
) -> None:
    cp.save_event(ev("r", 1))
    # Written behind the store's back: the store itself would refuse to append after it.
    good = json.dumps(ev("r", 3).to_dict()).encode()
    append_bytes(cp.run_path("r") / "events.jsonl", garbage + b"\n" + good + b"\n")
    with JSONLCheckpointer(cp.base_dir) as fresh:
        with pytest.raises(CorruptRecord) as info:
            fresh.list_events("r")
        assert info.value.run_id == "r"
        assert info.value.seq == 2  # shown by the line, or by the lines around it
        with pytest.raises(CorruptRecord):
            fresh.save_event(ev("r", 4))  # a writer does not paper over it either


def event_line(*seqs: int) -> bytes:
    """A log line as the store writes it: one event, or a batch of them."""
    records = [ev("r", seq).to_dict() for seq in seqs]
    return json.dumps(records[0] if len(records) == 1 else records).encode() + b"\n"


BAD = b"#### not a line any writer wrote ####\n"

# Logs written in ascending seq order with unreadable lines in them, the seq the first of them
# must have held when the lines around it leave it one (else None), and where it lies.
AROUND_AN_UNREADABLE_LINE: dict[str, tuple[list[bytes], int | None, str]] = {
    "between-neighbours": ([event_line(1), BAD, event_line(3)], 2, "between seq 1 and seq 3"),
    "first-line": ([BAD, event_line(2), event_line(3)], 1, "before seq 2"),
    "two-filling-a-gap": ([event_line(1), BAD, BAD, event_line(4)], 2, "between seq 1 and seq 4"),
    "between-batches": ([event_line(1, 2), BAD, event_line(4, 5)], 3, "between seq 2 and seq 4"),
    "wider-gap": ([event_line(1), BAD, event_line(4)], None, "between seq 1 and seq 4"),
    "first-before-a-gap": ([BAD, event_line(5)], None, "before seq 5"),
    "last-complete-line": ([event_line(1), event_line(2), BAD], None, "after seq 2"),
}


@pytest.mark.parametrize("name", list(AROUND_AN_UNREADABLE_LINE))
def test_unreadable_line_is_named_by_the_seq_or_the_range_the_lines_around_it_leave(
    cp: JSONLCheckpointer, name: str
) -> None:
    lines, seq, where = AROUND_AN_UNREADABLE_LINE[name]
    cp.run_path("r").mkdir(parents=True)
    (cp.run_path("r") / "events.jsonl").write_bytes(b"".join(lines))
    for read in (lambda: cp.list_events("r"), lambda: cp.recover("r")):
        with pytest.raises(CorruptRecord) as info:
            read()
        assert (info.value.run_id, info.value.seq) == ("r", seq)
        assert where in str(info.value)
        shown = f"at seq {seq}:" if seq is not None else "at an unreadable seq:"
        assert shown in str(info.value)


@pytest.mark.parametrize(
    "lines",
    [
        [event_line(1), event_line(3), BAD, event_line(2)],  # the next line goes back
        [event_line(2, 4), event_line(3), BAD, event_line(5)],  # earlier lines out of order
    ],
    ids=["next-line-lower", "earlier-lines-out-of-order"],
)
def test_unreadable_line_in_a_log_out_of_seq_order_is_not_given_a_seq(
    cp: JSONLCheckpointer, lines: list[bytes]
) -> None:
    # Seqs are the caller's: where the log does not go up line by line, its neighbours say
    # nothing certain about what the damaged line held.
    cp.run_path("r").mkdir(parents=True)
    (cp.run_path("r") / "events.jsonl").write_bytes(b"".join(lines))
    with pytest.raises(CorruptRecord) as info:
        cp.list_events("r")
    assert info.value.seq is None
    assert "lies" not in str(info.value)


def test_two_different_events_at_one_seq_in_a_log_are_corrupt(cp: JSONLCheckpointer) -> None:
    log = cp.run_path("r")
    log.mkdir(parents=True)
    (log / "events.jsonl").write_text(
        json.dumps(ev("r", 1, v=1).to_dict()) + "\n" + json.dumps(ev("r", 1, v=2).to_dict()) + "\n"
    )
    with pytest.raises(CorruptRecord) as info:
        cp.list_events("r")
    assert info.value.seq == 1


@pytest.mark.parametrize(
    "content", [b"", b'{"run_id": "r", "seq": 3, "sta', b"[]", b'{"state": 1}']
)
def test_corrupt_snapshot_file_raises_corrupt_record(cp: JSONLCheckpointer, content: bytes) -> None:
    cp.save_event(ev("r", 1))
    cp.save_snapshot("r", st("r", 1))
    (cp.run_path("r") / "snapshot.json").write_bytes(content)
    for read in (lambda: cp.load_latest("r"), lambda: cp.recover("r")):
        with pytest.raises(CorruptRecord) as info:
            read()
        assert info.value.run_id == "r"


# -- snapshots and crashes ---------------------------------------------------------------------


def test_crash_between_log_line_and_snapshot_file_keeps_the_newer_snapshot(
    cp: JSONLCheckpointer,
) -> None:
    cp.save_events([ev("r", 1)], snapshot=st("r", 1))
    snapshot_file = cp.run_path("r") / "snapshot.json"
    old = snapshot_file.read_bytes()
    cp.save_events([ev("r", 2), ev("r", 3)], snapshot=st("r", 3, step=3))
    snapshot_file.write_bytes(old)  # as if the process died before renaming the new file in
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert store.load_latest("r") == st("r", 3, step=3)
            assert store.recover("r") == Recovery(st("r", 3, step=3), [])


def test_crash_before_snapshot_file_with_equal_seq_keeps_the_later_snapshot(
    cp: JSONLCheckpointer,
) -> None:
    cp.save_events([ev("r", 1)])
    cp.save_snapshot("r", st("r", 2, v="first"))
    snapshot_file = cp.run_path("r") / "snapshot.json"
    old = snapshot_file.read_bytes()
    cp.save_events([ev("r", 2)], snapshot=st("r", 2, v="second"))
    snapshot_file.write_bytes(old)
    with JSONLCheckpointer(cp.base_dir) as fresh:
        assert fresh.load_latest("r") == st("r", 2, v="second")


def test_snapshot_file_saved_after_a_log_snapshot_of_equal_seq_wins(cp: JSONLCheckpointer) -> None:
    cp.save_events([ev("r", 1), ev("r", 2)], snapshot=st("r", 2, v="in the log"))
    cp.save_snapshot("r", st("r", 2, v="saved later"))
    with JSONLCheckpointer(cp.base_dir) as fresh:
        assert fresh.load_latest("r") == st("r", 2, v="saved later")
        assert fresh.recover("r") == Recovery(st("r", 2, v="saved later"), [])


def test_leftover_snapshot_temp_file_does_not_affect_load_latest(cp: JSONLCheckpointer) -> None:
    cp.save_snapshot("r", st("r", 2))
    temp = cp.run_path("r") / "snapshot.json.tmp"
    temp.write_bytes(b'{"log_end":0,"state":{"run_id":"r","seq":9')  # a crash mid-write
    with JSONLCheckpointer(cp.base_dir) as fresh:
        assert fresh.load_latest("r") == st("r", 2)
        assert fresh.list_runs() == ["r"]
        fresh.save_snapshot("r", st("r", 3))
        assert fresh.load_latest("r") == st("r", 3)


def test_failed_snapshot_rename_keeps_the_previous_snapshot(
    cp: JSONLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp.save_snapshot("r", st("r", 1, v="old"))

    def refuse(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StoreUnavailable) as info:
        cp.save_snapshot("r", st("r", 2, v="new"))
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert cp.load_latest("r") == st("r", 1, v="old")
    assert not (cp.run_path("r") / "snapshot.json.tmp").exists()


def test_seed_format_files_are_readable(cp: JSONLCheckpointer) -> None:
    run_dir = cp.base_dir / "seed-run"
    run_dir.mkdir()
    events = [ev("seed-run", 1, a=1), ev("seed-run", 2, b=[1, 2])]
    # The seed's own writer: json.dumps with spaces, one event per line.
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
    state = st("seed-run", 0, x=1).to_dict()
    del state["seq"]  # seed snapshots did not record which event they cover
    (run_dir / "snapshot.json").write_text(json.dumps(state, indent=2))
    assert cp.list_runs() == ["seed-run"]
    assert cp.list_events("seed-run") == events
    assert cp.load_latest("seed-run") == st("seed-run", 0, x=1)
    assert cp.recover("seed-run") == Recovery(st("seed-run", 0, x=1), events)
    cp.save_event(events[0])  # an identical retry is still a no-op
    cp.save_events([ev("seed-run", 3)], snapshot=st("seed-run", 3))
    assert cp.recover("seed-run") == Recovery(st("seed-run", 3), [])
    assert cp.list_events("seed-run", since_seq=1) == [events[1], ev("seed-run", 3)]


# -- the index ---------------------------------------------------------------------------------


def test_index_sees_what_another_handle_appends(cp: JSONLCheckpointer) -> None:
    cp.save_event(ev("r", 1))
    assert cp.list_events("r") == [ev("r", 1)]
    with JSONLCheckpointer(cp.base_dir) as other:
        other.save_events([ev("r", 3), ev("r", 2)], snapshot=st("r", 3))
    assert cp.list_events("r") == [ev("r", 1), ev("r", 2), ev("r", 3)]
    assert cp.load_latest("r") == st("r", 3)
    with pytest.raises(SequenceConflict):
        cp.save_event(ev("r", 2, v="different"))
    cp.save_event(ev("r", 2))  # identical: a no-op
    assert [e.seq for e in cp.list_events("r")] == [1, 2, 3]


def test_index_sees_what_another_process_appends(cp: JSONLCheckpointer) -> None:
    cp.save_event(ev("r", 1))
    assert cp.list_events("r") == [ev("r", 1)]
    script = (
        "import sys\n"
        "from purpose_agent import JSONLCheckpointer\n"
        "from purpose_agent.testing.suite import ev\n"
        "with JSONLCheckpointer(sys.argv[1]) as cp:\n"
        "    cp.save_events([ev('r', 2), ev('r', 3)])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(cp.base_dir)], check=True)
    assert cp.list_events("r", since_seq=1) == [ev("r", 2), ev("r", 3)]
    with pytest.raises(SequenceConflict):
        cp.save_event(ev("r", 3, v="mine"))


def test_index_reads_only_the_bytes_appended_since_it_last_looked(
    cp: JSONLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp.save_events([ev("r", seq, text="x" * 100) for seq in range(1, 2001)])
    with JSONLCheckpointer(cp.base_dir) as reader:
        assert len(reader.list_events("r")) == 2000
        cp.save_event(ev("r", 2001))
        log_size = (cp.run_path("r") / "events.jsonl").stat().st_size
        read: list[int] = []
        real_pread = os.pread

        def counting_pread(fd: int, size: int, offset: int) -> bytes:
            data = real_pread(fd, size, offset)
            read.append(len(data))
            return data

        monkeypatch.setattr(os, "pread", counting_pread)
        assert reader.list_events("r", since_seq=2000) == [ev("r", 2001)]
        cp.save_event(ev("r", 2002))  # the writer's own index needs no reading either
        monkeypatch.undo()
    assert 0 < sum(read) < log_size // 10


def test_index_is_rebuilt_when_the_run_is_deleted_and_written_again(cp: JSONLCheckpointer) -> None:
    cp.save_events([ev("r", 1, v="old"), ev("r", 2, v="old")])
    assert len(cp.list_events("r")) == 2
    with JSONLCheckpointer(cp.base_dir) as other:
        other.delete_run("r")
        # Longer than the old log, so that a size check alone would not notice.
        other.save_events([ev("r", seq, v="new" * 20) for seq in (1, 5, 6)])
    assert cp.list_events("r") == [ev("r", seq, v="new" * 20) for seq in (1, 5, 6)]
    cp.save_event(ev("r", 2, v="fresh"))  # seq 2 is free again in the new log
    assert [e.seq for e in cp.list_events("r")] == [1, 2, 5, 6]


def test_iter_events_memory_stays_flat(cp: JSONLCheckpointer) -> None:
    # A run as it is written: one batch per step, each a line short enough to decode whole.
    for step in range(200):
        cp.save_events([ev("r", step * 100 + i, text="y" * 400) for i in range(1, 101)])
    assert cp.list_events("r", limit=1)  # build the index outside the measurement

    def peak(read: Callable[[], object]) -> int:
        tracemalloc.start()
        try:
            read()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def stream() -> int:
        return sum(1 for _ in cp.iter_events("r"))

    whole = peak(lambda: cp.list_events("r"))
    streamed = peak(stream)
    assert stream() == 20_000
    assert streamed < whole / 5


LONG_BATCH = 40_000


@pytest.mark.parametrize("with_snapshot", [False, True], ids=["batch", "batch_and_snapshot"])
def test_iter_events_memory_stays_flat_over_one_long_batch(
    cp: JSONLCheckpointer, with_snapshot: bool
) -> None:
    # One save_events call writes one line: a run saved in one go is one line of 40,000
    # events, which streaming must read a part at a time, not decode whole.
    cp.save_events(
        [ev("r", seq, i=seq) for seq in range(1, LONG_BATCH + 1)],
        snapshot=st("r", 10) if with_snapshot else None,
    )

    def peak(read: Callable[[], int], last: int = LONG_BATCH) -> int:
        tracemalloc.start()
        try:
            assert read() == last
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def stream(store: JSONLCheckpointer, since: int = 0) -> int:
        last = since
        for event in store.iter_events("r", since_seq=since):
            assert (event.seq, event.data) == (last + 1, {"i": last + 1})
            last = event.seq
        return last

    whole = peak(lambda: len(cp.list_events("r")))  # the run decoded: what streaming must not hold
    with JSONLCheckpointer(cp.base_dir) as fresh:  # its index is built while streaming
        peaks = {
            "a new reader": peak(lambda: stream(fresh)),
            "the writer, from the middle": peak(lambda: stream(cp, LONG_BATCH // 2)),
        }
        recovered = fresh.recover("r")
    for name, streamed in peaks.items():
        assert streamed < whole / 10, f"{name}: streaming peaked at {streamed:,} of {whole:,} bytes"
    assert recovered is not None
    assert recovered.state == (st("r", 10) if with_snapshot else None)
    assert len(recovered.events) == LONG_BATCH - (10 if with_snapshot else 0)


# -- the file system failing -------------------------------------------------------------------


def test_disk_error_is_store_unavailable_and_a_batch_leaves_nothing_behind(
    cp: JSONLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp.save_event(ev("a", 1))
    real_write = os.write

    def failing_write(fd: int, data: Any) -> int:
        if b'"run_id":"b"' in bytes(data):
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(StoreUnavailable) as info:
        cp.save_events([ev("a", 2), ev("b", 1), ev("c", 1)], snapshot=st("a", 2))
    assert isinstance(info.value.__cause__, OSError)
    assert str(info.value) == (
        f"writing to 'a', 'b', 'c' failed on {cp.base_dir}: [Errno 28] No space left on device"
    )
    monkeypatch.undo()
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert store.list_events("a") == [ev("a", 1)]
            assert store.list_events("b") == []
            assert store.list_events("c") == []
            assert store.load_latest("a") is None
            assert store.list_runs() == ["a"]
    cp.save_events([ev("a", 2), ev("b", 1)])
    assert [e.seq for e in cp.list_events("a")] == [1, 2]


def test_unusable_base_dir_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable) as info:
        JSONLCheckpointer(blocker / "store")
    assert isinstance(info.value.__cause__, OSError)
    # The one wording every backend uses: what was done, on which store, and the OS's reason.
    where = blocker / "store"
    assert str(info.value).startswith(f"creating the store's folders failed on {where}: ")
    assert info.value.__cause__.strerror in str(info.value)


def test_failed_directory_sync_after_the_first_line_leaves_no_run_behind(
    cp: JSONLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    file_synced = False

    def fsync(fd: int) -> None:
        # Let the line reach the disk, then fail making the new log's name durable.
        nonlocal file_synced
        if stat.S_ISDIR(os.fstat(fd).st_mode) and file_synced:
            raise OSError(5, "Input/output error")
        real_fsync(fd)
        file_synced = file_synced or stat.S_ISREG(os.fstat(fd).st_mode)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StoreUnavailable):
        cp.save_event(ev("r", 1))
    assert file_synced
    monkeypatch.undo()
    assert cp.list_events("r") == []
    assert cp.list_runs() == []
    cp.save_event(ev("r", 1, retry=True))
    assert cp.list_events("r") == [ev("r", 1, retry=True)]


def test_a_delete_killed_after_its_rename_leaves_no_data_behind(tmp_path: Path) -> None:
    """Killed between renaming a run's folder away and removing it, a delete left the data.

    No read sees a hidden folder, and nothing removed it: a run deleted for its contents kept
    them on disk for good. The next store opened on the folder removes it.
    """
    with JSONLCheckpointer(tmp_path) as cp:
        cp.save_events([ev("secret", 1, ssn="123-45-6789"), ev("kept", 1)])
        doomed = cp.run_path("secret")
    doomed.rename(tmp_path / ".deleted-0123456789abcdef")  # what the killed delete left
    with JSONLCheckpointer(tmp_path) as cp:
        assert cp.list_runs() == ["kept"]
        assert cp.list_events("kept") == [ev("kept", 1)]
    left = [path.name for path in tmp_path.iterdir() if path.name.startswith(".deleted-")]
    assert left == []
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert not any(b"123-45-6789" in path.read_bytes() for path in files)


def test_a_run_folder_made_an_instant_ago_is_not_listed_as_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long run id's folder is named by a file written just after the folder is made.

    A listing that found the folder of such a run, deleted and made again by another writer
    before it read the name, raised ``CorruptRecord``: the new folder holds nothing yet.
    A folder that holds events without its name is damage.
    """
    import shutil

    long_id = "thread." * 30  # escaped, over the length a folder name keeps: hashed
    with JSONLCheckpointer(tmp_path) as cp:
        cp.save_events([ev("plain", 1), ev(long_id, 1)])
        folder = cp.run_path(long_id)
        assert folder.name.startswith("~")
        listed = JSONLCheckpointer._written_runs

        def deleted_and_made_again_once_listed(self: JSONLCheckpointer) -> Any:
            found = listed(self)
            shutil.rmtree(folder)  # another writer deletes the run ...
            folder.mkdir()  # ... and starts it again: the folder is not named yet
            return found

        monkeypatch.setattr(JSONLCheckpointer, "_written_runs", deleted_and_made_again_once_listed)
        assert cp.list_runs() == ["plain"]
        monkeypatch.undo()
        cp.save_event(ev(long_id, 1))  # the writer goes on: the folder is named, the run kept
        assert sorted(cp.list_runs()) == sorted(["plain", long_id])
        (folder / "run_id").unlink()
        with pytest.raises(CorruptRecord):
            cp.list_runs()


def test_a_delete_whose_hidden_folder_another_store_removes_first_still_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process opening the folder sweeps the renamed folder while this one removes it."""
    import shutil

    from purpose_agent.stores.jsonl import store as store_module

    removing = shutil.rmtree

    def swept_first(path: Any, *args: Any, **kwargs: Any) -> None:
        removing(path)  # what another store opening the folder does to the hidden folder
        removing(path, *args, **kwargs)

    with JSONLCheckpointer(tmp_path) as cp:
        cp.save_events([ev("gone", 1), ev("kept", 1)])
        monkeypatch.setattr(store_module.shutil, "rmtree", swept_first)
        cp.delete_run("gone")
        monkeypatch.undo()
        assert cp.list_runs() == ["kept"]
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".deleted-")] == []
