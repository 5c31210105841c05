"""Model instances in worker processes, restarted when they die.

Each :class:`ProcessInstance` owns one worker (:class:`~modelpod.runtime.workerproc.WorkerProcess`:
a program speaking the worker bridge, ``docs/worker-protocol.md``) that loads the package itself:
with the server's interpreter, or with the package's own environment (``command``). A request's
arrays are copied once into a shared-memory segment the server owns; only a small JSON header
(names, datatypes, shapes, offsets) travels over the socket. The worker answers the same way
through a segment of its own.

A worker that dies (kill -9, segfault, out of memory) fails only the request it was running, with
``not_ready`` (503) naming the exit code; the instance starts a fresh process, warms it and takes
work again, and ``restarts`` counts it. ``stop()`` ends the process, so its memory goes back.

Shutdown belongs to the server: a worker ignores SIGINT and SIGTERM, so the server can drain its
in-flight requests before it stops the workers; once the server's ``stopping`` flag is set, a
worker that dies is not restarted. A worker whose server is gone (even SIGKILLed) sees EOF on its
socket and exits. Segments are named ``modelpod-<server pid>-...`` (see
:mod:`modelpod.serving.execution.stale`), the worker's own included.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelpod.backends.base import Backend
from modelpod.bridge.shm import AttachedSegment, OwnedSegment, owned_prefix
from modelpod.errors import BridgeError, ServeError, WorkerDiedError, WorkerError
from modelpod.runtime import allocator
from modelpod.runtime.workerproc import WorkerProcess, ready_signatures

log = logging.getLogger("modelpod.serve")
_live: weakref.WeakSet[ProcessInstance] = weakref.WeakSet()


#: how long past its deadline a worker may hold a request before it is taken for hung and restarted
HUNG_GRACE_S = 30.0


def hung_after_s(timeout_ms: float) -> float:
    """When a worker holding one request is killed: the model's deadline plus :data:`HUNG_GRACE_S`."""
    return timeout_ms / 1000 + HUNG_GRACE_S


