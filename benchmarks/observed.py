"""The store with a listener on its engine, so every statement takes SQLAlchemy's own path.

``python -m benchmarks --store benchmarks.observed:ObservedSQLCheckpointer`` measures what the
cursor fast path (taken only while nothing listens) saves, against the same run without it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from purpose_agent import SQLCheckpointer


def _ignore(*_args: Any) -> None:
    """A listener that does nothing: its presence is what routes statements through SQLAlchemy."""


class ObservedSQLCheckpointer(SQLCheckpointer):
    """``SQLCheckpointer`` whose engine has a ``before_cursor_execute`` listener."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        event.listen(self.engine, "before_cursor_execute", _ignore)
