"""Failures are one line on stderr with a non-zero exit, and a traceback only with --debug."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from purpose_agent import EventKind, InvalidInput, InvalidRunId, PAEvent, SQLCheckpointer
from purpose_agent.stores.open import open_store
from tests.test_cli_support import invoke, run_module, run_on_a_terminal

DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def _url(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def test_a_database_that_is_down_is_one_line_through_the_real_entry_point(tmp_path: Path) -> None:
    result = run_module("runs", "list", "--url", DOWN, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: opening the store failed on postgresql+psycopg://postgres@127.0.0.1:1/test:"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdb://x", "error: cannot open nosuchdb://x"),
        (
            "sqlite:////nonexistent/dir/x.db",
            "error: cannot open the SQLite database /nonexistent/dir/x.db: its directory "
            "/nonexistent/dir does not exist",
        ),
        ("neither-url-nor-path", "error: 'neither-url-nor-path' is neither a database URL"),
        ("jsonl:", "error: 'jsonl:' names no path"),
        # Taken as the current folder, a JSONL store, before: `--url "$UNSET"` wrote there.
        ("", "error: an empty URL names no store"),
        (" ", "error: an empty URL names no store"),
        (
            "postgresql+psycopg://u@h:notaport/db",
            "error: not a database URL: 'postgresql+psycopg://u@h:notaport/db'",
        ),
    ],
)
def test_a_bad_url_is_one_line(url: str, message: str, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = invoke("runs", "list", "--url", url)
        demo = invoke("demo", "--url", url)
    assert sorted(tmp_path.iterdir()) == []
    assert demo.exit_code == 1
    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "command",
    [["demo", "--url", "{url}"], ["runs", "list", "--url", "{url}"], ["copy", "memory:", "{url}"]],
)
def test_a_sqlite_file_in_a_missing_directory_is_named(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "missing" / "runs.db"
    result = invoke(*(arg.format(url=f"sqlite:///{path}") for arg in command))
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot open the SQLite database {path}: its directory {path.parent} does not "
        "exist; create it, or correct the URL\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["demo", "--url", "{url}"],
        ["runs", "list", "--url", "{url}"],
        ["copy", "memory:", "{url}"],
        ["db", "upgrade", "--url", "{url}"],
        ["db", "current", "--url", "{url}"],
    ],
)
def test_a_sqlite_url_that_names_a_directory_says_so(tmp_path: Path, command: list[str]) -> None:
    """It was "no database at DIR; `db upgrade` creates one", which then failed too."""
    folder = tmp_path / "adir"
    folder.mkdir()
    result = invoke(*(arg.format(url=f"sqlite:///{folder}") for arg in command))
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot open the SQLite database {folder}: it is a directory, not a file; name "
        f"a file in it (sqlite:///{folder}/purpose_agent.db)\n"
    )
    assert list(folder.iterdir()) == []
    with pytest.raises(InvalidInput, match="it is a directory, not a file"):
        SQLCheckpointer(f"sqlite:///{folder}")


def test_an_error_about_a_url_from_the_environment_says_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The user did not type the URL the error names."""
    monkeypatch.setenv("PURPOSE_AGENT_DB_URL", DOWN)
    from_env = invoke("runs", "list")
    assert from_env.exit_code == 1
    assert from_env.stderr.rstrip("\n").endswith(
        " (the URL is $PURPOSE_AGENT_DB_URL's; --url names another)"
    )
    typed = invoke("runs", "list", "--url", DOWN)
    assert typed.exit_code == 1
    assert "PURPOSE_AGENT_DB_URL" not in typed.stderr


