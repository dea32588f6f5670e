"""Create the event log, the snapshots and the runs index.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Types are spelled out here rather than imported from the models, so that this revision keeps
creating the same schema whatever the models become.

Each step is skipped when what it makes (or removes) is already there (gone): MariaDB commits
every DDL statement by itself, so a migration killed part-way (a deploy timeout, a cancelled
first open) leaves some of them done under the old version row, and running the revision
again must finish the job rather than fail on the first table that exists.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_ID = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
)
LABEL = RUN_ID
PAYLOAD = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# Under both dialect names: SQLAlchemy reads only the options prefixed with the URL's
# dialect's name (a mariadb:// URL ignored mysql_engine and got MyISAM or Aria tables).
# DYNAMIC rows: a server whose default is COMPACT refused the 1,020-byte primary key.
TABLE = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")
    for option, value in (("charset", "utf8mb4"), ("engine", "InnoDB"), ("row_format", "DYNAMIC"))
}


def _tables() -> set[str]:
    return set(sa.inspect(op.get_bind()).get_table_names())


def _indexes(table: str) -> set[str]:
    return {index["name"] for index in sa.inspect(op.get_bind()).get_indexes(table)}


def upgrade() -> None:
    made = _tables()
    if "pa_events" not in made:
        _create_events()
    if "pa_snapshots" not in made:
        _create_snapshots()
    if "pa_runs" not in made:
        _create_runs()
    if op.f("ix_pa_runs_updated_ns") not in _indexes("pa_runs"):
        op.create_index(op.f("ix_pa_runs_updated_ns"), "pa_runs", ["updated_ns"])


def _create_events() -> None:
    op.create_table(
        "pa_events",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("lane_id", LABEL, nullable=False),
        sa.Column("data", PAYLOAD, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_pa_events")),
        **TABLE,
    )


def _create_snapshots() -> None:
    op.create_table(
        "pa_snapshots",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", PAYLOAD, nullable=False),
        sa.Column("written_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_pa_snapshots")),
        **TABLE,
    )


def _create_runs() -> None:
    op.create_table(
        "pa_runs",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_pa_runs")),
        **TABLE,
    )


def downgrade() -> None:
    made = _tables()
    if "pa_runs" in made:
        if op.f("ix_pa_runs_updated_ns") in _indexes("pa_runs"):
            op.drop_index(op.f("ix_pa_runs_updated_ns"), table_name="pa_runs")
        op.drop_table("pa_runs")
    if "pa_snapshots" in made:
        op.drop_table("pa_snapshots")
    if "pa_events" in made:
        op.drop_table("pa_events")
