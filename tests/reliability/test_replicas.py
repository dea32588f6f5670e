"""Read replicas: a private primary and a hot standby cloned from it with ``pg_basebackup -R``.

Reads go to the standby; a writer still reads its own writes while the standby lags (made to
lag with ``recovery_min_apply_delay``); a stopped standby turns reads back to the primary, and
a restarted one serves them again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL

from purpose_agent import SQLCheckpointer
from purpose_agent.db import replicas as replicas_module
from purpose_agent.errors import InvalidInput
from purpose_agent.testing.samples import ev, new, st
from tests.servers import LocalPostgres, LocalPostgresStandby, throwaway_database

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

REPLAY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def primary(private_postgres: LocalPostgres) -> LocalPostgres:
    """The module's private server, as the primary."""
    return private_postgres


@pytest.fixture(scope="module")
def standby(primary: LocalPostgres) -> Iterator[LocalPostgresStandby]:
    with LocalPostgresStandby(primary) as server:
        yield server


@pytest.fixture
def databases(primary: LocalPostgres, standby: LocalPostgresStandby) -> Iterator[tuple[URL, URL]]:
    """A throwaway database on the primary, and its URL on the standby once it is there."""
    standby.delay(0)
    with throwaway_database(primary.url, "pa_replica") as url:
        replica = url.set(port=standby.port)
        with SQLCheckpointer(url):  # the schema, made on the primary only
            pass
        caught_up(primary, standby)
        yield url, replica


def _lsn(server: LocalPostgres, query: str) -> int:
    engine = sa.create_engine(server.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            raw = conn.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()
    found = replicas_module.parse_lsn(raw)
    assert found is not None
    return found


def holding_back(primary: LocalPostgres, standby: LocalPostgresStandby) -> None:
    """Wait until the standby holds a commit back for its apply delay.

    ``pg_ctl reload`` only signals the standby, which reads the new delay when it gets to it:
    a commit in between was replayed at once. A probe commit on the primary; once the startup
    process waits on it (``RecoveryApplyDelay``), every later commit is behind it in the WAL.
    """
    primary.query("SELECT txid_current()")  # a commit record to hold back
    waiting = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE backend_type = 'startup' AND wait_event = 'RecoveryApplyDelay'"
    )
    deadline = time.monotonic() + REPLAY_TIMEOUT
    while standby.query(waiting) != 1:
        assert time.monotonic() < deadline, standby.log_tail()
        time.sleep(0.02)


def caught_up(primary: LocalPostgres, standby: LocalPostgresStandby) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    target = _lsn(primary, "SELECT pg_current_wal_insert_lsn()::text")
    deadline = time.monotonic() + REPLAY_TIMEOUT
    while _lsn(standby, "SELECT pg_last_wal_replay_lsn()::text") < target:
        assert time.monotonic() < deadline, standby.log_tail()
        time.sleep(0.02)


class Counted:
    """Statements each engine ran, by the store's replica engine and its primary engine."""

    def __init__(self, store: SQLCheckpointer) -> None:
        assert store._replicas is not None
        self.counts = {"primary": 0, "replica": 0}
        engines = {"primary": store.engine, "replica": store._replicas.replicas[0].engine}
        for name, engine in engines.items():
            event.listen(engine, "before_cursor_execute", self._counter(name))

    def _counter(self, name: str) -> Any:
        def count(*_args: Any) -> None:
            self.counts[name] += 1

        return count

    def reset(self) -> None:
        self.counts = {"primary": 0, "replica": 0}


def _read_everything(store: SQLCheckpointer, run_id: str) -> tuple[Any, ...]:
    recovered = store.recover(run_id)
    return (
        store.list_events(run_id),
        store.list_events(run_id, newest_first=True, limit=2),
        list(store.iter_events(run_id)),
        store.load_latest(run_id),
        None if recovered is None else (recovered.state, recovered.events),
        store.list_runs(),
        store.list_groups(),
        store.run_group(run_id),
    )


