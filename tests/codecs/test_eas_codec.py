"""The EAS protobuf codec's fast paths agree with the protobuf library.

Float and double values travel as raw packed bytes: requests are read in place (from 16 KiB on)
and answers are written in one piece. Whatever the bytes, the result must be what the protobuf
library makes of them; bodies the fast path does not handle (unpacked or split values, a repeated
map key) take the library's values.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelpod.codecs import protowire
from modelpod.codecs.eas import _ENCODE, _ENCODE_REQUEST, _fill, decode_predict_request, encode_predict_request, encode_predict_response
from modelpod.protos import eas_predict_pb2 as pb

pytestmark = pytest.mark.timeout(120)

RESPONSE_DTYPES = ["float32", "float64", "float16", "int32", "int64", "uint8", "bool"]
REQUEST_DTYPES = ["float32", "float64", "float16", "int32", "int64", "uint8", "int8", "bool"]


@st.composite
def tensors(draw, dtypes: list[str], max_size: int = 3) -> dict[str, np.ndarray]:
    out = {}
    for i in range(draw(st.integers(1, max_size))):
        dtype = draw(st.sampled_from(dtypes))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        big = draw(st.booleans()) and dtype in ("float32", "float64")
        if big:  # past the in-place threshold
            shape = (draw(st.integers(4097, 9000)),)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        if dtype == "bool":
            array = rng.integers(0, 2, shape).astype(bool)
        elif dtype.startswith("float"):
            array = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            array = rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)
        out[f"t{i}é"] = array  # a non-ASCII name checks the key's UTF-8 too
    return out


def library_response(outputs: dict[str, np.ndarray]) -> pb.PredictResponse:
    msg = pb.PredictResponse()
    for name, array in outputs.items():
        _fill(msg.outputs[name], array, _ENCODE)
    return msg


def library_request(inputs: dict[str, np.ndarray]) -> bytes:
    msg = pb.PredictRequest(signature_name="sig", output_filter=["a"])
    for name, array in inputs.items():
        _fill(msg.inputs[name], array, _ENCODE_REQUEST)
    return msg.SerializeToString()


@settings(max_examples=60, deadline=None)
@given(tensors(RESPONSE_DTYPES))
def test_answers_parse_to_what_the_library_would_write(outputs) -> None:
    assert pb.PredictResponse.FromString(encode_predict_response(outputs)) == library_response(outputs)


def test_bfloat16_and_scalar_answers_match_the_library() -> None:
    outputs = {"b": np.ones((2, 2), ml_dtypes.bfloat16), "s": np.float32(2.5).reshape(()),
               "e": np.zeros((0, 3), np.float32)}
    assert pb.PredictResponse.FromString(encode_predict_response(outputs)) == library_response(outputs)


@settings(max_examples=60, deadline=None)
@given(tensors(REQUEST_DTYPES))
def test_requests_decode_like_the_library_made_them(inputs) -> None:
    for body in (library_request(inputs), encode_predict_request(inputs, "sig", ["a"])):
        request = decode_predict_request(body)
        assert request.signature_name == "sig" and request.output_filter == ["a"]
        assert set(request.inputs) == set(inputs)
        for name, array in inputs.items():
            assert request.inputs[name].dtype == array.dtype
            np.testing.assert_array_equal(request.inputs[name], array)
            if array.dtype == np.float32 and array.size > 4096:  # read in place, not copied value by value
                assert not request.inputs[name].flags.writeable  # a view of the request bytes


def _entry(name: str, count: int, value_fields: bytes) -> bytes:
    """A PredictRequest ``inputs`` entry: a DT_FLOAT ArrayProto of ``count`` values whose value
    fields are given already encoded."""
    shape = b"".join(protowire.field_bytes(1, protowire.varint(count)))
    proto = protowire.varint(1 << 3) + protowire.varint(pb.DT_FLOAT) + b"".join(protowire.field_bytes(2, shape))
    entry = b"".join([*protowire.field_bytes(1, name.encode()), *protowire.field_bytes(2, proto + value_fields)])
    return b"".join(protowire.field_bytes(2, entry))


def test_unpacked_split_and_repeated_values_take_the_library_path() -> None:
    x = np.arange(6000, dtype=np.float32)
    # one field per value (valid protobuf, not packed)
    unpacked = b"".join(protowire.varint(3 << 3 | protowire.I32) + v.tobytes() for v in x.astype("<f4"))
    body = _entry("x", len(x), unpacked)
    assert len(body) > 16 << 10
    np.testing.assert_array_equal(decode_predict_request(body).inputs["x"], x)
    # two packed runs of one field: protobuf joins them
    halves = b"".join(b"".join(protowire.field_bytes(3, part.astype("<f4").tobytes())) for part in np.split(x, 2))
    np.testing.assert_array_equal(decode_predict_request(_entry("x", len(x), halves)).inputs["x"], x)
    # the same key twice: protobuf keeps the last entry
    first, last = encode_predict_request({"x": x}), encode_predict_request({"x": x + 1})
    np.testing.assert_array_equal(decode_predict_request(first + last).inputs["x"], x + 1)


def test_truncated_big_bodies_are_codec_errors() -> None:
    body = encode_predict_request({"x": np.arange(9000, dtype=np.float32)})
    for cut in (len(body) - 1, len(body) // 2, 20):
        with pytest.raises(ValueError, match="not a valid EAS PredictRequest"):
            decode_predict_request(body[:cut])
