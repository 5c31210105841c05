"""The server's HTTP app as an ASGI application (for uvicorn, hypercorn or a Ray Serve ingress).

``modelpod serve`` runs the same app on its own HTTP server; this is the door to run it elsewhere:

    MODELPOD_PATH=models/ uvicorn --factory modelpod.serving.asgi:app_from_env

serves the KServe v2, TF Serving and EAS HTTP protocols of ``models/`` from uvicorn (no gRPC).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from modelpod.serving.app import ServerApp
from modelpod.serving.http import Request
from modelpod.serving.limits import DEFAULT_LIMITS, Limits


def asgi_app(app: ServerApp) -> Any:
    """Wrap ``app.dispatch`` as an ASGI 3 callable (HTTP only; lifespan events are accepted).

    Bodies past ``app.ctx.limits.max_body_bytes`` get 413 as soon as the running size (or the
    Content-Length) says so, and nothing more is kept.
    """
    limit = app.ctx.limits.max_body_bytes

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
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        chunks, size = [], 0
        length = headers.get("content-length", "")
        too_large = length.isdigit() and int(length) > limit
        while not too_large:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                too_large = True
                break
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        if too_large:
            body = f'{{"error": "request body is larger than the server limit of {limit} bytes"}}'.encode()
            await send({"type": "http.response.start", "status": 413, "headers": [
                (b"content-length", str(len(body)).encode()), (b"content-type", b"application/json"),
                (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        client = scope.get("client")
        raw_path = scope.get("raw_path")  # routing wants the path as sent: '%2F' must stay escaped
        path = raw_path.decode("latin-1").partition("?")[0] if raw_path else quote(scope["path"])
        request = Request(scope["method"], path, scope.get("query_string", b"").decode("latin-1"),
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
    """``create_app`` from ``MODELPOD_PATH`` (required), ``MODELPOD_TOKEN``, ``MODELPOD_MAX_BODY_MB``
    (default 256) and ``MODELPOD_MODEL_CONTROL=1`` (for uvicorn --factory)."""
    path = os.environ.get("MODELPOD_PATH")
    if not path:
        raise RuntimeError("set MODELPOD_PATH to the package, repository or service config to serve")
    limits = DEFAULT_LIMITS
    if os.environ.get("MODELPOD_MAX_BODY_MB"):
        limits = replace(limits, max_body_bytes=int(float(os.environ["MODELPOD_MAX_BODY_MB"]) * (1 << 20)))
    return create_app(path, token=os.environ.get("MODELPOD_TOKEN") or None, limits=limits,
                      model_control=os.environ.get("MODELPOD_MODEL_CONTROL") == "1")
