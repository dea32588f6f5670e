"""`purpose-agent db`: the shipped migrations, driven from the command line."""

from __future__ import annotations

import json
import shlex
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from purpose_agent import SQLCheckpointer
from purpose_agent.db.engine import parse_url, shown_url
from purpose_agent.db.migrate import head_revision
from purpose_agent.ops.schema import upgrade_schema
from tests.conftest import table_names
from tests.servers import server_url, throwaway_database
from tests.test_cli_runs import _fill
from tests.test_cli_support import invoke, run_module

HEAD = head_revision()


@pytest.fixture
def postgres_store(postgres_url) -> Iterator[str]:
    """The session's Postgres database, left migrated for the tests after this one."""
    url = postgres_url.render_as_string(hide_password=False)
    yield url
    upgrade_schema(url)


@pytest.mark.sqlite
def test_db_check_fails_on_a_missing_database_and_names_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    current = invoke("db", "current", "--url", url)
    assert current.exit_code == 0
    assert "at revision none (no database file)" in current.stdout
    check = invoke("db", "check", "--url", url)
    assert check.exit_code == 1
    # Not "empty database": there is no file, and looking must not make one.
    assert check.stderr.splitlines() == [
        f"error: no database at {url}; `purpose-agent db upgrade --url {shlex.quote(url)}` "
        "creates it at the revision this version needs"
    ]
    assert not (tmp_path / "new.db").exists()  # looking changed nothing


