"""Schema versions: every hint names a command that works where the package is installed."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import make_url

import purpose_agent
from purpose_agent import AsyncSQLCheckpointer, NewEvent, SchemaNotCurrent, SQLCheckpointer
from purpose_agent.db import migrate
from purpose_agent.db.engine import make_engine
from purpose_agent.errors import SchemaDamaged, SchemaMissing, SeedFormatDatabase
from tests.test_cli_copy import _write_seed_sqlite
from tests.test_cli_support import invoke, run_python_module


def test_schema_not_current_keeps_its_command_through_pickling() -> None:
    error = SchemaNotCurrent("0001", "0002", "purpose-agent db upgrade --url sqlite:///x.db")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.found, copy.needed, copy.command) == ("0001", "0002", error.command)
    assert str(copy) == str(error)


def test_a_schema_hint_names_only_a_command_a_wheel_install_has() -> None:
    behind = migrate.not_current(None)
    assert behind.command == "purpose-agent db upgrade"
    assert "alembic" not in str(behind)
    newer = migrate.not_current("ffffffffffff")
    assert newer.command == "pip install --upgrade purpose-agent"
    assert "alembic" not in str(newer)


# Options with an ``&`` between them: a shell given the URL unquoted would end the command there.
_OPTIONS = {
    "sqlite": {"timeout": "10", "check_same_thread": "false"},
    "postgresql": {"application_name": "pa-hint", "connect_timeout": "10"},
    "mysql": {"charset": "utf8mb4", "connect_timeout": "10"},
    "mariadb": {"charset": "utf8mb4", "connect_timeout": "10"},
}


def test_the_library_names_the_upgrade_of_the_database_it_was_opened_on(
    empty_database: str, tmp_path: Path
) -> None:
    parsed = make_url(empty_database)
    url = parsed.update_query_dict(_OPTIONS[parsed.get_backend_name()])
    with pytest.raises(SchemaNotCurrent) as caught:
        SQLCheckpointer(url.render_as_string(hide_password=False), migrate=False)
    command = caught.value.command
    assert f"run `{command}`" in str(caught.value)
    # The URL quoted: a shell would end the command at its "&".
    shown = url.render_as_string(hide_password=True)
    assert command == f"purpose-agent db upgrade --url {shlex.quote(shown)}"
    if url.password:
        assert str(url.password) not in str(caught.value)
        command = command.replace(":***@", f":{url.password}@")
    # Pasted into a shell where the default database is another one, the command upgrades
    # this database, and only this one.
    elsewhere = tmp_path / "elsewhere.db"
    env = {**os.environ, "PURPOSE_AGENT_DB_URL": f"sqlite:///{elsewhere}"}
    program = f"{shlex.quote(sys.executable)} -m purpose_agent"
    done = subprocess.run(
        command.replace("purpose-agent", program, 1),
        shell=True,  # a shell, as the user who pastes the command runs it
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "upgraded from none (never migrated)" in done.stdout
    SQLCheckpointer(url.render_as_string(hide_password=False), migrate=False).close()
    assert not elsewhere.exists()


def _damage(url: str, statements: list[str]) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _on_table(url: str, index: str, table: str) -> str:
    """``DROP INDEX`` as the backend spells it (MariaDB names the table too)."""
    return f"DROP INDEX {index}" + (f" ON {table}" if url.startswith("mariadb") else "")


@pytest.mark.parametrize(
    ("damage", "lacks"),
    [
        ("key index", "index uq_pa_events_run_id_key on pa_events"),
        ("group column", "column pa_runs.group_id, index ix_pa_runs_group_id_updated_ns"),
        ("runs table", "table pa_runs"),
    ],
)
def test_a_schema_damaged_at_head_is_named_and_made_again_by_the_upgrade(
    empty_database: str, damage: str, lacks: str
) -> None:
    """A table, column or index dropped by hand, the version row left at head.

    Before, ``db check`` called the schema current and ``db upgrade`` "already at revision
    0003" while the store failed on the table (naming that same upgrade), or, without the key
    index, a retried keyed append appended a second event.
    """
    url = empty_database
    with SQLCheckpointer(url) as store:
        store.append("kept", [NewEvent(kind="tool_call", key="k")])
        store.append("other", [NewEvent(kind="tool_call")] * 2)
    _damage(
        url,
        {
            "key index": [_on_table(url, "uq_pa_events_run_id_key", "pa_events")],
            "group column": [
                _on_table(url, "ix_pa_runs_group_id_updated_ns", "pa_runs"),
                "ALTER TABLE pa_runs DROP COLUMN group_id",
            ],
            "runs table": ["DROP TABLE pa_runs"],
        }[damage],
    )
    command = migrate.upgrade_command(make_url(url))
    with pytest.raises(SchemaDamaged) as refused:
        SQLCheckpointer(url, migrate=False)
    assert isinstance(refused.value, SchemaNotCurrent)
    assert f"at revision 0003 but lacks {lacks}" in str(refused.value), str(refused.value)
    assert str(refused.value).endswith(f"run `{command}`")
    checked = invoke("db", "check", "--url", url)
    assert checked.exit_code == 1
    assert f"lacks {lacks}" in checked.output, checked.output
    current = invoke("db", "current", "--url", url)
    assert f"It lacks {lacks}" in current.output, current.output
    status = json.loads(invoke("db", "check", "--json", "--url", url).stdout)
    assert (status["ok"], status["at_head"]) == (False, True)
    assert ", ".join(status["missing"]).startswith(lacks), status
    upgraded = invoke("db", "upgrade", "--url", url)
    assert upgraded.exit_code == 0, upgraded.output
    assert f"made again {lacks}" in upgraded.output, upgraded.output
    assert invoke("db", "check", "--url", url).exit_code == 0
    with SQLCheckpointer(url, migrate=False) as store:
        assert sorted(store.list_runs()) == ["kept", "other"]
        retried = store.append("kept", [NewEvent(kind="tool_call", key="k")])
        assert [event.seq for event in retried] == [1]
        assert [event.seq for event in store.append("other", [NewEvent(kind="custom")])] == [3]
        assert [event.seq for event in store.list_events("kept")] == [1]
        store.append("grouped", [NewEvent(kind="tool_call")], group="g")
        assert store.list_runs(group="g") == ["grouped"]


def test_a_store_opened_to_migrate_makes_a_dropped_index_again(empty_database: str) -> None:
    url = empty_database
    with SQLCheckpointer(url) as store:
        store.append("kept", [NewEvent(kind="tool_call", key="k")])
    _damage(url, [_on_table(url, "uq_pa_events_run_id_key", "pa_events")])
    with SQLCheckpointer(url) as store:
        assert store.append("kept", [NewEvent(kind="tool_call", key="k")])[0].seq == 1
        assert [event.seq for event in store.list_events("kept")] == [1]
    SQLCheckpointer(url, migrate=False).close()


@pytest.mark.parametrize(
    ("revision", "damage"),
    [("0002", "key index"), ("0001", "runs table"), ("0002", "snapshots table")],
)
def test_an_older_schema_with_a_part_dropped_is_upgraded_and_made_whole(
    empty_database: str, revision: str, damage: str
) -> None:
    """Before, 0003 failed for good on the dropped key index (`no such index`, `index ...
    does not exist`), and 0002 on the dropped runs table with the bare name `pa_runs`."""
    url = empty_database
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        migrate.upgrade(engine, revision)
    finally:
        engine.dispose()
    _damage(
        url,
        [
            "INSERT INTO pa_events (run_id, seq, kind, ts, lane_id, data)"
            " VALUES ('kept', 1, 'tool_call', 1.5, 'main', '{}')",
            "INSERT INTO pa_runs (run_id, created_ns, updated_ns, last_seq)"
            " VALUES ('kept', 1500000000, 1500000000, 1)",
        ],
    )
    _damage(
        url,
        {
            "key index": [_on_table(url, "uq_pa_events_run_id_key", "pa_events")],
            "runs table": ["DROP TABLE pa_runs"],
            "snapshots table": ["DROP TABLE pa_snapshots"],
        }[damage],
    )
    upgraded = invoke("db", "upgrade", "--url", url)
    assert upgraded.exit_code == 0, upgraded.output
    assert invoke("db", "check", "--url", url).exit_code == 0
    with SQLCheckpointer(url, migrate=False) as store:
        assert store.list_runs() == ["kept"]
        placed = store.append("kept", [NewEvent(kind="tool_call", key="k")])
        assert [event.seq for event in placed] == [2]
        assert store.append("kept", [NewEvent(kind="tool_call", key="k")]) == placed
        assert [event.seq for event in store.list_events("kept")] == [1, 2]


class _Stopped(Exception):
    """Stands for the process dying at this statement."""


def test_a_runs_table_remade_part_way_is_remade_whole_by_the_next_upgrade(
    empty_database: str,
) -> None:
    """The upgrade that makes pa_runs again stops as it fills it (a deploy killed).

    MariaDB commits a CREATE TABLE as it runs: the table stayed, empty, and the next upgrade
    found nothing missing; every run disappeared from list_runs and appends restarted at
    seq 1 (SequenceConflict on each run).
    """
    url = empty_database
    with SQLCheckpointer(url) as store:
        store.append("kept", [NewEvent(kind="tool_call")] * 2)
    _damage(url, ["DROP TABLE pa_runs"])
    engine = make_engine(url, poolclass=sa.pool.NullPool)

    def die(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if " ".join(statement.split()).upper().startswith("INSERT INTO PA_RUNS"):
            raise _Stopped(statement)

    sa.event.listen(engine, "before_cursor_execute", die)
    try:
        with pytest.raises(_Stopped):
            migrate.upgrade(engine)
    finally:
        engine.dispose()
    upgraded = invoke("db", "upgrade", "--url", url)
    assert upgraded.exit_code == 0, upgraded.output
    with SQLCheckpointer(url, migrate=False) as store:
        assert store.list_runs() == ["kept"]
        assert [event.seq for event in store.append("kept", [NewEvent(kind="custom")])] == [3]


@pytest.mark.postgres
def test_tables_found_through_the_search_path_are_not_called_missing(
    postgres_url: sa.URL,
) -> None:
    """The tables in ``public``, and an empty schema named after the user before it on the
    search path (``"$user", public``): it is ``current_schema()``, not where they are."""
    from tests.servers import throwaway_database

    with throwaway_database(postgres_url, "pa_user_schema") as server:
        url = server.render_as_string(hide_password=False)
        with SQLCheckpointer(url) as store:
            store.append("kept", [NewEvent(kind="tool_call")])
        _damage(url, [f'CREATE SCHEMA "{server.username}"'])
        with SQLCheckpointer(url, migrate=False) as store:
            assert store.list_runs() == ["kept"]
        assert invoke("db", "check", "--url", url).exit_code == 0


def test_a_column_every_row_needs_is_not_made_up(empty_database: str) -> None:
    url = empty_database
    with SQLCheckpointer(url) as store:
        store.append("kept", [NewEvent(kind="tool_call")])
    _damage(url, ["ALTER TABLE pa_runs DROP COLUMN created_ns"])
    for migrating in (True, False):
        with pytest.raises(SchemaDamaged) as refused:
            SQLCheckpointer(url, migrate=migrating)
        assert "lacks column pa_runs.created_ns" in str(refused.value), str(refused.value)
    upgraded = invoke("db", "upgrade", "--url", url)
    assert upgraded.exit_code == 1
    assert "lacks column pa_runs.created_ns" in upgraded.output, upgraded.output
    assert "from a backup" in upgraded.output, upgraded.output


@pytest.mark.sqlite
def test_a_database_a_newer_version_migrated_is_refused_with_the_upgrade_of_the_package(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    SQLCheckpointer(url).close()
    store = SQLCheckpointer(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'ffffffffffff'")
    store.close()
    for migrating in (True, False):
        with pytest.raises(SchemaNotCurrent) as caught:
            SQLCheckpointer(url, migrate=migrating)
        assert caught.value.found == "ffffffffffff"
        assert caught.value.command == "pip install --upgrade purpose-agent"


@pytest.mark.sqlite
def test_plain_alembic_with_only_a_script_location_upgrades_a_database(tmp_path: Path) -> None:
    # A deploy points plain `alembic` at the installed package with a one-line ini; the wheel
    # holds the revisions as purpose_agent/migrations (a checkout has them at alembic/).
    shipped = Path(purpose_agent.__file__).parent / "migrations"
    location = "purpose_agent:migrations" if shipped.is_dir() else str(migrate.script_location())
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {location}\n")
    url = f"sqlite:///{tmp_path / 'deployed.db'}"
    env = {**os.environ, "PURPOSE_AGENT_DB_URL": url}
    done = run_python_module("alembic", "-c", str(ini), "upgrade", "head", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    current = run_python_module("alembic", "-c", str(ini), "current", cwd=tmp_path, env=env)
    assert migrate.head_revision() in current.stdout
    SQLCheckpointer(url, migrate=False).close()  # at head: opens without migrating


@pytest.mark.sqlite
def test_a_seed_era_sqlite_file_is_refused_with_the_import_that_keeps_its_runs(
    tmp_path: Path,
) -> None:
    seed = tmp_path / "seed.db"
    _write_seed_sqlite(seed, [("one", seq, "tool_call", {"i": seq}) for seq in (1, 2)], {})
    with pytest.raises(SeedFormatDatabase) as caught:
        SQLCheckpointer(f"sqlite:///{seed}")
    assert isinstance(caught.value, SchemaNotCurrent)
    assert caught.value.command == f"purpose-agent copy seed-sqlite:{seed} sqlite:///{seed}"
    assert caught.value.command in str(caught.value)
    tables = {row[0] for row in sqlite3.connect(seed).execute("SELECT name FROM sqlite_master")}
    assert not {name for name in tables if name.startswith("pa_")}  # refused before adding any
    # The command it names imports the runs in place, and the file then opens as usual.
    done = run_python_module(
        "purpose_agent", *caught.value.command.split()[1:], cwd=tmp_path, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    with SQLCheckpointer(f"sqlite:///{seed}") as store:
        assert store.list_runs() == ["one"]
        assert [event.data for event in store.list_events("one")] == [{"i": 1}, {"i": 2}]


def _tables_dropped(url: str) -> None:
    """The database dropped and created again (a server), or the tables dropped (SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(parsed.database or "") as conn:
            for name in ("pa_events", "pa_snapshots", "pa_runs", "pa_alembic_version"):
                conn.execute(f"DROP TABLE {name}")
        return
    admin = sa.create_engine(
        parsed.set(database="postgres" if parsed.get_backend_name() == "postgresql" else None),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    force = " WITH (FORCE)" if parsed.get_backend_name() == "postgresql" else ""
    quoted = admin.dialect.identifier_preparer.quote(parsed.database or "")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {quoted}{force}")
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    finally:
        admin.dispose()


def test_tables_dropped_under_an_open_store_name_the_upgrade(empty_database: str) -> None:
    """It was the driver's "relation "pa_runs" does not exist" (Postgres), "Table ... doesn't
    exist" (MariaDB) or "no such table" (SQLite) as StoreUnavailable, an outage to wait out."""
    url = empty_database
    command = migrate.upgrade_command(make_url(url))
    with SQLCheckpointer(url) as store:
        store.append("r", [NewEvent(kind="tool_call")])
        _tables_dropped(url)
        with pytest.raises(SchemaMissing) as missing:
            store.load_latest("r")
        assert isinstance(missing.value, SchemaNotCurrent)
        assert str(missing.value).startswith("the store's tables are missing from ")
        assert str(missing.value).endswith(f"run `{command}`")
        with pytest.raises(SchemaMissing):
            store.append("r", [NewEvent(kind="tool_call")])
        copy = pickle.loads(pickle.dumps(missing.value))
        assert (str(copy), copy.command) == (str(missing.value), command)
        # The command it names brings the store back, open as it is.
        upgraded = invoke("db", "upgrade", "--url", url)
        assert upgraded.exit_code == 0, upgraded.output
        assert [event.seq for event in store.append("r", [NewEvent(kind="tool_call")])] == [1]


@pytest.mark.sqlite
def test_an_async_store_names_an_upgrade_command_that_runs(tmp_path: Path) -> None:
    """It named the asyncio driver's URL (sqlite+aiosqlite://), which `purpose-agent db
    upgrade` refuses: "aiosqlite is an asyncio driver"."""
    url = f"sqlite:///{tmp_path / 'async.db'}"
    SQLCheckpointer(url).close()
    _tables_dropped(url)

    async def refused() -> SchemaNotCurrent:
        with pytest.raises(SchemaNotCurrent) as caught:
            await AsyncSQLCheckpointer.open(url, migrate=False)
        return caught.value

    error = asyncio.run(refused())
    assert error.command == f"purpose-agent db upgrade --url {url}"
    assert invoke("db", "upgrade", "--url", url).exit_code == 0

    async def dropped_under() -> SchemaMissing:
        async with await AsyncSQLCheckpointer.open(url) as store:
            _tables_dropped(url)
            with pytest.raises(SchemaMissing) as caught:
                await store.load_latest("r")
            return caught.value

    assert asyncio.run(dropped_under()).command == f"purpose-agent db upgrade --url {url}"


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("sqlite+aiosqlite:////srv/a.db", "sqlite:////srv/a.db"),
        ("mysql+aiomysql://app:pw@db/agents", "mysql+pymysql://app:***@db/agents"),
        ("mariadb+aiomysql://app@db/agents", "mariadb+pymysql://app@db/agents"),
        ("postgresql+psycopg://app@db/agents", "postgresql+psycopg://app@db/agents"),
    ],
)
def test_the_upgrade_command_names_the_synchronous_driver(given: str, named: str) -> None:
    command = migrate.upgrade_command(make_url(given))
    assert command == f"purpose-agent db upgrade --url {shlex.quote(named)}"
