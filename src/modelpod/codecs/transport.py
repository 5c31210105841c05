"""Compact tensor transport: float32 tensors sent as int8 / uint8 / float16, and compressed bodies.

A float32 tensor may travel quantized; the scheme and its parameters ride in the v2 tensor
``parameters`` so any v2 request or response can carry them (REST JSON, REST binary, gRPC)::

    {"modelpod_transport": "int8", "scale": 0.0123, "zero_point": -3.5}          # per tensor
    {"modelpod_transport": "uint8", "axis": 3,
     "scale": "[0.01, 0.02, ...]", "zero_point": "[0.0, -1.5, ...]"}             # per channel

v2 parameters are scalars, so per-channel values are JSON-encoded strings. The receiver gets
float32 back: ``x = (q - zero_point) * scale``. Clients ask for quantized *outputs* by putting
``{"modelpod_transport": "<scheme>"[, "axis": k]}`` in the requested output's parameters; the
server quantizes after the model and labels the tensor as above. A tensor that cannot travel
compactly (not float32, NaN/inf, float16 overflow) is sent unchanged, without the label, so a
request never fails or loses precision because of its transport.

Worst-case absolute error of each scheme (``x`` the float32 tensor, per channel for ``axis``):

* ``int8`` / ``uint8`` (affine, 256 levels over [min, max]): half a step,
  ``scale / 2 = (max - min) / 510``, plus float32 rounding in the arithmetic, which adds at most
  ``2**-12`` of a step and ``2**-21 * max|x|`` (:func:`error_bound` gives the exact figure the tests
  hold the code to). min and max themselves come back within that bound; a constant tensor is exact.
* ``float16``: round to nearest float16: relative ``2**-11`` for normal values (``|x| >= 2**-14``);
  values below float16's smallest normal (``|x| < 2**-14 = 6.1e-5``) are sent as 0, so their error
  is ``|x|`` (< ``2**-14``). Casting to float16 subnormals runs ~20x slower in numpy than the
  rest, and mask-like outputs are full of near-zero values: flushing them keeps float16 cheap.
  Tensors beyond +-65504 are not cast (they travel as float32).

Bytes on the wire: int8 / uint8 are 4x smaller than float32, float16 2x. On top of that the body
may be compressed (``Content-Encoding`` / ``Accept-Encoding`` exactly ``zstd``, ``gzip`` or
``deflate``; only when the client asks: a list of schemes, as aiohttp sends by default, means no
compression).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelpod.errors import CodecError, TooLargeError

PARAM = "modelpod_transport"
SCHEMES = ("int8", "uint8", "float16")
ENCODINGS = ("zstd", "gzip", "deflate")
_WIRE = {"int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8), "float16": np.dtype(np.float16)}
_QMIN = {"int8": -128.0, "uint8": 0.0}
_F16_MAX = 65504.0
_F16_MIN_NORMAL = np.float32(2.0**-14)
_F32 = np.dtype(np.float32)
_F32_TINY = float(np.finfo(np.float32).tiny)
#: largest body a compressed request may expand to (a guard against decompression bombs)
MAX_DECOMPRESSED = 1 << 30
#: zstd level for bodies: level 1 is fast and already finds the redundancy of quantized tensors
ZSTD_LEVEL = 1


# ---------------------------------------------------------------------------------------------
# schemes


def parse_scheme(value: Any) -> tuple[str, int | None] | None:
    """``"int8"``, ``"uint8:axis=3"``, ``("uint8", 3)`` or None/"none" -> (scheme, axis) or None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        scheme, axis = value[0], (int(value[1]) if len(value) > 1 and value[1] is not None else None)
    else:
        text = str(value).strip()
        scheme, _, rest = text.partition(":")
        axis = None
        if rest:
            key, _, num = rest.partition("=")
            if key.strip() != "axis" or not num.strip().lstrip("-").isdigit():
                raise ValueError(f"transport {value!r}: write SCHEME or SCHEME:axis=N (e.g. 'uint8:axis=3')")
            axis = int(num)
    scheme = scheme.strip().lower()
    if scheme in ("", "none", "float32", "fp32"):
        return None
    if scheme not in SCHEMES:
        raise ValueError(f"unknown transport {scheme!r}; use one of {', '.join(SCHEMES)} (or none)")
    if scheme == "float16" and axis is not None:
        raise ValueError("float16 transport has no axis (it is a plain cast)")
    return scheme, axis


