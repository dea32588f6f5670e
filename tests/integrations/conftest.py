"""Savers on every backend, each on fresh, empty storage."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.base")

from purpose_agent import (
    AsyncSQLCheckpointer,
    Checkpointer,
    InMemoryCheckpointer,
    JSONLCheckpointer,
    SQLCheckpointer,
)
from purpose_agent.integrations.langgraph import PurposeAgentSaver
from tests.conftest import STORES, empty_tables

SAVER_BACKENDS = [
    *STORES,
    pytest.param("async-sqlite", marks=pytest.mark.sqlite),
    # The async store's statements on the event loop's own thread (SQLite only).
    pytest.param("async-on-loop-sqlite", marks=pytest.mark.sqlite),
    pytest.param("async-postgres", marks=pytest.mark.postgres),
    pytest.param("async-mariadb", marks=pytest.mark.mariadb),
]

StoreFactory = Callable[[], Checkpointer | AsyncSQLCheckpointer]


@pytest.fixture(params=SAVER_BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens handles on one empty store of each backend in turn; every handle sees the same data.

    Also yields the store's URL as ``store_factory.url`` for tests that open it in another
    process (``None`` for the memory store).
    """
    name = request.param
    opened: list[Checkpointer | AsyncSQLCheckpointer] = []
    url: str | None = None
    memory = InMemoryCheckpointer()
    if name in {"postgres", "async-postgres"}:
        server = request.getfixturevalue("postgres_url")
        empty_tables(server)
        url = server.render_as_string(False)
    elif name in {"mariadb", "async-mariadb"}:
        server = request.getfixturevalue("mariadb_url")
        empty_tables(server)
        url = server.render_as_string(False)
    elif name in {"sqlite", "async-sqlite", "async-on-loop-sqlite"}:
        path = tmp_path / "store.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"

    def factory() -> Checkpointer | AsyncSQLCheckpointer:
        store: Checkpointer | AsyncSQLCheckpointer
        if name == "memory":
            return memory
        if name == "jsonl":
            store = JSONLCheckpointer(str(tmp_path / "jsonl"))
        elif name.startswith("async-"):
            store = AsyncSQLCheckpointer(url, on_loop=name == "async-on-loop-sqlite")
        else:
            store = SQLCheckpointer(url)
        opened.append(store)
        return store

    factory.url = url if name != "jsonl" else f"jsonl:{tmp_path / 'jsonl'}"  # type: ignore[attr-defined]
    factory.backend = name  # type: ignore[attr-defined]
    yield factory
    for store in opened:
        if isinstance(store, AsyncSQLCheckpointer):
            asyncio.run(store.close())  # its own connections, and its synchronous twin
        else:
            store.close()


@pytest.fixture
def saver(store_factory: StoreFactory) -> PurposeAgentSaver:
    """A saver on the backend's store."""
    return PurposeAgentSaver(store_factory())
