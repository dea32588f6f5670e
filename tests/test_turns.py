"""Threads, and tasks, take turns on a store's writes in the order they asked."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.util import greenlet_spawn

from purpose_agent.db.turns import TaskTurns, Turns


def _wait_until(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_turns_go_to_waiting_threads_in_the_order_they_asked() -> None:
    turns = Turns()
    assert turns.take(1.0)
    order: list[str] = []

    def waiter(name: str) -> None:
        assert turns.take(10.0)
        order.append(name)
        turns.give_back()

    threads = []
    for count, name in enumerate(("b", "c", "d"), start=1):
        thread = threading.Thread(target=waiter, args=(name,))
        thread.start()
        threads.append(thread)
        _wait_until(lambda count=count: len(turns._waiting) == count)
    turns.give_back()
    for thread in threads:
        thread.join()
    assert order == ["b", "c", "d"]
    assert turns.try_take()  # the last one gave the turn back to nobody


def test_a_thread_that_asks_again_at_once_queues_behind_one_already_waiting() -> None:
    turns = Turns()
    assert turns.take(1.0)
    taken_at: list[int] = []
    loops = [0]

    def waiter() -> None:
        assert turns.take(10.0)
        taken_at.append(loops[0])
        turns.give_back()

    thread = threading.Thread(target=waiter)
    thread.start()
    _wait_until(lambda: len(turns._waiting) == 1)
    for _ in range(200):  # a writer looping over steps
        turns.give_back()
        assert turns.take(10.0)
        loops[0] += 1
    turns.give_back()
    thread.join()
    assert taken_at == [0]


def test_a_wait_that_runs_out_leaves_no_one_behind_in_the_queue() -> None:
    turns = Turns()
    assert turns.take(1.0)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(turns.take(0.05)))
    thread.start()
    thread.join()
    assert results == [False]
    assert len(turns._waiting) == 0
    assert not turns.try_take()  # still held by its first taker
    turns.give_back()
    assert turns.try_take()


# TaskTurns is taken from the store's synchronous code, which runs in greenlets on the loop.


async def _in_turn(turns: TaskTurns, work: Callable[[], Any], timeout: float = 10.0) -> Any:
    def run() -> Any:
        if not turns.take(timeout):
            return "timed out"
        try:
            return work()
        finally:
            turns.give_back()

    return await greenlet_spawn(run)


def test_tasks_take_turns_in_the_order_they_asked_and_never_two_at_once() -> None:
    turns = TaskTurns()
    order: list[str] = []
    inside = [0, 0]  # now, most at once

    async def step(name: str) -> None:
        async def hold() -> None:
            inside[0] += 1
            inside[1] = max(inside)
            await asyncio.sleep(0.001)  # other tasks run (and ask) meanwhile
            order.append(name)
            inside[0] -= 1

        await greenlet_spawn(_hold_in_turn, turns, hold)

    async def main() -> None:
        await asyncio.gather(*(step(name) for name in "abcdefgh"))

    asyncio.run(main())
    assert order == list("abcdefgh")
    assert inside[1] == 1


def _hold_in_turn(turns: TaskTurns, hold: Callable[[], Any]) -> None:
    from sqlalchemy.util import await_only

    assert turns.take(10.0)
    try:
        await_only(hold())
    finally:
        turns.give_back()


def test_a_task_in_its_turn_may_take_it_again() -> None:
    turns = TaskTurns()

    def nested() -> str:
        assert turns.take(0.01)  # would time out if it waited for itself
        turns.give_back()
        return "done"

    async def main() -> tuple[Any, Any]:
        first = await _in_turn(turns, nested)
        return first, await _in_turn(turns, lambda: "again")

    assert asyncio.run(main()) == ("done", "again")


def test_a_task_whose_wait_runs_out_leaves_no_one_behind_in_the_queue() -> None:
    turns = TaskTurns()

    async def main() -> list[Any]:
        release = asyncio.Event()

        async def holder() -> None:
            await greenlet_spawn(_hold_in_turn, turns, release.wait)

        holding = asyncio.ensure_future(holder())
        await asyncio.sleep(0.01)
        timed_out = await _in_turn(turns, lambda: "got it", timeout=0.02)
        queued = len(turns._waiting)
        release.set()
        await holding
        return [timed_out, queued, await _in_turn(turns, lambda: "next")]

    assert asyncio.run(main()) == ["timed out", 0, "next"]


@pytest.mark.parametrize("when", ["waiting", "handed over"])
def test_a_task_cancelled_for_its_turn_passes_it_on(when: str) -> None:
    turns = TaskTurns()

    async def main() -> list[str]:
        release = asyncio.Event()
        done: list[str] = []

        async def holder() -> None:
            await greenlet_spawn(_hold_in_turn, turns, release.wait)

        holding = asyncio.ensure_future(holder())
        await asyncio.sleep(0.01)
        cancelled = asyncio.ensure_future(_in_turn(turns, lambda: done.append("cancelled")))
        third = asyncio.ensure_future(_in_turn(turns, lambda: done.append("third")))
        await asyncio.sleep(0.01)
        assert len(turns._waiting) == 2
        if when == "waiting":
            cancelled.cancel()
            release.set()
        else:
            release.set()
            await asyncio.sleep(0)  # the holder gives the turn to the cancelled task...
            assert len(turns._waiting) == 1  # the third task still waits
            cancelled.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(holding, third)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        done.append(await _in_turn(turns, lambda: "after"))
        return done

    assert asyncio.run(main()) == ["third", "after"]


def test_a_turn_left_by_a_loop_that_has_gone_does_not_hold_the_next_loop() -> None:
    turns = TaskTurns()

    async def leave_held() -> None:
        await greenlet_spawn(turns.take, 1.0)  # never given back

    asyncio.run(leave_held())
    assert asyncio.run(_in_turn(turns, lambda: "taken", timeout=0.05)) == "taken"


def test_a_thread_interrupted_while_it_waits_for_its_turn_leaves_the_turn_to_others() -> None:
    """Ctrl-C in a thread waiting for the write turn (the main thread of a CLI or a worker).

    Left in the queue, the interrupted wait was handed the next turn, which nobody would give
    back: every later write of the store waited its busy timeout and failed.
    """
    import os
    import signal

    turns = Turns()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        assert turns.take(5)
        holding.set()
        assert release.wait(30)
        turns.give_back()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)

    def interrupt() -> None:  # once this thread waits for the turn
        _wait_until(lambda: len(turns._waiting) == 1)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=interrupt)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        turns.take(30)
    timer.join()
    release.set()
    holder.join(10)
    assert turns.take(0.5)  # the turn is free again
    turns.give_back()
    assert turns.try_take()
