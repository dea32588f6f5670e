"""KeyedEvents: events read and saved with their keys at their own seqs, on every store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from purpose_agent import (
    AsyncSQLCheckpointer,
    EventKind,
    InMemoryCheckpointer,
    InvalidInput,
    JSONLCheckpointer,
    NewEvent,
    PAEvent,
    RunState,
    SequenceConflict,
    SQLCheckpointer,
)
from purpose_agent.protocol import Checkpointer, KeyedEvent, KeyedEvents
from tests.conftest import DATABASES, STORES
from tests.test_cli_support import make_store_url


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty store of each backend in turn."""
    name = request.param
    opened: Checkpointer
    if name == "memory":
        opened = InMemoryCheckpointer()
    elif name == "jsonl":
        opened = JSONLCheckpointer(tmp_path / "jsonl")
    else:
        opened = SQLCheckpointer(make_store_url(request, tmp_path, name))
    with opened:
        yield opened


def _ev(run_id: str, seq: int, **data: object) -> PAEvent:
    return PAEvent(run_id=run_id, seq=seq, kind=EventKind.TOOL_RESULT, ts=10.0 + seq, data=data)


def _keyed(run_id: str, seqs: range, keyed_every: int = 2) -> list[KeyedEvent]:
    return [
        KeyedEvent(_ev(run_id, seq, n=seq), f"k{seq}" if seq % keyed_every == 0 else None)
        for seq in seqs
    ]


def test_every_store_declares_keyed_events(store: Any) -> None:
    assert isinstance(store, KeyedEvents)


def test_appended_keys_are_read_back_with_their_events(store: Any) -> None:
    stored = store.append(
        "src",
        [
            NewEvent(kind=EventKind.TOOL_CALL, data={"a": 1}, key="call-1"),
            NewEvent(kind=EventKind.TOOL_RESULT, data={"b": 2}),
            NewEvent(kind=EventKind.CUSTOM, key="third"),
        ],
    )
    read = list(store.iter_keyed_events("src"))
    assert read == [KeyedEvent(stored[0], "call-1"), KeyedEvent(stored[1], None),
                    KeyedEvent(stored[2], "third")]  # fmt: skip
    assert list(store.iter_keyed_events("src", since_seq=1)) == read[1:]
    assert list(store.iter_keyed_events("unknown")) == []


def test_saved_keys_are_found_by_key_and_appends_continue_after_them(store: Any) -> None:
    batch = _keyed("run", range(1, 2501))  # more than one page on every store
    store.save_keyed_events("run", batch, snapshot=RunState(run_id="run", seq=2500))
    assert list(store.iter_keyed_events("run")) == batch
    assert store.event_by_key("run", "k2") == _ev("run", 2, n=2)
    assert store.event_by_key("run", "k2500") == _ev("run", 2500, n=2500)
    assert store.event_by_key("run", "k1") is None
    assert store.last_seq("run") == 2500
    # An append retried with a copied key is the stored event; a new one takes the next seq.
    again = store.append("run", [NewEvent(kind=EventKind.TOOL_RESULT, data={"n": 4}, key="k4")])
    assert again == [_ev("run", 4, n=4)]
    (new,) = store.append("run", [NewEvent(kind=EventKind.CUSTOM, key="new")])
    assert new.seq == 2501


def test_saving_the_same_batch_again_stores_nothing_twice(store: Any) -> None:
    batch = _keyed("run", range(1, 11))
    state = RunState(run_id="run", seq=10, data={"done": True})
    store.save_keyed_events("run", batch, snapshot=state, group="g")
    store.save_keyed_events("run", batch, snapshot=state, group="g")
    store.save_keyed_events("run", batch[:4])
    assert list(store.iter_keyed_events("run")) == batch
    assert store.load_latest("run") == state
    assert store.list_runs() == ["run"]