def test_a_bad_run_id_is_one_line_and_a_traceback_with_debug(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    invoke("db", "upgrade", "--url", url)
    result = invoke("runs", "show", "a/b", "--url", url)
    assert result.exit_code == 1
    assert result.stderr == "error: run id 'a/b' contains '/'\n"
    debug = invoke("--debug", "runs", "show", "a/b", "--url", url)
    assert debug.exit_code == 1
    assert isinstance(debug.exception, InvalidRunId)
    traced = run_module("--debug", "runs", "show", "a/b", "--url", url, cwd=tmp_path)
    assert "Traceback (most recent call last)" in traced.stderr
    assert traced.returncode == 1


def test_an_error_line_escapes_control_characters(tmp_path: Path) -> None:
    """What an error quotes (a path, a URL, a database's own message) could drive the terminal:
    an OSC sequence retitled it, since click strips only colour codes, and only off a terminal."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = invoke("runs", "list", "--url", "jsonl:\x1b]0;owned\x07\x9b2Jruns")
    assert result.exit_code == 1
    assert result.stderr == "error: no JSONL folder at \\x1b]0;owned\\x07\\x9b2Jruns\n"


def test_version_and_help_name_the_command() -> None:
    assert invoke("--version").stdout == "purpose-agent, version 0.1.0\n"
    help_text = invoke("--help").stdout
    for command in ("demo", "runs", "copy", "prune", "db"):
        assert f"  {command} " in help_text


def _stop_reading(*args: str, after_lines: int) -> tuple[list[str], int, str]:
    """Run the command into a pipe, read some lines, close the pipe like `head`, and wait."""
    process = subprocess.Popen(
        [sys.executable, "-m", "purpose_agent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    lines = [process.stdout.readline() for _ in range(after_lines)]
    process.stdout.close()
    stderr = process.stderr.read()
    return lines, process.wait(timeout=60), stderr


@pytest.mark.sqlite
def test_a_reader_that_stops_early_ends_the_stream_quietly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url) as store:
        store.save_events(
            [
                PAEvent(run_id="long", seq=i, kind=EventKind.CUSTOM, data={"i": i})
                for i in range(1, 5001)
            ]
        )
    # Far more output is still to come when the pipe closes: a write inside the command fails.
    lines, status, stderr = _stop_reading(
        "runs", "events", "long", "--all", "--json", "--url", url, after_lines=1
    )
    assert '"seq":1,' in lines[0]
    assert (status, stderr) == (0, "")


@pytest.mark.sqlite
@pytest.mark.parametrize("args", [("--version",), ("runs", "list", "--url", "{url}")])
def test_a_reader_gone_before_the_last_flush_ends_quietly(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url) as store:
        store.save_event(PAEvent(run_id="short", seq=1, kind=EventKind.CUSTOM))
    # Nothing is read: the output (less than a buffer) meets a closed pipe when it is flushed.
    _, status, stderr = _stop_reading(*(arg.format(url=url) for arg in args), after_lines=0)
    assert (status, stderr) == (0, "")


def test_a_missing_sqlite_file_names_commands_a_shell_runs_on_that_very_file(
    tmp_path: Path,
) -> None:
    """The file name holds ``&`` and a space: unquoted, a shell would cut the command there."""
    path = tmp_path / "runs & more.db"
    result = invoke("runs", "list", "--url", f"sqlite:///{path}")
    assert result.exit_code == 1
    hint = re.search(r"`(purpose-agent db upgrade [^`]+)`", result.stderr)
    assert hint is not None, result.stderr
    command = hint.group(1).replace("purpose-agent", f"{sys.executable} -m purpose_agent", 1)
    done = subprocess.run(
        command, shell=True, cwd=tmp_path, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs & more.db"]
    assert invoke("runs", "list", "--url", f"sqlite:///{path}").exit_code == 0


INTERRUPTED = {
    "verify": (("runs", "verify"), "purpose_agent.cli.verify", "runs it had not read yet"),
    "prune": (("prune", "--covered"), "purpose_agent.cli.prune", "stays pruned"),
    "delete": (
        ("runs", "delete", "--group", "g", "--yes"),
        "purpose_agent.cli.runs_commands",
        "one transaction",
    ),
    "demo": (("demo",), "purpose_agent.cli.demo", "run the same command again to resume"),
}


@pytest.mark.parametrize("command", INTERRUPTED)
def test_ctrl_c_says_where_the_command_left_the_store_and_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """click alone printed "Aborted!" with status 1, which ``runs verify`` gives for damage."""
    args, module, left = INTERRUPTED[command]

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(f"{module}.open_url", interrupted)
    result = invoke(*args, "--url", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 130
    assert result.stderr.strip().startswith("interrupted: ")
    assert left in result.stderr
    assert "Aborted" not in result.stderr


@pytest.mark.sqlite
def test_ctrl_c_while_the_store_closes_its_connections_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C as prune closed its store printed "Exception closing connection" and a traceback.

    The pool that logs it is the package's own, whose logger is not under ``sqlalchemy``. Run
    in a process of its own: pytest's log capture would take what Python prints there.
    """
    url = _url(tmp_path, "store.db")
    with open_store(url) as store:
        store.save_events([PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM)])
    script = (
        "import sys\n"
        "from sqlalchemy.engine.default import DefaultDialect\n"
        "from purpose_agent.cli import main\n"
        "from purpose_agent.db.thread_pool import ThreadQueuePool\n"
        "closing = DefaultDialect.do_close\n"
        "def interrupted(self, connection):\n"
        "    closing(self, connection)\n"
        "    if isinstance(sys._getframe(1).f_locals.get('self'), ThreadQueuePool):\n"
        "        raise KeyboardInterrupt  # as the store's own pool closes\n"
        "DefaultDialect.do_close = interrupted\n"
        f"sys.argv = ['purpose-agent', 'prune', '--covered', '--url', {url!r}]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [
        "interrupted: what was pruned stays pruned and nothing is half-pruned (a run or a page "
        "of runs per transaction); run the same command again to finish"
    ]


