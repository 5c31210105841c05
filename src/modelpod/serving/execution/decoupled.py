"""Running a decoupled model's request for a stream: each answer handed on as the model yields it.

The model's generator runs on one of the model's instance threads (through its scheduler, so the
queue limit and the instance count apply as to any request); every answer is checked against the
output spec and given to ``emit``, which may block that thread while the stream's buffer is full
(the client reads slower than the model writes: the model waits, memory stays bounded).

The deadline of a streamed request restarts at each answer: the first must come within the
request's deadline (``timeout`` parameter, the call's deadline, the model's ``timeout_ms``), and
each next one within the same time of the one before. When it passes, or the stream goes away,
the generator is closed at its next ``yield`` (Python cannot stop a thread in the middle of a
step), so a model that yields often stops soon.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from modelpod.errors import ServeError
from modelpod.runtime.sequence import SequenceContext
from modelpod.serving.execution.sequences import Ticket

#: hands one answer to the stream; False: the stream is gone (stop producing)
Emit = Callable[[dict[str, np.ndarray]], bool]
#: the scheduler's own deadline for a streamed request: the watchdog below is the real one
_NO_DEADLINE_MS = 7 * 24 * 3600 * 1000.0


def generate(served: Any, ticket: Ticket | None, inputs: dict[str, np.ndarray],
             outputs: Sequence[str] | None, timeout_ms: float | None, emit: Emit,
             gone: threading.Event) -> Awaitable[int]:
    """Run one request of a decoupled model (in its sequence's turn when ``ticket`` is given),
    emitting every answer; awaits to how many were sent. ``gone`` is set when the stream ends.
    An admitted ticket is taken now (its task exists at once), so it is given back even when the
    request is cancelled before it starts."""
    budget = served.settings.timeout_ms if timeout_ms is None else min(timeout_ms, served.settings.timeout_ms)
    if ticket is None:
        return _drive(served, None, inputs, outputs, budget, budget, emit, gone)

    async def call(context: SequenceContext, left_ms: float) -> int:
        return await _drive(served, context, inputs, outputs, left_ms, budget, emit, gone)

    return served.sequences.run(ticket, call, budget)


async def _drive(served: Any, context: SequenceContext | None, inputs: dict[str, np.ndarray],
                 outputs: Sequence[str] | None, first_ms: float, every_ms: float, emit: Emit,
                 gone: threading.Event) -> int:
    halt = threading.Event()
    progress = [time.monotonic(), 0]  # when the last answer went out, how many did (written by the thread)

    def produce() -> int:
        if halt.is_set() or gone.is_set():
            return 0
        try:
            answers = served.model.infer_stream(inputs, outputs, None, sequence=context)
            try:
                for answer in answers:
                    if halt.is_set() or gone.is_set() or not emit(answer):
                        break
                    progress[0], progress[1] = time.monotonic(), progress[1] + 1
            finally:
                close = getattr(answers, "close", None)
                if close is not None:
                    close()
        except ServeError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to the right ServeError
            raise served._model_failure(exc) from None
        return progress[1]

    scheduler = served.scheduler
    if scheduler is None:  # only with execution: inline in its settings
        work: asyncio.Future = asyncio.get_running_loop().run_in_executor(None, produce)
    else:
        work = asyncio.ensure_future(scheduler.submit(None, None, None, _NO_DEADLINE_MS, call=produce))
    try:
        while True:
            limit = first_ms if progress[1] == 0 else every_ms
            left = progress[0] + limit / 1000 - time.monotonic()
            if left > 0:
                done, _ = await asyncio.wait((work,), timeout=left)
                if done:
                    return work.result()
                continue
            which = "first answer" if progress[1] == 0 else f"answer {progress[1] + 1}"
            raise ServeError("deadline", f"model '{served.name}': no {which} within {limit:.0f} ms (a streamed "
                             "request's deadline restarts at each answer)")
    finally:
        if not work.done():
            halt.set()
            work.cancel()
