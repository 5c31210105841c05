"""Model instances in worker processes, with tensors crossing through shared memory.

Each :class:`ProcessInstance` owns one spawned process that loads the package itself. A request's
arrays are copied once into a shared-memory segment the server owns; only a small header (names,
dtypes, shapes, offsets) travels over a pipe. The worker answers the same way through a segment it
owns. String tensors, which have no fixed layout, travel pickled in the header.

A worker that dies (kill -9, segfault, out of memory) fails only the request it was running, with
``not_ready`` (503) naming the exit code; the instance starts a fresh process, warms it and takes
work again, and ``restarts`` counts it. ``stop()`` ends the process, so its memory goes back.

Shutdown belongs to the server: a worker ignores SIGINT and SIGTERM (Ctrl-C and systemd signal the
whole process group), so the server can drain its in-flight requests before it stops the workers
through their pipes; once the server's ``stopping`` flag is set, a worker that dies is not restarted. A worker
whose server is gone (even SIGKILLed) sees EOF on its pipe and exits. Segments are named
``modelpod-<server pid>-...`` (see :mod:`modelpod.serving.execution.stale`), the worker's own included.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing as mp
import os
import secrets
import signal
import threading
import weakref
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np

from modelpod.errors import ServeError
from modelpod.serving.execution import allocator
from modelpod.serving.execution.stale import owned_prefix

log = logging.getLogger("modelpod.serve")
_ALIGN = 64
_TRACK_ARG = "track" in SharedMemory.__init__.__code__.co_varnames  # Python >= 3.13
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_live: weakref.WeakSet[ProcessInstance] = weakref.WeakSet()


def _layout(arrays: Mapping[str, np.ndarray]) -> tuple[list[tuple], dict[str, np.ndarray], int]:
    """(fixed-size tensor slots, object tensors, bytes needed) for writing arrays into a segment."""
    slots, objects, offset = [], {}, 0
    for name, array in arrays.items():
        if array.dtype.kind == "O":
            objects[name] = array
            continue
        slots.append((name, array.dtype.str, array.shape, offset, array.nbytes))
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    return slots, objects, offset


def _write(buf: memoryview, arrays: Mapping[str, np.ndarray], slots: list[tuple]) -> None:
    for name, dtype, shape, offset, nbytes in slots:
        dest = np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=offset)
        np.copyto(dest, arrays[name], casting="no")


def _read(buf: memoryview, slots: list[tuple], copy: bool) -> dict[str, np.ndarray]:
    out = {}
    for name, dtype, shape, offset, nbytes in slots:
        view = np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=offset)
        out[name] = view.copy() if copy else view
    return out


class _Segment:
    """A growable shared-memory segment owned by this process, named after the server ``owner``."""

    def __init__(self, owner: int | None = None) -> None:
        self.shm: SharedMemory | None = None
        self.owner = os.getpid() if owner is None else owner

    def ensure(self, size: int) -> SharedMemory:
        if self.shm is None or self.shm.size < size:
            self.release()
            size = max(size, 1 << 20) * 2 if size else 1 << 20
            while self.shm is None:
                try:
                    self.shm = SharedMemory(f"{owned_prefix(self.owner)}{secrets.token_hex(4)}", create=True, size=size)
                except FileExistsError:
                    continue
        return self.shm

    def release(self) -> None:
        if self.shm is not None:
            self.shm.close()
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass
            self.shm = None


class _Attached:
    """A segment another process owns, re-attached whenever its name changes."""

    def __init__(self) -> None:
        self.shm: SharedMemory | None = None

    def get(self, name: str) -> SharedMemory:
        if self.shm is None or self.shm.name != name:
            self.close()
            if _TRACK_ARG:
                self.shm = SharedMemory(name=name, track=False)
            else:
                # Before 3.13 attaching registers the segment again. Spawned workers share the server's
                # resource tracker, which keeps a *set* of names: registering twice is harmless, but
                # unregistering here would drop the owner's entry (a KeyError in the tracker when the
                # owner unlinks, and a leaked segment if the owner is killed).
                self.shm = SharedMemory(name=name)
        return self.shm

    def close(self) -> None:
        if self.shm is not None:
            self.shm.close()
            self.shm = None


def _dropped(signum: int, frame: object) -> None:
    """A group signal reached a worker: the server decides when it stops."""


def _ignore_group_signals() -> None:
    """Leave SIGINT / SIGTERM to the server. They arrive blocked (see ProcessInstance.start): catch
    them first, then unblock, so one sent while the worker was starting up is dropped too. A no-op
    handler rather than SIG_IGN: programs the model starts get the default dispositions back."""
    for sig in _SIGNALS:
        signal.signal(sig, _dropped)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def _worker_main(root: str, conn: Connection, keep_freed_memory: bool = False, server_pid: int | None = None) -> None:
    """The worker process: load the package, then answer requests until told to stop (or the
    server's end of the pipe closes)."""
    _ignore_group_signals()
    from modelpod.errors import ModelError
    from modelpod.runtime.model import load
    from modelpod.spec import SpecError

    if keep_freed_memory:  # as the server does
        allocator.keep_freed_memory()

    try:
        model = load(root)
        vectors = model.test_vectors()
        if vectors is not None:
            model.infer(vectors[0])
    except Exception as exc:  # noqa: BLE001 - reported to the server, which keeps the instance down
        try:
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        except OSError:  # the server is gone
            pass
        return
    inbox = _Attached()
    outbox = _Segment(server_pid)
    try:
        conn.send(("ready", None))
        while True:
            msg = conn.recv()
            if msg is None:
                break
            shm_name, slots, objects, outputs, signature = msg
            try:
                inputs = _read(inbox.get(shm_name).buf, slots, copy=False) if slots else {}
                inputs.update(objects)
                result = model.infer(inputs, outputs, signature)
            except SpecError as exc:
                conn.send(("error", "bad_input", str(exc)))
                continue
            except ModelError as exc:
                conn.send(("error", "model_failed", str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - the model's bug becomes a 500 for this request
                conn.send(("error", "model_failed", f"model '{model.name}' raised {type(exc).__name__}: {exc}"))
                continue
            out_slots, out_objects, size = _layout(result)
            shm = outbox.ensure(size)
            _write(shm.buf, result, out_slots)
            conn.send(("ok", shm.name, out_slots, out_objects))
    except (EOFError, OSError):  # the server is gone: nobody needs this worker any more
        pass
    finally:
        inbox.close()
        outbox.release()
        model.close()


class ProcessInstance:
    """One model instance in its own process; ``execute`` is awaited by the scheduler."""

    def __init__(self, root: Path, name: str, index: int, stopping: threading.Event | None = None) -> None:
        self.root = str(root)
        self.name = name
        self.index = index
        self.restarts = 0
        #: the server's shutdown flag: once set, a worker that dies is not restarted
        self.server_stopping = stopping if stopping is not None else threading.Event()
        self.process: mp.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self._inbox = _Segment()
        self._outbox = _Attached()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self.failure = ""
        _live.add(self)

    # -- process lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Spawn the worker and wait until it has loaded and warmed the model."""
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(self.root, child, allocator.applied(), os.getpid()),
                              daemon=True, name=f"modelpod-{self.name}-{self.index}")
        # the child inherits this thread's signal mask: SIGINT / SIGTERM stay blocked until it ignores them
        masked = hasattr(signal, "pthread_sigmask")
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) if masked else None
        try:
            process.start()
        finally:
            if masked:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        child.close()
        try:
            status, detail = parent.recv() if parent.poll(600) else ("failed", "no answer in 600 s")
        except (EOFError, OSError):
            process.join(5)
            status, detail = "failed", f"the worker process exited (exit code {process.exitcode}) while loading"
        if status == "ready" and self.server_stopping.is_set():
            status, detail = "failed", "the server is shutting down"
            try:
                parent.send(None)
            except OSError:
                pass
            process.join(5)
        if status != "ready":
            process.kill()
            process.join(5)
            parent.close()
            self.failure = detail
            raise RuntimeError(f"worker process for model '{self.name}' failed to start: {detail}")
        self.process, self.conn = process, parent
        self._outbox.close()
        self._ready.set()
        threading.Thread(target=self._watch, args=(process,), daemon=True,
                         name=f"watch-{self.name}-{self.index}").start()

    def _watch(self, process: mp.process.BaseProcess) -> None:
        """Restart the worker whenever it exits without being told to (runs in a thread)."""
        process.join()
        if self._stopping:
            return
        self._ready.clear()
        dead_outbox = self._outbox.shm
        if dead_outbox is not None:  # the dead worker's answer segment: its owner can't unlink it now
            try:
                dead_outbox.unlink()
            except FileNotFoundError:
                pass
        if self.server_stopping.is_set():
            log.warning("model %s instance %d: worker exited with %s during shutdown; left down", self.name,
                        self.index, process.exitcode)
            return
        self.restarts += 1
        log.warning("model %s instance %d: worker exited with %s; restarting", self.name, self.index,
                    process.exitcode)
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
        self._stopping = True
        if self.conn is not None:
            try:
                self.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        if self.process is not None:
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
        self._outbox.close()
        self._inbox.release()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # -- requests ------------------------------------------------------------------------------
    def _roundtrip(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None,
                   signature: str | None) -> dict[str, np.ndarray]:
        with self._lock:
            for _ in range(100):  # a request that never reached a dead worker waits for its successor
                process, conn = self._running_worker()
                slots, objects, size = _layout(inputs)
                shm = self._inbox.ensure(size)
                _write(shm.buf, inputs, slots)
                try:
                    conn.send((shm.name, slots, objects, list(outputs) if outputs else None, signature))
                except OSError:  # the worker was already gone: this request did not reach it
                    self._await_successor(process)
                    continue
                try:
                    ready = wait([conn, process.sentinel])
                    if conn not in ready:
                        raise EOFError
                    reply = conn.recv()
                except (EOFError, OSError):
                    self._reaped(process)
                    raise ServeError(
                        "not_ready", f"model '{self.name}': worker process {self.index} died (exit code "
                        f"{process.exitcode}) while running this request; it is being restarted, retry shortly",
                    ) from None
                break
            else:
                raise ServeError("not_ready", f"model '{self.name}': worker {self.index} keeps dying")
            if reply[0] == "error":
                raise ServeError(reply[1], f"model '{self.name}': {reply[2]}")
            _, out_name, out_slots, out_objects = reply
            result = _read(self._outbox.get(out_name).buf, out_slots, copy=True)
            result.update(out_objects)
            return result

    def _running_worker(self) -> tuple[mp.process.BaseProcess, Connection]:
        """This request's (process, pipe): the watcher thread swaps in new ones on a restart."""
        if self.process is not None and not self.process.is_alive():
            self._ready.clear()  # died while idle: wait for the watcher to bring it back
            if self.server_stopping.is_set():
                raise ServeError("not_ready", f"model '{self.name}': worker {self.index} is not running "
                                 "(the server is shutting down)")
        if not self._ready.wait(timeout=600):
            raise ServeError("not_ready", f"model '{self.name}': worker {self.index} is not running")
        process, conn = self.process, self.conn
        assert process is not None and conn is not None
        return process, conn

    @staticmethod
    def _reaped(process: mp.process.BaseProcess) -> None:
        """Wait (briefly) for the exit code: the watcher thread may be the one reaping the process."""
        process.join(1)
        for _ in range(100):
            if process.exitcode is not None:
                return
            threading.Event().wait(0.01)

    def _await_successor(self, dead: mp.process.BaseProcess) -> None:
        """Wait until the watcher has replaced ``dead`` with a started worker (or we are stopping)."""
        for _ in range(60000):
            if self._stopping or self.server_stopping.is_set():
                raise ServeError("not_ready", f"model '{self.name}' is unloading")
            if self.process is not dead and self._ready.is_set():
                return
            threading.Event().wait(0.01)
        raise ServeError("not_ready", f"model '{self.name}': worker {self.index} is not running")

    async def execute(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None,
                      signature: str | None) -> dict[str, np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(None, self._roundtrip, inputs, outputs, signature)


@atexit.register
def _stop_all() -> None:
    """Stop workers still running when the server exits (one a swap started during shutdown, say):
    multiprocessing's own exit hook would SIGTERM them, which they ignore, and then wait forever.
    Registered after multiprocessing's hook, so it runs first."""
    for instance in list(_live):
        if not instance._stopping:
            instance.stop()
