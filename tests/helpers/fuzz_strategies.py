"""Hypothesis strategies and measuring helpers for ``tests/test_fuzz_decoders.py``.

The strategies build bodies that are *almost* right (a valid tensor, then a few mutations), so
the fuzzer reaches the deep checks of each decoder instead of stopping at "malformed JSON".

:func:`measure` runs one decoder call with tracemalloc on (so the tests can bound what the call
allocated) and under an address-space cap (so a decoder that tries to allocate gigabytes fails at
once with MemoryError instead of filling the machine or taking seconds per example).
"""

from __future__ import annotations

import json
import math
import os
import resource
import struct
import sys
import tracemalloc
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
from hypothesis import strategies as st

from modelpod.codecs import protowire
from modelpod.codecs.v2_grpc import set_grpc_params
from modelpod.protos import eas_predict_pb2 as eas_pb
from modelpod.protos import grpc_service_pb2 as grpc_pb

KiB = 1 << 10
MiB = 1 << 20

# ---------------------------------------------------------------------------------------------
# measuring one call

#: address space a measured call may add before allocations fail with MemoryError
ADDRESS_SPACE_HEADROOM = 1 << 30


_STATM: list[int] = []


def _vm_size() -> int | None:
    """The process's address-space size in bytes (Linux: /proc/self/statm, read in place)."""
    try:
        if not _STATM:
            _STATM.append(os.open("/proc/self/statm", os.O_RDONLY))
        return int(os.pread(_STATM[0], 64, 0).split()[0]) * _PAGE
    except OSError:
        return None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@contextmanager
def tracing() -> Iterator[None]:
    """Keep tracemalloc on across many :func:`measure` calls (each then measures from its own start)."""
    if tracemalloc.is_tracing():
        yield
        return
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


@contextmanager
def address_space_cap(headroom: int = ADDRESS_SPACE_HEADROOM) -> Iterator[None]:
    """Cap RLIMIT_AS at the current size + ``headroom`` (Linux only; a no-op elsewhere)."""
    vm = _vm_size() if sys.platform.startswith("linux") else None
    if vm is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclass
class Outcome:
    value: Any
    error: BaseException | None
    #: peak bytes traced by tracemalloc during the call (0 when not traced)
    peak: int


def measure(fn: Callable[..., Any], *args: Any, trace: bool = True) -> Outcome:
    """Call ``fn(*args)`` under the address-space cap (and tracemalloc when ``trace``)."""
    started = False
    if trace:
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        else:
            tracemalloc.start()
            started, base = True, 0
    try:
        with address_space_cap():
            try:
                value, error = fn(*args), None
            except Exception as exc:  # noqa: BLE001 - the tests judge what was raised
                value, error = None, exc
        peak = tracemalloc.get_traced_memory()[1] - base if trace else 0
    finally:
        if started:
            tracemalloc.stop()
    return Outcome(value, error, peak)


def describe(error: BaseException | None) -> str:
    if error is None:
        return "no exception"
    text = str(error)
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(error).__module__}.{type(error).__name__}: {text}"


# ---------------------------------------------------------------------------------------------
# shared atoms

V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "BF16", "FP32", "FP64", "BYTES")
ITEMSIZE = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2,
            "INT32": 4, "INT64": 8, "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8}
BAD_DATATYPES = ("", "fp32", "FP8", "INT128", "STRING", "FP32 ", "BYTES\x00", "TYPE_FP32", "bool")

#: dims that break naive shape arithmetic: negatives, int32/int64/uint64 edges, big products
HOSTILE_DIMS = (0, 1, 2, 3, -1, -2, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**62, 2**63 - 1,
                2**63, 2**64 - 1, 2**64, -(2**63), 300_000_000, 10**9, 10**12, 1 << 40)
HOSTILE_SHAPES = ([0, 2**63], [2**32, 2**32], [300_000_000], [2**63], [2**62, 4], [2**31, 2**31, 4],
                  [0, 2**40, 2**40], [-1], [0, -1], [-1, -1], [2**64], [-(2**63)], [10**12, 0],
                  [True, 2], [2.0], [1.5], [None], ["2"], [[2]], [2**32, 2**32, 0])

datatypes = st.sampled_from(V2_DATATYPES)
any_datatype = st.one_of(datatypes, datatypes, datatypes, st.sampled_from(BAD_DATATYPES),
                         st.text(max_size=6))
small_shapes = st.lists(st.integers(0, 4), max_size=3)
hostile_dims = st.one_of(st.sampled_from(HOSTILE_DIMS), st.integers(-5, 8), st.integers(-2**66, 2**66))
hostile_shapes = st.one_of(st.sampled_from(HOSTILE_SHAPES), st.lists(hostile_dims, max_size=4))

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    finite_floats, st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
#: shapes as a JSON value: mostly lists of ints, sometimes anything at all
json_shapes = st.one_of(small_shapes, small_shapes, hostile_shapes, json_values)


