"""A small HTTP/1.1 server on asyncio + httptools, built for the inference hot path.

Why not uvicorn + a framework: on this kind of machine a request through an ASGI stack costs
several times the model time of small models. This server parses with httptools, calls the app's
``dispatch(Request)`` and, when the answer is ready at once (models that run inline), writes it
without creating a task. Keep-alive and pipelining are supported (answers keep request order);
bodies over ``max_body_bytes`` get 413 and are discarded as they arrive, never buffered. The same app also runs under any
ASGI server through :mod:`modelpod.serving.asgi`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from urllib.parse import unquote
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httptools
import orjson

from modelpod.serving.http import MaybeAwaitable, Request, Response

log = logging.getLogger("modelpod.http")
Dispatch = Callable[[Request], MaybeAwaitable[Response]]

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_REASONS[450] = "Queue Full"
_REASONS[499] = "Client Closed Request"


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()


_STATUS_LINES = {code: _status_line(code) for code in _REASONS}


def encode_head(response: Response, keep_alive: bool, length: int) -> bytes:
    key = (response.status, response.content_type)
    head = _HEAD_PREFIXES.get(key)
    if head is None:
        head = _STATUS_LINES.get(response.status) or _status_line(response.status)
        if response.content_type:
            head += f"content-type: {response.content_type}\r\n".encode()
        if len(_HEAD_PREFIXES) < 256:
            _HEAD_PREFIXES[key] = head
    head += b"content-length: %d\r\n" % length
    for name, value in response.headers:
        head += f"{name}: {value}\r\n".encode()
    return head + (b"\r\n" if keep_alive else b"connection: close\r\n\r\n")


#: (status, content type) -> the head's first lines, made once
_HEAD_PREFIXES: dict[tuple[int, str], bytes] = {}
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "server", "transport", "parser", "url", "headers", "body", "body_size", "pending", "busy",
        "closing", "too_large", "peer",
    )

    def __init__(self, server: "HttpServer") -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.pending: deque[tuple[Request | Response, bool]] = deque()
        self.busy = False
        self.closing = False
        self.too_large = False
        self.peer = ""

    # -- connection ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")

    def _reject(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed, after the answers still owed, then close."""
        if self.transport is None:
            return
        self.transport.pause_reading()  # the parser is past saving: read nothing more
        response = Response(status, orjson.dumps({"error": message}))
        if self.busy:
            self.pending.append((response, False))  # keeps the answers in request order
        else:
            self._write(response, False)

    # -- httptools callbacks (the state is reset when a message completes) -----------------------
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        if self.too_large:
            return
        self.body.append(body)
        self.body_size += len(body)
        if self.body_size > self.server.max_body_bytes:  # keep nothing more; answer 413 at the end
            self.too_large = True
            self.body = []

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive() and not self.server.stopping
        url, headers, body, too_large = self.url, self.headers, self.body, self.too_large
        self.url, self.headers, self.body, self.body_size, self.too_large = b"", {}, [], 0, False
        if too_large:
            msg = {"error": f"request body is larger than the server limit of {self.server.max_body_bytes} bytes "
                            "(raise it with --max-body-mb, or send smaller requests)"}
            self._enqueue(Response(413, orjson.dumps(msg)), False)
            return
        path, _, query = url.partition(b"?")
        method = self.parser.get_method()
        request = Request(
            _METHODS.get(method) or method.decode("latin-1"),
            unquote(path.decode("latin-1")) if b"%" in path else path.decode("latin-1"),
            query.decode("latin-1") if query else "", headers,
            body[0] if len(body) == 1 else b"".join(body), self.peer,
        )
        if self.busy:
            self._enqueue(request, keep_alive)
        else:
            self._start(request, keep_alive)

    # -- answering -------------------------------------------------------------------------------
    def _enqueue(self, item: Request | Response, keep_alive: bool) -> None:
        if self.busy:
            self.pending.append((item, keep_alive))
            if len(self.pending) > 64 and self.transport is not None:
                self.transport.pause_reading()
            return
        self._start(item, keep_alive)

    def _start(self, item: Request | Response, keep_alive: bool) -> None:
        if isinstance(item, Response):
            self._write(item, keep_alive)
            return
        try:
            result = self.server.dispatch(item)
        except Exception:  # noqa: BLE001 - a dispatcher bug must not kill the connection silently
            log.exception("unhandled error for %s %s", item.method, item.path)
            result = Response(500, b'{"error": "internal server error"}')
        if type(result) is Response:
            self._write(result, keep_alive)
            return
        self.busy = True
        self.server.in_flight += 1
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t: self._finished(t, keep_alive, item))

    def _finished(self, task: asyncio.Future[Any], keep_alive: bool, request: Request) -> None:
        self.server.in_flight -= 1
        self.busy = False
        try:
            response = task.result()
        except asyncio.CancelledError:  # the server is going down under this request
            response = Response(503, b'{"error": "the server is shutting down; retry"}')
        except Exception:  # noqa: BLE001
            log.exception("unhandled error for %s %s", request.method, request.path)
            response = Response(500, b'{"error": "internal server error"}')
        self._write(response, keep_alive)
        while self.pending and not self.busy and self.transport is not None:
            item, alive = self.pending.popleft()
            self._start(item, alive)
        if not self.pending and self.transport is not None and not self.closing:
            self.transport.resume_reading()
        self.server.maybe_done()

    def _write(self, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        body = response.body
        head = encode_head(response, keep_alive, len(body))
        if len(body) < 65536:
            transport.write(head + body)  # one send for small answers
        else:
            transport.writelines((head, body))
        if not keep_alive:
            self.closing = True
            transport.close()

    def close_if_idle(self) -> None:
        if not self.busy and not self.pending and self.transport is not None:
            self.closing = True
            self.transport.close()


class HttpServer:
    """Listens on host:port and feeds requests to ``dispatch``; stops gracefully."""

    def __init__(self, dispatch: Dispatch, *, max_body_bytes: int = 256 << 20) -> None:
        self.dispatch = dispatch
        self.max_body_bytes = max_body_bytes
        self.connections: set[HttpProtocol] = set()
        self.in_flight = 0
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None
        self._drained: asyncio.Event | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpProtocol(self), host, port, backlog=2048)
        return self._server.sockets[0].getsockname()[1]

    def maybe_done(self) -> None:
        if self.stopping and self.in_flight == 0 and self._drained is not None:
            self._drained.set()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s), close connections."""
        self.stopping = True
        self._drained = asyncio.Event()
        if self._server is not None:
            self._server.close()
        self.maybe_done()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout=grace)
        except asyncio.TimeoutError:
            log.warning("%d request(s) still running after %.0f s; closing anyway", self.in_flight, grace)
        for conn in list(self.connections):
            conn.close_if_idle()
        if self._server is not None:
            await self._server.wait_closed()
