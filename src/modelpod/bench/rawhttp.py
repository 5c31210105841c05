"""A minimal HTTP/1.1 keep-alive client for load generation: one prepared request, sent again and again.

``modelpod bench`` needs a load generator that costs much less per request than the server it
measures; a general client (httpx) tops out at a few thousand requests a second on one core. This
one writes pre-encoded request bytes and reads just the status, the headers it needs and the body
(``content-length`` or chunked), over a pool of persistent connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from modelpod.errors import RawHttpError


class PreparedPost:
    """POST ``body`` to ``path`` on ``host:port`` over pooled keep-alive connections."""

    def __init__(self, host: str, port: int, path: str, body: bytes, headers: Mapping[str, str]) -> None:
        self.host, self.port = host, port
        head = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(self) -> tuple[int, bytes]:
        """One request: (status, body). Raises RawHttpError when the exchange fails."""
        conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port, limit=1 << 24)
            reader, writer = conn
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _read_chunked(reader)
            else:
                body = await reader.read()
                headers["connection"] = "close"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            if conn is not None:
                conn[1].close()
            raise RawHttpError(f"{type(exc).__name__}: {exc}") from None
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append(conn)
        return status, body

    async def close(self) -> None:
        while self._idle:
            _, writer = self._idle.pop()
            writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
