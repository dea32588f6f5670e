"""Alembic environment for purpose_agent.

The connection comes from the caller when the package migrates from code (``config.attributes
["connection"]``, already holding the migration lock); an Engine there, or else a URL from
``-x url=...``, then ``PURPOSE_AGENT_DB_URL``, then the embedded default, is connected here
under the migration lock.
"""

from __future__ import annotations

import logging.config
import os

from sqlalchemy import Connection, Engine, pool

from alembic import context
from purpose_agent.db.engine import DEFAULT_URL, URL_ENV, make_engine
from purpose_agent.db.migrate import VERSION_TABLE
from purpose_agent.db.models import Base
from purpose_agent.db.transactions import migration_lock

config = context.config
# An ini may hold only ``script_location`` (a deploy pointing plain ``alembic`` at the installed
# package); logging is configured only when the file has a logging section.
if (
    config.config_file_name is not None
    and config.attributes.get("connection") is None
    and config.file_config.has_section("formatters")
):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get(URL_ENV)
        or config.get_main_option("sqlalchemy.url")
        or DEFAULT_URL
    )


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _configure(given)
        with context.begin_transaction():
            context.run_migrations()
        return
    # An Engine handed in (pytest-alembic does this) is used as is; otherwise one is built.
    engine = given if isinstance(given, Engine) else make_engine(_url(), poolclass=pool.NullPool)
    try:
        with migration_lock(engine) as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        if engine is not given:
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
