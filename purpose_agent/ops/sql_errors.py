"""Driver errors raised by the operations' own SQL, translated like the store translates its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.exc import SQLAlchemyError

from purpose_agent.errors import CheckpointError, StoreUnavailable


@contextlib.contextmanager
def sql_errors(action: str, where: str) -> Iterator[None]:
    """Turn a SQLAlchemy or driver error into :class:`StoreUnavailable`, chained as the cause.

    Args:
        action: What was being done, for the message ("counting events").
        where: The store, for the message (its URL with the password hidden).

    Raises:
        StoreUnavailable: For any SQLAlchemy error inside the block.

    """
    try:
        yield
    except CheckpointError:
        raise
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise StoreUnavailable(f"{action} failed on {where}: {detail}") from exc
