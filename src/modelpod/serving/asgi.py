"""The server's HTTP app as an ASGI application (for uvicorn, hypercorn or a Ray Serve ingress).

``modelpod serve`` runs the same app on its own HTTP server; this is the door to run it elsewhere:

    MODELPOD_PATH=models/ uvicorn --factory modelpod.serving.asgi:app_from_env

serves the KServe v2, TF Serving and EAS HTTP protocols of ``models/`` from uvicorn (no gRPC).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from modelpod.serving.app import ServerApp
from modelpod.serving.http import Request
from modelpod.serving.limits import DEFAULT_LIMITS, Limits


def asgi_app(app: ServerApp) -> Any:
    """Wrap ``app.dispatch`` as an ASGI 3 callable (HTTP only; lifespan events are accepted)."""

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        request = Request(scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"),
                          headers, b"".join(chunks), f"{client[0]}:{client[1]}" if client else "")
        response = app.dispatch(request)
        if inspect.isawaitable(response):
            response = await response
        out_headers = [(b"content-length", str(len(response.body)).encode())]
        if response.content_type:
            out_headers.append((b"content-type", response.content_type.encode()))
        out_headers += [(k.encode(), v.encode()) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
        await send({"type": "http.response.body", "body": bytes(response.body)})

    return application


def create_app(path: str | Path, *, token: str | None = None,
               model_defaults: dict[str, Any] | None = None, limits: Limits = DEFAULT_LIMITS,
               model_control: bool = False) -> Any:
    """Load what ``path`` names (as ``modelpod serve`` does) and return it as an ASGI app.

    The ASGI server in front bounds connections, headers and body bytes; ``limits`` bounds what
    the app itself checks (decompressed size, multipart fields, the EAS Date window)."""
    from modelpod.serving.context import ServerContext
    from modelpod.serving.lifecycle import ModelManager
    from modelpod.serving.metrics import Metrics
    from modelpod.serving.repository import Repository

    repository = Repository()
    metrics = Metrics(repository)
    manager = ModelManager(Path(path), repository, token=token, defaults=model_defaults, metrics=metrics)
    manager.load_all()
    ctx = ServerContext(repository, token=token, metrics=metrics, manager=manager, limits=limits,
                        model_control=model_control)
    return asgi_app(ServerApp(ctx))


def app_from_env() -> Any:
    """``create_app`` from ``MODELPOD_PATH`` (required) and ``MODELPOD_TOKEN`` (for uvicorn --factory)."""
    path = os.environ.get("MODELPOD_PATH")
    if not path:
        raise RuntimeError("set MODELPOD_PATH to the package, repository or service config to serve")
    return create_app(path, token=os.environ.get("MODELPOD_TOKEN") or None)
