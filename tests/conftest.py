"""Backends for the shared behaviour suite, and the servers they need.

Every backend runs the same suite (``tests/test_behaviour.py``); a backend that needs a server
carries that server's marker, so ``pytest -m postgres`` runs the suite on Postgres alone.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from benchmarks.observed import ObservedSQLCheckpointer
from purpose_agent import (
    AsyncSQLCheckpointer,
    InMemoryCheckpointer,
    JSONLCheckpointer,
    SQLCheckpointer,
)
from purpose_agent.db.group_commit import GroupCommitPolicy
from purpose_agent.db.models import Base
from purpose_agent.db.partitions import partition_events
from purpose_agent.testing import Backend, BlockingAdapter, Capability
from purpose_agent.testing.harness import CapabilityNotDeclared
from tests.servers import required, server_url, throwaway_database

# Hash partitions of pa_events in the postgres-partitioned backend: enough that runs spread.
PARTITIONS = 4


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped test of a backend this run requires is a failure, never a quiet skip.

    Except a row the backend leaves out by not declaring its capability: that skip is what the
    backend's declaration says, not a server that was missing.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    declared = call.excinfo is not None and call.excinfo.errisinstance(CapabilityNotDeclared)
    if report.skipped and not hasattr(report, "wasxfail") and not declared:
        names = {mark.name for mark in item.iter_markers()} & required()
        if names:
            report.outcome = "failed"
            report.longrepr = (
                f"skipped, but PURPOSE_AGENT_TEST_REQUIRE requires {sorted(names)}: "
                f"{report.longrepr}"
            )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[URL]:
    """A throwaway Postgres database for this test run, dropped at the end."""
    with server_url("postgres") as admin, throwaway_database(admin) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_partitioned_url() -> Iterator[URL]:
    """A throwaway Postgres database whose event log is hash-partitioned by run id."""
    with server_url("postgres") as admin, throwaway_database(admin, "pa_part") as url:
        SQLCheckpointer(url).close()
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            partition_events(engine, PARTITIONS)
        finally:
            engine.dispose()
        yield url


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[URL]:
    """A throwaway MariaDB database for this test run, dropped at the end."""
    with server_url("mariadb") as admin, throwaway_database(admin) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test copies it instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    SQLCheckpointer(f"sqlite:///{path}").close()
    return path


def empty_tables(url: URL | str) -> None:
    """Remove every row the previous test left, keeping the migrated schema."""
    SQLCheckpointer(url).close()  # migrates the database on first use
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


def table_names(url: URL | str) -> set[str]:
    """The tables the database holds, whatever the models say it should."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _server_backend(request: pytest.FixtureRequest, fixture: str, name: str) -> Backend:
    url = request.getfixturevalue(fixture)
    empty_tables(url)
    return Backend(name, functools.partial(SQLCheckpointer, url.render_as_string(False)))


# The databases, each with the marker of the server it needs (SQLite's marks it as SQLite).
DATABASES = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]
# Every sync store: in memory, in files, and on each database.
STORES = [pytest.param("memory"), pytest.param("jsonl"), *DATABASES]

BACKENDS = [
    *STORES,
    # Postgres with pa_events hash-partitioned by run id (purpose-agent db partition).
    pytest.param("postgres-partitioned", marks=pytest.mark.postgres),
    pytest.param("async-sqlite", marks=pytest.mark.sqlite),
    pytest.param("async-postgres", marks=pytest.mark.postgres),
    pytest.param("async-mariadb", marks=pytest.mark.mariadb),
    # The asyncio store with group commit for tasks.
    pytest.param("async-grouped-sqlite", marks=pytest.mark.sqlite),
    pytest.param("async-grouped-postgres", marks=pytest.mark.postgres),
    pytest.param("async-grouped-mariadb", marks=pytest.mark.mariadb),
    # The asyncio store running SQLite's statements on the loop's thread (on_loop=True).
    pytest.param("async-on-loop-sqlite", marks=pytest.mark.sqlite),
    pytest.param("async-on-loop-grouped-sqlite", marks=pytest.mark.sqlite),
    # The same stores with a listener on the engine: every statement takes SQLAlchemy's own
    # path (what echo and OpenTelemetry see) instead of the cursor fast path.
    pytest.param("observed-sqlite", marks=pytest.mark.sqlite),
    pytest.param("observed-postgres", marks=pytest.mark.postgres),
    pytest.param("observed-mariadb", marks=pytest.mark.mariadb),
    # Group commit: writers that overlap share a transaction, each in its own savepoint.
    pytest.param("grouped-sqlite", marks=pytest.mark.sqlite),
    pytest.param("grouped-postgres", marks=pytest.mark.postgres),
    pytest.param("grouped-mariadb", marks=pytest.mark.mariadb),
]

