"""Capability.STREAMING: ``iter_events`` holds a page in memory, not the run."""

from __future__ import annotations

import tracemalloc
from typing import ClassVar

from purpose_agent import Checkpointer
from purpose_agent.testing.capabilities import Capability
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.samples import ev

# Several pages of any sensible page size, small enough to write and stream in a few seconds.
SHORT_RUN = 3_000
LONG_RUN = 4 * SHORT_RUN
WRITE_BATCH = 1_500


def _write_run(cp: Checkpointer, run_id: str, count: int) -> None:
    for first in range(1, count + 1, WRITE_BATCH):
        last = min(first + WRITE_BATCH, count + 1)
        cp.save_events(ev(run_id, seq, text="x" * 100) for seq in range(first, last))


def _stream_peak(cp: Checkpointer, run_id: str) -> tuple[int, int]:
    """Stream a run without keeping it; return the events seen and the peak bytes allocated.

    Each event is checked and dropped, so what the peak measures is what the store holds.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        last = 0
        for event in cp.iter_events(run_id):
            assert event.seq == last + 1, f"{run_id}: seq {event.seq} after {last}"
            last = event.seq
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return last, peak - before


class StreamingSuite(Rows):
    """Rows on what streaming costs, not only what it returns."""

    capability: ClassVar[Capability] = Capability.STREAMING

    def test_iter_events_memory_stays_flat_as_the_run_grows(self, cp: Checkpointer) -> None:
        _write_run(cp, "short", SHORT_RUN)
        _write_run(cp, "long", LONG_RUN)
        _stream_peak(cp, "short")  # first use may build caches and connections; not counted
        short_count, short_peak = _stream_peak(cp, "short")
        long_count, long_peak = _stream_peak(cp, "long")
        assert (short_count, long_count) == (SHORT_RUN, LONG_RUN)
        # Holding the run would make the long peak about four times the short one.
        assert long_peak < 2 * short_peak, (
            f"streaming {LONG_RUN} events peaked at {long_peak:,} bytes, "
            f"{SHORT_RUN} events at {short_peak:,} bytes"
        )
