"""The JSONL store: a batch across more runs than the process may open files at once.

Each run lock a writer holds is an open file, so a batch that held every run's lock at once
failed with ``EMFILE`` once it spanned more runs than ``RLIMIT_NOFILE`` allows. These tests
lower that limit to a little above the files already open and check that such a batch is
stored, refused or rolled forward as a whole, like a batch across two runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from purpose_agent import JSONLCheckpointer, SequenceConflict, StoreUnavailable
from purpose_agent.stores.jsonl import FaultPoint
from purpose_agent.testing.suite import ev, st
from tests.jsonl.crashes import kill_when_stopped

resource = pytest.importorskip("resource")

# Files a test may open beyond those open when it starts: a few for the store, none to spare
# for a lock per run.
HEADROOM = 64
FDS = Path("/proc/self/fd")


@pytest.fixture
def many_runs() -> Iterator[int]:
    """Lower the soft open-file limit for the test; yield a run count well past it."""
    if not FDS.is_dir():
        pytest.skip("counting open files needs /proc/self/fd")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = len(os.listdir(FDS)) + HEADROOM
    if soft != resource.RLIM_INFINITY and soft < limit:
        pytest.skip(f"the open-file limit ({soft}) is already below {limit}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit + 50
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def run_ids(count: int) -> list[str]:
    return [f"r-{i:04d}" for i in range(count)]


def journal_files(base: Path) -> list[str]:
    return sorted(os.listdir(base / ".journal"))


def test_batch_across_more_runs_than_open_files_is_stored_whole(
    cp: JSONLCheckpointer, many_runs: int
) -> None:
    ids = run_ids(many_runs)
    cp.save_event(ev(ids[7], 1))  # a retry of a stored event is a no-op inside the batch
    batch = [ev(run_id, seq, n=i) for i, run_id in enumerate(ids) for seq in (1, 2)]
    batch[14] = ev(ids[7], 1)
    cp.save_events(batch, snapshot=st(ids[-1], 2, done=True))

    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            for i, run_id in enumerate(ids):
                first = ev(run_id, 1) if run_id == ids[7] else ev(run_id, 1, n=i)
                assert store.list_events(run_id) == [first, ev(run_id, 2, n=i)]
            assert store.load_latest(ids[-1]) == st(ids[-1], 2, done=True)
            assert sorted(store.list_runs()) == ids
    assert journal_files(cp.base_dir) == []
    # Every run has its own lock file, and deleting them all holds one at a time.
    assert cp.delete_runs(prefix="") == ids
    assert cp.list_runs() == []


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_wide_batch_with_one_conflict_leaves_every_run_as_it_was(
    cp: JSONLCheckpointer, many_runs: int, where: str
) -> None:
    ids = run_ids(many_runs)
    victim = {"first": ids[0], "middle": ids[len(ids) // 2], "last": ids[-1]}[where]
    cp.save_events([ev(victim, 1, kept=True), ev(ids[3], 1)])
    batch = [ev(run_id, 1) for run_id in ids] + [ev(run_id, 2) for run_id in ids]

    with pytest.raises(SequenceConflict) as caught:
        cp.save_events(batch, snapshot=st(ids[1], 2))
    assert (caught.value.run_id, caught.value.seq) == (victim, 1)

    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert sorted(store.list_runs()) == sorted({victim, ids[3]})
            assert store.list_events(victim) == [ev(victim, 1, kept=True)]
            assert store.list_events(ids[3]) == [ev(ids[3], 1)]
            assert store.load_latest(ids[1]) is None
            assert all(
                store.last_seq(run_id) == 0 for run_id in ids if run_id not in (victim, ids[3])
            )
    assert journal_files(cp.base_dir) == []


def test_wide_batch_that_writes_to_few_runs_is_committed_as_a_small_one(base: Path) -> None:
    ids = run_ids(WIDE)
    steps: list[tuple[str, str | None]] = []

    def record(point: FaultPoint, run_id: str | None = None) -> None:
        steps.append((point, run_id))

    with JSONLCheckpointer(base, faults=record) as cp:
        batch = [ev(run_id, 1) for run_id in ids]
        cp.save_events(batch)
        steps.clear()
        # A retry of the batch, with one more event for two runs: only those get a line.
        cp.save_events([*batch, ev(ids[9], 2), ev(ids[90], 2)], snapshot=st(ids[90], 2))
        assert steps == [
            ("journal-temp", None),
            ("journal", None),
            ("appended", ids[9]),
            ("appended", ids[90]),
        ]
        assert cp.list_events(ids[9]) == [ev(ids[9], 1), ev(ids[9], 2)]
        assert cp.load_latest(ids[90]) == st(ids[90], 2)
        assert all(cp.last_seq(run_id) == 1 for run_id in ids if run_id not in (ids[9], ids[90]))
    assert journal_files(base) == []


def test_wide_batch_failing_after_its_commit_leaves_nothing_behind(
    cp: JSONLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = run_ids(WIDE)
    cp.save_event(ev(ids[0], 1))
    real_write = os.write

    def failing_write(fd: int, data: Any) -> int:
        # The journal entry is written, and the lines of every group but the last; then the
        # disk is full.
        if bytes(data).startswith(b'{"run_id":"' + ids[-2].encode()):
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(StoreUnavailable):
        cp.save_events([ev(run_id, 2 if run_id == ids[0] else 1) for run_id in ids])
    monkeypatch.undo()
    assert journal_files(cp.base_dir) == []
    with JSONLCheckpointer(cp.base_dir) as fresh:
        for store in (cp, fresh):
            assert store.list_runs() == [ids[0]]
            assert store.list_events(ids[0]) == [ev(ids[0], 1)]
            assert all(store.last_seq(run_id) == 0 for run_id in ids[1:])


# The child saves a batch across WIDE runs and stops at the fault point named on its command
# line, holding every lock and file as they are, until the parent kills it.
WIDE = 120
CRASHING_WRITER = """
import sys
from purpose_agent import JSONLCheckpointer
from purpose_agent.testing.suite import ev