class ProcessInstance:
    """One model instance in its own process; ``execute`` is awaited by the scheduler.

    ``command`` is the worker program (default: a Python worker in this interpreter); ``hooks``
    and ``modelarts`` make the worker load the service hooks too (isolated packages run them there).
    """

    def __init__(self, root: Path, name: str, index: int, stopping: threading.Event | None = None,
                 command: Sequence[str] | None = None, *, hooks: bool = False, modelarts: bool = False,
                 request_timeout_s: float | None = None, threads: int | None = None,
                 memory_mb: int | None = None) -> None:
        self.root = str(root)
        self.name = name
        self.index = index
        self.command = list(command) if command is not None else None
        self.hooks = hooks
        self.modelarts = modelarts
        #: a worker holding one request longer than this is killed and restarted (None: never)
        self.request_timeout_s = request_timeout_s
        #: the framework thread count and the memory cap (MB) of each worker (None: no limit)
        self.threads = threads
        self.memory_mb = memory_mb
        self.restarts = 0
        #: the server's shutdown flag: once set, a worker that dies is not restarted
        self.server_stopping = stopping if stopping is not None else threading.Event()
        self.worker: WorkerProcess | None = None
        # kept across restarts: the request segment, and the view of the worker's answer segment
        self._inbox = OwnedSegment(owned_prefix())
        self._outbox = AttachedSegment()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        #: guards _stopping and worker together (a restart racing an unload)
        self._life = threading.Lock()
        self._stopping = False
        self.failure = ""
        _live.add(self)

    # -- process lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker and wait until it has loaded and warmed the model."""
        worker = WorkerProcess(self.root, self.name, self.command, hooks=self.hooks, modelarts=self.modelarts,
                               keep_freed_memory=allocator.applied(), inbox=self._inbox, outbox=self._outbox,
                               label=f"model '{self.name}' worker {self.index}",
                               request_timeout_s=self.request_timeout_s, threads=self.threads,
                               memory_mb=self.memory_mb)
        try:
            worker.start()
            with self._life:  # stop() may have run meanwhile: then this worker must not outlive it
                if self._stopping or self.server_stopping.is_set():
                    worker.stop()
                    raise BridgeError("the model is unloading" if self._stopping else "the server is shutting down")
                self.worker = worker
        except BridgeError as exc:
            self.failure = str(exc)
            raise RuntimeError(f"worker process for model '{self.name}' failed to start: {exc}") from None
        self._ready.set()
        threading.Thread(target=self._watch, args=(worker,), daemon=True,
                         name=f"watch-{self.name}-{self.index}").start()

    def _watch(self, worker: WorkerProcess) -> None:
        """Restart the worker whenever it exits without being told to (runs in a thread)."""
        assert worker.process is not None
        code = worker.process.wait()
        if self._stopping:
            return
        self._ready.clear()
        worker.remove_segments()  # the dead worker's answer segments: their owner can't unlink them now
        if self.server_stopping.is_set():
            log.warning("model %s instance %d: worker exited with %s during shutdown; left down", self.name,
                        self.index, code)
            return
        self.restarts += 1
        log.warning("model %s instance %d: worker exited with %s; restarting", self.name, self.index, code)
        delay = 0.5
        while not self._stopping and not self.server_stopping.is_set():
            try:
                self.start()
                log.info("model %s instance %d: worker restarted", self.name, self.index)
                return
            except RuntimeError as exc:
                log.error("%s; retrying in %.0f s", exc, delay)
                threading.Event().wait(delay)
                delay = min(delay * 2, 30)

    def stop(self) -> None:
        with self._life:
            self._stopping = True
            worker = self.worker
        if worker is not None:
            worker.stop()
        self._outbox.close()
        self._inbox.release()

    @property
    def pid(self) -> int | None:
        return self.worker.pid if self.worker is not None else None

    # -- requests ------------------------------------------------------------------------------
    def _roundtrip(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None,
                   signature: str | None) -> dict[str, np.ndarray]:
        return self._call(lambda worker: worker.infer(inputs, outputs, signature))

    def handle(self, content_type: str, body: bytes, max_fields: int) -> tuple[bytes, str]:
        """Service hooks run in the worker (isolated packages): (answer body, content type)."""
        return self._call(lambda worker: worker.handle(content_type, body, max_fields))

    def _call(self, send):  # type: ignore[no-untyped-def]
        with self._lock:
            for _ in range(100):  # a request that never reached a dead worker waits for its successor
                worker = self._running_worker()
                try:
                    return send(worker)
                except WorkerDiedError as exc:
                    raise ServeError("not_ready", f"{exc}; it is being restarted, retry shortly") from None
                except WorkerError as exc:
                    kind = exc.kind if exc.kind in ("bad_input", "too_large") else "model_failed"
                    raise ServeError(kind, f"model '{self.name}': {exc}") from None
                except BridgeError as exc:
                    raise ServeError("model_failed", str(exc)) from None
                except ConnectionError:  # the worker was already gone: this request did not reach it
                    self._await_successor(worker)
            raise ServeError("not_ready", f"model '{self.name}': worker {self.index} keeps dying")

    def _running_worker(self) -> WorkerProcess:
        """This request's worker: the watcher thread swaps in a new one on a restart."""
        if self.worker is not None and not self.worker.alive():
            self._ready.clear()  # died while idle: wait for the watcher to bring it back
            if self.server_stopping.is_set():
                raise ServeError("not_ready", f"model '{self.name}': worker {self.index} is not running "
                                 "(the server is shutting down)")
        if not self._ready.wait(timeout=600):
            raise ServeError("not_ready", f"model '{self.name}': worker {self.index} is not running")
        assert self.worker is not None
        return self.worker

    def _await_successor(self, dead: WorkerProcess) -> None:
        """Wait until the watcher has replaced ``dead`` with a started worker (or we are stopping)."""
        for _ in range(60000):
            if self._stopping or self.server_stopping.is_set():
                raise ServeError("not_ready", f"model '{self.name}' is unloading")
            if self.worker is not dead and self._ready.is_set():
                return
            threading.Event().wait(0.01)
        raise ServeError("not_ready", f"model '{self.name}': worker {self.index} is not running")

    async def execute(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None,
                      signature: str | None) -> dict[str, np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(None, self._roundtrip, inputs, outputs, signature)


@atexit.register
def _stop_all() -> None:
    """Stop workers still running when the server exits (one a swap started during shutdown, say)."""
    for instance in list(_live):
        if not instance._stopping:
            instance.stop()


class InstanceBackend(Backend):
    """The server-side Backend of an isolated model: ``run`` goes to one of its worker processes
    (the server itself never imports the package's code). Used for the warm-up timing."""

    platform = "worker"

    def __init__(self, root: Path, manifest: Any, instance: ProcessInstance) -> None:
        super().__init__(root, manifest)
        self.instance = instance

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            signature: str | None = None) -> Mapping[str, Any]:
        return self.instance._roundtrip(inputs, outputs, signature)

    def signatures(self) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        worker = self.instance.worker
        return ready_signatures(worker.ready if worker is not None else {})


class RemoteService:
    """Service hooks that run inside an isolated model's workers: the raw body goes to a worker,
    which decodes it, runs preprocess -> inference -> postprocess and encodes the answer."""

    #: run_hooks hands this service the raw body instead of a decoded request
    remote = True

    def __init__(self, name: str, instances: Sequence[ProcessInstance]) -> None:
        self.name = name
        self._instances = list(instances)
        self._next = itertools.count()

    def handle_raw(self, content_type: str, body: bytes, max_fields: int) -> tuple[bytes, str]:
        instance = self._instances[next(self._next) % len(self._instances)]
        return instance.handle(content_type, body, max_fields)
