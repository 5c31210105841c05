"""The per-model queue: admission limit, deadlines, dynamic batching, and N instances pulling work.

* Admission: more than ``max_queue_size`` requests waiting -> refused at once (``queue_full``).
* Deadlines: a request whose deadline passes while queued is dropped before it reaches the model
  (counted in ``expired``) and answered ``deadline``; one that passes while running is answered
  ``deadline`` and its result discarded.
* Batching (see :mod:`modelpod.serving.execution.batching`): an instance that picks a request keeps
  collecting compatible ones until ``max_batch_size`` rows, a preferred size, or
  ``max_batch_delay_ms`` after the oldest request arrived — then runs them as one call.
* Instances: each instance is a coroutine that takes the next batch and awaits its ``execute``
  (a thread, or a worker process), so N instances run N batches at once.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelpod.errors import ServeError
from modelpod.serving.execution import batching
from modelpod.serving.execution.stats import InferenceStats
from modelpod.serving.settings import BatchingSettings, ModelSettings

#: Runs one (merged) request on an instance: the outputs, or an awaitable of them.
Execute = Callable[[dict[str, np.ndarray], Sequence[str] | None, str | None],
                   "dict[str, np.ndarray] | Awaitable[dict[str, np.ndarray]]"]
CallExecute = Callable[[Callable[[], Any]], Awaitable[Any]]
NO_BATCHING = BatchingSettings()


@dataclass(eq=False)
class Job:
    inputs: dict[str, np.ndarray] | None
    outputs: Sequence[str] | None
    signature: str | None
    deadline: float
    future: asyncio.Future
    enqueued: float
    call: Callable[[], Any] | None = None
    key: tuple = ()
    rows: int = 1
    cancelled: bool = False
    #: ns its input check took before it was queued (statistics)
    input_ns: int = 0
    #: rows it counts for in the statistics' inference_count (its batch dim, or 1)
    count: int = 1


@dataclass
class SchedulerStats:
    """What the scheduler did, for /metrics."""

    expired: int = 0
    rejected: int = 0
    batches: int = 0


class Scheduler:
    """Queue + batcher + instances for one served model version."""

    def __init__(self, name: str, executes: Sequence[Execute], call_execute: CallExecute,
                 settings: ModelSettings, *, batch_axis_ok: bool, observer: Any = None,
                 stats: InferenceStats | None = None, count_rows: bool = False) -> None:
        """``settings`` give the queue size and batching; batching happens only when
        ``batch_axis_ok`` (the settings ask for it and the model's spec has a batch dim).
        ``stats`` receives every request's and call's counts and durations; ``count_rows``: a
        request counts as many inferences as its batch dim has rows (the spec has one)."""
        self.name = name
        self.executes = list(executes)
        self.call_execute = call_execute
        self.max_queue_size = settings.max_queue_size
        self.batching = settings.batching if batch_axis_ok else NO_BATCHING
        self.queue: deque[Job] = deque()
        self.stats = SchedulerStats()
        self.observer = observer
        self.inference = stats
        self.count_rows = count_rows
        self.running = 0
        self.pending = 0  # submitted and not yet answered (queued + running)
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self._closed = False

    # -- submitting ----------------------------------------------------------------------------
    def _start(self) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._workers = [asyncio.create_task(self._worker(ex)) for ex in self.executes]

    async def submit(self, inputs: dict[str, np.ndarray] | None, outputs: Sequence[str] | None,
                     signature: str | None, timeout_ms: float, call: Callable[[], Any] | None = None,
                     input_ns: int = 0) -> Any:
        """Queue one request (or a plain ``call``) and wait for its result, within its deadline.

        ``input_ns``: how long the request's input check took (counted in its statistics)."""
        if self._closed:
            self._refused(input_ns)
            raise ServeError("not_ready", f"model '{self.name}' is unloading")
        self._start()
        if len(self.queue) >= self.max_queue_size:
            self._drop_answered()
        if len(self.queue) >= self.max_queue_size:
            self.stats.rejected += 1
            self._refused(input_ns)
            raise ServeError(
                "queue_full",
                f"model '{self.name}': queue is full ({self.max_queue_size} waiting); retry later or add instances",
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        job = Job(inputs, outputs, signature, now + timeout_ms / 1000, loop.create_future(), now, call,
                  input_ns=input_ns)
        if inputs is not None and call is None and self.batching.enabled and signature is None:
            job.key = batching.group_key(inputs)
            job.count = job.rows = batching.rows(inputs)
        elif self.count_rows and inputs:
            job.count = batching.rows(inputs)
        timer = loop.call_at(loop.time() + timeout_ms / 1000, self._timed_out, job, timeout_ms)
        self.queue.append(job)
        self.pending += 1
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await job.future
        except BaseException:
            if self.inference is not None:
                self.inference.failed(int((time.monotonic() - now) * 1e9) + input_ns, time.perf_counter_ns())
            raise
        finally:
            timer.cancel()
            self.pending -= 1

    def _refused(self, input_ns: int) -> None:
        if self.inference is not None:
            self.inference.failed(input_ns, time.perf_counter_ns())

    def _timed_out(self, job: Job, timeout_ms: float) -> None:
        """The deadline passed: answer now; a queued job is then skipped, a running one discarded."""
        job.cancelled = True
        if not job.future.done():
            job.future.set_exception(
                ServeError("deadline", f"model '{self.name}': deadline of {timeout_ms:.0f} ms passed"))

    def _drop_answered(self) -> None:
        """Take jobs already answered ``deadline`` out of the queue: they no longer hold a place."""
        live = [job for job in self.queue if not job.cancelled]
        if len(live) < len(self.queue):
            for job in self.queue:
                if job.cancelled:
                    self._expire(job)
            self.queue.clear()
            self.queue.extend(live)

    # -- instances -----------------------------------------------------------------------------
    def _next_job(self) -> Job | None:
        now = time.monotonic()
        while self.queue:
            job = self.queue.popleft()
            if job.cancelled or job.deadline <= now:
                self._expire(job)
                continue
            return job
        return None

    def _expire(self, job: Job) -> None:
        """Drop a job whose deadline passed before it ran (it never reaches the model)."""
        self.stats.expired += 1
        if not job.future.done():
            job.future.set_exception(ServeError("deadline", f"model '{self.name}': deadline passed while queued"))

    async def _collect(self, first: Job) -> list[Job]:
        """Gather compatible jobs after ``first`` until the batch is full or the delay is over."""
        batch, total = [first], first.rows
        opts = self.batching
        limit = opts.max_batch_size
        flush_at = first.enqueued + opts.max_batch_delay_ms / 1000
        assert self._wakeup is not None
        while total < limit:
            taken, kept, now = False, deque(), time.monotonic()
            for job in self.queue:  # one pass: take what fits, keep the rest in order
                if job.key != first.key or job.call is not None or job.signature is not None \
                        or total + job.rows > limit:
                    kept.append(job)
                elif job.cancelled or job.deadline <= now:
                    self._expire(job)
                else:
                    batch.append(job)
                    total += job.rows
                    taken = True
            self.queue = kept
            if total >= limit or total in opts.preferred_batch_sizes:
                break
            remaining = flush_at - time.monotonic()
            if remaining <= 0:
                break
            if not taken:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except (TimeoutError, asyncio.TimeoutError):
                    break
        return batch

    async def _worker(self, execute: Execute) -> None:
        assert self._wakeup is not None
        while not self._closed:
            job = self._next_job()
            if job is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            picked = time.monotonic()
            if job.call is not None:
                await self._run_call(job)
                continue
            batch = await self._collect(job) if job.key else [job]
            if self.queue:
                self._wakeup.set()  # let another idle instance take what is left
            await self._run_batch(execute, batch, picked)

    async def _run_call(self, job: Job) -> None:
        self.running += 1
        started = time.monotonic()
        try:
            result = await self.call_execute(job.call)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            if not job.future.done():
                job.future.set_result(result)
                if self.inference is not None:
                    done = time.monotonic()
                    call_ns = int((done - started) * 1e9)
                    self.inference.execution(1, 0, call_ns, 0)
                    self.inference.succeeded(int((done - job.enqueued) * 1e9), int((started - job.enqueued) * 1e9),
                                         0, call_ns, 0, 1, time.perf_counter_ns())
        finally:
            self.running -= 1

    async def _run_batch(self, execute: Execute, batch: list[Job], picked: float) -> None:
        started = time.monotonic()
        merged_at = computed = started
        self.running += 1
        try:
            if len(batch) == 1:
                single = execute(batch[0].inputs, batch[0].outputs, batch[0].signature)  # type: ignore[arg-type]
                results = [await single if inspect.isawaitable(single) else single]
                computed = time.monotonic()
            else:
                merged = batching.merge([j.inputs for j in batch])  # type: ignore[misc]
                wanted = [j.outputs for j in batch]
                union = None if any(w is None for w in wanted) else sorted({n for w in wanted for n in w})  # type: ignore[union-attr]
                merged_at = time.monotonic()
                outputs = execute(merged.inputs, union, None)
                if inspect.isawaitable(outputs):
                    outputs = await outputs
                computed = time.monotonic()
                results = batching.split(outputs, merged.offsets, wanted)
        except ValueError as exc:
            error: BaseException = ServeError("model_failed", f"model '{self.name}': {exc}")
            results = None
        except asyncio.CancelledError:  # unloaded while running: answer the callers, then stop
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(ServeError(
                        "not_ready", f"model '{self.name}' was unloaded while running this request; retry"))
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
            error = exc
            results = None
        finally:
            self.running -= 1
        done = time.monotonic()
        self.stats.batches += 1
        if self.observer is not None:
            rows = sum(j.rows for j in batch)
            self.observer([picked - j.enqueued for j in batch], started - picked, done - started, rows)
        stats = self.inference
        if stats is not None and results is not None:
            merge_ns, infer_ns = int((merged_at - started) * 1e9), int((computed - merged_at) * 1e9)
            output_ns, end = int((done - computed) * 1e9), time.perf_counter_ns()
            stats.execution(sum(j.count for j in batch), merge_ns, infer_ns, output_ns)
        for i, job in enumerate(batch):
            if job.future.done():
                continue
            if results is None:
                job.future.set_exception(error)
            else:
                job.future.set_result(results[i])
                if stats is not None:
                    stats.succeeded(int((done - job.enqueued) * 1e9) + job.input_ns,
                                    int((started - job.enqueued) * 1e9), job.input_ns + merge_ns, infer_ns,
                                    output_ns, job.count, end)

    # -- shutdown ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the instances and fail what is still queued; call on the event loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for task in self._workers:
            task.cancel()
        while self.queue:
            job = self.queue.popleft()
            if not job.future.done():
                job.future.set_exception(ServeError("not_ready", f"model '{self.name}' was unloaded"))
