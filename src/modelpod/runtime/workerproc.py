"""The server's end of the worker bridge: start a worker program, hand it a package, send it requests.

:class:`WorkerProcess` is one worker: a program (by default ``python -m modelpod.runtime.worker``,
in this interpreter or in a package's own environment) started with one end of a socket pair as
``--fd N``. It checks the worker's hello (protocol name and bridge version: a worker of another
version is refused, the message naming both), sends ``load``, and waits for ``ready``. The worker
finds ``MODELPOD_WORKER`` (its label) in its environment: model code can tell it runs in a worker. Requests
copy their tensors once into a segment this process owns; the worker answers through a segment it
owns, named under this process's prefix so a dead worker's segments can be removed.

:class:`WorkerBackend` puts a worker behind the Backend interface, so ``modelpod.load(path,
isolated=True)`` gives a :class:`~modelpod.runtime.model.Model` whose ``infer`` runs in the worker.
Restarting workers that die is the server's business
(:class:`~modelpod.serving.execution.workers.ProcessInstance`).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from modelpod.backends.base import Backend
from modelpod.bridge import protocol
from modelpod.bridge.protocol import BRIDGE_VERSION, PROTOCOL_NAME, Layout, read_tensors
from modelpod.bridge.shm import AttachedSegment, OwnedSegment, owned_prefix, unlink
from modelpod.errors import (
    BridgeError,
    ModelError,
    WorkerDiedError,
    WorkerError,
    WorkerInputError,
)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")
#: how a package's own interpreter imports modelpod, and nothing else of the server's: the
#: ``modelpod`` folder is loaded by path (``-I`` already keeps PYTHONPATH and user site-packages out)
_BOOT = (
    "import importlib.util, sys\n"
    "pkg = sys.argv.pop(1)\n"
    "spec = importlib.util.spec_from_file_location('modelpod', pkg + '/__init__.py', "
    "submodule_search_locations=[pkg])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules['modelpod'] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "from modelpod.runtime.worker import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


#: the variables frameworks read their thread count from (onnxruntime: MODELPOD_THREADS, read by modelpod)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "MODELPOD_THREADS")


def thread_env(threads: int | None) -> dict[str, str]:
    """Environment variables that hold a worker's frameworks to ``threads`` threads (none: no limit)."""
    if not threads:
        return {}
    return {**dict.fromkeys(THREAD_VARIABLES, str(threads)), "TF_NUM_INTEROP_THREADS": "1"}


def worker_command(python: str | None = None) -> list[str]:
    """The argv (before ``--fd N``) of a Python worker: this interpreter, or ``python`` isolated."""
    if python is None or Path(python) == Path(sys.executable):
        return [sys.executable, "-m", "modelpod.runtime.worker"]
    return [python, "-I", "-c", _BOOT, str(Path(__file__).resolve().parents[1])]


