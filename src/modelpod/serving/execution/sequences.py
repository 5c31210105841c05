"""Sequences of a stateful model: Triton's sequence extension, over HTTP and gRPC alike.

A request joins a sequence with the v2 parameters ``sequence_id`` (a uint64 or a string; 0 and ""
mean "no sequence"), ``sequence_start`` and ``sequence_end`` (booleans). The rules:

* a model that is not stateful refuses any request that names a sequence (400), and a stateful
  model refuses a request that names none (400): nothing is silently ignored;
* ``sequence_start`` opens the sequence with fresh state (on a live id it starts over); a request
  for an id that is not live (never started, ended, expired) is a 400, so an id reused after its
  end needs ``sequence_start`` again; ``sequence_end`` closes it once that request has run;
* requests of one sequence run one at a time, in the order they arrived (each waits for the
  previous one, within its own deadline); different sequences run side by side;
* a sequence with no request for ``sequence.idle_timeout_s`` is dropped with its state, and at most
  ``sequence.max_sequences`` are live at once (a start past it is refused with 503 /
  RESOURCE_EXHAUSTED); a sequence started on a gRPC stream ends when that stream does.

Admission (:meth:`SequenceTable.admit`) is synchronous and happens on the event loop in arrival
order, which is what orders a sequence's requests; :meth:`SequenceTable.run` then waits for the
sequence's turn. The model's state is the ``state`` dict of the
:class:`~modelpod.runtime.sequence.SequenceContext` it is handed: the table holds it, nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

from modelpod.errors import ServeError, clip
from modelpod.runtime.sequence import SequenceContext
from modelpod.serving.settings import SequenceSettings
from modelpod.spec import SpecError

T = TypeVar("T")
#: the v2 request parameters of the sequence extension
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
#: longest string sequence_id accepted (ids are kept while their sequence lives)
MAX_ID_CHARS = 256
_UINT64_MAX = (1 << 64) - 1


class SequenceRequest(NamedTuple):
    """What a request's parameters say about its sequence."""

    id: int | str
    start: bool
    end: bool


def parse_sequence(params: Mapping[str, Any], model: str) -> SequenceRequest | None:
    """The request's sequence, or None when it names none; ServeError('bad_input') when malformed."""
    if "sequence_id" not in params and "sequence_start" not in params and "sequence_end" not in params:
        return None
    sid = params.get("sequence_id", 0)
    flags = []
    for key in ("sequence_start", "sequence_end"):
        value = params.get(key, False)
        if type(value) is not bool:
            raise ServeError("bad_input", f"model '{model}': parameter '{key}' must be a boolean, "
                             f"got {clip(repr(value))}")
        flags.append(value)
    start, end = flags
    if isinstance(sid, bool) or not isinstance(sid, (int, str)):
        raise ServeError("bad_input", f"model '{model}': parameter 'sequence_id' must be an unsigned integer "
                         f"or a string, got {clip(repr(sid))}")
    if isinstance(sid, int) and not 0 <= sid <= _UINT64_MAX:
        raise ServeError("bad_input", f"model '{model}': parameter 'sequence_id' must fit in a uint64, got {sid}")
    if isinstance(sid, str) and len(sid) > MAX_ID_CHARS:
        raise ServeError("bad_input", f"model '{model}': parameter 'sequence_id' is a string of {len(sid)} "
                         f"characters; at most {MAX_ID_CHARS}")
    if sid == 0 or sid == "":
        if start or end:
            raise ServeError("bad_input", f"model '{model}': sequence_start and sequence_end need a non-zero "
                             "sequence_id (0 and \"\" mean the request is in no sequence)")
        return None
    return SequenceRequest(sid, start, end)


class _Slot:
    """One live sequence: its state, the lock that orders its requests, its bookkeeping."""

    __slots__ = ("id", "state", "lock", "ended", "dropped", "in_flight", "last_used", "owner")

    def __init__(self, sid: int | str, now: float, owner: object | None) -> None:
        self.id = sid
        self.state: dict[str, Any] = {}
        self.lock = asyncio.Lock()
        #: its sequence_end was admitted: no request without sequence_start joins it any more
        self.ended = False
        #: taken out of the table (ended, expired, released, unloaded)
        self.dropped = False
        self.in_flight = 0
        self.last_used = now
        #: the gRPC stream that started it (it ends with that stream), or None
        self.owner = owner


