"""Damage to a SQLite file's pages, as a bad sector or a stray write leaves it."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def ruin_page(path: Path, pages_sql: str, *params: object) -> int:
    """Overwrite the middle one of the pages ``pages_sql`` selects, and return its number.

    The WAL is checkpointed into the file first, so that what is read back after is the
    ruined page, not a newer copy of it in the WAL.
    """
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [row[0] for row in conn.execute(pages_sql, params)]
    finally:
        conn.close()
    page = pages[len(pages) // 2]
    with path.open("r+b") as file:
        file.seek((page - 1) * page_size)
        file.write(bytes(range(256)) * (page_size // 256))
    return int(page)