def rarely(draw: Any, one_in: int = 6) -> bool:
    """True about once in ``one_in`` draws: one lie at a time keeps the rest of the body sound."""
    return draw(st.integers(0, one_in - 1)) == 0


def fresh_name(draw: Any, names: st.SearchStrategy[Any], used: set[Any]) -> Any:
    """A name from ``names``, made unique against ``used`` except now and then (a duplicate)."""
    name = draw(names)
    if isinstance(name, str) and name in used and not rarely(draw, 8):
        name = f"{name}{len(used)}"
    if isinstance(name, str):
        used.add(name)
    return name


def prod(shape: list[int]) -> int:
    return math.prod(shape)


def dumps(doc: Any) -> bytes:
    """JSON the way a client might write it (Python ints of any size, NaN/Infinity allowed)."""
    return json.dumps(doc, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# element values per datatype

_NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
          "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def element_values(datatype: str) -> st.SearchStrategy[Any]:
    """JSON-able element values that fit ``datatype``."""
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "BYTES":
        return st.text(max_size=6)
    if datatype in ("FP16", "BF16"):
        return st.floats(width=16, allow_nan=False, allow_infinity=False)
    if datatype == "FP32":
        return st.floats(width=32, allow_nan=False, allow_infinity=False)
    if datatype == "FP64":
        return finite_floats
    if datatype in _NUMPY:
        info = np.iinfo(_NUMPY[datatype])
        return st.integers(int(info.min), int(info.max))
    return json_scalars


@st.composite
def bytes_elements_blob(draw: Any, count: int | None = None) -> bytes:
    """A BYTES tensor in the binary extension (4-byte LE length, bytes), with occasional lies."""
    n = count if count is not None and 0 <= count <= 16 else draw(st.integers(0, 6))
    out = bytearray()
    for _ in range(n):
        raw = draw(st.binary(max_size=8))
        claim = draw(st.one_of(
            st.just(len(raw)), st.just(len(raw)), st.just(len(raw)),
            st.integers(0, 16), st.sampled_from([0xFFFFFFFF, 2**31, 2**31 - 1, len(raw) + 1])))
        out += struct.pack("<I", claim) + raw
    tail = draw(st.sampled_from(["none", "none", "none", "cut", "stray", "half-prefix"]))
    if tail == "cut" and out:
        out = out[: draw(st.integers(0, len(out) - 1))]
    elif tail == "stray":
        out += draw(st.binary(min_size=1, max_size=5))
    elif tail == "half-prefix":
        out += b"\x05\x00"
    return bytes(out)


@st.composite
def tensor_blob(draw: Any, datatype: Any, shape: Any) -> bytes:
    """Raw bytes for a binary tensor: right-sized, off by a few bytes, or random."""
    kind = "right" if not rarely(draw, 5) else draw(st.sampled_from(["off", "random"]))
    if datatype == "BYTES":
        count = prod(shape) if _is_int_list(shape) else None
        return draw(bytes_elements_blob(count))
    size = None
    if isinstance(datatype, str) and datatype in ITEMSIZE and _is_int_list(shape):
        count = prod(shape)
        if 0 <= count * ITEMSIZE[datatype] <= 512:
            size = count * ITEMSIZE[datatype]
    if kind == "random" or size is None:
        return draw(st.binary(max_size=64))
    if kind == "off":
        size = max(0, size + draw(st.sampled_from([-3, -1, 1, 2, 7])))
    if datatype in _NUMPY or datatype == "BF16":
        return draw(st.binary(min_size=size, max_size=size))
    return bytes(size)


def _is_int_list(shape: Any) -> bool:
    return isinstance(shape, list) and all(type(d) is int for d in shape)


# ---------------------------------------------------------------------------------------------
# KServe v2 JSON / binary bodies

TRANSPORT_PARAMS = st.one_of(
    st.fixed_dictionaries({"modelpod_transport": st.sampled_from(["int8", "uint8", "float16"])},
                          optional={"scale": st.one_of(finite_floats, st.text(max_size=6), json_scalars),
                                    "zero_point": st.one_of(finite_floats, st.text(max_size=6), json_scalars),
                                    "axis": json_scalars}),
    st.fixed_dictionaries({"modelpod_transport": st.sampled_from(["int8", "uint8"]),
                           "axis": st.one_of(st.integers(-3, 3), st.sampled_from([2**63, 1e300, "0", True])),
                           "scale": st.sampled_from(["[0.5]", "[0.5, 0.25]", "[]", "[[1]]", "{}", "nope",
                                                     "[\"a\"]", "1e999", "[" * 5000 + "]" * 5000]),
                           "zero_point": st.sampled_from(["[0.0]", "[0, 1]", "[]", "[null]", "0"])}),
    st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
)


@st.composite
def json_tensor(draw: Any, name: Any, datatype: str | None = None, shape: list[int] | None = None,
                mutations: st.SearchStrategy[int] = st.sampled_from([0, 0, 1, 1, 1, 2, 3])) -> dict[str, Any]:
    """A valid JSON input tensor (of ``datatype`` and ``shape`` when given), then a few mutations."""
    datatype = draw(datatypes) if datatype is None else datatype
    shape = draw(small_shapes) if shape is None else shape
    count = prod(shape)
    data: Any = draw(st.lists(element_values(datatype), min_size=count, max_size=count))
    if shape and count and draw(st.booleans()):  # nested, row-major
        data = np.array(data, dtype=object).reshape(shape).tolist()
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    for _ in range(draw(mutations)):
        mutation = draw(st.sampled_from(["shape", "shape", "shape", "datatype", "datatype", "element",
                                         "element", "data", "ragged", "params", "params", "size",
                                         "name", "drop"]))
        if mutation == "shape":
            tensor["shape"] = draw(json_shapes)
        elif mutation == "datatype":
            tensor["datatype"] = draw(st.one_of(any_datatype, json_values))
        elif mutation == "element" and isinstance(tensor.get("data"), list) and tensor["data"]:
            flat = tensor["data"]
            flat[draw(st.integers(0, len(flat) - 1))] = draw(json_values)
        elif mutation == "data":
            tensor["data"] = draw(json_values)
        elif mutation == "ragged":
            tensor["data"] = [tensor.get("data"), [draw(json_scalars)], []]
        elif mutation == "name":
            tensor["name"] = draw(st.one_of(st.just(""), json_values))
        elif mutation == "params":
            tensor["parameters"] = draw(st.one_of(TRANSPORT_PARAMS, json_values))
        elif mutation == "drop":
            tensor.pop(draw(st.sampled_from(["name", "datatype", "shape", "data"])), None)
        elif mutation == "size":  # says binary, but the body has no binary part
            tensor["parameters"] = {"binary_data_size": draw(st.one_of(st.integers(-2, 16), json_scalars))}
    return tensor


input_names = st.one_of(st.sampled_from(["x", "y", "s", "in"]), st.text(min_size=1, max_size=4))
#: few mutations: most requests built for a served model reach the model
model_mutations = st.sampled_from([0, 0, 0, 0, 1, 1, 2])


@st.composite
def model_inputs(draw: Any, model: str) -> list[tuple[str, str, list[int]]]:
    """(name, datatype, shape) of a well-formed request for one of the test models."""
    if model == "echo_string":  # x: string ("rows", "cols")
        return [("x", "BYTES", [draw(st.integers(0, 3)), draw(st.integers(0, 3))])]
    n = draw(st.integers(0, 4))  # addition / adder: x, y float32 ("num_inputs",)
    pair = [("x", "FP32", [n]), ("y", "FP32", [n])]
    return pair if draw(st.booleans()) else pair[::-1]


@st.composite
def json_request_doc(draw: Any, names: st.SearchStrategy[Any] = input_names, model: str | None = None) -> Any:
    """A v2 infer request document (valid shape of the document, with mutations); for ``model``,
    a well-formed request for that test model, then a few mutations."""
    used: set[Any] = set()
    if model is not None:
        inputs = [draw(json_tensor(n, d, s, model_mutations)) for n, d, s in draw(model_inputs(model))]
        if rarely(draw, 12):
            inputs.append(draw(json_tensor(draw(names))))
    else:
        inputs = [draw(json_tensor(fresh_name(draw, names, used))) for _ in range(draw(st.integers(1, 3)))]
    doc: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        doc["id"] = draw(json_values)
    if rarely(draw, 4 if model else 2):
        doc["parameters"] = draw(st.one_of(
            st.fixed_dictionaries({}, optional={"binary_data_output": json_scalars, "timeout": json_scalars}),
            json_values))
    if rarely(draw, 4 if model else 2):
        doc["outputs"] = draw(st.one_of(
            st.lists(st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["out", "y", "zz"]), json_values)},
                                           optional={"parameters": st.one_of(TRANSPORT_PARAMS, json_values)}),
                     max_size=3),
            json_values))
    top = draw(st.sampled_from(["keep"] * 12 + ["inputs-empty", "inputs-scalar", "not-object", "extra"]))
    if top == "inputs-empty":
        doc["inputs"] = []
    elif top == "inputs-scalar":
        doc["inputs"] = draw(json_values)
    elif top == "not-object":
        return draw(json_values)
    elif top == "extra":
        doc[draw(st.text(max_size=5))] = draw(json_values)
    return doc


