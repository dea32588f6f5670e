"""Running an asyncio store through the synchronous behaviour suite."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from purpose_agent import PAEvent, Recovery, RunState

T = TypeVar("T")

_CHUNK = 64


class AsyncCheckpointer(Protocol):
    """The asyncio form of the checkpointer protocol."""

    async def save_event(self, event: PAEvent) -> None: ...
    async def save_events(
        self, events: Iterable[PAEvent], snapshot: RunState | None = None
    ) -> None: ...
    async def save_snapshot(self, run_id: str, state: RunState) -> None: ...
    async def load_latest(self, run_id: str) -> RunState | None: ...
    async def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[PAEvent]: ...
    def iter_events(self, run_id: str, since_seq: int = 0) -> AsyncIterator[PAEvent]: ...
    async def recover(self, run_id: str) -> Recovery | None: ...
    async def list_runs(self, limit: int | None = None, *, offset: int = 0) -> list[str]: ...
    async def delete_run(self, run_id: str) -> None: ...
    async def close(self) -> None: ...


class BlockingAdapter:
    """Presents an async store as a synchronous one, running it on a private event loop.

    The loop lives in its own thread, so the adapter works from any thread, as the suite's
    concurrency tests need.
    """

    def __init__(self, factory: Callable[[], Coroutine[Any, Any, AsyncCheckpointer]]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self._store = self._run(factory())
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
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

    def list_runs(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        return self._run(self._store.list_runs(limit, offset=offset))

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
            self._run(self._store.close())
        finally:
            self._stop()
