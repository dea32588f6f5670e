"""A ``DeltaChannel``'s history read by the saver: the default walk's answer, in a few reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest

pytest.importorskip("langgraph.graph")

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver

from purpose_agent import CorruptRecord
from purpose_agent.integrations.langgraph import PurposeAgentSaver
from tests.integrations import graphs

CHANNELS = ["items", "turns", "never"]


def _config(thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _default(saver: BaseCheckpointSaver[Any], config: dict[str, Any]) -> Mapping[str, Any]:
    """LangGraph's own walk, one ``get_tuple`` per ancestor, through this saver."""
    return BaseCheckpointSaver.get_delta_channel_history(saver, config=config, channels=CHANNELS)  # type: ignore[arg-type]


def _without_tasks(history: Mapping[str, Any]) -> dict[str, Any]:
    """A history with its writes as ``(channel, value)``: each run of a graph has its task ids."""
    return {
        channel: {**entry, "writes": [(ch, value) for _, ch, value in entry["writes"]]}
        for channel, entry in history.items()
    }


class _Reads:
    """Counts the saver's calls to its (synchronous) store, and the events they return."""

    def __init__(self, saver: PurposeAgentSaver) -> None:
        self.calls = 0
        self.events = 0
        for name in ("list_events", "event_by_key", "events_of_runs"):
            method = getattr(saver.store, name, None)
            if method is not None:
                setattr(saver.store, name, self._counting(method))

    def _counting(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counting(*args: Any, **kwargs: Any) -> Any:
            found = method(*args, **kwargs)
            self.calls += 1
            if isinstance(found, dict):
                self.events += sum(len(events) for events in found.values())
            else:
                self.events += len(found) if isinstance(found, list) else found is not None
            return found

        return counting


def _batched(saver: PurposeAgentSaver) -> bool:
    """Whether the store reads many runs' events in one call (the SQL stores)."""
    return callable(getattr(saver.store, "events_of_runs", None))


def _checkpoint(channel_values: dict[str, Any] | None = None) -> Any:
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    if channel_values:
        checkpoint["channel_values"] = channel_values
    return checkpoint


def _chain(
    saver: PurposeAgentSaver,
    thread_id: str,
    count: int,
    *,
    parent: str | None = None,
    seed_at: int | None = None,
    run: str = "r",
) -> list[str]:
    """``count`` checkpoints, each the child of the one before, each with a write to ``items``."""
    ids = []
    for n in range(count):
        values = {"items": [f"seed{n}"]} if n == seed_at else None
        checkpoint = _checkpoint(values)
        saver.put(_config(thread_id, parent), checkpoint, {"run_id": run}, {})
        parent = checkpoint["id"]
        saver.put_writes(_config(thread_id, parent), [("items", [n]), ("turns", n)], f"task{n}")
        ids.append(parent)
    return ids


# Defined only where LangGraph has DeltaChannel: a skip of a required backend fails the run.
if graphs.DeltaChannel is not None:

    def test_history_of_a_real_graph_is_the_default_walk_and_the_in_memory_saver_s(
        saver: PurposeAgentSaver,
    ) -> None:
        """Latest, an older checkpoint by id, and a fork from it, on a channel with seeds."""
        ours, reference = (
            graphs.delta_chat(saver, short=True),
            graphs.delta_chat(InMemorySaver(), short=True),
        )
        memory = reference.checkpointer
        for graph in (ours, reference):
            for n in range(15):
                graph.invoke({"items": [f"msg{n}"]}, _config("chat"))
        # An older checkpoint, far enough back for the walk to have seen a seed before it.
        older = [
            [snap.config for snap in graph.get_state_history(_config("chat"))][12]
            for graph in (ours, reference)
        ]
        for graph, config in zip((ours, reference), older, strict=True):
            graph.invoke({"items": ["fork"]}, config)  # a branch beside the later checkpoints
        cases = [(_config("chat"), _config("chat")), tuple(older)]

        for mine, theirs in cases:
            found = saver.get_delta_channel_history(config=mine, channels=CHANNELS)
            assert found == _default(saver, mine)
            assert _without_tasks(found) == _without_tasks(
                memory.get_delta_channel_history(config=theirs, channels=CHANNELS)
            )
            assert found == asyncio.run(
                saver.aget_delta_channel_history(config=mine, channels=CHANNELS)
            )
        latest = saver.get_delta_channel_history(config=_config("chat"), channels=CHANNELS)
        assert latest["items"]["seed"].value[:2] == ["msg0", "reply1"]
        assert latest["never"] == {"writes": []}
        assert ours.get_state(_config("chat")).values == reference.get_state(_config("chat")).values

    def test_a_long_walk_reads_pages_not_one_ancestor_at_a_time(saver: PurposeAgentSaver) -> None:
        """150 ancestors and no seed: a few store calls, where the default walk makes 300."""
        ids = _chain(saver, "long", 150)
        reads = _Reads(saver)
        found = saver.get_delta_channel_history(config=_config("long"), channels=CHANNELS)
        ours = reads.calls
        assert found == _default(saver, _config("long"))
        default = reads.calls - ours

        assert [value for _, _, value in found["items"]["writes"]] == [[n] for n in range(149)]
        assert "seed" not in found["items"]
        # Without events_of_runs (memory, JSONL) each ancestor's writes are one more call.
        assert ours <= (16 if _batched(saver) else 16 + 149) < 300 <= default
        older = saver.get_delta_channel_history(config=_config("long", ids[40]), channels=CHANNELS)
        assert [value for _, _, value in older["turns"]["writes"]] == list(range(40))

    def test_a_fork_from_long_ago_is_reached_by_its_key_not_by_reading_the_siblings(
        saver: PurposeAgentSaver,
    ) -> None:
        """The branch's parent lies 96 checkpoints below it: one lookup, not a scan."""
        trunk = _chain(saver, "fork", 100, seed_at=1)
        _chain(saver, "fork", 2, parent=trunk[3])
        reads = _Reads(saver)
        found = saver.get_delta_channel_history(config=_config("fork"), channels=["items"])
        read = reads.events

        assert found == BaseCheckpointSaver.get_delta_channel_history(
            saver, config=_config("fork"), channels=["items"]
        )
        assert found["items"] == {
            "seed": ["seed1"],
            "writes": [(f"task{n}", "items", [n]) for n in (1, 2, 3, 0)],
        }
        # The target and its writes, the first page (8), the jump, the page below the fork
        # point (the 3 left), and the writes of 4 ancestors: none of the 96 siblings beyond.
        assert read < 30

    def test_the_walk_stops_at_a_deleted_or_missing_ancestor(saver: PurposeAgentSaver) -> None:
        older = _chain(saver, "cut", 5, run="old")
        newer = _chain(saver, "cut", 3, parent=older[-1], seed_at=0, run="new")
        saver.delete_for_runs(["old"])
        kept = saver.get_delta_channel_history(config=_config("cut"), channels=CHANNELS)
        assert kept == _default(saver, _config("cut"))
        assert kept["turns"] == {"writes": [(f"task{n}", "turns", n) for n in (0, 1)]}
        assert kept["items"]["seed"] == ["seed0"]

        orphan = _chain(saver, "orphan", 3, parent=str(uuid6(clock_seq=-1)))
        for config in (_config("orphan"), _config("cut", older[-1]), _config("none")):
            found = saver.get_delta_channel_history(config=config, channels=CHANNELS)
            assert found == _default(saver, config)
        assert saver.get_delta_channel_history(config=_config("orphan"), channels=["turns"]) == {
            "turns": {"writes": [("task0", "turns", 0), ("task1", "turns", 1)]}
        }
        assert saver.get_delta_channel_history(
            config=_config("cut", older[-1]), channels=["items"]
        ) == {"items": {"writes": []}}
        assert saver.get_delta_channel_history(config=_config("cut"), channels=[]) == {}
        assert newer[0] in {t.checkpoint["id"] for t in saver.list(_config("cut"))}
        assert len(orphan) == 3

    def test_parent_ids_that_loop_are_a_corrupt_record_not_an_endless_walk(
        saver: PurposeAgentSaver,
    ) -> None:
        """LangGraph's default walk never ends here; the saver names the record."""
        first, second = _checkpoint(), _checkpoint()
        saver.put(_config("loop", second["id"]), first, {}, {})
        saver.put(_config("loop", first["id"]), second, {}, {})

        with pytest.raises(CorruptRecord, match="parent ids form a loop"):
            saver.get_delta_channel_history(config=_config("loop"), channels=CHANNELS)
