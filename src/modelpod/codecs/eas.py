"""PAI-EAS TensorFlow-processor protobuf bodies (what ``eas_prediction.TFRequest`` sends).

Outputs always carry ``dtype`` and ``array_shape``, and use only the types the SDK's
``TFResponse.get_values`` can read: uint8/uint16 go out as DT_INT32, float16/bfloat16 as DT_FLOAT,
uint32/uint64 as DT_INT64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from modelpod.codecs import protowire
from modelpod.codecs.datatypes import element_count
from modelpod.errors import CodecError
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


# ArrayProto field name -> number; the values fields whose packed form is raw little-endian
# bytes (read and written in one piece) with their wire dtype
_FIELD_NUMBERS = {f.name: f.number for f in pb.ArrayProto.DESCRIPTOR.fields}
_INPUTS_FIELD = pb.PredictRequest.DESCRIPTOR.fields_by_name["inputs"].number
# a map entry is a message with the key as field 1 and the value as field 2 (protobuf's rule)
_MAP_KEY, _MAP_VALUE = 1, 2
_DIM_FIELD = pb.ArrayShape.DESCRIPTOR.fields_by_name["dim"].number
_WIRE_DTYPES = {"float_val": np.dtype("<f4"), "double_val": np.dtype("<f8")}
_PACKED_FIELDS = frozenset(_FIELD_NUMBERS[f] for f in _WIRE_DTYPES)
#: bodies from this size on have their packed float values read in place
_PACKED_MIN_BYTES = 16 << 10


@dataclass
class EasRequest:
    signature_name: str
    inputs: dict[str, np.ndarray]
    output_filter: list[str]


def decode_array(name: str, proto: Any, body: bytes | None = None,
                 packed: Mapping[int, tuple[int, int]] | None = None) -> np.ndarray:
    """One ArrayProto -> numpy array, checking the element count against the shape.

    ``packed`` (ArrayProto field number -> byte span in ``body``) lets float and double values
    come straight from the request bytes instead of one Python float at a time.
    """
    entry = _DECODE.get(proto.dtype)
    if entry is None:
        dt = pb.ArrayDataType.Name(proto.dtype) if proto.dtype in pb.ArrayDataType.values() else proto.dtype
        raise CodecError(f"input '{name}': dtype {dt} is not supported on the EAS path")
    dtype, field = entry
    shape = list(proto.array_shape.dim)
    values = getattr(proto, field)
    count = element_count(shape, name, "array_shape")  # exact: np.prod would wrap around for huge dims and match 0 values
    if len(values) != count:
        raise CodecError(
            f"input '{name}': array_shape {shape} needs {count} values but {field} has {len(values)}"
        )
    span = packed.get(_FIELD_NUMBERS[field]) if packed else None
    if span is not None and span[1] - span[0] == count * _WIRE_DTYPES[field].itemsize:
        array = np.frombuffer(body, _WIRE_DTYPES[field], count, span[0]).astype(dtype, copy=False)
    elif dtype is None:
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
    packed = _packed_spans(body) if len(body) >= _PACKED_MIN_BYTES else {}
    inputs = {name: decode_array(name, proto, body, packed.get(name)) for name, proto in msg.inputs.items()}
    return EasRequest(msg.signature_name, inputs, list(msg.output_filter))


def _packed_spans(body: bytes) -> dict[str, dict[int, tuple[int, int]]]:
    """Input name -> {3 (float_val) / 4 (double_val): byte span of its packed values} in a
    PredictRequest the protobuf library has already accepted; {} for anything unusual (a repeated
    map key, unpacked or split values), which then takes the library's values."""
    found: dict[str, dict[int, tuple[int, int]]] = {}
    try:
        for number, wire_type, start, end in protowire.fields(body):
            if number != _INPUTS_FIELD or wire_type != protowire.LEN:
                continue
            key, value = "", None
            for n, w, s, e in protowire.fields(body, start, end):
                if n == _MAP_KEY and w == protowire.LEN:
                    key = bytes(body[s:e]).decode()
                elif n == _MAP_VALUE and w == protowire.LEN:
                    value = (s, e)
            if key in found:
                return {}
            spans: dict[int, tuple[int, int]] = {}
            for n, w, s, e in protowire.fields(body, *value) if value else ():
                if n in _PACKED_FIELDS:
                    if w != protowire.LEN or n in spans:
                        return {}
                    spans[n] = (s, e)
            found[key] = spans
    except (protowire.WireError, UnicodeDecodeError):
        return {}
    return found


