"""The schema's lifecycle: Alembic revisions, checks on open, and concurrent upgrades."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from pytest_alembic import MigrationContext as AlembicRunner
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from purpose_agent import SchemaNotCurrent, SQLCheckpointer
from purpose_agent.db import migrate
from purpose_agent.db.engine import make_engine
from purpose_agent.testing.samples import ev
from tests.conftest import table_names
from tests.test_cli_support import run_python_module

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def alembic_config() -> object:
    return migrate.alembic_config()


@pytest.fixture
def alembic_engine(empty_database: str) -> object:
    engine = make_engine(empty_database, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def test_opening_migrates_an_empty_database_to_head(empty_database: str) -> None:
    with SQLCheckpointer(empty_database) as store, store.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
    assert {"pa_events", "pa_snapshots", "pa_runs", "pa_alembic_version"} <= table_names(
        empty_database
    )


def test_migrate_false_refuses_an_empty_database_and_names_the_fix(empty_database: str) -> None:
    with pytest.raises(SchemaNotCurrent) as info:
        SQLCheckpointer(empty_database, migrate=False)
    assert info.value.found is None
    assert info.value.needed == migrate.head_revision()
    assert "purpose-agent db upgrade" in str(info.value)
    assert "pa_events" not in table_names(empty_database)


def test_migrate_false_refuses_a_downgraded_database(empty_database: str) -> None:
    SQLCheckpointer(empty_database).close()
    engine = make_engine(empty_database, poolclass=sa.pool.NullPool)
    migrate.downgrade(engine, "base")
    engine.dispose()
    with pytest.raises(SchemaNotCurrent):
        SQLCheckpointer(empty_database, migrate=False)
    with SQLCheckpointer(empty_database) as store:  # and migrate=True brings it back
        store.save_event(ev("r", 1))
        assert store.list_events("r") == [ev("r", 1)]


def test_migrate_false_accepts_a_current_database(empty_database: str) -> None:
    SQLCheckpointer(empty_database).close()
    with SQLCheckpointer(empty_database, migrate=False) as store:
        store.save_event(ev("r", 1))
        assert store.list_runs() == ["r"]


def test_database_from_a_newer_version_is_refused(empty_database: str) -> None:
    SQLCheckpointer(empty_database).close()
    engine = sa.create_engine(empty_database, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'from_the_future'"))
    engine.dispose()
    for allowed in (True, False):
        with pytest.raises(SchemaNotCurrent) as info:
            SQLCheckpointer(empty_database, migrate=allowed)
        assert info.value.found == "from_the_future"


def _open_and_write(url: str, worker: int) -> str:
    with SQLCheckpointer(url) as store:
        store.save_event(ev(f"run-{worker}", 1))
        with store.engine.connect() as conn:
            return str(migrate.current_revision(conn))


def test_processes_opening_an_empty_database_at_once_migrate_it_once(empty_database: str) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        revisions = pool.starmap(_open_and_write, [(empty_database, w) for w in range(4)])
    assert revisions == [migrate.head_revision()] * 4
    with SQLCheckpointer(empty_database, migrate=False) as store:
        assert sorted(store.list_runs()) == [f"run-{w}" for w in range(4)]


def _alembic(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PURPOSE_AGENT_DB_URL": url}
    return run_python_module("alembic", *args, cwd=REPO, env=env)


def test_alembic_command_line_upgrades_and_downgrades_from_the_repository(
    empty_database: str,
) -> None:
    up = _alembic("upgrade", "head", url=empty_database)
    assert up.returncode == 0, up.stderr
    assert "pa_events" in table_names(empty_database)
    current = _alembic("current", url=empty_database)
    assert migrate.head_revision() in current.stdout
    with SQLCheckpointer(empty_database, migrate=False) as store:
        store.save_event(ev("r", 1))
    down = _alembic("downgrade", "base", url=empty_database)
    assert down.returncode == 0, down.stderr
    assert not {"pa_events", "pa_snapshots", "pa_runs"} & table_names(empty_database)


def test_alembic_x_url_wins_over_the_environment(empty_database: str, tmp_path: Path) -> None:
    decoy = f"sqlite:///{tmp_path / 'decoy.db'}"
    result = _alembic("-x", f"url={empty_database}", "upgrade", "head", url=decoy)
    assert result.returncode == 0, result.stderr
    assert "pa_events" in table_names(empty_database)
    assert not (tmp_path / "decoy.db").exists() or "pa_events" not in table_names(decoy)


@pytest.mark.mariadb
def test_alembic_command_line_refused_by_the_server_says_why_in_one_line(
    mariadb_url: sa.URL,
) -> None:
    """A login the server refuses, and a server that is not there.

    Before, `alembic upgrade head` printed the driver's stack trace (130 to 160 lines).
    """
    from tests.servers import free_port

    refused = mariadb_url.set(username="pa_no_such_user", password="s3cret-pw", database="x")
    absent = f"postgresql+psycopg://app:s3cret-pw@127.0.0.1:{free_port()}/x"
    for url, said in (
        (refused.render_as_string(hide_password=False), "the server refused the login"),
        (absent, "Connection refused"),
    ):
        result = _alembic("upgrade", "head", url=url)
        assert result.returncode != 0  # alembic's own status for FAILED: 255
        shown = result.stdout + result.stderr
        assert "Traceback" not in shown, shown
        failed = [line for line in shown.splitlines() if line.startswith("FAILED:")]
        assert len(failed) == 1, shown
        assert said in failed[0], failed[0]
        assert "s3cret-pw" not in shown
        assert ":***@" in failed[0], failed[0]


@pytest.mark.sqlite
@pytest.mark.parametrize("command", [("upgrade", "head"), ("downgrade", "0002")])
def test_alembic_on_a_schema_a_newer_version_wrote_names_the_package_upgrade(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Alembic said only "Can't locate revision identified by '0099'": the revision is a
    newer release's, and the fix is upgrading the package, as the store's own error says."""
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    SQLCheckpointer(url).close()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    result = _alembic(*command, url=url)
    assert result.returncode != 0
    failed = [line for line in (result.stdout + result.stderr).splitlines() if "FAILED" in line]
    assert failed == [f"FAILED: {migrate.not_current('0099')}"], result.stderr
    assert "pip install --upgrade purpose-agent" in failed[0]
    stamped = _alembic("stamp", "head", "--purge", url=url)  # the operator's way back
    assert stamped.returncode == 0, stamped.stderr
    assert migrate.head_revision() in _alembic("current", url=url).stdout


