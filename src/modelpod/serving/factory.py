"""The one place a server is put together: its parts, built in order, and closed in order.

``modelpod serve`` (:mod:`modelpod.serving.server`), the ASGI app (:mod:`modelpod.serving.asgi`)
and Ray Serve replicas all start from :func:`open_server` and stop with :meth:`ServerParts.close`;
what they add is only the front door (the native HTTP and gRPC servers, or an ASGI server).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from modelpod.serving.app import ServerApp
from modelpod.serving.context import ServerContext
from modelpod.serving.dashboard.monitor import Monitor
from modelpod.serving.execution import stale
from modelpod.serving.limits import DEFAULT_LIMITS, Limits
from modelpod.serving.metrics import Metrics
from modelpod.serving.models.lifecycle import ModelManager
from modelpod.serving.models.repository import Repository
from modelpod.serving.settings import ModelSettings
from modelpod.serving.shared_memory import SharedMemoryRegistry

log = logging.getLogger("modelpod.serve")


@dataclass
class ServerParts:
    """A running server's parts, from the models to the HTTP app that routes requests to them."""

    repository: Repository
    metrics: Metrics
    manager: ModelManager
    ctx: ServerContext
    app: ServerApp
    #: set once the server shuts down: worker processes that die from then on stay down
    stopping: threading.Event = field(default_factory=threading.Event)
    #: the dashboard's sampler (None: no dashboard)
    monitor: Monitor | None = None

    async def close(self) -> None:
        """Close every served model (schedulers, instances, worker processes); idempotent."""
        self.stopping.set()
        if self.monitor is not None:
            self.monitor.stop()
        if self.ctx.shared_memory is not None:  # clients' regions: every descriptor closed
            self.ctx.shared_memory.close()
        await self.repository.close()


async def open_server(path: str | Path, *, token: str | None = None, model_defaults: ModelSettings | None = None,
                      limits: Limits = DEFAULT_LIMITS, model_control: bool = False,
                      access_log: bool = False, only: str | None = None,
                      listed_elsewhere: dict[str, bool] | None = None,
                      model_overrides: ModelSettings | None = None,
                      shared_memory: bool = False) -> ServerParts:
    """Load and warm up what ``path`` names (a package, repository folder, service config or
    ModelArts folder) and wire the parts around it; a model that fails to load is left out, not
    ready, with its reason (see :meth:`ModelManager.load_all`); when none loads at all this raises
    (and what was loaded by then is closed). ``model_defaults`` are the settings every model
    starts from; its own settings go on top. ``only`` serves one model of the source;
    ``listed_elsewhere`` names the models sibling servers serve (name -> has a token of its own), for
    "not served here" errors (one Ray deployment per model); ``model_overrides`` win over every
    model's own settings. ``shared_memory`` turns on Triton's system shared memory extension
    (regions bounded by ``limits``)."""
    for leftover in await asyncio.to_thread(stale.remove_stale):  # what killed servers left behind
        log.info("removed %s: the process that owned it is gone", leftover)
    repository = Repository()
    repository.listed_elsewhere = dict(listed_elsewhere or {})
    metrics = Metrics(repository, access_log_enabled=access_log)
    stopping = threading.Event()
    manager = ModelManager(Path(path), repository, defaults=model_defaults, metrics=metrics, stopping=stopping,
                           only=only, overrides=model_overrides)
    await manager.load_all()
    monitor = Monitor(repository, metrics, manager)
    monitor.start()
    ctx = ServerContext(repository, token=token, metrics=metrics, manager=manager, limits=limits,
                        model_control=model_control, monitor=monitor,
                        shared_memory=SharedMemoryRegistry.from_limits(limits) if shared_memory else None)
    return ServerParts(repository, metrics, manager, ctx, ServerApp(ctx), stopping, monitor)
