"""KServe v2 gRPC messages <-> arrays, for both ends: the server decodes ``ModelInferRequest`` and
encodes ``ModelInferResponse``; the client does the reverse.

Inputs arrive as ``raw_input_contents`` (what tritonclient sends) or typed ``contents``; every
output goes back in ``raw_output_contents``, in the order of ``outputs`` (tritonclient matches by
position and reads only raw data). Tensor parameters (compact transport labels) travel in
``map<string, InferParameter>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelpod.codecs.datatypes import element_count, v2_datatype, v2_numpy_dtype
from modelpod.codecs.v2 import (
    SHM_KEYS,
    SharedReader,
    WireRequest,
    array_from_buffer,
    encode_bytes_tensor,
    tensor_blob,
)
from modelpod.errors import CodecError
from modelpod.protos import grpc_service_pb2 as pb


def set_grpc_params(target: Any, params: Mapping[str, Any]) -> None:
    """Fill a proto ``map<string, InferParameter>`` from Python scalars."""
    for key, value in params.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def grpc_params(source: Any) -> dict[str, Any]:
    out = {}
    for key, param in source.items():
        kind = param.WhichOneof("parameter_choice")
        if kind:
            out[key] = getattr(param, kind)
    return out


_CONTENT_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def param_value(param: Any) -> Any:
    kind = param.WhichOneof("parameter_choice")
    return getattr(param, kind) if kind else None


def _shared_inputs(inputs: Any) -> set[int]:
    """Positions of the inputs whose parameters name a shared memory region."""
    return {i for i, tensor in enumerate(inputs)
            if len(tensor.parameters) and any(key in tensor.parameters for key in SHM_KEYS)}


def decode_infer_request(request: Any, read_shared: SharedReader | None = None) -> dict[str, np.ndarray]:
    """ModelInferRequest -> dict of arrays (CodecError naming the tensor on any mismatch).

    Inputs whose parameters name a shared memory region are read by ``read_shared`` and have no
    ``raw_input_contents`` entry (the others keep theirs, in order), as tritonclient sends them.
    """
    raw = request.raw_input_contents
    shared = _shared_inputs(request.inputs) if any(len(t.parameters) for t in request.inputs) else ()
    if raw:  # Triton's words (clients match on them) for typed contents beside raw ones
        for i, tensor in enumerate(request.inputs):
            if i not in shared and tensor.HasField("contents"):
                raise CodecError(f"contents field must not be specified when using raw_input_contents for "
                                 f"'{tensor.name}' for model '{request.model_name}'")
    if raw and len(raw) != len(request.inputs) - len(shared):
        raise CodecError(f"{len(raw)} raw_input_contents for {len(request.inputs) - len(shared)} inputs"
                         f"{' not in shared memory' if shared else ''}; send one per input")
    arrays: dict[str, np.ndarray] = {}
    next_raw = 0
    for i, tensor in enumerate(request.inputs):
        name, shape = tensor.name, list(tensor.shape)
        if name in arrays:
            raise CodecError(f"input '{name}' appears twice")
        if i in shared:
            if tensor.HasField("contents"):
                raise CodecError(f"input '{name}': set either contents or parameters.shared_memory_region, not both")
            if read_shared is None:
                raise CodecError(f"input '{name}': this server reads no inputs from shared memory")
            arrays[name] = read_shared(name, tensor.datatype, shape, grpc_params(tensor.parameters))
            continue
        if raw:
            arrays[name] = array_from_buffer(memoryview(raw[next_raw]), tensor.datatype, shape, name)
            next_raw += 1
            continue
        dtype = v2_numpy_dtype(tensor.datatype, name)
        field = _CONTENT_FIELDS.get(tensor.datatype)
        if field is None:
            raise CodecError(f"input '{name}': {tensor.datatype} must be sent in raw_input_contents")
        values = getattr(tensor.contents, field)
        count = element_count(shape, name)
        if len(values) != count:
            raise CodecError(f"input '{name}': shape {shape} needs {count} values, contents has {len(values)}")
        if dtype is None:
            array = np.empty(count, dtype=object)
            array[:] = list(values)
        else:
            try:  # INT8/16 and UINT8/16 travel in 32-bit fields: a value may not fit
                array = np.array(values, dtype=dtype)
            except (OverflowError, ValueError):
                info = np.iinfo(dtype)
                raise CodecError(f"input '{name}': a value in contents.{field} is out of range for "
                                 f"{tensor.datatype} [{info.min}, {info.max}]") from None
        arrays[name] = array.reshape(shape)
    return arrays


def encode_infer_response(name: str, version: str, request_id: str, outputs: dict[str, np.ndarray],
                          parameters: dict[str, dict[str, Any]] | None = None,
                          shared_memory: Mapping[str, dict[str, Any]] | None = None) -> Any:
    """Outputs named in ``shared_memory`` were written to a region: they carry its parameters and an
    empty ``raw_output_contents`` entry (which keeps the others' positions, as Triton does)."""
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id)
    for out_name, array in outputs.items():
        datatype = v2_datatype(array)
        tensor = response.outputs.add(name=out_name, datatype=datatype, shape=array.shape)
        if parameters and out_name in parameters:
            set_grpc_params(tensor.parameters, parameters[out_name])
        if shared_memory and out_name in shared_memory:
            set_grpc_params(tensor.parameters, shared_memory[out_name])
            response.raw_output_contents.append(b"")
        elif datatype == "BYTES":
            response.raw_output_contents.append(encode_bytes_tensor(array))
        else:
            response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
    return response


# ---------------------------------------------------------------------------------------------
# the client's half


def encode_infer_request(request: WireRequest) -> Any:
    msg = pb.ModelInferRequest(model_name=request.model, model_version=request.version or "")
    set_grpc_params(msg.parameters, request.parameters)
    for tensor in request.inputs:
        array = tensor.array
        datatype = v2_datatype(array)
        item = msg.inputs.add(name=tensor.name, datatype=datatype, shape=array.shape)
        set_grpc_params(item.parameters, tensor.parameters)
        msg.raw_input_contents.append(bytes(tensor_blob(array, datatype)))
    for name, params in request.outputs or ():
        out = msg.outputs.add(name=name)
        set_grpc_params(out.parameters, params)
    return msg


def decode_infer_response(msg: Any) -> dict[str, tuple[np.ndarray, dict]]:
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

