"""``modelpod serve PATH --ray``: deploy on Ray Serve, wait for SIGTERM / Ctrl-C, take it all down.

Without ``--ray-address`` a local Ray instance is started (and stopped again); with one
(``auto``, ``ray://host:10001``, a GCS address) the application joins that cluster, and only the
application is deleted at the end (Serve and the cluster stay: they are not ours). Ray's HTTP proxy
listens on ``--host``/``--http-port`` when this command is what starts Serve.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from modelpod.ray.app import DEFAULT_NAME, app
from modelpod.ray.grpc import SERVICER_FUNCTION
from modelpod.ray.options import DeploymentOptions
from modelpod.ray.plan import Layout
from modelpod.serving.limits import Limits
from modelpod.serving.settings import ModelSettings

log = logging.getLogger("modelpod.serve")
#: how long the application (or Serve) may take to shut down gracefully
SHUTDOWN_S = 10.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve_on_ray(path: Path, *, host: str, http_port: int, grpc_port: int | None, address: str | None,
                 options: DeploymentOptions,
                 token: str | None, model_defaults: ModelSettings | None, limits: Limits,
                 model_control: bool, name: str = DEFAULT_NAME, ready: Any = print,
                 watch_s: float | None = None, layout: Layout = "auto") -> None:
    """Blocking: deploy, announce readiness through ``ready``, then wait for SIGTERM / SIGINT."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ImportError("--ray needs Ray Serve: pip install 'modelpod[ray]'") from None

    stop = threading.Event()
    own_cluster = address is None
    application = app(path, options=options, name=name, token=token, model_defaults=model_defaults,
                      limits=limits, model_control=model_control, watch_s=watch_s, layout=layout)
    started = time.monotonic()
    ray.init(address=address, include_dashboard=False if own_cluster else None, log_to_driver=False,
             logging_level=logging.WARNING)
    # after ray.init, which installs handlers of its own: SIGTERM / Ctrl-C end the wait below
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _SIGNALS}
    try:
        grpc = {"port": grpc_port, "grpc_servicer_functions": [SERVICER_FUNCTION]} if grpc_port else None
        serve.start(http_options={"host": host, "port": http_port}, grpc_options=grpc)
        serve.run(application, name=name, route_prefix="/")
        grpc_note = f", KServe v2 gRPC on {host}:{grpc_port} (metadata application: {name})" if grpc_port else ""
        ready(f"serving {path} on Ray Serve: http://{host}:{http_port}{grpc_note} (application '{name}', "
              f"{_deployments(name)}, ready in {time.monotonic() - started:.1f} s)")
        while not stop.wait(0.5):
            pass
        log.info("stopping the Ray Serve application '%s'", name)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        graceful = _bounded(serve.shutdown if own_cluster else lambda: serve.delete(name), SHUTDOWN_S)
        if not graceful and stop.is_set():  # Ray's processes got the group's signal: the rest of Ray exits by itself
            log.warning("Ray Serve did not shut down in %.0f s (its processes were signalled too)", SHUTDOWN_S)
            _leave_now()
        ray.shutdown()


def _bounded(call: Any, seconds: float) -> bool:
    """Run ``call`` for at most ``seconds``; whether it finished. When Ctrl-C or systemd signalled
    the whole process group, Ray's own processes are gone already and Serve would wait in vain."""
    done = threading.Thread(target=call, daemon=True, name="serve-shutdown")
    done.start()
    done.join(seconds)
    return not done.is_alive()


def _leave_now() -> None:
    """Exit 0 without Ray's exit hooks, which would wait for (and fail on) the processes that are gone."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _deployments(app_name: str) -> str:
    """What Serve runs for the application: each deployment and its replicas."""
    from ray import serve

    try:
        deployments = serve.status().applications[app_name].deployments
    except (KeyError, AttributeError):
        return "deployed"
    return ", ".join(f"{name}: {sum(d.replica_states.values())} replica(s)" for name, d in deployments.items())