class WorkerProcess:
    """One worker program speaking the bridge, holding one loaded package.

    ``command`` is the worker program's argv (``--fd N`` is appended); ``root`` the package (or
    ModelArts folder, with ``modelarts=True``); ``hooks`` asks the worker to load the package's
    service hooks too. ``start()`` raises BridgeError with the worker's reason when it cannot load.
    """

    def __init__(self, root: str | Path, name: str, command: Sequence[str] | None = None, *,
                 hooks: bool = False, modelarts: bool = False, warm: bool = True,
                 keep_freed_memory: bool = False, label: str = "",
                 inbox: OwnedSegment | None = None, outbox: AttachedSegment | None = None,
                 request_timeout_s: float | None = None, threads: int | None = None,
                 memory_mb: int | None = None) -> None:
        self.root = str(root)
        self.name = name
        self.command = list(command) if command is not None else worker_command()
        self.hooks = hooks
        self.modelarts = modelarts
        self.warm = warm
        self.keep_freed_memory = keep_freed_memory
        self.label = label or f"model '{name}'"
        #: a worker that holds one request longer than this is killed (None: no limit)
        self.request_timeout_s = request_timeout_s
        #: the framework thread count (OpenMP, MKL, OpenBLAS, TF and onnxruntime intra-op)
        self.threads = threads
        #: the worker's memory cap in MB (its data segment and private mappings); a request past it
        #: fails with model_failed and the worker exits, to be restarted
        self.memory_mb = memory_mb
        self._sequence = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.channel: protocol.Channel | None = None
        #: the worker's hello and ready messages (versions, signatures...)
        self.hello: dict[str, Any] = {}
        self.ready: dict[str, Any] = {}
        # an owner that restarts workers keeps its segments across them (and releases them itself)
        self._owns_segments = inbox is None
        self._inbox = inbox if inbox is not None else OwnedSegment(owned_prefix())
        self._outbox = outbox if outbox is not None else AttachedSegment()
        #: the worker's segments are named under this: removable once it is dead
        self._worker_prefix = f"{owned_prefix()}w{secrets.token_hex(3)}-"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 600.0) -> None:
        """Start the program, check its hello, load the package; BridgeError if any step fails."""
        parent, child = socket.socketpair()
        # the child inherits this thread's signal mask: SIGINT / SIGTERM stay blocked until it ignores them
        masked = hasattr(signal, "pthread_sigmask")
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) if masked else None
        try:
            process = subprocess.Popen([*self.command, "--fd", str(child.fileno())], pass_fds=(child.fileno(),),
                                       env={**os.environ, "MODELPOD_WORKER": self.label, **thread_env(self.threads)})
        except OSError as exc:
            parent.close()
            raise BridgeError(f"{self.label}: cannot start the worker program {self.command[0]}: {exc}") from None
        finally:
            if masked:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            child.close()
        self.process, self.sock = process, parent
        self.channel = channel = protocol.Channel(parent)
        parent.settimeout(timeout)
        try:
            self.hello = self._handshake()
            channel.send({
                "kind": "load", "bridge": BRIDGE_VERSION, "root": self.root, "name": self.name,
                "hooks": self.hooks, "modelarts": self.modelarts, "warm": self.warm,
                "keep_freed_memory": self.keep_freed_memory, "segment_prefix": self._worker_prefix,
                "memory_limit_bytes": self.memory_mb << 20 if self.memory_mb else None,
            })
            reply = channel.recv()
            if reply["kind"] != "ready":
                raise BridgeError(f"{self.label}: the worker failed to load the model: "
                                  f"{reply.get('message', reply)}")
            self.ready = reply
        except TimeoutError:
            self.kill()
            raise BridgeError(f"{self.label}: the worker did not answer in {timeout:.0f} s") from None
        except (EOFError, OSError):
            code = self._exit_code()
            self.kill()
            raise BridgeError(f"{self.label}: the worker process exited (exit code {code}) while loading") from None
        except BaseException:
            self.kill()
            raise
        parent.settimeout(self.request_timeout_s)  # from now on: how long one request may take

    def _handshake(self) -> dict[str, Any]:
        assert self.channel is not None
        hello = self.channel.recv()
        if hello.get("kind") != "hello" or hello.get("protocol") != PROTOCOL_NAME:
            raise BridgeError(f"{self.label}: the worker program did not greet with a {PROTOCOL_NAME} hello "
                              f"(got {str(hello)[:200]})")
        if hello.get("bridge") != BRIDGE_VERSION:
            message = (f"{self.label}: the worker speaks modelpod worker bridge version {hello.get('bridge')}; "
                       f"this server speaks version {BRIDGE_VERSION}")
            try:
                self.channel.send({"kind": "refused", "message": message})
            except OSError:
                pass
            raise BridgeError(message)
        return hello

    def _exit_code(self, wait: float = 2.0) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(wait)
        except subprocess.TimeoutExpired:
            return None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to stop, kill it if it does not, and release the segments."""
        if self.channel is not None:
            try:
                self.channel.send({"kind": "stop"})
            except OSError:
                pass
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """End the process at once (if still running) and release everything it held."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self._exit_code(5)
        if self.sock is not None:
            self.sock.close()
        self.released()

    def released(self) -> None:
        """Free this end's segments (unless its owner keeps them) and remove what the worker left."""
        if self._owns_segments:
            self._outbox.close()
            self._inbox.release()
        self.remove_segments()

    def remove_segments(self) -> None:
        """Unlink every segment the worker created (its own unlinks them, unless it died)."""
        _remove_segments(self._worker_prefix)

    # -- requests -------------------------------------------------------------------------------
    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
              signature: str | None = None) -> dict[str, np.ndarray]:
        """One request. The worker's refusal comes back as WorkerInputError (a SpecError) or
        WorkerError; WorkerDiedError if it exits, hangs past ``request_timeout_s`` or breaks the
        protocol (it is then killed); BrokenPipeError if it was already gone (the request never
        reached it)."""
        layout = Layout(inputs)
        segment = self._inbox.ensure(layout.size)
        layout.write(segment.buf, inputs)
        return self._exchange(
            {"kind": "infer", "segment": segment.name, "inputs": layout.entries,
             "outputs": list(outputs) if outputs is not None else None, "signature": signature},
            "result", lambda reply: read_tensors(self._outbox.get(reply["segment"]).buf, reply["outputs"], copy=True))

    def handle(self, content_type: str, body: bytes, max_fields: int) -> tuple[bytes, str]:
        """Run the service hooks on a raw request body: (answer body, content type)."""
        segment = self._inbox.ensure(len(body))
        segment.buf[:len(body)] = body

        def answer(reply: dict[str, Any]) -> tuple[bytes, str]:
            offset, nbytes = reply["offset"], reply["nbytes"]
            buf = self._outbox.get(reply["segment"]).buf
            if type(offset) is not int or type(nbytes) is not int or offset < 0 or offset + nbytes > len(buf):
                raise BridgeError("the answer lies outside its segment")
            return bytes(buf[offset:offset + nbytes]), str(reply.get("content_type") or "application/octet-stream")

        return self._exchange({"kind": "handle", "segment": segment.name, "offset": 0, "nbytes": len(body),
                               "content_type": content_type, "max_fields": max_fields}, "answer", answer)

    def _exchange(self, message: dict[str, Any], answer: str, read: Callable[[dict[str, Any]], T]) -> T:
        """Send one request and read its reply with ``read``. Anything wrong after the send (the
        worker died, hung, or broke the protocol) kills the worker: its channel can't be trusted."""
        channel = self.channel
        if channel is None or self.process is None:
            raise BrokenPipeError(f"{self.label}: the worker is not running")
        self._sequence += 1
        message["id"] = self._sequence
        channel.send(message)  # OSError: the worker was already gone
        try:
            reply = channel.recv()
            if reply.get("id") != self._sequence:
                raise BridgeError(f"answered request {reply.get('id')!r} to request {self._sequence}")
            if reply["kind"] == "error":
                if reply.get("exiting"):  # it ran out of memory and exits: let it go before the next request
                    self._exit_code(10)
                raise remote_error(reply, self.label)
            if reply["kind"] != answer:
                raise BridgeError(f"answered {reply['kind']!r} to {message['kind']!r}")
            return read(reply)
        except WorkerError:
            raise
        except TimeoutError:
            self.kill()
            raise WorkerDiedError(f"{self.label}: the worker did not answer in {self.request_timeout_s:.0f} s; it "
                                  "was stopped", None) from None
        except (EOFError, ConnectionError):
            code = self._exit_code(1)
            raise WorkerDiedError(f"{self.label}: the worker process died (exit code {code}) while running this "
                                  "request", code) from None
        except Exception as exc:  # noqa: BLE001 - a reply that breaks the protocol, however it does
            self.kill()
            detail = str(exc) if isinstance(exc, BridgeError) else f"{type(exc).__name__}: {exc}"
            raise WorkerDiedError(f"{self.label}: the worker broke the worker protocol ({detail}); it was "
                                  "stopped", None) from None


