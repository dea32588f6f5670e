"""Damage to a JSONL run's files is reported as ``CorruptRecord``, never repaired away.

The one thing the store repairs is a torn append: a last line without its newline that is the
start of a line the store writes, which a crash in the middle of a write leaves behind. Anything
else (a changed byte, a zero-filled tail, a log shorter than its own snapshot file says) is
damage, and a write must not erase it. Each test damages files the store wrote itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from purpose_agent import CorruptRecord, JSONLCheckpointer, Recovery
from purpose_agent.testing.suite import ev, st


@pytest.fixture
def cp(base: Path) -> Iterator[JSONLCheckpointer]:
    with JSONLCheckpointer(base) as store:
        yield store
        # Whatever happened to "r", its neighbour in the same folder is untouched by it.
        assert_neighbour_readable(base)


READS: dict[str, Callable[[JSONLCheckpointer], object]] = {
    "list_events": lambda cp: cp.list_events("r"),
    "iter_events": lambda cp: list(cp.iter_events("r")),
    "recover": lambda cp: cp.recover("r"),
    "load_latest": lambda cp: cp.load_latest("r"),
}


def write_run_and_neighbour(cp: JSONLCheckpointer) -> Path:
    """Run "r": a line of one event, a batch line, a last line of one event (seq 3)."""
    cp.save_events([ev("other", 1)], snapshot=st("other", 1))
    cp.save_event(ev("r", 1))
    cp.save_events([ev("r", 2, text="two"), ev("r", 4)])
    cp.save_event(ev("r", 3, text="three"))
    # This handle has indexed the clean log; a fresh handle below has not.
    assert [e.seq for e in cp.list_events("r")] == [1, 2, 3, 4]
    return cp.run_path("r") / "events.jsonl"


def assert_neighbour_readable(base: Path) -> None:
    with JSONLCheckpointer(base) as fresh:
        assert fresh.list_events("other") == [ev("other", 1)]
        assert fresh.recover("other") == Recovery(st("other", 1), [])
        assert "other" in fresh.list_runs()


WRITES: dict[str, Callable[[JSONLCheckpointer], object]] = {
    "save_event": lambda cp: cp.save_event(ev("r", 9)),
    "save_events": lambda cp: cp.save_events([ev("r", 9), ev("other", 9)], snapshot=st("r", 9)),
    "save_snapshot": lambda cp: cp.save_snapshot("r", st("r", 9)),
}


def assert_reported(
    cp: JSONLCheckpointer,
    seq: int | None,
    *,
    reads: list[str] | None = None,
    writes: list[str] | None = None,
    damaged: str = "events.jsonl",
) -> None:
    """Reads on this handle and on a fresh one report the damage; writes refuse to cover it."""
    path = cp.run_path("r") / damaged
    before = path.read_bytes() if path.exists() else None
    calls = {name: READS[name] for name in (READS if reads is None else reads)}
    calls |= {name: WRITES[name] for name in (WRITES if writes is None else writes)}
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            for name, call in calls.items():
                with pytest.raises(CorruptRecord) as info:
                    call(store)
                assert (info.value.run_id, info.value.seq) == ("r", seq), name
                assert "'r'" in str(info.value)
    # The refused writes erased nothing: the damage is still there for somebody to look at.
    assert (path.read_bytes() if path.exists() else None) == before
    assert not (cp.run_path("r") / "snapshot.json.tmp").exists()


# -- a complete last line that was changed --------------------------------------------------------


@pytest.mark.parametrize("replacement", [b"X", b"\0", b" ", b"}", b"\r"])
def test_changed_newline_of_the_last_line_is_reported_not_taken_for_a_torn_append(
    cp: JSONLCheckpointer, replacement: bytes
) -> None:
    log = write_run_and_neighbour(cp)
    raw = log.read_bytes()
    assert raw.endswith(b"}\n")
    log.write_bytes(raw[:-1] + replacement)
    assert_reported(cp, 3)


@pytest.mark.parametrize("where", [0, 1, 10, -3])
def test_changed_byte_inside_the_last_line_is_reported(cp: JSONLCheckpointer, where: int) -> None:
    log = write_run_and_neighbour(cp)
    raw = bytearray(log.read_bytes())
    last = raw.rindex(b"\n", 0, len(raw) - 1) + 1
    position = last + where if where >= 0 else len(raw) + where
    raw[position] = ord("#")
    log.write_bytes(bytes(raw))
    # A handle reads a line again only when it needs it (its index notices a changed end of
    # the log, not a changed middle), so what is proved is that every read of seq 3 reports it.
    assert_reported(cp, 3, reads=["list_events", "iter_events", "recover"], writes=[])


# -- a last line without its newline that is not the start of a write -----------------------------


def test_zero_filled_tail_after_the_last_line_is_reported(cp: JSONLCheckpointer) -> None:
    log = write_run_and_neighbour(cp)
    with log.open("ab") as file:
        file.write(b"\0" * 4096)  # the size grew, the data never arrived
    assert_reported(cp, None)


def test_last_line_zeroed_from_the_middle_is_reported_naming_its_seq(
    cp: JSONLCheckpointer,
) -> None:
    log = write_run_and_neighbour(cp)
    raw = log.read_bytes()
    last = raw.rindex(b"\n", 0, len(raw) - 1) + 1
    cut = raw.index(b'"kind"', last)
    log.write_bytes(raw[:cut] + b"\0" * (len(raw) - cut))
    assert_reported(cp, 3)


@pytest.mark.parametrize(
    ("tail", "seq"),
    [
        (b'{"run_id":"r","seq":5,"kind":"custom"}}', 5),
        (b'{"run_id":"r","seq":5 "kind"', 5),
        (b'[{"run_id":"r","seq":5},,', 5),
        (b'{"run_id":"r","seq":5,"data":{"s":"\x01', 5),
        (b'{"run_id":"r","seq":5,"data":{"s":"\\x', 5),
        (b'{"run_id":"r","seq":5,"ts":01', 5),
        (b'{"run_id":"r","seq":5,"data":{"b":trux', 5),
        (b'{"run_id":"r","seq":5,"data":{"s":"\xff', 5),
        (b"  ", None),
        (b"garbage", None),
    ],
    ids=[
        "closed-twice",
        "missing-comma",
        "two-commas",
        "control-char",
        "bad-escape",
        "leading-zero",
        "bad-literal",
        "not-utf8",
        "blank",
        "garbage",
    ],
)
def test_last_line_that_no_write_starts_with_is_reported(
    cp: JSONLCheckpointer, tail: bytes, seq: int | None
) -> None:
    log = write_run_and_neighbour(cp)
    with log.open("ab") as file:
        file.write(tail)
    assert_reported(cp, seq)


@pytest.mark.parametrize(
    "cut",
    [
        b"{",
        b"[",
        b'{"run_id":"r","seq":5,"kind":"cus',
        b'{"run_id":"r","seq":5,"kind":"custom","ts":1.',
        b'{"run_id":"r","seq":5,"kind":"custom","ts":1.5e',
        b'{"run_id":"r","seq":5,"kind":"custom","ts":-',
        b'{"run_id":"r","seq":5,"data":{"s":"\\u00',
        b'{"run_id":"r","seq":5,"data":{"s":"\\',
        b'{"run_id":"r","seq":5,"data":{"s":"' + "é".encode()[:1],
        b'{"run_id":"r","seq":5,"data":{"b":tr',
        b'{"run_id": "r", "seq": 5, "data": {"x": [1, 2, ',
        b'{"events":[{"run_id":"r","seq":5}],"snapshot":{"run_id":"r","seq":5}}',
    ],
)
def test_torn_appends_of_every_shape_are_still_repaired(cp: JSONLCheckpointer, cut: bytes) -> None:
    log = write_run_and_neighbour(cp)
    clean = log.read_bytes()
    with log.open("ab") as file:
        file.write(cut)
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert [e.seq for e in store.list_events("r")] == [1, 2, 3, 4]
    cp.save_event(ev("r", 5))
    raw = log.read_bytes()
    assert raw.startswith(clean)
    assert json.loads(raw[len(clean) :]) == ev("r", 5).to_dict()  # one line, the fragment gone


TRICKY = {"s": 'quote " backslash \\ nul \x00 é 🙂', "n": [-1.5e-07, 0, 10**30], "t": True}
WRITES_OF_EVERY_FORM: dict[str, Callable[[JSONLCheckpointer], object]] = {
    "one-event": lambda cp: cp.save_event(ev("scratch", 1, **TRICKY)),
    "batch": lambda cp: cp.save_events([ev("scratch", 1, **TRICKY), ev("scratch", 2, x=None)]),
    "batch-with-snapshot": lambda cp: cp.save_events(
        [ev("scratch", 1, **TRICKY)], snapshot=st("scratch", 1, **TRICKY)
    ),
}


@pytest.mark.parametrize("write", WRITES_OF_EVERY_FORM.values(), ids=WRITES_OF_EVERY_FORM.keys())
def test_every_cut_of_every_form_of_write_is_a_torn_append(
    cp: JSONLCheckpointer, write: Callable[[JSONLCheckpointer], object]
) -> None:
    log = write_run_and_neighbour(cp)
    clean = log.read_bytes()
    write(cp)
    line = (cp.run_path("scratch") / "events.jsonl").read_bytes()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    # Each cut lands somewhere else: inside a key, a string, an escape, a number, a literal.
    for cut in range(1, len(line)):
        log.write_bytes(clean + line[:cut])
        with JSONLCheckpointer(cp.base_dir) as fresh:
            assert [e.seq for e in fresh.list_events("r")] == [1, 2, 3, 4], line[:cut]
    # And what no crash leaves: the whole line, then something other than its newline.
    for stray in (b"\0", b" ", b"x", b"}"):
        log.write_bytes(clean + line[:-1] + stray)
        with JSONLCheckpointer(cp.base_dir) as fresh, pytest.raises(CorruptRecord):
            fresh.list_events("r")
    log.write_bytes(clean)


# -- a log shorter than snapshot.json says ---------------------------------------------------------


def write_run_with_snapshot(cp: JSONLCheckpointer) -> tuple[Path, list[int]]:
    """Run "r": events 1-6 in three lines, then snapshot.json at seq 6; returns line ends."""
    cp.save_events([ev("other", 1)], snapshot=st("other", 1))
    cp.save_events([ev("r", 1), ev("r", 2)])
    cp.save_events([ev("r", 3), ev("r", 4)])
    cp.save_events([ev("r", 5), ev("r", 6)])
    cp.save_snapshot("r", st("r", 6, step=6))
    assert cp.recover("r") == Recovery(st("r", 6, step=6), [])
    log = cp.run_path("r") / "events.jsonl"
    raw = log.read_bytes()
    ends = [i + 1 for i, byte in enumerate(raw) if byte == ord("\n")]
    assert len(ends) == 3
    return log, ends


@pytest.mark.parametrize(
    "cut", ["to-nothing", "to-one-line", "to-two-lines", "mid-line", "removed"]
)
def test_log_shorter_than_its_snapshot_file_says_is_reported(
    cp: JSONLCheckpointer, cut: str
) -> None:
    log, ends = write_run_with_snapshot(cp)
    raw = log.read_bytes()
    if cut == "removed":
        log.unlink()
    else:
        size = {"to-nothing": 0, "to-one-line": ends[0], "to-two-lines": ends[1]}.get(
            cut, ends[1] + 10
        )
        log.write_bytes(raw[:size])
    assert_reported(cp, 6)


def test_snapshot_covering_events_the_log_never_held_is_not_damage(
    cp: JSONLCheckpointer,
) -> None:
    # What a copy from a store whose covered events were pruned writes: the state, then the rest.
    cp.save_events([ev("other", 1)], snapshot=st("other", 1))
    cp.save_snapshot("r", st("r", 6, step=6))
    cp.save_events([ev("r", 7)])
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert store.recover("r") == Recovery(st("r", 6, step=6), [ev("r", 7)])
            assert store.list_events("r") == [ev("r", 7)]


def test_torn_append_after_a_snapshot_is_still_repaired(cp: JSONLCheckpointer) -> None:
    log, _ = write_run_with_snapshot(cp)
    with log.open("ab") as file:
        file.write(b'[{"run_id":"r","seq":7,"kind":"cus')
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert store.recover("r") == Recovery(st("r", 6, step=6), [])
    cp.save_event(ev("r", 7))
    assert cp.recover("r") == Recovery(st("r", 6, step=6), [ev("r", 7)])


# -- a damaged snapshot.json ----------------------------------------------------------------------


def damage_text(raw: bytes, how: str) -> bytes:
    if how == "cut":
        return raw[: raw.index(b'"status"') + 4]
    if how == "bad-status":
        return raw.replace(b'"status":"', b'"status":"no-such-', 1)
    if how == "bad-log-end":
        return raw.replace(b'"log_end":', b'"log_end":"', 1).replace(b',"state"', b'","state"', 1)
    if how == "not-utf8":
        return raw.replace(b'"step"', b'"st\xffp"', 1)
    return b"\0" * len(raw)


@pytest.mark.parametrize(
    ("how", "seq"),
    [("cut", 6), ("bad-status", 6), ("bad-log-end", 6), ("not-utf8", 6), ("zeroed", None)],
)
def test_damaged_snapshot_file_names_its_run_and_the_seq_it_still_shows(
    cp: JSONLCheckpointer, how: str, seq: int | None
) -> None:
    write_run_with_snapshot(cp)
    path = cp.run_path("r") / "snapshot.json"
    path.write_bytes(damage_text(path.read_bytes(), how))
    assert_reported(
        cp,
        seq,
        reads=["recover", "load_latest"],
        writes=["save_events", "save_snapshot"],
        damaged="snapshot.json",
    )
    # The log itself is intact, and reads that need no snapshot still serve it.
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert [e.seq for e in store.list_events("r")] == [1, 2, 3, 4, 5, 6]


# -- what is not damage: a reader racing writers ---------------------------------------------------

# Saves a step with its snapshot and deletes the run, over and over, for the given seconds.
REWRITER = """
import sys, time
from purpose_agent import JSONLCheckpointer
from purpose_agent.testing.suite import ev, st

with JSONLCheckpointer(sys.argv[1]) as cp:
    print("writing", flush=True)
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        cp.save_events([ev("r", 1, pad="x" * 500)], snapshot=st("r", 1))
        cp.delete_run("r")
"""


def test_readers_racing_a_writer_that_deletes_and_rewrites_the_run_see_no_damage(
    base: Path,
) -> None:
    # A reader without the file lock can read snapshot.json of one life of the run and then
    # find the log gone, or the next life's: that looks like a shortened log until it is
    # looked at again under the lock. (Reported as it looks, this fails a few times a second.)
    JSONLCheckpointer(base).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", REWRITER, str(base), "3"], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "writing\n"
    seen: set[int | None] = set()
    try:
        with JSONLCheckpointer(base) as reader:
            while writer.poll() is None:
                latest = reader.load_latest("r")
                events = reader.list_events("r")
                seen.add(None if latest is None else latest.seq)
                assert [e.seq for e in events] in ([], [1])
    finally:
        writer.kill()
        writer.communicate()
    assert seen == {None, 1}  # it did read the run both alive and deleted