@pytest.mark.sqlite
def test_db_upgrade_then_check_then_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    upgraded = run_module("db", "upgrade", "--url", url, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded from none (never migrated) to {HEAD} (head)" in upgraded.stdout
    assert "already at revision" in invoke("db", "upgrade", "--url", url).stdout
    check = invoke("db", "check", "--url", url)
    assert check.exit_code == 0
    assert f"schema is at revision {HEAD} (head)" in check.stdout
    status = json.loads(invoke("db", "current", "--json", "--url", url).stdout)
    assert (status["current"], status["head"], status["at_head"]) == (HEAD, HEAD, True)

    declined = invoke("db", "downgrade", "base", "--url", url, input="n\n")
    assert declined.exit_code == 1
    assert invoke("db", "check", "--url", url).exit_code == 0
    downgraded = invoke("db", "downgrade", "base", "--yes", "--url", url)
    assert downgraded.exit_code == 0, downgraded.output
    assert f"downgraded from {HEAD} (head) to none (never migrated)" in downgraded.stdout
    assert invoke("db", "check", "--url", url).exit_code == 1
    tables = {
        row[0]
        for row in sqlite3.connect(tmp_path / "new.db").execute("SELECT name FROM sqlite_master")
    }
    assert not {"pa_events", "pa_snapshots", "pa_runs"} & tables


@pytest.mark.postgres
def test_db_commands_migrate_postgres(postgres_store: str, tmp_path: Path) -> None:
    assert invoke("db", "downgrade", "base", "--yes", "--url", postgres_store).exit_code == 0
    check = invoke("db", "check", "--url", postgres_store)
    assert check.exit_code == 1
    assert "run `purpose-agent db upgrade --url" in check.stderr
    refused = invoke("runs", "list", "--url", postgres_store)
    assert refused.exit_code == 1
    assert "run `purpose-agent db upgrade --url" in refused.stderr
    upgraded = run_module("db", "upgrade", "--url", postgres_store, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"to {HEAD} (head)" in upgraded.stdout
    assert invoke("db", "check", "--url", postgres_store).exit_code == 0
    assert invoke("runs", "list", "--url", postgres_store).exit_code == 0


@pytest.mark.sqlite
def test_db_downgrade_to_an_unknown_revision_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    invoke("db", "upgrade", "--url", url)
    result = invoke("db", "downgrade", "nope", "--yes", "--url", url)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot move to revision 'nope'")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.sqlite
def test_db_current_points_at_seed_tables(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, run_id TEXT, seq INTEGER, data TEXT)"
    )
    conn.execute("CREATE TABLE snapshots (run_id TEXT PRIMARY KEY, state TEXT)")
    conn.close()
    result = invoke("db", "current", "--url", f"sqlite:///{path}")
    assert result.exit_code == 0
    assert "at revision none (never migrated)" in result.stdout
    assert f"purpose-agent copy seed-sqlite:{path} sqlite:///{path}" in result.stdout


def test_db_commands_need_a_database_url(tmp_path: Path) -> None:
    result = invoke("db", "current", "--url", f"jsonl:{tmp_path}")
    assert result.exit_code == 1
    assert "is not a database URL" in result.stderr


@pytest.mark.sqlite
def test_db_upgrade_and_downgrade_take_the_revision_the_same_way(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    upgraded = invoke("db", "upgrade", HEAD, "--url", url)
    assert upgraded.exit_code == 0, upgraded.output
    assert f"to {HEAD} (head)" in upgraded.stdout
    downgraded = invoke("db", "downgrade", "base", "--yes", "--url", url)
    assert downgraded.exit_code == 0, downgraded.output
    assert "to none (never migrated)" in downgraded.stdout
    # The older spelling still works, for both.
    assert invoke("db", "upgrade", "--revision", "head", "--url", url).exit_code == 0
    old_down = invoke("db", "downgrade", "--revision", "base", "--yes", "--url", url)
    assert old_down.exit_code == 0, old_down.output
    assert "to none (never migrated)" in old_down.stdout

    both = invoke("db", "upgrade", "head", "--revision", "base", "--url", url)
    assert both.exit_code == 2
    assert "two revisions given: 'head' and --revision 'base'" in both.stderr
    neither = invoke("db", "downgrade", "--yes", "--url", url)
    assert neither.exit_code == 2
    assert "say which revision" in neither.stderr


@pytest.mark.parametrize("command", ["upgrade", "downgrade", "current", "check"])
def test_db_url_help_offers_only_database_urls(command: str) -> None:
    help_text = " ".join(invoke("db", command, "--help").stdout.split())
    assert "--url URL The database: a SQLAlchemy URL such as sqlite:///PATH" in help_text
    assert "jsonl:" not in help_text
    assert "seed-sqlite:" not in help_text


@pytest.mark.sqlite
def test_db_upgrade_names_a_missing_sqlite_directory(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "x.db"
    result = invoke("db", "upgrade", "--url", f"sqlite:///{path}")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot open the SQLite database {path}: its directory {path.parent} does not "
        "exist; create it, or correct the URL\n"
    )
    assert not (tmp_path / "no").exists()


def test_downgrade_of_a_missing_sqlite_file_says_so_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """``db downgrade base`` created the file, and reported "from none to none"."""
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    downgraded = invoke("db", "downgrade", "base", "--yes", "--url", url)
    assert downgraded.exit_code == 1
    assert "nothing to downgrade" in downgraded.stderr
    assert list(tmp_path.iterdir()) == []
    nowhere = invoke("db", "check", "--url", f"sqlite:///{tmp_path / 'no' / 'x.db'}")
    assert "its directory" in nowhere.stderr


@pytest.mark.sqlite
def test_a_writing_command_that_upgrades_an_older_schema_says_so(tmp_path: Path) -> None:
    """``demo`` and ``copy`` migrate as the library does by default; after a rollback
    (``db downgrade``) they moved the schema up again without a word."""
    url = f"sqlite:///{tmp_path / 'rolled-back.db'}"
    assert invoke("db", "upgrade", "--url", url).exit_code == 0
    previous = "0002"
    assert invoke("db", "downgrade", previous, "--yes", "--url", url).exit_code == 0
    for args in (("demo", "--url", url), ("copy", "memory:", url)):
        result = invoke(*args)
        assert result.exit_code == 0, result.stderr
        assert result.stderr.splitlines()[:1] == [
            f"note: upgraded the schema of {url} from revision {previous} to {HEAD} (head) "
            "before writing"
        ]
        assert "(head)" in invoke("db", "current", "--url", url).stdout
        invoke("db", "downgrade", previous, "--yes", "--url", url)
    fresh = invoke("demo", "--url", f"sqlite:///{tmp_path / 'new.db'}")
    assert fresh.exit_code == 0
    assert "note:" not in fresh.stderr  # a new database is created at head, nothing to say
    assert "note: upgraded" in invoke("demo", "--url", url).stderr
    at_head = invoke("demo", "--url", url)
    assert at_head.exit_code == 0
    assert at_head.stderr == ""


def test_a_reading_command_on_a_schema_missing_an_index_names_it(tmp_path: Path) -> None:
    """``runs list`` on a database at head whose key index was dropped by hand said "at
    revision 0003, this version needs 0003": the command's own fix replaced the message."""
    url = f"sqlite:///{tmp_path / 'damaged.db'}"
    assert invoke("demo", "--url", url).exit_code == 0
    conn = sqlite3.connect(tmp_path / "damaged.db")
    conn.execute("DROP INDEX uq_pa_events_run_id_key")
    conn.close()
    listed = invoke("runs", "list", "--url", url)
    assert listed.exit_code != 0
    assert listed.stderr.strip() == (
        f"error: the schema of {url} is at revision {HEAD} but lacks index "
        "uq_pa_events_run_id_key on pa_events (dropped or changed by hand); run "
        f"`purpose-agent db upgrade --url {url}`"
    )
    assert invoke("db", "upgrade", "--url", url).exit_code == 0
    assert invoke("runs", "list", "--url", url).exit_code == 0


@pytest.mark.sqlite
@pytest.mark.parametrize("command", [["upgrade"], ["upgrade", "0002"], ["downgrade", "0002"]])
def test_moving_a_schema_a_newer_version_wrote_names_the_upgrade_of_the_package(
    tmp_path: Path, command: list[str]
) -> None:
    """It was Alembic's own "Can't locate revision identified by '0009'"."""
    path = tmp_path / "newer.db"
    SQLCheckpointer(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE pa_alembic_version SET version_num = '0009'")
    confirm = ["--yes"] if command[0] == "downgrade" else []
    result = invoke("db", *command, *confirm, "--url", f"sqlite:///{path}")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: database schema is at revision 0009, this version needs "
        f"{HEAD}; run `pip install --upgrade purpose-agent`\n"
    )
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM pa_alembic_version").fetchall() == [("0009",)]


@pytest.mark.sqlite
def test_db_current_of_a_schema_a_newer_version_wrote_says_so(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    SQLCheckpointer(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE pa_alembic_version SET version_num = '0009'")
    result = invoke("db", "current", "--url", f"sqlite:///{path}")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"sqlite:///{path}: at revision 0009; this version needs {HEAD}",
        "A newer version of purpose-agent migrated it: `pip install --upgrade purpose-agent`.",
    ]


def test_db_upgrade_check_and_downgrade_print_json(empty_database: str) -> None:
    """`--json` on the migrating commands: revisions on each side and those moved over."""
    url = empty_database
    shown = shown_url(parse_url(url))
    check = invoke("db", "check", "--json", "--url", url)
    assert check.exit_code == 1
    status = json.loads(check.stdout)
    assert (status["ok"], status["current"], status["pending"]) == (
        False,
        None,
        ["0001", "0002", HEAD],
    )
    assert status["command"] == f"purpose-agent db upgrade --url {shlex.quote(shown)}"
    assert check.stderr.startswith("error: ")  # the failure is still said, one line
    assert len(check.stderr.splitlines()) == 1

    upgraded = invoke("db", "upgrade", "0002", "--json", "--url", url)
    assert upgraded.exit_code == 0, upgraded.output
    assert json.loads(upgraded.stdout) == {
        "url": shown,
        "before": None,
        "after": "0002",
        "head": HEAD,
        "at_head": False,
        "applied": ["0001", "0002"],
        "repaired": [],
    }
    status = json.loads(invoke("db", "check", "--json", "--url", url).stdout)
    assert (status["ok"], status["current"], status["pending"]) == (False, "0002", [HEAD])
    assert status["problem"].startswith("database schema is at revision 0002")

    upgraded = invoke("db", "upgrade", "--json", "--url", url)
    assert json.loads(upgraded.stdout)["applied"] == [HEAD]
    again = json.loads(invoke("db", "upgrade", "--json", "--url", url).stdout)
    assert (again["before"], again["after"], again["applied"]) == (HEAD, HEAD, [])
    check = invoke("db", "check", "--json", "--url", url)
    assert check.exit_code == 0, check.output
    status = json.loads(check.stdout)
    assert (status["ok"], status["at_head"], status["pending"], status["problem"]) == (
        True,
        True,
        [],
        None,
    )

    downgraded = invoke("db", "downgrade", "0001", "--yes", "--json", "--url", url)
    assert downgraded.exit_code == 0, downgraded.output
    document = json.loads(downgraded.stdout)
    assert (document["before"], document["after"], document["reverted"]) == (
        HEAD,
        "0001",
        [HEAD, "0002"],
    )
    assert downgraded.stderr == ""  # no spinner, no note: the JSON is all

    failed = invoke("db", "upgrade", "nope", "--json", "--url", url)
    assert failed.exit_code == 1
    assert failed.stdout == ""
    assert failed.stderr.startswith("error: cannot move to revision 'nope'")


def test_db_downgrade_base_counts_the_runs_it_destroys_and_asks(empty_database: str) -> None:
    """It said "Data in dropped tables is lost.", whatever the tables held."""
    url = empty_database
    _fill(url)  # 3 runs, 253 events, 2 snapshots
    declined = invoke("db", "downgrade", "base", "--url", url, input="n\n")
    assert declined.exit_code == 1
    assert (
        "It drops the store's tables with 3 runs, 253 events and 2 snapshots for good"
        in declined.output
    )
    # No terminal and no --yes: refused, and nothing dropped.
    refused = invoke("db", "downgrade", "base", "--url", url)
    assert refused.exit_code == 1
    assert "253 events" in refused.stdout
    assert "pass --yes to downgrade without asking" in refused.stderr
    # With --json the question is on standard error: standard output stays the document's.
    refused = invoke("db", "downgrade", "base", "--json", "--url", url)
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert "253 events" in refused.stderr
    assert "pass --yes to downgrade without asking" in refused.stderr
    assert {"pa_events", "pa_snapshots", "pa_runs"} <= table_names(url)

    done = invoke("db", "downgrade", "base", "--yes", "--json", "--url", url)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["dropped"] == {
        "tables": True,
        "runs": 3,
        "events": 253,
        "snapshots": 2,
        "event_keys": 0,
        "run_groups": 0,
    }
    assert not {"pa_events", "pa_snapshots", "pa_runs"} & table_names(url)
    # Nothing left to destroy: the prompt says so, and the JSON counts zero.
    invoke("db", "upgrade", "--url", url)
    empty = invoke("db", "downgrade", "base", "--url", url, input="n\n")
    assert "It drops no stored data." in empty.output
    done = invoke("db", "downgrade", "base", "--yes", "--json", "--url", url)
    assert json.loads(done.stdout)["dropped"]["runs"] == 0


def _as_admin(admin: sa.URL, *statements: str) -> None:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _refused_upgrade(url: str, tmp_path: Path) -> str:
    """``db upgrade`` run as a user runs it, refused: its one line of standard error."""
    for extra in ([], ["--json"]):
        refused = run_module("db", "upgrade", *extra, "--url", url, cwd=tmp_path)
        assert refused.returncode == 1
        assert refused.stdout == ""
        assert "Traceback" not in refused.stderr
        assert len(refused.stderr.splitlines()) == 1
    return refused.stderr


@pytest.mark.postgres
def test_db_upgrade_of_a_read_only_postgres_database_says_why(tmp_path: Path) -> None:
    """It carried only "cannot execute CREATE TABLE in a read-only transaction"."""
    with server_url("postgres") as admin, throwaway_database(admin, "pa_read_only") as url:
        _as_admin(url, f'ALTER DATABASE "{url.database}" SET default_transaction_read_only = on')
        message = _refused_upgrade(url.render_as_string(hide_password=False), tmp_path)
    assert message.startswith("error: upgrading the schema failed on ")
    assert "cannot execute CREATE TABLE in a read-only transaction" in message
    assert "sets default_transaction_read_only" in message
    assert "point the URL at the primary, or reset the setting" in message


@pytest.mark.mariadb
def test_db_upgrade_as_a_mariadb_user_that_may_only_read_says_why(tmp_path: Path) -> None:
    """A private database and a user with SELECT only: the shared server's read_only stays."""
    user = f"pa_reader_{uuid.uuid4().hex[:8]}"
    with server_url("mariadb") as admin, throwaway_database(admin, "pa_read_only") as url:
        _as_admin(
            admin,
            f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'pw'",
            f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'%%'",
        )
        try:
            reader = url.set(username=user, password="pw")
            message = _refused_upgrade(reader.render_as_string(hide_password=False), tmp_path)
        finally:
            _as_admin(admin, f"DROP USER '{user}'@'%%'")
    assert message.startswith("error: upgrading the schema failed on ")
    assert "CREATE command denied" in message
    assert "the URL's user lacks a privilege on the store's tables" in message
    assert "CREATE, ALTER, INDEX and DROP, for migrations" in message


IN_MEMORY = ["sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?uri=true"]


@pytest.mark.parametrize("url", IN_MEMORY)
@pytest.mark.parametrize(
    "args",
    [
        ("upgrade",),
        ("downgrade", "base", "--yes"),
        ("check",),
        ("current",),
        ("partition", "--partitions", "2"),
        ("unpartition",),
    ],
)
def test_db_commands_refuse_an_in_memory_database(url: str, args: tuple[str, ...]) -> None:
    """``db upgrade --url sqlite://`` said "already at revision none" with status 0."""
    result = invoke("db", *args, "--url", url)
    assert result.exit_code == 1
    (said,) = result.stderr.splitlines()
    assert said.startswith("error: ")
    assert said.endswith(
        "is an in-memory database, which does not outlive the command; give a file "
        "(sqlite:///PATH) or a server URL"
    )
    assert result.stdout == ""
