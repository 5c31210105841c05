"""One model version being served: its state, admission (queue limit), deadlines and execution.

Execution: a model whose warm-up runs take under ``inline_threshold_ms`` runs straight on the event
loop (a thread hop would cost more than the model); slower models run on ``instances`` threads so
the loop keeps answering. ``metadata.execution`` ("inline" / "thread") overrides the choice.
Requests beyond ``max_queue_size`` waiting are refused at once; a request whose deadline passes
while it waits is dropped before it reaches the model.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from modelpod.runtime.model import Model, ModelError
from modelpod.serving.errors import ServeError
from modelpod.serving.http import MaybeAwaitable
from modelpod.spec import SpecError

log = logging.getLogger("modelpod.serve")
T = TypeVar("T")
DEFAULT_SIGNATURE = "serving_default"


@dataclass
class ServingOptions:
    """Per-model serving settings (from the EAS-style ``metadata`` or defaults)."""

    instances: int = 1
    max_queue_size: int = 64
    timeout_ms: float = 5000.0
    execution: str = "auto"  # auto | inline | thread
    inline_threshold_ms: float = 1.0
    warm_up_data_path: str | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None, **extra: Any) -> "ServingOptions":
        md = dict(metadata or {})
        opts = cls(**{k: v for k, v in extra.items() if v is not None})
        if "instance" in md:
            opts.instances = max(1, int(md["instance"]))
        if "rpc.max_queue_size" in md:
            opts.max_queue_size = max(0, int(md["rpc.max_queue_size"]))
        if "rpc.keepalive" in md:
            opts.timeout_ms = float(md["rpc.keepalive"])
        if "execution" in md:
            if md["execution"] not in ("auto", "inline", "thread"):
                raise ValueError("metadata.execution must be auto, inline or thread")
            opts.execution = md["execution"]
        return opts


class ServedModel:
    """A loaded model version plus everything the server needs to run requests on it."""

    def __init__(self, name: str, version: int, model: Model, options: ServingOptions,
                 service: Any = None) -> None:
        self.name = name
        self.version = version
        self.model = model
        self.options = options
        self.service = service
        self.state = "LOADING"
        self.reason = ""
        self.inline = options.execution == "inline"
        self._executor: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self.waiting = 0
        self.running = 0

    @property
    def ready(self) -> bool:
        return self.state == "READY"

    # -- start-up ----------------------------------------------------------------------------
    def warm_up(self, extra: Sequence[Mapping[str, np.ndarray]] = ()) -> None:
        """Run the stored test vectors (and ``extra`` requests); READY on success, FAILED otherwise."""
        try:
            batches = list(extra)
            vectors = self.model.test_vectors()
            if vectors is not None:
                batches.insert(0, vectors[0])
            timings = []
            for inputs in batches:
                for _ in range(3):
                    start = time.perf_counter()
                    self.model.infer(inputs)
                    timings.append((time.perf_counter() - start) * 1000)
            if self.options.execution == "auto":
                self.inline = bool(timings) and statistics.median(timings) < self.options.inline_threshold_ms
            if not self.inline:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.options.instances, thread_name_prefix=f"model-{self.name}"
                )
            self.state = "READY"
        except Exception as exc:  # noqa: BLE001 - any failure keeps the model out of traffic
            self.state = "FAILED"
            self.reason = f"warm-up failed: {type(exc).__name__}: {exc}"
            log.error("model %s version %s: %s", self.name, self.version, self.reason)

    # -- requests ----------------------------------------------------------------------------
    @property
    def default_signature(self) -> str:
        """The name the default signature goes by on the wire (TF's ``serving_default`` if unnamed)."""
        return self.model.manifest.platform_options.get("signature") or DEFAULT_SIGNATURE

    def resolve_signature(self, name: str | None) -> str | None:
        """A requested signature name -> the model's (None = default); ServeError if unknown."""
        if not name or name == self.default_signature:
            return None
        if name in self.model.signatures:
            return name
        if name == DEFAULT_SIGNATURE:
            return None
        known = [self.default_signature, *self.model.signatures]
        raise ServeError("bad_input", f"model '{self.name}' has no signature {name!r} (signatures: {known})")

    def check(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None,
              signature: str | None) -> tuple[dict[str, np.ndarray], dict]:
        try:
            return self.model.check_inputs(inputs, outputs, signature)
        except SpecError as exc:
            raise ServeError("bad_input", f"model '{self.name}': {exc}") from None

    def _run(self, arrays: Mapping[str, np.ndarray], bindings: dict, outputs: Sequence[str] | None,
             signature: str | None) -> dict[str, np.ndarray]:
        try:
            return self.model.run_checked(arrays, bindings, outputs, signature)
        except ServeError:
            raise
        except ModelError as exc:
            raise ServeError("model_failed", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the model's own bug is a 500, never a 400
            log.exception("model %s version %s raised", self.name, self.version)
            raise ServeError(
                "model_failed", f"model '{self.name}' raised {type(exc).__name__}: {exc}"
            ) from None

    def infer(
        self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
        signature: str | None = None, timeout_ms: float | None = None,
    ) -> MaybeAwaitable[dict[str, np.ndarray]]:
        """Check, admit and run one request: the outputs at once (inline models) or an awaitable.

        Raises ServeError for every failure.
        """
        self.check_ready()
        arrays, bindings = self.check(inputs, outputs, signature)
        if self.inline:
            return self._run(arrays, bindings, outputs, signature)
        return self.submit(partial(self._run, arrays, bindings, outputs, signature), timeout_ms)

    def check_ready(self) -> None:
        if self.state != "READY":
            raise ServeError("not_ready", f"model '{self.name}' version {self.version} is not ready"
                             + (f": {self.reason}" if self.reason else ""))

    async def submit(self, call: Callable[[], T], timeout_ms: float | None = None) -> T:
        """Run ``call`` on an instance thread under this model's queue limit and deadline."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.options.instances)
        budget = self.options.timeout_ms if timeout_ms is None else min(timeout_ms, self.options.timeout_ms)
        deadline = time.monotonic() + budget / 1000
        if self.waiting >= self.options.max_queue_size and self._slots.locked():
            raise ServeError(
                "queue_full",
                f"model '{self.name}': queue is full ({self.options.max_queue_size} waiting); "
                "retry later or add instances",
            )
        self.waiting += 1
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=max(0.0, deadline - time.monotonic()))
            except (TimeoutError, asyncio.TimeoutError):
                raise ServeError(
                    "deadline", f"model '{self.name}': deadline of {budget:.0f} ms passed while queued"
                ) from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, call)
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout=max(0.0, deadline - time.monotonic()))
            except (TimeoutError, asyncio.TimeoutError):
                raise ServeError(
                    "deadline", f"model '{self.name}': deadline of {budget:.0f} ms passed while running"
                ) from None
        finally:
            self.running -= 1
            self._slots.release()

    # -- shutdown ------------------------------------------------------------------------------
    def close(self) -> None:
        self.state = "UNLOADING"
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.model.close()
        self.state = "END"
