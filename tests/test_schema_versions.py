"""Schema versions: every hint names a command that works where the package is installed."""

from __future__ import annotations

import os
import pickle
import sqlite3
from pathlib import Path

import pytest

import purpose_agent
from purpose_agent import SchemaNotCurrent, SQLCheckpointer
from purpose_agent.db import migrate
from purpose_agent.errors import SeedFormatDatabase
from tests.test_cli_copy import _write_seed_sqlite
from tests.test_cli_support import run_python_module


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
