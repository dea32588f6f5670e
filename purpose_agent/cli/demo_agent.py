"""A small deterministic agent that checkpoints as it goes, and resumes after a crash.

``purpose-agent demo`` runs it. The agent prices a shopping list, one item per step: a scripted
"model" picks the next item from the state so far, a "tool" returns its price, and the state
keeps the cart and the total. There is no network and no model, and everything (item choices,
prices, timestamps) is derived from the step number and the state, so every run of the same
length ends in the same state, whatever its run id and however often it was interrupted.

Every step appends seven events (``step_started``, ``model_request``, ``model_response``,
``tool_call``, ``tool_result``, ``state_change``, ``step_finished``) and saves them together
with the state after the step in one ``save_events(events, snapshot=state)`` call: a step lands
whole or not at all. The state is a pure function of the events (:func:`apply`), so resuming is
loading the snapshot and applying the events after it; the state also carries a digest chained
over every event applied, so a replay that skipped or repeated an event would end differently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from purpose_agent.errors import InvalidInput
from purpose_agent.protocol import Checkpointer
from purpose_agent.records import check_run_id
from purpose_agent.runtime.events import EventKind, PAEvent
from purpose_agent.runtime.state import RunState, RunStatus

DEMO_EPOCH = 1_700_000_000.0
TICK = 0.25
DEFAULT_STEPS = 5
EVENTS_PER_STEP = 7
TASK = "Price a shopping list, one item per step, and keep a running total."
ITEMS = (
    "coffee beans",
    "oat milk",
    "sourdough",
    "olive oil",
    "lemons",
    "dark chocolate",
    "basil",
    "sparkling water",
)
TOOL = "price_lookup"
# A step is complete when this kind is stored; the run when RUN_FINISHED is.
_UNIT_ENDS = (EventKind.STEP_FINISHED, EventKind.RUN_FINISHED)

How = Literal["skipped", "replayed", "run"]


def event_ts(seq: int) -> float:
    """The fixed timestamp of the event at ``seq``: runs are comparable field for field."""
    return DEMO_EPOCH + seq * TICK


def price_lookup(item: str, step: int) -> int:
    """The demo's tool: a price in cents, the same for the same item at the same step."""
    digest = hashlib.sha256(f"{item}|{step}".encode()).digest()
    return 150 + int.from_bytes(digest[:4], "big") % 1350


def choose_item(data: dict[str, Any], step: int) -> str:
    """The demo's "model": the next item depends on the total so far.

    A replay that rebuilt the wrong state would therefore choose differently from then on.
    """
    return ITEMS[(int(data.get("total_cents", 0)) + step) % len(ITEMS)]


def initial_state(run_id: str) -> RunState:
    """The state before the first event."""
    return RunState(run_id=run_id, seq=0, data={}, created_at=DEMO_EPOCH, updated_at=DEMO_EPOCH)


def _chain(digest: str, event: PAEvent) -> str:
    record = {"seq": event.seq, "kind": event.kind.value, "ts": event.ts, "data": event.data}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{digest}|{text}".encode()).hexdigest()[:16]


def apply(state: RunState, event: PAEvent) -> RunState:
    """Return the state after ``event``: the only way the demo's state ever changes.

    Args:
        state: The state before the event.
        event: The next event of the run (``event.seq`` must follow ``state.seq``).

    Returns:
        A new state covering ``event.seq``.

    Raises:
        InvalidInput: If the event does not continue the state.

    """
    if event.seq <= state.seq:
        raise InvalidInput(f"event seq {event.seq} does not follow the state's seq {state.seq}")
    data = {**state.data, "cart": list(state.data.get("cart", []))}
    status = state.status
    created_at = state.created_at
    payload = event.data
    if event.kind is EventKind.RUN_STARTED:
        data = {
            "task": payload["task"],
            "steps_planned": payload["steps"],
            "steps_done": 0,
            "cart": [],
            "total_cents": 0,
            "digest": "",
        }
        created_at = event.ts
    elif event.kind is EventKind.TOOL_RESULT:
        data["cart"].append(payload["result"])
    elif event.kind is EventKind.STATE_CHANGE:
        data.update(payload["set"])
    elif event.kind is EventKind.STEP_FINISHED:
        data["steps_done"] = payload["step"]
    elif event.kind is EventKind.RUN_FINISHED:
        status = RunStatus.FINISHED
    data["digest"] = _chain(str(data.get("digest", "")), event)
    return RunState(
        run_id=state.run_id,
        seq=event.seq,
        data=data,
        status=status,
        created_at=created_at,
        updated_at=event.ts,
    )