def quantize(array: np.ndarray, scheme: str, axis: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """float32 ``array`` -> (wire array, tensor parameters); ``(array, {})`` when it must travel as is."""
    x = array
    if not isinstance(x, np.ndarray) or x.dtype != _F32 or x.size == 0 or scheme not in SCHEMES:
        return array, {}
    if scheme == "float16":
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or max(-lo, hi) > _F16_MAX:
            return array, {}
        tiny = np.abs(x) < _F16_MIN_NORMAL
        if tiny.any():
            x = np.where(tiny, np.float32(0), x)
        return x.astype(np.float16), {PARAM: "float16"}
    if axis is None:
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo > 1e38:
            return array, {}
        # a constant tensor: one level, scale |value| so that (q - zero_point) * scale is exact
        scale = (hi - lo) / 255.0 if hi > lo else (abs(lo) or 1.0)
        if scale < _F32_TINY:  # subnormal steps lose their precision in float32: send as is
            return array, {}
        inv = np.float32(1.0 / scale)
        q = _levels(x, np.float32(lo), inv)
        params: dict[str, Any] = {PARAM: scheme, "scale": scale, "zero_point": _QMIN[scheme] - lo / scale}
    else:
        axis = _axis(axis, x.ndim)
        others = tuple(i for i in range(x.ndim) if i != axis)
        lo_c = x.min(axis=others, keepdims=True).astype(np.float64)
        hi_c = x.max(axis=others, keepdims=True).astype(np.float64)
        if not (np.isfinite(lo_c).all() and np.isfinite(hi_c).all()) or (hi_c - lo_c).max() > 1e38:
            return array, {}
        span = hi_c - lo_c
        scale_c = np.where(span > 0, span / 255.0, np.where(lo_c != 0, np.abs(lo_c), 1.0))
        if scale_c.min() < _F32_TINY:
            return array, {}
        inv_c = (1.0 / scale_c).astype(np.float32)
        q = _levels(x, lo_c.astype(np.float32), inv_c)
        zp_c = _QMIN[scheme] - lo_c / scale_c
        params = {PARAM: scheme, "axis": axis, "scale": json.dumps(scale_c.ravel().tolist()),
                  "zero_point": json.dumps(zp_c.ravel().tolist())}
    if scheme == "int8":
        np.bitwise_xor(q, 0x80, out=q)  # q - 128 in two's complement
        q = q.view(np.int8)
    return q, params


def _levels(x: np.ndarray, lo: Any, inv: Any) -> np.ndarray:
    """round((x - lo) * inv) as uint8 levels 0..255 (float32 work, four passes, one temporary)."""
    t = np.subtract(x, lo, dtype=np.float32)
    np.multiply(t, inv, out=t)
    np.add(t, np.float32(0.5), out=t)
    return t.astype(np.uint8)  # truncation of t >= 0 is floor: round half up


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise CodecError(f"transport axis {axis} is out of range for a {ndim}-D tensor")
    return axis % ndim


def dequantize(array: np.ndarray, params: Mapping[str, Any], name: str = "tensor") -> np.ndarray:
    """Wire array + its tensor parameters -> float32 (the array itself when it is not labelled)."""
    scheme = params.get(PARAM)
    if scheme is None:
        return array
    if scheme not in SCHEMES:
        raise CodecError(f"'{name}': unknown {PARAM} {scheme!r}; use one of {', '.join(SCHEMES)}")
    if array.dtype != _WIRE[scheme]:
        raise CodecError(f"'{name}': {PARAM} {scheme} needs datatype {_WIRE[scheme].name}, got {array.dtype.name}")
    if scheme == "float16":
        return array.astype(np.float32)
    try:
        if "axis" in params:
            axis = _axis(int(params["axis"]), array.ndim)
            scale = np.asarray(json.loads(params["scale"]), dtype=np.float32)
            zero = np.asarray(json.loads(params["zero_point"]), dtype=np.float32)
            if scale.shape != (array.shape[axis],) or zero.shape != scale.shape:
                raise CodecError(
                    f"'{name}': per-channel scale/zero_point need {array.shape[axis]} values "
                    f"(axis {axis}), got {scale.size} and {zero.size}"
                )
            shape = [1] * array.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        else:
            scale = np.float32(float(params["scale"]))
            zero = np.float32(float(params["zero_point"]))
    except CodecError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"'{name}': {scheme} transport needs numeric scale and zero_point ({exc})") from None
    out = np.subtract(array, zero, dtype=np.float32)
    np.multiply(out, scale, out=out)
    return out


