"""Events: the append-only log entries an agent run emits, and the field rules values share.

Each rule a stored value must follow is written once, on the field type below, so that a value
that could not be stored exactly is refused when it is built, and the stores apply the very same
rules again when they are handed a value that was built some other way (``model_construct``,
``copy.copy``, attribute assignment).
"""

from __future__ import annotations

import copy
import time
import unicodedata
from collections.abc import Mapping
from enum import Enum, StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    Strict,
    TypeAdapter,
    ValidationError,
)

from purpose_agent.errors import InvalidInput, InvalidRunId


class EventKind(StrEnum):
    """What happened in a run. ``kind.value`` is the short string that is stored."""

    RUN_STARTED = "run_started"
    RUN_RESUMED = "run_resumed"
    RUN_FINISHED = "run_finished"
    RUN_FAILED = "run_failed"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    STEP_FAILED = "step_failed"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    MODEL_REQUEST = "model_request"
    MODEL_RESPONSE = "model_response"
    STATE_CHANGE = "state_change"
    MESSAGE = "message"
    CUSTOM = "custom"


MAX_RUN_ID_LENGTH = 255
# Below 2**63: every SQL backend keeps positions in a signed 64-bit column.
SEQ_LIMIT = 2**63
# One to 255 characters, no control character, no "/" or "\", and not "." or "..": a run id
# also names a folder of the JSONL store. The pattern runs on UTF-8, so a string holding a
# surrogate (not text any database accepts) is refused as well. No look-ahead in the pattern
# language: the lengths one and two spell out "not . or ..".
_RUN_ID_PATTERN = r"^(?:[^\p{Cc}/\\]{3,}|[^\p{Cc}/\\.][^\p{Cc}/\\]?|\.[^\p{Cc}/\\.])$"


def _plus_zero(value: float) -> float:
    # A SQL DOUBLE drops the sign of -0.0 on SQLite and MariaDB; normalising it here means the
    # event that was built is the event that comes back, on every backend.
    return value + 0.0


RunId = Annotated[
    str, Strict(), Field(min_length=1, max_length=MAX_RUN_ID_LENGTH, pattern=_RUN_ID_PATTERN)
]
"""A run id every backend can store and no path can be built from."""

Position = Annotated[int, Strict(), Field(ge=1, lt=SEQ_LIMIT)]
"""An event's place in its run, from 1."""

Covered = Annotated[int, Strict(), Field(ge=0, lt=SEQ_LIMIT)]
"""The last event seq a state includes; 0 means none."""

Timestamp = Annotated[float, Strict(), Field(allow_inf_nan=False), AfterValidator(_plus_zero)]
"""Unix seconds: a finite float (an int is taken as a float), with -0.0 read as 0.0."""

LaneId = Annotated[str, Strict(), Field(max_length=255, pattern=r"^[^\x00]*$")]
"""A lane name: at most 255 characters of UTF-8 text without NUL."""

EventKey = Annotated[str, Strict(), Field(min_length=1, max_length=255, pattern=r"^[^\x00]*$")]
"""A caller's name for an event, unique within its run: 1 to 255 characters without NUL."""

JsonObject = InstanceOf[dict[str, Any]]
"""A payload. Only the container is checked when a value is built: whether the contents are
JSON (and stay JSON while the caller keeps mutating them) is decided when the value is saved."""

_RUN_ID = TypeAdapter(RunId)
_LANE = TypeAdapter(LaneId)
# Run ids already checked: a run writes and reads many times, and the check costs as much as
# decoding a small event. Only valid ids enter; the set is bounded.
_checked_run_ids: set[str] = set()
_CHECKED_LIMIT = 65_536


def _why_refused(run_id: object) -> str:
    """Say which part of the run id rule ``run_id`` breaks (the rule itself is ``RunId``)."""
    if type(run_id) is not str:
        return f"run id must be a str, not {type(run_id).__name__}"
    if not run_id:
        return "run id must not be empty"
    if len(run_id) > MAX_RUN_ID_LENGTH:
        return f"run id is {len(run_id)} characters long; the limit is {MAX_RUN_ID_LENGTH}"
    if run_id in (".", ".."):
        return f"run id must not be {run_id!r}"
    return _bad_character(run_id)


def _bad_character(run_id: str) -> str:
    for char in run_id:
        if char in "/\\":
            return f"run id {run_id!r} contains {char!r}"
        category = unicodedata.category(char)
        if category == "Cc":
            return f"run id {run_id!r} contains a control character"
        if category == "Cs":
            return f"run id {run_id!r} contains a surrogate, which is not text a database keeps"
    return (  # pragma: no cover - every way of breaking the pattern is named above
        f"run id {run_id!r} is not 1 to {MAX_RUN_ID_LENGTH} characters of text without "
        "control characters, '/' or '\\', other than '.' and '..'"
    )


def storable_lane(lane: str) -> bool:
    """Whether an event can be in this lane (a lane filter naming another one matches nothing).

    A lane with NUL or a surrogate (which no database keeps as text) or of more than 255
    characters is refused when an event is built, so no stored event has one.
    """
    try:
        _LANE.validate_python(lane)
    except ValidationError:
        return False
    return True


def check_run_id(run_id: object) -> str:
    """Refuse run ids that are empty, too long, or could name a path outside one run.

    Args:
        run_id: The value to check.

    Returns:
        The run id, unchanged.

    Raises:
        InvalidRunId: If the run id is not acceptable on every backend.

    """
    if type(run_id) is str and run_id in _checked_run_ids:
        return run_id
    try:
        checked: str = _RUN_ID.validate_python(run_id)
    except ValidationError:
        raise InvalidRunId(_why_refused(run_id)) from None
    if len(_checked_run_ids) >= _CHECKED_LIMIT:
        _checked_run_ids.clear()
    _checked_run_ids.add(checked)
    return checked


