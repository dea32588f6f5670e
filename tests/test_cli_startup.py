"""Starting the command is cheap: `--version` and `--help` load no store library."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

import purpose_agent
from purpose_agent.cli.app import COMMANDS, App, cli

HEAVY = ("sqlalchemy", "pydantic", "rich", "alembic", "psycopg", "pymysql")

_PROBE = f"""
import sys
from purpose_agent.cli import main
sys.argv = ["purpose-agent", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("loaded:", ",".join(sorted({{name.split(".")[0] for name in sys.modules}} & {set(HEAVY)!r})))
"""


def _loaded_by(*args: str) -> tuple[str, list[str]]:
    """Run the entry point in a fresh interpreter; return its output and the heavy modules."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    *output, last = result.stdout.splitlines()
    assert last.startswith("loaded:")
    names = last.removeprefix("loaded:").strip()
    return "\n".join(output), names.split(",") if names else []


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_load_no_store_library(flag: str) -> None:
    output, heavy = _loaded_by(flag)
    assert "purpose-agent" in output
    assert heavy == []


def test_a_command_still_loads_what_it_needs() -> None:
    output, heavy = _loaded_by("runs", "--help")
    assert "List, inspect, page through, verify and delete runs, and list run groups." in output
    assert "sqlalchemy" in heavy


def test_root_help_lists_commands_as_click_would_with_them_loaded() -> None:
    lazy = App(name="purpose-agent")
    loaded = click.Group(
        name="purpose-agent",
        commands={name: cli.get_command(click.Context(cli), name) for name in COMMANDS},
    )

    def listing(group: click.Group) -> str:
        context = click.Context(group, info_name="purpose-agent")
        formatter = context.make_formatter()
        group.format_commands(context, formatter)
        return formatter.getvalue()

    assert not lazy.commands  # nothing imported to list them
    assert listing(lazy) == listing(loaded)
    assert "Run a small deterministic agent" in listing(lazy)


def test_the_package_imports_its_public_names_on_first_use() -> None:
    probe = (
        "import sys, purpose_agent\n"
        "print('pydantic' in sys.modules, 'sqlalchemy' in sys.modules)\n"
        "from purpose_agent import PAEvent, SQLCheckpointer\n"
        "print(PAEvent.__module__, SQLCheckpointer.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == [
        "False False",
        "purpose_agent.runtime.events purpose_agent.stores.sql",
    ]
    assert set(purpose_agent.__all__) <= set(dir(purpose_agent))
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = purpose_agent.Nope
