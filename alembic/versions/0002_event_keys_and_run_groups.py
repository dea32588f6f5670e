"""Event keys and run groups.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

``pa_events.key`` is the caller's optional name for an event, unique within its run;
``pa_runs.group_id`` keeps many runs together (a conversation's). Both are nullable, so the
upgrade adds them without rewriting rows written under 0001. ``pa_runs.last_seq`` of a run
whose snapshot is ahead of its events is moved up to the snapshot's seq. Types are spelled out here, as in
0001, so that this revision keeps creating the same schema whatever the models become.

As in 0001, each step is skipped when it is already done: on MariaDB, whose DDL statements
commit one by one, a migration killed part-way is finished by running it again. A step on a
table that is not there (dropped by hand) is skipped too: the upgrade to the head makes the
missing table as the head has it (``purpose_agent.db.migrate.repair``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABEL = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
)


def _tables() -> set[str]:
    return set(sa.inspect(op.get_bind()).get_table_names())


def _columns(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


def _indexes(table: str) -> set[str]:
    return {index["name"] for index in sa.inspect(op.get_bind()).get_indexes(table)}


def upgrade() -> None:
    made = _tables()
    for table, column, index, columns, unique in (
        ("pa_events", "key", "uq_pa_events_run_id_key", ["run_id", "key"], True),
        ("pa_runs", "group_id", "ix_pa_runs_group_id_updated_ns", ["group_id", "updated_ns"], False),
    ):
        if table not in made:
            continue
        has_column, has_index = column in _columns(table), index in _indexes(table)
        if has_column and has_index:
            continue
        with op.batch_alter_table(table) as batch:
            if not has_column:
                batch.add_column(sa.Column(column, LABEL, nullable=True))
            if not has_index:
                batch.create_index(index, columns, unique=unique)
    # Appends take their seqs from pa_runs.last_seq, which 0001 left at 0 for a run saved by
    # a snapshot alone: such a run's first append would land below its snapshot, where
    # recover() never looks. From 0002 on, last_seq is at least the snapshot's seq.
    if not {"pa_runs", "pa_snapshots"} <= made:
        return
    runs = sa.table("pa_runs", sa.column("run_id"), sa.column("last_seq"))
    snapshots = sa.table("pa_snapshots", sa.column("run_id"), sa.column("seq"))
    snapshot_seq = (
        sa.select(snapshots.c.seq)
        .where(snapshots.c.run_id == runs.c.run_id)
        .scalar_subquery()
    )
    op.execute(
        runs.update()
        .where(runs.c.last_seq < snapshot_seq)
        .values(last_seq=snapshot_seq)
    )


def downgrade() -> None:
    made = _tables()
    for table, column, index in (
        ("pa_runs", "group_id", "ix_pa_runs_group_id_updated_ns"),
        ("pa_events", "key", "uq_pa_events_run_id_key"),
    ):
        if table not in made:
            continue
        has_column, has_index = column in _columns(table), index in _indexes(table)
        if not has_column and not has_index:
            continue
        with op.batch_alter_table(table) as batch:
            if has_index:
                batch.drop_index(index)
            if has_column:
                batch.drop_column(column)