# Waits a little for company, so that the suite's threaded rows commit in real batches.
GROUPED = GroupCommitPolicy(max_batch=16, max_wait=0.002)


# The API of issue 11: appends, run groups, retention.
NEW_API = {Capability.APPEND, Capability.GROUPS, Capability.RETENTION}


def _open_async(url: str, **options: Any) -> BlockingAdapter:
    return BlockingAdapter(lambda: AsyncSQLCheckpointer.open(url, **options))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend in turn, on fresh, empty storage, declaring every capability it has."""
    name = request.param
    if name == "memory":
        store = InMemoryCheckpointer()
        # Every handle is the same object, and nothing outlives it or leaves the process.
        promises = {Capability.THREADS, Capability.STREAMING, Capability.BOUNDED_READS, *NEW_API}
        return Backend("memory", lambda: store, promises)
    if name == "jsonl":
        opener = functools.partial(JSONLCheckpointer, str(tmp_path / "jsonl"))
        return Backend("jsonl", opener)
    if name == "sqlite":
        path = tmp_path / "store.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return Backend("sqlite", functools.partial(SQLCheckpointer, f"sqlite:///{path}"))
    if name == "postgres":
        return _server_backend(request, "postgres_url", "postgres")
    if name == "mariadb":
        return _server_backend(request, "mariadb_url", "mariadb")
    if name == "postgres-partitioned":
        return _server_backend(request, "postgres_partitioned_url", name)
    if name.startswith("async-"):
        grouped: dict[str, Any] = (
            {"group_commit": GROUPED} if name.startswith("async-grouped-") else {}
        )
        if name.startswith("async-on-loop-"):
            grouped = {"on_loop": True, **({"group_commit": GROUPED} if "grouped" in name else {})}
        database = name.rpartition("-")[2]
        if database == "sqlite":
            path = tmp_path / "store.db"
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
            return Backend(name, functools.partial(_open_async, f"sqlite:///{path}", **grouped))
        url = request.getfixturevalue(f"{database}_url")
        empty_tables(url)
        return Backend(name, functools.partial(_open_async, url.render_as_string(False), **grouped))
    if name == "observed-sqlite":
        path = tmp_path / "store.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return Backend(name, functools.partial(ObservedSQLCheckpointer, f"sqlite:///{path}"))
    if name in ("observed-postgres", "observed-mariadb"):
        url = request.getfixturevalue(f"{name.removeprefix('observed-')}_url")
        empty_tables(url)
        opened = functools.partial(ObservedSQLCheckpointer, url.render_as_string(False))
        return Backend(name, opened)
    if name == "grouped-sqlite":
        path = tmp_path / "store.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return Backend(
            name, functools.partial(SQLCheckpointer, f"sqlite:///{path}", group_commit=GROUPED)
        )
    if name in ("grouped-postgres", "grouped-mariadb"):
        url = request.getfixturevalue(f"{name.removeprefix('grouped-')}_url")
        empty_tables(url)
        opened = functools.partial(
            SQLCheckpointer, url.render_as_string(False), group_commit=GROUPED
        )
        return Backend(name, opened)
    raise AssertionError(name)


EMPTY_DATABASES = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(params=EMPTY_DATABASES)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with nothing in it, on each SQL backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with server_url(request.param) as admin, throwaway_database(admin, "pa_empty") as url:
        yield url.render_as_string(hide_password=False)


# Hypothesis: CI runs the property tests at full strength; a local run stays quick.
from hypothesis import HealthCheck, settings  # noqa: E402

_SLOW_IS_FINE = [HealthCheck.too_slow]  # examples do real writes on database servers
settings.register_profile(
    "ci", max_examples=2000, deadline=None, database=None, suppress_health_check=_SLOW_IS_FINE
)
settings.register_profile(
    "dev", max_examples=100, deadline=None, suppress_health_check=_SLOW_IS_FINE
)
settings.load_profile("ci" if __import__("os").environ.get("CI") else "dev")
