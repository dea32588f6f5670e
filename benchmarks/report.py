"""Showing the figures: a table on the terminal (rich when available) and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.results import STORE, Case


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def rows(cases: list[Case]) -> list[list[str]]:
    """One row per case and baseline: store rate, baseline rate, ratio, target, verdict."""
    out: list[list[str]] = []
    for case in cases:
        store = case.sides.get(STORE)
        baselines = [label for label in case.sides if label != STORE]
        verdicts = {v["metric"]: v for v in case.verdicts()}
        if not baselines and store is None:
            out.append(
                [case.backend, case.name, case.unit, "-", "-", "-", "-", "", case.error or ""]
            )
            continue
        for index, label in enumerate(baselines or [""]):
            ratio = case.ratio(label) if label else None
            verdict = verdicts.get(f"ratio:{label}")
            target = ""
            if verdict is not None:
                mark = {True: "met", False: "MISSED", None: "n/a"}[verdict["met"]]
                target = f">= {verdict['threshold']:g}x {mark}"
            out.append(
                [
                    case.backend if index == 0 else "",
                    case.name if index == 0 else "",
                    case.unit if index == 0 else "",
                    _rate(store.rate) if store is not None and index == 0 else "",
                    label,
                    _rate(case.sides[label].rate) if label else "-",
                    f"{ratio:.2f}x" if ratio is not None else "-",
                    target,
                    (case.error or "") if index == 0 else "",
                ]
            )
        for side, m in case.sides.items():
            if "rss_growth_mb" in m.extra:
                verdict = verdicts.get(f"extra:{side}:rss_growth_mb")
                target = ""
                if verdict is not None:
                    mark = {True: "met", False: "MISSED", None: "n/a"}[verdict["met"]]
                    target = f"< {verdict['threshold']:g} MB {mark}"
                out.append(
                    [
                        "",
                        "",
                        "MB RSS",
                        "",
                        side,
                        f"{m.extra['rss_peak_mb_small']:.0f} -> {m.extra['rss_peak_mb_big']:.0f}",
                        f"+{m.extra['rss_growth_mb']:.1f} MB",
                        target,
                        "",
                    ]
                )
    return out


HEADER = ["backend", "case", "unit", "store", "vs", "baseline", "ratio", "target", "error"]


def print_table(cases: list[Case], plain: bool = False) -> None:
    """Print the results table."""
    table_rows = rows(cases)
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        widths = [max(len(r[i]) for r in [HEADER, *table_rows]) for i in range(len(HEADER))]
        for row in [HEADER, *table_rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return
    table = Table(title="purpose_agent store vs raw driver (ratio = store / baseline)")
    for name in HEADER:
        table.add_column(
            name, justify="right" if name in ("store", "baseline", "ratio") else "left"
        )
    for row in table_rows:
        style = "red" if "MISSED" in row[7] else None
        table.add_row(*row, style=style)
    Console(width=160).print(table)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the results document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
