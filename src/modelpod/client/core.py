"""What every client flavour shares: settings, the retry rule, tensors in (with compact transport)
and out. The flavours (sync/async HTTP, sync/async gRPC) only move bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from modelpod.codecs import transport as tp
from modelpod.codecs.datatypes import V2_TO_DTYPE
from modelpod.codecs.v2 import WireRequest, WireTensor
from modelpod.errors import SpecError, clip
from modelpod.spec import numpy_dtype

Quantize = str | tuple | Mapping[str, Any] | None
_NOT_SET: Any = object()


@dataclass
class Stats:
    """Counters over the client's life: what went over the wire (bench and tests read them)."""

    #: HTTP requests / RPCs sent, retries included
    requests: int = 0
    retries: int = 0
    #: body bytes as they went on the wire (after compression)
    bytes_sent: int = 0
    bytes_received: int = 0


def parse_url(url: str) -> tuple[str, str]:
    """``http://h:p[/base]``, ``https://...``, ``grpc://h:p`` or bare ``h:p`` -> (scheme, rest)."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "grpc") or not parts.netloc:
        raise ValueError(f"server URL {url!r}: use http://host:port, https://host:port or grpc://host:port")
    if scheme == "grpc":
        return scheme, parts.netloc
    return scheme, f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def model_path(model: str, version: str | None) -> str:
    """The v2 REST path of a model (version), each part percent-escaped."""
    path = f"/v2/models/{quote(model, safe='')}"
    return f"{path}/versions/{quote(str(version), safe='')}" if version not in (None, "") else path


class ClientBase:
    """Settings and the protocol-independent halves of ``infer``.

    ``transport``: ``"binary"`` (default: v2 binary tensor extension) or ``"json"``.
    ``compression``: None, ``"zstd"``, ``"gzip"`` or ``"deflate"`` for request and response bodies
    (gRPC: ``"gzip"`` / ``"deflate"`` via gRPC's own message compression).
    ``quantize``: compact transport for float32 tensors: a scheme for all of them (``"int8"``,
    ``"uint8"``, ``"float16"``, ``"uint8:axis=3"`` per channel), or ``{tensor: scheme}``; None uses
    the package's manifest defaults (``Manifest.transport``, read from model metadata), ``"none"``
    turns them off. Outputs come back float32 whatever travelled; :mod:`modelpod.codecs.transport`
    states the worst-case error of each scheme.
    ``retries`` / ``backoff``: a request is retried only when that is safe: the connection was
    refused before anything was sent, or the server answered 503 (not ready, queue full) without
    running the model; waits double from ``backoff`` seconds up to ``max_backoff``. 4xx and 500
    are never retried.
    """

    #: the URL schemes this flavour speaks
    schemes: tuple[str, ...] = ("http", "https", "grpc")

    def __init__(
        self, url: str, token: str | None = None, *, transport: str = "binary",
        compression: str | None = None, quantize: Quantize = None, timeout: float | None = 60.0,
        retries: int = 3, backoff: float = 0.1, max_backoff: float = 2.0, use_metadata: bool = True,
    ) -> None:
        self.scheme, self.target = parse_url(url)
        if self.scheme not in self.schemes:
            raise ValueError(f"{type(self).__name__} speaks {'/'.join(self.schemes)}, not {self.scheme}:// "
                             f"({url}); modelpod.connect(url) picks the flavour from the URL")
        self.url = url
        if transport not in ("binary", "json"):
            raise ValueError(f"transport must be 'binary' or 'json', got {transport!r}")
        if compression is not None and compression not in tp.ENCODINGS:
            raise ValueError(f"compression must be one of {', '.join(tp.ENCODINGS)} or None")
        self.token = token
        self.transport = transport
        self.compression = compression
        self.quantize = quantize
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.use_metadata = use_metadata
        self.stats = Stats()
        self._metadata: dict[tuple[str, str | None], dict[str, Any]] = {}

    @staticmethod
    def _http_limits(max_connections: int) -> Any:
        import httpx

        return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)

    def _delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * (2 ** attempt))

    # -- tensors in -------------------------------------------------------------------------------
    def _needs_metadata(self, inputs: Mapping[str, Any], quantize: Quantize) -> bool:
        if not self.use_metadata:
            return False
        chosen = self.quantize if quantize is None else quantize
        if chosen is None or isinstance(chosen, Mapping) or tp.parse_scheme(chosen) is not None:
            return True  # manifest defaults, or outputs to ask for compact (their names come from metadata)
        return not all(isinstance(v, np.ndarray) for v in inputs.values())

    def _plan(self, model: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None,
              version: str | int | None, timeout: float | None, quantize: Quantize,
              meta: dict[str, Any] | None) -> WireRequest:
        """Arrays (converted to the spec dtype where given as Python values), quantized where asked."""
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a dict of name -> array, got {type(inputs).__name__}")
        specs = {t["name"]: t for t in (meta or {}).get("inputs", ())}
        out_specs = [t["name"] for t in (meta or {}).get("outputs", ())]
        schemes = self._schemes(quantize, meta)
        wire_inputs = []
        for name, value in inputs.items():
            try:
                array = _as_array(value, specs.get(name))
            except (TypeError, ValueError) as exc:  # e.g. a string for a float tensor
                wanted = f"{specs[name]['datatype']} values" if name in specs else "an array"
                raise SpecError(f"input '{name}': expected {wanted}, got {clip(repr(value), 60)} ({exc})") from None
            params: dict[str, Any] = {}
            scheme = schemes(name)
            if scheme is not None:
                if scheme[1] is not None and not -array.ndim <= scheme[1] < array.ndim:
                    if not isinstance(self.quantize if quantize is None else quantize, (str, tuple)):
                        raise ValueError(f"input '{name}': transport axis {scheme[1]} is out of range "
                                         f"for a {array.ndim}-D tensor")
                    scheme = (scheme[0], None)  # one scheme for every tensor: per tensor where the axis is absent
                array, params = tp.quantize(array, *scheme)
            wire_inputs.append(WireTensor(name, array, params))
        wanted = list(outputs) if outputs is not None else None
        out_params: dict[str, dict[str, Any]] = {}
        ranks = {t["name"]: len(t["shape"]) for t in (meta or {}).get("outputs", ())}
        every = isinstance(self.quantize if quantize is None else quantize, (str, tuple))
        for name in (wanted if wanted is not None else out_specs):
            scheme = schemes(name)
            if scheme is not None and scheme[1] is not None and every and name in ranks \
                    and not -ranks[name] <= scheme[1] < ranks[name]:
                scheme = (scheme[0], None)  # one scheme for all: per tensor where the axis is absent
            if scheme is not None:
                out_params[name] = {tp.PARAM: scheme[0], **({"axis": scheme[1]} if scheme[1] is not None else {})}
        if out_params and wanted is None:
            wanted = out_specs
        wire_outputs = None if wanted is None else [(n, out_params.get(n, {})) for n in wanted]
        params: dict[str, Any] = {}
        if timeout:  # the server's deadline for this call (v2 "timeout", in microseconds)
            params["timeout"] = int(timeout * 1e6)
        return WireRequest(model, None if version is None else str(version), wire_inputs, wire_outputs, params)

    def _schemes(self, quantize: Quantize, meta: dict[str, Any] | None):  # -> Callable[[str], tuple | None]
        chosen = self.quantize if quantize is None else quantize
        if chosen is None:
            defaults = ((meta or {}).get("parameters") or {}).get("transport") or {}
            chosen = defaults if isinstance(defaults, Mapping) else {}
        if isinstance(chosen, Mapping):
            table = {k: tp.parse_scheme(v) for k, v in chosen.items()}
            return table.get
        every = tp.parse_scheme(chosen)
        return lambda _name: every

    # -- tensors out ------------------------------------------------------------------------------
    @staticmethod
    def _finish(decoded: Mapping[str, tuple[np.ndarray, dict]]) -> dict[str, np.ndarray]:
        result = {}
        for name, (array, params) in decoded.items():
            if tp.PARAM in params:
                array = tp.dequantize(array, params, f"output {name}")
            elif array.dtype == object:
                array = _as_bytes(array)
            result[name] = array
        return result


def _as_array(value: Any, spec: Mapping[str, Any] | None) -> np.ndarray:
    """An input value as the array that goes on the wire (Python values take the spec's dtype)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "U":
            return value.astype(object)
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    dtype = V2_TO_DTYPE.get(spec["datatype"]) if spec else None
    if dtype == "string" or (dtype is None and _looks_like_text(value)):
        return np.array(value, dtype=object)
    if dtype is not None:
        return np.asarray(value, dtype=numpy_dtype(dtype))
    return np.asarray(value)


def _looks_like_text(value: Any) -> bool:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return isinstance(value, (str, bytes))


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """BYTES outputs are bytes objects whatever carried them (JSON gives str)."""
    if all(isinstance(v, bytes) for v in array.flat):
        return array
    out = np.empty(array.size, dtype=object)
    for i, v in enumerate(array.flat):
        out[i] = v.encode("utf-8") if isinstance(v, str) else bytes(v)
    return out.reshape(array.shape)
