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
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from purpose_agent import SQLCheckpointer
from purpose_agent.cli import cli
from purpose_agent.db.models import Base

STORES = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


def empty_tables(url: str) -> None:
    """Migrate a server database if needed and delete every row a previous test left."""
    SQLCheckpointer(url).close()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


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


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m purpose_agent`` in a real subprocess, the way a user does."""
    env = {k: v for k, v in os.environ.items() if k != "PURPOSE_AGENT_DB_URL"}
    return run_python_module("purpose_agent", *args, cwd=cwd, env=env)


def json_lines(text: str) -> list[Any]:
    """Parse JSON Lines output."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
