"""The client's half of the KServe v2 wire: requests out, responses in (REST JSON/binary and gRPC).

The tensor encodings are the server's own (:mod:`modelpod.codecs.v2`,
:mod:`modelpod.codecs.datatypes`): one implementation of the binary layout, the BYTES length
prefixes and the datatype table serves both ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelpod.errors import CodecError
from modelpod.codecs.datatypes import v2_datatype
from modelpod.codecs.transport import grpc_params, set_grpc_params
from modelpod.codecs.v2 import HEADER_LENGTH, array_from_buffer, array_from_json, encode_bytes_tensor
from modelpod.protos import grpc_service_pb2 as pb

_NUMPY_OPT = orjson.OPT_SERIALIZE_NUMPY


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


# ---------------------------------------------------------------------------------------------
# REST


def model_path(model: str, version: str | None) -> str:
    from urllib.parse import quote

    path = f"/v2/models/{quote(model, safe='')}"
    return f"{path}/versions/{quote(str(version), safe='')}" if version not in (None, "") else path


def _blob(array: np.ndarray, datatype: str) -> bytes | memoryview:
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


def encode_rest_request(request: WireRequest, binary: bool) -> tuple[bytes, int | None]:
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
            blob = _blob(array, datatype)
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


def decode_rest_response(body: bytes | bytearray, headers: Mapping[str, str]) -> dict[str, tuple[np.ndarray, dict]]:
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


def rest_error_message(body: bytes, status: int) -> str:
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
    except orjson.JSONDecodeError:
        pass
    text = bytes(body[:2000]).decode("utf-8", "replace").strip()
    return text or f"HTTP {status} with an empty body"


# ---------------------------------------------------------------------------------------------
# gRPC


def encode_grpc_request(request: WireRequest) -> Any:
    msg = pb.ModelInferRequest(model_name=request.model, model_version=request.version or "")
    set_grpc_params(msg.parameters, request.parameters)
    for tensor in request.inputs:
        array = tensor.array
        datatype = v2_datatype(array)
        item = msg.inputs.add(name=tensor.name, datatype=datatype, shape=array.shape)
        set_grpc_params(item.parameters, tensor.parameters)
        msg.raw_input_contents.append(bytes(_blob(array, datatype)))
    for name, params in request.outputs or ():
        out = msg.outputs.add(name=name)
        set_grpc_params(out.parameters, params)
    return msg


def decode_grpc_response(msg: Any) -> dict[str, tuple[np.ndarray, dict]]:
    raw = msg.raw_output_contents
    result: dict[str, tuple[np.ndarray, dict]] = {}
    for i, tensor in enumerate(msg.outputs):
        if i >= len(raw):
            raise CodecError(f"output '{tensor.name}' has no raw_output_contents")
        buf = memoryview(bytearray(raw[i]))  # writable, like the arrays a local model returns
        result[tensor.name] = (array_from_buffer(buf, tensor.datatype, list(tensor.shape), tensor.name),
                               grpc_params(tensor.parameters))
    return result


def metadata_from_grpc(msg: Any, transport: Mapping[str, str] | None = None) -> dict[str, Any]:
    """ModelMetadataResponse -> the REST metadata JSON shape (one form for every flavour)."""

    def tensors(items: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": msg.name, "versions": list(msg.versions), "platform": msg.platform,
        "inputs": tensors(msg.inputs), "outputs": tensors(msg.outputs),
        "parameters": {"transport": dict(transport)} if transport else {},
    }