base, point, victim, count = sys.argv[1], sys.argv[2], sys.argv[3] or None, int(sys.argv[4])

def stop_here(at, run_id=None):
    if (at, run_id) == (point, victim):
        print("stopped", flush=True)
        sys.stdin.read()

with JSONLCheckpointer(base, faults=stop_here) as cp:
    cp.save_events([ev(f"r-{i:04d}", 1, n=i) for i in range(count)])
print("finished", flush=True)
"""


def crash_wide_batch(base: Path, point: FaultPoint, run_id: str = "") -> None:
    """Save the wide batch in a child process and SIGKILL it at ``(point, run_id)``."""
    kill_when_stopped(CRASHING_WRITER, str(base), point, run_id, str(WIDE), what="the writer")


def test_wide_batch_whose_writer_was_killed_midway_is_rolled_forward(base: Path) -> None:
    ids = run_ids(WIDE)
    crash_wide_batch(base, "appended", ids[40])
    # Runs of the first groups have their lines, those of the last do not.
    assert (base / ids[0] / "events.jsonl").exists()
    assert not (base / ids[-1] / "events.jsonl").exists()

    with JSONLCheckpointer(base) as cp:
        # Reading a run that never got its line completes the whole batch first.
        assert cp.list_events(ids[-1]) == [ev(ids[-1], 1, n=WIDE - 1)]
        for i, run_id in enumerate(ids):
            assert cp.list_events(run_id) == [ev(run_id, 1, n=i)]
        assert journal_files(base) == []
        cp.save_event(ev(ids[40], 2))
        assert cp.last_seq(ids[40]) == 2


def test_wide_batch_whose_writer_was_killed_before_its_commit_never_happened(
    base: Path,
) -> None:
    ids = run_ids(WIDE)
    crash_wide_batch(base, "journal-temp")  # checked and claimed; the entry not renamed in
    assert sorted(journal_files(base)) == [".wide.claim", ".wide.tmp"]

    with JSONLCheckpointer(base) as cp:
        assert cp.list_runs() == []
        assert cp.list_events(ids[-1]) == []
        # The dead writer's claim keeps no writer off its runs, and goes with the first one.
        cp.save_event(ev(ids[5], 1, mine=True))
        assert cp.list_events(ids[5]) == [ev(ids[5], 1, mine=True)]
        assert journal_files(base) == []


class StoppedBatch:
    """A wide batch saved by a thread that stops at one fault point until released."""

    def __init__(self, base: Path, point: FaultPoint, run_id: str | None = None) -> None:
        self.ids = run_ids(WIDE)
        self.stopped, self.go_on = threading.Event(), threading.Event()

        def stop_here(at: FaultPoint, at_run: str | None = None) -> None:
            if (at, at_run) == (point, run_id):
                self.stopped.set()
                self.go_on.wait()

        self.store = JSONLCheckpointer(base, faults=stop_here)
        events = [ev(run_id, 1) for run_id in self.ids]
        self.thread = threading.Thread(target=self.store.save_events, args=(events,))
        self.thread.start()
        assert self.stopped.wait(timeout=60)

    def finish(self) -> None:
        self.go_on.set()
        self.thread.join()
        self.store.close()


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Start ``call`` in a thread; what it returns or raises ends up in the list."""
    out: list[object] = []

    def target() -> None:
        try:
            out.append(call())
        except Exception as exc:  # the test looks at what it was
            out.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def test_writer_of_a_claimed_run_waits_for_the_wide_batch(cp: JSONLCheckpointer) -> None:
    # Checked and claimed, not committed yet: the group locks were let go, the claim holds.
    batch = StoppedBatch(cp.base_dir, "journal-temp")
    last = batch.ids[-1]
    thread, out = in_thread(lambda: cp.save_event(ev(last, 1, other=True)))
    thread.join(timeout=0.2)
    assert thread.is_alive()  # it waits rather than take the seq the batch checked free
    batch.finish()
    thread.join()
    assert len(out) == 1
    assert isinstance(out[0], SequenceConflict)
    assert cp.list_events(last) == [ev(last, 1)]
    assert journal_files(cp.base_dir) == []


def test_reader_of_a_wide_batch_in_flight_sees_all_of_it(cp: JSONLCheckpointer) -> None:
    # Committed to the journal, no run given its line yet, no run's lock held.
    batch = StoppedBatch(cp.base_dir, "journal")
    last = batch.ids[-1]
    thread, out = in_thread(lambda: cp.list_events(last))
    thread.join(timeout=0.2)
    # It waits for the writer rather than complete the entry beside it: a writer that fails
    # cuts its lines back off, which is only safe while nobody else completes its entry.
    assert thread.is_alive()
    batch.finish()
    thread.join()
    assert out == [[ev(last, 1)]]
    assert journal_files(cp.base_dir) == []