class Ticket:
    """An admitted request: its sequence's slot and what it does to the sequence."""

    __slots__ = ("slot", "start", "end", "waiting")

    def __init__(self, slot: _Slot, start: bool, end: bool) -> None:
        self.slot, self.start, self.end = slot, start, end
        #: still waiting for its sequence's turn (its model call has not begun)
        self.waiting = True


class SequenceTable:
    """The live sequences of one served model version (touched on the event loop only)."""

    def __init__(self, model: str, settings: SequenceSettings) -> None:
        self.model = model
        self.idle_timeout_s = settings.idle_timeout_s
        self.max_sequences = settings.max_sequences
        self._slots: OrderedDict[int | str, _Slot] = OrderedDict()  # least recently used first
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        #: requests admitted and waiting for their sequence's turn (then the scheduler counts them)
        self.waiting = 0
        #: sequences dropped after their idle timeout, since the model was loaded
        self.expired = 0

    @property
    def live(self) -> int:
        """Sequences that are live right now (an ended one counts until its last request ran)."""
        return len(self._slots)

    # -- admission ---------------------------------------------------------------------------
    def admit(self, request: SequenceRequest, owner: object | None = None) -> Ticket:
        """Take one request into its sequence (in arrival order); ServeError when it cannot join."""
        if self._closed:
            raise ServeError("not_ready", f"model '{self.model}' is unloading")
        now = time.monotonic()
        self._expire(now)
        slot = self._slots.get(request.id)
        if request.start:
            if slot is None or slot.ended:
                if slot is None and len(self._slots) >= self.max_sequences:
                    raise ServeError(
                        "queue_full",
                        f"model '{self.model}' has {len(self._slots)} live sequences, its limit "
                        f"(sequence.max_sequences); end one with sequence_end or let idle ones expire "
                        f"({self.idle_timeout_s:g} s), then retry")
                slot = _Slot(request.id, now, owner)
                self._slots[request.id] = slot  # an ended one still running keeps its own slot
            else:  # starts over: fresh state when this request's turn comes
                slot.owner = owner
        elif slot is None or slot.ended:
            raise ServeError(
                "bad_input",
                f"model '{self.model}': sequence {clip(repr(request.id))} is not active; start it with "
                f"sequence_start (a sequence ends at sequence_end, or after {self.idle_timeout_s:g} s "
                "without requests)")
        if request.end:
            slot.ended = True
        slot.in_flight += 1
        slot.last_used = now
        self._slots.move_to_end(slot.id)
        self.waiting += 1
        return Ticket(slot, request.start, request.end)

    def run(self, ticket: Ticket, call: Callable[[SequenceContext, float], Awaitable[T]],
            timeout_ms: float) -> asyncio.Task[T]:
        """Wait for the sequence's earlier requests, then ``await call(context, ms left)``.

        A task, so the ticket is given back however it ends, even cancelled before it ever ran."""
        task = asyncio.ensure_future(self._run(ticket, call, timeout_ms))
        task.add_done_callback(lambda _: self._finished(ticket))
        return task

    async def _run(self, ticket: Ticket, call: Callable[[SequenceContext, float], Awaitable[T]],
                   timeout_ms: float) -> T:
        slot = ticket.slot
        lock = slot.lock
        if lock.locked():
            waited = time.monotonic()
            try:
                await asyncio.wait_for(lock.acquire(), timeout_ms / 1000)
            except (TimeoutError, asyncio.TimeoutError):
                raise ServeError("deadline", f"model '{self.model}': deadline of {timeout_ms:.0f} ms passed "
                                 f"while sequence {clip(repr(slot.id))} ran its earlier requests") from None
            timeout_ms = max(1.0, timeout_ms - (time.monotonic() - waited) * 1000)
        else:
            await lock.acquire()
        try:
            if slot.dropped and not ticket.start:
                raise ServeError("bad_input", f"model '{self.model}': sequence {clip(repr(slot.id))} "
                                 "was ended while this request waited")
            if ticket.start:
                slot.state = {}
            self._begun(ticket)
            context = SequenceContext(slot.id, ticket.start, ticket.end, slot.state)
            return await call(context, timeout_ms)
        finally:
            lock.release()

    # -- ending ------------------------------------------------------------------------------
    def release_owned(self, owner: object) -> None:
        """End every sequence ``owner`` (a gRPC stream) started: the stream is gone."""
        for slot in [s for s in self._slots.values() if s.owner is owner]:
            slot.ended = True
            if slot.in_flight == 0:
                self._drop(slot)

    def close(self) -> None:
        """Drop every sequence and its state (the model version is unloading)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for slot in self._slots.values():
            slot.dropped = True
            slot.state = {}
        self._slots.clear()

    def _begun(self, ticket: Ticket) -> None:
        if ticket.waiting:
            ticket.waiting = False
            self.waiting -= 1

    def _finished(self, ticket: Ticket) -> None:
        self._begun(ticket)
        slot = ticket.slot
        slot.in_flight -= 1
        slot.last_used = time.monotonic()
        if self._slots.get(slot.id) is slot:
            if slot.ended and slot.in_flight == 0:
                self._drop(slot)
            else:
                self._slots.move_to_end(slot.id)
        self._arm()

    def _drop(self, slot: _Slot) -> None:
        if self._slots.get(slot.id) is slot:
            del self._slots[slot.id]
        slot.dropped = True
        slot.state = {}

    def _expire(self, now: float) -> None:
        """Drop sequences idle for longer than the timeout (none of their requests pending)."""
        stale = []
        for slot in self._slots.values():
            if now - slot.last_used < self.idle_timeout_s:
                break
            if slot.in_flight == 0:
                stale.append(slot)
        for slot in stale:
            self._drop(slot)
            self.expired += 1

    def _arm(self) -> None:
        """Make sure a timer will expire the oldest idle sequence (no traffic needed to free it)."""
        if self._timer is not None or self._closed:
            return
        oldest = next((s for s in self._slots.values() if s.in_flight == 0), None)
        if oldest is None:  # none idle: the next request to finish re-arms
            return
        delay = max(0.0, oldest.last_used + self.idle_timeout_s - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._expire(time.monotonic())
        self._arm()


# -- what the protocols call -------------------------------------------------------------------

def admit(served: Any, params: Mapping[str, Any] | None, inputs: Mapping[str, Any],
          outputs: Sequence[str] | None, owner: object | None = None,
          ) -> tuple[Ticket, dict[str, np.ndarray]] | None:
    """Admit a request into the sequence it names on ``served`` (now, in arrival order): its
    ticket and its inputs, checked first (a 400 for a bad input starts or ends nothing). None: it
    names no sequence and the model is not stateful (run it as any request). ServeError for what
    the rules above refuse."""
    table: SequenceTable | None = served.sequences
    request = parse_sequence(params, served.name) if params else None
    if table is None:
        if request is not None:
            raise ServeError("bad_input", f"model '{served.name}' is not stateful: it takes no sequence_id, "
                             "sequence_start or sequence_end (a python model declares stateful = True to keep "
                             "state per sequence)")
        return None
    if request is None:
        raise ServeError("bad_input", f"model '{served.name}' is stateful: every request needs a non-zero "
                         "sequence_id parameter (and sequence_start on a sequence's first request)")
    served.check_ready()
    arrays = check_inputs(served, inputs, outputs)
    return table.admit(request, owner), arrays


def check_inputs(served: Any, inputs: Mapping[str, Any], outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
    """The inputs checked against the spec (400 naming the tensor)."""
    try:
        arrays, _ = served.model.check_inputs(inputs, outputs)
    except SpecError as exc:  # the served model's own mapping: it keeps the mismatch for the wire's words
        raise served._model_failure(exc) from None
    return arrays


def infer(served: Any, ticket: Ticket, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None,
          timeout_ms: float | None) -> Awaitable[dict[str, np.ndarray]]:
    """Run one admitted sequence request (one answer): in its turn, on the model's instances."""
    budget = served.settings.timeout_ms if timeout_ms is None else min(timeout_ms, served.settings.timeout_ms)

    async def call(context: SequenceContext, left_ms: float) -> dict[str, np.ndarray]:
        if served.scheduler is None:  # a model cheap enough to run on the event loop
            return _run(served, inputs, outputs, context)
        return await served.submit(lambda: _run(served, inputs, outputs, context), left_ms)

    return served.sequences.run(ticket, call, budget)


def _run(served: Any, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None,
         context: SequenceContext) -> dict[str, np.ndarray]:
    try:
        return served.model.infer(inputs, outputs, None, sequence=context)
    except Exception as exc:  # noqa: BLE001 - mapped to the right ServeError
        raise served._model_failure(exc) from None
