"""Listings as tables that fit the terminal by leaving columns out, not by squeezing them.

rich fits a table wider than the terminal by squeezing every column that may wrap: in 40
columns only the time, which may not, was left readable, each run id or group folded to a
letter or two. A listing instead names the columns it may give up, the least telling first,
and the one it keeps whatever the width (the key other commands take); the others are in
``--json``, which a caption says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table

from purpose_agent.cli.output import count, printable

# The kept column's width counted in the fitting: a longer key folds rather than push out the
# next most telling column.
_FITTED_KEY = 24


@dataclass(frozen=True)
class Listing:
    """The columns of a listing, in their order, and which of them give way to a narrow terminal.

    Attributes:
        columns: Each column's name and its ``rich`` layout (``overflow``, ``justify``...).
        given_up: The columns left out when the terminal is too narrow, in this order.
        kept: The column never left out: it folds instead.

    """

    columns: dict[str, dict[str, Any]]
    given_up: tuple[str, ...]
    kept: str

    def fitting(self, rows: list[dict[str, str]], width: int) -> list[str]:
        """The columns of ``rows`` that fit ``width``, folding no cell but the kept one's."""
        from rich.cells import cell_len  # noqa: PLC0415 - loaded by commands that print

        def need(name: str) -> int:
            widest = max([cell_len(name), *(cell_len(printable(row[name])) for row in rows)])
            shown = min(widest, _FITTED_KEY) if name == self.kept else widest
            return shown + 3  # padding and border

        shown = list(self.columns)
        for name in self.given_up:
            if 1 + sum(need(column) for column in shown) <= width:
                break
            shown.remove(name)
        return shown

    def table(self, title: str, rows: list[dict[str, str]], width: int) -> Table:
        """A table of ``rows`` as wide as fits ``width``, captioned with what ``--json`` adds."""
        shown = self.fitting(rows, width)
        hidden = len(self.columns) - len(shown)
        table = Table(
            title=title,
            title_justify="left",
            caption=f"{count(hidden, 'more column')} with --json" if hidden else None,
            caption_justify="left",
        )
        for name in shown:
            table.add_column(name, **self.columns[name])
        for row in rows:
            table.add_row(*(row[name] for name in shown))
        return table
