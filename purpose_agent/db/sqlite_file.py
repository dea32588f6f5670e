"""The SQLite file a store opened, watched for being deleted or replaced under the store.

A connection to a SQLite file keeps the file it opened, whatever later happens to its path.
Deleted by a cleanup job, or replaced by a restore copied into place while workers run, the
old file lives on in the store's open connections: every save still succeeded, into a file
that no longer had a name (gone once the connections closed), while connections opened later
saw the new file. Python's ``sqlite3`` gives no access to SQLite's own check for a moved file,
so the store compares the path's device and inode with those of the file it opened: before
every write, and before a read at most every :data:`READ_CHECK_SECONDS` (a ``stat`` costs
about 2 µs, a tenth of a small read). A changed file fails the call with ``StoreUnavailable``,
and every call after it, until the store is opened again on whatever the path now holds.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import Engine, event

from purpose_agent.errors import StoreUnavailable

# How stale a read's view of the file's identity may be.
READ_CHECK_SECONDS = 0.05


class WatchedFile:
    """The identity of the file a store opened, and the check that it is still the path's.

    Args:
        path: The database file, as the URL names it (made absolute: a relative path is the
            working directory's at the time the store opens).
        shown: The store's URL, for the error.
    """

    def __init__(self, path: str, shown: str) -> None:
        self._path = os.path.abspath(path)
        self._shown = shown
        self._identity: tuple[int, int] | None = None
        self._read_ok_until = 0.0
        self._engine: Engine | None = None

    def remember(self) -> None:
        """Take the path's file as the store's (once its schema is there)."""
        try:
            found = os.stat(self._path)
        except OSError:
            return  # a path the store cannot stat (a URI's): nothing to compare with
        self._identity = (found.st_dev, found.st_ino)

    def check(self) -> None:
        """Before a write: the path still names the file the store opened.

        Raises:
            StoreUnavailable: The file was deleted, moved or replaced; nothing was done.
        """
        identity = self._identity
        if identity is None:
            return
        try:
            found = os.stat(self._path)
        except FileNotFoundError:
            raise self._changed("deleted or moved away") from None
        except OSError:
            return  # the path cannot be looked at now; the connection's own error will tell
        if (found.st_dev, found.st_ino) != identity:
            raise self._changed("replaced by another file")
        self._read_ok_until = time.monotonic() + READ_CHECK_SECONDS

    def check_read(self) -> None:
        """Before a read: as :meth:`check`, unless the file was found in place just now."""
        if self._identity is not None and time.monotonic() >= self._read_ok_until:
            self.check()

    def watch(self, engine: Engine) -> None:
        """Check before the engine opens a connection, and as its pool hands one out.

        A connection opened on a deleted path would create an empty file there, in which
        every read fails with "no such table": the check comes first.
        """
        self._engine = engine
        event.listen(engine, "do_connect", self._on_connect)
        event.listen(engine, "checkout", self._on_checkout)

    def unwatch(self) -> None:
        """Stop checking the engine's connections (the store is closed)."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        for name, listener in (("do_connect", self._on_connect), ("checkout", self._on_checkout)):
            if event.contains(engine, name, listener):
                event.remove(engine, name, listener)

    def _on_connect(self, *_: Any) -> None:
        self.check()

    def _on_checkout(self, *_: Any) -> None:
        self.check_read()

    def _changed(self, how: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"{self._shown}: the database file {self._path} was {how} since the store opened "
            "it (a cleanup, a restore copied into place); nothing was written to it, and "
            "nothing more will be: open the store again to use the file the path now names"
        )
