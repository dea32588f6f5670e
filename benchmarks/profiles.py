"""How big a run is: the full benchmark, ``--quick`` and the test suite's smoke run."""

from __future__ import annotations

from dataclasses import dataclass, replace

KB = 1024
MB = 1024 * KB


@dataclass(frozen=True)
class Profile:
    """Sizes and time budgets of one benchmark run.

    Attributes:
        name: ``full``, ``quick`` or ``smoke``.
        rounds: Interleaved rounds per side of a write or read case.
        budget: Timed seconds per side per round.
        batch_sizes: Events per ``save_events`` call in the batch cases.
        snapshot_sizes: Encoded state sizes in bytes for the snapshot cases.
        big_run: Events in the large run (``iter_events``, a page deep in a run); with the other
            runs it makes the database that ``recover`` searches.
        medium_run: Events in the run read whole (``list_events``) and the small size of the
            ``iter_events`` memory comparison.
        recover_prefix: Events of the recovered run that its snapshot covers.
        recover_tail: Events after the snapshot that ``recover`` returns.
        recover_state: Encoded size of the recovered run's snapshot.
        load_chunk: Events per transaction when loading the read dataset.
        thread_levels: Writer-thread counts for the concurrency cases.
        process_levels: Writer-process counts for the concurrency cases.
        concurrency_seconds: Wall seconds per concurrency measurement.
        concurrency_rounds: Rounds per side per concurrency level.
        iter_rounds: Passes per side over the large run in the ``iter_events`` case.
    """

    name: str
    rounds: int
    budget: float
    batch_sizes: tuple[int, ...]
    snapshot_sizes: tuple[int, ...]
    big_run: int
    medium_run: int
    recover_prefix: int
    recover_tail: int
    recover_state: int
    load_chunk: int
    thread_levels: tuple[int, ...]
    process_levels: tuple[int, ...]
    concurrency_seconds: float
    concurrency_rounds: int
    iter_rounds: int = 1

    def with_big_run(self, events: int | None) -> Profile:
        """The same profile with another size for the large run."""
        return self if events is None else replace(self, big_run=events)


FULL = Profile(
    name="full",
    rounds=5,
    budget=1.0,
    batch_sizes=(100, 1000),
    snapshot_sizes=(1 * KB, 100 * KB, 1 * MB),
    big_run=1_000_000,
    medium_run=10_000,
    recover_prefix=1_000,
    recover_tail=100,
    recover_state=10 * KB,
    load_chunk=10_000,
    thread_levels=(1, 2, 4, 8),
    process_levels=(1, 2, 4, 8),
    concurrency_seconds=2.0,
    concurrency_rounds=2,
    iter_rounds=3,
)

QUICK = Profile(
    name="quick",
    rounds=2,
    budget=0.25,
    batch_sizes=(100, 1000),
    snapshot_sizes=(1 * KB, 100 * KB, 1 * MB),
    big_run=20_000,
    medium_run=2_000,
    recover_prefix=1_000,
    recover_tail=100,
    recover_state=10 * KB,
    load_chunk=5_000,
    thread_levels=(1, 2, 4),
    process_levels=(1, 2),
    concurrency_seconds=0.4,
    concurrency_rounds=1,
)

SMOKE = Profile(
    name="smoke",
    rounds=1,
    budget=0.02,
    batch_sizes=(100, 1000),
    snapshot_sizes=(1 * KB, 100 * KB, 1 * MB),
    big_run=2_000,
    medium_run=200,
    recover_prefix=50,
    recover_tail=100,
    recover_state=1 * KB,
    load_chunk=1_000,
    thread_levels=(1, 2),
    process_levels=(2,),
    concurrency_seconds=0.1,
    concurrency_rounds=1,
)

PROFILES = {p.name: p for p in (FULL, QUICK, SMOKE)}
