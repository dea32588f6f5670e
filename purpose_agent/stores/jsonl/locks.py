"""One lock per run: a mutex for this process's threads, a lock file for other processes.

Lock files live in ``base_dir/.locks/<run dir>.lock``, outside the run's directory, so that
deleting a run never deletes a lock somebody holds. Writers of different runs never wait for
each other.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from .index import Index
from .naming import dir_name

# Contended writers poll the lock; a short interval keeps several processes appending to one run
# at disk speed instead of at the poll rate.
_POLL_SECONDS = 0.001


class Run:
    """One run's in-process state: its locks and this handle's index of its log."""

    def __init__(self, name: str, lock_path: Path) -> None:
        self.name = name
        self.names = frozenset([name])
        self.mutex = threading.Lock()
        self.file_lock = FileLock(str(lock_path), poll_interval=_POLL_SECONDS)
        self.index = Index()
        # snapshot.json's seq, with the (inode, size, mtime) of the file it was read from.
        self.snapshot_seq: tuple[tuple[int, int, int], int] | None = None


class Runs:
    """The runs a handle has touched, each created once, and the way to hold them."""

    def __init__(self, locks_dir: Path) -> None:
        self.locks_dir = locks_dir
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def get(self, run_id: str) -> Run:
        """Return the run's in-process state, creating it on first use."""
        name = dir_name(run_id)
        with self._lock:
            run = self._runs.get(name)
            if run is None:
                run = self._runs[name] = Run(name, self.locks_dir / f"{name}.lock")
            return run

    def clear(self) -> None:
        """Forget every run, indexes included."""
        with self._lock:
            self._runs.clear()

    @contextlib.contextmanager
    def exclusive(self, run: Run) -> Iterator[None]:
        """Hold the run against this process's threads and against other processes."""
        with run.mutex, self.file_locked(run):
            yield

    @contextlib.contextmanager
    def file_locked(self, run: Run) -> Iterator[None]:
        """Hold the run against other processes; the caller holds ``run.mutex``."""
        try:
            run.file_lock.acquire()
        except FileNotFoundError:
            # Somebody removed .locks; the lock file only has to exist while it is held.
            self.locks_dir.mkdir(parents=True, exist_ok=True)
            run.file_lock.acquire()
        try:
            yield
        finally:
            run.file_lock.release()
