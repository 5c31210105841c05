"""A small HTTP/1.1 server on asyncio + httptools, built for the inference hot path.

Why not uvicorn + a framework: on this kind of machine a request through an ASGI stack costs
several times the model time of small models. A read that holds whole, simple requests is parsed
by one C call per request (:mod:`modelpod.serving.http._fastparse`, an optional extension that
accepts only a strict subset of HTTP/1.1 and declines the rest); everything else (partial reads,
chunked bodies, anything unusual or over a limit) goes to httptools. The server calls the app's
``dispatch(Request)`` and, when the answer is ready at once (models that run inline), writes it
without creating a task. Keep-alive and pipelining are supported (answers keep request order);
bodies over the limit get 413 and are discarded as they arrive, never buffered. The same app also runs under any
ASGI server through :mod:`modelpod.serving.asgi`.

Every resource a client can claim is bounded by :class:`~modelpod.serving.limits.Limits`: header
bytes and count (431), body bytes (413 as soon as Content-Length or the running size says so),
time to send the headers or the next piece of the body (408), idle keep-alive time and open
connections. Checks cost a counter or two per callback; timeouts are found by one sweep a second,
not a timer per request. A connection that closes after a final answer first half-closes and
drains what the client is still sending (up to ``linger_s``), so the client reads the answer
instead of a reset. Paths reach the app as sent (percent-escapes intact): routing splits on ``/``
first and decodes each segment after, so ``%2F`` can never change which handler runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httptools
import orjson

from modelpod.serving.http.messages import MaybeAwaitable, Request, Response
from modelpod.serving.limits import DEFAULT_LIMITS, Limits

try:  # whole simple requests in one C call (an optional extension: setup.py)
    from modelpod.serving.http._fastparse import parse_request as _parse_request
except ImportError:  # pragma: no cover - built wherever a C compiler is
    _parse_request = None

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


_now = time.monotonic
_IDLE, _HEAD, _BODY = 0, 1, 2  # where a connection is in its current request
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Refused(Exception):
    """Raised from a parser callback: answer ``status`` with ``message``, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "server", "limits", "transport", "parser", "url", "headers", "body", "body_size", "pending", "busy",
        "closing", "discarding", "peer", "phase", "since", "last", "moved", "head_read", "remeasure",
        "header_count", "head_tail", "max_head", "max_headers", "max_body",
    )

    def __init__(self, server: "HttpServer") -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.pending: deque[tuple[Request | Response, bool]] = deque()
        self.busy = False
        #: the last answer is written: nothing more goes out, the connection ends after a linger
        self.closing = False
        #: the parser is done with this connection: what still arrives is read and dropped
        self.discarding = False
        self.peer = ""
        self.phase = _IDLE
        #: when the current phase began / when bytes last moved, as the once-a-second sweep saw them
        #: (the hot path only sets ``moved``, and ``since = 0`` when a request begins)
        self.since = self.last = _now()
        self.moved = False
        #: raw bytes of the reads since the current request's head began: a bound on its head's size,
        #: so only a head that may be too large is measured (and a huge one is stopped mid-way)
        self.head_read = 0
        #: the head began mid-read, behind another request: head_read does not bound it
        self.remeasure = False
        #: repeated header lines of the current request
        self.header_count = 0
        #: the last bytes of a read that ended mid-head (the end of a head may straddle two reads)
        self.head_tail = b""
        #: the limits the callbacks check, one attribute away
        self.max_head = server.limits.max_header_bytes
        self.max_headers = server.limits.max_headers
        self.max_body = server.limits.max_body_bytes

    # -- connection ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        server = self.server
        if len(server.connections) >= self.limits.max_connections and not server.make_room():
            msg = {"error": f"the server has {len(server.connections)} open connections, its limit "
                            "(--max-connections); retry shortly"}
            response = Response(503, orjson.dumps(msg))
            transport.write(encode_head(response, False, len(response.body)) + response.body)  # type: ignore[attr-defined]
            self.closing = self.discarding = True
            transport.close()
            return
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def eof_received(self) -> bool:
        return False  # the client is done sending: close once our answers are out

    def data_received(self, data: bytes) -> None:
        self.moved = True
        if self.discarding:
            return
        if self.phase == _IDLE and _parse_request is not None and type(data) is bytes:
            # whole simple requests first, one C call each; httptools parses whatever is left
            offset, size = 0, len(data)
            while True:
                parsed = _parse_request(data, offset, self.max_head, self.max_headers, self.max_body)
                if parsed is None:
                    break
                offset, method, path, query, headers, body, keep_alive = parsed
                request = Request(method, path, query, headers, body, self.peer)
                if self.busy:
                    self._enqueue(request, keep_alive and not self.server.stopping)
                else:
                    self._start(request, keep_alive and not self.server.stopping)
                if offset == size or self.discarding:
                    return
            if offset:
                data = data[offset:]
        phase = self.phase
        if phase != _BODY:
            self.head_read += len(data)
            if phase == _IDLE:  # a request begins (no on_message_begin: one Python call less each)
                self.phase = _HEAD
                self.since = 0.0  # the sweep stamps it
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._reject(refused.status, refused.message)
            else:
                log.error("HTTP parser callback failed: %r", refused)
                self._reject(500, "internal server error")
            return
        except httptools.HttpParserUpgrade:
            # The request before the upgrade point is answered over HTTP/1.1 with connection:
            # close (the server ignores Upgrade, as RFC 9110 allows); nothing after it is read.
            self.discarding = True
            if not (self.busy or self.pending or self.closing):
                self._reject(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")
            return
        if self.phase == _HEAD:  # the read ended in a head (rare: heads come whole, with their body)
            if self.head_read - len(data) > self.max_head:
                if len(self.url) > self.max_head:
                    self._reject(414, self._url_too_long())
                else:
                    self._reject(431, self._head_too_large())
                return
            try:
                self._head_waits(data)
            except _Refused as refused:
                self._reject(refused.status, refused.message)

    def _head_too_large(self) -> str:
        return f"the request headers are larger than the server limit of {self.max_head} bytes (--max-header-kb)"

    def _url_too_long(self) -> str:
        return f"the URL is longer than the server limit of {self.max_head} bytes (--max-header-kb)"

    def _reject(self, status: int, message: str) -> None:
        """Answer a request that cannot go on, after the answers still owed, then close."""
        if self.transport is None or self.closing:
            return
        self.discarding = True  # the parser is past saving: read and drop the rest
        self.phase = _IDLE
        self.url, self.headers, self.body, self.body_size = b"", {}, [], 0
        self.header_count = 0
        response = Response(status, orjson.dumps({"error": message}))
        if self.busy:
            self.pending.append((response, False))  # keeps the answers in request order
        else:
            self._write(response, False)

    # -- httptools callbacks (the state is reset when a message completes) -----------------------
    def on_url(self, url: bytes) -> None:
        if self.phase == _IDLE:  # a request pipelined behind one that completed in the same read:
            self.phase = _HEAD   # head_read does not bound its head, so its head gets measured
            self.since = 0.0
            self.remeasure = True
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # sizes are checked once the head is complete (or, for a huge one, by data_received)
        key = name.decode("latin-1").lower()
        headers = self.headers
        if key in headers:  # a repeat (rare): joined, and counted here so the join stays short
            self.header_count += 1
            self._check_header_count(len(headers) + self.header_count)
            headers[key] = f"{headers[key]}, {value.decode('latin-1')}"
        else:
            headers[key] = value.decode("latin-1")

    def _check_head(self) -> None:
        """The checks of a complete head: sizes (414 / 431), transfer coding (501), declared body (413).

        There is no ``on_headers_complete`` callback (it costs a Python call per request): the
        checks run once, when the body starts (:meth:`on_body`), when a message without a body
        completes, or when a head arrives with its body still to come (:meth:`_head_waits`).
        """
        self.head_read = 0
        self.remeasure = False
        headers = self.headers
        if len(self.url) > self.max_head:
            raise _Refused(414, self._url_too_long())
        if len(self.url) + sum(map(len, headers)) + sum(map(len, headers.values())) > self.max_head:
            raise _Refused(431, self._head_too_large())
        self._check_header_count(len(headers) + self.header_count)
        coding = headers.get("transfer-encoding")
        if coding is not None and coding.strip().lower() != "chunked":
            raise _Refused(501, f"Transfer-Encoding {coding!r} is not supported; send the body as is or "
                                "chunked (compress it with Content-Encoding instead)")
        length = headers.get("content-length")  # digits only: the parser checked
        if length is not None and int(length) > self.max_body:
            raise _Refused(413, self._body_too_large())

    def _check_header_count(self, count: int) -> None:
        if count > self.max_headers:
            raise _Refused(431, f"the request has more than {self.max_headers} header lines, the "
                                "server limit (--max-headers)")

    def _head_waits(self, data: bytes) -> None:
        """After a read that left the request in its head: if the head is in fact complete (its
        body is still to come), check it now, answer ``Expect: 100-continue``, and start the body's
        clock. A read that ends mid-head only keeps its last bytes (a CRLF CRLF may straddle reads)."""
        window = self.head_tail + data
        self.head_tail = data[-3:]
        if b"\r\n\r\n" not in window or self.transport is None:
            return
        self.head_tail = b""
        self._check_head()
        self.phase = _BODY
        headers = self.headers
        if (headers.get("expect", "").lower() == "100-continue" and not self.busy and not self.pending
                and ("transfer-encoding" in headers or headers.get("content-length", "0") != "0")):
            self.transport.write(_CONTINUE)

    def _body_too_large(self) -> str:
        return (f"request body is larger than the server limit of {self.max_body} bytes "
                "(raise it with --max-body-mb, or send smaller requests)")

    def on_body(self, body: bytes) -> None:
        if self.phase != _BODY:  # the first piece: the head is complete, check it once
            self.phase = _BODY
            headers = self.headers
            if self.head_read > self.max_head or len(headers) > self.max_headers or "transfer-encoding" in headers \
                    or self.remeasure:
                self._check_head()
            else:  # the common case, inline: only the declared length to check
                length = headers.get("content-length")
                if length is not None and int(length) > self.max_body:
                    raise _Refused(413, self._body_too_large())
        self.body.append(body)
        self.body_size += len(body)
        if self.body_size > self.max_body:  # keep nothing more: answer 413 now
            self.body = []
            raise _Refused(413, self._body_too_large())

    def on_message_complete(self) -> None:
        headers = self.headers
        if self.phase != _BODY and (self.head_read > self.max_head or len(headers) > self.max_headers
                                    or "transfer-encoding" in headers or self.remeasure):
            self._check_head()  # a message without a body: its head was not checked yet
        self.phase = _IDLE
        self.head_read = 0
        self.head_tail = b""
        parser = self.parser
        url, body = self.url, self.body
        keep_alive = parser.should_keep_alive() and not self.server.stopping and not (
            "upgrade" in headers and parser.should_upgrade())
        self.url, self.headers, self.body, self.body_size = b"", {}, [], 0
        self.header_count = 0
        path, _, query = url.partition(b"?")
        method = parser.get_method()
        request = Request(
            _METHODS.get(method) or method.decode("latin-1"),
            path.decode("latin-1"),  # as sent: the router splits on '/' before it decodes escapes
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
            log.exception("unhandled error for %s %s", item.method, item.path[:200])
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
        self.moved = True
        try:
            response = task.result()
        except asyncio.CancelledError:  # the server is going down under this request
            response = Response(503, b'{"error": "the server is shutting down; retry"}')
        except Exception:  # noqa: BLE001
            log.exception("unhandled error for %s %s", request.method, request.path[:200])
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
        if transport is None or self.closing:
            return
        body = response.body
        head = encode_head(response, keep_alive, len(body))
        if len(body) < 65536:
            transport.write(head + body)  # one send for small answers
        else:
            transport.writelines((head, body))
        if not keep_alive:
            self._end()

    def _end(self) -> None:
        """The last answer is out: half-close, and drop what the client still sends (up to the linger)."""
        transport = self.transport
        self.closing = self.discarding = True
        self.since = _now()
        if transport is None:
            return
        transport.resume_reading()  # drain: a client still sending its body then reads the answer
        if self.limits.linger_s > 0 and transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def close_if_idle(self) -> None:
        if not self.busy and not self.pending and self.transport is not None:
            self.closing = True
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        """Close what overstayed (called by the server's once-a-second sweep)."""
        transport = self.transport
        if transport is None:
            return
        if self.moved:
            self.moved = False
            self.last = now
        if not self.since:
            self.since = now
        limits = self.limits
        if self.closing:
            if now - self.since > limits.linger_s:
                transport.abort()
            return
        if self.busy or self.pending:
            return  # the server owes an answer: the model's deadline bounds it
        phase = self.phase
        if phase == _HEAD and now - self.since > limits.header_timeout_s:
            self._reject(408, f"the request headers did not arrive within {limits.header_timeout_s:g} s "
                              "(--header-timeout)")
        elif phase == _BODY and now - self.last > limits.body_timeout_s:
            self._reject(408, f"the request body stalled for {limits.body_timeout_s:g} s (--body-timeout)")
        elif phase == _IDLE and now - self.last > limits.idle_timeout_s:
            if transport.get_write_buffer_size():  # the client does not read what we owe it
                transport.abort()
            else:
                self._end()

    @property
    def idle_since(self) -> float | None:
        """When this connection last moved, if it could be closed without losing an answer."""
        if self.busy or self.pending or self.closing or self.phase == _BODY or self.transport is None:
            return None
        return self.last


class HttpServer:
    """Listens on host:port and feeds requests to ``dispatch``; stops gracefully."""

    def __init__(self, dispatch: Dispatch, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.dispatch = dispatch
        self.limits = limits
        self.connections: set[HttpProtocol] = set()
        self.in_flight = 0
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None
        self._drained: asyncio.Event | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpProtocol(self), host, port, backlog=2048)
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        """Once a second: close connections past a timeout or their linger."""
        while True:
            await asyncio.sleep(1.0)
            now = _now()
            for conn in list(self.connections):
                conn.check_timeouts(now)

    def make_room(self) -> bool:
        """At the connection limit: close the connection idle the longest (False when none is)."""
        oldest, when = None, float("inf")
        for conn in self.connections:
            since = conn.idle_since
            if since is not None and since < when:
                oldest, when = conn, since
        if oldest is None:
            return False
        self.connections.discard(oldest)
        assert oldest.transport is not None
        oldest.closing = True
        oldest.transport.abort()
        return True

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
            if not self._drained.is_set():
                await asyncio.wait_for(self._drained.wait(), timeout=grace)
        except asyncio.TimeoutError:
            log.warning("%d request(s) still running after %.0f s; closing anyway", self.in_flight, grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.close_if_idle()
        if self._server is not None:
            await self._server.wait_closed()
