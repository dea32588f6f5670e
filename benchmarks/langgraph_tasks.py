"""LangGraph savers doing the concurrent-runs benchmark's steps, as asyncio tasks.

A step of a run is what a graph's superstep writes: ``aput`` of a checkpoint whose channel
values hold the 1 KB state, then ``aput_writes`` of the step's 7 events as pending writes
against it. One thread per run. Used by :mod:`benchmarks.concurrent_runs` (``--mode tasks``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from benchmarks import workload

STEP_EVENTS = 7
SNAPSHOT_BYTES = 1024


@contextlib.asynccontextmanager
async def theirs(backend: str, target: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """LangGraph's async saver for the backend (one connection, as from_conn_string opens)."""
    if backend == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(target) as saver:
            await saver.setup()
            yield saver
        return
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    async with AsyncPostgresSaver.from_conn_string(target) as saver:
        await saver.setup()
        yield saver


def saver_step(saver: BaseCheckpointSaver[Any]) -> Callable[[str, int], Awaitable[None]]:
    """A step function for any async saver; each run id is a LangGraph thread."""
    parents: dict[str, str] = {}

    async def step(run_id: str, number: int) -> None:
        first = (number - 1) * STEP_EVENTS + 1
        events = workload.events(run_id, first, STEP_EVENTS)
        state = workload.state(run_id, first + STEP_EVENTS - 1, SNAPSHOT_BYTES)
        configurable: dict[str, Any] = {"thread_id": run_id, "checkpoint_ns": ""}
        if run_id in parents:
            configurable["checkpoint_id"] = parents[run_id]
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=number))
        version = f"{number:032}.0"
        checkpoint["channel_values"] = {"state": state.data}
        checkpoint["channel_versions"] = {"state": version}
        config = await saver.aput(
            {"configurable": configurable},
            checkpoint,
            {"source": "loop", "step": number, "parents": {}},
            {"state": version},
        )
        parents[run_id] = config["configurable"]["checkpoint_id"]
        # The step's tasks write against the checkpoint they start from.
        writes = [("events", event.data) for event in events]
        await saver.aput_writes(config, writes, f"task-{number}")

    return step
