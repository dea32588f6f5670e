"""Errors of a server's setup (a login refused, a database missing, a privilege lacking) say
what to do, since waiting, as for an outage, does not fix them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import SQLCheckpointer, StoreUnavailable
from tests.servers import server_url, throwaway_database

LOGIN = "the server refused the login: check the URL's user and password"
NO_DATABASE = "the URL's database does not exist on the server: create it (CREATE DATABASE)"
PRIVILEGE = "the URL's user lacks a privilege on the store's tables: grant SELECT, INSERT"


@contextlib.contextmanager
def _admin(admin: URL) -> Iterator[sa.Connection]:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _refused(url: URL) -> str:
    with pytest.raises(StoreUnavailable) as caught:
        SQLCheckpointer(url.render_as_string(hide_password=False))
    return str(caught.value)


@pytest.mark.mariadb
def test_mariadb_login_database_and_privilege_errors_say_what_to_do() -> None:
    name = f"pa_user_{uuid.uuid4().hex[:8]}"
    with server_url("mariadb") as admin, throwaway_database(admin, "pa_access") as url:
        assert _refused(url.set(username=name, password="wrong")).endswith(LOGIN)
        missing = url.set(database=f"pa_missing_{uuid.uuid4().hex[:8]}")
        assert f"{NO_DATABASE}, and the store creates its tables in it" in _refused(missing)
        with _admin(admin) as conn:
            conn.exec_driver_sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY 'pw'")
        try:
            message = _refused(url.set(username=name, password="pw"))
        finally:
            with _admin(admin) as conn:
                conn.exec_driver_sql(f"DROP USER '{name}'@'%%'")
        assert f"Access denied for user '{name}'" in message
        assert PRIVILEGE in message


@pytest.mark.postgres
def test_a_postgres_role_without_privileges_is_told_what_to_grant() -> None:
    role = f"pa_role_{uuid.uuid4().hex[:8]}"
    with server_url("postgres") as admin, throwaway_database(admin, "pa_access") as url:
        SQLCheckpointer(url.render_as_string(hide_password=False)).close()  # the tables made
        with _admin(admin) as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        try:
            message = _refused(url.set(username=role, password=None))
        finally:
            with _admin(admin) as conn:
                conn.exec_driver_sql(f"DROP ROLE {role}")
        assert "permission denied" in message
        assert PRIVILEGE in message
        # libpq refuses a missing database without a SQLSTATE: its own words name the cause.
        missing = url.set(database=f"pa_missing_{uuid.uuid4().hex[:8]}")
        assert "does not exist" in _refused(missing)