def _linear_history(script: ScriptDirectory) -> list[str]:
    """The revisions from base to head, failing unless they form one unbroken line."""
    try:
        heads, bases = script.get_heads(), script.get_bases()
    except (KeyError, CommandError, RevisionError) as exc:
        raise AssertionError(f"a revision's parent is missing: {exc!r}") from exc
    assert len(heads) == 1, f"the history forks into heads {sorted(heads)}"
    assert len(bases) == 1, f"the history starts from bases {sorted(bases)}"
    line: list[str] = []
    current: str | None = heads[0]
    while current is not None:
        revision = script.get_revision(current)
        assert revision is not None
        down = revision.down_revision
        assert down is None or isinstance(down, str), f"{current} merges branches {down}"
        line.append(current)
        current = down
    line.reverse()
    off_the_line = {revision.revision for revision in script.walk_revisions()} - set(line)
    assert not off_the_line, f"revisions off the line from base to head: {off_the_line}"
    files = list(Path(script.versions).glob("*.py"))
    assert len(files) == len(line), f"{len(files)} revision files, {len(line)} on the line"
    return line


def test_the_head_the_package_checks_is_the_last_shipped_revision() -> None:
    shipped = ScriptDirectory.from_config(migrate.alembic_config())
    assert shipped.get_current_head() == migrate.HEAD


_OPEN_AND_LIST_IMPORTS = """
import sys
from purpose_agent import SQLCheckpointer
with SQLCheckpointer(sys.argv[1]) as store:
    store.list_runs()
print(sorted({name.split(".")[0] for name in sys.modules if name.startswith("alembic")}))
"""