class InvalidValue(ValidationError, InvalidInput):
    """A value refused when it is built: pydantic's error, and also the store's ``InvalidInput``.

    Code written against pydantic catches it as ``ValidationError``; code written against the
    store catches it as ``InvalidInput``, whether the value was refused when it was built or
    when it was saved.
    """


class InvalidRunIdValue(InvalidValue, InvalidRunId):
    """A value refused when it is built because of its run id alone."""


def refusal(model: type[BaseModel], exc: ValidationError) -> InvalidValue:
    """The error to raise for a value pydantic refused, with pydantic's details intact.

    Args:
        model: The value's class, which names the error.
        exc: pydantic's error.

    Returns:
        The same error as an :class:`InvalidValue` (an :class:`InvalidRunIdValue` when the run
        id is all that is wrong).

    """
    details = exc.errors()
    only_run_id = all(detail["loc"][:1] == ("run_id",) for detail in details)
    kind = InvalidRunIdValue if only_run_id else InvalidValue
    return kind.from_exception_data(model.__name__, details)  # type: ignore[arg-type]


class CheckedFields(dict[str, Any]):
    """The fields of a value as its own validator built them.

    A value keeps its fields in one of these once it is validated: when it is built (pydantic's
    ``model_validate`` builds through ``__init__`` too) or assigned to (assignments are
    validated). Whatever bypasses validation (``model_construct``, pydantic's own copies,
    ``copy.copy``) leaves a plain dict, so a store can tell a value that needs checking from
    one that does not, and spend the check only where it is needed.
    """

    __slots__ = ()

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)


def _plain(value: Any) -> Any:
    """An enum field's stored string (a value built unchecked may hold the string itself)."""
    return value.value if isinstance(value, Enum) else value


def _mark_checked(value: BaseModel) -> None:
    fields = value.__dict__
    if type(fields) is not CheckedFields:
        object.__setattr__(value, "__dict__", CheckedFields(fields))


class Value(BaseModel):
    """What events and states share: strict fields, and a dict form derived from them.

    Enum fields appear in the dict form as their string values, and nothing is copied, so
    ``to_dict`` stays cheap on a state of megabytes; ``from_dict`` is its exact inverse.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    _enum_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **fields: Any) -> None:
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise refusal(type(self), exc) from None
        _mark_checked(self)

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise refusal(type(self), exc) from None
        if name in type(self).model_fields:
            _mark_checked(self)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Note which fields hold enums, once per class rather than on every ``to_dict``."""
        super().__pydantic_init_subclass__(**kwargs)
        cls._enum_fields = frozenset(
            name
            for name, info in cls.model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, Enum)
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the value as plain JSON-able values, enums as their string values.

        The payload is the value's own dict, not a copy.
        """
        fields = self.__dict__
        enums = self._enum_fields
        return {
            name: _plain(fields[name]) if name in enums else fields[name]
            for name in type(self).model_fields
        }

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Return a copy, with ``update``'s fields validated as the constructor validates them.

        pydantic's own copy takes ``update`` unchecked: ``update={"kind": "message"}`` left a
        plain string where the enum belongs, so ``to_dict()`` failed on it and a store refused
        it as not a member, although the constructor takes that string.

        Raises:
            InvalidValue: An updated field is not valid (a ``ValueError`` and an
                ``InvalidInput``).

        """
        copied = super().model_copy(deep=deep)
        if not update:
            return copied
        return type(self)(**{**copied.__dict__, **update})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Rebuild a value from :meth:`to_dict` output.

        Raises:
            InvalidValue: If ``d`` is not a valid value (a ``ValidationError`` and an
                ``InvalidInput``).

        """
        try:
            value = cls.model_validate(d)
        except ValidationError as exc:
            raise refusal(cls, exc) from None
        _mark_checked(value)
        return value


class PAEvent(Value):
    """One entry of a run's log.

    ``seq`` is assigned by the caller and is the event's position in its run; the store refuses
    a second, different event at the same position. Every field is checked when the event is
    built and again when it is saved, so an event built from untrusted data never reaches
    storage half-valid.

    Attributes:
        run_id: The run this event belongs to.
        seq: Position in the run, from 1.
        kind: What happened.
        ts: Unix seconds when it happened; defaults to now.
        lane_id: The lane of a run with parallel branches.
        data: The event's payload, JSON values only.

    """

    run_id: RunId
    seq: Position
    kind: EventKind
    ts: Timestamp = Field(default_factory=time.time)
    lane_id: LaneId = "main"
    data: JsonObject = Field(default_factory=dict)


class NewEvent(Value):
    """An event to append: the store gives it its run's next ``seq``.

    With a ``key``, the event can be fetched by that key, and appending it again is safe: an
    event with the same key and the same kind, lane and data is not stored twice (``ts`` is
    not compared, so a retry that rebuilt the value is still recognised).

    Attributes:
        kind: What happened.
        ts: Unix seconds when it happened; defaults to now.
        lane_id: The lane of a run with parallel branches.
        data: The event's payload, JSON values only.
        key: The caller's name for the event, unique within its run, or ``None``.

    """

    kind: EventKind
    ts: Timestamp = Field(default_factory=time.time)
    lane_id: LaneId = "main"
    data: JsonObject = Field(default_factory=dict)
    key: EventKey | None = None

    def at(self, run_id: str, seq: int) -> PAEvent:
        """The event as stored at ``seq`` of ``run_id`` (the key is kept by the store, not here)."""
        return PAEvent(
            run_id=run_id, seq=seq, kind=self.kind, ts=self.ts, lane_id=self.lane_id, data=self.data
        )
