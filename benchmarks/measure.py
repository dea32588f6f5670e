"""Timing: bounded loops, and rounds that interleave the sides being compared.

Each side of a comparison is a function that runs its operation for a time budget and returns
``(units, seconds)``; only the operation is timed, not building its input. Sides run in turn,
round after round, with the order rotated every round so that drift in the machine (page cache,
WAL checkpoints, other load) falls on every side alike; a side's rate is the median of its rounds.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RoundFn = Callable[[float], tuple[int, float]]


@dataclass
class Measurement:
    """One side of a case: how many units it did per second, round by round.

    Attributes:
        rates: Units per second in each round.
        units: Units done in all rounds.
        seconds: Timed seconds in all rounds.
        extra: Other figures of this side (peak RSS, per-phase rates, ...).
    """

    rates: list[float] = field(default_factory=list)
    units: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """The median rate over the rounds."""
        return statistics.median(self.rates) if self.rates else 0.0

    def add(self, units: int, seconds: float) -> None:
        """Record one round."""
        self.units += units
        self.seconds += seconds
        self.rates.append(units / seconds if seconds > 0 else 0.0)

    def to_json(self) -> dict[str, Any]:
        """The figures as plain values."""
        spread = (min(self.rates), max(self.rates)) if self.rates else (0.0, 0.0)
        return {
            "rate": self.rate,
            "rate_min": spread[0],
            "rate_max": spread[1],
            "rounds": len(self.rates),
            "round_rates": list(self.rates),
            "units": self.units,
            "seconds": self.seconds,
            **self.extra,
        }


def timed_loop(
    op: Callable[[Any], Any],
    make_arg: Callable[[int], Any],
    budget: float,
    *,
    units_per_op: int = 1,
    min_ops: int = 1,
    max_ops: int | None = None,
) -> tuple[int, float]:
    """Run ``op(make_arg(i))`` until ``budget`` seconds of ``op`` time are spent.

    Only ``op`` is timed. At least ``min_ops`` and at most ``max_ops`` operations run; the wall
    clock is capped at four times the budget so that slow input building cannot stretch a case.

    Returns:
        The units done (``units_per_op`` per operation) and the seconds spent in ``op``.
    """
    spent = 0.0
    done = 0
    clock = time.perf_counter
    wall_end = clock() + 4 * budget + 1
    while (spent < budget or done < min_ops) and (max_ops is None or done < max_ops):
        arg = make_arg(done)
        start = clock()
        op(arg)
        spent += clock() - start
        done += 1
        if done >= min_ops and clock() > wall_end:
            break
    return done * units_per_op, spent


def compare(
    sides: dict[str, RoundFn], rounds: int, budget: float, *, warmup: bool = True
) -> dict[str, Measurement]:
    """Run every side ``rounds`` times for ``budget`` seconds each, interleaved.

    A short untimed warm-up per side comes first (connection pools, prepared statements,
    imports). Garbage collection runs between rounds, not inside them.
    """
    labels = list(sides)
    results = {label: Measurement() for label in labels}
    if warmup:
        for label in labels:
            sides[label](min(0.2, budget / 4))
    for index in range(rounds):
        shift = index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            gc.collect()
            units, seconds = sides[label](budget)
            results[label].add(units, seconds)
    return results