@st.composite
def binary_request(draw: Any, names: st.SearchStrategy[Any] = input_names,
                   model: str | None = None) -> tuple[bytes, int | None]:
    """(body, Inference-Header-Content-Length) with binary tensors whose sizes may lie; for
    ``model``, a well-formed request for that test model with the occasional lie."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    used: set[Any] = set()
    if model is not None:
        planned: list[tuple[Any, str | None, list[int] | None]] = list(draw(model_inputs(model)))
    else:
        planned = [(fresh_name(draw, names, used), None, None) for _ in range(draw(st.integers(1, 3)))]
    for name, datatype, shape in planned:
        if rarely(draw, 5):
            entries.append(draw(json_tensor(name, datatype, shape, model_mutations if model else
                                            st.sampled_from([0, 0, 1, 1, 1, 2, 3]))))
            continue
        if datatype is None or rarely(draw, 10):
            datatype = draw(any_datatype) if rarely(draw) else draw(datatypes)
        if shape is None or rarely(draw, 10):
            shape = draw(hostile_shapes) if rarely(draw, 4) else draw(small_shapes)
        if (datatype == "BYTES" and model is not None and _is_int_list(shape) and 0 <= prod(shape) <= 16
                and not rarely(draw)):
            items = draw(st.lists(st.binary(max_size=5), min_size=prod(shape), max_size=prod(shape)))
            blob = b"".join(struct.pack("<I", len(v)) + v for v in items)
        else:
            blob = draw(tensor_blob(datatype, shape))
        size: Any = len(blob)
        if rarely(draw):
            size = draw(st.one_of(st.integers(-3, 3).map(lambda d, n=len(blob): n + d),
                                  st.sampled_from([-1, 2**31, 2**32, 2**63, 2**64, True, 1.0, "4", None])))
        params: dict[str, Any] = {"binary_data_size": size}
        if rarely(draw, 5):
            params.update(draw(TRANSPORT_PARAMS))
        entries.append({"name": name, "datatype": datatype, "shape": shape, "parameters": params})
        blobs.append(blob)
    doc: dict[str, Any] = {"inputs": entries}
    if draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": draw(st.booleans())}
    header = dumps(doc)
    binary = b"".join(blobs)
    if rarely(draw, 8):
        binary += draw(st.binary(min_size=1, max_size=8))
    body = header + binary
    header_length: int | None = len(header)
    if rarely(draw):
        header_length = draw(st.one_of(
            st.integers(-3, 3).map(lambda d: len(header) + d),
            st.sampled_from([None, 0, -1, len(body), len(body) + 1, 2**31, 2**63, -(2**63)])))
    return body, header_length


@st.composite
def valid_v2_body(draw: Any) -> tuple[bytes, int | None]:
    """A well-formed v2 body (JSON, or binary with the right sizes) to truncate."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    binary = draw(st.booleans())
    for i in range(draw(st.integers(1, 2))):
        datatype = draw(datatypes)
        shape = draw(st.lists(st.integers(1, 2), max_size=2))
        count = prod(shape)
        if binary or datatype == "BF16":
            if datatype == "BYTES":
                items = draw(st.lists(st.binary(max_size=5), min_size=count, max_size=count))
                blob = b"".join(struct.pack("<I", len(v)) + v for v in items)
            else:
                blob = draw(st.binary(min_size=count * ITEMSIZE[datatype], max_size=count * ITEMSIZE[datatype]))
            entries.append({"name": f"t{i}", "datatype": datatype, "shape": shape,
                            "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        else:
            data = draw(st.lists(element_values(datatype), min_size=count, max_size=count))
            entries.append({"name": f"t{i}", "datatype": datatype, "shape": shape, "data": data})
    header = dumps({"inputs": entries})
    return header + b"".join(blobs), (len(header) if blobs else None)


# ---------------------------------------------------------------------------------------------
# KServe v2 gRPC

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
GRPC_HOSTILE_SHAPES = ([2**32, 2**32], [2**62, 4], [2**31, 2**31, 4], [-1], [-1, -1], [3, -1], [0, 2**62],
                       [2**63 - 1, 2**63 - 1], [300_000_000], [-(2**63)], [0, -1], [10**12, 0])
grpc_dims = st.one_of(st.sampled_from([d for d in HOSTILE_DIMS if INT64_MIN <= d <= INT64_MAX]),
                      st.integers(-3, 6), st.integers(INT64_MIN, INT64_MAX))
grpc_shapes = st.one_of(small_shapes, small_shapes, st.sampled_from(GRPC_HOSTILE_SHAPES),
                        st.lists(grpc_dims, max_size=4))

CONTENT_FIELDS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(INT64_MIN, INT64_MAX),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=6),
}
RIGHT_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
               "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
               "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
               "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}