def test_reads_go_to_the_replica_which_really_serves_them(
    primary: LocalPostgres, standby: LocalPostgresStandby, databases: tuple[URL, URL]
) -> None:
    url, replica = databases
    with SQLCheckpointer(url) as writer:
        writer.append("a", [new(n=1), new(n=2), new(n=3)], group="g", snapshot=st("a", 2))
        snapshot = writer.load_latest("a")
        assert snapshot is not None
    caught_up(primary, standby)
    with SQLCheckpointer(url, read_url=[replica]) as reader:
        counted = Counted(reader)
        seen = _read_everything(reader, "a")
        assert counted.counts["primary"] == 0
        assert counted.counts["replica"] >= 8
        assert [e.data["n"] for e in seen[0]] == [1, 2, 3]
        assert seen[3] == snapshot
        assert seen[4] == (snapshot, [])
        assert seen[5] == ["a"]
        assert seen[6] == ["g"]
        assert seen[7] == "g"

        # Another writer's commit, held back on the standby: this store does not see it
        # (it is not its own write), which only a read from the standby can explain.
        standby.delay(30)
        holding_back(primary, standby)
        with SQLCheckpointer(url) as other:
            other.save_event(ev("b", 1))
        assert reader.list_events("b") == []
        assert reader.list_runs() == ["a"]
        # The primary has it, and last_seq (which appends rely on) reads the primary.
        assert reader.last_seq("b") == 1
        standby.delay(0)
        caught_up(primary, standby)
        assert reader.list_events("b") == [ev("b", 1)]


def test_a_writer_reads_its_own_writes_while_the_replica_lags(
    primary: LocalPostgres, standby: LocalPostgresStandby, databases: tuple[URL, URL]
) -> None:
    url, replica = databases
    standby.delay(30)
    holding_back(primary, standby)
    with SQLCheckpointer(url, read_url=replica) as store:
        counted = Counted(store)
        for step in range(1, 41):
            run_id = f"r{step % 4}"
            placed = store.append(run_id, [new(step=step)], group=f"g{step % 2}")
            seq = placed[-1].seq
            assert store.list_events(run_id)[-1] == placed[-1]
            assert [e.seq for e in store.iter_events(run_id)][-1] == seq
            assert store.list_runs()[0] == run_id
            assert store.run_group(run_id) == f"g{step % 2}"
            store.save_snapshot(run_id, st(run_id, seq, step=step))
            assert store.load_latest(run_id) == st(run_id, seq, step=step)
            recovered = store.recover(run_id)
            assert recovered is not None
            assert recovered.state == st(run_id, seq, step=step)
            store.save_events([ev("s", step)])
            assert store.list_events("s", since_seq=step - 1) == [ev("s", step)]
        store.delete_run("r0")
        assert store.recover("r0") is None
        assert "r0" not in store.list_runs()
        # Those reads were right although the standby had none of it: they went to the primary.
        assert counted.counts["primary"] > 0
        with standby_engine(replica) as engine, engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM pa_events")).scalar() == 0

        # Once the standby has replayed them, the same reads go to it.
        standby.delay(0)
        caught_up(primary, standby)
        time.sleep(2 * replicas_module.REPLAY_CACHE_SECONDS)
        counted.reset()
        assert [e.data["step"] for e in store.list_events("r1")] == list(range(1, 41, 4))
        assert store.recover("r0") is None
        assert "r0" not in store.list_runs()
        reads = counted.counts["primary"]
        assert reads == 0, counted.counts


def test_threads_read_their_own_writes_while_the_replica_trails_by_a_little(
    primary: LocalPostgres, standby: LocalPostgresStandby, databases: tuple[URL, URL]
) -> None:
    url, replica = databases
    standby.delay(0.05)
    time.sleep(0.3)
    errors: list[BaseException] = []
    with SQLCheckpointer(url, read_url=replica) as store:
        assert store._replicas is not None
        served = [0]

        def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            if "pa_events" in statement:
                served[0] += 1

        event.listen(store._replicas.replicas[0].engine, "before_cursor_execute", count)

        def work(worker: int) -> None:
            try:
                for step in range(1, 31):
                    run_id = f"t{worker}-{step % 3}"
                    placed = store.append(run_id, [new(step=step)], snapshot=st(run_id, 0))
                    assert store.list_events(run_id)[-1] == placed[-1]
                    recovered = store.recover(run_id)
                    assert recovered is not None
                    assert recovered.state is not None
                    assert recovered.state.seq == placed[-1].seq
                    # Every tenth step, the standby catches up (and the store's cached replay
                    # position expires): the run's next read may be served by the standby.
                    if step % 10 == 0:
                        caught_up(primary, standby)
                        time.sleep(2 * replicas_module.REPLAY_CACHE_SECONDS)
                    assert store.list_events(run_id)[-1] == placed[-1]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert served[0] > 0  # the standby served the reads it had caught up for


