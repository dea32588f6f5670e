"""What a crash in the middle of an append can leave at the end of a log, and what it cannot.

An append writes one line: one JSON object or array, then a newline. A crash part way through
leaves the start of that line without its newline, cut at any byte. Readers leave such a torn
append out and the next writer cuts it off: it was never acknowledged. Any other last line
without a newline (NUL bytes where the data never arrived, a complete line whose newline was
changed, a byte no JSON text has at that point) was damaged after it was written, and may hold
an acknowledged write: it is reported, never cut off.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

# One complete JSON token (or a run of whitespace), as the store or the seed writes them.
_TOKEN = re.compile(
    r"""(?P<space>[ \t\r]+)
    |(?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
    |(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    |(?P<literal>true|false|null)
    |(?P<open>[{\[])
    |(?P<close>[}\]])
    |(?P<colon>:)
    |(?P<comma>,)""",
    re.VERBOSE,
)
# The start of a token that the end of the file cut short.
_PART_STRING = re.compile(
    r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*'  # the characters read whole
    r"(?:\\(?:u[0-9a-fA-F]{0,3})?)?"  # and an escape the end cut short
)
_PART_NUMBER = re.compile(
    r"-?(?:(?:0|[1-9][0-9]*)"  # "-", or the integer part
    r"(?:\.(?:[0-9]+(?:[eE][+-]?[0-9]*)?)?|[eE][+-]?[0-9]*)?)?"  # "1.", "1.5", "1.5e+", "1e"
)
_PART_LITERAL = re.compile(r"t(?:r(?:u)?)?|f(?:a(?:l(?:s)?)?)?|n(?:u(?:l)?)?")

# What the grammar expects next.
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON, _COMMA_OR_CLOSE, _DONE = range(7)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_whole = json.JSONDecoder(parse_constant=_reject_constant)


def is_torn_write(tail: bytes) -> bool:
    """Whether a last line without its newline can be what a crash mid-append leaves.

    That is: the start of a line the store (or the seed) writes. JSON whitespace may separate
    tokens (the seed wrote ``", "``), the end may cut the last token anywhere (inside a string,
    an escape, a number, a multi-byte character), and a complete value may lack only its
    newline. Nothing may follow the complete value.

    Args:
        tail: The bytes after the log's last newline (not empty).

    Returns:
        Whether they are the start of a write.

    """
    if tail[:1] not in (b"{", b"["):
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        text = decoder.decode(tail, final=False)
    except UnicodeDecodeError:
        return False
    # A multi-byte character cut at the very end: only a string can have held it.
    cut_char = bool(decoder.getstate()[0])
    return _Grammar(text, cut_char).is_prefix()


class _Grammar:
    """JSON's grammar over a text that may stop anywhere, one token (or whole value) at a time.

    Whole objects and arrays are skipped with the C decoder, so a batch of thousands of events
    cut in its last one costs a few decoder passes, not a Python step per token.
    """

    def __init__(self, text: str, cut_char: bool) -> None:
        self.text = text
        self.cut_char = cut_char
        self.closers: list[str] = []
        self.expect = _VALUE
        self.number_at = -1  # where the last token started, if it was a number
        self._steps = {
            "string": self._scalar,
            "number": self._scalar,
            "literal": self._scalar,
            "open": self._open,
            "close": self._close,
            "colon": self._colon,
            "comma": self._comma,
        }

    def is_prefix(self) -> bool:
        """Whether the text is the start of one JSON object or array (or all of it)."""
        text, position = self.text, 0
        while position < len(text):
            if self.expect in (_VALUE, _VALUE_OR_CLOSE) and text[position] in "{[":
                end = self._whole_value_end(position)
                if end is not None:
                    self.number_at = -1
                    self._after_value()
                    position = end
                    continue
            match = _TOKEN.match(text, position)
            if match is None:
                return self._cut_here(position)
            if not self._feed(match):
                return False
            position = match.end()
        return not self.cut_char  # the cut character stood outside any string

    def _whole_value_end(self, position: int) -> int | None:
        try:
            return _whole.raw_decode(self.text, position)[1]
        except (ValueError, RecursionError):
            return None  # cut short (or not JSON): walked token by token instead

    def _feed(self, match: re.Match[str]) -> bool:
        if self.expect == _DONE:
            return False  # a line is one value and its newline: nothing may follow the value
        kind = str(match.lastgroup)
        if kind == "space":
            return True
        self.number_at = match.start() if kind == "number" else -1
        return self._steps[kind](kind, match.group())

    def _after_value(self) -> None:
        self.expect = _COMMA_OR_CLOSE if self.closers else _DONE

    def _scalar(self, kind: str, _: str) -> bool:
        if self.expect in (_KEY, _KEY_OR_CLOSE) and kind == "string":
            self.expect = _COLON
            return True
        if self.expect not in (_VALUE, _VALUE_OR_CLOSE):
            return False
        self._after_value()
        return True

    def _open(self, _: str, mark: str) -> bool:
        if self.expect not in (_VALUE, _VALUE_OR_CLOSE):
            return False
        self.closers.append("}" if mark == "{" else "]")
        self.expect = _KEY_OR_CLOSE if mark == "{" else _VALUE_OR_CLOSE
        return True

    def _close(self, _: str, mark: str) -> bool:
        if self.expect not in (_KEY_OR_CLOSE, _VALUE_OR_CLOSE, _COMMA_OR_CLOSE):
            return False
        if self.closers.pop() != mark:
            return False
        self._after_value()
        return True

    def _colon(self, _: str, __: str) -> bool:
        if self.expect != _COLON:
            return False
        self.expect = _VALUE
        return True

    def _comma(self, _: str, __: str) -> bool:
        if self.expect != _COMMA_OR_CLOSE:
            return False
        self.expect = _KEY if self.closers[-1] == "}" else _VALUE
        return True

    def _cut_here(self, position: int) -> bool:
        """Whether the text from ``position`` on is a token cut short where one may stand."""
        text = self.text
        if self.cut_char:
            parts: tuple[re.Pattern[str], ...] = (_PART_STRING,)
        elif self.number_at >= 0 and _PART_NUMBER.fullmatch(text, self.number_at):
            return True  # "1." or "1e": the number just read goes on past the end
        else:
            parts = (_PART_STRING, _PART_NUMBER, _PART_LITERAL)
        if self.expect in (_KEY, _KEY_OR_CLOSE):
            parts = parts[:1]
        elif self.expect not in (_VALUE, _VALUE_OR_CLOSE):
            return False
        return any(part.fullmatch(text, position) for part in parts)