@pytest.mark.sqlite
def test_sigterm_during_a_progress_bar_gives_the_terminal_back_and_says_where_it_stopped(
    tmp_path: Path,
) -> None:
    """``kill`` (or ``timeout``) of a command showing a bar left the terminal's cursor hidden.

    SIGTERM now unwinds as Ctrl-C does: the bar is taken down, the store closed, one line says
    where things stand, and the status is 143, as a shell reports SIGTERM.
    """
    url = _url(tmp_path, "store.db")
    with open_store(url) as store:
        for run in ("a", "b"):
            store.save_events([PAEvent(run_id=run, seq=1, kind=EventKind.CUSTOM)])
    script = (
        "import os, signal, sys, time\n"
        "import purpose_agent.cli.verify as verify\n"
        "from purpose_agent.cli import main\n"
        "def read(store, chosen, progress, check):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # as `kill` from another shell\n"
        "    time.sleep(60)\n"
        "verify.verify_runs = read\n"
        "sys.argv[0] = 'purpose-agent'\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PURPOSE_AGENT_DB_URL"}
    status, stdout, shown = run_on_a_terminal(
        "runs", "verify", "--url", url, terminal="stderr", env=env, python=("-c", script)
    )
    assert status == 143
    assert stdout == ""
    assert "\x1b[?25l" in shown  # the bar hid the cursor...
    assert shown.rindex("\x1b[?25h") > shown.rindex("\x1b[?25l")  # ...and showed it again
    assert shown.rstrip().endswith(
        "terminated: the check did not finish, so the runs it had not read yet are not known "
        "to be sound (nothing was written); run it again"
    )


