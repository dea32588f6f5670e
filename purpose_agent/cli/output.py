"""How the command prints: rich text for people, JSON for scripts, errors as one line.

Consoles are made per command, not at import, so that they write to whatever ``sys.stdout``
is at the time (click's test runner swaps it) and decide colour and width from it. rich is
imported only then, so that ``--version`` and ``--help`` do not pay for it.
"""

from __future__ import annotations

import codecs
import errno
import functools
import io
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

# The width of output that is not a terminal: wide enough that no table folds a cell (a run id
# is at most 255 characters), so a file or a pipe gets one record per line.
UNWRAPPED_WIDTH = 100_000
# C0 and C1 control characters and DEL: groups, lanes and keys may hold them (run ids may
# not), and a terminal obeys them (an escape sequence can retitle it, hide text, or ring).
# Then the invisible format characters that change what a reader sees: the bidirectional
# marks, embeddings, overrides and isolates (U+202E shows "run-1gpj" as "run-jpg1"), the
# line and paragraph separators, and the zero-width space, word joiner and BOM (two ids that
# look the same). The zero-width joiners (U+200C, U+200D) stay: emoji sequences and scripts
# such as Persian are written with them.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
# Outside JSON's string quotes no character is a surrogate, so each one found is inside a string.
_SURROGATE = re.compile("[\ud800-\udfff]")


class CommandFailed(click.ClickException):
    """A failure reported as one ``error:`` line on standard error, exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the message on one line, its control characters escaped.

        A message quotes what it is about (a path, a URL, a database's own words), which the
        terminal must not obey.
        """
        message = printable(one_line(self.format_message()))
        click.echo(f"error: {message}", file=file, err=file is None)


def console() -> Console:
    """A console on standard output, without syntax highlighting of numbers and paths.

    Lines are not wrapped at the console width. On a terminal, tables still fit its width;
    anywhere else (a file, a pipe, a test) nothing is folded either, because the console is
    as wide as the widest line: a script reading the output gets one record per line. Markup
    and emoji codes are off: run ids and data are printed as they are, whatever brackets they
    hold, and a ``:smile:`` in them stays that text.
    """
    width = None if is_terminal(sys.stdout) else UNWRAPPED_WIDTH
    return _console_class()(highlight=False, soft_wrap=True, markup=False, emoji=False, width=width)


def err_console() -> Console:
    """A console on standard error, for progress bars and warnings."""
    return _console_class()(stderr=True, highlight=False, emoji=False)


@functools.cache
def _console_class() -> type[Console]:
    # Built on first use: only commands that print load rich, never --version or --help.
    from rich.console import Console  # noqa: PLC0415

    class PipeConsole(Console):
        """A console that lets a closed pipe reach the entry point, which ends with status 0.

        rich's own reaction is ``SystemExit(1)``: `purpose-agent runs list | head -1` would
        fail although the reader got what it asked for.
        """

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "the reader closed the pipe")

        def render_str(self, text: str, **options: Any) -> Any:
            """Every string a table cell or a line shows, control characters escaped.

            On a stream that is not UTF-8, so is what it cannot encode, before the table is
            laid out: escaped only when written, a cell would be wider than its column.
            """
            shown = printable(text)
            if not encodes_all(self.file):
                shown = shown.encode(self.encoding, "backslashreplace").decode(self.encoding)
            return super().render_str(shown, **options)

    return PipeConsole


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (a person may be reading, or answering, there)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream is not a terminal
        return False


def json_text(
    value: Any, *, indent: int | None = None, compact: bool = False, ascii_only: bool = False
) -> str:
    r"""``value`` as JSON text that any UTF-8 stream can carry.

    Text stays readable (``ensure_ascii=False``), except lone surrogates, which the stores keep
    exactly but UTF-8 cannot encode: written raw they fail a strict standard output and come
    out as bytes no JSON reader accepts under ``surrogateescape``. As ``\udc80`` escapes they
    parse back to the same string. ``ascii_only`` escapes every other character too, for a
    stream that is not UTF-8.
    """
    separators = (",", ":") if compact else None
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only, separators=separators)
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def emit_json(document: Any) -> None:
    """Print one JSON document (for ``--json``): what scripts parse."""
    click.echo(json_text(document, indent=2, ascii_only=not encodes_all(sys.stdout)))


def emit_json_line(document: Any) -> None:
    """Print one JSON value on one line (JSON Lines, for streams of events)."""
    click.echo(json_text(document, compact=True, ascii_only=not encodes_all(sys.stdout)))


def encodes_all(stream: IO[str]) -> bool:
    """Whether ``stream`` can encode any text (a UTF encoding), or only some characters."""
    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name.startswith("utf")
    except LookupError:
        return False


def escape_what_stdout_cannot_encode() -> None:
    """Write what standard output cannot encode as backslash escapes, as standard error does.

    A standard output that is not UTF-8 (``LANG=C`` with ``PYTHONUTF8=0``, a Latin-1 locale,
    ``PYTHONIOENCODING=ascii``) is strict: the first run id, group or datum it could not
    encode failed the whole command with ``UnicodeEncodeError``. ``--json`` is pure ASCII
    there instead (:func:`emit_json`), so that it still parses to the exact values.
    """
    stream = sys.stdout
    if encodes_all(stream) or not isinstance(stream, io.TextIOWrapper):
        return
    stream.reconfigure(errors="backslashreplace")


def when(seconds: float | None) -> str:
    """A unix time as people read it, in UTC (``-`` when unknown)."""
    if seconds is None:
        return "-"
    stamp = datetime.fromtimestamp(seconds, UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S") + f".{stamp.microsecond // 1000:03d}Z"


def age(delta: timedelta) -> str:
    """An age the way ``--older-than`` takes it: ``30d``, ``1d12h``, ``90s``."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def count(number: int, noun: str) -> str:
    """``1 run``, ``2 runs``, ``1,000 events``."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def selection_text(group: str | None, prefix: str | None) -> str:
    """`` of group 'g'``, `` with ids starting 'p'``, both or nothing: which runs a command saw."""
    text = ""
    if group is not None:
        text += f" of group {group!r}"
    if prefix is not None:
        text += f" with ids starting {prefix!r}"
    return text


def money(cents: int) -> str:
    """Cents as dollars, for the demo's prices."""
    return f"${cents // 100}.{cents % 100:02d}"


def printable(text: str) -> str:
    r"""``text`` with its control characters written as escapes (``\x1b``), as ``repr`` does.

    What a store holds is shown, never obeyed by the terminal that shows it; so are the
    invisible bidirectional and zero-width characters (``\u202e``), so that no id can pass
    for another. Other text, accents, CJK and emoji included, is shown as it is.
    """
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


def one_line(text: str) -> str:
    """Collapse a message to one line: errors and table cells must not break the layout."""
    return " ".join(text.split())
