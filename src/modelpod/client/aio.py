"""``modelpod.AsyncClient``: the asyncio twin of :class:`modelpod.Client` (same options, same results).

>>> async with modelpod.AsyncClient("http://127.0.0.1:8080") as client:
...     outputs = await client.infer("addition", {"x": x, "y": y})

:class:`modelpod.client.grpc.AsyncGrpcClient` is the grpc.aio flavour; ``modelpod.client.connect_async(url)``
picks the flavour from the URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from modelpod.client.core import ClientBase, Quantize, model_path
from modelpod.client.sync import auth_headers, read_outputs, rest_request_parts
from modelpod.codecs.v2 import WireRequest, error_message
from modelpod.errors import ServerError


class AsyncClient(ClientBase):
    """Asynchronous client over HTTP (httpx.AsyncClient, pooled)."""

    schemes = ("http", "https")

    def __init__(self, url: str, token: str | None = None, *, max_connections: int = 100, **options: Any) -> None:
        super().__init__(url, token, **options)
        self._open(max_connections)

    def _open(self, max_connections: int) -> None:
        self._http = httpx.AsyncClient(base_url=self.target, timeout=self.timeout,
                                  limits=self._http_limits(max_connections),
                                       headers=auth_headers(self.token))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, method: str, path: str, body: bytes | None = None,
                    headers: dict[str, str] | None = None, timeout: float | None = None,
                    retry: bool = True) -> tuple[int, httpx.Headers, bytearray]:
        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                request = self._http.build_request(method, path, content=body, headers=headers,
                                                   timeout=self.timeout if timeout is None else timeout)
                response = await self._http.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if retry and attempt < self.retries:
                    self.stats.retries += 1
                    await asyncio.sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise ServerError(0, f"cannot connect to {self.target}: {exc}") from None
            except httpx.TimeoutException as exc:
                raise ServerError(0, f"{method} {path} timed out: {exc}") from None
            except httpx.TransportError as exc:
                raise ServerError(0, f"{method} {path} failed: {exc}") from None
            try:
                raw = bytearray()
                async for chunk in response.aiter_raw():
                    raw += chunk
            except httpx.HTTPError as exc:
                raise ServerError(0, f"{method} {path}: the response broke off: {exc}") from None
            finally:
                await response.aclose()
            self.stats.bytes_sent += len(body or b"")
            self.stats.bytes_received += len(raw)
            if response.status_code == 503 and retry and attempt < self.retries:
                self.stats.retries += 1
                await asyncio.sleep(self._delay(attempt))
                attempt += 1
                continue
            return response.status_code, response.headers, raw

    async def metadata(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        key = (model, None if version is None else str(version))
        meta = await self._fetch_metadata(model, key[1])
        self._metadata[key] = meta
        return meta

    async def _fetch_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        status, _, raw = await self._send("GET", model_path(model, version))
        if status != 200:
            raise ServerError(status, error_message(bytes(raw), status))
        import orjson

        return orjson.loads(bytes(raw))

    async def ready(self, model: str, version: str | int | None = None) -> bool:
        path = model_path(model, None if version is None else str(version)) + "/ready"
        try:
            return (await self._send("GET", path, retry=False))[0] == 200
        except ServerError:
            return False

    async def live(self) -> bool:
        try:
            return (await self._send("GET", "/v2/health/live", retry=False))[0] == 200
        except ServerError:
            return False

    async def infer(self, model: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
                    version: str | int | None = None, timeout: float | None = None, *,
                    quantize: Quantize = None) -> dict[str, np.ndarray]:
        """See :meth:`modelpod.Client.infer`."""
        meta = None
        if self._needs_metadata(inputs, quantize):
            key = (model, None if version is None else str(version))
            meta = self._metadata.get(key) or await self.metadata(model, version)
        request = self._plan(model, inputs, outputs, version, timeout, quantize, meta)
        return await self._infer(request, timeout)

    async def _infer(self, request: WireRequest, timeout: float | None) -> dict[str, np.ndarray]:
        path, body, headers = rest_request_parts(self, request)
        status, resp_headers, raw = await self._send("POST", path, body, headers, timeout)
        return read_outputs(self, status, resp_headers, raw)
