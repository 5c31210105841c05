"""``modelpod serve``: load PATH, warm up, then serve HTTP (v2, TF Serving, EAS) and v2 gRPC at once."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelpod.serving import allocator
from modelpod.serving import stale, workers
from modelpod.serving.app import ServerApp
from modelpod.serving.context import ServerContext
from modelpod.serving.grpc_server import build_grpc_server
from modelpod.serving.httpserver import HttpServer
from modelpod.serving.lifecycle import ModelManager
from modelpod.serving.limits import DEFAULT_LIMITS, Limits
from modelpod.serving.metrics import Metrics
from modelpod.serving.repository import Repository

log = logging.getLogger("modelpod.serve")


@dataclass
class ServeOptions:
    """Everything ``modelpod serve`` takes besides PATH."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int | None = 8081
    token: str | None = None
    #: what one request or connection may claim (body, headers, time, connections)
    limits: Limits = DEFAULT_LIMITS
    #: the v2 repository API may load and unload models
    model_control: bool = False
    grace_s: float = 30.0
    model_defaults: dict[str, Any] | None = None
    access_log: bool = False
    watch_s: float | None = None
    #: keep large freed buffers for the next requests (see :mod:`modelpod.serving.allocator`)
    keep_freed_memory: bool = True


def fit_to_fd_limit(limits: Limits) -> Limits:
    """Raise this process's open-file limit to its hard limit, and keep ``max_connections`` below it.

    Past the file-descriptor limit a server can accept nothing (new HTTP connections close
    unanswered, gRPC fails); the HTTP connection cap leaves room for gRPC, models and workers.
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    except (ImportError, ValueError, OSError):
        return limits
    room = max(64, soft - 512 - limits.max_grpc_calls)
    if limits.max_connections > room:
        log.warning("--max-connections %d is past what the open-file limit (%d) leaves; using %d",
                    limits.max_connections, soft, room)
        return replace(limits, max_connections=room)
    return limits


def freeze_loaded_objects() -> None:
    """Move everything loaded so far (models, frameworks) out of the cyclic GC's sight.

    Without this, every full collection rescans millions of long-lived objects while requests
    wait: measured on the batching benchmark, p99 drops from ~23 ms to ~4.5 ms (p50 ~3.4 ms).
    """
    gc.collect()
    gc.freeze()


async def serve_async(path: Path, options: ServeOptions, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or cancellation), then drain in-flight requests and return."""
    for leftover in await asyncio.to_thread(stale.remove_stale):  # what killed servers left behind
        log.info("removed %s: the process that owned it is gone", leftover)
    workers.shutting_down.clear()
    repository = Repository()
    metrics = Metrics(repository, access_log_enabled=options.access_log)
    manager = ModelManager(path, repository, token=options.token, defaults=options.model_defaults,
                           metrics=metrics)
    await asyncio.to_thread(manager.load_all)
    limits = fit_to_fd_limit(options.limits)
    ctx = ServerContext(repository, token=options.token, metrics=metrics, manager=manager, limits=limits,
                        model_control=options.model_control)
    if options.model_control and not options.token:
        log.warning("--model-control without --token: anyone who reaches this port can load and unload "
                    "models that have no token of their own")
    app = ServerApp(ctx)
    http = HttpServer(app.dispatch, limits=limits)
    http_port = await http.start(options.host, options.http_port)
    grpc_server = None
    grpc_port = None
    if options.grpc_port is not None:
        grpc_server = build_grpc_server(ctx, asyncio.get_running_loop(), max_receive_bytes=limits.max_body_bytes)
        grpc_port = grpc_server.add_insecure_port(f"{options.host}:{options.grpc_port}")
        grpc_server.start()
    for served in repository.all():
        state = "ready" if served.ready else f"NOT READY ({served.reason})"
        log.info("model %s version %s: %s, %s", served.name, served.version, state, served.mode)
    log.info("serving HTTP on http://%s:%s (KServe v2 /v2, TF Serving /v1, EAS /api/predict)", options.host, http_port)
    if grpc_port is not None:
        log.info("serving KServe v2 gRPC on %s:%s", options.host, grpc_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    watcher = None
    if options.watch_s:
        watcher = asyncio.create_task(manager.watch(options.watch_s))
        log.info("watching %s every %.1f s for new or replaced versions", path, options.watch_s)
    freeze_loaded_objects()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        workers.shutting_down.set()  # worker processes that die from now on stay down
        log.info("shutting down: finishing in-flight requests")
        if grpc_server is not None:  # its RPCs finish on this loop: wait for it off the loop
            stopped = grpc_server.stop(options.grace_s)
            await asyncio.to_thread(stopped.wait)
        await http.stop(options.grace_s)
        for served in repository.all():  # asyncio parts on the loop; the rest may block
            if served.scheduler is not None:
                served.scheduler.close()
        await asyncio.to_thread(repository.close)
        log.info("stopped")


def serve(path: Path, options: ServeOptions) -> None:
    """Blocking entry point (uses uvloop when installed)."""
    if options.keep_freed_memory:
        allocator.keep_freed_memory()
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.install()
    asyncio.run(serve_async(path, options))
