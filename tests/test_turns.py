"""Threads take turns on a store's write connection in the order they asked."""

from __future__ import annotations

import threading
import time

from purpose_agent.db.turns import Turns


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