grpc_params = st.dictionaries(
    st.sampled_from(["modelpod_transport", "scale", "zero_point", "axis", "binary_data_size", "x"]),
    st.one_of(st.booleans(), st.integers(INT64_MIN, INT64_MAX), st.text(max_size=6), st.floats(),
              st.sampled_from(["int8", "uint8", "float16", "[0.5]", "[" * 3000 + "]" * 3000])),
    max_size=3)


def set_param(target: Any, key: str, value: Any) -> None:
    """One InferParameter, the way modelpod's clients write them."""
    set_grpc_params(target, {key: value})


@st.composite
def grpc_infer_request(draw: Any, names: st.SearchStrategy[Any] = input_names,
                       model: st.SearchStrategy[str] = st.text(max_size=4)) -> Any:
    """A ModelInferRequest whose shapes, raw contents and typed contents may disagree."""
    request = grpc_pb.ModelInferRequest(model_name=draw(model), id=draw(st.text(max_size=4)))
    raw = draw(st.booleans())
    used: set[Any] = set()
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3]))):
        sound = draw(st.integers(0, 2)) > 0  # a consistent tensor (its values may still not fit)
        if sound:
            datatype = draw(datatypes if raw else st.sampled_from(sorted(RIGHT_FIELD)))
            shape = draw(small_shapes)
        else:
            datatype = draw(any_datatype)
            shape = draw(grpc_shapes)
        tensor = request.inputs.add(name=fresh_name(draw, names, used), datatype=datatype, shape=shape)
        if draw(st.integers(0, 4)) == 0:
            for key, value in draw(grpc_params).items():
                set_param(tensor.parameters, key, value)
        if raw:
            request.raw_input_contents.append(draw(tensor_blob(datatype, list(shape))))
            continue
        field = RIGHT_FIELD.get(datatype) if sound or draw(st.integers(0, 3)) else None
        if field is None:
            field = draw(st.sampled_from(sorted(CONTENT_FIELDS)))
        count = prod(shape) if shape else 1
        length = count if 0 <= count <= 32 and (sound or draw(st.integers(0, 3))) else draw(st.integers(0, 6))
        getattr(tensor.contents, field).extend(
            draw(st.lists(CONTENT_FIELDS[field], min_size=length, max_size=length)))
    if raw and rarely(draw, 8):
        if request.raw_input_contents and draw(st.booleans()):
            del request.raw_input_contents[-1]
        else:
            request.raw_input_contents.append(draw(st.binary(max_size=8)))
    if draw(st.integers(0, 3)) == 0:
        for _ in range(draw(st.integers(1, 2))):
            out = request.outputs.add(name=draw(st.sampled_from(["out", "y", "zz", ""])))
            for key, value in draw(grpc_params).items():
                set_param(out.parameters, key, value)
    if draw(st.integers(0, 4)) == 0:
        set_param(request.parameters, "timeout", draw(st.one_of(st.integers(INT64_MIN, INT64_MAX), st.floats())))
    return request


