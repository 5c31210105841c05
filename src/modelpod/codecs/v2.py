"""KServe v2 (Open Inference Protocol) REST bodies, both ends: JSON tensors and the binary tensor extension.

Decoding is zero-copy for binary tensors (``np.frombuffer`` over the request body). Every
malformed body raises :class:`CodecError` with a message that names the tensor and the problem.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np
import orjson

from modelpod.codecs.datatypes import V2_BY_DTYPE, V2_NUMPY, element_count, v2_datatype, v2_numpy_dtype
from modelpod.errors import CodecError

try:  # the C half of plain_inputs (an optional extension: setup.py)
    from modelpod.codecs._fastjson import plain_inputs as _fast_plain_inputs
except ImportError:  # pragma: no cover - built wherever a C compiler is
    _fast_plain_inputs = None

HEADER_LENGTH = "inference-header-content-length"
_NUMPY_OPT = orjson.OPT_SERIALIZE_NUMPY
_ORJSON_NATIVE = frozenset("biuf")
_UNKNOWN: Any = object()
_NOT_NUMBERS = np.empty(0, dtype=object)
_FLOATS = {v2: dtype for v2, dtype in V2_NUMPY.items() if dtype is not None and dtype.kind == "f"}
_NO_BYTES = memoryview(b"")


#: the shared "nothing here" for V2Request's optional maps (read-only, so sharing is safe)
_NONE: Mapping[str, Any] = MappingProxyType({})


class V2Request:
    """A decoded v2 infer request."""

    __slots__ = ("inputs", "outputs", "binary_outputs", "binary_default", "id", "parameters",
                 "input_parameters", "output_parameters")

    def __init__(
        self,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        binary_outputs: Mapping[str, bool] = _NONE,
        binary_default: bool = False,
        id: str | None = None,
        parameters: Mapping[str, Any] = _NONE,
        input_parameters: Mapping[str, dict[str, Any]] = _NONE,
        output_parameters: Mapping[str, dict[str, Any]] = _NONE,
    ) -> None:
        self.inputs = inputs
        #: requested output names, or None for all
        self.outputs = outputs
        #: output name -> send as binary
        self.binary_outputs = binary_outputs
        self.binary_default = binary_default
        self.id = id
        self.parameters = parameters
        #: per-input parameters (compact transport settings travel here)
        self.input_parameters = input_parameters
        self.output_parameters = output_parameters


def decode_bytes_tensor(buf: memoryview, count: int, name: str) -> np.ndarray:
    """Decode ``count`` BYTES elements (4-byte little-endian length, then the bytes)."""
    if count > len(buf) // 4:  # every element has a 4-byte length: check before allocating slots
        raise CodecError(f"input '{name}': {count} BYTES elements need at least {count * 4} bytes, "
                         f"the data has {len(buf)}")
    out = np.empty(count, dtype=object)
    pos, end = 0, len(buf)
    for i in range(count):
        if pos + 4 > end:
            raise CodecError(f"input '{name}': BYTES data ends after {i} of {count} elements")
        (length,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + length > end:
            raise CodecError(f"input '{name}': BYTES element {i} claims {length} bytes past the end")
        out[i] = bytes(buf[pos : pos + length])
        pos += length
    if pos != end:
        raise CodecError(f"input '{name}': {end - pos} stray bytes after {count} BYTES elements")
    return out


def encode_bytes_tensor(array: np.ndarray) -> bytes:
    parts = []
    for value in array.flat:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def array_from_buffer(buf: memoryview, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """Binary tensor bytes -> array of ``shape`` (zero-copy for fixed-size types)."""
    count = element_count(shape, name)
    dtype = v2_numpy_dtype(datatype, name)
    if dtype is None:
        return decode_bytes_tensor(buf, count, name).reshape(shape)
    expected = count * dtype.itemsize
    if len(buf) != expected:
        raise CodecError(
            f"input '{name}': binary_data_size is {len(buf)} bytes but {datatype} of shape "
            f"{shape} needs {expected}"
        )
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def array_from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """JSON ``data`` (flat or nested, row-major) -> array of ``shape``."""
    dtype = _FLOATS.get(datatype) if type(datatype) is str else None
    if dtype is not None and type(data) is list:  # the common case: a list of numbers for floats
        try:
            array = np.array(data)
        except (ValueError, TypeError, OverflowError):
            array = _NOT_NUMBERS  # ragged or worse: the general path says what is wrong
        if array.dtype.kind == "f":
            array = array.astype(dtype)
            if len(shape) == 1 and array.ndim == 1 and shape[0] == len(array) and type(shape[0]) is int:
                return array  # flat data for a 1-D shape: nothing to reshape
            return _shaped(array, shape, name)
    return _array_from_json(data, datatype, shape, name)


def _array_from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """:func:`array_from_json` for every case but a list of floats for a float datatype."""
    dtype = V2_NUMPY.get(datatype, _UNKNOWN) if type(datatype) is str else _UNKNOWN
    if dtype is _UNKNOWN:
        v2_numpy_dtype(datatype, name)  # raises the message that lists the known datatypes
    if type(data) is not list:
        data = [data]
    try:
        if dtype is not None and dtype.kind == "f":
            array = np.array(data)
            if array.dtype.kind not in "biuf" and array.size:
                raise CodecError(f"input '{name}': {datatype} data must be numbers")
            array = array.astype(dtype)
        elif dtype is None:
            array = np.array(data, dtype=object).ravel()
            if not all(isinstance(v, (str, bytes)) for v in array):
                raise CodecError(f"input '{name}': BYTES data must be strings")
        elif dtype.kind == "b":
            array = np.array(data).ravel()
            if array.size and array.dtype.kind != "b":
                raise CodecError(f"input '{name}': BOOL data must be true/false")
            array = array.astype(np.bool_)
        else:
            probe = np.array(data)
            if probe.size and probe.dtype.kind not in "biuf":
                raise CodecError(f"input '{name}': {datatype} data must be numbers")
            if probe.size:
                probe = _checked_integers(data, probe, dtype, datatype, name)
            array = probe.astype(dtype)
    except CodecError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise CodecError(f"input '{name}': data does not fit {datatype} ({exc})") from None
    return _shaped(array, shape, name)


def _shaped(array: np.ndarray, shape: list[int], name: str) -> np.ndarray:
    """``array`` (flat or nested) reshaped to the request's ``shape``; CodecError naming a mismatch."""
    count = element_count(shape, name)
    if array.size != count:
        raise CodecError(
            f"input '{name}': shape {shape} needs {count} elements but data has {array.size}"
        )
    return array.reshape(shape)


