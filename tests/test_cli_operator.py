"""What an operator meets at the command line: output that shows data as stored, options
that refuse what makes no sense, help that tells the truth, prompts and Ctrl-C that say what to
do next, and plain ``alembic`` commands that leave no stray database behind."""

from __future__ import annotations

import io
import json
import os
import subprocess
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from purpose_agent import EventKind, NewEvent, RunState
from purpose_agent.cli.app import Terminated, cli
from purpose_agent.db.migrate import head_revision
from purpose_agent.stores.open import open_store
from tests.servers import server_url, throwaway_database
from tests.test_cli_support import invoke, run_module, run_on_a_terminal, run_python_module

REPOSITORY = Path(__file__).resolve().parent.parent


def _url(tmp_path: Path, name: str = "store.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def _with_run(url: str, run_id: str = "r", data: dict[str, Any] | None = None) -> None:
    with open_store(url) as store:
        state = RunState(run_id=run_id, data=data if data is not None else {"n": 1})
        store.append(run_id, [NewEvent(kind=EventKind.CUSTOM)], snapshot=state)


# -- runs show: the state as indented JSON, control characters still escaped ------------------


def test_runs_show_prints_the_state_as_indented_json_over_several_lines(tmp_path: Path) -> None:
    """The indentation's newlines were escaped with the rest: one line of literal ``\\n``."""
    url = _url(tmp_path)
    data = {"task": "price a list", "cart": [{"item": "oat milk", "price_cents": 821}]}
    _with_run(url, data=data)
    result = invoke("runs", "show", "r", "--url", url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    shown = "\n".join(lines[lines.index("State data:") + 1 :])
    assert shown == json.dumps(data, indent=2, ensure_ascii=False)
    assert "\\n" not in result.stdout


def test_runs_show_still_escapes_control_characters_in_the_state(tmp_path: Path) -> None:
    r"""C1 controls (``\x9b`` is a terminal's CSI) are not escaped by json.dumps; NEL and U+2028
    must not split a line either, nor ``:smile:`` turn into an emoji."""
    url = _url(tmp_path)
    _with_run(url, data={"csi": "\x9b31mred", "esc": "\x1b]0;title\x07", "nel\x85": ":smile:"})
    result = invoke("runs", "show", "r", "--url", url)
    assert result.exit_code == 0, result.output
    assert "\x9b" not in result.stdout
    assert "\x1b" not in result.stdout
    assert "\x85" not in result.stdout
    assert '"csi": "\\x9b31mred",' in result.stdout
    assert '"esc": "\\u001b]0;title\\u0007",' in result.stdout
    assert '"nel\\x85": ":smile:"' in result.stdout


# -- --limit 0 is refused -----------------------------------------------------------------------


@pytest.mark.parametrize("listing", [("runs", "list"), ("runs", "groups"), ("runs", "events", "r")])
def test_a_limit_of_zero_is_a_usage_error_not_an_empty_page(
    tmp_path: Path, listing: tuple[str, ...]
) -> None:
    """``runs list --limit 0`` said "No runs in ..." (and next_offset null) on a store with runs."""
    url = _url(tmp_path)
    _with_run(url)
    result = invoke(*listing, "--limit", "0", "--json", "--url", url)
    assert result.exit_code == 2
    assert "Invalid value for '--limit': 0 is not in the range x>=1." in result.stderr
    assert result.stdout == ""
    assert invoke(*listing, "--limit", "1", "--url", url).exit_code == 0


# -- db downgrade --help shows REVISION as required ---------------------------------------------


def test_db_downgrade_help_shows_the_revision_required_and_upgrade_optional() -> None:
    downgrade = invoke("db", "downgrade", "--help").stdout.splitlines()[0]
    upgrade = invoke("db", "upgrade", "--help").stdout.splitlines()[0]
    assert downgrade == "Usage: cli db downgrade [OPTIONS] REVISION"
    assert upgrade == "Usage: cli db upgrade [OPTIONS] [REVISION]"


def test_db_downgrade_without_a_revision_still_says_which_to_give(tmp_path: Path) -> None:
    url = _url(tmp_path)
    _with_run(url)
    result = invoke("db", "downgrade", "--yes", "--url", url)
    assert result.exit_code == 2
    assert "say which revision: REVISION" in result.stderr
    by_option = invoke("db", "downgrade", "--revision", "0002", "--yes", "--url", url)
    assert by_option.exit_code == 0, by_option.output


# -- plain alembic: read-only commands create no database ---------------------------------------


def _alembic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PURPOSE_AGENT_DB_URL"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ beside the repository's revisions
    return run_python_module(
        "alembic", "-c", str(REPOSITORY / "alembic.ini"), *args, cwd=cwd, env=env
    )


@pytest.mark.parametrize("command", [("current",), ("check",), ("history", "-i")])
def test_a_reading_alembic_command_in_an_empty_folder_creates_no_database(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """``alembic current`` left an empty purpose_agent.db behind, "never migrated"."""
    done = _alembic(*command, cwd=tmp_path)
    assert done.returncode != 0
    assert f"no database at {tmp_path / 'purpose_agent.db'}" in done.stderr
    assert "`alembic upgrade head`" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_alembic_upgrade_still_creates_the_database_and_current_then_reads_it(
    tmp_path: Path,
) -> None:
    assert _alembic("upgrade", "head", cwd=tmp_path).returncode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["purpose_agent.db"]
    current = _alembic("current", cwd=tmp_path)
    assert current.returncode == 0, current.stderr
    assert f"{head_revision()} (head)" in current.stdout


# -- --debug after the command -----------------------------------------------------------------


def test_debug_after_the_command_shows_the_traceback(tmp_path: Path) -> None:
    """The messages say "run with --debug"; after the command it was "No such option"."""
    url = _url(tmp_path)
    _with_run(url)
    plain = run_module("runs", "show", "a/b", "--url", url, cwd=tmp_path)
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr
    traced = run_module("runs", "show", "a/b", "--url", url, "--debug", cwd=tmp_path)
    assert traced.returncode == 1
    assert "Traceback" in traced.stderr
    assert "InvalidRunId: run id 'a/b' contains '/'" in traced.stderr
    assert "No such option" not in traced.stderr


def test_debug_after_a_command_shows_an_unexpected_error_it_had_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("purpose_agent.cli.runs_commands.open_url", broken)
    url = _url(tmp_path)
    plain = invoke("runs", "list", "--url", url)
    assert plain.exit_code == 1
    assert "unexpected RuntimeError: a bug (run with --debug for the traceback)" in plain.stderr
    for args in (("runs", "list", "--url", url, "--debug"), ("runs", "--debug", "list")):
        traced = invoke(*args)
        assert isinstance(traced.exception, RuntimeError), traced.output


# -- runs delete / db downgrade with no terminal and no --yes -----------------------------------


@pytest.mark.parametrize(
    ("args", "doing"),
    [
        (("runs", "delete", "r"), "delete"),
        (("runs", "delete", "--prefix", "r"), "delete"),
        (("db", "downgrade", "base"), "downgrade"),
    ],
)
def test_a_question_nobody_can_answer_says_to_pass_yes(
    tmp_path: Path, args: tuple[str, ...], doing: str
) -> None:
    """Without a terminal and without an answer piped in, click printed a bare "Aborted!"."""
    url = _url(tmp_path)
    _with_run(url)
    result = invoke(*args, "--url", url)  # the runner's standard input is empty, no terminal
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: cannot ask for confirmation: standard input is not a terminal (and gave no "
        f"answer); pass --yes to {doing} without asking"
    ]
    with open_store(url) as store:
        assert store.list_runs() == ["r"]


def test_an_answer_piped_in_is_still_taken(tmp_path: Path) -> None:
    url = _url(tmp_path)
    _with_run(url)
    declined = invoke("runs", "delete", "r", "--url", url, input="n\n")
    assert declined.exit_code == 1
    assert "Aborted!" in declined.stderr
    deleted = invoke("runs", "delete", "r", "--url", url, input="y\n")
    assert deleted.exit_code == 0, deleted.output
    with open_store(url) as store:
        assert store.list_runs() == []


class _Interrupted(io.BytesIO):
    """A standard input whose reader gets ``error`` (Ctrl-C, ``SIGTERM``) instead of an answer."""

    def __init__(self, error: type[KeyboardInterrupt]) -> None:
        super().__init__()
        self.error = error

    def read(self, size: int | None = -1) -> bytes:
        if size == 0:  # click's runner checks that it reads bytes
            return b""
        raise self.error

    read1 = readline = read


@pytest.mark.parametrize(
    ("error", "status", "said"),
    [(KeyboardInterrupt, 130, "interrupted"), (Terminated, 143, "terminated")],
)
@pytest.mark.parametrize(
    "args",
    [("runs", "delete", "r"), ("runs", "delete", "--prefix", "r"), ("db", "downgrade", "base")],
)
def test_ctrl_c_at_the_question_says_nothing_was_changed_and_exits_130(
    tmp_path: Path, args: tuple[str, ...], error: type[KeyboardInterrupt], status: int, said: str
) -> None:
    """click printed "Aborted!" with status 1 (or, without a terminal, "pass --yes")."""
    url = _url(tmp_path)
    _with_run(url)
    result = CliRunner().invoke(cli, [*args, "--url", url], input=_Interrupted(error))
    assert result.exit_code == status, result.output
    assert result.stderr.splitlines()[-1] == f"{said}: stopped at the question; nothing was changed"
    assert "Aborted" not in result.output
    with open_store(url) as store:
        assert store.list_runs() == ["r"]


# -- Ctrl-C in the db commands -------------------------------------------------------------------

TRANSACTION = "is one transaction, rolled back when stopped"
AGAIN = "run the same command again to finish it"
RELAYOUT = {
    "partition": ("db_commands.partition_events", ("db", "partition", "--partitions", "4")),
    "unpartition": ("db_commands.partition_events", ("db", "unpartition")),
}


def _interrupt(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(f"purpose_agent.cli.{target}", interrupted)


@pytest.mark.parametrize(
    ("target", "args", "left"),
    [
        ("db_commands.upgrade_schema", ("db", "upgrade"), "the upgrade " + TRANSACTION),
        (
            "db_commands.downgrade_schema",
            ("db", "downgrade", "base", "--yes"),
            "the downgrade " + TRANSACTION,
        ),
        (*RELAYOUT["partition"], "the change of layout " + TRANSACTION),
        (*RELAYOUT["unpartition"], "the change of layout " + TRANSACTION),
    ],
)
def test_ctrl_c_in_a_db_command_says_where_the_schema_is_and_to_run_it_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    args: tuple[str, ...],
    left: str,
) -> None:
    """It said only "it stopped before it finished"."""
    url = _url(tmp_path)
    _with_run(url)
    _interrupt(monkeypatch, target)
    result = invoke(*args, "--url", url)
    assert result.exit_code == 130
    (said,) = result.stderr.strip().splitlines()
    assert said.startswith(f"interrupted: {left}")
    assert said.endswith(AGAIN)


@pytest.mark.parametrize(
    ("target", "args"),
    [
        ("db_commands.upgrade_schema", ("db", "upgrade")),
        ("db_commands.downgrade_schema", ("db", "downgrade", "0001", "--yes")),
    ],
)
def test_ctrl_c_in_a_migration_on_mariadb_says_it_may_be_part_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, args: tuple[str, ...]
) -> None:
    """MariaDB's DDL commits as it runs: no connection is needed to say so."""
    _interrupt(monkeypatch, target)
    monkeypatch.setattr(
        "purpose_agent.cli.db_commands.schema_status",
        lambda url: types.SimpleNamespace(exists=True),
    )
    result = invoke(*args, "--url", "mariadb+pymysql://nobody@127.0.0.1:1/none")
    assert result.exit_code == 130
    (said,) = result.stderr.strip().splitlines()
    assert said.startswith("interrupted: MariaDB commits each schema change as it runs")
    assert "part-way through a revision" in said
    assert AGAIN in said


class Interrupted:
    """Ctrl-C at the first statement that starts with ``prefix`` (and holds ``part``)."""

    def __init__(self, prefix: str, part: str = "") -> None:
        self.prefix, self.part, self.hit = prefix, part, False

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        text = " ".join(statement.split()).upper()
        if not self.hit and text.startswith(self.prefix) and self.part in text:
            self.hit = True
            raise KeyboardInterrupt


@pytest.fixture
def ctrl_c_at() -> Iterator[Any]:
    """Listen on every engine (the command builds its own) until the test ends."""
    listeners: list[Interrupted] = []

    def at(prefix: str, part: str = "") -> Interrupted:
        listener = Interrupted(prefix, part)
        sa.event.listen(sa.Engine, "before_cursor_execute", listener)
        listeners.append(listener)
        return listener

    yield at
    for listener in listeners:
        sa.event.remove(sa.Engine, "before_cursor_execute", listener)


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def private_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own (a migration is stopped in it), dropped afterwards."""
    if request.param == "sqlite":
        yield _url(tmp_path)
        return
    with server_url(request.param) as admin, throwaway_database(admin, "clifix") as url:
        yield url.render_as_string(hide_password=False)


def _revision(url: str) -> str | None:
    status = json.loads(invoke("db", "current", "--json", "--url", url).stdout)
    current: str | None = status["current"]
    return current


def test_an_upgrade_stopped_by_ctrl_c_is_where_it_says_and_finished_by_running_it_again(
    private_url: str, ctrl_c_at: Any
) -> None:
    """Stopped in revision 0002, after it altered ``pa_events`` and before ``pa_runs``."""
    assert invoke("db", "upgrade", "0001", "--url", private_url).exit_code == 0
    stop = ctrl_c_at("ALTER TABLE PA_RUNS ADD")
    stopped = invoke("db", "upgrade", "--url", private_url)
    assert stop.hit
    assert stopped.exit_code == 130
    if private_url.startswith("mariadb") or private_url.startswith("mysql"):
        assert "part-way through a revision" in stopped.stderr
    else:
        assert "the upgrade is one transaction" in stopped.stderr
        engine = sa.create_engine(private_url, poolclass=sa.pool.NullPool)
        try:
            columns = {c["name"] for c in sa.inspect(engine).get_columns("pa_events")}
        finally:
            engine.dispose()
        assert "key" not in columns  # 0002's first step was rolled back with the rest
    assert _revision(private_url) == "0001"
    again = invoke("db", "upgrade", "--url", private_url)
    assert again.exit_code == 0, again.output
    assert _revision(private_url) == head_revision()
    _with_run(private_url)


def test_a_downgrade_stopped_by_ctrl_c_is_finished_by_running_it_again(
    private_url: str, ctrl_c_at: Any
) -> None:
    assert invoke("db", "upgrade", "--url", private_url).exit_code == 0
    stop = ctrl_c_at("DROP INDEX UQ_PA_EVENTS_RUN_ID_KEY")
    stopped = invoke("db", "downgrade", "0001", "--yes", "--url", private_url)
    assert stop.hit
    assert stopped.exit_code == 130
    assert AGAIN in stopped.stderr
    if not private_url.startswith(("mariadb", "mysql")):
        assert _revision(private_url) == head_revision()  # rolled back whole
    again = invoke("db", "downgrade", "0001", "--yes", "--url", private_url)
    assert again.exit_code == 0, again.output
    assert _revision(private_url) == "0001"


@pytest.mark.postgres
def test_a_change_of_layout_stopped_by_ctrl_c_left_the_old_layout(ctrl_c_at: Any) -> None:
    with server_url("postgres") as admin, throwaway_database(admin, "clifix") as parsed:
        url = parsed.render_as_string(hide_password=False)
        _with_run(url)
        stop = ctrl_c_at("ALTER TABLE", "RENAME TO")
        stopped = invoke("db", "partition", "--partitions", "4", "--url", url)
        assert stop.hit
        assert stopped.exit_code == 130
        assert "the change of layout is one transaction" in stopped.stderr
        again = invoke("db", "partition", "--partitions", "4", "--json", "--url", url)
        assert again.exit_code == 0, again.output
        layout = json.loads(again.stdout)
        assert layout["before"]["partitions"] == 0
        assert layout["after"]["partitions"] == 4
        with open_store(url) as store:
            assert store.list_runs() == ["r"]


def _with_stderr_on_a_terminal(*args: str, cwd: Path) -> tuple[str, str]:
    """Run ``python -m purpose_agent`` with standard error on a pseudo-terminal.

    Returns:
        Standard output, and what the terminal showed.
    """
    env = {k: v for k, v in os.environ.items() if k != "PURPOSE_AGENT_DB_URL"}
    env["COLUMNS"] = "500"  # wide enough for a temporary folder's path
    code, out, shown = run_on_a_terminal(*args, terminal="stderr", env=env, cwd=cwd)
    assert code == 0, shown
    return out, shown


def test_db_upgrade_shows_a_spinner_on_a_terminal_and_nothing_in_a_pipe(tmp_path: Path) -> None:
    """A migration of a large store is minutes in one transaction: it showed no sign of life."""
    url = f"sqlite:///{tmp_path / 'spun.db'}"
    out, shown = _with_stderr_on_a_terminal("db", "upgrade", "--url", url, cwd=tmp_path)
    assert out == f"{url}: upgraded from none (never migrated) to {head_revision()} (head)\n"
    assert f"upgrading {url} to head" in shown
    piped = run_module("db", "downgrade", "base", "--yes", "--url", url, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    assert piped.stdout.startswith(f"{url}: downgraded from {head_revision()} (head) to none")


def test_runs_delete_shows_a_spinner_on_a_terminal_and_nothing_in_a_pipe(tmp_path: Path) -> None:
    """Deleting a run of millions of events takes a while with no output until it is done."""
    url = _url(tmp_path)
    for run_id in ("one", "two", "three"):
        _with_run(url, run_id)
    out, shown = _with_stderr_on_a_terminal(
        "runs", "delete", "one", "--yes", "--url", url, cwd=tmp_path
    )
    assert out.startswith("Deleted run 'one'")
    assert "deleting run 'one'" in shown
    out, shown = _with_stderr_on_a_terminal(
        "runs", "delete", "--prefix", "t", "--yes", "--url", url, cwd=tmp_path
    )
    assert out.startswith("Deleted 2 runs")
    assert "deleting the runs" in shown
    _with_run(url, "four")
    piped = run_module("runs", "delete", "four", "--yes", "--url", url, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    with open_store(url) as store:
        assert store.list_runs() == []
