"""Finding database servers for the tests, and giving each run its own throwaway database.

A server comes from ``PURPOSE_AGENT_TEST_<NAME>_URL`` first; without it, from a testcontainers
container where Docker answers; otherwise its tests skip with the reason, unless
``PURPOSE_AGENT_TEST_REQUIRE`` names it (as CI does), in which case they fail.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

SERVERS = ("postgres", "mariadb")


def required() -> set[str]:
    raw = os.environ.get("PURPOSE_AGENT_TEST_REQUIRE", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def server_url(name: str) -> Iterator[URL]:
    """Yield an admin URL for the named server, or skip (fail when required)."""
    env = os.environ.get(f"PURPOSE_AGENT_TEST_{name.upper()}_URL")
    if env:
        yield make_url(env)
        return
    if _docker_answers():
        if name == "postgres":
            from testcontainers.postgres import PostgresContainer

            with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
                yield make_url(container.get_connection_url())
            return
        from testcontainers.mysql import MySqlContainer

        with MySqlContainer("mariadb:11", username="root", password="test") as container:
            yield make_url(container.get_connection_url()).set(drivername="mysql+pymysql")
        return
    reason = f"no {name} server: set PURPOSE_AGENT_TEST_{name.upper()}_URL or make Docker available"
    if name in required():
        pytest.fail(f"{reason} (PURPOSE_AGENT_TEST_REQUIRE names {name})", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def throwaway_database(admin: URL, prefix: str = "pa_test") -> Iterator[URL]:
    """Create a database no other run can see, yield its URL, and drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    quoted = engine.dialect.identifier_preparer.quote(name)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        yield admin.set(database=name)
    finally:
        with engine.connect() as conn:
            force = " WITH (FORCE)" if engine.dialect.name == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}{force}")
        engine.dispose()
