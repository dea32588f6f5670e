"""What the saver promises beyond LangGraph's suite: no pending write lost, exact values."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.base")

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from purpose_agent import AsyncSQLCheckpointer, InvalidInput
from purpose_agent.integrations.langgraph import PurposeAgentSaver, run_id_for
from tests.integrations.conftest import StoreFactory


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


def _put(saver: PurposeAgentSaver, thread_id: str, parent: str | None = None, **values: Any) -> str:
    checkpoint = _checkpoint(values)
    saver.put(_config(thread_id, parent), checkpoint, {"source": "loop", "step": 0}, {})
    return str(checkpoint["id"])


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
    stored = saver.store.list_events(run_id_for("values"))
    assert [type(e.data["checkpoint" if i == 0 else "value"][1]) for i, e in enumerate(stored)] == [
        str,
        str,
        str,
    ]


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


def test_prune_and_run_deletion_are_seen_by_a_new_saver(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    first = _put(saver, "p")
    second = _put(saver, "p", first)
    third = _put(saver, "p", second)
    saver.prune(["p"])

    fresh = PurposeAgentSaver(store_factory())
    assert [t.checkpoint["id"] for t in fresh.list(_config("p"))] == [third]
    assert fresh.get_tuple(_config("p", first)) is None


def test_threads_beyond_the_cached_runs_are_read_again_from_the_store(
    store_factory: StoreFactory,
) -> None:
    saver = PurposeAgentSaver(store_factory(), cached_runs=2)
    latest = {}
    for n in range(5):
        first = _put(saver, f"lru-{n}", value=n)
        latest[n] = _put(saver, f"lru-{n}", first, value=n * 10)
        saver.put_writes(_config(f"lru-{n}", first), [("w", n)], "t")
    for n in range(5):
        found = saver.get_tuple(_config(f"lru-{n}"))
        assert found is not None
        assert (found.checkpoint["id"], found.checkpoint["channel_values"]) == (
            latest[n],
            {"value": n * 10},
        )
        (older,) = [t for t in saver.list(_config(f"lru-{n}")) if t.checkpoint["id"] != latest[n]]
        assert older.pending_writes == [("t", "w", n)]


def test_thread_ids_with_separators_map_to_valid_runs_and_back(saver: PurposeAgentSaver) -> None:
    thread_id = "user/42:chat\\1 ü"
    _put(saver, thread_id)
    checkpoint = _checkpoint()
    saver.put(_config(thread_id, ns="child:abc|x"), checkpoint, {}, {})

    listed = list(saver.list({"configurable": {"thread_id": thread_id}}))
    assert sorted(t.config["configurable"]["checkpoint_ns"] for t in listed) == ["", "child:abc|x"]
    assert {t.config["configurable"]["thread_id"] for t in listed} == {thread_id}
    assert run_id_for(thread_id) == "lg:user%2F42%3Achat%5C1%20%C3%BC"
    assert run_id_for(thread_id, "child:abc|x") in saver.store.list_runs()


def test_thread_id_too_long_for_a_run_id_is_refused_before_writing(
    saver: PurposeAgentSaver,
) -> None:
    with pytest.raises(InvalidInput, match="at most 255"):
        _put(saver, "x" * 300)
    assert saver.store.list_runs() == []


class _CountingStore:
    """The real store, counting the events its reads return."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.events_read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def list_events(self, run_id: str, since_seq: int = 0, limit: int | None = None) -> Any:
        events = self.store.list_events(run_id, since_seq, limit)
        self.events_read += len(events)
        return events

    def iter_events(self, run_id: str, since_seq: int = 0) -> Any:
        for event in self.store.iter_events(run_id, since_seq):
            self.events_read += 1
            yield event


def _fill(saver: PurposeAgentSaver, thread_id: str, count: int) -> list[str]:
    ids: list[str] = []
    for n in range(count):
        ids.append(_put(saver, thread_id, ids[-1] if ids else None, n=n))
        saver.put_writes(_config(thread_id, ids[-1]), [("w", n)], "task")
    return ids


def test_a_new_saver_starts_from_the_saved_index_and_reads_only_the_tail(
    store_factory: StoreFactory,
) -> None:
    writer = PurposeAgentSaver(store_factory(), save_index_every=10)
    ids = _fill(writer, "long", 30)  # 60 events: the index is saved at 10, 20, ... 60
    saved = writer.store.load_latest(run_id_for("long"))
    assert saved is not None
    assert saved.seq == 0  # it covers no event: pruning covered events keeps every checkpoint
    assert saved.data["through"] == 60

    store = store_factory()
    counting = _CountingStore(store.sync if isinstance(store, AsyncSQLCheckpointer) else store)
    reader = PurposeAgentSaver(counting)  # type: ignore[arg-type]
    found = reader.get_tuple(_config("long"))
    assert found is not None
    assert (found.checkpoint["id"], found.pending_writes) == (ids[-1], [("task", "w", 29)])
    assert counting.events_read <= 3  # the index's last event, the checkpoint and its write
    listed = list(reader.list(_config("long")))
    assert [t.checkpoint["id"] for t in listed] == ids[::-1]
    assert [t.pending_writes for t in listed] == [[("task", "w", n)] for n in range(29, -1, -1)]


def test_a_saved_index_of_a_deleted_and_rewritten_thread_is_not_trusted(
    store_factory: StoreFactory,
) -> None:
    first = PurposeAgentSaver(store_factory(), save_index_every=5)
    _fill(first, "again", 10)
    stale = first.store.load_latest(run_id_for("again"))
    assert stale is not None
    first.delete_thread("again")
    rewritten = _fill(PurposeAgentSaver(store_factory(), save_index_every=0), "again", 3)
    # As if another process saved its index of the old thread after the deletion.
    first.store.save_snapshot(run_id_for("again"), stale)

    fresh = PurposeAgentSaver(store_factory(), save_index_every=5)
    found = fresh.get_tuple(_config("again"))
    assert found is not None
    assert found.checkpoint["id"] == rewritten[-1]
    assert [t.checkpoint["id"] for t in fresh.list(_config("again"))] == rewritten[::-1]


@pytest.mark.sqlite
def test_pruning_covered_events_keeps_every_checkpoint(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'pruned.db'}"
    with PurposeAgentSaver.from_url(url, save_index_every=4) as saver:
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