def ready_signatures(ready: Mapping[str, Any]) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The extra named signatures a worker's ``ready`` message lists, as ``Backend.signatures`` gives them."""
    return {name: (pair[0], pair[1]) for name, pair in ready.get("signatures", {}).items()}


def remote_error(reply: Mapping[str, Any], label: str) -> WorkerError:
    """The exception for a worker's ``error`` reply (bad input is also a SpecError)."""
    kind = str(reply.get("error", "model_failed"))
    message = str(reply.get("message", ""))
    if kind in ("bad_input", "too_large"):
        return WorkerInputError(kind, message)
    if kind not in protocol.ERROR_KINDS:
        kind = "model_failed"
    return WorkerError(kind, message if kind != "protocol" else f"{label}: worker bridge: {message}")


def _remove_segments(prefix: str, folder: str = "/dev/shm") -> None:
    """Unlink the segments whose names start with ``prefix`` (Linux lists them in /dev/shm)."""
    try:
        names = [name for name in os.listdir(folder) if name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        unlink(name)


class WorkerBackend(Backend):
    """A Backend whose model runs in a worker process (``modelpod.load(..., isolated=True)``).

    Calls are serialized (one worker runs one request at a time). A worker that dies is not
    restarted here: the call raises WorkerDiedError (a BridgeError) naming the exit code, and later
    calls ModelError.
    """

    platform = "worker"

    def __init__(self, root: Path, manifest: Any, worker: WorkerProcess, on_close: Any = None) -> None:
        super().__init__(root, manifest)
        self.worker = worker
        self._lock = threading.Lock()
        self._on_close = on_close

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            signature: str | None = None) -> Mapping[str, Any]:
        with self._lock:
            try:
                return self.worker.infer(inputs, outputs, signature)
            except (BrokenPipeError, ConnectionError) as exc:
                raise ModelError(f"{self.worker.label}: the worker process is gone ({exc})") from None

    def signatures(self) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        return ready_signatures(self.worker.ready)

    def close(self) -> None:
        try:
            self.worker.stop()
        finally:
            if self._on_close is not None:
                self._on_close()
