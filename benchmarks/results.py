"""What a case produces: each side's measurement, ratios against the baselines, and targets.

The store's side is always labelled ``store``; baselines are ``raw`` (the driver's plain path),
``raw_copy`` (Postgres ``COPY``), ``raw_executemany`` and ``seed`` (the seed's
``SQLiteCheckpointer``). A ratio is the store's rate divided by the baseline's, so 1.0 means
"as fast as the raw driver" and higher is better.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.measure import Measurement

STORE = "store"


@dataclass
class Goal:
    """A target from the benchmark issue.

    Attributes:
        text: What the target says.
        metric: ``"ratio:<side>"`` (store rate over that side's) or
            ``"extra:<side>:<figure>"`` (a figure of that side).
        threshold: The bound.
        op: ``">="`` (at least) or ``"<"`` (less than).
    """

    text: str
    metric: str
    threshold: float
    op: str = ">="

    def value(self, case: Case) -> float | None:
        """The measured value this target is judged on, or ``None`` if it was not measured."""
        kind, _, rest = self.metric.partition(":")
        if kind == "ratio":
            return case.ratio(rest)
        side, _, figure = rest.partition(":")
        measurement = case.sides.get(side)
        if measurement is None or figure not in measurement.extra:
            return None
        return float(measurement.extra[figure])

    def met(self, value: float | None) -> bool | None:
        """Whether the value meets the target (``None`` when not measured)."""
        if value is None:
            return None
        return value >= self.threshold if self.op == ">=" else value < self.threshold


@dataclass
class Case:
    """One benchmark case on one backend.

    Attributes:
        name: The case, e.g. ``append_single`` or ``snapshot_1MB``.
        backend: ``sqlite`` or ``postgres``.
        unit: What the rates count, e.g. ``events/s``.
        params: The case's sizes and settings.
        sides: Measurements by side label.
        baseline: The side the headline ratio is taken against.
        goals: Targets this case is judged on.
        skipped: Sides that did not run, with the reason.
        error: Why the case failed, if it did.
        note: What a reader should know to interpret it.
    """

    name: str
    backend: str
    unit: str
    params: dict[str, Any] = field(default_factory=dict)
    sides: dict[str, Measurement] = field(default_factory=dict)
    baseline: str | None = "raw"
    goals: list[Goal] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    note: str = ""

    def ratio(self, label: str) -> float | None:
        """The store's rate over the side's rate, or ``None`` if either is missing."""
        store = self.sides.get(STORE)
        other = self.sides.get(label)
        if store is None or other is None or other.rate <= 0:
            return None
        return store.rate / other.rate

    def ratios(self) -> dict[str, float]:
        """Ratios against every other side."""
        found = {}
        for label in self.sides:
            if label != STORE:
                ratio = self.ratio(label)
                if ratio is not None:
                    found[label] = ratio
        return found

    def verdicts(self) -> list[dict[str, Any]]:
        """Each target with its measured value and whether it is met."""
        out = []
        for goal in self.goals:
            value = self.value_of(goal)
            out.append(
                {
                    "case": self.name,
                    "backend": self.backend,
                    "target": goal.text,
                    "metric": goal.metric,
                    "op": goal.op,
                    "threshold": goal.threshold,
                    "value": value,
                    "met": goal.met(value),
                }
            )
        return out

    def value_of(self, goal: Goal) -> float | None:
        """The value of a target on this case."""
        return goal.value(self)

    def to_json(self) -> dict[str, Any]:
        """The case as plain values."""
        return {
            "case": self.name,
            "backend": self.backend,
            "unit": self.unit,
            "params": self.params,
            "baseline": self.baseline,
            "sides": {label: m.to_json() for label, m in self.sides.items()},
            "ratios": self.ratios(),
            "targets": self.verdicts(),
            "skipped": self.skipped,
            "error": self.error,
            "note": self.note,
        }
