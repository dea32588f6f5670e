"""Create the event log, the snapshots and the runs index.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Types are spelled out here rather than imported from the models, so that this revision keeps
creating the same schema whatever the models become.
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
TABLE = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}


def upgrade() -> None:
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
    op.create_table(
        "pa_snapshots",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", PAYLOAD, nullable=False),
        sa.Column("written_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_pa_snapshots")),
        **TABLE,
    )
    op.create_table(
        "pa_runs",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_pa_runs")),
        **TABLE,
    )
    op.create_index(op.f("ix_pa_runs_updated_ns"), "pa_runs", ["updated_ns"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pa_runs_updated_ns"), table_name="pa_runs")
    op.drop_table("pa_runs")
    op.drop_table("pa_snapshots")
    op.drop_table("pa_events")
