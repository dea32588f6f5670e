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
from tests.servers import (
    LocalMariaDB,
    LocalPostgres,
    admin_connection,
    server_url,
    throwaway_database,
)

LOGIN = "the server refused the login: check the URL's user and password"
NO_DATABASE = "the URL's database does not exist on the server: create it (CREATE DATABASE)"
PRIVILEGE = "the URL's user lacks a privilege on the store's tables: grant SELECT, INSERT"
# What every connection limit's advice says to do, after naming the limit.
FEWER = (
    "each store opens up to 24 connections (8 kept, 16 more under load): give it "
    "a smaller pool (SQLCheckpointer(url, pool_size=4, max_overflow=4))"
)
PGBOUNCER = "put PgBouncer in front of the server (transaction pooling)"


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
        with admin_connection(admin) as conn:
            conn.exec_driver_sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY 'pw'")
        try:
            message = _refused(url.set(username=name, password="pw"))
        finally:
            with admin_connection(admin) as conn:
                conn.exec_driver_sql(f"DROP USER '{name}'@'%%'")
        assert f"Access denied for user '{name}'" in message
        assert PRIVILEGE in message


@pytest.mark.postgres
def test_a_postgres_role_without_privileges_is_told_what_to_grant() -> None:
    role = f"pa_role_{uuid.uuid4().hex[:8]}"
    with server_url("postgres") as admin, throwaway_database(admin, "pa_access") as url:
        SQLCheckpointer(url.render_as_string(hide_password=False)).close()  # the tables made
        with admin_connection(admin) as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        try:
            message = _refused(url.set(username=role, password=None))
        finally:
            with admin_connection(admin) as conn:
                conn.exec_driver_sql(f"DROP ROLE {role}")
        assert "permission denied" in message
        assert PRIVILEGE in message
        # libpq refuses a missing database without a SQLSTATE: its own words name the cause.
        missing = url.set(database=f"pa_missing_{uuid.uuid4().hex[:8]}")
        assert "does not exist" in _refused(missing)


# -- connection limits --------------------------------------------------------------------


@contextlib.contextmanager
def _held(url: URL, count: int = 1) -> Iterator[None]:
    """Hold ``count`` connections of ``url``'s user open, taking its slots."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(engine.connect())
        yield
    engine.dispose()


def _limit_advice(message: str, limit: str, raise_it: str, *, pooler: bool) -> None:
    """``message`` keeps the driver's line and adds one line of advice for ``limit``."""
    assert message.count("; ") == 1, message
    advice = message.split("; ")[1]
    assert advice.startswith(f"{limit} is reached, counting every process's connections: {FEWER}, ")
    assert (PGBOUNCER in advice) == pooler, advice
    assert advice.endswith(f"or raise the limit ({raise_it})"), advice


@pytest.mark.postgres
def test_postgres_role_and_database_connection_limits_say_what_to_do() -> None:
    role = f"pa_role_{uuid.uuid4().hex[:8]}"
    with server_url("postgres") as admin, throwaway_database(admin, "pa_limits") as url:
        with admin_connection(admin) as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" OWNER TO {role}')
        limited = url.set(username=role, password=None)
        try:
            SQLCheckpointer(limited.render_as_string(hide_password=False)).close()  # its tables
            with admin_connection(admin) as conn:
                conn.exec_driver_sql(f"ALTER ROLE {role} CONNECTION LIMIT 1")
            with _held(limited):
                message = _refused(limited)
            assert f'too many connections for role "{role}"' in message
            _limit_advice(
                message,
                "the role's CONNECTION LIMIT",
                "ALTER ROLE ... CONNECTION LIMIT",
                pooler=True,
            )
            # An open store whose pool needs one more connection is told the same.
            store = SQLCheckpointer(limited.render_as_string(hide_password=False))
            try:
                store.engine.pool.dispose()
                with _held(limited), pytest.raises(StoreUnavailable) as caught:
                    store.list_runs()
            finally:
                store.close()
            assert f'too many connections for role "{role}"' in str(caught.value)
            assert "the role's CONNECTION LIMIT is reached" in str(caught.value)
            with admin_connection(admin) as conn:
                conn.exec_driver_sql(f"ALTER ROLE {role} CONNECTION LIMIT -1")
                conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" CONNECTION LIMIT 1')
            with _held(limited):
                message = _refused(limited)
            assert f'too many connections for database "{url.database}"' in message
            _limit_advice(
                message,
                "the database's CONNECTION LIMIT",
                "ALTER DATABASE ... CONNECTION LIMIT",
                pooler=True,
            )
        finally:
            with admin_connection(admin) as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
                conn.exec_driver_sql(f"DROP ROLE {role}")


