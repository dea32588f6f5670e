"""Lines longer than LONG_LINE: indexed and read a record at a time, with the same results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from purpose_agent import CorruptRecord, JSONLCheckpointer, PAEvent
from purpose_agent.protocol import KeyedEvent
from purpose_agent.stores.jsonl.lines import LONG_LINE
from purpose_agent.testing.suite import ev, st

COUNT = 4_000  # of about 400 bytes each: a line of well over LONG_LINE


def exotic(seq: int) -> dict[str, Any]:
    """Data that must come back bit for bit: key order, -0.0, big integers, NUL, escapes."""
    return {
        "z": -0.0,
        "a": 2**200 + seq,
        "m": f'nul\x00 quote" brace}} bracket] \u00e9 \ud800 \U0001f600 {seq}',
        "nested": {"b": [1, {"y": None, "x": True}], "a": 1.5e-300},
        "pad": "p" * 250,
    }


def events(first: int, count: int) -> list[PAEvent]:
    return [ev("r", seq, **exotic(seq)) for seq in range(first, first + count)]


def log_path(cp: JSONLCheckpointer) -> Path:
    return cp.run_path("r") / "events.jsonl"


def line_lengths(cp: JSONLCheckpointer) -> list[int]:
    return [len(line) for line in log_path(cp).read_bytes().splitlines()]


def check_reads(store: JSONLCheckpointer, expected: list[PAEvent], state_seq: int) -> None:
    assert store.list_events("r") == expected
    assert list(store.iter_events("r")) == expected
    middle = expected[len(expected) // 2].seq
    assert list(store.iter_events("r", since_seq=middle)) == [
        event for event in expected if event.seq > middle
    ]
    assert (
        store.list_events("r", since_seq=middle, limit=3)
        == [event for event in expected if event.seq > middle][:3]
    )
    recovered = store.recover("r")
    assert recovered is not None
    assert recovered.state == st("r", state_seq, big="s" * 100)
    assert recovered.events == [event for event in expected if event.seq > state_seq]
    for got, want in zip(store.iter_events("r"), expected, strict=True):
        # == treats -0.0 and 0.0 alike; the stored text does not.
        assert json.dumps(got.data) == json.dumps(want.data)


def test_long_batches_read_back_exactly_by_their_writer_and_a_new_reader(
    cp: JSONLCheckpointer,
) -> None:
    first = events(1, COUNT)
    second = events(COUNT + 1, COUNT)
    cp.save_events(first, snapshot=st("r", COUNT // 3, big="s" * 100))
    cp.save_events(second)
    cp.save_event(ev("r", 2 * COUNT + 1))
    assert [length > LONG_LINE for length in line_lengths(cp)] == [True, True, False]
    expected = [*first, *second, ev("r", 2 * COUNT + 1)]
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            check_reads(store, expected, COUNT // 3)
            assert store.load_latest("r") == st("r", COUNT // 3, big="s" * 100)


def test_a_long_batch_in_the_seeds_spacing_reads(cp: JSONLCheckpointer) -> None:
    expected = events(1, COUNT)
    records = [event.to_dict() for event in expected]
    cp.save_snapshot("r", st("r", 7, big="s" * 100))
    # The seed's json.dumps spacing, and a batch with its snapshot in the same spacing.
    head = json.dumps({"events": records[:10], "snapshot": st("r", 7, big="s" * 100).to_dict()})
    with log_path(cp).open("ab") as file:
        file.write(head.encode() + b"\n")
        file.write(json.dumps(records[10:]).encode() + b"\n")
    assert line_lengths(cp)[-1] > LONG_LINE
    with JSONLCheckpointer(cp.base_dir) as fresh:
        check_reads(fresh, expected, 7)


def test_a_long_batch_saved_again_is_a_no_op_and_a_different_one_conflicts(
    cp: JSONLCheckpointer,
) -> None:
    cp.save_events(events(1, COUNT))
    with JSONLCheckpointer(cp.base_dir) as fresh:
        fresh.save_events(events(1, COUNT))
        assert len(line_lengths(cp)) == 1
        changed = events(1, COUNT)
        changed[-1] = ev("r", COUNT, other=True)
        with pytest.raises(Exception, match="seq"):
            fresh.save_events(changed)
    assert cp.list_events("r") == events(1, COUNT)


def test_keyed_events_in_a_long_batch_keep_their_keys(cp: JSONLCheckpointer) -> None:
    keyed = [KeyedEvent(event, f"k{event.seq}") for event in events(1, COUNT)]
    cp.save_keyed_events("r", keyed)
    assert line_lengths(cp)[0] > LONG_LINE
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert list(store.iter_keyed_events("r", since_seq=COUNT - 2)) == keyed[-2:]
            assert store.event_by_key("r", f"k{COUNT // 2}") == keyed[COUNT // 2 - 1].event


def test_a_torn_long_append_is_left_out_and_cut_off(cp: JSONLCheckpointer) -> None:
    cp.save_event(ev("r", 1))
    cp.list_events("r")
    with JSONLCheckpointer(cp.base_dir) as other:
        other.save_events(events(2, COUNT))
    raw = log_path(cp).read_bytes()
    log_path(cp).write_bytes(raw[: len(raw) - 1000])  # the long append, torn
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert store.list_events("r") == [ev("r", 1)]
        fresh.save_event(ev("r", 2, after="repair"))
    assert cp.list_events("r") == [ev("r", 1), ev("r", 2, after="repair")]


@pytest.mark.parametrize("indexed", [False, True], ids=["new_reader", "indexed_before"])
def test_a_damaged_record_in_a_long_line_is_corrupt_record_naming_the_run_and_a_seq(
    cp: JSONLCheckpointer, indexed: bool
) -> None:
    cp.save_events(events(1, COUNT))
    reader = JSONLCheckpointer(cp.base_dir)
    if indexed:
        assert len(reader.list_events("r", limit=1)) == 1
    raw = bytearray(log_path(cp).read_bytes())
    at = raw.index(b'"seq":3000,')
    raw[at + 20 : at + 21] = b"\x00"
    log_path(cp).write_bytes(bytes(raw))
    with pytest.raises(CorruptRecord) as info:
        list(reader.iter_events("r"))
    reader.close()
    assert info.value.run_id == "r"
    # A reader that indexed the line reads the damaged record alone, and knows its seq; one
    # that meets the damage while indexing names the line's first seq, as for a short batch.
    assert info.value.seq == (3000 if indexed else 1)


def test_a_compacted_log_with_a_long_header_reads(cp: JSONLCheckpointer) -> None:
    big = st("r", 10, big="s" * 100, more=["x" * 1000] * 1200)
    expected = events(1, COUNT)
    cp.save_events(expected, snapshot=big)
    cp.compact("r")
    assert line_lengths(cp)[0] > LONG_LINE  # the header carries the big snapshot
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            recovered = store.recover("r")
            assert recovered is not None
            assert recovered.state == big
            assert recovered.events == expected[10:]
            assert store.last_seq("r") == COUNT