@st.composite
def mutated_bytes(draw: Any, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` with a few bytes flipped, cut or inserted (reaches past the first parse error)."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif op == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


# ---------------------------------------------------------------------------------------------
# PAI-EAS PredictRequest

EAS_FIELD = {eas_pb.DT_FLOAT: "float_val", eas_pb.DT_DOUBLE: "double_val", eas_pb.DT_INT32: "int_val",
             eas_pb.DT_UINT8: "int_val", eas_pb.DT_INT16: "int_val", eas_pb.DT_INT8: "int_val",
             eas_pb.DT_UINT16: "int_val", eas_pb.DT_INT64: "int64_val", eas_pb.DT_BOOL: "bool_val",
             eas_pb.DT_STRING: "string_val", eas_pb.DT_HALF: "float_val"}
EAS_VALUES = {
    "float_val": st.floats(width=32), "double_val": st.floats(),
    "int_val": st.integers(-(2**31), 2**31 - 1), "int64_val": st.integers(INT64_MIN, INT64_MAX),
    "bool_val": st.booleans(), "string_val": st.binary(max_size=6),
}
eas_dtypes = st.one_of(st.sampled_from(sorted(EAS_FIELD)), st.sampled_from(sorted(eas_pb.ArrayDataType.values())),
                       st.integers(-(2**31), 2**31 - 1))
EAS_HOSTILE_SHAPES = ([2**62, 4], [2**32, 2**32], [0, 2**62], [0, 2**63 - 1], [-1], [3, -1], [2**63 - 1],
                      [300_000_000], [-(2**63)], [10**12, 0], [0, 2**40, 2**40])
eas_shapes = st.one_of(small_shapes, small_shapes, st.sampled_from(EAS_HOSTILE_SHAPES),
                       st.lists(grpc_dims, max_size=4))


@st.composite
def eas_request(draw: Any, names: st.SearchStrategy[str] = st.sampled_from(["x", "y", "s", ""]),
                big: bool = True) -> bytes:
    """A serialized PredictRequest: dtypes, dims and values that may disagree (sometimes >= 16 KiB,
    which takes the codec's in-place float path)."""
    msg = eas_pb.PredictRequest(signature_name=draw(st.sampled_from(["", "serving_default", "nope"])),
                                output_filter=draw(st.lists(st.sampled_from(["out", "y", "zz"]), max_size=2)))
    used: set[Any] = set()
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 2, 3]))):
        proto = msg.inputs[fresh_name(draw, names, used)]
        sound = not rarely(draw, 3)
        proto.dtype = draw(st.sampled_from(sorted(EAS_FIELD))) if sound else draw(eas_dtypes)
        shape = draw(small_shapes) if sound else draw(eas_shapes)
        proto.array_shape.dim.extend(shape)
        field = EAS_FIELD.get(proto.dtype) if sound or draw(st.integers(0, 3)) else None
        if field is None:
            field = draw(st.sampled_from(sorted(EAS_VALUES)))
        count = prod(shape)
        length = count if 0 <= count <= 32 and (sound or draw(st.integers(0, 3))) else draw(st.integers(0, 6))
        getattr(proto, field).extend(draw(st.lists(EAS_VALUES[field], min_size=length, max_size=length)))
        if big and field in ("float_val", "double_val") and draw(st.integers(0, 3)) == 0:
            big = False  # one large tensor per message keeps the body under 64 KiB
            n = draw(st.integers(4096, 6000))
            getattr(proto, field).extend(np.linspace(-1, 1, n).tolist())
            if draw(st.booleans()):
                del proto.array_shape.dim[:]
                proto.array_shape.dim.append(len(getattr(proto, field)) + draw(st.sampled_from([0, 0, -1, 1])))
    return msg.SerializeToString()


@st.composite
def eas_model_request(draw: Any, model: str) -> bytes:
    """A well-formed PredictRequest for one of the test models, then a few mutations."""
    msg = eas_pb.PredictRequest(signature_name=draw(st.sampled_from(["", "", "serving_default"])))
    for name, datatype, shape in draw(model_inputs(model)):
        proto = msg.inputs[name]
        proto.dtype = eas_pb.DT_STRING if datatype == "BYTES" else eas_pb.DT_FLOAT
        proto.array_shape.dim.extend(shape)
        field = EAS_FIELD[proto.dtype]
        count = prod(shape)
        getattr(proto, field).extend(draw(st.lists(EAS_VALUES[field], min_size=count, max_size=count)))
    for _ in range(draw(model_mutations)):
        mutation = draw(st.sampled_from(["dtype", "dims", "values", "field", "extra", "filter", "signature"]))
        proto = msg.inputs[draw(st.sampled_from(sorted(msg.inputs)))] if msg.inputs else None
        if mutation == "dtype" and proto is not None:
            proto.dtype = draw(eas_dtypes)
        elif mutation == "dims" and proto is not None:
            del proto.array_shape.dim[:]
            proto.array_shape.dim.extend(draw(eas_shapes))
        elif mutation == "values" and proto is not None:
            values = getattr(proto, EAS_FIELD.get(proto.dtype, "float_val"))
            if values and draw(st.booleans()):
                del values[-1]
            else:
                values.extend(draw(st.lists(EAS_VALUES[EAS_FIELD.get(proto.dtype, "float_val")], min_size=1, max_size=3)))
        elif mutation == "field" and proto is not None:
            field = draw(st.sampled_from(sorted(EAS_VALUES)))
            getattr(proto, field).extend(draw(st.lists(EAS_VALUES[field], max_size=3)))
        elif mutation == "extra":
            extra = msg.inputs[draw(st.sampled_from(["z", "s", ""]))]
            extra.dtype = draw(eas_dtypes)
            extra.float_val.extend([1.0])
        elif mutation == "filter":
            msg.output_filter.extend(draw(st.lists(st.sampled_from(["out", "y", "zz", ""]), min_size=1, max_size=2)))
        elif mutation == "signature":
            msg.signature_name = draw(st.one_of(st.sampled_from(["nope", "predict"]), st.text(max_size=4)))
    return msg.SerializeToString()


def _varint_field(number: int, value: int) -> bytes:
    return protowire.varint(number << 3) + protowire.varint(value & ((1 << 64) - 1))


def _len_field(number: int, payload: bytes) -> bytes:
    return b"".join(bytes(p) for p in protowire.field_bytes(number, payload))


@st.composite
def eas_wire_request(draw: Any) -> bytes:
    """A PredictRequest written by hand: >= 16 KiB (the in-place path), packed float values split
    in pieces, unpacked values, repeated value sub-messages and repeated map keys, which the
    protobuf library merges and the codec's wire scanner must either match or give up on."""
    parts = [_len_field(1, b"s" * draw(st.sampled_from([16 * KiB, 20 * KiB])))]  # signature_name padding
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([b"x", b"y", b""]))
        dtype = draw(st.sampled_from([eas_pb.DT_FLOAT, eas_pb.DT_HALF, eas_pb.DT_DOUBLE, eas_pb.DT_INT32]))
        field = draw(st.sampled_from([3, 3, 4]))
        itemsize = 4 if field == 3 else 8
        count = draw(st.sampled_from([0, 1, 7, 64, 300]))
        values = np.linspace(-3, 3, count).astype("<f4" if field == 3 else "<f8").tobytes()
        cuts = sorted(draw(st.lists(st.integers(0, count), max_size=2)))
        pieces = [values[a * itemsize:b * itemsize] for a, b in zip([0, *cuts], [*cuts, count])]
        body = b""
        for piece in pieces:
            if draw(st.integers(0, 5)) == 0:  # unpacked: one I32/I64 field per value
                wire = protowire.I32 if field == 3 else protowire.I64
                body += b"".join(protowire.varint(field << 3 | wire) + piece[i:i + itemsize]
                                 for i in range(0, len(piece), itemsize))
            else:
                body += _len_field(field, piece)
        dims = draw(st.sampled_from([[count], [count], [count + 1], [count - 1] if count else [1], [], [count, 1]]))
        shape = _len_field(1, b"".join(protowire.varint(d & ((1 << 64) - 1)) for d in dims)) if dims else b""
        value = _varint_field(1, dtype) + (_len_field(2, shape) if shape or draw(st.booleans()) else b"") + body
        values_msgs = [value]
        if draw(st.integers(0, 3)) == 0:  # a second value sub-message: the library merges them
            values_msgs.append(draw(st.sampled_from([b"", _len_field(field, values[:itemsize]), _len_field(2, shape)])))
        entry = _len_field(1, key) + b"".join(_len_field(2, v) for v in values_msgs)
        if draw(st.integers(0, 5)) == 0:
            entry += _len_field(1, key)  # the key again, after the value
        parts.append(_len_field(2, entry))
    if draw(st.integers(0, 4)) == 0:
        parts.insert(draw(st.integers(0, len(parts))), _len_field(3, b"out"))
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# compressed bodies

ENCODINGS = ("gzip", "deflate", "zstd")


def compress(data: bytes, encoding: str, level: int = 6, content_size: bool = True) -> bytes:
    import zlib

    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(data)
    if encoding == "gzip":
        co = zlib.compressobj(level, zlib.DEFLATED, 31)
        return co.compress(data) + co.flush()
    return zlib.compress(data, level)


@lru_cache(maxsize=16)
def bomb(encoding: str, expanded: int, content_size: bool = True) -> bytes:
    """``expanded`` zero bytes, compressed as hard as the scheme allows."""
    return compress(bytes(expanded), encoding, level=9, content_size=content_size)


# ---------------------------------------------------------------------------------------------
# TF Serving predict bodies

tf_values = st.one_of(
    st.lists(finite_floats, max_size=4), st.lists(st.lists(finite_floats, max_size=3), max_size=3),
    json_values, st.fixed_dictionaries({"b64": st.one_of(st.sampled_from(["AAAA", "YWI=", "!!", ""]), st.text(max_size=6))}),
    st.lists(st.fixed_dictionaries({"b64": st.sampled_from(["YQ==", "YWI=", "bad", "Y"])}), max_size=3),
    st.lists(st.text(max_size=4), max_size=3), st.lists(st.lists(st.text(max_size=3), max_size=2), max_size=2),
)
b64_values = st.binary(max_size=6).map(lambda b: {"b64": __import__("base64").b64encode(b).decode()})


@st.composite
def tf_request_doc(draw: Any, model: str) -> Any:
    """A well-formed :predict body for one of the test models (row or columnar), then mutations."""
    row = draw(st.booleans())
    if model == "echo_string":
        rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        value = draw(st.lists(st.lists(st.one_of(st.text(max_size=4), b64_values), min_size=cols, max_size=cols),
                              min_size=rows, max_size=rows))
        doc: dict[str, Any] = {"instances": value} if row else {"inputs": value}
    else:
        n = draw(st.integers(1, 4))
        x = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
        y = draw(st.lists(st.integers(-100, 100), min_size=n, max_size=n))
        doc = {"instances": [{"x": a, "y": b} for a, b in zip(x, y)]} if row else {"inputs": {"x": x, "y": y}}
    for _ in range(draw(model_mutations)):
        mutation = draw(st.sampled_from(["signature", "leaf", "leaf", "both", "drop", "shape", "extra"]))
        key = "instances" if "instances" in doc else "inputs"
        if key not in doc:
            doc[key] = draw(tf_values)
            continue
        if mutation == "signature":
            doc["signature_name"] = draw(st.one_of(st.sampled_from(["serving_default", "", "nope"]), json_values))
        elif mutation == "leaf":
            target = doc[key]
            if isinstance(target, list) and target:
                i = draw(st.integers(0, len(target) - 1))
                if isinstance(target[i], dict) and target[i]:
                    target[i][draw(st.sampled_from(sorted(target[i])))] = draw(tf_values)
                else:
                    target[i] = draw(tf_values)
            elif isinstance(target, dict) and target:
                target[draw(st.sampled_from(sorted(target)))] = draw(tf_values)
            else:
                doc[key] = draw(tf_values)
        elif mutation == "both":
            doc["inputs" if key == "instances" else "instances"] = draw(tf_values)
        elif mutation == "drop":
            target = doc[key]
            if isinstance(target, dict) and target:
                target.pop(draw(st.sampled_from(sorted(target))))
            elif isinstance(target, list) and target and isinstance(target[0], dict) and target[0]:
                target[0].pop(draw(st.sampled_from(sorted(target[0]))))
            else:
                doc.pop(key)
        elif mutation == "shape":
            doc[key] = draw(st.one_of(st.just([]), json_values, tf_values))
        elif mutation == "extra":
            doc[draw(st.text(max_size=5))] = draw(json_values)
    return doc


tf_docs = st.one_of(
    st.fixed_dictionaries({"instances": st.one_of(
        st.lists(st.one_of(st.fixed_dictionaries({"x": tf_values, "y": tf_values}), tf_values), max_size=3),
        json_values)}, optional={"signature_name": st.one_of(st.sampled_from(["serving_default", "", "nope"]),
                                                               json_values)}),
    st.fixed_dictionaries({"inputs": st.one_of(st.fixed_dictionaries({"x": tf_values, "y": tf_values}),
                                               st.dictionaries(st.sampled_from(["x", "y", "s"]), tf_values,
                                                               max_size=3), tf_values)},
                          optional={"signature_name": json_values}),
    json_values,
)


# ---------------------------------------------------------------------------------------------
# multipart/form-data

boundary_chars = st.sampled_from("abcXYZ0129-_'()+,./:=?")
sound_boundaries = st.text(boundary_chars, min_size=1, max_size=40)
boundaries = st.one_of(
    st.text(st.sampled_from("abcXYZ0129-_'()+,./:=? "), min_size=1, max_size=20), st.just("----b0undary"),
    st.just("x" * 71), st.just("a "), st.just(""),
    st.text(st.characters(min_codepoint=1, max_codepoint=255, blacklist_characters="\r\n"), max_size=12))
header_text = st.text(st.characters(min_codepoint=1, max_codepoint=255, blacklist_characters="\r\n"), max_size=16)


@st.composite
def multipart_body(draw: Any) -> tuple[str, bytes]:
    """(Content-Type, body): a sound form, then one lie at a time in boundaries, dispositions,
    encodings or framing."""
    boundary = draw(boundaries) if rarely(draw) else draw(sound_boundaries)
    quoted = draw(st.booleans()) or not boundary.isalnum()
    ctype = f'multipart/form-data; boundary={chr(34) + boundary + chr(34) if quoted else boundary}'
    if rarely(draw):
        ctype = draw(st.sampled_from([ctype + "; charset=utf-8", "multipart/form-data; boundary=",
                                      "multipart/form-data; boundary*=utf-8''" + boundary,
                                      "multipart/form-data; boundary=" + boundary + "; boundary=other",
                                      ctype.replace("form-data", "mixed"), ctype + "; " + draw(header_text)]))
    real = boundary.encode("latin-1")
    sep = b"\n" if rarely(draw, 8) else b"\r\n"
    out = bytearray()
    if rarely(draw, 8):
        out += draw(st.binary(max_size=10)) + sep  # preamble
    used: set[Any] = set()
    for _ in range(draw(st.integers(0, 4))):
        out += b"--" + real + sep
        headers = []
        disposition = draw(st.sampled_from(["star", "weird", "dupe", "none"])) if rarely(draw, 8) else \
            draw(st.sampled_from(["name", "file"]))
        field = fresh_name(draw, st.sampled_from(["files", "note", "x", "a b", "\u00e9"]), used)
        if disposition == "name":
            headers.append(f'Content-Disposition: form-data; name="{field}"')
        elif disposition == "file":
            fname = draw(st.sampled_from(["a.txt", "b.txt", "", "../../etc/passwd", "\u00e9.bin"]))
            headers.append(f'Content-Disposition: form-data; name="{field}"; filename="{fname}"')
        elif disposition == "star":
            headers.append("Content-Disposition: form-data; name*=utf-8''%C3%A9; filename*=utf-8''f%20.txt")
        elif disposition == "weird":
            headers.append("Content-Disposition: " + draw(header_text))
        elif disposition == "dupe":
            headers.append(f'Content-Disposition: form-data; name="{field}"; name="other"')
        if rarely(draw, 5):
            headers.append("Content-Transfer-Encoding: " + draw(st.sampled_from(
                ["base64", "quoted-printable", "7bit", "binary", "x-uuencode", "uuencode", "garbage"])))
        if rarely(draw, 4):
            headers.append("Content-Type: " + draw(st.sampled_from(
                ["text/plain; charset=utf-8", "text/plain; charset=nope", "application/octet-stream",
                 "multipart/mixed; boundary=inner", "message/rfc822", "text/plain; charset=utf-16"])))
        if rarely(draw, 10):
            headers.append(draw(header_text))
        out += sep.join(h.encode("utf-8") for h in headers) + sep + sep
        out += draw(st.one_of(st.binary(max_size=24), st.sampled_from(
            [b"aGVsbG8=", b"not base64!!", b"=ZZ=\r\n", b"begin 644 f\n#86)C\n`\nend\n",
             b"--inner\r\n\r\nx\r\n--inner--", b"From: a\r\n\r\nbody", b"1 2 3"])))
        out += sep
    end = draw(st.sampled_from(["none", "open", "garbage"])) if rarely(draw) else "close"
    if end == "close":
        out += b"--" + real + b"--" + sep
    elif end == "open":
        out += b"--" + real
    elif end == "garbage":
        out += draw(st.binary(max_size=12))
    if rarely(draw, 10) and out:
        out = out[: draw(st.integers(0, len(out)))]
    return ctype, bytes(out)
