"""One lock per run: a mutex for this process's threads, a lock file for other processes.

Lock files live in ``base_dir/.locks/<run dir>.lock``, outside the run's directory, so that
deleting a run never deletes a lock somebody holds. Writers of different runs never wait for
each other.

A process that may read the folder but not write it (another user's files, a read-only mount)
cannot create or open a lock file: taking one for a read then says so instead of failing, and
the read is made without it (see ``JSONLCheckpointer._without_lock``). Writes still fail.

A held lock is an open file, and a process may only have so many (``RLIMIT_NOFILE``, often
1,024). So no operation holds more than :data:`LOCKS_AT_ONCE` run locks at a time. A batch
across more runs than that is a *wide* batch: it takes ``base_dir/.locks/.wide.lock`` (one file
for the whole store, taken by wide batches only, and by whoever waits for one) and then the
runs' locks a group at a time, in the same order as every other writer; see
``JSONLCheckpointer._write_wide`` for how it stays all or nothing without holding them all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from .files import FileIdentity
from .index import Index
from .naming import WIDE_LOCK, dir_name

# Contended writers poll the lock; a short interval keeps several processes appending to one run
# at disk speed instead of at the poll rate.
_POLL_SECONDS = 0.001
# What opening or creating a lock file gives where this process may only read.
_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
LOCKS_AT_ONCE = 32
"""The most run locks one operation holds at once: a batch across more runs is a wide batch.

Small enough to leave room under any usual open-file limit (each held lock is an open file),
large enough that batches across a handful of runs, nearly all of them, take the usual path.
"""


RECENT_RUNS = 256
"""Runs whose state (locks, index) a handle keeps after their last use.

A run in use is always kept; others are forgotten beyond the most recent few, so that a
handle that touches millions of runs holds memory for a few hundred. A forgotten run's
index is read again from its log when the run is next used.
"""


class Run:
    """One run's in-process state: its locks and this handle's index of its log."""

    def __init__(self, name: str, lock_path: Path) -> None:
        self.name = name
        self.names = frozenset([name])
        self.mutex = threading.Lock()
        self.file_lock = FileLock(str(lock_path), poll_interval=_POLL_SECONDS)
        self.index = Index()
        # snapshot.json's seq, with the identity of the file it was read from.
        self.snapshot_seq: tuple[FileIdentity, int] | None = None
        # How often snapshot.json was read for this run, and what the last read found (None:
        # no file), so that a read without the lock can tell which file it paired with the log.
        self.snapshot_reads = 0
        self.snapshot_read: FileIdentity | None = None


class Runs:
    """The runs a handle is using or used recently, each created once, and the way to hold them."""

    def __init__(self, locks_dir: Path) -> None:
        self.locks_dir = locks_dir
        self._start()
        _HANDLES.add(self)

    def _start(self) -> None:
        """No run known, every lock free: a new handle's state, or a forked child's.

        A child of a process that forks (a ``fork`` worker, gunicorn's ``--preload``) copies
        the mutexes as they were: one that a thread of the parent held at the fork stayed
        taken in the child, where no thread would release it, and the child's first use of
        that run waited for ever. The child drops the parent's runs and locks and reads each
        run's index again from its log when it uses it. The lock files the parent's threads
        held stay theirs: ``FileLock`` keeps each thread's hold apart, and the forking thread,
        the only one in the child, held none (no store call forks).
        """
        # Every run in use is here (its users hold it), so that two threads of one run
        # share one mutex; the most recently used ones are also held by ``_recent``.
        self._runs: weakref.WeakValueDictionary[str, Run] = weakref.WeakValueDictionary()
        self._recent: OrderedDict[str, Run] = OrderedDict()
        self._lock = threading.Lock()
        self._wide_mutex = threading.Lock()
        self._wide_lock = FileLock(str(self.locks_dir / WIDE_LOCK), poll_interval=_POLL_SECONDS)

    def get(self, run_id: str) -> Run:
        """Return the run's in-process state, creating it on first use."""
        name = dir_name(run_id)
        with self._lock:
            run = self._runs.get(name)
            if run is None:
                run = self._runs[name] = Run(name, self.locks_dir / f"{name}.lock")
            self._recent[name] = run
            self._recent.move_to_end(name)
            if len(self._recent) > RECENT_RUNS:
                self._recent.popitem(last=False)
            return run

    def clear(self) -> None:
        """Forget every run, indexes included."""
        with self._lock:
            self._runs.clear()
            self._recent.clear()

    @contextlib.contextmanager
    def exclusive(self, run: Run, *, reading: bool = False) -> Iterator[bool]:
        """Hold the run against this process's threads and against other processes.

        Yields whether the file lock is held, which is always so unless ``reading`` (see
        :meth:`file_locked`).
        """
        with run.mutex, self.file_locked(run, reading=reading) as locked:
            yield locked

    @contextlib.contextmanager
    def file_locked(self, run: Run, *, reading: bool = False) -> Iterator[bool]:
        """Hold the run against other processes; the caller holds ``run.mutex``.

        Args:
            run: The run.
            reading: For a read: where this process may not create or open the lock file
                (the folder is read-only for it), yield ``False`` holding nothing, rather than
                raise, so that the caller can read without the lock.

        Yields:
            Whether the lock is held.

        Raises:
            OSError: The lock file cannot be created or opened (for a read, other than for
                lack of permission).

        """
        with self._held(run.file_lock, reading=reading) as locked:
            yield locked

    @contextlib.contextmanager
    def wide(self, *, reading: bool = False) -> Iterator[bool]:
        """Hold the store's one lock for wide batches, against threads and other processes.

        A wide batch holds it from its claim to its end, so whoever holds it next knows that
        no wide batch is at work: a claim or wide journal entry still there was left by a
        writer that stopped. Never taken while holding a run's lock, so it adds no cycle to
        the order in which run locks are taken.

        Args:
            reading: As for :meth:`file_locked`: where the lock file cannot be opened for lack
                of permission, yield ``False`` holding nothing.

        Yields:
            Whether the lock is held.

        Raises:
            OSError: The lock file cannot be created or opened.

        """
        with self._wide_mutex, self._held(self._wide_lock, reading=reading) as locked:
            yield locked

    @contextlib.contextmanager
    def _held(self, lock: FileLock, *, reading: bool) -> Iterator[bool]:
        try:
            self._acquire(lock)
        except OSError as exc:
            if not (reading and exc.errno in _READ_ONLY_ERRNOS):
                raise
            held = False
        else:
            held = True
        if not held:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def _acquire(self, lock: FileLock) -> None:
        try:
            lock.acquire()
        except FileNotFoundError:
            # Somebody removed .locks; the lock file only has to exist while it is held.
            self.locks_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()


# The handles' run states in this process, started over in a forked child (see Runs._start).
_HANDLES: weakref.WeakSet[Runs] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for runs in list(_HANDLES):
        runs._start()


os.register_at_fork(after_in_child=_after_fork_in_child)
