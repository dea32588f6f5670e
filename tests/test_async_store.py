"""The asyncio store on its drivers: URLs mapped, event loops changed, errors translated."""

from __future__ import annotations

import asyncio
import contextlib
import warnings

import pytest
from sqlalchemy import create_engine

from purpose_agent import AsyncCheckpointer, AsyncSQLCheckpointer, EventKind, NewEvent
from purpose_agent.db.async_engine import async_url
from purpose_agent.db.group_commit import GroupCommitPolicy
from purpose_agent.errors import InvalidInput, StoreUnavailable


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("mariadb+pymysql://u@h/db", "mariadb+aiomysql"),
        ("mysql://u@h/db", "mysql+aiomysql"),
    ],
)
def test_the_urls_of_the_synchronous_store_open_an_asyncio_driver(given: str, driver: str) -> None:
    synchronous, asynchronous = async_url(given)
    assert asynchronous.drivername == driver
    assert asynchronous.database == synchronous.database
    store = AsyncSQLCheckpointer(given)
    assert store.engine.dialect.is_async
    assert isinstance(store, AsyncCheckpointer)


def test_a_driver_without_an_asyncio_twin_is_refused() -> None:
    with pytest.raises(InvalidInput, match="asyncio driver itself"):
        AsyncSQLCheckpointer("postgresql+asyncpg://u@h/db")
    with pytest.raises(InvalidInput, match="not a synchronous Engine"):
        AsyncSQLCheckpointer(create_engine("sqlite://"))  # type: ignore[arg-type]


@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "grouped"])
def test_a_store_serves_one_event_loop_after_another(empty_database: str, grouped: bool) -> None:
    policy = GroupCommitPolicy(max_batch=8) if grouped else False
    store = AsyncSQLCheckpointer(empty_database, group_commit=policy)

    async def write(start: int) -> None:
        await asyncio.gather(
            *(
                store.append(f"r{i}", [NewEvent(kind=EventKind.CUSTOM, data={"n": start})])
                for i in range(8)
            )
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a connection of a closed loop must not complain
        asyncio.run(write(1))
        asyncio.run(write(2))  # a new loop: the old loop's connections are not reused

        async def read_and_close() -> list[list[int]]:
            runs = [await store.list_events(f"r{i}") for i in range(8)]
            await store.close()
            return [[event.data["n"] for event in run] for run in runs]

        assert asyncio.run(read_and_close()) == [[1, 2]] * 8


def test_a_closed_store_refuses_calls(empty_database: str) -> None:
    async def main() -> None:
        store = await AsyncSQLCheckpointer.open(empty_database)
        await store.close()
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.last_seq("r")

    asyncio.run(main())


def test_an_unreachable_server_is_store_unavailable() -> None:
    async def main() -> None:
        with pytest.raises(StoreUnavailable):
            await AsyncSQLCheckpointer.open("postgresql+psycopg://nobody@127.0.0.1:1/none")

    asyncio.run(main())


@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "grouped"])
def test_cancelled_saves_leave_the_store_usable(empty_database: str, grouped: bool) -> None:
    """A task cancelled mid-save never leaves a transaction open for the next caller."""
    policy = GroupCommitPolicy(max_batch=8) if grouped else False

    async def main() -> None:
        async with await AsyncSQLCheckpointer.open(empty_database, group_commit=policy) as store:
            for attempt in range(30):
                saving = asyncio.ensure_future(
                    store.append(f"cancelled-{attempt}", [NewEvent(kind=EventKind.CUSTOM)])
                )
                for _ in range(attempt % 6):
                    await asyncio.sleep(0)  # cancelled at a different point each time
                saving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await saving
                (stored,) = await store.append("kept", [NewEvent(kind=EventKind.CUSTOM)])
                assert stored.seq == attempt + 1
            assert await store.last_seq("kept") == 30

    asyncio.run(main())