#: spec dtype -> (DT code, values dtype, field) for *requests*: the types the server decodes back
#: to the same dtype (uint32/uint64/bfloat16 have none)
_ENCODE_REQUEST: dict[str, tuple[int, np.dtype | None, str]] = {
    ("string" if dtype is None else dtype_name(np.empty(0, dtype))): (code, dtype, field)
    for code, (dtype, field) in _DECODE.items()
}


def _fill(proto: Any, array: np.ndarray, table: Mapping[str, tuple[int, np.dtype | None, str]]) -> None:
    """Write ``array`` into an ArrayProto: dtype, shape and the values field ``table`` picks."""
    code, values_dtype, field = _encoding(array, table)
    proto.dtype = code
    proto.array_shape.dim.extend(array.shape)
    if values_dtype is None:
        getattr(proto, field).extend(v.encode() if isinstance(v, str) else bytes(v) for v in array.flat)
    else:
        getattr(proto, field).extend(array.astype(values_dtype, copy=False).ravel().tolist())


def _encoding(array: np.ndarray, table: Mapping[str, tuple[int, np.dtype | None, str]]) -> tuple[int, np.dtype | None, str]:
    name = dtype_name(array)
    if name not in table:
        raise CodecError(f"{name} tensors cannot travel in an EAS PredictRequest")
    return table[name]


def _map_entries(message: Any, map_field: str, tensors: Mapping[str, np.ndarray],
                 table: Mapping[str, tuple[int, np.dtype | None, str]]) -> list[bytes | memoryview]:
    """The wire bytes of ``message``'s ``map<string, ArrayProto>`` field ``map_field`` holding
    ``tensors``. Float and double values are written in one piece (their packed form is the raw
    little-endian bytes); other types go through the protobuf library, one entry at a time."""
    field_number = message.DESCRIPTOR.fields_by_name[map_field].number
    parts: list[bytes | memoryview] = []
    for name, array in tensors.items():
        code, values_dtype, field = _encoding(array, table)
        if field not in _WIRE_DTYPES:
            one = message()
            _fill(getattr(one, map_field)[name], array, table)
            parts.append(one.SerializeToString())
            continue
        values = np.ascontiguousarray(array, dtype=_WIRE_DTYPES[field]).reshape(-1)
        dims = b"".join(protowire.varint(d) for d in array.shape)
        shape = b"".join(protowire.field_bytes(_DIM_FIELD, dims)) if dims else b""
        proto = b"".join([protowire.varint(_FIELD_NUMBERS["dtype"] << 3) + protowire.varint(code),
                          *protowire.field_bytes(_FIELD_NUMBERS["array_shape"], shape),
                          *protowire.field_bytes(_FIELD_NUMBERS[field], memoryview(values).cast("B"))])
        entry = b"".join([*protowire.field_bytes(_MAP_KEY, name.encode()), *protowire.field_bytes(_MAP_VALUE, proto)])
        parts.extend(protowire.field_bytes(field_number, entry))
    return parts


def encode_predict_response(outputs: Mapping[str, np.ndarray]) -> bytes:
    return b"".join(_map_entries(pb.PredictResponse, "outputs", outputs, _ENCODE))


def encode_predict_request(inputs: Mapping[str, np.ndarray], signature_name: str = "serving_default",
                           output_filter: Sequence[str] = ()) -> bytes:
    """What ``eas_prediction.TFRequest`` sends, for the given inputs (used by ``modelpod bench``)."""
    head = pb.PredictRequest(signature_name=signature_name, output_filter=list(output_filter)).SerializeToString()
    return b"".join([head, *_map_entries(pb.PredictRequest, "inputs", inputs, _ENCODE_REQUEST)])


def signature_json(signature_name: str, inputs: tuple[TensorSpec, ...],
                   outputs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    """What an EAS TF service returns for an empty request."""
    def row(s: TensorSpec) -> dict[str, Any]:
        return {"name": s.name, "shape": [d if isinstance(d, int) else -1 for d in s.shape],
                "type": SPEC_TO_DT_NAME[s.dtype]}

    return {"signature_name": signature_name, "inputs": [row(s) for s in inputs],
            "outputs": [row(s) for s in outputs]}