def test_a_stored_event_under_another_key_is_a_conflict_and_nothing_is_written(
    store: Any,
) -> None:
    store.save_keyed_events("run", _keyed("run", range(1, 5)))
    other_key = [KeyedEvent(_ev("run", 5, n=5), None), KeyedEvent(_ev("run", 2, n=2), "other")]
    with pytest.raises(SequenceConflict, match="at seq 2 with key 'k2', not 'other'"):
        store.save_keyed_events("run", other_key)
    no_key = [KeyedEvent(_ev("run", 5, n=5), None), KeyedEvent(_ev("run", 4, n=4), None)]
    with pytest.raises(SequenceConflict, match="with key 'k4', not None"):
        store.save_keyed_events("run", no_key)
    moved = [KeyedEvent(_ev("run", 5, n=5), None), KeyedEvent(_ev("run", 6, n=6), "k2")]
    with pytest.raises(SequenceConflict, match="already has key 'k2' at seq 2, not at seq 6"):
        store.save_keyed_events("run", moved)
    changed = [KeyedEvent(_ev("run", 5, n=5), None), KeyedEvent(_ev("run", 1, n=99), None)]
    with pytest.raises(SequenceConflict, match="different event at seq 1"):
        store.save_keyed_events("run", changed)
    assert [item.event.seq for item in store.iter_keyed_events("run")] == [1, 2, 3, 4]


def test_a_group_is_saved_with_the_events_and_alone_makes_no_run(store: Any) -> None:
    store.save_keyed_events("lonely", [], group="g")
    assert store.list_runs() == []
    assert store.run_group("lonely") is None

    store.save_keyed_events("a", _keyed("a", range(1, 3)), group="g")
    store.save_keyed_events("b", _keyed("b", range(1, 3)))
    assert store.run_group("a") == "g"
    assert store.run_group("b") is None
    store.save_keyed_events("b", [], group="g")  # a stored run joins a group on its own
    assert sorted(store.list_runs(group="g")) == ["a", "b"]
    assert store.list_groups() == ["g"]


def test_a_snapshot_ahead_of_the_events_moves_the_last_seq(store: Any) -> None:
    # What a copy of a compacted run writes: the snapshot covers seqs no event is kept at.
    state = RunState(run_id="run", seq=40)
    store.save_keyed_events("run", [KeyedEvent(_ev("run", 41), "k41")], snapshot=state)
    assert store.last_seq("run") == 41
    assert store.recover("run").state == state
    store.save_keyed_events("other", [], snapshot=RunState(run_id="other", seq=7))
    assert store.last_seq("other") == 7
    assert store.list_runs() == ["other", "run"]


def test_bad_batches_are_refused_before_anything_is_written(store: Any) -> None:
    with pytest.raises(InvalidInput, match="event of run 'b'"):
        store.save_keyed_events("a", [KeyedEvent(_ev("a", 1), None), KeyedEvent(_ev("b", 2), None)])
    with pytest.raises(InvalidInput, match="key 'k' is given to two events"):
        store.save_keyed_events("a", [KeyedEvent(_ev("a", 1), "k"), KeyedEvent(_ev("a", 2), "k")])
    with pytest.raises(InvalidInput, match="key must be"):
        store.save_keyed_events("a", [KeyedEvent(_ev("a", 1), "")])
    with pytest.raises(SequenceConflict):
        store.save_keyed_events("a", [KeyedEvent(_ev("a", 1), "x"), KeyedEvent(_ev("a", 1), "y")])
    with pytest.raises(InvalidInput, match="not one value"):
        store.save_keyed_events("a", KeyedEvent(_ev("a", 1), None))
    with pytest.raises(InvalidInput, match="does not match"):
        store.save_keyed_events("a", [], snapshot=RunState(run_id="b", seq=1))
    assert store.list_runs() == []


@pytest.mark.parametrize("name", DATABASES)
def test_the_async_store_reads_and_saves_keys(
    request: pytest.FixtureRequest, tmp_path: Path, name: str
) -> None:
    url = make_store_url(request, tmp_path, name)
    batch = _keyed("run", range(1, 1201))

    async def scenario() -> list[KeyedEvent]:
        async with await AsyncSQLCheckpointer.open(url, page_size=500) as store:
            await store.save_keyed_events("run", batch, group="g")
            await store.save_keyed_events("run", batch, group="g")
            with pytest.raises(SequenceConflict):
                await store.save_keyed_events("run", [KeyedEvent(_ev("run", 1, n=1), "x")])
            assert await store.run_group("run") == "g"
            return [item async for item in store.iter_keyed_events("run", since_seq=2)]

    assert asyncio.run(scenario()) == batch[2:]
    with SQLCheckpointer(url) as sync:
        assert sync.event_by_key("run", "k1200") == _ev("run", 1200, n=1200)
