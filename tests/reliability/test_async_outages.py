"""The async store (psycopg async, aiomysql) across restarts and killed connections.

The asyncio twin of the outage and storm tests in ``test_postgres.py`` and ``test_mariadb.py``:
tasks save steps (events and the snapshot after them) of their own runs on one
``AsyncSQLCheckpointer``, plain or with group commit, while the private server restarts or
its connections are killed again and again. What callers must see: only ``purpose_agent``
errors (``StoreUnavailable``, which they retry), never a driver's; no task hangs; every
acknowledged step stored once, whole, with no gap; and the same store, never reopened,
working again once the server is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy.engine import URL

from purpose_agent import AsyncSQLCheckpointer
from purpose_agent.testing.suite import ev
from tests.reliability.conftest import Private
from tests.reliability.workload import (
    ASYNC_CALM,
    ASYNC_OUTAGE_CALM,
    AsyncStepWriters,
    aoutage_under_load,
    astorm_under_load,
    batch_sizes,
    kill_mariadb_connections,
    terminate_postgres_backends,
)
from tests.servers import LocalServer

pytestmark = pytest.mark.reliability

GROUPING = pytest.mark.parametrize("group_commit", [False, True], ids=["plain", "grouped"])
# More tasks than the pool holds connections (8 + 16), as in a service: plain, the tasks
# queue for connections; grouped, behind the commit in flight, and share the next.
TASKS = 32


def _outage(url: URL, server: LocalServer, group_commit: bool) -> None:
    scenario = aoutage_under_load(url, server, group_commit=group_commit, tasks=TASKS)
    seen = asyncio.run(scenario)
    expected = {**ASYNC_OUTAGE_CALM, **({"calls shared commits": True} if group_commit else {})}
    assert seen == expected


def _storm(url: URL, kill: Callable[[], int], group_commit: bool) -> None:
    async def scenario() -> dict[str, object]:
        async with AsyncSQLCheckpointer(url, group_commit=group_commit) as store:
            await store.save_event(ev("before", 1))  # opens the store
            sizes = batch_sizes(store) if group_commit else None
            writers = AsyncStepWriters(store, tasks=TASKS)
            seen = await astorm_under_load(store, kill, writers)
            if sizes is not None:
                seen["calls shared commits"] = any(size > 1 for size in sizes)
            return seen

    expected = {**ASYNC_CALM, **({"calls shared commits": True} if group_commit else {})}
    assert asyncio.run(scenario()) == expected


@GROUPING
def test_async_writers_lose_nothing_across_a_restart(private: Private, group_commit: bool) -> None:
    _outage(private.url, private.server, group_commit)


@GROUPING
def test_async_writers_lose_nothing_while_their_connections_are_killed(
    private: Private, group_commit: bool
) -> None:
    """pg_terminate_backend on Postgres, KILL on MariaDB, again and again."""
    admin, database = private.server.url, str(private.url.database)
    if private.backend == "postgres":
        _storm(private.url, lambda: terminate_postgres_backends(admin, database), group_commit)
    else:
        _storm(private.url, lambda: len(kill_mariadb_connections(admin, database)), group_commit)