def error_bound(array: np.ndarray, scheme: str, axis: int | None = None) -> np.ndarray:
    """The documented worst-case |dequantize(quantize(x)) - x|, elementwise (broadcastable)."""
    x = np.asarray(array, dtype=np.float64)
    if scheme == "float16":
        ax = np.abs(x)
        return np.where(ax >= 2.0**-14, ax * 2.0**-11, ax)
    if axis is None:
        lo, hi, top = x.min(), x.max(), np.abs(x).max()
    else:
        axis = axis % x.ndim
        others = tuple(i for i in range(x.ndim) if i != axis)
        lo, hi = x.min(axis=others, keepdims=True), x.max(axis=others, keepdims=True)
        top = np.abs(x).max(axis=others, keepdims=True)
    step = (hi - lo) / 255.0
    return step / 2 * (1 + 2.0**-12) + 2.0**-21 * top


# ---------------------------------------------------------------------------------------------
# server side: a request's inputs in, a response's outputs out


def decode_inputs(inputs: dict[str, np.ndarray], input_parameters: Mapping[str, Mapping[str, Any]]) -> None:
    """Dequantize (in ``inputs``, in place) every input whose parameters carry a transport label."""
    for name, params in input_parameters.items():
        if PARAM in params and name in inputs:
            inputs[name] = dequantize(inputs[name], params, f"input {name}")


