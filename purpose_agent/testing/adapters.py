"""Running an asyncio store through the synchronous behaviour suite."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, cast

from purpose_agent import NewEvent, PAEvent, Recovery, RunState
from purpose_agent.protocol import (
    AsyncAppending,
    AsyncCheckpointer,
    AsyncRetention,
    AsyncRunGroups,
)

__all__ = ["AsyncCheckpointer", "BlockingAdapter"]

T = TypeVar("T")

_CHUNK = 64


class _Extended(AsyncAppending, AsyncRunGroups, AsyncRetention, Protocol):
    """The additions of the package's async store to the async protocol."""


def _require_protocol(store: object) -> None:
    """Refuse a store that is not an :class:`AsyncCheckpointer`, naming what it lacks."""
    if isinstance(store, AsyncCheckpointer):
        return
    missing = sorted(
        name
        for name in dir(AsyncCheckpointer)
        if (not name.startswith("_") or name in ("__aenter__", "__aexit__"))
        and callable(getattr(AsyncCheckpointer, name, None))
        and not callable(getattr(store, name, None))
    )
    raise TypeError(
        f"{type(store).__name__} is not an AsyncCheckpointer: it lacks "
        f"{', '.join(missing) or 'a method of the protocol'}"
    )


class BlockingAdapter:
    """Presents an async store as a synchronous one, running it on a private event loop.

    The loop lives in its own thread, so the adapter works from any thread, as the suite's
    concurrency tests need.

    Args:
        factory: Called once, with no arguments: returns a coroutine that opens the store
            (``lambda: MyAsyncStore.open(url)``). The store must satisfy
            :class:`AsyncCheckpointer`; it is entered with ``__aenter__`` and left with
            ``__aexit__`` on close, as ``async with`` would.
    """

    def __init__(self, factory: Callable[[], Coroutine[Any, Any, AsyncCheckpointer]]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            store = self._run(factory())
            _require_protocol(store)
            # Entered as a caller's `async with` enters it, and left the same way by close().
            self._store = self._run(store.__aenter__())
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            # After close() the store itself must answer (a closed store refuses every call),
            # not the adapter's stopped loop with a RuntimeError; a throwaway loop in a
            # thread of its own serves whatever thread the caller is on.
            with ThreadPoolExecutor(1) as worker:
                return worker.submit(asyncio.run, coro).result()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def save_event(self, event: PAEvent) -> None:
        self._run(self._store.save_event(event))

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        self._run(self._store.save_events(events, snapshot))

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        self._run(self._store.save_snapshot(run_id, state))

    def load_latest(self, run_id: str) -> RunState | None:
        return self._run(self._store.load_latest(run_id))

    def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None, **bounds: Any
    ) -> list[PAEvent]:
        if not bounds:
            return self._run(self._store.list_events(run_id, since_seq, limit))
        # Bounded reads are an addition of the package's stores, not of the async protocol.
        store: Any = self._store
        return self._run(store.list_events(run_id, since_seq, limit, **bounds))

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        stream = self._store.iter_events(run_id, since_seq)
        return self._drain(stream)

    def _drain(self, stream: AsyncIterator[PAEvent]) -> Iterator[PAEvent]:
        # One trip to the loop thread per chunk, not per event: the trip costs more than
        # decoding an event, and a chunk is far smaller than the store's own pages.
        async def chunk() -> list[PAEvent]:
            events: list[PAEvent] = []
            try:
                while len(events) < _CHUNK:
                    events.append(await anext(stream))
            except StopAsyncIteration:
                pass
            return events

        while True:
            events = self._run(chunk())
            yield from events
            if len(events) < _CHUNK:
                return

    def recover(self, run_id: str) -> Recovery | None:
        return self._run(self._store.recover(run_id))

    def list_runs(self, limit: int | None = None, *, offset: int = 0, **filters: Any) -> list[str]:
        if not filters:
            return self._run(self._store.list_runs(limit, offset=offset))
        return self._run(self._extended.list_runs(limit, offset=offset, **filters))

    # Appends, run groups and retention: the package's async store has them, as async methods
    # of the same names; a store without them fails the rows that use them.

    @property
    def _extended(self) -> _Extended:
        return cast("_Extended", self._store)

    def append(self, run_id: str, events: Iterable[NewEvent], **options: Any) -> list[PAEvent]:
        # A generator is drained here, in the caller's thread; anything else goes as it is,
        # so that the store's own checks see what the caller passed.
        batch = list(events) if isinstance(events, Iterator) else events
        return self._run(self._extended.append(run_id, batch, **options))

    def last_seq(self, run_id: str) -> int:
        return self._run(self._extended.last_seq(run_id))

    def event_by_key(self, run_id: str, key: str) -> PAEvent | None:
        return self._run(self._extended.event_by_key(run_id, key))

    def list_groups(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        return self._run(self._extended.list_groups(limit, offset=offset))

    def run_group(self, run_id: str) -> str | None:
        return self._run(self._extended.run_group(run_id))

    def compact(self, run_id: str) -> int:
        return self._run(self._extended.compact(run_id))

    def delete_runs(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        group: str | None = None,
        prefix: str | None = None,
        older_than: timedelta | datetime | None = None,
        keep_newest: int | None = None,
        whole_groups: bool = False,
    ) -> list[str]:
        chosen = run_ids if run_ids is None or isinstance(run_ids, str) else list(run_ids)
        return self._run(
            self._extended.delete_runs(
                chosen,
                group=group,
                prefix=prefix,
                older_than=older_than,
                keep_newest=keep_newest,
                whole_groups=whole_groups,
            )
        )

    def delete_run(self, run_id: str) -> None:
        self._run(self._store.delete_run(run_id))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._store.__aexit__(None, None, None))
        finally:
            self._stop()
