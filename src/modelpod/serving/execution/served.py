"""One model version being served: its state, how its requests run, and its warm-up.

Execution modes:

* **inline** - a model whose warm-up runs take under ``inline_threshold_ms`` (and that is not
  batched) runs straight on the event loop: a thread hop would cost more than the model.
* **queued** - every other model goes through a :class:`~modelpod.serving.execution.scheduler.Scheduler`
  (bounded queue, deadlines, dynamic batching) feeding ``instances`` instances, each a thread in
  the server process or, with ``metadata.worker = "process"``, a worker process that holds its own
  copy of the model and exchanges tensors through shared memory.

``execution`` ("auto" / "inline" / "queued") in the model's settings overrides the choice.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter_ns
from typing import Any, TypeVar

import numpy as np

from modelpod.errors import ModelError, ServeError, clip
from modelpod.runtime.model import Model
from modelpod.serving.execution.batching import batch_symbol
from modelpod.serving.execution.scheduler import Scheduler
from modelpod.serving.execution.sequences import SequenceTable
from modelpod.serving.execution.stats import InferenceStats
from modelpod.serving.http.messages import MaybeAwaitable
from modelpod.serving.settings import ModelSettings
from modelpod.spec import SpecError

log = logging.getLogger("modelpod.serve")
T = TypeVar("T")
DEFAULT_SIGNATURE = "serving_default"


def read_labels(files: Mapping[str, str] | None, outputs: Sequence[str], model: str) -> dict[str, list[str]]:
    """The label files the settings give (one label per line); ValueError naming the output or file."""
    labels: dict[str, list[str]] = {}
    for output, file in (files or {}).items():
        if output not in outputs:
            raise ValueError(f"model '{model}': 'labels' names output '{output}', which it does not have "
                             f"(outputs: {', '.join(outputs)})")
        try:
            with open(file, encoding="utf-8") as f:
                labels[output] = [line.rstrip("\r\n") for line in f]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"model '{model}': the label file of output '{output}' cannot be read ({exc})") from None
    return labels


class ServedModel:
    """A loaded model version plus everything the server needs to run requests on it."""

    def __init__(self, name: str, version: int, model: Model, settings: ModelSettings,
                 service: Any = None, observer: Callable[..., None] | None = None,
                 stopping: threading.Event | None = None, workers: Sequence[Any] | None = None,
                 environment: Any = None, compute: Callable[[float], None] | None = None) -> None:
        """``observer`` gets what the scheduler measures of each model call; ``compute`` the seconds
        of each call of a model run inline (:meth:`Metrics.compute_recorder`)."""
        self.name = name
        self.version = version
        #: the version as the wire spells it
        self.version_label = str(version)
        self.model = model
        self.settings = settings
        self.service = service
        self.state = "LOADING"
        self.reason = ""
        #: median time of a warm-up call in ms (None: not warmed up, or nothing to run)
        self.warm_up_ms: float | None = None
        self.inline = settings.execution == "inline"
        #: queued models that are cheap run their batches on the event loop too (no thread hop)
        self.inline_batches = False
        self.scheduler: Scheduler | None = None
        #: a stateful model's live sequences (None: the model keeps no state per sequence)
        self.sequences = SequenceTable(name, settings.sequence) if getattr(model, "stateful", False) else None
        #: the model yields its answers (gRPC streams send each; one-answer calls take exactly one)
        self.decoupled = bool(getattr(model, "decoupled", False))
        self.observer = observer
        self.compute = compute
        #: the server's shutdown flag: worker processes that die once it is set stay down
        self.stopping = stopping if stopping is not None else threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        #: an isolated model comes with its worker processes (started with its own environment)
        self.isolated = workers is not None
        self._workers: list[Any] = list(workers or [])
        #: the environment those workers run in (held until this version is closed)
        self.environment = environment
        self._hooks_in_flight = 0
        #: labels of outputs from the settings' label files ({output: [label of index 0, ...]})
        self.labels = read_labels(settings.labels, [s.name for s in model.spec.outputs], name)
        #: Triton-style statistics of this version's requests (the v2 ``stats`` endpoints)
        self.stats = InferenceStats()
        #: a request counts as many inferences as its batch dim has rows (the spec has one)
        self._count_rows = self.batch_symbol is not None
        #: what protocols work out once per version (a protocol's key says whose it is)
        self.memo: dict[str, Any] = {}

    @property
    def ready(self) -> bool:
        return self.state == "READY"

    @property
    def batch_symbol(self) -> str | None:
        spec = self.model.spec
        return batch_symbol(spec.inputs, spec.outputs)

    # -- start-up ----------------------------------------------------------------------------
    def warm_up(self, extra: Sequence[Mapping[str, np.ndarray]] = ()) -> None:
        """Run the stored test vectors (and ``extra`` requests); READY on success, FAILED otherwise."""
        try:
            batches = list(extra)
            vectors = self.model.test_vectors()
            if vectors is not None:
                batches.insert(0, vectors[0])
            timings = []
            if (self.sequences is not None or self.decoupled) and (self.settings.in_processes or self.isolated):
                raise ValueError("stateful and decoupled models run in the server's process: drop 'worker: "
                                 "process', 'memory' and isolation from its settings")
            for inputs in batches:
                for _ in range(3):
                    start = time.perf_counter()
                    if self.decoupled:  # every answer of the test request
                        for _answer in self.model.infer_stream(inputs):
                            pass
                    else:
                        self.model.infer(inputs)
                    timings.append((time.perf_counter() - start) * 1000)
            # a decoupled model's answers come from its instance threads, never the event loop; a
            # stateful model's requests are not batched (each runs in its sequence's turn)
            batched = self.settings.batching.enabled and self.batch_symbol is not None and not (
                self.decoupled or self.sequences is not None)
            self.warm_up_ms = statistics.median(timings) if timings else None
            fast = bool(timings) and self.warm_up_ms < self.settings.inline_threshold_ms
            threads = not self.settings.in_processes and not self.isolated
            if self.settings.execution == "auto" or self.isolated:  # an isolated model runs in its workers
                self.inline = fast and not batched and threads
            if self.decoupled:
                self.inline = False
            self.inline_batches = fast and threads and self.settings.instances == 1
            if not self.inline:
                self._start_instances(batched)
            self.state = "READY"
        except Exception as exc:  # noqa: BLE001 - any failure keeps the model out of traffic
            self.state = "FAILED"
            self.reason = f"warm-up failed: {type(exc).__name__}: {exc}"
            log.error("model %s version %s: %s", self.name, self.version, self.reason)

    def _start_instances(self, batched: bool) -> None:
        opts = self.settings
        self._executor = ThreadPoolExecutor(max_workers=opts.instances, thread_name_prefix=f"model-{self.name}")
        if self.isolated:
            for worker in self._workers:
                if worker.pid is None:
                    worker.start()
            executes = [w.execute for w in self._workers]
        elif opts.in_processes:
            from modelpod.serving.execution.workers import ProcessInstance, hung_after_s

            self._workers = [ProcessInstance(self.model.root, self.name, i, self.stopping,
                                             request_timeout_s=hung_after_s(opts.timeout_ms),
                                             threads=opts.threads, memory_mb=opts.memory)
                             for i in range(opts.instances)]
            for worker in self._workers:
                worker.start()
            executes = [w.execute for w in self._workers]
        elif self.inline_batches:
            executes = [self._inline_execute]
        else:
            executes = [self._thread_execute] * opts.instances
        self.scheduler = Scheduler(self.name, executes, self._call_execute, opts, batch_axis_ok=batched,
                                   observer=self.observer, stats=self.stats, count_rows=self._count_rows)

    @property
    def restarts(self) -> int:
        """How many times this version's worker processes were restarted after dying."""
        return sum(worker.restarts for worker in self._workers)

    @property
    def mode(self) -> str:
        if self.inline:
            return "inline"
        if self.isolated:
            key = getattr(self.environment, "key", None)
            where = "isolated worker process(es)" + (f" (environment {key})" if key else "")
        else:
            where = "worker process(es)" if self.settings.in_processes else "thread(s)"
        batching = self.scheduler.batching if self.scheduler is not None else None
        return f"{self.settings.instances} {where}" + (
            f", batching up to {batching.max_batch_size}" if batching is not None and batching.enabled else "")

    # -- requests ----------------------------------------------------------------------------
    @property
    def transport(self) -> dict[str, str]:
        """The compact transport defaults announced in metadata: the settings', else the package's."""
        return self.settings.transport if self.settings.transport is not None else self.model.manifest.transport

    @property
    def default_signature(self) -> str:
        """The name the default signature goes by on the wire (TF's ``serving_default`` if unnamed)."""
        return self.model.manifest.platform_options.get("signature") or DEFAULT_SIGNATURE

    def resolve_signature(self, name: str | None) -> str | None:
        """A requested signature name -> the model's (None = default); ServeError if unknown."""
        if name is not None and not isinstance(name, str):
            raise ServeError("bad_input", f"signature_name must be a string, got {type(name).__name__}")
        if not name or name == self.default_signature:
            return None
        if name in self.model.signatures:
            return name
        if name == DEFAULT_SIGNATURE:
            return None
        known = [self.default_signature, *self.model.signatures]
        raise ServeError("bad_input", f"model '{self.name}' has no signature {clip(repr(name))} (signatures: {known})")

    def check_ready(self) -> None:
        if self.state != "READY":
            raise ServeError("not_ready", f"model '{self.name}' version {self.version} is not ready"
                             + (f": {self.reason}" if self.reason else ""))

    def _model_failure(self, exc: Exception) -> ServeError:
        """The ServeError for what model code raised: bad input -> bad_input (400); a broken output
        contract or a crash -> model_failed (500)."""
        if isinstance(exc, ServeError):
            return exc
        if isinstance(exc, SpecError):
            return ServeError("bad_input", f"model '{self.name}': {exc}", exc)
        if isinstance(exc, ModelError):
            return ServeError("model_failed", str(exc))
        log.error("model %s version %s raised", self.name, self.version, exc_info=exc)
        return ServeError("model_failed", f"model '{self.name}' raised {type(exc).__name__}: {exc}")

    def infer(
        self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
        signature: str | None = None, timeout_ms: float | None = None,
    ) -> MaybeAwaitable[dict[str, np.ndarray]]:
        """Check and run one request: the outputs at once (inline models) or an awaitable.

        Raises ServeError for every failure (bad input before anything is queued).
        """
        if self.state != "READY":
            self.check_ready()
        start = perf_counter_ns()
        if self.inline:  # checks, runs and checks the outputs in one call
            try:
                result = self.model.infer(inputs, outputs, signature)
            except Exception as exc:  # noqa: BLE001 - mapped to the right ServeError
                end = perf_counter_ns()
                self.stats.failed(end - start, end)
                raise self._model_failure(exc) from None
            end = perf_counter_ns()
            self.stats.inline(start, end, len(next(iter(result.values()))) if self._count_rows and result else 1)
            if self.compute is not None:
                self.compute((end - start) * 1e-9)
            return result
        try:
            arrays, _ = self.model.check_inputs(inputs, outputs, signature)
        except SpecError as exc:
            end = perf_counter_ns()
            self.stats.failed(end - start, end)
            raise ServeError("bad_input", f"model '{self.name}': {exc}", exc) from None
        assert self.scheduler is not None
        return self.scheduler.submit(arrays, outputs, signature, self._budget(timeout_ms),
                                     input_ns=perf_counter_ns() - start)

    def _budget(self, timeout_ms: float | None) -> float:
        return self.settings.timeout_ms if timeout_ms is None else min(timeout_ms, self.settings.timeout_ms)

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered (what a swap waits for before unloading)."""
        return self._hooks_in_flight + (self.scheduler.pending if self.scheduler is not None else 0) + (
            self.sequences.waiting if self.sequences is not None else 0)

    def _inline_execute(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None,
                        signature: str | None) -> dict[str, np.ndarray]:
        try:
            return self.model.infer(inputs, outputs, signature)
        except Exception as exc:  # noqa: BLE001 - mapped to the right ServeError
            raise self._model_failure(exc) from None

    async def _thread_execute(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None,
                              signature: str | None) -> dict[str, np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._inline_execute, inputs, outputs, signature)

    async def _call_execute(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def submit(self, call: Callable[[], T], timeout_ms: float | None = None) -> T:
        """Run ``call`` (service hooks): queued models put it through the scheduler (queue limit and
        deadline apply); inline models run it on the default thread pool, tracked for drains."""
        self.check_ready()
        if self.scheduler is None:
            self._hooks_in_flight += 1
            start = perf_counter_ns()
            try:
                result = await asyncio.get_running_loop().run_in_executor(None, call)
            except BaseException:
                end = perf_counter_ns()
                self.stats.failed(end - start, end)
                raise
            finally:
                self._hooks_in_flight -= 1
            self.stats.inline(start, perf_counter_ns(), 1)
            return result
        return await self.scheduler.submit(None, None, None, self._budget(timeout_ms), call=call)

    # -- shutdown ------------------------------------------------------------------------------
    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for queued and running requests to finish (before a swap unloads this version)."""
        end = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < end:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Unload this version: its scheduler stops on the loop (what is still queued gets 503), then
        its instances and the model are released off the loop (worker processes exit, threads finish
        their calls). The one way a served model is closed; :meth:`drain` first lets requests finish."""
        if self.state == "END":
            return
        self.state = "UNLOADING"
        if self.sequences is not None:  # every sequence's state goes with this version
            self.sequences.close()
        if self.scheduler is not None:
            self.scheduler.close()
        await asyncio.to_thread(self._release)
        self.state = "END"

    def _release(self) -> None:
        for worker in self._workers:
            worker.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.model.close()
        if self.environment is not None:
            self.environment.release()