def _piped(command: str, reader: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command | reader`` in a shell, with the command's own exit status (not the reader's)."""
    return subprocess.run(
        ["bash", "-c", f"{command} | {reader}; exit ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_a_demo_whose_output_closes_says_it_stopped_and_resumes_after(tmp_path: Path) -> None:
    """``purpose-agent demo | head -1`` left the run unfinished and exited 0."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    demo = f"{sys.executable} -m purpose_agent demo --url {url}"
    cut = _piped(demo, "head -1", tmp_path)
    assert cut.returncode == 141
    assert "stopped: its output was closed before it finished" in cut.stderr
    assert "Traceback" not in cut.stderr
    again = subprocess.run(
        demo.split(), capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout
    assert "finished at seq 37" in again.stdout


def test_a_new_sqlite_file_in_a_folder_this_process_may_not_write_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite says only "unable to open database file"; a missing folder was named already.

    Root may write anywhere: as root, the folder is made unwritable to this process's view of
    permissions (``os.access``), which is what the store asks.
    """
    folder = tmp_path / "archive"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        allowed = os.access

        def as_another_user(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
            if Path(path) == folder and mode & os.W_OK:
                return False
            return allowed(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", as_another_user)
    target = folder / "new.db"
    try:
        url = f"sqlite:///{target}"
        for args in (
            ("db", "upgrade", "--url", url),
            ("demo", "--url", url),
            ("copy", "memory:", url),
        ):
            result = invoke(*args)
            assert result.exit_code == 1, (args, result.stderr)
            assert result.stderr.strip() == (
                f"error: cannot create the SQLite database {target}: this process may not "
                f"write to its directory {folder}"
            ), args
        assert not target.exists()
    finally:
        folder.chmod(0o755)


def test_a_command_whose_report_comes_after_its_work_ends_quietly_when_the_pipe_closes(
    tmp_path: Path,
) -> None:
    """``prune | head -0``: the work was done before its report met the closed pipe."""
    url = f"sqlite:///{tmp_path / 'pruned.db'}"
    with open_store(url) as store:
        store.save_events([PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM)])
    prune = f"{sys.executable} -m purpose_agent prune --keep-newest 0 --url {url}"
    cut = _piped(prune, "head -c 0", tmp_path)
    assert cut.returncode == 0, cut.stderr
    assert cut.stderr == ""
    with open_store(url) as store:
        assert store.list_runs() == []


@pytest.mark.sqlite
@pytest.mark.parametrize("as_json", [False, True])
def test_a_check_that_found_damage_still_fails_when_its_reader_stops_early(
    tmp_path: Path, as_json: bool
) -> None:
    """``runs verify | head -1`` exited 0 and said nothing once the table met the closed pipe.

    The status is the check's outcome, which a scheduled check alerts on; a reader that saw
    only the first line does not make the damage go away.
    """
    path = tmp_path / "damaged.db"
    with open_store(f"sqlite:///{path}") as store:
        store.save_events(
            [PAEvent(run_id="r", seq=i, kind=EventKind.CUSTOM) for i in range(1, 2001)]
        )
    with sqlite3.connect(path) as conn:  # far more than a pipe holds to report
        conn.execute("UPDATE pa_events SET data = '{x'")
    conn.close()
    args = ("runs", "verify", "--url", f"sqlite:///{path}", *(["--json"] if as_json else []))
    lines, status, stderr = _stop_reading(*args, after_lines=1)
    assert lines[0].strip()
    assert status == 1
    assert stderr == "error: 2,000 damaged records in 1 run of 1\n"


@pytest.mark.parametrize(
    "url",
    [
        # SQLAlchemy ends the password at its first '@': the rest was printed as the host, and
        # the driver's error named it again ("failed to resolve host 'cret-pw@127.0.0.1'").
        "postgresql+psycopg://app:s3@cret-pw@127.0.0.1:1/agents",
        "mariadb+pymysql://app:s3@cret-pw@127.0.0.1:1/agents",
        # The rest did not parse as a port, which the error quoted: 'cret-pw@127.0.0.1:1'.
        "postgresql+psycopg://app:s3@x:cret-pw@127.0.0.1:1/agents",
        # Not a URL at all: the text shown was masked only up to a '/', '?' or '#'.
        "postgresql+psycopg://app:s3/cret-pw@127.0.0.1:notaport/agents",
        "postgresql+psycopg://app:s3?cret-pw@127.0.0.1:notaport/agents",
    ],
)
def test_a_password_holding_url_delimiters_is_never_printed(url: str, tmp_path: Path) -> None:
    """An unescaped ``@`` (or ``/``, ``?``, ``#``) in a password is an operator's usual slip."""
    imported = invoke("import", "langgraph", "--from", url, "--url", _url(tmp_path, "to.db"))
    assert imported.exit_code == 1, imported.output
    assert "cret" not in imported.output
    for args in (
        ("runs", "list", "--url", url),
        ("db", "current", "--url", url),
        ("copy", url, _url(tmp_path, "copy.db")),
    ):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "cret" not in result.output, args
        assert result.stderr.startswith("error: not a database URL: "), result.stderr
    if "@cret" in url:
        assert "write an '@' in the user name or password as %40" in result.stderr


@pytest.mark.postgres
def test_a_password_in_the_url_query_string_is_never_printed(
    postgres_url: URL, tmp_path: Path
) -> None:
    """libpq takes ``?password=`` as it takes one before the host: both are hidden."""
    secret = "s3cret-in-query"
    good = postgres_url.update_query_dict({"password": secret})
    url = good.render_as_string(hide_password=False)
    down = f"postgresql+psycopg://postgres@127.0.0.1:1/test?password={secret}"
    malformed = f"postgresql://postgres:{secret}@127.0.0.1:notaport/test"
    SQLCheckpointer(url).close()
    listed = invoke("runs", "list", "--json", "--url", url)
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["store"].endswith("password=***")
    for args in (
        ("runs", "list", "--url", url),
        ("db", "current", "--url", url),
        ("db", "upgrade", "--url", url),
        ("runs", "list", "--url", down),
        ("db", "check", "--url", down),
        ("runs", "list", "--url", malformed),
        ("copy", malformed, f"sqlite:///{tmp_path / 'copy.db'}"),
    ):
        result = invoke(*args)
        assert secret not in result.output, args
