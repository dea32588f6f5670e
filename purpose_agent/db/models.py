r"""The ORM models: the schema of the SQL stores, which the Alembic revisions create.

Column types are chosen here, once, for an exact round trip on every backend:

* Payloads (event data, snapshot state) are JSON *text*, not JSON/JSONB. Postgres JSONB
  reorders keys, drops the sign of ``-0.0``, normalises numbers and rejects ``\\u0000``; a text
  column keeps the bytes :mod:`purpose_agent.codec` wrote, which are plain ASCII. MariaDB's
  ``TEXT`` stops at 64 KiB, so it gets ``LONGTEXT``.
* ``ts`` is a double everywhere (``Float`` would be single precision on MariaDB).
* On MariaDB, run ids use a binary, no-pad collation: the default collation is
  case-insensitive and ignores trailing spaces, which would make ``"A"`` and ``"a "`` one run.
* Times the store writes itself are integer nanoseconds: they order runs across processes
  without depending on each backend's timestamp precision.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Double, Index, MetaData, String, Text, text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RunId = String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
)
Payload = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
Label = String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
)
# Under both dialect names: SQLAlchemy reads only the options prefixed with the URL's
# dialect's name, so a mariadb:// URL ignored the mysql_ ones and got the server's default
# engine (MyISAM or Aria: no transactions) and character set. DYNAMIC rows, the default since
# MariaDB 10.2, take index keys up to 3,072 bytes: a server set to COMPACT refused the
# primary key (1709: the maximum column size is 767 bytes).
_MYSQL_TABLE = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")
    for option, value in (("charset", "utf8mb4"), ("engine", "InnoDB"), ("row_format", "DYNAMIC"))
}


class Base(DeclarativeBase):
    """The one declarative base: every table and constraint gets a predictable name."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {int: BigInteger(), float: Double(), str: String(255)}  # noqa: RUF012


class EventRecord(Base):
    """One event of a run's log.

    The primary key ``(run_id, seq)`` is the concurrency guard (a second writer of the same
    position fails on it) and lets the table be hash-partitioned or distributed by ``run_id``.
    """

    __tablename__ = "pa_events"
    # The key's index starts with run_id: it stays unique per run when the table is
    # partitioned or distributed by run_id. Rows without a key (NULL) never collide, and
    # where the backend has partial indexes they are left out of it, so that an unkeyed
    # append writes no entry there (revision 0003; benchmarks/runs_row.py measures it).
    __table_args__ = (
        Index(
            "uq_pa_events_run_id_key",
            "run_id",
            "key",
            unique=True,
            sqlite_where=text("key IS NOT NULL"),
            postgresql_where=text("key IS NOT NULL"),
        ),
        _MYSQL_TABLE,
    )

    run_id: Mapped[str] = mapped_column(RunId, primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(64))
    ts: Mapped[float]
    lane_id: Mapped[str] = mapped_column(Label)
    data: Mapped[str] = mapped_column(Payload)
    key: Mapped[str | None] = mapped_column(Label)


class SnapshotRecord(Base):
    """The latest snapshot of a run: the one with the highest ``seq``."""

    __tablename__ = "pa_snapshots"
    __table_args__ = (_MYSQL_TABLE,)

    run_id: Mapped[str] = mapped_column(RunId, primary_key=True)
    seq: Mapped[int]
    state: Mapped[str] = mapped_column(Payload)
    written_ns: Mapped[int]


class RunRecord(Base):
    """One row per run with events or a snapshot: what ``list_runs`` reads and orders.

    ``last_seq`` is the highest seq the run ever stored: appends take their positions from it
    (locking this row), and it survives the compaction of covered events.
    """

    __tablename__ = "pa_runs"
    __table_args__ = (
        Index(None, "updated_ns"),
        # Only grouped runs: every append moves updated_ns, and an ungrouped run's row
        # would otherwise move an entry of this index too.
        Index(
            "ix_pa_runs_group_id_updated_ns",
            "group_id",
            "updated_ns",
            sqlite_where=text("group_id IS NOT NULL"),
            postgresql_where=text("group_id IS NOT NULL"),
        ),
        _MYSQL_TABLE,
    )

    run_id: Mapped[str] = mapped_column(RunId, primary_key=True)
    created_ns: Mapped[int]
    updated_ns: Mapped[int]
    last_seq: Mapped[int]
    group_id: Mapped[str | None] = mapped_column(Label)
