"""Strict JSON in and out: what "exact round trip" means lives here.

The stores keep payloads as JSON text produced by :func:`encode` and read them with
:func:`decode`. The standard library's encoder already keeps key order, ``-0.0`` and integers
of any size exact, and escapes NUL and lone surrogates, so the text is plain ASCII that every
database accepts in a text column. What it does not do is refuse values that would come back
different (tuples become lists, integer keys become strings, ``NaN`` is not JSON at all), so
:func:`check_json` walks the value first and refuses them.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from purpose_agent.errors import InvalidInput

T = TypeVar("T")
_SCALARS = (str, int, float, bool, type(None))
# Values that need no further look: everything scalar but floats, which may be NaN or infinite.
_PLAIN = frozenset({str, int, bool, type(None)})
_encoder = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))
# JSONEncoder.encode builds its C encoder anew on every call; building it once saves that on
# every save. No circular-reference markers: check_json has already bounded the nesting.
_c_encoder: Callable[[Any, int], Any] | None = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)
MAX_DEPTH = 900  # below the C encoder's and decoder's recursion limits
# Integers are stored up to Python's default conversion limit, whatever this process allows:
# a process that raised its limit (sys.set_int_max_str_digits, PYTHONINTMAXSTRDIGITS) would
# otherwise store integers that every process at the default reads as damaged records.
MAX_DIGITS = 4300
_TOO_BIG = 10**MAX_DIGITS
_TOO_BIG_BITS = _TOO_BIG.bit_length() - 1  # an integer with fewer bits is smaller


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
# The C scanner behind json.loads, for callers that decode many values in a loop; it returns
# (value, end) and raises StopIteration when there is no value at the index.
scan_once: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]
# A high surrogate followed by a low one: JSON writes the pair exactly as it writes the one
# astral character they stand for, and reads it back as that character.
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
# How the encoder writes a high surrogate, alone or as the first half of an astral character.
_HIGH_SURROGATE_ESCAPE = re.compile(r"\\ud[89ab]")


def _where(what: str, trail: tuple[Any, ...] | None) -> str:
    keys: list[Any] = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    keys.reverse()
    if len(keys) > 12:  # a path 900 levels deep says nothing more than its two ends
        return (
            what
            + "".join(f"[{key!r}]" for key in keys[:6])
            + "[...]"
            + "".join(f"[{key!r}]" for key in keys[-3:])
        )
    return what + "".join(f"[{key!r}]" for key in keys)


def check_json(value: Any, what: str = "data") -> None:
    """Refuse anything that would not come back from the store exactly as it went in.

    The walk is iterative and bounded in depth, so that deep nesting (or a value that
    contains itself) fails with a clear error rather than a ``RecursionError``; the path to a
    bad value is only spelled out when there is one, since this runs on every save.

    Args:
        value: The value to check.
        what: How the value is named in the error message.

    Raises:
        InvalidInput: If the value or anything inside it is not a JSON value.
    """
    stack: list[tuple[Any, tuple[Any, ...] | None, int]] = [(value, None, 0)]
    while stack:
        item, trail, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInput(
                f"{_where(what, trail)} is nested more than {MAX_DEPTH} levels deep "
                "(or contains itself)"
            )
        if isinstance(item, dict):
            for key, child in item.items():
                if type(key) is not str and not _as_plain_str(key):
                    raise InvalidInput(_bad_key(what, trail, key))
                if type(child) not in _PLAIN:
                    stack.append((child, (trail, key), depth + 1))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                if type(child) not in _PLAIN:
                    stack.append((child, (trail, index), depth + 1))
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(
                    f"{_where(what, trail)} is {item!r}; only finite floats are JSON values"
                )
        elif not isinstance(item, _SCALARS):
            raise InvalidInput(
                f"{_where(what, trail)} is a {type(item).__name__}; only None, bool, int, float, "
                "str, list and dict (with str keys) can be stored"
            )


def _as_plain_str(key: object) -> bool:
    """Whether a key of a ``str`` subclass (a str-valued enum member) comes back usable.

    It comes back a plain ``str``, its content: the loaded dict equals the saved one only if
    the key hashes and compares as that content, which a subclass may define otherwise.
    """
    if not isinstance(key, str):
        return False
    plain = str.__str__(key)
    return hash(key) == hash(plain) and bool(key == plain) and bool(plain == key)


def _bad_key(what: str, trail: tuple[Any, ...] | None, key: object) -> str:
    """Why a key is refused, naming where it is."""
    where = f"{_where(what, trail)} has a key {key!r} of type {type(key).__name__}"
    if isinstance(key, str):
        return (
            f"{where}, a subclass of str that does not hash or compare as its text: it would "
            "come back as a plain str, which the loaded dict would not match; use a plain str"
        )
    return f"{where}; JSON keys must be str"


def _refuse_surrogate_pairs(value: Any, what: str) -> None:
    r"""Refuse a str (value or key) holding a surrogate pair, naming where it is.

    Such a string cannot come back as it went in: ``"\ud83d\ude00"`` and ``"\U0001f600"``
    are the same JSON text, so the first would come back as the second (and two keys that
    differ only so would collide). Lone surrogates are escaped unambiguously and are kept.
    """
    stack: list[tuple[Any, tuple[Any, ...] | None]] = [(value, None)]
    while stack:
        item, trail = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_PAIR.search(item):
                raise InvalidInput(
                    f"{_where(what, trail)} holds a surrogate pair ({item[:40]!r}), which JSON "
                    "cannot tell apart from the character it encodes; store the character itself"
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE_PAIR.search(key):
                    raise InvalidInput(
                        f"{_where(what, trail)} has a key {key[:40]!r} holding a surrogate pair, "
                        "which JSON cannot tell apart from the character it encodes"
                    )
                stack.append((child, (trail, key)))
        elif isinstance(item, list):
            stack.extend((child, (trail, index)) for index, child in enumerate(item))


def encode(value: Any, what: str = "data") -> str:
    """Encode a JSON value as compact ASCII JSON text, refusing anything that is not JSON.

    Args:
        value: The value to encode.
        what: How the value is named in an error message.

    Returns:
        The JSON text.

    Raises:
        InvalidInput: If the value is not a JSON value or cannot be encoded exactly (an integer
            longer than Python's 4,300-digit conversion limit, nesting deeper than the
            encoder's recursion limit, a string holding a surrogate pair).

    """
    check_json(value, what)
    try:
        try:
            text = _encode(value)
        except RecursionError:
            text = on_fresh_stack(_encode, value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidInput(f"{what} cannot be stored as JSON: {exc}") from exc
    # Only text with a high-surrogate escape can hold a pair: astral characters are written as
    # pairs too, so the value itself is searched, and only then. Most text has no backslash
    # at all, which one memchr tells; the regular expression runs only on the rest.
    if "\\" in text and _HIGH_SURROGATE_ESCAPE.search(text):
        _refuse_surrogate_pairs(value, what)
    limit = sys.get_int_max_str_digits()
    if (limit == 0 or limit > MAX_DIGITS) and len(text) > MAX_DIGITS:
        _refuse_long_integers(value, what)
    return text


def _refuse_long_integers(value: Any, what: str) -> None:
    """Refuse an integer of more than :data:`MAX_DIGITS` digits, naming where it is.

    Only where this process converts longer integers (the encoder has done so) and the text
    is long enough to hold one; at the default limit the encoder itself refuses them.
    """
    stack: list[tuple[Any, tuple[Any, ...] | None]] = [(value, None)]
    while stack:
        item, trail = stack.pop()
        if type(item) is int:
            if item.bit_length() >= _TOO_BIG_BITS and abs(item) >= _TOO_BIG:
                raise InvalidInput(
                    f"{_where(what, trail)} is an integer of more than {MAX_DIGITS:,} digits; "
                    f"integers are stored up to Python's default limit of {MAX_DIGITS:,}, "
                    "which every process reading them has"
                )
        elif isinstance(item, dict):
            stack.extend((child, (trail, key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, (trail, index)) for index, child in enumerate(item))


def _encode(value: Any) -> str:
    if _c_encoder is not None and type(value) is dict:
        return "".join(_c_encoder(value, 0))
    return _encoder.encode(value)


def on_fresh_stack(work: Callable[..., T], *args: Any) -> T:
    """Run ``work(*args)`` on a new thread and return (or raise) what it does.

    The C encoder, scanner and comparisons count each level of nesting against the recursion
    limit together with the Python frames the caller is already in. A value nested
    ``MAX_DEPTH`` deep, which the store accepts, would then fail to save or read from deep
    inside a framework's stack; a new thread starts with an empty one. Only values that
    failed so take this path.
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, work(*args)))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="purpose_agent-deep-value", daemon=True)
    thread.start()
    thread.join()
    done, found = outcome[0]
    if not done:
        raise found
    result: T = found
    return result


def decode(text: str | bytes) -> Any:
    """Decode JSON text written by :func:`encode`.

    The scanner is called directly: the text has no surrounding whitespace to skip, and this
    runs once per event read.

    Raises:
        ValueError: If the text is not one JSON value (``NaN`` and ``Infinity`` included).
            Callers turn this into :class:`~purpose_agent.errors.CorruptRecord` with the run
            and seq.

    """
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    try:
        try:
            return _decode(text)
        except RecursionError:
            return on_fresh_stack(_decode, text)
    except RecursionError as exc:
        raise ValueError(f"nesting too deep to decode: {exc}") from exc


def _decode(text: str) -> Any:
    try:
        value, end = scan_once(text, 0)
    except StopIteration:
        end = -1  # not a value at the very start: let the full decoder explain or skip spaces
    if end == len(text):
        return value
    return _decoder.decode(text)
