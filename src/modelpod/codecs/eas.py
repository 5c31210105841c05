"""PAI-EAS TensorFlow-processor protobuf bodies (what ``eas_prediction.TFRequest`` sends).

Outputs always carry ``dtype`` and ``array_shape``, and use only the types the SDK's
``TFResponse.get_values`` can read: uint8/uint16 go out as DT_INT32, float16/bfloat16 as DT_FLOAT,
uint32/uint64 as DT_INT64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from modelpod.codecs.datatypes import CodecError
from modelpod.protos import eas_predict_pb2 as pb
from modelpod.spec import TensorSpec, dtype_name

# DT code -> (numpy dtype or None for strings, ArrayProto field)
_DECODE: dict[int, tuple[np.dtype | None, str]] = {
    pb.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    pb.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    pb.DT_INT32: (np.dtype(np.int32), "int_val"),
    pb.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    pb.DT_INT16: (np.dtype(np.int16), "int_val"),
    pb.DT_INT8: (np.dtype(np.int8), "int_val"),
    pb.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    pb.DT_INT64: (np.dtype(np.int64), "int64_val"),
    pb.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    pb.DT_STRING: (None, "string_val"),
    pb.DT_HALF: (np.dtype(np.float16), "float_val"),
}

# spec dtype -> (DT code sent, numpy dtype of the values, field)
_ENCODE: dict[str, tuple[int, np.dtype | None, str]] = {
    "float32": (pb.DT_FLOAT, np.dtype(np.float32), "float_val"),
    "float16": (pb.DT_FLOAT, np.dtype(np.float32), "float_val"),
    "bfloat16": (pb.DT_FLOAT, np.dtype(np.float32), "float_val"),
    "float64": (pb.DT_DOUBLE, np.dtype(np.float64), "double_val"),
    "int8": (pb.DT_INT8, np.dtype(np.int32), "int_val"),
    "int16": (pb.DT_INT16, np.dtype(np.int32), "int_val"),
    "int32": (pb.DT_INT32, np.dtype(np.int32), "int_val"),
    "uint8": (pb.DT_INT32, np.dtype(np.int32), "int_val"),
    "uint16": (pb.DT_INT32, np.dtype(np.int32), "int_val"),
    "uint32": (pb.DT_INT64, np.dtype(np.int64), "int64_val"),
    "uint64": (pb.DT_INT64, np.dtype(np.int64), "int64_val"),
    "int64": (pb.DT_INT64, np.dtype(np.int64), "int64_val"),
    "bool": (pb.DT_BOOL, np.dtype(np.bool_), "bool_val"),
    "string": (pb.DT_STRING, None, "string_val"),
}

#: spec dtype -> the DT name the signature JSON shows
SPEC_TO_DT_NAME = {
    "float32": "DT_FLOAT", "float16": "DT_HALF", "bfloat16": "DT_BFLOAT16", "float64": "DT_DOUBLE",
    "int8": "DT_INT8", "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64",
    "uint8": "DT_UINT8", "uint16": "DT_UINT16", "uint32": "DT_UINT32", "uint64": "DT_UINT64",
    "bool": "DT_BOOL", "string": "DT_STRING",
}


@dataclass
class EasRequest:
    signature_name: str
    inputs: dict[str, np.ndarray]
    output_filter: list[str]


def decode_array(name: str, proto: Any) -> np.ndarray:
    """One ArrayProto -> numpy array, checking the element count against the shape."""
    entry = _DECODE.get(proto.dtype)
    if entry is None:
        dt = pb.ArrayDataType.Name(proto.dtype) if proto.dtype in pb.ArrayDataType.values() else proto.dtype
        raise CodecError(f"input '{name}': dtype {dt} is not supported on the EAS path")
    dtype, field = entry
    shape = list(proto.array_shape.dim)
    if any(d < 0 for d in shape):
        raise CodecError(f"input '{name}': array_shape {shape} has a negative dim")
    values = getattr(proto, field)
    count = math.prod(shape)  # exact: np.prod would wrap around for huge dims and match 0 values
    if len(values) != count:
        raise CodecError(
            f"input '{name}': array_shape {shape} needs {count} values but {field} has {len(values)}"
        )
    if dtype is None:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
    elif field == "int_val" and dtype != np.int32:
        raw = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise CodecError(f"input '{name}': values do not fit {dtype.name}")
        array = raw.astype(dtype)
    else:
        array = np.array(values, dtype=dtype)
    try:
        return array.reshape(shape)
    except ValueError as exc:  # a zero-size shape whose other dims are too big for numpy
        raise CodecError(f"input '{name}': array_shape {shape} cannot be allocated ({exc})") from None


def decode_predict_request(body: bytes) -> EasRequest:
    msg = pb.PredictRequest()
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        raise CodecError(f"the body is not a valid EAS PredictRequest protobuf ({exc})") from None
    inputs = {name: decode_array(name, proto) for name, proto in msg.inputs.items()}
    return EasRequest(msg.signature_name, inputs, list(msg.output_filter))


#: spec dtype -> (DT code, values dtype, field) for *requests*: the types the server decodes back
#: to the same dtype (uint32/uint64/bfloat16 have none)
_ENCODE_REQUEST: dict[str, tuple[int, np.dtype | None, str]] = {
    ("string" if dtype is None else dtype_name(np.empty(0, dtype))): (code, dtype, field)
    for code, (dtype, field) in _DECODE.items()
}


def _fill(proto: Any, array: np.ndarray, table: Mapping[str, tuple[int, np.dtype | None, str]]) -> None:
    """Write ``array`` into an ArrayProto: dtype, shape and the values field ``table`` picks."""
    name = dtype_name(array)
    if name not in table:
        raise CodecError(f"{name} tensors cannot travel in an EAS PredictRequest")
    code, values_dtype, field = table[name]
    proto.dtype = code
    proto.array_shape.dim.extend(array.shape)
    if values_dtype is None:
        getattr(proto, field).extend(v.encode() if isinstance(v, str) else bytes(v) for v in array.flat)
    else:
        getattr(proto, field).extend(array.astype(values_dtype, copy=False).ravel().tolist())


def encode_predict_response(outputs: Mapping[str, np.ndarray]) -> bytes:
    msg = pb.PredictResponse()
    for name, array in outputs.items():
        _fill(msg.outputs[name], array, _ENCODE)
    return msg.SerializeToString()


def encode_predict_request(inputs: Mapping[str, np.ndarray], signature_name: str = "serving_default",
                           output_filter: Sequence[str] = ()) -> bytes:
    """What ``eas_prediction.TFRequest`` sends, for the given inputs (used by ``modelpod bench``)."""
    msg = pb.PredictRequest(signature_name=signature_name, output_filter=list(output_filter))
    for name, array in inputs.items():
        _fill(msg.inputs[name], array, _ENCODE_REQUEST)
    return msg.SerializeToString()


def signature_json(signature_name: str, inputs: tuple[TensorSpec, ...],
                   outputs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    """What an EAS TF service returns for an empty request."""
    def row(s: TensorSpec) -> dict[str, Any]:
        return {"name": s.name, "shape": [d if isinstance(d, int) else -1 for d in s.shape],
                "type": SPEC_TO_DT_NAME[s.dtype]}

    return {"signature_name": signature_name, "inputs": [row(s) for s in inputs],
            "outputs": [row(s) for s in outputs]}