def _checked_integers(data: Any, probe: np.ndarray, dtype: np.dtype, datatype: str, name: str) -> np.ndarray:
    """JSON numbers for an integer datatype: no fractions and no silent wrap-around."""
    info = np.iinfo(dtype)
    if probe.dtype.kind == "f":
        # numpy makes float64 of ints past int64 (the upper half of UINT64): go through Python ints
        flat = np.array(data, dtype=object).ravel()
        if not all(type(v) is int for v in flat):
            raise CodecError(f"input '{name}': {datatype} data must be integers, got fractions")
        try:
            return np.array(flat.tolist(), dtype=dtype)
        except OverflowError:
            raise CodecError(f"input '{name}': a value is out of range for {datatype} [{info.min}, {info.max}]") from None
    low, high = int(probe.min()), int(probe.max())
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise CodecError(f"input '{name}': value {bad} is out of range for {datatype} [{info.min}, {info.max}]")
    return probe


def _explain_bad_input(item: Any) -> NoReturn:
    """Raise the CodecError that says what is wrong with one malformed entry of 'inputs'."""
    if not isinstance(item, dict):
        raise CodecError("each entry of 'inputs' must be an object with name, shape, datatype")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise CodecError("an input has no 'name'")
    if not isinstance(item.get("datatype"), str):
        raise CodecError(f"input '{name}': 'datatype' is missing")
    raise CodecError(f"input '{name}': 'shape' must be a list of ints")


#: the tensor parameters of Triton's shared memory extension
SHM_REGION, SHM_OFFSET, SHM_SIZE = "shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"
SHM_KEYS = (SHM_REGION, SHM_OFFSET, SHM_SIZE)

#: reads an input from shared memory: (name, datatype, shape, tensor parameters) -> array
SharedReader = Callable[[str, str, list, Mapping[str, Any]], np.ndarray]


