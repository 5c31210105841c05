"""The server's HTTP app as an ASGI application (for uvicorn, hypercorn or a Ray Serve ingress)."""

from __future__ import annotations

import inspect
from typing import Any

from modelpod.serving.app import ServerApp
from modelpod.serving.http import Request


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
