"""Partial indexes for event keys and run groups.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Most events have no key and most runs no group, yet 0002's indexes held an entry for each of
them: every unkeyed append wrote a key index entry, and every append moved an entry of the
group index when it moved its run's ``updated_ns``. On SQLite and Postgres both indexes now
hold only the rows that have a key or a group (``WHERE ... IS NOT NULL``); lookups by key or
group use them as before, since an equality on a column implies it is not NULL. MariaDB has
no partial indexes, so its indexes stay as 0002 made them.

The indexes are rebuilt inside the migration's transaction, which locks the tables for as
long as that takes (a few seconds per million events). An index or a table that is not there
(dropped by hand) is not dropped: the index is made, and a missing table is made as the head
has it by the upgrade to the head (``purpose_agent.db.migrate.repair``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("uq_pa_events_run_id_key", "pa_events", ["run_id", "key"], True, "key IS NOT NULL"),
    (
        "ix_pa_runs_group_id_updated_ns",
        "pa_runs",
        ["group_id", "updated_ns"],
        False,
        "group_id IS NOT NULL",
    ),
)


def _existing(table: str) -> set[str] | None:
    """The names of ``table``'s indexes; ``None`` when the table is not there."""
    inspector = sa.inspect(op.get_bind())
    if table not in inspector.get_table_names():
        return None
    return {index["name"] for index in inspector.get_indexes(table)}


def _has_partial_indexes() -> bool:
    return op.get_context().dialect.name in ("sqlite", "postgresql")


def upgrade() -> None:
    if not _has_partial_indexes():
        return
    for name, table, columns, unique, where in INDEXES:
        existing = _existing(table)
        if existing is None:
            continue
        if name in existing:
            op.drop_index(name, table_name=table)
        op.create_index(
            name,
            table,
            columns,
            unique=unique,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    if not _has_partial_indexes():
        return
    for name, table, columns, unique, _ in INDEXES:
        existing = _existing(table)
        if existing is None:
            continue
        if name in existing:
            op.drop_index(name, table_name=table)
        op.create_index(name, table, columns, unique=unique)