def uses_shared_memory(params: Mapping[str, Any]) -> bool:
    """Whether tensor parameters name a shared memory region (or part of one)."""
    return SHM_REGION in params or SHM_SIZE in params or SHM_OFFSET in params


def decode_request(body: bytes, header_length: int | None, read_shared: SharedReader | None = None) -> V2Request:
    """Decode a v2 infer body; ``header_length`` is the Inference-Header-Content-Length value.

    An input whose parameters name a shared memory region (and carry no data) is read by
    ``read_shared``; without one such an input is a CodecError.
    """
    doc, binary = parse_body(body, header_length)
    return decode_document(doc, binary, read_shared)


def parse_body(body: bytes, header_length: int | None) -> tuple[Any, memoryview]:
    """The JSON document of a v2 infer body and the binary tensor bytes after it (CodecError if
    the JSON is malformed or the header length does not fit the body)."""
    if header_length is None:
        json_part: bytes | memoryview = body  # orjson parses bytes faster than a view
        binary = _NO_BYTES
    else:
        view = memoryview(body)
        if header_length < 0 or header_length > len(view):
            raise CodecError(
                f"Inference-Header-Content-Length is {header_length} but the body has {len(view)} bytes"
            )
        json_part, binary = view[:header_length], view[header_length:]
    try:
        return orjson.loads(json_part), binary
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"the request JSON is malformed: {exc}") from None


def plain_inputs(doc: Any, datatypes: Mapping[str, str]) -> dict[str, np.ndarray] | None:
    """The inputs of a plain JSON request, decoded as :func:`decode_document` decodes them, or None.

    Plain: the document has nothing but ``inputs``, one entry per name in ``datatypes`` (the
    model's inputs), each entry exactly ``name``, ``datatype``, ``shape`` and ``data``, with the
    datatype ``datatypes`` gives its name. This is most requests, and they need no
    :class:`V2Request`. None means "not plain or not valid": :func:`decode_document` then decodes
    it or says what is wrong (this function never raises and builds no message).

    Where the C half is built (``modelpod.codecs._fastjson``), numbers for FP32/FP64/INT32/INT64
    are converted there; whatever it does not answer, :func:`python_plain_inputs` does.
    """
    if _fast_plain_inputs is not None:
        inputs = _fast_plain_inputs(doc, datatypes)
        if inputs is not None:
            return inputs
    return python_plain_inputs(doc, datatypes)


def python_plain_inputs(doc: Any, datatypes: Mapping[str, str]) -> dict[str, np.ndarray] | None:
    """:func:`plain_inputs` in Python alone: the reference the C half is held to."""
    if type(doc) is not dict or len(doc) != 1:
        return None
    items = doc.get("inputs")
    if type(items) is not list or len(items) != len(datatypes) or not items:
        return None
    for item in items:  # the whole structure first: nothing is converted for a request that is not plain
        if type(item) is not dict or len(item) != 4:
            return None
        name = item.get("name")
        datatype = datatypes.get(name) if type(name) is str else None
        if datatype is None or item.get("datatype") != datatype:
            return None
        if type(item.get("shape")) is not list or item.get("data") is None:
            return None
    inputs: dict[str, np.ndarray] = {}
    for item in items:
        name = item["name"]
        if name in inputs:
            return None
        try:
            inputs[name] = array_from_json(item["data"], item["datatype"], item["shape"], name)
        except CodecError:
            return None
    return inputs


