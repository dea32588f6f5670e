"""Writer processes that are SIGKILLed, and processes racing on one run, on a private Postgres."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from sqlalchemy.engine import URL

from purpose_agent import SQLCheckpointer
from purpose_agent.testing.suite import ev
from tests.reliability.processes import Writer, race, steps
from tests.reliability.workload import JOIN_TIMEOUT, check_steps

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

KILLS = 10


def test_sigkilled_writers_lose_no_acknowledged_step(postgres_db: URL) -> None:
    url = postgres_db.render_as_string(hide_password=False)
    size = 5
    SQLCheckpointer(url).close()  # migrate once, before the first kill
    pick = random.Random(8)  # fixed: the same kill points on every run
    acknowledged: set[int] = set()
    said: list[str] = []
    for _ in range(KILLS):
        first = max(acknowledged, default=0) + 1
        writer = Writer(steps, url, "r", first, size)
        opened = writer.first_line()
        assert opened == "open", opened
        time.sleep(pick.uniform(0.05, 0.3))  # somewhere in the middle of a save
        assert writer.process.pid is not None
        os.kill(writer.process.pid, signal.SIGKILL)
        writer.process.join(JOIN_TIMEOUT)
        lines = writer.lines()
        said += lines
        acked = {int(line.split()[1]) for line in lines if line.startswith("ack")}
        assert acked, f"the writer acknowledged nothing before it was killed: {lines}"
        acknowledged |= acked
    assert [line for line in said if not line.startswith("ack")] == []
    with SQLCheckpointer(url) as store:
        check_steps(store, "r", acknowledged, size)


@pytest.mark.parametrize("same_data", [True, False], ids=["identical", "different"])
def test_two_processes_racing_on_one_run(postgres_db: URL, same_data: bool) -> None:
    url = postgres_db.render_as_string(hide_password=False)
    count = 100
    SQLCheckpointer(url).close()
    start = time.time() + 0.5  # both have opened their store by then
    tags = ["same", "same"] if same_data else ["a", "b"]
    writers = [Writer(race, url, "r", count, tag, start) for tag in tags]
    results = [writer.lines() for writer in writers]
    for writer in writers:
        writer.process.join(JOIN_TIMEOUT)
    with SQLCheckpointer(url) as store:
        stored = store.list_events("r")
    assert [event.seq for event in stored] == list(range(1, count + 1))
    if same_data:
        assert results == [[f"ok {seq}" for seq in range(1, count + 1)]] * 2
        assert stored == [ev("r", seq, writer="same") for seq in range(1, count + 1)]
        return
    for seq in range(1, count + 1):
        outcomes = [result[seq - 1] for result in results]
        assert sorted(outcomes) == [f"conflict {seq}", f"ok {seq}"], f"seq {seq}: {outcomes}"
        assert stored[seq - 1] == ev("r", seq, writer=tags[outcomes.index(f"ok {seq}")])
