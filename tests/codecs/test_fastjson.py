"""modelpod.codecs._fastjson: the C half of ``plain_inputs`` gives exactly the Python answer.

The C function may answer (a dict of arrays) or decline (None, and the Python function decides);
whenever it answers, ``python_plain_inputs`` must give the same names, dtypes, shapes and bits.
The extension is part of the build (setup.py): on a machine that builds modelpod it must exist.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpod.codecs import _fastjson
from modelpod.codecs.v2 import plain_inputs, python_plain_inputs

from .test_v2 import documents

TYPES = ["FP32", "FP64", "INT32", "INT64"]
edges = st.sampled_from([0, 1, -1, 2**24 + 1, 2**31 - 1, -2**31, 2**31, 2**53, 2**53 + 1, -2**53 - 1, 2**63 - 1,
                         -2**63, 2**63, 2**64, 1e39, -1e39, 3.4028235e38, 1e-46, 0.1, -0.0, 0.5, 1.5])
#: one tensor's numbers: all floats, all small ints, or anything (edges, bools, huge ints) mixed
leaves = [st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**31, 2**31 - 1),
          st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**65, 2**65), edges, st.booleans())]


@st.composite
def tensors(draw: Any) -> tuple[list, list]:
    """(data, shape): rectangular nested lists of numbers mostly, ragged or odd sometimes."""
    dims = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    leaf = draw(st.sampled_from(leaves))

    def nest(level: int) -> Any:
        if level == len(dims):
            return draw(leaf)
        return [nest(level + 1) for _ in range(dims[level])]

    data = nest(0)
    size = int(np.prod(dims))
    shape = draw(st.one_of(st.just([size]), st.just(dims), st.just([1, size]),
                           st.lists(st.integers(0, 4), min_size=0, max_size=3)))
    if not draw(st.integers(0, 9)) and isinstance(data, list) and isinstance(data[0], list):
        data[0] = data[0][:-1] or [[]]  # ragged
    return data, shape


@st.composite
def plain_documents(draw: Any) -> tuple[dict, dict]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3))
    datatypes = {name: draw(st.sampled_from(TYPES)) for name in names}
    entries = []
    for name in names:
        data, shape = draw(tensors())
        entries.append({"name": name, "datatype": datatypes[name], "shape": shape, "data": data})
    return {"inputs": entries}, datatypes


def _same(fast: dict | None, doc: Any, datatypes: dict) -> None:
    if fast is None:
        return  # declined: the Python function decides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on float32 overflow; C does not
        reference = python_plain_inputs(doc, datatypes)
    assert reference is not None, f"C accepted what Python leaves to the general decode: {doc!r}"
    assert list(fast) == list(reference)
    for name, array in fast.items():
        want = reference[name]
        assert array.dtype == want.dtype and array.shape == want.shape, (name, array, want)
        assert array.flags.c_contiguous and array.flags.writeable
        assert array.tobytes() == np.ascontiguousarray(want).tobytes(), (name, array, want)


@settings(max_examples=800, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_documents())
def test_the_c_half_converts_numbers_exactly_as_python_does(case: tuple[dict, dict]) -> None:
    doc, datatypes = case
    _same(_fastjson.plain_inputs(doc, datatypes), doc, datatypes)


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_the_c_half_never_accepts_what_python_leaves(doc: Any) -> None:
    datatypes = {"x": "FP32", "y": "INT64"}
    _same(_fastjson.plain_inputs(doc, datatypes), doc, datatypes)


def test_the_c_half_takes_the_common_request() -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.5, 4]},
                      {"name": "y", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, -4]]}]}
    fast = _fastjson.plain_inputs(doc, {"x": "FP32", "y": "INT64"})
    assert fast is not None
    assert fast["x"].dtype == np.float32 and fast["x"].tolist() == [[1.0, 2.0, 3.5, 4.0]]
    assert fast["y"].dtype == np.int64 and fast["y"].tolist() == [[1, 2], [3, -4]]
    assert plain_inputs(doc, {"x": "FP32", "y": "INT64"}).keys() == fast.keys()


@pytest.mark.parametrize("data, shape, datatype", [
    ([True, 1.0], [2], "FP32"),       # a bool: Python's rules decide
    ([1.5, 2], [2], "INT64"),         # a fraction for ints
    ([2**31], [1], "INT32"),          # out of range
    ([2**53 + 1], [1], "FP32"),       # would round twice
    ([[1.0], [2.0, 3.0]], [3], "FP32"),  # ragged
    ([1.0, 2.0], [0, 2], "FP32"),     # a zero dim
    ([], [0], "FP32"),                # empty
    ([1.0], [], "FP32"),              # a scalar shape
    ([1.0], [1], "FP16"),             # a datatype C does not convert
    ("1.0", [1], "FP32"),             # not a list
])
def test_the_c_half_declines_what_python_words(data: Any, shape: list, datatype: str) -> None:
    assert _fastjson.plain_inputs({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]},
                                  {"x": datatype}) is None


def test_the_c_half_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        _fastjson.plain_inputs({})  # type: ignore[call-arg]
    assert _fastjson.plain_inputs([], {}) is None
    assert _fastjson.plain_inputs({"inputs": []}, {}) is None
