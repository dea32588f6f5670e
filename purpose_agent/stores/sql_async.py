"""The asyncio twin of :class:`~purpose_agent.stores.sql.SQLCheckpointer`.

Each method runs the synchronous store's method in a worker thread. The behaviour is the same
by construction (one implementation, one behaviour suite), the event loop never blocks on the
database, and every backend the synchronous store supports works here without an async
driver. The store is thread-safe and its engine pools connections, so concurrent awaits run in
parallel up to the pool size.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from purpose_agent.protocol import Recovery
from purpose_agent.records import check_run_id, check_since
from purpose_agent.runtime.events import EventKind, NewEvent, PAEvent
from purpose_agent.runtime.state import RunState
from purpose_agent.stores.sql import SQLCheckpointer


class AsyncSQLCheckpointer:
    """``SQLCheckpointer`` with ``async`` methods; same arguments, same behaviour.

    Build it with :meth:`open` (which migrates without blocking the loop) or directly::

        async with await AsyncSQLCheckpointer.open("postgresql+psycopg://...") as store:
            await store.save_events(events, snapshot=state)
            recovery = await store.recover(run_id)
    """

    def __init__(self, url_or_engine: str | URL | Engine | None = None, **options: Any) -> None:
        self._store = SQLCheckpointer(url_or_engine, **options)

    @classmethod
    async def open(cls, url_or_engine: str | URL | Engine | None = None, **options: Any) -> Self:
        """Create the store in a worker thread, so that migrating does not block the loop."""
        return await asyncio.to_thread(cls, url_or_engine, **options)

    @property
    def sync(self) -> SQLCheckpointer:
        """The synchronous store underneath, for code that is not async."""
        return self._store

    async def save_event(self, event: PAEvent) -> None:
        """See :meth:`SQLCheckpointer.save_event`."""
        await asyncio.to_thread(self._store.save_event, event)

    async def save_events(
        self, events: Iterable[PAEvent], snapshot: RunState | None = None
    ) -> None:
        """See :meth:`SQLCheckpointer.save_events`."""
        # A generator is consumed here, on the loop, rather than from a worker thread.
        batch = events if isinstance(events, list | tuple | PAEvent) else list(events)
        await asyncio.to_thread(self._store.save_events, batch, snapshot)

    async def save_snapshot(self, run_id: str, state: RunState) -> None:
        """See :meth:`SQLCheckpointer.save_snapshot`."""
        await asyncio.to_thread(self._store.save_snapshot, run_id, state)

    async def append(
        self,
        run_id: str,
        events: Iterable[NewEvent],
        *,
        expected_last_seq: int | None = None,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> list[PAEvent]:
        """See :meth:`SQLCheckpointer.append`."""
        batch = events if isinstance(events, list | tuple) else list(events)
        return await asyncio.to_thread(
            functools.partial(
                self._store.append,
                run_id,
                batch,
                expected_last_seq=expected_last_seq,
                snapshot=snapshot,
                group=group,
            )
        )

    async def last_seq(self, run_id: str) -> int:
        """See :meth:`SQLCheckpointer.last_seq`."""
        return await asyncio.to_thread(self._store.last_seq, run_id)

    async def event_by_key(self, run_id: str, key: str) -> PAEvent | None:
        """See :meth:`SQLCheckpointer.event_by_key`."""
        return await asyncio.to_thread(self._store.event_by_key, run_id, key)

    async def load_latest(self, run_id: str) -> RunState | None:
        """See :meth:`SQLCheckpointer.load_latest`."""
        return await asyncio.to_thread(self._store.load_latest, run_id)

    async def list_events(
        self,
        run_id: str,
        since_seq: int = 0,
        limit: int | None = None,
        *,
        before: int | None = None,
        newest_first: bool = False,
        kinds: Iterable[EventKind | str] | None = None,
        lanes: Iterable[str] | None = None,
    ) -> list[PAEvent]:
        """See :meth:`SQLCheckpointer.list_events`."""
        return await asyncio.to_thread(
            functools.partial(
                self._store.list_events,
                run_id,
                since_seq,
                limit,
                before=before,
                newest_first=newest_first,
                kinds=kinds,
                lanes=lanes,
            )
        )

    def iter_events(self, run_id: str, since_seq: int = 0) -> AsyncIterator[PAEvent]:
        """Stream events page by page; each page is fetched in a worker thread."""
        check_run_id(run_id)
        check_since(since_seq)
        return self._iterate(run_id, since_seq)

    async def _iterate(self, run_id: str, since_seq: int) -> AsyncIterator[PAEvent]:
        page_size = self._store._page_size
        while True:
            page = await asyncio.to_thread(self._store.list_events, run_id, since_seq, page_size)
            for event in page:
                yield event
            if len(page) < page_size:
                return
            since_seq = page[-1].seq

    async def recover(self, run_id: str) -> Recovery | None:
        """See :meth:`SQLCheckpointer.recover`."""
        return await asyncio.to_thread(self._store.recover, run_id)

    async def list_runs(
        self,
        limit: int | None = None,
        *,
        offset: int = 0,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        """See :meth:`SQLCheckpointer.list_runs`."""
        return await asyncio.to_thread(
            functools.partial(
                self._store.list_runs, limit, offset=offset, group=group, prefix=prefix
            )
        )

    async def list_groups(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """See :meth:`SQLCheckpointer.list_groups`."""
        return await asyncio.to_thread(self._store.list_groups, limit, offset=offset)

    async def run_group(self, run_id: str) -> str | None:
        """See :meth:`SQLCheckpointer.run_group`."""
        return await asyncio.to_thread(self._store.run_group, run_id)

    async def compact(self, run_id: str) -> int:
        """See :meth:`SQLCheckpointer.compact`."""
        return await asyncio.to_thread(self._store.compact, run_id)

    async def delete_runs(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        group: str | None = None,
        prefix: str | None = None,
        older_than: timedelta | datetime | None = None,
        keep_newest: int | None = None,
    ) -> list[str]:
        """See :meth:`SQLCheckpointer.delete_runs`."""
        chosen = None if run_ids is None else list(run_ids)
        return await asyncio.to_thread(
            functools.partial(
                self._store.delete_runs,
                chosen,
                group=group,
                prefix=prefix,
                older_than=older_than,
                keep_newest=keep_newest,
            )
        )

    async def delete_run(self, run_id: str) -> None:
        """See :meth:`SQLCheckpointer.delete_run`."""
        await asyncio.to_thread(self._store.delete_run, run_id)

    async def close(self) -> None:
        """Release the store's connections."""
        await asyncio.to_thread(self._store.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store.url!r})"
