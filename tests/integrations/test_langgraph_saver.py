"""What the saver promises beyond LangGraph's suite: no pending write lost, exact values,
bounded reads, writes without reads, and threads kept, deleted and pruned as run groups."""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import json
import random
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypedDict

import pytest

pytest.importorskip("langgraph.checkpoint.base")

import langgraph.checkpoint.base
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT

from purpose_agent import (
    AsyncSQLCheckpointer,
    CorruptRecord,
    EventKind,
    InMemoryCheckpointer,
    InvalidInput,
    NewEvent,
    RunState,
    SequenceConflict,
)
from purpose_agent.integrations.langgraph import (
    PurposeAgentSaver,
    channels,
    group_for,
    payloads,
    reads,
    run_id_for,
    writes_run_for,
)
from purpose_agent.integrations.langgraph.reads import PAGE
from purpose_agent.ops.schema import downgrade_schema, schema_status
from tests.integrations.conftest import StoreFactory
from tests.integrations.together import AppendsTogether
from tests.test_cli_support import invoke


def _checkpoint(values: dict[str, Any] | None = None) -> Any:
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6())
    checkpoint["channel_values"] = values or {}
    checkpoint["channel_versions"] = dict.fromkeys(values or {}, 1)
    return checkpoint


def _config(thread_id: str, checkpoint_id: str | None = None, ns: str = "") -> Any:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _put(
    saver: PurposeAgentSaver,
    thread_id: str,
    parent: str | None = None,
    ns: str = "",
    run: str | None = None,
    **values: Any,
) -> str:
    checkpoint = _checkpoint(values)
    metadata: Any = {"source": "loop", "step": 0} | ({"run_id": run} if run else {})
    saver.put(_config(thread_id, parent, ns), checkpoint, metadata, {})
    return str(checkpoint["id"])


def _fill(saver: PurposeAgentSaver, thread_id: str, count: int, ns: str = "") -> list[str]:
    ids: list[str] = []
    for n in range(count):
        ids.append(_put(saver, thread_id, ids[-1] if ids else None, ns, n=n))
        saver.put_writes(_config(thread_id, ids[-1], ns), [("w", n)], "task")
    return ids


def _sync(store: Any) -> Any:
    return store.sync if isinstance(store, AsyncSQLCheckpointer) else store


def test_writes_sent_before_their_checkpoint_and_checkpoints_late_are_all_kept(
    saver: PurposeAgentSaver,
) -> None:
    first = _checkpoint()
    early = first["id"]
    saver.put_writes(_config("t", early), [("ch", "before its checkpoint")], "task-a")
    saver.put(_config("t"), first, {"step": 0}, {})
    later = _put(saver, "t", early)
    _put(saver, "t", later)
    saver.put_writes(_config("t", early), [("ch", "three checkpoints late")], "task-b")

    found = saver.get_tuple(_config("t", early))
    assert found is not None
    assert found.pending_writes == [
        ("task-a", "ch", "before its checkpoint"),
        ("task-b", "ch", "three checkpoints late"),
    ]
    latest = saver.get_tuple(_config("t"))
    assert latest is not None
    assert latest.pending_writes == []


def test_concurrent_puts_and_writes_from_two_savers_lose_nothing(
    store_factory: StoreFactory,
) -> None:
    savers = [PurposeAgentSaver(store_factory()), PurposeAgentSaver(store_factory())]
    checkpoints = [_checkpoint() for _ in range(24)]
    ids = [str(c["id"]) for c in checkpoints]
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        saver = savers[worker % 2]
        try:
            for n in range(worker, len(checkpoints), 4):
                # A write for this checkpoint before it, one for an older one after it.
                saver.put_writes(_config("race", ids[n]), [("x", n)], f"w{worker}-early")
                saver.put(_config("race"), checkpoints[n], {"step": n}, {})
                saver.put_writes(_config("race", ids[n - 3]), [("y", n)], f"w{worker}-late")
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    reader = PurposeAgentSaver(store_factory())
    listed = {t.checkpoint["id"]: t for t in reader.list(_config("race"))}
    assert sorted(listed) == sorted(ids)
    expected: dict[str, list[tuple[str, int]]] = {cid: [] for cid in ids}
    for n in range(len(ids)):
        expected[ids[n]].append(("x", n))
        expected[ids[n - 3]].append(("y", n))  # the first three target the last three ids
    found = {
        cid: sorted((ch, value) for _, ch, value in tup.pending_writes or [])
        for cid, tup in listed.items()
    }
    assert found == {cid: sorted(writes) for cid, writes in expected.items()}


def test_non_json_values_round_trip(saver: PurposeAgentSaver, store_factory: StoreFactory) -> None:
    messages = pytest.importorskip("langchain_core.messages")
    when = datetime.datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=datetime.UTC)
    values = {
        "raw": b"\x00\xffbytes\x80",
        "when": when,
        "amount": Decimal("12.3400"),
        "ids": {uuid.UUID(int=7)},
        "messages": [
            messages.HumanMessage(content="hi", id="m1"),
            messages.AIMessage(
                content="", id="m2", tool_calls=[{"name": "f", "args": {"a": 1}, "id": "c1"}]
            ),
        ],
    }
    checkpoint = _checkpoint(values)
    saver.put(_config("values"), checkpoint, {"step": 1, "when": when}, {})
    saver.put_writes(_config("values", checkpoint["id"]), [("raw", b"\x01\x02"), ("t", when)], "t1")

    found = PurposeAgentSaver(store_factory()).get_tuple(_config("values"))
    assert found is not None
    assert found.checkpoint["channel_values"] == values
    assert found.metadata["when"] == when
    assert found.pending_writes == [("t1", "raw", b"\x01\x02"), ("t1", "t", when)]
    # The store holds JSON text only: LangGraph's bytes are base64 inside event data.
    (stored,) = saver.store.list_events(run_id_for("values"))
    writes = saver.store.list_events(writes_run_for("values", "", checkpoint["id"]))
    assert [type(value) for value in stored.data["checkpoint"]] == [str, str]
    (event,) = writes  # one event per put_writes, holding both writes
    assert [type(value[1]) for _, _, value in event.data["writes"]] == [str, str]


SCALARS = {
    "text": "ünï\x00côdé",
    "empty": "",
    "surrogate": "\ud800",  # not UTF-8: the serializer's to keep
    "int": 2**63 - 1,
    "big": 2**63,  # past 64 bits: the serializer's
    "negative": -(2**63),
    "zero": -0.0,
    "float": 0.1,
    "infinite": float("inf"),
    "true": True,
    "one": 1,
    "none": None,
}


