"""modelpod.codecs.v2: the plain-request decode agrees with the general one.

``plain_inputs`` is the short path most v2 JSON requests take (only ``inputs``, each entry exactly
name/datatype/shape/data with the model's datatype). Whatever it accepts, ``decode_document``
must decode to the same arrays; whatever it leaves (None), the general decode handles or refuses.
It must never accept what the general decode refuses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpod.codecs.v2 import decode_document, decode_request, parse_body, plain_inputs
from modelpod.errors import CodecError

DATATYPES = {"x": "FP32", "y": "INT64"}

numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-2**40, 2**40),
                    st.booleans())
values = st.one_of(numbers, st.text(max_size=3), st.none(), st.integers(-2**70, 2**70))
flat = st.lists(numbers, max_size=6)
data = st.one_of(flat, st.lists(flat, max_size=3), st.lists(values, max_size=4), values)
shapes = st.one_of(st.lists(st.integers(-1, 6), max_size=3), st.lists(st.one_of(st.integers(0, 4), st.booleans(),
                   st.floats(0, 4), st.text(max_size=1)), max_size=2), values)


@st.composite
def documents(draw: Any) -> Any:
    """A v2 infer document: mostly near-plain, with one or more things that may be off."""
    entries = []
    for name in draw(st.lists(st.sampled_from(["x", "y", "z", ""]), min_size=0, max_size=3)):
        entry: dict[str, Any] = {"name": name, "datatype": draw(st.sampled_from(["FP32", "INT64", "FP64", "BOOL",
                                                                                 "BYTES", "fp32"]))}
        if draw(st.integers(0, 2)):
            entry["datatype"] = DATATYPES.get(name, "FP32")
        d = draw(data)
        entry["shape"] = [len(d)] if draw(st.integers(0, 2)) and isinstance(d, list) else draw(shapes)
        if draw(st.integers(0, 9)):
            entry["data"] = d
        if not draw(st.integers(0, 9)):
            entry[draw(st.sampled_from(["parameters", "extra", "name"]))] = draw(st.one_of(
                st.just({"binary_data_size": 4}), st.just({}), values))
        entries.append(entry if draw(st.integers(0, 19)) else draw(values))
    doc: Any = {"inputs": entries}
    if not draw(st.integers(0, 9)):
        doc[draw(st.sampled_from(["id", "parameters", "outputs"]))] = draw(st.one_of(values, st.just({})))
    if not draw(st.integers(0, 29)):
        doc = draw(st.one_of(values, st.just(entries)))
    return doc


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_the_plain_decode_accepts_only_what_the_general_decode_decodes_alike(doc: Any) -> None:
    plain = plain_inputs(doc, DATATYPES)
    try:
        general = decode_document(doc)
    except CodecError:
        assert plain is None, f"plain_inputs accepted what decode_document refuses: {doc!r}"
        return
    if plain is None:
        return  # left to the general decode, which took it
    assert general.parameters == {} and general.outputs is None and general.id is None
    assert list(plain) == list(general.inputs) == [e["name"] for e in doc["inputs"]]
    for name, array in plain.items():
        expected = general.inputs[name]
        assert array.dtype == expected.dtype and array.shape == expected.shape
        np.testing.assert_array_equal(array, expected)


def test_the_plain_decode_takes_the_common_request() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2.5, 3, 4]},
                                    {"name": "y", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]}]})
    doc, binary = parse_body(body, None)
    assert len(binary) == 0
    inputs = plain_inputs(doc, DATATYPES)
    assert inputs is not None
    assert inputs["x"].dtype == np.float32 and inputs["x"].shape == (2, 2)
    assert inputs["y"].tolist() == [1, 2, 3] and inputs["y"].dtype == np.int64


@pytest.mark.parametrize("doc", [
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]},  # y missing
    {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.0]},
                {"name": "y", "datatype": "INT64", "shape": [1], "data": [1]}]},  # not the model's datatype
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]},
                {"name": "y", "datatype": "INT64", "shape": [1], "data": [1]}], "id": "7"},  # an id to echo
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]},
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]},  # twice
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0]},
                {"name": "y", "datatype": "INT64", "shape": [1], "data": [1]}]},  # shape and data disagree
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]},
                {"name": "y", "datatype": "INT64", "shape": [1], "data": [2**64]}]},  # out of range
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]},
                {"name": "z", "shape": [1], "data": [1], "parameters": {}}]},  # not an input, no datatype
])
def test_what_is_not_plain_is_left_to_the_general_decode(doc: Any) -> None:
    assert plain_inputs(doc, DATATYPES) is None


def test_decode_request_is_parse_then_decode() -> None:
    with pytest.raises(CodecError, match="malformed"):
        decode_request(b"{", None)
    with pytest.raises(CodecError, match="Inference-Header-Content-Length is 9"):
        decode_request(b"{}", 9)
