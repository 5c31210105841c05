"""``modelpod.Client``: call a served model like a local one.

>>> with modelpod.Client("http://127.0.0.1:8080") as client:
...     client.infer("addition", {"x": np.ones(3, np.float32), "y": np.ones(3, np.float32)})
{'out': array([2., 2., 2.], dtype=float32)}

Same call as ``modelpod.load(path).infer``; :class:`modelpod.client.grpc.GrpcClient` is the gRPC
flavour with the same methods, and ``modelpod.connect(url)`` picks the flavour from the URL. Works against any KServe v2 server (Triton, MLServer); the compact
transport needs a modelpod server on the other end.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from modelpod.client.core import ClientBase, Quantize, model_path
from modelpod.codecs import transport as tp
from modelpod.codecs.v2 import HEADER_LENGTH, WireRequest, decode_response, encode_request, error_message
from modelpod.errors import CodecError, ServerError


def rest_request_parts(client: ClientBase, request: WireRequest) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of an infer POST: encoding, compression, auth."""
    body, json_len = encode_request(request, binary=client.transport == "binary")
    headers = {"accept-encoding": client.compression or "identity"}
    if json_len is not None:
        headers[HEADER_LENGTH] = str(json_len)
        headers["content-type"] = "application/octet-stream"
    else:
        headers["content-type"] = "application/json"
    if client.compression:
        body = tp.compress(body, client.compression)
        headers["content-encoding"] = client.compression
    return model_path(request.model, request.version) + "/infer", body, headers


def auth_headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def read_outputs(client: ClientBase, status: int, headers: httpx.Headers, raw: bytearray) -> dict[str, np.ndarray]:
    body = raw
    encoding = headers.get("content-encoding")
    if encoding:
        try:
            body = bytearray(tp.decompress(bytes(raw), encoding))
        except CodecError as exc:
            raise ServerError(status, f"cannot read the response body: {exc}") from None
    if status != 200:
        raise ServerError(status, error_message(bytes(body), status))
    try:
        return client._finish(decode_response(body, headers))
    except (CodecError, KeyError, TypeError) as exc:
        raise ServerError(status, f"the server's infer response cannot be decoded: {exc}") from None


class Client(ClientBase):
    """Synchronous client over HTTP (httpx, pooled keep-alive connections).

    Thread-safe: one client can serve many threads. See :class:`ClientBase` for the options.
    """

    schemes = ("http", "https")

    def __init__(self, url: str, token: str | None = None, *, max_connections: int = 100, **options: Any) -> None:
        super().__init__(url, token, **options)
        self._open(max_connections)

    def _open(self, max_connections: int) -> None:
        self._http = httpx.Client(base_url=self.target, timeout=self.timeout,
                                  limits=self._http_limits(max_connections),
                                  headers=auth_headers(self.token))

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
              timeout: float | None = None, retry: bool = True) -> tuple[int, httpx.Headers, bytearray]:
        """One call with the safe retries; (status, headers, raw body as received)."""
        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                request = self._http.build_request(method, path, content=body, headers=headers,
                                                   timeout=self.timeout if timeout is None else timeout)
                response = self._http.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
                if retry and attempt < self.retries:
                    self.stats.retries += 1
                    time.sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise ServerError(0, f"cannot connect to {self.target}: {exc}") from None
            except httpx.TimeoutException as exc:
                raise ServerError(0, f"{method} {path} timed out: {exc}") from None
            except httpx.TransportError as exc:
                raise ServerError(0, f"{method} {path} failed: {exc}") from None
            try:
                raw = bytearray()
                for chunk in response.iter_raw():
                    raw += chunk
            except httpx.HTTPError as exc:
                raise ServerError(0, f"{method} {path}: the response broke off: {exc}") from None
            finally:
                response.close()
            self.stats.bytes_sent += len(body or b"")
            self.stats.bytes_received += len(raw)
            if response.status_code == 503 and retry and attempt < self.retries:
                self.stats.retries += 1
                time.sleep(self._delay(attempt))
                attempt += 1
                continue
            return response.status_code, response.headers, raw

    def _json(self, path: str) -> dict[str, Any]:
        status, headers, raw = self._send("GET", path)
        body = bytes(raw)
        if status != 200:
            raise ServerError(status, error_message(body, status))
        import orjson

        return orjson.loads(body)

    # -- the API -----------------------------------------------------------------------------------
    def metadata(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        """The model's v2 metadata: name, versions, platform, inputs, outputs, parameters."""
        key = (model, None if version is None else str(version))
        meta = self._fetch_metadata(model, key[1])
        self._metadata[key] = meta
        return meta

    def _fetch_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        return self._json(model_path(model, version))

    def _cached_metadata(self, model: str, version: str | int | None) -> dict[str, Any]:
        key = (model, None if version is None else str(version))
        meta = self._metadata.get(key)
        return meta if meta is not None else self.metadata(model, version)

    def ready(self, model: str, version: str | int | None = None) -> bool:
        """True when the model (version) answers ready; False otherwise, also when nothing listens."""
        try:
            status, _, _ = self._send("GET", model_path(model, None if version is None else str(version)) + "/ready",
                                      retry=False)
        except ServerError:
            return False
        return status == 200

    def live(self) -> bool:
        try:
            return self._send("GET", "/v2/health/live", retry=False)[0] == 200
        except ServerError:
            return False

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
              version: str | int | None = None, timeout: float | None = None, *,
              quantize: Quantize = None) -> dict[str, np.ndarray]:
        """Run ``model`` on ``inputs`` (name -> array or Python value); a dict of numpy arrays.

        ``outputs`` limits the result; ``version`` picks a version; ``timeout`` (seconds) bounds the
        call on the network and is sent as the server-side deadline. ``quantize`` overrides the
        client's compact-transport setting for this call. Raises :class:`ServerError`.
        """
        meta = self._cached_metadata(model, version) if self._needs_metadata(inputs, quantize) else None
        request = self._plan(model, inputs, outputs, version, timeout, quantize, meta)
        return self._infer(request, timeout)

    def _infer(self, request: WireRequest, timeout: float | None) -> dict[str, np.ndarray]:
        path, body, headers = rest_request_parts(self, request)
        status, resp_headers, raw = self._send("POST", path, body, headers, timeout)
        return read_outputs(self, status, resp_headers, raw)