def step_events(state: RunState, step: int) -> list[PAEvent]:
    """The events of ``step``, decided from the state before it (deterministic).

    The first step also opens the run with ``run_started``.
    """
    run_id = state.run_id
    seq = state.seq
    events: list[PAEvent] = []

    def add(kind: EventKind, data: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        events.append(PAEvent(run_id=run_id, seq=seq, kind=kind, ts=event_ts(seq), data=data))

    if seq == 0:
        add(EventKind.RUN_STARTED, {"task": TASK, "steps": state.data["steps_planned"]})
    data = state.data
    item = choose_item(data, step)
    price = price_lookup(item, step)
    total = int(data.get("total_cents", 0)) + price
    count = len(data.get("cart", []))
    add(EventKind.STEP_STARTED, {"step": step})
    add(
        EventKind.MODEL_REQUEST,
        {
            "step": step,
            "prompt": f"{count} items priced, total {data.get('total_cents', 0)} "
            "cents. Which item next?",
        },
    )
    add(
        EventKind.MODEL_RESPONSE,
        {"step": step, "text": f"Look up {item}.", "tool": TOOL, "args": {"item": item}},
    )
    add(EventKind.TOOL_CALL, {"step": step, "tool": TOOL, "args": {"item": item}})
    add(
        EventKind.TOOL_RESULT,
        {"step": step, "tool": TOOL, "result": {"item": item, "price_cents": price}},
    )
    add(EventKind.STATE_CHANGE, {"step": step, "set": {"total_cents": total}})
    add(EventKind.STEP_FINISHED, {"step": step})
    return events


@dataclass(frozen=True)
class StepRecord:
    """What happened to one step in this process.

    Attributes:
        step: The step number, from 1.
        how: ``"skipped"`` (its result was in the snapshot), ``"replayed"`` (rebuilt from the
            events after the snapshot) or ``"run"`` (executed now).
        first_seq: Its first event (``run_started`` for step 1).
        last_seq: Its ``step_finished`` event.
        item: The item it priced.
        price_cents: The price the tool returned.
        snapshot: Whether the state after it was saved with it (only for ``"run"``).

    """

    step: int
    how: How
    first_seq: int
    last_seq: int
    item: str
    price_cents: int
    snapshot: bool = False


class DemoRun:
    """One demo run in one process: a new run, or the resumption of a stored one.

    Building it recovers the run (snapshot plus the events after it) and rebuilds the state;
    :attr:`history` then says which steps were skipped and which replayed, and
    :meth:`pending_steps` which remain.

    Args:
        store: Where the run is checkpointed.
        run_id: The run.
        steps: Steps of a new run (default 5). For a stored run it must match, or be ``None``.
        snapshot_every: Save the state with every n-th step only; the steps in between are
            replayed from their events when the run resumes.

    Raises:
        InvalidInput: A bad step count, or a stored run that the demo did not write or that
            was planned with another number of steps.
        InvalidRunId: A run id no store accepts.

    """

    def __init__(
        self,
        store: Checkpointer,
        run_id: str,
        *,
        steps: int | None = None,
        snapshot_every: int = 1,
    ) -> None:
        check_run_id(run_id)
        for name, value in (("steps", steps), ("snapshot_every", snapshot_every)):
            if value is not None and (type(value) is not int or value < 1):
                raise InvalidInput(f"{name} must be an int >= 1, got {value!r}")
        self.store = store
        self.run_id = run_id
        self.snapshot_every = snapshot_every
        self.history: list[StepRecord] = []
        self.partial_events = 0
        recovery = store.recover(run_id)
        self.snapshot_seq = (
            recovery.state.seq if recovery is not None and recovery.state is not None else None
        )
        self.resumed = recovery is not None
        state = initial_state(run_id)
        if recovery is not None:
            try:
                state = self._restore(recovery.state, recovery.events)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                # Another program's run: its events do not have the demo's shape.
                raise InvalidInput(f"run {run_id!r} was not written by the demo") from exc
        if "steps_planned" not in state.data:
            if state.seq > 0:
                raise InvalidInput(f"run {run_id!r} was not written by the demo")
            state = state.model_copy(update={"data": {"steps_planned": steps or DEFAULT_STEPS}})
        planned = int(state.data["steps_planned"])
        if steps is not None and steps != planned:
            raise InvalidInput(
                f"run {run_id!r} was started with {planned} steps, not {steps}; "
                "leave out --steps to resume it"
            )
        self.steps = planned
        self.state = state

    def _restore(self, snapshot: RunState | None, tail: list[PAEvent]) -> RunState:
        state = snapshot if snapshot is not None else initial_state(self.run_id)
        self.history.extend(self._cart_records(state, "skipped"))
        unit: list[PAEvent] = []
        for event in tail:
            unit.append(event)
            if event.kind in _UNIT_ENDS:
                before = state
                for item in unit:
                    state = apply(state, item)
                if event.kind is EventKind.STEP_FINISHED:
                    self.history.extend(self._cart_records(state, "replayed", after=before))
                unit = []
        # Events of a step that never got its step_finished (written by something other than
        # one save_events call): the step runs again, and re-saving them is a no-op.
        self.partial_events = len(unit)
        return state

    def _cart_records(
        self, state: RunState, how: How, after: RunState | None = None
    ) -> list[StepRecord]:
        cart = state.data.get("cart", [])
        done = int(state.data.get("steps_done", 0))
        start = int(after.data.get("steps_done", 0)) if after is not None else 0
        return [
            StepRecord(
                step,
                how,
                *step_seqs(step),
                str(cart[step - 1]["item"]),
                int(cart[step - 1]["price_cents"]),
            )
            for step in range(start + 1, done + 1)
        ]

    @property
    def finished(self) -> bool:
        """Whether the run is finished (its ``run_finished`` event is stored)."""
        return self.state.status is RunStatus.FINISHED

    def pending_steps(self) -> range:
        """The steps that still have to run, in order."""
        return range(int(self.state.data.get("steps_done", 0)) + 1, self.steps + 1)

    def run_step(self, step: int) -> StepRecord:
        """Execute one step and commit its events, with the state after it, in one call.

        Raises:
            InvalidInput: If ``step`` is not the next pending step.
            StoreUnavailable: The store cannot be written (nothing of the step is stored).

        """
        pending = self.pending_steps()
        if not pending or step != pending[0]:
            raise InvalidInput(f"step {step} is not the next step of run {self.run_id!r}")
        events = step_events(self.state, step)
        state = self.state
        for event in events:
            state = apply(state, event)
        snapshot = step % self.snapshot_every == 0
        self.store.save_events(events, snapshot=state if snapshot else None)
        self.state = state
        result = state.data["cart"][-1]
        first, last = step_seqs(step)
        return StepRecord(step, "run", first, last, result["item"], result["price_cents"], snapshot)

    def finish(self) -> RunState:
        """Commit ``run_finished`` with the final state; a no-op for a finished run.

        Raises:
            InvalidInput: If steps are still pending.

        """
        if self.finished:
            return self.state
        if self.pending_steps():
            raise InvalidInput(f"run {self.run_id!r} still has steps to run")
        seq = self.state.seq + 1
        total = self.state.data["total_cents"]
        event = PAEvent(
            run_id=self.run_id,
            seq=seq,
            kind=EventKind.RUN_FINISHED,
            ts=event_ts(seq),
            data={"total_cents": total, "items": len(self.state.data["cart"])},
        )
        state = apply(self.state, event)
        self.store.save_events([event], snapshot=state)
        self.state = state
        return state


def step_seqs(step: int) -> tuple[int, int]:
    """The first and last seq of a step (``run_started`` is seq 1, inside step 1)."""
    last = 1 + step * EVENTS_PER_STEP
    first = 1 if step == 1 else last - EVENTS_PER_STEP + 1
    return first, last
