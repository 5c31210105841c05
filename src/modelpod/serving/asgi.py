"""The server's HTTP app as an ASGI application (for uvicorn, hypercorn or a Ray Serve ingress).

``modelpod serve`` runs the same app on its own HTTP server; this is the door to run it elsewhere:

    MODELPOD_PATH=models/ uvicorn --factory modelpod.serving.asgi:app_from_env

serves the KServe v2, TF Serving and EAS HTTP protocols of ``models/`` from uvicorn (no gRPC).
Models load on the ASGI lifespan startup (a server that sends no lifespan events loads them on the
first request) and are closed on lifespan shutdown, worker processes included.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from modelpod.serving.factory import ServerParts, open_server
from modelpod.serving.http.messages import Request, Response
from modelpod.serving.limits import DEFAULT_LIMITS, Limits
from modelpod.serving.settings import ModelSettings


class AsgiApp:
    """An ASGI 3 app over a server's parts, opened once (lifespan startup or the first request)."""

    def __init__(self, opener: Callable[[], Awaitable[ServerParts]], limits: Limits,
                 watch_s: float | None = None) -> None:
        self._opener = opener
        self.limits = limits
        #: poll the source this often for new or replaced versions (zero-drop swaps), as ``--watch``
        self.watch_s = watch_s
        self.parts: ServerParts | None = None
        self._opening: asyncio.Lock | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> ServerParts:
        """The server's parts, built on the first call."""
        if self.parts is None:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self.parts is None:
                    self.parts = await self._opener()
                    if self.watch_s:
                        self._watcher = asyncio.create_task(self.parts.manager.watch(self.watch_s))
        return self.parts

    async def close(self) -> None:
        """Close every served model (lifespan shutdown)."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self.parts is not None:
            parts, self.parts = self.parts, None
            await parts.close()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            parts = self.parts or await self.open()
            await _serve_http(parts, self.limits.max_body_bytes, scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.open()
                except Exception as exc:  # noqa: BLE001 - the ASGI server reports it and stops
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _serve_http(parts: ServerParts, limit: int, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """One HTTP request through ``parts.app.dispatch``."""
    request = await read_request(scope, receive, send, limit)
    if request is None:
        return
    response = parts.app.dispatch(request)
    if inspect.isawaitable(response):
        response = await response
    await send_response(send, response)


async def read_request(scope: dict[str, Any], receive: Any, send: Any, limit: int) -> Request | None:
    """The ASGI request as a :class:`Request`, or None once a body past ``limit`` bytes got its
    413: as soon as the running size (or the Content-Length) says so, and nothing more is kept."""
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
        return None
    client = scope.get("client")
    raw_path = scope.get("raw_path")  # routing wants the path as sent: '%2F' must stay escaped
    path = raw_path.decode("latin-1").partition("?")[0] if raw_path else quote(scope["path"])
    return Request(scope["method"], path, scope.get("query_string", b"").decode("latin-1"),
                   headers, b"".join(chunks), f"{client[0]}:{client[1]}" if client else "")


async def send_response(send: Any, response: Response) -> None:
    """A :class:`Response` as the ASGI response messages."""
    out_headers = [(b"content-length", str(len(response.body)).encode())]
    if response.content_type:
        out_headers.append((b"content-type", response.content_type.encode()))
    out_headers += [(k.encode(), v.encode()) for k, v in response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
    await send({"type": "http.response.body", "body": bytes(response.body)})


def create_app(path: str | Path, *, token: str | None = None, model_defaults: ModelSettings | None = None,
               limits: Limits = DEFAULT_LIMITS, model_control: bool = False,
               watch_s: float | None = None, only: str | None = None,
               listed_elsewhere: dict[str, bool] | None = None,
               model_overrides: ModelSettings | None = None) -> AsgiApp:
    """What ``path`` names (as ``modelpod serve`` loads it) as an ASGI app; ``watch_s`` polls it for
    new or replaced versions as ``modelpod serve --watch`` does; ``only``, ``listed_elsewhere`` and
    ``model_overrides`` as :func:`~modelpod.serving.factory.open_server` (one model of a repository).

    The ASGI server in front bounds connections, headers and body bytes; ``limits`` bounds what
    the app itself checks (body size, decompressed size, multipart fields, the EAS Date window)."""

    def opener() -> Awaitable[ServerParts]:
        return open_server(path, token=token, model_defaults=model_defaults, limits=limits,
                           model_control=model_control, only=only, listed_elsewhere=listed_elsewhere,
                           model_overrides=model_overrides)

    return AsgiApp(opener, limits, watch_s)


def app_from_env() -> AsgiApp:
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