def encode_outputs(
    outputs: Mapping[str, np.ndarray], output_parameters: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Quantize the outputs the client asked for; returns (outputs, per-output parameters to send)."""
    if not output_parameters:
        return dict(outputs), {}
    result = dict(outputs)
    sent: dict[str, dict[str, Any]] = {}
    for name, params in output_parameters.items():
        if name not in result or params.get(PARAM) is None:
            continue
        try:
            parsed = parse_scheme((params[PARAM], params.get("axis")))
        except ValueError as exc:
            raise CodecError(f"output '{name}': {exc}") from None
        if parsed is None:
            continue
        array = result[name]
        if not isinstance(array, np.ndarray) or array.dtype != _F32:
            continue  # only float32 travels compact; other outputs go as they are
        if parsed[1] is not None:
            _axis(parsed[1], array.ndim)
        wire, tparams = quantize(array, *parsed)
        if tparams:
            result[name] = wire
            sent[name] = tparams
    return result, sent


# ---------------------------------------------------------------------------------------------
# compressed bodies


def compress(body: bytes | memoryview, encoding: str) -> bytes:
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    if encoding == "gzip":
        co = zlib.compressobj(1, zlib.DEFLATED, 31)
        return co.compress(body) + co.flush()
    if encoding == "deflate":
        return zlib.compress(body, 1)
    raise ValueError(f"unknown compression {encoding!r}; use one of {', '.join(ENCODINGS)}")


_OUT_STEP = 1 << 20  # output made per step: memory never runs far ahead of the limit check
_IN_STEP = 1 << 16  # compressed input fed per step (zlib copies what it leaves unconsumed)


def decompress(body: bytes | memoryview, encoding: str | None, limit: int = MAX_DECOMPRESSED) -> bytes | memoryview:
    """Undo ``Content-Encoding`` in bounded steps (CodecError on an unknown scheme, corrupt or
    truncated data; TooLargeError as soon as the output passes ``limit`` bytes, whatever a header
    claims). Peak memory: the output (at most ``limit``) twice, plus one step."""
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ENCODINGS:
        raise CodecError(f"Content-Encoding {encoding!r} is not supported; use zstd, gzip or deflate")
    chunks: list[bytes] = []
    try:
        if enc == "zstd":
            _unzstd(body, limit, chunks)
        else:
            _inflate(body, 31 if enc == "gzip" else 15, limit, chunks, enc)
    except CodecError:
        raise
    except Exception as exc:  # noqa: BLE001 - zlib.error, zstandard.ZstdError
        raise CodecError(f"the {enc} body cannot be decompressed: {exc}") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _keep(chunks: list[bytes], chunk: bytes, size: int, limit: int, enc: str) -> int:
    """Add one piece of output; TooLargeError once the total passes ``limit``."""
    size += len(chunk)
    if size > limit:
        chunks.clear()
        raise TooLargeError(f"the {enc} body expands past the limit of {limit} bytes "
                            "(raise it with --max-body-mb, or send smaller requests)")
    if chunk:
        chunks.append(chunk)
    return size


def _inflate(body: bytes | memoryview, wbits: int, limit: int, chunks: list[bytes], enc: str) -> None:
    """gzip (every member) or zlib-wrapped deflate, fed in small slices with bounded output."""
    view = memoryview(body)
    pos = size = 0
    while True:
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            if pos >= len(view):
                raise CodecError(f"the {enc} body is truncated")
            data: bytes | memoryview = view[pos:pos + _IN_STEP]
            pos += len(data)
            while data and not inflater.eof:
                size = _keep(chunks, inflater.decompress(data, min(_OUT_STEP, limit + 1 - size)), size, limit, enc)
                data = inflater.unconsumed_tail
        pos -= len(inflater.unused_data)  # what followed the end of this stream, in the last slice
        if pos == len(view):
            return
        if wbits != 31:  # deflate is one stream; gzip may hold several members
            raise CodecError(f"the {enc} body has {len(view) - pos} bytes after its end")


def _unzstd(body: bytes | memoryview, limit: int, chunks: list[bytes]) -> None:
    """Every zstd frame in ``body``, read in bounded steps; a truncated frame is an error."""
    import zstandard

    if not _zstd_complete(memoryview(body)):
        raise CodecError("the zstd body is truncated or not zstd")
    reader = zstandard.ZstdDecompressor().stream_reader(bytes(body), read_across_frames=True)
    size = 0
    while True:
        chunk = reader.read(min(_OUT_STEP, limit + 1 - size))
        if not chunk:
            return
        size = _keep(chunks, chunk, size, limit, "zstd")


_ZSTD_MAGIC = 0xFD2FB528
_DICT_ID_BYTES = (0, 1, 2, 4)
_CONTENT_SIZE_BYTES = (0, 2, 4, 8)


def _zstd_complete(view: memoryview) -> bool:
    """Whether ``view`` is whole zstd frames (RFC 8878), walking frame and block headers only."""
    pos, end = 0, len(view)
    if end == 0:
        return False
    while pos < end:
        if end - pos < 4:
            return False
        magic = int.from_bytes(view[pos:pos + 4], "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: 4-byte size, then that many bytes
            if end - pos < 8:
                return False
            pos += 8 + int.from_bytes(view[pos + 4:pos + 8], "little")
            continue
        if magic != _ZSTD_MAGIC or end - pos < 5:
            return False
        descriptor = view[pos + 4]
        single = descriptor & 0x20
        content = _CONTENT_SIZE_BYTES[descriptor >> 6] or (1 if single else 0)
        pos += 5 + (0 if single else 1) + _DICT_ID_BYTES[descriptor & 3] + content
        while True:  # blocks: 3-byte header (last flag, type, size), then the block's bytes
            if end - pos < 3:
                return False
            header = int.from_bytes(view[pos:pos + 3], "little")
            kind, size = (header >> 1) & 3, header >> 3
            if kind == 3:
                return False
            pos += 3 + (1 if kind == 1 else size)
            if header & 1:
                break
        pos += 4 if descriptor & 4 else 0  # content checksum
    return pos == end


def response_encoding(accept_encoding: str | None) -> str | None:
    """The scheme to compress a response with: only an exact ``zstd``/``gzip``/``deflate`` counts."""
    enc = (accept_encoding or "").strip().lower()
    return enc if enc in ENCODINGS else None


# ---------------------------------------------------------------------------------------------
# gRPC: tensor parameters travel in map<string, InferParameter>