def test_opening_a_store_at_head_leaves_alembic_unimported(
    empty_database: str, tmp_path: Path
) -> None:
    """A store at head checks its revision with one query; Alembic is imported to migrate."""

    def imported() -> str:
        done = subprocess.run(  # the package as installed, run outside the checkout
            [sys.executable, "-c", _OPEN_AND_LIST_IMPORTS, empty_database],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.strip()

    assert imported() == "['alembic']"  # an empty database: migrated
    assert imported() == "[]"  # at head
    engine = make_engine(empty_database, poolclass=sa.pool.NullPool)
    try:
        migrate.downgrade(engine, "0002")
    finally:
        engine.dispose()
    assert imported() == "['alembic']"  # behind: migrated again
    with SQLCheckpointer(empty_database, migrate=False) as store, store.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.HEAD


def test_runner_sees_one_linear_history(alembic_runner: AlembicRunner) -> None:
    line = _linear_history(ScriptDirectory.from_config(migrate.alembic_config()))
    assert line[-1] == migrate.head_revision()
    assert alembic_runner.history.revisions == ["base", *line, "heads"]


BROKEN_HISTORIES = {
    "two_heads": [("0001", None), ("0002", "0001"), ("0002b", "0001")],
    "merged_fork": [("0001", None), ("0002", "0001"), ("0002b", "0001"), ("0003", "0002 0002b")],
    "second_base": [("0001", None), ("0002", "0001"), ("0001b", None), ("0002b", "0001b")],
    "missing_parent": [("0001", None), ("0003", "0002")],
}


@pytest.mark.filterwarnings("ignore:Revision .* is not present:UserWarning")
@pytest.mark.parametrize("name", list(BROKEN_HISTORIES))
def test_linear_history_check_fails_on_a_fork_or_a_gap(tmp_path: Path, name: str) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for revision, down in BROKEN_HISTORIES[name]:
        parents = tuple(down.split()) if down and " " in down else down
        (versions / f"{revision}_step.py").write_text(
            f"revision = {revision!r}\ndown_revision = {parents!r}\n"
        )
    with pytest.raises(AssertionError):
        _linear_history(ScriptDirectory(str(tmp_path)))


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_a_migration_held_on_one_database_does_not_hold_another_on_the_same_server(
    server: str,
) -> None:
    """One server, two databases (two tenants, or a deploy and a test run).

    MariaDB's lock names are the server's: a migration holding the lock on one database,
    or waiting on it, held every other database's migrations (and their stores' opening) up
    to its 600 s wait.
    """
    import threading

    from purpose_agent.db.transactions import migration_lock
    from tests.servers import server_url, throwaway_database

    with (
        server_url(server) as admin,
        throwaway_database(admin, "pa_lock_a") as first,
        throwaway_database(admin, "pa_lock_b") as second,
    ):
        holder = make_engine(first)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with migration_lock(holder):
                held.set()
                release.wait(300)

        holding = threading.Thread(target=hold)
        holding.start()
        opened: list[bool] = []
        try:
            assert held.wait(60)
            opener = threading.Thread(
                target=lambda: opened.append(bool(SQLCheckpointer(second).close() is None))
            )
            opener.start()
            opener.join(120)  # far beyond a migration of an empty database
            assert opened == [True]
        finally:
            release.set()
            holding.join(60)
            holder.dispose()
        with SQLCheckpointer(first) as store:  # the first database migrates once released
            store.save_event(ev("after", 1))


@pytest.mark.parametrize("migrating", [True, False], ids=["migrate", "check"])
def test_a_version_table_with_several_revisions_is_refused_naming_them(
    empty_database: str, migrating: bool
) -> None:
    from tests.test_cli_support import invoke

    with SQLCheckpointer(empty_database) as store:
        store.save_event(ev("kept", 1))
    engine = sa.create_engine(empty_database, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO pa_alembic_version (version_num) VALUES ('0002')"))
    engine.dispose()
    with pytest.raises(SchemaNotCurrent) as raised:
        SQLCheckpointer(empty_database, migrate=migrating)
    message = str(raised.value)
    assert "several revisions (0002, 0003)" in message, message
    assert "DELETE FROM pa_alembic_version WHERE version_num <> " in message, message
    for command in ("current", "check", "upgrade"):
        result = invoke("db", command, "--url", empty_database)
        assert result.exit_code != 0
        assert "several revisions (0002, 0003)" in result.output, result.output
        assert "unexpected" not in result.output, result.output
    engine = sa.create_engine(empty_database, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM pa_alembic_version WHERE version_num <> '0003'"))
    engine.dispose()
    with SQLCheckpointer(empty_database, migrate=False) as store:  # the fix it names works
        assert [e.seq for e in store.list_events("kept")] == [1]


@pytest.mark.mariadb
def test_a_migration_that_fails_on_a_broken_connection_raises_its_own_error_and_frees_the_lock(
    mariadb_url: sa.URL,
) -> None:
    """A migration cancelled mid-statement leaves its connection unable to run the release.

    Before, the release's own error (``PendingRollbackError``) replaced the cancellation,
    reported as the store being unavailable.
    """
    from purpose_agent.db.transactions import migration_lock
    from tests.servers import throwaway_database

    class Cancelled(BaseException):
        pass

    with throwaway_database(mariadb_url, "pa_lock_broken") as url:
        engine = make_engine(url)
        try:

            def cancelled_mid_statement() -> None:
                with migration_lock(engine) as conn:
                    conn.invalidate()  # what a statement cancelled under way does to it
                    raise Cancelled

            with pytest.raises(Cancelled):
                cancelled_mid_statement()
            with engine.connect() as conn:
                holder = conn.execute(
                    sa.text(
                        "SELECT IS_USED_LOCK(CONCAT('purpose_agent.migrate:', MD5(DATABASE())))"
                    )
                ).scalar()
            assert holder is None  # nobody holds it: the next migration need not wait
        finally:
            engine.dispose()
        with SQLCheckpointer(url) as store:
            store.save_event(ev("after", 1))


def test_tables_made_without_a_recorded_revision_are_taken_over_by_the_upgrade(
    empty_database: str,
) -> None:
    """The store's tables made by hand (``metadata.create_all``), no revision recorded.

    Before, the check called the database empty and the upgrade it named failed for good on
    the first table that existed; now the upgrade records what is there and keeps the rows.
    """
    from purpose_agent.db.models import Base, EventRecord

    engine = sa.create_engine(empty_database, poolclass=sa.pool.NullPool)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(EventRecord).values(
                run_id="hand", seq=1, kind="custom", ts=1.5, lane_id="main", data="{}"
            )
        )
    engine.dispose()
    with pytest.raises(SchemaNotCurrent) as refused:
        SQLCheckpointer(empty_database, migrate=False)
    assert "none (never migrated)" in str(refused.value)
    with SQLCheckpointer(empty_database) as store:
        assert [(e.run_id, e.seq) for e in store.list_events("hand")] == [("hand", 1)]
        store.save_event(ev("hand", 2))
    with SQLCheckpointer(empty_database, migrate=False) as store:
        assert [e.seq for e in store.list_events("hand")] == [1, 2]
