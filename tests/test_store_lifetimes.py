"""A store dropped without close() lets its connections go at once, not at the next full GC."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from purpose_agent import AsyncSQLCheckpointer, EventKind, NewEvent, SQLCheckpointer


@pytest.fixture
def no_cycle_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.sqlite
@pytest.mark.parametrize("group_commit", [False, True])
def test_a_dropped_store_is_freed_by_reference_counting(
    tmp_path: Path, group_commit: bool, no_cycle_collection: None
) -> None:
    def request() -> weakref.ref[SQLCheckpointer]:
        store = SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}", group_commit=group_commit)
        store.append("r", [NewEvent(kind=EventKind.CUSTOM, data={})])
        store.list_events("r", limit=1, newest_first=True)
        return weakref.ref(store)

    dropped = [request() for _ in range(3)]
    assert [ref() for ref in dropped] == [None] * 3  # and so are their engines' connections


@pytest.mark.sqlite
def test_a_dropped_async_store_with_group_commit_is_freed_by_reference_counting(
    tmp_path: Path, no_cycle_collection: None
) -> None:
    async def request() -> weakref.ref[object]:
        async with AsyncSQLCheckpointer(
            f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}", group_commit=True
        ) as store:
            await store.append("r", [NewEvent(kind=EventKind.CUSTOM, data={})])
            inner = store._store
        return weakref.ref(inner)

    inner = asyncio.run(request())
    assert inner() is None
