"""The Python worker program: loads one package and answers the worker bridge on an inherited socket.

    python -m modelpod.runtime.worker --fd N

It runs in the server's interpreter or in a package's own environment (started there by
:mod:`modelpod.runtime.workerproc`, which puts only the ``modelpod`` package on the path, not the
server's site-packages). It needs numpy, pydantic and ml_dtypes; not orjson, grpc or the server.

Shutdown belongs to the server: the worker ignores SIGINT and SIGTERM (Ctrl-C and systemd signal
the whole process group), and exits on a ``stop`` message or when its socket closes (its server is
gone, even SIGKILLed).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import sys
from typing import Any

from modelpod.bridge.protocol import BRIDGE_VERSION, PROTOCOL_NAME, Channel, Layout, read_tensors
from modelpod.bridge.shm import AttachedSegment, OwnedSegment
from modelpod.errors import (
    BridgeError,
    CodecError,
    ModelError,
    SpecError,
    TooLargeError,
)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _dropped(signum: int, frame: object) -> None:
    """A group signal reached a worker: the server decides when it stops."""


def _ignore_group_signals() -> None:
    """Leave SIGINT / SIGTERM to the server. They arrive blocked (the server blocks them around the
    start): catch them first, then unblock, so one sent while the worker was starting is dropped
    too. A no-op handler rather than SIG_IGN: programs the model starts get the defaults back."""
    for sig in _SIGNALS:
        signal.signal(sig, _dropped)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def hello_message(package: str | None = None) -> dict[str, Any]:
    import numpy

    hello = {"kind": "hello", "protocol": PROTOCOL_NAME, "bridge": BRIDGE_VERSION, "pid": os.getpid(),
             "language": "python", "python": platform.python_version(), "executable": sys.executable,
             "numpy": numpy.__version__}
    if package is not None:  # started by modelpod.runtime.launch, which resolved the package
        hello["package"] = package
    return hello


class _Worker:
    """One loaded package (and its service hooks, when asked) behind the bridge."""

    def __init__(self, channel: Channel, load: dict[str, Any]) -> None:
        from modelpod.runtime.model import load as load_package

        self.channel = channel
        self.memory_limit_bytes: int | None = load.get("memory_limit_bytes")
        self.service: Any = None
        self.max_fields = 1000
        root, name = load["root"], load.get("name")
        if load.get("modelarts"):
            from modelpod.runtime.modelarts import load_modelarts

            self.service = load_modelarts(root, name)
            self.model: Any = self.service.model
        else:
            self.model = load_package(root, verify_hashes=False)  # the server checked the hashes
            if load.get("hooks"):
                from modelpod.runtime.service import load_service

                self.service = load_service(self.model, name or self.model.name)
        if load.get("warm", True):
            vectors = self.model.test_vectors()
            if vectors is not None:
                self.model.infer(vectors[0])
        self.inbox = AttachedSegment()
        self.outbox = OwnedSegment(load["segment_prefix"])

    def ready(self) -> dict[str, Any]:
        signatures = {name: [[s.to_dict() for s in spec.inputs], [s.to_dict() for s in spec.outputs]]
                      for name, spec in self.model.signatures.items()}
        spec = self.model.spec
        return {"kind": "ready", "model": self.model.name, "platform": self.model.platform,
                "inputs": [s.to_dict() for s in spec.inputs], "outputs": [s.to_dict() for s in spec.outputs],
                "signatures": signatures, "hooks": self.service is not None}

    def serve(self) -> None:
        while True:
            try:
                message = self.channel.recv()
            except EOFError:
                return
            kind = message["kind"]
            if kind == "stop":
                return
            try:
                if kind == "infer":
                    reply = self.infer(message)
                elif kind == "handle":
                    reply = self.handle(message)
                else:
                    reply = _error("protocol", f"unknown message kind {kind!r}")
            except MemoryError:
                reply = _error("model_failed", self._out_of_memory())
                reply["id"], reply["exiting"] = message.get("id"), True
                self.channel.send(reply)
                return  # a fresh worker replaces this one: nothing half-allocated stays behind
            except BridgeError as exc:
                reply = _error("protocol", str(exc))
            except SpecError as exc:
                reply = _error("bad_input", str(exc))
            except TooLargeError as exc:
                reply = _error("too_large", str(exc))
            except CodecError as exc:
                reply = _error("bad_input", str(exc))
            except ModelError as exc:
                reply = _error("model_failed", str(exc))
            except Exception as exc:  # noqa: BLE001 - the model's bug becomes a 500 for this request
                reply = _error("model_failed", f"model '{self.model.name}' raised {type(exc).__name__}: {exc}")
            reply["id"] = message.get("id")
            self.channel.send(reply)

    def _out_of_memory(self) -> str:
        limit = self.memory_limit_bytes
        cap = f" of {limit >> 20} MB (the model's memory setting)" if limit else ""
        return (f"model '{self.model.name}' ran out of memory{cap} on this request; its worker process is "
                "restarted")

    def infer(self, message: dict[str, Any]) -> dict[str, Any]:
        inputs = read_tensors(self.inbox.get(message["segment"]).buf, message["inputs"], copy=False) \
            if message.get("inputs") else {}
        result = self.model.infer(inputs, message.get("outputs"), message.get("signature"))
        return self._reply("result", result)

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        from modelpod.codecs.hooks import decode_hook_body, encode_hook_answer

        if self.service is None:
            raise SpecError(f"'{self.model.name}' has no service hooks")
        offset, nbytes = message["offset"], message["nbytes"]
        body = bytes(self.inbox.get(message["segment"]).buf[offset:offset + nbytes]) if nbytes else b""
        request = decode_hook_body(message.get("content_type", ""), body,
                                   int(message.get("max_fields", self.max_fields)))
        try:
            answer, content_type = encode_hook_answer(self.service.handle(request))
        except TypeError as exc:
            raise ModelError(f"service '{self.model.name}' returned an answer that is not JSON serializable "
                             f"({exc}); return dicts, lists, numbers, strings or arrays") from None
        segment = self.outbox.ensure(len(answer))
        segment.buf[:len(answer)] = answer
        return {"kind": "answer", "segment": segment.name, "offset": 0, "nbytes": len(answer),
                "content_type": content_type}

    def _reply(self, kind: str, arrays: dict[str, Any]) -> dict[str, Any]:
        layout = Layout(arrays)
        segment = self.outbox.ensure(layout.size)
        layout.write(segment.buf, arrays)
        return {"kind": kind, "segment": segment.name, "outputs": layout.entries}

    def close(self) -> None:
        self.inbox.close()
        self.outbox.release()
        self.model.close()


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"kind": "error", "error": kind, "message": message}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelpod-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the inherited socket to speak the bridge on")
    parser.add_argument("--package", help="the package folder a launcher resolved (named in the hello)")
    parser.add_argument("--cleanup", help="a folder to remove when the worker ends (a launcher's extraction)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    finally:
        if args.cleanup:
            import shutil

            shutil.rmtree(args.cleanup, ignore_errors=True)


def _run(args: argparse.Namespace) -> int:
    _ignore_group_signals()
    os.set_inheritable(args.fd, False)  # programs the model starts must not hold the server's socket
    channel = Channel(socket.socket(fileno=args.fd))
    try:
        channel.send(hello_message(args.package))
        load = channel.recv()
        if load["kind"] != "load":
            return 2
        if load.get("bridge") != BRIDGE_VERSION:
            channel.send({"kind": "failed", "message": (
                f"this worker speaks modelpod worker bridge version {BRIDGE_VERSION}; the server speaks "
                f"version {load.get('bridge')}")})
            return 2
        if load.get("keep_freed_memory"):
            from modelpod.runtime import allocator

            allocator.keep_freed_memory()
        limit = load.get("memory_limit_bytes")
        if limit:  # the data segment and private mappings: what the model's arrays take
            import resource

            resource.setrlimit(resource.RLIMIT_DATA, (int(limit), int(limit)))
        try:
            worker = _Worker(channel, load)
        except Exception as exc:  # noqa: BLE001 - reported to the server, which keeps the instance down
            channel.send({"kind": "failed", "message": f"{type(exc).__name__}: {exc}"})
            return 1
        try:
            channel.send(worker.ready())
            worker.serve()
        finally:
            worker.close()
    except (EOFError, OSError):  # the server is gone: nobody needs this worker any more
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