def decode_document(doc: Any, binary: memoryview = _NO_BYTES, read_shared: SharedReader | None = None) -> V2Request:
    """Decode a parsed v2 infer document (``binary``: the tensor bytes after its JSON)."""
    if type(doc) is not dict:
        raise CodecError("the request must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise CodecError("the request needs a non-empty 'inputs' list")
    if len(doc) > 1:  # id, parameters or outputs
        params = doc.get("parameters") or _NONE
        if type(params) is not dict and params is not _NONE:
            raise CodecError("'parameters' must be a JSON object")
    else:
        params = _NONE
    inputs: dict[str, np.ndarray] = {}
    input_parameters: dict[str, dict[str, Any]] | None = None
    offset = 0
    for item in raw_inputs:
        try:
            name, datatype, shape = item["name"], item["datatype"], item["shape"]
        except (KeyError, TypeError):
            _explain_bad_input(item)
        if type(name) is not str or not name or type(datatype) is not str or type(shape) is not list:
            _explain_bad_input(item)
        if name in inputs:
            raise CodecError(f"input '{name}' appears twice")
        tparams = item.get("parameters") if len(item) > 4 or "data" not in item else None
        size = None
        if tparams:
            if type(tparams) is not dict:
                raise CodecError(f"input '{name}': 'parameters' must be an object")
            size = tparams.get("binary_data_size")
            if len(tparams) > (size is not None):  # compact transport settings travel here
                if input_parameters is None:
                    input_parameters = {}
                input_parameters[name] = tparams
                if uses_shared_memory(tparams):
                    if size is not None or "data" in item:
                        raise CodecError(f"input '{name}': set only one of 'data', parameters.binary_data_size "
                                         "and parameters.shared_memory_region")
                    if read_shared is None:
                        raise CodecError(f"input '{name}': this server reads no inputs from shared memory")
                    inputs[name] = read_shared(name, datatype, shape, tparams)
                    continue
        if size is not None:
            if type(size) is not int or size < 0:
                raise CodecError(f"input '{name}': binary_data_size must be a non-negative int")
            if offset + size > len(binary):
                raise CodecError(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left)"
                )
            inputs[name] = array_from_buffer(binary[offset : offset + size], datatype, shape, name)
            offset += size
        else:
            try:
                data = item["data"]
            except KeyError:
                raise CodecError(f"input '{name}' has neither 'data' nor parameters.binary_data_size") from None
            inputs[name] = array_from_json(data, datatype, shape, name)
    if offset != len(binary):
        raise CodecError(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims "
            "(check binary_data_size and Inference-Header-Content-Length)"
        )
    if len(doc) == 1:
        return V2Request(inputs, None, _NONE, False, None, _NONE, input_parameters or _NONE)
    request_id = doc.get("id")
    request = V2Request(
        inputs, None, _NONE, bool(params.get("binary_data_output", False)),
        None if request_id is None else str(request_id), params, input_parameters or _NONE, _NONE,
    )
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        _decode_requested_outputs(request, raw_outputs)
    return request


def _decode_requested_outputs(request: V2Request, raw_outputs: Any) -> None:
    """Fill the requested output names and their per-output parameters."""
    if not isinstance(raw_outputs, list):
        raise CodecError("'outputs' must be a list of {name, parameters}")
    names: list[str] = []
    binary_outputs: dict[str, bool] = {}
    output_parameters: dict[str, dict[str, Any]] = {}
    for out in raw_outputs:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise CodecError("each requested output needs a 'name'")
        oparams = out.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise CodecError(f"output '{out['name']}': 'parameters' must be an object")
        names.append(out["name"])
        if "binary_data" in oparams:
            binary_outputs[out["name"]] = bool(oparams["binary_data"])
        if oparams:
            output_parameters[out["name"]] = oparams
    request.outputs = names
    request.binary_outputs = binary_outputs
    request.output_parameters = output_parameters


def encode_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    request_id: str | None = None,
    binary: Mapping[str, bool] | None = None,
    binary_default: bool = False,
    output_parameters: Mapping[str, dict[str, Any]] | None = None,
    shared_memory: Mapping[str, dict[str, Any]] | None = None,
) -> tuple[bytes, int | None]:
    """Encode outputs; returns (body, JSON header length or None when all outputs are JSON).

    Outputs named in ``shared_memory`` were written to a shared memory region: their entry carries
    those parameters (region, offset, byte size) and no data.
    """
    entries = []
    blobs: list[bytes | memoryview] = []
    for name, array in outputs.items():
        datatype = V2_BY_DTYPE.get(array.dtype) or v2_datatype(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        extra = output_parameters.get(name) if output_parameters else None
        if shared_memory and name in shared_memory:
            entry["parameters"] = {**(extra or {}), **shared_memory[name]}
        elif (binary.get(name, binary_default) if binary else binary_default) or datatype == "BF16":
            if datatype == "BYTES":
                blob: bytes | memoryview = encode_bytes_tensor(array)
            else:
                # a uint8 view: the buffer protocol has no format for ml_dtypes' bfloat16
                blob = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
            entry["parameters"] = {**(extra or {}), "binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if extra:
                entry["parameters"] = extra
            if array.dtype.kind in _ORJSON_NATIVE:  # orjson writes C-contiguous 1-D arrays natively
                entry["data"] = array if array.ndim == 1 and array.flags.c_contiguous else array.ravel()
            elif array.dtype.kind == "O":
                entry["data"] = [
                    v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)
                    for v in array.flat
                ]
            else:
                entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=_NUMPY_OPT)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