def test_scalar_values_are_kept_as_json_and_come_back_exactly(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    """Scalars of exactly JSON's types are stored as themselves: readable, no serializer."""
    values = {**SCALARS, "flag": False, "subclass": Decimal("1")}
    checkpoint = _checkpoint(values)
    saver.put(_config("scalars"), checkpoint, {"step": 0}, dict.fromkeys(values, 1))
    saver.put_writes(_config("scalars", checkpoint["id"]), list(SCALARS.items()), "task")

    found = PurposeAgentSaver(store_factory()).get_tuple(_config("scalars"))
    assert found is not None
    # A lone surrogate comes back as LangGraph's serializer gives it back (as "?").
    serde = saver.serde
    expected = {**values, "surrogate": serde.loads_typed(serde.dumps_typed("\ud800"))}
    got = found.checkpoint["channel_values"]
    assert [(k, type(v), repr(v)) for k, v in got.items()] == [
        (k, type(v), repr(v)) for k, v in expected.items()
    ]
    assert [(ch, type(v), repr(v)) for _, ch, v in found.pending_writes] == [
        (ch, type(v), repr(v)) for ch, v in expected.items() if ch in SCALARS
    ]
    (stored,) = saver.store.list_events(run_id_for("scalars"))
    inline = {k for k, v in stored.data["values"].items() if type(v) is not list}
    assert inline == set(values) - {"surrogate", "big", "infinite", "subclass"}
    assert stored.data["values"]["int"] == 2**63 - 1


def test_a_retried_put_or_put_writes_stores_nothing_twice(saver: PurposeAgentSaver) -> None:
    checkpoint = _checkpoint({"v": 1})
    for _ in range(2):
        saver.put(_config("retry"), checkpoint, {"step": 0}, {})
        saver.put_writes(_config("retry", checkpoint["id"]), [("a", 1), ("b", 2)], "task")

    store: Any = saver.store
    assert store.last_seq(run_id_for("retry")) == 1
    # One event per put_writes, holding both writes, stored once.
    assert store.last_seq(writes_run_for("retry", "", checkpoint["id"])) == 1
    found = saver.get_tuple(_config("retry"))
    assert found is not None
    assert found.pending_writes == [("task", "a", 1), ("task", "b", 2)]


def test_a_task_writing_again_keeps_its_first_values_and_adds_the_new_ones(
    saver: PurposeAgentSaver,
) -> None:
    cid = _put(saver, "again")
    config = _config("again", cid)
    saver.put_writes(config, [("ch", "first"), ("other", 1)], "task")
    saver.put_writes(config, [("ch", "second"), ("other", 2), ("third", 3)], "task")
    saver.put_writes(config, [("ch", "second"), ("other", 2), ("third", 3)], "task")

    expected = [("task", "ch", "first"), ("task", "other", 1), ("task", "third", 3)]
    found = saver.get_tuple(config)
    assert found is not None
    assert found.pending_writes == expected
    saver.copy_thread("again", "again-copy")
    saver.copy_thread("again", "again-copy")  # a copy run twice
    copied = saver.get_tuple(_config("again-copy", cid))
    assert copied is not None
    assert copied.pending_writes == expected


def test_another_checkpoint_under_a_stored_id_is_refused(saver: PurposeAgentSaver) -> None:
    checkpoint = _checkpoint({"v": 1})
    saver.put(_config("same-id"), checkpoint, {"step": 0}, {})
    checkpoint["channel_values"] = {"v": 2}
    with pytest.raises(SequenceConflict):
        saver.put(_config("same-id"), checkpoint, {"step": 0}, {})
    found = saver.get_tuple(_config("same-id"))
    assert found is not None
    assert found.checkpoint["channel_values"] == {"v": 1}


def test_a_regular_write_keeps_its_first_value_and_a_special_one_its_last(
    saver: PurposeAgentSaver,
) -> None:
    cid = _put(saver, "kinds")
    config = _config("kinds", cid)
    saver.put_writes(config, [("ch", "first"), (INTERRUPT, "asked once")], "task")
    # The task ran again (a resume): the regular write is LangGraph's first, the interrupt new.
    saver.put_writes(config, [("ch", "second"), (INTERRUPT, "asked again")], "task")

    found = saver.get_tuple(config)
    assert found is not None
    assert found.pending_writes == [("task", INTERRUPT, "asked again"), ("task", "ch", "first")]


def test_put_and_put_writes_only_append_and_reads_are_bounded(
    store_factory: StoreFactory,
) -> None:
    store = _sync(store_factory())
    ids = _fill(PurposeAgentSaver(store), "bounded", 30)
    counting = _CountingStore(store)
    saver = PurposeAgentSaver(counting)  # type: ignore[arg-type]

    _put(saver, "bounded", ids[-1])
    saver.put_writes(_config("bounded", ids[-1]), [("w", "late")], "other")
    assert counting.take() == [("append", {"group": group_for("bounded")})] * 2

    found = saver.get_tuple(_config("bounded", ids[3]))
    assert found is not None
    assert found.pending_writes == [("task", "w", 3)]
    assert [name for name, _ in counting.take()] == ["event_by_key", "list_events"]

    saver.get_tuple(_config("bounded"))
    latest = counting.take()
    assert latest[0] == (
        "list_events",
        {"limit": 1, "newest_first": True},
    )
    assert [name for name, _ in latest] == ["list_events", "list_events"]

    listed = list(saver.list(_config("bounded", ns=""), limit=10))
    assert [t.checkpoint["id"] for t in listed[1:]] == ids[:-10:-1]
    events_read = counting.events_read
    calls = counting.take()
    assert calls[0] == (
        "list_events",
        {"limit": 10, "newest_first": True},
    )
    if hasattr(store, "events_of_runs"):  # the page's writes in one call
        assert [name for name, _ in calls[1:]] == ["events_of_runs"]
    else:
        assert len(calls) == 11  # one page of ten, then each checkpoint's writes
    assert events_read == 10 + 10  # ten checkpoints and their writes, nothing else


def test_a_thread_is_one_group_of_runs(saver: PurposeAgentSaver) -> None:
    first = _put(saver, "grouped")
    saver.put_writes(_config("grouped", first), [("w", 1)], "task")
    child = _put(saver, "grouped", ns="child:1")
    _put(saver, "elsewhere")

    store: Any = saver.store
    runs = {
        run_id_for("grouped"),
        writes_run_for("grouped", "", first),
        run_id_for("grouped", "child:1"),
    }
    assert set(store.list_runs(group=group_for("grouped"))) == runs
    assert {store.run_group(run_id) for run_id in runs} == {"lg:grouped"}
    assert set(store.list_groups()) == {"lg:grouped", "lg:elsewhere"}
    assert saver.get_tuple(_config("grouped", child, "child:1")) is not None

    saver.delete_thread("grouped")
    assert store.list_runs(group=group_for("grouped")) == []
    assert store.list_runs() == [run_id_for("elsewhere")]


def test_thread_deleted_by_another_saver_is_gone_for_this_one_too(
    store_factory: StoreFactory,
) -> None:
    mine, theirs = PurposeAgentSaver(store_factory()), PurposeAgentSaver(store_factory())
    _put(mine, "shared", value=1)
    assert mine.get_tuple(_config("shared")) is not None

    theirs.delete_thread("shared")
    assert mine.get_tuple(_config("shared")) is None
    assert list(mine.list(_config("shared"))) == []

    replacement = _put(theirs, "shared", value=2)
    found = mine.get_tuple(_config("shared"))
    assert found is not None
    assert found.checkpoint["id"] == replacement
    assert found.checkpoint["channel_values"] == {"value": 2}


def test_prune_reclaims_every_older_checkpoint_and_its_writes(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    ids = _fill(saver, "p", 5)
    child = _fill(saver, "p", 3, ns="child:1")
    saver.put_writes(_config("p", ids[-1]), [("w", "more")], "other")
    saver.prune(["p"])

    store: Any = saver.store
    assert [e.data["id"] for e in store.list_events(run_id_for("p"))] == [ids[-1]]
    assert [e.data["id"] for e in store.list_events(run_id_for("p", "child:1"))] == [child[-1]]
    assert set(store.list_runs(group=group_for("p"))) == {
        run_id_for("p"),
        run_id_for("p", "child:1"),
        writes_run_for("p", "", ids[-1]),
        writes_run_for("p", "child:1", child[-1]),
    }
    fresh = PurposeAgentSaver(store_factory())
    listed = [t.checkpoint["id"] for t in fresh.list({"configurable": {"thread_id": "p"}})]
    assert listed == sorted([ids[-1], child[-1]], reverse=True)
    assert fresh.get_tuple(_config("p", ids[0])) is None
    latest = fresh.get_tuple(_config("p"))
    assert latest is not None
    assert latest.pending_writes == [("other", "w", "more"), ("task", "w", 4)]

    # The thread goes on after pruning, and a second prune compacts again.
    newer = _put(saver, "p", ids[-1], value="after")
    saver.prune(["p"])
    assert [e.data["id"] for e in store.list_events(run_id_for("p"))] == [newer]
    assert store.last_seq(run_id_for("p")) == 6


def test_a_pruned_checkpoint_reads_with_no_parent_as_in_postgres_saver(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    """Its parent is gone: ``parent_config`` named a checkpoint no read finds."""
    ids = _fill(saver, "orphan", 3)
    lone = _put(saver, "lone")
    before = saver.get_tuple(_config("orphan"))
    assert before is not None
    assert before.parent_config == _config("orphan", ids[1])

    saver.prune(["orphan", "lone"])
    saver.prune(["orphan"])  # again: the marker is stored once

    fresh = PurposeAgentSaver(store_factory())
    for found in (
        fresh.get_tuple(_config("orphan")),
        fresh.get_tuple(_config("orphan", ids[-1])),
        *fresh.list(_config("orphan")),
    ):
        assert found is not None
        assert found.checkpoint["id"] == ids[-1]
        assert found.parent_config is None
        assert found.pending_writes == [("task", "w", 2)]
    store: Any = _sync(store_factory())
    kept = store.list_events(writes_run_for("orphan", "", ids[-1]))
    assert [e.data["langgraph"] for e in kept] == ["writes", "unparented"]
    assert writes_run_for("lone", "", lone) not in store.list_runs(group=group_for("lone"))
    # The thread goes on: a child of the pruned checkpoint names it as its parent.
    newer = _put(saver, "orphan", ids[-1])
    latest = fresh.get_tuple(_config("orphan"))
    assert latest is not None
    assert latest.checkpoint["id"] == newer
    assert latest.parent_config == _config("orphan", ids[-1])


def test_pruning_is_durable_whatever_else_the_thread_holds(store_factory: StoreFactory) -> None:
    saver = PurposeAgentSaver(store_factory())
    first = _put(saver, "durable")
    _put(saver, "durable", _put(saver, "durable", first))  # no writes: nothing else to delete
    saver.prune(["durable"])

    # Another handle (another connection) sees the space reclaimed.
    store: Any = _sync(store_factory())
    assert len(store.list_events(run_id_for("durable"))) == 1


@pytest.mark.sqlite
def test_pruning_a_new_sqlite_file_is_durable(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with PurposeAgentSaver.from_url(url) as saver:
        first = _put(saver, "durable")
        _put(saver, "durable", _put(saver, "durable", first))
        saver.prune(["durable"])
    with PurposeAgentSaver.from_url(url) as fresh:
        assert len(fresh.store.list_events(run_id_for("durable"))) == 1


def test_delete_for_runs_hides_checkpoints_even_from_late_writes(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    kept = _put(saver, "d", run="run-1")
    doomed = _put(saver, "d", kept, run="run-2")
    saver.put_writes(_config("d", doomed), [("w", 1)], "task")
    saver.delete_for_runs(["run-2"])
    saver.put_writes(_config("d", doomed), [("w", "late")], "late-task")

    fresh = PurposeAgentSaver(store_factory())
    assert fresh.get_tuple(_config("d", doomed)) is None
    latest = fresh.get_tuple(_config("d"))
    assert latest is not None
    assert latest.checkpoint["id"] == kept
    assert [t.checkpoint["id"] for t in fresh.list(_config("d"))] == [kept]
    # Pruning keeps the latest live checkpoint, not the deleted one saved after it.
    saver.prune(["d"])
    assert [t.checkpoint["id"] for t in fresh.list(_config("d"))] == [kept]
    assert fresh.get_tuple(_config("d", doomed)) is None


def test_delete_for_runs_reads_only_the_checkpoints_of_the_runs_it_rolls_back(
    store_factory: StoreFactory,
) -> None:
    """Rolling one run back read every checkpoint of every thread in the store.

    LangGraph's server rolls a run back with ``delete_for_runs``; on a store of many threads
    that read was the whole store each time. A checkpoint's lane names its run, so the
    database finds the run's checkpoints and the other threads' stay where they are.
    """
    counting = _CountingStore(_sync(store_factory()))
    saver = PurposeAgentSaver(counting)  # type: ignore[arg-type]
    parent = None
    for _ in range(60):
        parent = _put(saver, "busy", parent, run="run-1")
    kept = _put(saver, "d", run="run-1")
    for _ in range(60):
        kept = _put(saver, "d", kept, run="run-1")
    doomed = _put(saver, "d", kept, run="run-2")
    saver.put_writes(_config("d", doomed), [("w", 1)], "task")
    counting.take()

    saver.delete_for_runs(["run-2"])

    assert counting.events_read <= 6  # run-2's checkpoint, each namespace's newest, writes
    assert saver.get_tuple(_config("d", doomed)) is None
    latest = saver.get_tuple(_config("d"))
    assert latest is not None
    assert latest.checkpoint["id"] == kept
    assert len(list(saver.list(_config("busy")))) == 60


def test_delete_for_runs_still_finds_checkpoints_stored_without_a_lane(
    saver: PurposeAgentSaver,
) -> None:
    """Checkpoints stored before they had their run's lane are found by reading them."""
    kept = _put(saver, "old", run="run-1")
    checkpoint = _checkpoint()
    event = payloads.checkpoint(
        checkpoint["id"],
        kept,
        payloads.dump(saver.serde, checkpoint),
        payloads.dump(saver.serde, {"step": 1, "run_id": "run-2"}),
        run_id="run-2",
    )
    saver.store.append(
        run_id_for("old"), [event.model_copy(update={"lane_id": payloads.LANE})], group="lg:old"
    )
    assert saver.get_tuple(_config("old")).checkpoint["id"] == checkpoint["id"]

    saver.delete_for_runs(["run-2"])

    assert saver.get_tuple(_config("old")).checkpoint["id"] == kept


def test_copy_thread_twice_copies_once(saver: PurposeAgentSaver) -> None:
    ids = _fill(saver, "src", 3)
    _fill(saver, "src", 2, ns="child:1")
    saver.copy_thread("src", "dst")
    saver.copy_thread("src", "dst")

    def shape(thread_id: str) -> list[Any]:
        return [
            (t.config["configurable"]["checkpoint_ns"], t.checkpoint["id"], t.pending_writes)
            for t in saver.list({"configurable": {"thread_id": thread_id}})
        ]

    assert shape("dst") == shape("src")
    store: Any = saver.store
    assert store.last_seq(run_id_for("dst")) == 3
    assert store.last_seq(writes_run_for("dst", "", ids[0])) == 1
    assert len(store.list_runs(group=group_for("dst"))) == 2 + 5


def test_copy_thread_twice_copies_interrupts_and_rewritten_writes_once(
    saver: PurposeAgentSaver,
) -> None:
    """Writes stored without a key (an interrupt, a task's second writes) come across once."""
    cid = _put(saver, "src")
    config = _config("src", cid)
    saver.put_writes(config, [(INTERRUPT, "approve?")], "asking")
    saver.put_writes(config, [("ch", "first")], "task")
    saver.put_writes(config, [("ch", "second"), ("more", 2)], "task")  # kept without a key
    saver.copy_thread("src", "dst")
    store = _sync(saver.store)
    copied = store.list_events(writes_run_for("dst", "", cid))

    saver.copy_thread("src", "dst")

    assert store.list_events(writes_run_for("dst", "", cid)) == copied
    assert len(copied) == 3
    found = saver.get_tuple(_config("dst", cid))
    assert found is not None
    assert found.pending_writes == saver.get_tuple(config).pending_writes


def test_two_copies_of_a_thread_at_once_copy_interrupts_and_rewritten_writes_once(
    store_factory: StoreFactory,
) -> None:
    """Two ``copy_thread`` calls that both read the empty target first end as one copy."""
    saver = PurposeAgentSaver(store_factory())
    cid = _put(saver, "src")
    config = _config("src", cid)
    saver.put_writes(config, [(INTERRUPT, "approve?")], "asking")
    saver.put_writes(config, [("ch", "first")], "task")
    saver.put_writes(config, [("ch", "second"), ("more", 2)], "task")  # kept without a key
    child = _fill(saver, "src", 2, ns="child:1")
    saver.put_writes(_config("src", child[-1], "child:1"), [(ERROR, "boom")], "failing")
    barrier = threading.Barrier(2, timeout=60)
    copiers = [
        PurposeAgentSaver(AppendsTogether(_sync(store_factory()), barrier)) for _ in range(2)
    ]
    with ThreadPoolExecutor(2) as pool:
        for copying in [pool.submit(c.copy_thread, "src", "dst") for c in copiers]:
            copying.result()
    store = _sync(saver.store)

    for run_id in store.list_runs(group=group_for("src")):
        copy_id = run_id.replace("src", "dst", 1)
        assert [e.data for e in store.list_events(copy_id)] == [
            payloads.copied(e, None).data for e in store.list_events(run_id)
        ], run_id
    for ns, checkpoint_id in [("", cid), ("child:1", child[-1])]:
        found, original = (saver.get_tuple(_config(t, checkpoint_id, ns)) for t in ("dst", "src"))
        assert found is not None
        assert original is not None
        assert found.pending_writes == original.pending_writes


def test_thread_ids_with_separators_map_to_valid_runs_and_back(saver: PurposeAgentSaver) -> None:
    thread_id = "user/42:chat\\1 ü"
    _put(saver, thread_id)
    checkpoint = _checkpoint()
    saver.put(_config(thread_id, ns="child:abc|x"), checkpoint, {}, {})
    saver.put_writes(_config(thread_id, checkpoint["id"], "child:abc|x"), [("w", 1)], "t")

    listed = list(saver.list({"configurable": {"thread_id": thread_id}}))
    assert sorted(t.config["configurable"]["checkpoint_ns"] for t in listed) == ["", "child:abc|x"]
    assert {t.config["configurable"]["thread_id"] for t in listed} == {thread_id}
    assert [t.pending_writes for t in listed if t.checkpoint["id"] == checkpoint["id"]] == [
        [("t", "w", 1)]
    ]
    assert run_id_for(thread_id) == "lg:user%2F42%3Achat%5C1%20%C3%BC"
    assert run_id_for(thread_id, "child:abc|x") in saver.store.list_runs()


def test_thread_ids_equal_as_numbers_name_different_threads(saver: PurposeAgentSaver) -> None:
    # 1, 1.0 and True are equal dictionary keys, but LangGraph names threads by their text.
    threads: list[Any] = [True, 1.0, 1]
    stored = [_put(saver, thread) for thread in threads]
    assert len({run_id_for(thread) for thread in threads}) == 3
    for thread, checkpoint_id in zip(threads, stored, strict=True):
        found = saver.get_tuple(_config(thread))
        assert found is not None
        assert found.checkpoint["id"] == checkpoint_id
        assert found.config["configurable"]["thread_id"] is thread


def test_listing_merges_namespaces_newest_first_across_pages(saver: PurposeAgentSaver) -> None:
    count = PAGE + 6  # the root namespace alone needs a second page
    ids: list[str] = []
    namespaces: list[str] = []
    for n in range(count):
        ns = "child:1" if n % 3 == 0 else ""
        ids.append(_put(saver, "merged", ns=ns, n=n))
        namespaces.append(ns)
        saver.put_writes(_config("merged", ids[-1], ns), [("w", n)], "task")
    thread: Any = {"configurable": {"thread_id": "merged"}}

    async def listed_async(**options: Any) -> list[Any]:
        return [found async for found in saver.alist(thread, **options)]

    for listed in (list(saver.list(thread)), asyncio.run(listed_async())):
        assert [t.checkpoint["id"] for t in listed] == ids[::-1]
        assert [t.config["configurable"]["checkpoint_ns"] for t in listed] == namespaces[::-1]
        assert [t.pending_writes for t in listed] == [[("task", "w", n)] for n in range(count)][
            ::-1
        ]
    below = _config("merged", ids[-3], namespaces[-3])
    for limited in (
        list(saver.list(thread, before=below, limit=PAGE + 1)),
        asyncio.run(listed_async(before=below, limit=PAGE + 1)),
    ):
        assert [t.checkpoint["id"] for t in limited] == ids[-4::-1][: PAGE + 1]


LONG_IDS = [
    pytest.param("x" * 300, "", id="300-ascii"),
    pytest.param("x" * 230, "", id="230-ascii"),  # fits alone, not with a checkpoint id
    pytest.param("会話" * 20, "", id="40-japanese"),
    pytest.param("🙂" * 18, "", id="18-emoji"),
    pytest.param("t-1", "agent:" + "|agent:".join(str(uuid.uuid4()) for _ in range(5)), id="ns"),
    # Bytes decoded with "surrogateescape" (a header, a file name): no UTF-8 form to encode.
    pytest.param(b"user-\xff".decode("utf-8", "surrogateescape"), "", id="lone-surrogate"),
    pytest.param("t-1", "agent:\udcff", id="ns-lone-surrogate"),
]


@pytest.mark.parametrize(("thread", "ns"), LONG_IDS)
def test_ids_too_long_to_spell_out_in_a_run_id_work_in_every_call(
    saver: PurposeAgentSaver, store_factory: StoreFactory, thread: str, ns: str
) -> None:
    """A run id has at most 255 characters; LangGraph's ids have no limit (they were refused)."""
    ids = _fill(saver, thread, 3, ns)
    early = str(uuid6())  # writes sent before their checkpoint
    saver.put_writes(_config(thread, early, ns), [("w", "early")], "task")
    ids.append(_put(saver, thread, ids[-1], ns, run="lg-run-1"))
    checkpoint = _checkpoint()
    checkpoint["id"] = early
    saver.put(_config(thread, ids[-1], ns), checkpoint, {"source": "loop", "step": 4}, {})
    ids.append(early)
    store = _sync(saver.store)
    assert all(len(run_id) <= 255 for run_id in store.list_runs())

    other = PurposeAgentSaver(store_factory())
    latest = other.get_tuple(_config(thread, ns=ns))
    assert latest is not None
    assert latest.checkpoint["id"] == early
    assert latest.pending_writes == [("task", "w", "early")]
    assert latest.config["configurable"] == _config(thread, early, ns)["configurable"]
    listed = list(other.list(None))
    assert [t.checkpoint["id"] for t in listed] == ids[::-1]
    assert {tuple(t.config["configurable"].values())[:2] for t in listed} == {(thread, ns)}
    assert [t.pending_writes for t in listed][-3:] == [[("task", "w", n)] for n in (2, 1, 0)]
    assert [t.pending_writes for t in other.list(_config(thread, ns=ns), limit=2)][1] == []

    other.delete_for_runs(["lg-run-1"])
    assert [t.checkpoint["id"] for t in other.list(_config(thread, ns=ns))] == [early, *ids[2::-1]]
    other.copy_thread(thread, "copy")
    copied = other.get_tuple(_config("copy", ns=ns))
    assert copied is not None
    assert (copied.checkpoint["id"], copied.pending_writes) == (early, [("task", "w", "early")])
    other.prune([thread], strategy="keep_latest")
    assert [t.checkpoint["id"] for t in other.list(_config(thread, ns=ns))] == [early]
    other.delete_thread(thread)
    assert list(other.list(_config(thread, ns=ns))) == []
    assert other.get_tuple(_config("copy", ns=ns)) is not None


def test_ids_that_fit_keep_the_run_ids_they_always_had() -> None:
    """Stores written before long ids were hashed are read by the same names."""
    assert run_id_for("t-1", "child:abc|x") == "lg:t-1:child%3Aabc%7Cx"
    assert writes_run_for("x" * 200, "", "1f0") == f"lgw:{'x' * 200}::1f0"
    assert group_for("x" * 252) == f"lg:{'x' * 252}"
    hashed = group_for("x" * 253)
    assert hashed.startswith("lg:*")
    assert len(hashed) == 36
    assert run_id_for("x" * 253) == hashed
    assert writes_run_for("x" * 230, "", str(uuid6())).startswith("lgw:*")
    # Checkpoint ids encoded as quote() encodes them, whether they need it or not.
    assert writes_run_for("t", "", "Az09_.~-") == "lgw:t::Az09_.~-"
    assert writes_run_for("t", "", "a b/c:é") == "lgw:t::a%20b%2Fc%3A%C3%A9"
    assert writes_run_for("t", "", "x\n") == "lgw:t::x%0A"


class _OldStore:
    """A store with the Checkpointer protocol only (what the JSONL store had before)."""

    def __init__(self) -> None:
        self._store = InMemoryCheckpointer()
        self.save_events = self._store.save_events
        self.list_events = self._store.list_events
        self.list_runs = lambda limit=None, *, offset=0: self._store.list_runs(limit, offset=offset)


def test_a_store_without_appends_keys_and_groups_is_refused_when_the_saver_is_built() -> None:
    with pytest.raises(InvalidInput, match=r"lacks append\(\), event_by_key\(\)"):
        PurposeAgentSaver(_OldStore())  # type: ignore[arg-type]


_SHOWN = {"limit", "before", "newest_first", "kinds", "group"}


class _CountingStore:
    """The real store, recording the calls the saver makes and the events they return."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.events_read = 0

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        taken, self.calls, self.events_read = self.calls, [], 0
        return taken

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        @functools.wraps(method)  # the saver checks the store's signatures
        def call(*args: Any, **kwargs: Any) -> Any:
            arguments = inspect.signature(method).bind(*args, **kwargs).arguments
            self.calls.append((name, {k: v for k, v in arguments.items() if k in _SHOWN}))
            result = method(*args, **kwargs)
            if name == "list_events":
                self.events_read += len(result)
            elif name == "events_of_runs":
                self.events_read += sum(len(events) for events in result.values())
            return result

        return call


@pytest.mark.sqlite
def test_pruning_covered_events_from_the_command_line_keeps_every_checkpoint(
    tmp_path: Any,
) -> None:
    url = f"sqlite:///{tmp_path / 'pruned.db'}"
    with PurposeAgentSaver.from_url(url) as saver:
        ids = _fill(saver, "kept", 6)
    done = subprocess.run(
        [sys.executable, "-m", "purpose_agent", "prune", "--covered", "--json", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout)["covered_events"] == 0
    with PurposeAgentSaver.from_url(url) as fresh:
        listed = list(fresh.list(_config("kept")))
    assert [t.checkpoint["id"] for t in listed] == ids[::-1]
    assert [t.pending_writes for t in listed] == [[("task", "w", n)] for n in range(5, -1, -1)]


@pytest.mark.sqlite
def test_the_async_store_answers_the_new_calls_as_the_sync_store(tmp_path: Any) -> None:
    async def scenario() -> list[Any]:
        async with await AsyncSQLCheckpointer.open(f"sqlite:///{tmp_path / 'a.db'}") as store:
            event = NewEvent(kind=EventKind.CUSTOM, data={"n": 1}, key="k")
            first = await store.append("a1", [event], group="g")
            again = await store.append("a1", (e for e in [event]), group="g")
            await store.append("a2", [NewEvent(kind=EventKind.CUSTOM)], group="g")
            await store.save_snapshot("a1", RunState(run_id="a1", seq=1))
            return [
                [e.seq for e in first + again],
                await store.last_seq("a1"),
                (await store.event_by_key("a1", "k")) == first[0],
                await store.list_runs(group="g", prefix="a1"),
                await store.list_groups(),
                await store.run_group("a2"),
                await store.compact("a1"),
                await store.list_events("a1", newest_first=True, limit=5),
                await store.delete_runs((r for r in ["a2"]), group="g"),
                await store.list_runs(),
            ]

    found = asyncio.run(scenario())
    assert found[:7] == [[1, 1], 1, True, ["a1"], ["g"], "g", 1]
    assert found[8:] == [["a2"], ["a1"]]


class _Lookups:
    """Counts the saver's lookups of events by key (reads of a parent before a ``put``)."""

    def __init__(self, saver: PurposeAgentSaver) -> None:
        self.count = 0
        store = saver.store
        found = store.event_by_key  # type: ignore[attr-defined]

        def counting(*args: Any) -> Any:
            self.count += 1
            return found(*args)

        store.event_by_key = counting  # type: ignore[attr-defined]


def _child(parent: Any, **values: Any) -> Any:
    """A checkpoint after ``parent``: its values, ``values`` changed, at the next version."""
    child = _checkpoint(parent["channel_values"] | values)
    child["channel_versions"] = parent["channel_versions"] | dict.fromkeys(values, 2)
    return child


def test_a_channel_the_checkpoint_did_not_change_is_stored_as_its_parent_stored_it(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    """LangGraph hands over live values it may change in place before the save runs.

    A channel not in ``new_versions`` is stored as its parent stored it: read from the
    saver's memory of the last checkpoint it stored, or, for a new saver (another process),
    looked up once by the parent's key.
    """
    seen = {"b"}
    first = _checkpoint({"barrier": seen, "count": 1})
    saver.put(_config("live"), first, {}, {"barrier": 1, "count": 1})
    seen.add("c")  # the next step changes the barrier's set in place
    second = _child(first, count=2)
    lookups = _Lookups(saver)
    saver.put(_config("live", first["id"]), second, {}, {"count": 2})
    assert lookups.count == 0  # the parent was the last checkpoint this saver stored

    seen.add("d")
    third = _child(second, count=3)
    other = PurposeAgentSaver(store_factory())
    other_lookups = _Lookups(other)
    other.put(_config("live", second["id"]), third, {}, {"count": 3})
    assert other_lookups.count == 1

    fresh = PurposeAgentSaver(store_factory())
    for checkpoint, count in ((first, 1), (second, 2), (third, 3)):
        found = fresh.get_tuple(_config("live", checkpoint["id"]))
        assert found is not None
        assert found.checkpoint["channel_values"] == {"barrier": {"b"}, "count": count}
        assert found.checkpoint["channel_versions"] == checkpoint["channel_versions"]
    # A channel given a version its parent does not have, or absent from the parent, is
    # stored as given (LangGraph's savers would find no value stored at that version).
    fourth = _child(third, extra="new")
    fourth["channel_versions"]["barrier"] = 5
    fresh.put(_config("live", third["id"]), fourth, {}, {})
    found = fresh.get_tuple(_config("live"))
    assert found is not None
    assert found.checkpoint["channel_values"] == {"barrier": seen, "count": 3, "extra": "new"}


def test_checkpoints_stored_whole_before_channels_were_stored_apart_read_and_continue(
    saver: PurposeAgentSaver,
) -> None:
    """A store written by an earlier release holds each checkpoint as one serialized body."""
    store: Any = _sync(saver.store)
    older = _checkpoint({"barrier": {"b"}, "count": 1})
    event = payloads.checkpoint(
        older["id"],
        None,
        payloads.dump(saver.serde, older),
        payloads.dump(saver.serde, {"step": 0}),
        step=0,
    )
    store.append(run_id_for("old"), [event], group=group_for("old"))
    saver.put_writes(_config("old", older["id"]), [("count", 2)], "task")
    assert "values" not in store.list_events(run_id_for("old"))[0].data

    found = saver.get_tuple(_config("old"))
    assert found is not None
    assert found.checkpoint == older
    assert found.pending_writes == [("task", "count", 2)]
    live = _child(older, count=2)
    live["channel_values"]["barrier"] = {"b", "changed in place"}
    PurposeAgentSaver(store).put(_config("old", older["id"]), live, {}, {"count": 2})
    latest = saver.get_tuple(_config("old"))
    assert latest is not None
    assert latest.checkpoint["channel_values"] == {"barrier": {"b"}, "count": 2}
    history = saver.get_delta_channel_history(config=_config("old"), channels=["barrier"])
    assert history == {"barrier": {"seed": {"b"}, "writes": []}}


def test_the_memory_of_stored_checkpoints_keeps_to_its_budget() -> None:
    """Bounded in bytes (an entry's overhead counted too) and in namespaces."""
    entry = {"ch": (1, ["msgpack", "x" * 450])}  # 400 + 150 + 450 = 1,000 each
    memory = channels.LastStored(budget=10_000)
    for n in range(20):
        memory.put(("t", str(n)), f"c{n}", entry)
    kept = [n for n in range(20) if memory.get(("t", str(n)), f"c{n}") is not None]
    assert kept == list(range(10, 20))
    assert memory.get(("t", "19"), "c18") is None  # not the namespace's last checkpoint
    memory.put(("t", "19"), "c20", {"ch": (1, ["msgpack", "x" * 3000])})  # over a quarter
    assert memory.get(("t", "19"), "c20") is None
    assert memory.get(("t", "19"), "c19") is None
    # Checkpoints with no values still cost their entry, and the count is capped too.
    empty = channels.LastStored(budget=4_000)
    for n in range(50):
        empty.put(("t", str(n)), f"c{n}", {})
    assert [n for n in range(50) if empty.get(("t", str(n)), f"c{n}")] == []
    assert [n for n in range(50) if empty.get(("t", str(n)), f"c{n}") is not None] == list(
        range(40, 50)
    )
    few = channels.LastStored(entries=3)
    for n in range(6):
        few.put(("t", str(n)), f"c{n}", entry)
    assert [n for n in range(6) if few.get(("t", str(n)), f"c{n}") is not None] == [3, 4, 5]


class _Reversed(JsonPlusSerializer):
    """A serializer that changes every byte it is given, as an encrypting one does."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        kind, raw = super().dumps_typed(obj)
        return kind, raw[::-1]

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return super().loads_typed((data[0], data[1][::-1]))


def test_another_serializer_is_given_every_value_so_nothing_it_encrypts_lies_in_clear(
    store_factory: StoreFactory,
) -> None:
    """Scalars skip LangGraph's plain serializer only; an ``EncryptedSerializer`` gets them."""
    saver = PurposeAgentSaver(store_factory(), serde=_Reversed())
    checkpoint = _checkpoint({"ssn": "123-45-6789", "n": 7})
    saver.put(_config("secret"), checkpoint, {"step": 0}, {"ssn": 1, "n": 1})
    saver.put_writes(_config("secret", checkpoint["id"]), [("ssn", "987-65-4321")], "task")

    store: Any = _sync(saver.store)
    thread = store.list_runs(group=group_for("secret"))
    stored = json.dumps([e.data for run in thread for e in store.list_events(run)])
    assert "123-45-6789" not in stored
    assert "987-65-4321" not in stored
    found = PurposeAgentSaver(store_factory(), serde=_Reversed()).get_tuple(_config("secret"))
    assert found is not None
    assert found.checkpoint["channel_values"] == {"ssn": "123-45-6789", "n": 7}
    assert found.pending_writes == [("task", "ssn", "987-65-4321")]


def test_a_prune_keeps_a_subgraph_call_whose_root_checkpoint_commits_while_it_reads(
    saver: PurposeAgentSaver,
) -> None:
    """The root's background save lands between the prune's reads of the root and the call.

    The call started from that new root checkpoint: it is running, or waits on an interrupt.
    """
    first = _checkpoint()
    saver.put(_config("race"), first, {"step": 0}, {})
    newer = _checkpoint()  # the root checkpoint still being saved
    call = _checkpoint()
    saver.put(_config("race", ns="sub:task-1"), call, {"parents": {"": newer["id"]}}, {})
    saver.put_writes(_config("race", call["id"], ns="sub:task-1"), [("__interrupt__", "?")], "t")
    store = saver.store
    lookup = store.event_by_key  # type: ignore[attr-defined]
    saved = []

    def committing_meanwhile(run_id: str, key: str) -> Any:
        if key == newer["id"] and not saved:
            saved.append(saver.put(_config("race", first["id"]), newer, {"step": 1}, {}))
        return lookup(run_id, key)

    store.event_by_key = committing_meanwhile  # type: ignore[attr-defined]
    saver.prune(["race"])
    store.event_by_key = lookup  # type: ignore[attr-defined]

    latest = saver.get_tuple(_config("race"))
    assert latest is not None
    assert latest.checkpoint["id"] == newer["id"]
    waiting = saver.get_tuple(_config("race", ns="sub:task-1"))
    assert waiting is not None
    assert waiting.pending_writes == [("t", "__interrupt__", "?")]


def test_a_prune_keeps_a_checkpoint_saved_meanwhile_where_none_was_live(
    saver: PurposeAgentSaver,
) -> None:
    """A namespace whose checkpoints a rollback deleted goes on; the prune must not take it."""
    kept = _fill(saver, "rolled", 2)
    saver.put(_config("rolled", ns="child:1"), _checkpoint(), {"run_id": "rolled-back"}, {})
    saver.delete_for_runs(["rolled-back"])  # nothing live left in child:1
    again = _checkpoint({"v": "again"})
    store = saver.store
    compact = store.compact  # type: ignore[attr-defined]

    saved = []

    def saving_meanwhile(run_id: str) -> int:
        if not saved:
            saved.append(saver.put(_config("rolled", ns="child:1"), again, {"step": 0}, {"v": 1}))
        return int(compact(run_id))

    store.compact = saving_meanwhile  # type: ignore[attr-defined]
    saver.prune(["rolled"])
    store.compact = compact  # type: ignore[attr-defined]

    found = saver.get_tuple(_config("rolled", ns="child:1"))
    assert found is not None
    assert found.checkpoint["channel_values"] == {"v": "again"}
    latest = saver.get_tuple(_config("rolled"))
    assert latest is not None
    assert latest.checkpoint["id"] == kept[-1]


# Defined only where LangGraph's base saver has the walk to compare with (not in the oldest
# supported release): a skip of a required backend fails the run.
if hasattr(BaseCheckpointSaver, "get_delta_channel_history"):

    def test_the_history_walk_stops_where_get_tuple_finds_no_parent(
        saver: PurposeAgentSaver,
    ) -> None:
        """A copy of a pruned thread over an earlier copy: the kept checkpoint reads unparented."""
        ids = _fill(saver, "src", 3)
        saver.copy_thread("src", "dst")
        saver.prune(["src"])
        saver.copy_thread("src", "dst")  # the marker that ids[-1] has no parent comes along
        latest = saver.get_tuple(_config("dst", ids[-1]))
        assert latest is not None
        assert latest.parent_config is None
        assert saver.get_tuple(_config("dst", ids[0])) is not None  # the parent is there
        _put(saver, "dst", ids[-1])

        found = saver.get_delta_channel_history(config=_config("dst"), channels=["w"])
        assert found == BaseCheckpointSaver.get_delta_channel_history(
            saver, config=_config("dst"), channels=["w"]
        )
        assert found == {"w": {"writes": [("task", "w", 2)]}}
        target = saver.get_delta_channel_history(config=_config("dst", ids[-1]), channels=["w"])
        assert target == {"w": {"writes": []}}


def test_an_empty_checkpoint_id_names_no_checkpoint_as_in_langgraphs_savers(
    saver: PurposeAgentSaver,
) -> None:
    """``PostgresSaver`` and ``SqliteSaver`` read ``checkpoint_id: ""`` as "the latest"."""
    ids = _fill(saver, "blank", 2)
    blank = _config("blank")
    blank["configurable"]["checkpoint_id"] = ""

    found = saver.get_tuple(blank)
    assert found is not None
    assert found.checkpoint["id"] == ids[-1]
    assert [t.checkpoint["id"] for t in saver.list(blank)] == ids[::-1]
    assert [t.checkpoint["id"] for t in saver.list(_config("blank"), before=blank)] == ids[::-1]
    history = saver.get_delta_channel_history(config=blank, channels=["w"])
    assert history == saver.get_delta_channel_history(config=_config("blank"), channels=["w"])
    assert history["w"]["writes"] == [("task", "w", 0)]


def test_a_thread_moved_from_langgraphs_own_saver_goes_on_with_its_text_versions(
    saver: PurposeAgentSaver,
) -> None:
    """LangGraph's savers write versions as text; the base class refused the next one."""
    sqlite = pytest.importorskip("langgraph.checkpoint.sqlite")
    from langgraph.graph import END, START, StateGraph

    class Count(TypedDict):
        n: int

    builder = StateGraph(Count)
    builder.add_node("inc", lambda state: {"n": state["n"] + 1})
    builder.add_edge(START, "inc")
    builder.add_edge("inc", END)
    config = _config("moved")
    with sqlite.SqliteSaver.from_conn_string(":memory:") as theirs:
        builder.compile(checkpointer=theirs).invoke({"n": 1}, config)
        for tup in reversed(list(theirs.list(config))):  # oldest first, as they were saved
            versions = tup.checkpoint["channel_versions"]
            saver.put(tup.parent_config or config, tup.checkpoint, tup.metadata, versions)
            for task, channel, value in tup.pending_writes or []:
                saver.put_writes(tup.config, [(channel, value)], task)
        assert all(type(v) is str for v in versions.values())

    graph = builder.compile(checkpointer=saver)
    assert graph.get_state(config).values == {"n": 2}
    assert graph.invoke({"n": 5}, config) == {"n": 6}
    latest = saver.get_tuple(config)
    assert latest is not None
    after = latest.checkpoint["channel_versions"]
    assert all(type(v) is str and v > versions.get(k, "") for k, v in after.items() if k == "n")
    assert saver.get_next_version(None, None) == 1
    assert saver.get_next_version(1, None) == 2


def test_keep_latest_keeps_the_writes_of_a_checkpoint_not_saved_yet(
    saver: PurposeAgentSaver,
) -> None:
    """LangGraph saves in the background: a task's writes can commit before their checkpoint.

    ``PostgresSaver`` deletes only the writes of the checkpoints it deletes; so does this.
    """
    ids = _fill(saver, "early", 3)
    pending = _checkpoint({"v": "next"})
    saver.put_writes(_config("early", pending["id"]), [("w", "early")], "task")
    child = _checkpoint()
    saver.put_writes(_config("early", child["id"], ns="child:1"), [("w", "sub")], "task")
    saver.put_writes(_config("early", ids[0]), [("w", "late")], "again")
    # Older than the kept checkpoint and never saved: its run died before saving it.
    orphan = ids[0] + "-never-saved"
    saver.put_writes(_config("early", orphan), [("w", "lost")], "task")

    saver.prune(["early"])

    store: Any = _sync(saver.store)
    left = set(store.list_runs(group=group_for("early")))
    assert writes_run_for("early", "", pending["id"]) in left
    assert writes_run_for("early", "child:1", child["id"]) in left
    assert writes_run_for("early", "", ids[0]) not in left
    assert writes_run_for("early", "", ids[1]) not in left
    assert writes_run_for("early", "", orphan) not in left
    saver.put(_config("early", ids[-1]), pending, {}, {"v": 2})
    saver.put(_config("early", ns="child:1"), child, {}, {})
    found = saver.get_tuple(_config("early"))
    assert found is not None
    assert found.pending_writes == [("task", "w", "early")]
    sub = saver.get_tuple(_config("early", ns="child:1"))
    assert sub is not None
    assert sub.pending_writes == [("task", "w", "sub")]


def _without(data: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != name}


# How a record can be damaged (a bad migration, a hand edit, another program's write): the
# saver's stored form, changed. Each names the record it damages.
DAMAGES = {
    "checkpoint without its body": ("checkpoint", lambda data: _without(data, "checkpoint")),
    "checkpoint without an id": ("checkpoint", lambda data: _without(data, "id")),
    "checkpoint body not [type, base64]": ("checkpoint", lambda data: data | {"checkpoint": 7}),
    "checkpoint body of an unknown type": (
        "checkpoint",
        lambda data: data | {"checkpoint": ["no-such-type", data["checkpoint"][1]]},
    ),
    "checkpoint body that loads as a number": (
        "checkpoint",
        lambda data: data | {"checkpoint": ["msgpack", "AAAA"]},
    ),
    "channel values that are not a mapping": (
        "checkpoint",
        lambda data: data | {"values": 7},
    ),
    "a channel value neither a scalar nor [type, base64]": (
        "checkpoint",
        lambda data: data | {"values": {"v": {"n": 7}}},
    ),
    "metadata that loads as a number": (
        "checkpoint",
        lambda data: data | {"metadata": ["msgpack", "AAAA"]},
    ),
    "writes without their list": ("writes", lambda data: _without(data, "writes")),
    "writes without their task": ("writes", lambda data: _without(data, "task")),
    "a write short of its value": ("writes", lambda data: data | {"writes": [[0, "ch"]]}),
    "a write whose idx is text": (
        "writes",
        lambda data: data | {"writes": [["0", "ch", data["writes"][0][2]]]},
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_record_is_reported_as_corrupt_naming_its_run_and_seq(
    saver: PurposeAgentSaver, damage: str
) -> None:
    """Every read that meets it raises ``CorruptRecord``, never a ``KeyError`` or the like.

    The damaged record is appended through the store as any other writer could: the
    checkpoint as the thread's newest, the writes to the newest checkpoint's writes.
    """
    which, change = DAMAGES[damage]
    store = _sync(saver.store)
    for thread_id in ("sound", "damaged"):
        cid = _put(saver, thread_id, v=1)
        saver.put_writes(_config(thread_id, cid), [("ch", "value")], "task")
    run_id = run_id_for("damaged") if which == "checkpoint" else writes_run_for("damaged", "", cid)
    (stored,) = store.list_events(run_id, limit=1, newest_first=True)
    (damaged,) = store.append(run_id, [NewEvent(kind=stored.kind, data=change(stored.data))])

    reads = {
        "get_tuple": lambda: saver.get_tuple(_config("damaged")),
        "list": lambda: list(saver.list(_config("damaged"))),
    }
    for read in reads.values():
        with pytest.raises(CorruptRecord) as raised:
            read()
        assert (raised.value.run_id, raised.value.seq) == (run_id, damaged.seq)
    sound = saver.get_tuple(_config("sound"))
    assert sound is not None
    assert sound.pending_writes == [("task", "ch", "value")]


def test_a_hashed_runs_checkpoint_without_its_names_is_reported_as_corrupt(
    saver: PurposeAgentSaver,
) -> None:
    """A hashed run's id cannot be read back into its thread: listings take it from names."""
    thread_id = "x" * 300
    _put(saver, thread_id, v=1)
    run_id = run_id_for(thread_id)
    store = _sync(saver.store)
    (stored,) = store.list_events(run_id, limit=1, newest_first=True)
    (damaged,) = store.append(
        run_id, [NewEvent(kind=stored.kind, data=_without(stored.data | {"id": "2"}, "names"))]
    )
    for read in (lambda: list(saver.list(None)), lambda: list(saver.list(_config(thread_id)))):
        with pytest.raises(CorruptRecord, match="does not name its thread") as raised:
            read()
        assert (raised.value.run_id, raised.value.seq) == (run_id, damaged.seq)


def test_runs_verify_names_the_savers_damaged_records_too(store_factory: StoreFactory) -> None:
    """``purpose-agent runs verify`` runs the saver's own checks on its runs' events.

    A checkpoint and a write whose JSON is sound (so the store reads them back) but which
    the saver could not read are listed with their run and seq; nothing else is.
    """
    url = store_factory.url  # type: ignore[attr-defined]
    if url is None:
        pytest.skip("the memory store lives in this process only")
    saver = PurposeAgentSaver(store_factory())
    store = _sync(saver.store)
    for thread_id in ("sound", "damaged"):
        cid = _put(saver, thread_id, v=1)
        saver.put_writes(_config(thread_id, cid), [("ch", "value")], "task")
    checkpoints, writes = run_id_for("damaged"), writes_run_for("damaged", "", cid)
    (stored,) = store.list_events(checkpoints, limit=1, newest_first=True)
    (bad_checkpoint,) = store.append(
        checkpoints, [NewEvent(kind=stored.kind, data=_without(stored.data, "metadata"))]
    )
    (stored,) = store.list_events(writes, limit=1)
    broken = stored.data | {"writes": [[0, "ch", ["msgpack", "not base64!"]]]}
    (bad_write,) = store.append(writes, [NewEvent(kind=stored.kind, data=broken)])

    result = invoke("runs", "verify", "--json", "--url", url)

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    # Runs are read most recently written first: the writes run, then the checkpoints.
    assert [(d["run_id"], d["record"], d["seq"], d["detail"]) for d in report["damaged"]] == [
        (writes, "event", bad_write.seq, "a LangGraph value is not [type, base64]"),
        (
            checkpoints,
            "event",
            bad_checkpoint.seq,
            "a LangGraph checkpoint lacks its parent, body or metadata",
        ),
    ]


def test_setup_and_asetup_let_code_written_for_langgraphs_savers_run_unchanged(
    saver: PurposeAgentSaver,
) -> None:
    """``PostgresSaver`` and ``SqliteSaver`` must be set up once; their callers do so."""
    saver.setup()
    asyncio.run(saver.asetup())
    cid = _put(saver, "set-up", v=1)
    found = saver.get_tuple(_config("set-up"))
    assert found is not None
    assert found.checkpoint["id"] == cid


@pytest.mark.sqlite
def test_setup_upgrades_a_database_downgraded_since_the_store_opened(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with PurposeAgentSaver.from_url(url) as saver:
        cid = _put(saver, "kept", v=1)
        head = schema_status(url).head
        downgrade_schema(url, "0002")
        assert schema_status(url).current == "0002"

        saver.setup()

        assert schema_status(url).current == head != "0002"
        found = saver.get_tuple(_config("kept"))
        assert found is not None
        assert found.checkpoint["id"] == cid


@pytest.mark.sqlite
def test_asetup_on_an_async_store_upgrades_it_on_its_own_connections(tmp_path: Any) -> None:
    """``asetup`` ran ``setup`` in a thread, which built the async store's synchronous twin:
    a second engine with its own pool, kept open (a server connection for good under
    session pooling) for a saver whose methods are all async."""
    url = f"sqlite:///{tmp_path / 'store.db'}"

    async def scenario() -> tuple[str | None, bool]:
        async with PurposeAgentSaver.afrom_url(url) as saver:
            await saver.aput(_config("kept"), _checkpoint({"v": 1}), {"step": 0}, {"v": 1})
            downgrade_schema(url, "0002")
            await saver.asetup()
            store = saver._async
            assert store is not None
            found = await saver.aget_tuple(_config("kept"))
            assert found is not None
            return schema_status(url).current, store._twin is not None

    current, twin_built = asyncio.run(scenario())
    assert current == schema_status(url).head != "0002"
    assert not twin_built


def test_checkpoint_tuples_are_built_as_langgraphs_constructor_builds_them() -> None:
    """Reads build the tuple from its fields in order, skipping the named tuple's __new__."""
    fields = ({"c": 1}, {"id": "x"}, {"step": 1}, None, [("t", "ch", 1)])
    built = reads._checkpoint_tuple(fields)
    assert type(built) is CheckpointTuple
    assert built == CheckpointTuple(*fields)
    assert (built.config, built.pending_writes) == (fields[0], fields[4])


_SPECIAL = ["__error__", "__interrupt__", "__resume__", "__scheduled__"]


class _SameCalls:
    """Applies one seeded sequence of calls to the saver and to LangGraph's ``InMemorySaver``.

    Checkpoints are put in id order in each namespace, as LangGraph puts them; parents are
    the latest or an older checkpoint (a fork); writes may come before their checkpoint.
    Every answer is compared whole. ``InMemorySaver`` lists the namespaces of a thread one
    after the other, where LangGraph's SQL savers (and this one) list them newest first by
    id: its answers are put in that order before they are compared.
    """

    def __init__(self, saver: PurposeAgentSaver, seed: int, is_async: bool) -> None:
        self.saver, self.reference = saver, InMemorySaver()
        self.random, self.is_async = random.Random(seed), is_async
        self.stored: dict[tuple[str, str], list[tuple[str, dict[str, Any], dict[str, Any]]]] = {}
        self.early: dict[tuple[str, str], str] = {}  # an id its writes came before
        self.version = 0

    async def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """The saver's answer (its async method on an async store) and the reference's."""
        answers = []
        for saver in (self.saver, self.reference):
            if name == "list":
                if self.is_async and saver is self.saver:
                    answers.append([found async for found in saver.alist(*args, **kwargs)])
                else:
                    answers.append(list(saver.list(*args, **kwargs)))
            elif self.is_async and saver is self.saver:
                answers.append(await getattr(saver, f"a{name}")(*args, **kwargs))
            else:
                answers.append(getattr(saver, name)(*args, **kwargs))
        return answers[0], answers[1]

    async def step(self) -> None:
        pick = self.random
        thread, namespace = pick.choice(["t1", "t2"]), pick.choice(["", "sub:1|inner:2"])
        where = (thread, namespace)
        stored = self.stored.setdefault(where, [])
        action = pick.choice(["put"] * 5 + ["writes"] * 4 + ["get"] * 3 + ["list"] * 3 + ["delete"])
        if action == "put":
            checkpoint_id = self.early.pop(where, None) or str(uuid6())
            parent_id, versions, values = (
                (pick.choice(stored) if pick.random() < 0.3 else stored[-1])
                if stored
                else (None, {}, {})
            )
            versions, values, new_versions = dict(versions), dict(values), {}
            for channel in pick.sample(["a", "b", "c"], pick.randint(0, 3)):
                self.version += 1
                versions[channel] = new_versions[channel] = self.version
                if pick.random() < 0.2:
                    values.pop(channel, None)  # a channel emptied
                else:
                    values[channel] = pick.choice([self.version, f"s{self.version}", [1, None]])
            checkpoint = empty_checkpoint()
            checkpoint.update(id=checkpoint_id, channel_values=values, channel_versions=versions)
            metadata: Any = {"source": pick.choice(["loop", "input"]), "step": len(stored)}
            saved = await self.call(
                "put", _config(thread, parent_id, namespace), checkpoint, metadata, new_versions
            )
            stored.append((checkpoint_id, versions, values))
        elif action == "writes":
            if stored and pick.random() < 0.7:
                checkpoint_id = pick.choice(stored)[0]
            else:
                checkpoint_id = self.early.setdefault(where, str(uuid6()))
            writes = [
                (pick.choice(["a", "b", *_SPECIAL]), pick.choice([1, "v", {"k": [2]}, None]))
                for _ in range(pick.randint(1, 3))
            ]
            task, path = pick.choice(["t-1", "t-2"]), pick.choice(["", "~p, x", "~p, y"])
            saved = await self.call(
                "put_writes", _config(thread, checkpoint_id, namespace), writes, task, path
            )
        elif action == "get":
            checkpoint_id = pick.choice([None, str(uuid6()), *(c for c, _, _ in stored)])
            saved = await self.call(
                "get_tuple", _config(pick.choice([thread, "none"]), checkpoint_id, namespace)
            )
        elif action == "list":
            config = pick.choice(
                [None, {"configurable": {"thread_id": thread}}, _config(thread, None, namespace)]
            )
            options: dict[str, Any] = {"limit": pick.choice([None, 1, 3])}
            if pick.random() < 0.3:
                options["filter"] = {"source": "loop"}
            if stored and pick.random() < 0.3:
                options["before"] = _config(thread, pick.choice(stored)[0], namespace)
            ours, _ = await self.call("list", config, **options)
            everything = list(self.reference.list(config, **{**options, "limit": None}))
            everything.sort(
                key=lambda found: found.config["configurable"]["checkpoint_id"], reverse=True
            )
            saved = ours, everything[: options["limit"]]
        else:
            saved = await self.call("delete_thread", thread)
            for key in [key for key in self.stored if key[0] == thread]:
                self.stored[key] = []
        ours, theirs = saved
        if not _SORTS_WRITES:
            ours, theirs = _writes_unordered(ours), _writes_unordered(theirs)
        assert ours == theirs, f"{action} answered differently"


# Releases of langgraph-checkpoint before writes_sort_key (4.0) gave InMemorySaver's pending
# writes in the order they were put; later ones, the SQL savers and this one, in that key's.
_SORTS_WRITES = hasattr(langgraph.checkpoint.base, "writes_sort_key")


def _writes_unordered(answer: Any) -> Any:
    """An answer with each tuple's pending writes in one fixed order, whatever their own."""
    if isinstance(answer, list):
        return [_writes_unordered(found) for found in answer]
    if isinstance(answer, CheckpointTuple) and answer.pending_writes:
        return answer._replace(pending_writes=sorted(answer.pending_writes, key=repr))
    return answer


@pytest.mark.parametrize("seed", range(3))
def test_random_calls_answer_as_langgraphs_in_memory_saver(
    store_factory: StoreFactory, seed: int
) -> None:
    store = store_factory()
    calls = _SameCalls(PurposeAgentSaver(store), seed, isinstance(store, AsyncSQLCheckpointer))

    async def run() -> None:
        for _ in range(120):
            await calls.step()

    asyncio.run(run())
