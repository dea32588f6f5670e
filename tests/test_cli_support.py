"""Helpers for the CLI tests: stores to point the command at, and ways to run it.

Holds no tests. The CLI test modules build their ``store_url`` fixture from
:func:`make_store_url`, so that each test gets an empty, migrated store on SQLite or Postgres.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from click.testing import CliRunner, Result

from purpose_agent.cli import cli
from tests.conftest import DATABASES, empty_tables

# The stores the command is pointed at: one on each database.
STORES = DATABASES


def make_store_url(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> str:
    """An empty, migrated store of the named backend, as a URL."""
    if name == "sqlite":
        path = tmp_path / "store.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    if name in ("postgres", "mariadb"):
        url = request.getfixturevalue(f"{name}_url").render_as_string(hide_password=False)
        empty_tables(url)
        return str(url)
    raise AssertionError(name)


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run the command in this process through click's runner (stdout and stderr apart)."""
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=True)


def run_python_module(
    module: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE ARGS`` in a real subprocess and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_on_a_terminal(
    *args: str,
    terminal: Literal["stdout", "stderr"],
    env: dict[str, str],
    columns: int | None = None,
    cwd: Path | None = None,
    python: tuple[str, ...] = ("-m", "purpose_agent"),
) -> tuple[int, str, str]:
    """Run ``python -m purpose_agent ARGS`` with one stream on a pseudo-terminal, the other piped.

    What the command shows depends on whether a person watches: spinners and tables sized to
    the window go to a terminal only.

    Args:
        args: The command's arguments.
        terminal: The stream on the terminal.
        env: The whole environment of the command.
        columns: The terminal's width, as a window resize sets it; left as the system's if None.
        cwd: The command's working directory.
        python: What runs the command: ``-m purpose_agent``, or ``-c SCRIPT`` that does.

    Returns:
        The exit code, what the piped stream carried, and what the terminal showed.
    """
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    if columns is not None:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, terminal: follower}
    try:
        process = subprocess.Popen(
            [sys.executable, *python, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=streams["stdout"],
            stderr=streams["stderr"],
            text=True,
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
        out, err = process.communicate(timeout=120)
    finally:
        os.close(leader)
    piped = err if terminal == "stdout" else out
    return process.returncode, piped, shown.decode("utf-8", "replace")


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m purpose_agent`` in a real subprocess, the way a user does."""
    env = {k: v for k, v in os.environ.items() if k != "PURPOSE_AGENT_DB_URL"}
    return run_python_module("purpose_agent", *args, cwd=cwd, env=env)


def json_lines(text: str) -> list[Any]:
    """Parse JSON Lines output."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