# ---------------------------------------------------------------------------------------------
# the client's half: requests out, responses in


@dataclass
class WireTensor:
    """One input as it goes on the wire: the (possibly quantized) array and its v2 parameters."""

    name: str
    array: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class WireRequest:
    """One infer call, independent of the protocol that will carry it."""

    model: str
    version: str | None
    inputs: list[WireTensor]
    #: (name, parameters) of each requested output; None = all outputs, no parameters
    outputs: list[tuple[str, dict[str, Any]]] | None
    parameters: dict[str, Any] = field(default_factory=dict)


def tensor_blob(array: np.ndarray, datatype: str) -> bytes | memoryview:
    if datatype == "BYTES":
        return encode_bytes_tensor(array)
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _json_data(array: np.ndarray, datatype: str) -> Any:
    """The JSON ``data`` of a tensor, or None when JSON cannot carry it (BF16, non-UTF-8 BYTES)."""
    if datatype == "BF16":
        return None
    if datatype == "BYTES":
        try:
            return [v if isinstance(v, str) else bytes(v).decode("utf-8") for v in array.flat]
        except UnicodeDecodeError:
            return None
    return np.ascontiguousarray(array).reshape(-1)


def encode_request(request: WireRequest, binary: bool) -> tuple[bytes, int | None]:
    """(body, Inference-Header-Content-Length or None) for ``POST .../infer``.

    ``binary=False`` sends JSON ``data`` except for what JSON cannot carry (BF16, non-UTF-8 BYTES),
    which goes as binary tensors in the same body, as the binary extension allows.
    """
    entries: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for tensor in request.inputs:
        array = tensor.array
        datatype = v2_datatype(array)
        entry: dict[str, Any] = {"name": tensor.name, "shape": list(array.shape), "datatype": datatype}
        data = None if binary else _json_data(array, datatype)
        if data is None:
            blob = tensor_blob(array, datatype)
            entry["parameters"] = {**tensor.parameters, "binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if tensor.parameters:
                entry["parameters"] = tensor.parameters
            entry["data"] = data
        entries.append(entry)
    doc: dict[str, Any] = {"inputs": entries}
    params = dict(request.parameters)
    if request.outputs is None:
        if binary:
            params["binary_data_output"] = True
    else:
        doc["outputs"] = [{"name": n, "parameters": {**p, "binary_data": binary}} for n, p in request.outputs]
    if params:
        doc["parameters"] = params
    header = orjson.dumps(doc, option=_NUMPY_OPT)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def decode_response(body: bytes | bytearray, headers: Mapping[str, str]) -> dict[str, tuple[np.ndarray, dict]]:
    """A 200 infer body -> {output: (array, tensor parameters)} (arrays over a bytearray are writable)."""
    view = memoryview(body)
    header = headers.get(HEADER_LENGTH)
    json_len = int(header) if header is not None else len(view)
    if not 0 <= json_len <= len(view):
        raise CodecError(f"Inference-Header-Content-Length {json_len} is outside the {len(view)}-byte body")
    try:
        doc = orjson.loads(view[:json_len])
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"the server's response is not v2 JSON: {exc}") from None
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        raise CodecError("the server's response has no 'outputs' list")
    offset = json_len
    result: dict[str, tuple[np.ndarray, dict]] = {}
    for entry in outputs:
        name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
        params = dict(entry.get("parameters") or {})
        size = params.pop("binary_data_size", None)
        if size is not None:
            array = array_from_buffer(view[offset: offset + size], datatype, shape, name)
            offset += size
        else:
            array = array_from_json(entry.get("data", []), datatype, shape, name)
        result[name] = (array, params)
    return result


def error_message(body: bytes, status: int) -> str:
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
    except orjson.JSONDecodeError:
        pass
    text = bytes(body[:2000]).decode("utf-8", "replace").strip()
    return text or f"HTTP {status} with an empty body"

