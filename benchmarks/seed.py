"""The seed's ``SQLiteCheckpointer``, loaded from ``shared/seed/checkpoint.py`` as it is.

It is the baseline users migrate from. The file is found through ``PURPOSE_AGENT_SEED_PATH``
first, then at ``../shared/seed/checkpoint.py`` beside the repository (where a fresh clone
finds it) and ``shared/seed/checkpoint.py`` inside it. Without it the seed's cases are skipped
with a message saying where it was looked for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from purpose_agent import PAEvent

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV = "PURPOSE_AGENT_SEED_PATH"
_MODULE_NAME = "purpose_agent_seed_checkpoint"


def candidates() -> list[Path]:
    """Where the seed is looked for, in order."""
    found = []
    if os.environ.get(ENV):
        found.append(Path(os.environ[ENV]))
    found += [
        REPO_ROOT.parent / "shared" / "seed" / "checkpoint.py",
        REPO_ROOT / "shared" / "seed" / "checkpoint.py",
    ]
    return found


def locate() -> Path | None:
    """The seed's ``checkpoint.py``, or ``None``."""
    for path in candidates():
        if path.is_file():
            return path
    return None


def load() -> ModuleType:
    """Import the seed module from its file, unchanged.

    Raises:
        FileNotFoundError: If no candidate path holds it; the message lists where it looked.
    """
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    path = locate()
    if path is None:
        where = ", ".join(str(p) for p in candidates())
        raise FileNotFoundError(f"seed checkpoint.py not found (looked at {where}; set {ENV})")
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def bulk_load(db_path: str, events: Iterable[PAEvent]) -> None:
    """Write events into a seed database in the seed's own row format, fast.

    Used only to set up read cases (the seed has no batch write); the rows are exactly what the
    seed's ``save_event`` writes.
    """
    rows = [
        (e.run_id, e.seq, e.ts, e.kind.value, e.lane_id, json.dumps(e.to_dict(), default=str))
        for e in events
    ]
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO events (run_id, seq, ts, kind, lane_id, data) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()


def journal_settings(db_path: str) -> dict[str, object]:
    """The durability settings the seed's fresh connections get (it sets none itself)."""
    conn = sqlite3.connect(db_path)
    try:
        return {
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": conn.execute("PRAGMA synchronous").fetchone()[0],
        }
    finally:
        conn.close()