@pytest.mark.mariadb
def test_mariadb_user_connection_limit_says_what_to_do() -> None:
    name = f"pa_user_{uuid.uuid4().hex[:8]}"
    with server_url("mariadb") as admin, throwaway_database(admin, "pa_limits") as url:
        with admin_connection(admin) as conn:
            conn.exec_driver_sql(
                f"CREATE USER '{name}'@'%%' IDENTIFIED BY 'pw' WITH MAX_USER_CONNECTIONS 1"
            )
            conn.exec_driver_sql(f"GRANT ALL ON `{url.database}`.* TO '{name}'@'%%'")
        limited = url.set(username=name, password="pw")
        try:
            SQLCheckpointer(limited.render_as_string(hide_password=False)).close()
            with _held(limited):
                message = _refused(limited)
        finally:
            with admin_connection(admin) as conn:
                conn.exec_driver_sql(f"DROP USER '{name}'@'%%'")
        assert f"User '{name}' has exceeded the 'max_user_connections' resource" in message
        _limit_advice(
            message,
            "the user's MAX_USER_CONNECTIONS",
            "ALTER USER ... WITH MAX_USER_CONNECTIONS",
            pooler=False,
        )


@pytest.mark.postgres
@pytest.mark.skipif(not LocalPostgres.installed(), reason="no PostgreSQL binaries")
def test_a_postgres_server_out_of_slots_says_what_to_do() -> None:
    # 12 slots, 3 of them kept for superusers.
    settings = {"max_connections": "12", "superuser_reserved_connections": "3"}
    with LocalPostgres(settings) as server:
        admin = server.url
        with admin_connection(admin) as conn:
            conn.exec_driver_sql("CREATE ROLE app LOGIN")
            conn.exec_driver_sql("CREATE DATABASE store OWNER app")
        app = admin.set(username="app", database="store")
        SQLCheckpointer(app.render_as_string(hide_password=False)).close()
        with _held(app, 9):
            message = _refused(app)
            assert "remaining connection slots are reserved" in message
            _limit_advice(
                message,
                "the server's max_connections, less the slots it keeps for superusers,",
                "max_connections, which takes a restart",
                pooler=True,
            )
            with _held(admin.set(database="store"), 3):
                message = _refused(admin.set(database="store"))
        assert "sorry, too many clients already" in message
        _limit_advice(
            message,
            "the server's max_connections",
            "max_connections, which takes a restart",
            pooler=True,
        )


@pytest.mark.mariadb
@pytest.mark.skipif(not LocalMariaDB.installed(), reason="no MariaDB binaries")
def test_a_mariadb_server_out_of_connections_says_what_to_do() -> None:
    with LocalMariaDB({"max-user-connections": "1"}) as server:
        admin = server.url
        with admin_connection(admin) as conn:
            conn.exec_driver_sql("CREATE DATABASE store")
            conn.exec_driver_sql("CREATE USER 'app'@'%%' IDENTIFIED BY 'pw'")
            conn.exec_driver_sql("GRANT ALL ON store.* TO 'app'@'%%'")
        app = admin.set(username="app", password="pw", database="store")
        SQLCheckpointer(app.render_as_string(hide_password=False)).close()
        with _held(app):
            message = _refused(app)
        assert "User app already has more than 'max_user_connections'" in message
        _limit_advice(
            message,
            "the server's max_user_connections, for each user,",
            "max_user_connections, or ALTER USER ... WITH MAX_USER_CONNECTIONS",
            pooler=False,
        )
        with admin_connection(admin) as conn:
            # A private server: its global limits are this test's to set.
            conn.exec_driver_sql("SET GLOBAL max_user_connections = 100")
            conn.exec_driver_sql("SET GLOBAL max_connections = 10")
        with _held(app, 10):
            message = _refused(app)
        assert "Too many connections" in message
        _limit_advice(
            message,
            "the server's max_connections",
            "max_connections",
            pooler=False,
        )
