"""Private servers for the reliability suite: one per test module, never a shared one.

These tests stop, restart and SIGKILL their servers, so they never take a server from
``PURPOSE_AGENT_TEST_*_URL``: each module starts its own from the installed binaries (see
``tests/servers.py``), and each test gets a throwaway database on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import pytest
from sqlalchemy.engine import URL

from tests.servers import (
    LocalMariaDB,
    LocalPgBouncer,
    LocalPostgres,
    LocalServer,
    SynchronousPair,
    skipped,
    throwaway_database,
)


def _private(kind: type[LocalServer], backend: str) -> Iterator[LocalServer]:
    if backend in skipped():
        pytest.skip(f"PURPOSE_AGENT_TEST_SKIP names {backend}")
    if not kind.installed():
        pytest.skip(f"the {kind.name} binaries are not installed")
    with kind() as server:
        yield server


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[LocalServer]:
    """A PostgreSQL server of this module's own, which its tests may restart or kill."""
    yield from _private(LocalPostgres, "postgres")


@pytest.fixture(scope="module")
def private_mariadb() -> Iterator[LocalServer]:
    """A MariaDB server of this module's own, which its tests may restart or kill."""
    yield from _private(LocalMariaDB, "mariadb")


@pytest.fixture(scope="module")
def private_pgbouncer(private_postgres: LocalPostgres) -> Iterator[LocalPgBouncer]:
    """PgBouncer in transaction pooling mode in front of this module's Postgres."""
    # Not a backend of its own, so REQUIRE does not name it: a missing binary fails the run
    # unless PURPOSE_AGENT_TEST_SKIP names pgbouncer.
    if "pgbouncer" in skipped():
        pytest.skip("PURPOSE_AGENT_TEST_SKIP names pgbouncer")
    if not LocalPgBouncer.installed():
        pytest.fail(
            "pgbouncer is not installed: apt-get install -y pgbouncer "
            "(or PURPOSE_AGENT_TEST_SKIP=pgbouncer)",
            pytrace=False,
        )
    with LocalPgBouncer(private_postgres) as bouncer:
        yield bouncer


def _database(server: LocalServer) -> Iterator[URL]:
    with throwaway_database(server.url, "pa_rel") as url:
        try:
            yield url
        finally:
            if not server.running():  # a test that failed half-way may leave it stopped
                server.start()


@pytest.fixture
def postgres_db(private_postgres: LocalServer) -> Iterator[URL]:
    """An empty database on the private Postgres, dropped after the test."""
    yield from _database(private_postgres)


@pytest.fixture
def mariadb_db(private_mariadb: LocalServer) -> Iterator[URL]:
    """An empty database on the private MariaDB, dropped after the test."""
    yield from _database(private_mariadb)


class Private(NamedTuple):
    """A backend's private server, and a database of the test's own on it."""

    backend: str
    server: LocalServer
    url: URL


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def private(request: pytest.FixtureRequest) -> Private:
    """Each backend in turn: for a test that outages on either server must pass alike."""
    backend: str = request.param
    server = request.getfixturevalue(f"private_{backend}")
    return Private(backend, server, request.getfixturevalue(f"{backend}_db"))


@pytest.fixture
def sync_pair() -> Iterator[SynchronousPair]:
    """A primary with a synchronous hot standby, both this test's own: a failover ends the pair.

    A killed primary cannot rejoin as a standby without ``pg_rewind``, so every test that
    fails over gets a new pair (about three seconds to build).
    """
    if "postgres" in skipped():
        pytest.skip("PURPOSE_AGENT_TEST_SKIP names postgres")
    if not LocalPostgres.installed():
        pytest.skip("the postgres binaries are not installed")
    with SynchronousPair() as pair:
        yield pair
