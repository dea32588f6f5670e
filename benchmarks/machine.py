"""What the numbers were measured on: CPU, cores, memory, Python and library versions."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.seed import REPO_ROOT


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _package_changes() -> list[str] | None:
    """Files of the package that differ from the commit measured (uncommitted work)."""
    status = _git("status", "--porcelain", "--", "purpose_agent", "alembic")
    return None if status is None else [line[3:] for line in status.splitlines()]


def describe() -> dict[str, Any]:
    """The machine and software the run measured."""
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite_version": sqlite3.sqlite_version,
        "packages": {
            name: _version(name)
            for name in (
                "purpose-agent",
                "sqlalchemy",
                "psycopg",
                "psycopg-binary",
                "pydantic",
                "alembic",
            )
        },
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_package_changes": _package_changes(),
    }