@contextlib.contextmanager
def standby_engine(replica: URL) -> Iterator[sa.Engine]:
    """A plain engine on the standby, to look at what it holds."""
    built = sa.create_engine(replica, poolclass=sa.pool.NullPool)
    try:
        yield built
    finally:
        built.dispose()


def test_reads_fall_back_to_the_primary_while_the_replica_is_down(
    primary: LocalPostgres, standby: LocalPostgresStandby, databases: tuple[URL, URL]
) -> None:
    url, replica = databases
    with SQLCheckpointer(url) as writer:
        writer.save_events([ev("x", 1), ev("x", 2)], st("x", 2))
    caught_up(primary, standby)
    with SQLCheckpointer(url, read_url=replica) as store:
        counted = Counted(store)
        assert store.list_events("x") == [ev("x", 1), ev("x", 2)]
        assert counted.counts["primary"] == 0

        standby.stop()
        try:
            for _ in range(5):
                assert store.list_events("x") == [ev("x", 1), ev("x", 2)]
                recovered = store.recover("x")
                assert recovered is not None
                assert recovered.state == st("x", 2)
                assert store.list_runs() == ["x"]
            store.save_event(ev("x", 3))
            assert store.list_events("x")[-1] == ev("x", 3)
            assert store.list_runs() == ["x"]
        finally:
            standby.start()

        caught_up(primary, standby)
        time.sleep(replicas_module.RETRY_AFTER_SECONDS + 0.1)
        counted.reset()
        assert store.list_events("x") == [ev("x", 1), ev("x", 2), ev("x", 3)]
        assert store.list_runs() == ["x"]
        assert counted.counts["primary"] == 0, counted.counts
        assert counted.counts["replica"] > 0


def test_read_url_is_refused_on_a_store_that_is_not_postgres(tmp_path: Any) -> None:
    with pytest.raises(InvalidInput, match="Postgres"):
        SQLCheckpointer(f"sqlite:///{tmp_path / 'x.db'}", read_url="sqlite:///y.db")


def test_a_replica_url_that_is_not_postgres_is_refused(databases: tuple[URL, URL]) -> None:
    url, _ = databases
    with pytest.raises(InvalidInput, match="not a Postgres URL"):
        SQLCheckpointer(url, read_url=["sqlite:///y.db"])


def test_a_run_forgotten_while_another_read_asks_the_primary_still_reads_its_own_write(
    primary: LocalPostgres,
    standby: LocalPostgresStandby,
    databases: tuple[URL, URL],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run ``x``'s known WAL position must outlive its mark, even while the shared one is asked.

    Untracked runs share one mark. A reader of one of them is held after the primary gave it
    a WAL position and before it stores it; meanwhile ``x`` is written, read (so its own
    position is known) and pushed out of the tracked runs. The held reader's position is
    older than ``x``'s write: stored as the shared mark, it sent ``x``'s next read to a
    standby that did not have it.
    """
    url, replica = databases
    monkeypatch.setattr(replicas_module, "MAX_TRACKED_RUNS", 4)
    real_parse = replicas_module.parse_lsn
    asked, release = threading.Event(), threading.Event()
    held: list[threading.Thread] = []

    def parse_held(value: str | None) -> int | None:
        if threading.current_thread() in held:
            asked.set()
            assert release.wait(30)
        return real_parse(value)

    monkeypatch.setattr(replicas_module, "parse_lsn", parse_held)
    with SQLCheckpointer(url, read_url=replica) as store:
        store.delete_runs(["absent"])  # the shared mark of untracked runs is now unknown
        reader = threading.Thread(target=lambda: store.list_events("untracked"))
        held.append(reader)
        reader.start()
        assert asked.wait(30)
        caught_up(primary, standby)
        standby.query("SELECT pg_wal_replay_pause()")
        try:
            deadline = time.monotonic() + REPLAY_TIMEOUT
            while standby.query("SELECT pg_get_wal_replay_pause_state()") != "paused":
                assert time.monotonic() < deadline
                time.sleep(0.01)
            written = store.append("x", [new(n=1)])
            assert store.list_events("x") == written  # from the primary: x's position known
            # One write of as many runs as are tracked: x, and only x, is no longer tracked.
            store.save_events([ev(f"other-{n}", 1) for n in range(4)])
            assert "x" not in store._replicas._marks  # type: ignore[union-attr]
            release.set()
            reader.join(30)
            assert store.list_events("x") == written
        finally:
            release.set()
            standby.query("SELECT pg_wal_replay_resume()")
