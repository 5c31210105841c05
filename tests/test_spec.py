"""The spec check every call goes through: dtypes, shapes, symbols, casting rules, malformed specs."""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelpod.spec import (
    DTYPES,
    SpecChecker,
    SpecError,
    TensorSpec,
    check,
    dtype_name,
    format_shape,
    numpy_dtype,
    _straight_line_check,
    parse_spec,
)
from tests.helpers.addition import INPUT_SPEC

pytestmark = pytest.mark.timeout(60)

NUMERIC = [name for name in DTYPES if name != "string"]


def one(dtype: str, shape=(None,), name: str = "t") -> list[dict]:
    return [{"name": name, "dtype": dtype, "shape": shape}]


# --------------------------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize("dtype", NUMERIC)
def test_every_numeric_dtype_accepts_its_own_numpy_array(dtype):
    array = np.zeros((3,), dtype=numpy_dtype(dtype))
    out = check(one(dtype), {"t": array})["t"]
    assert out.dtype == numpy_dtype(dtype)
    assert out.shape == (3,)
    assert dtype_name(out) == dtype


@pytest.mark.parametrize("dtype", NUMERIC)
def test_every_numeric_dtype_rejects_every_other_numpy_dtype(dtype):
    for other in NUMERIC:
        if other == dtype:
            continue
        array = np.zeros((2,), dtype=numpy_dtype(other))
        with pytest.raises(SpecError) as info:
            check(one(dtype, name="x"), {"x": array})
        msg = str(info.value)
        assert "input 'x'" in msg
        assert f"expected {dtype} of shape (None,)" in msg
        assert f"got {other} of shape (2,)" in msg


def test_bfloat16_is_the_ml_dtypes_type():
    assert numpy_dtype("bfloat16") == np.dtype(ml_dtypes.bfloat16)
    array = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    out = check(one("bfloat16"), {"t": array})["t"]
    assert out.dtype == np.dtype(ml_dtypes.bfloat16)
    # python floats convert into bfloat16
    out = check(one("bfloat16"), {"t": [1.5, 2.0]})["t"]
    assert out.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(out.astype(np.float32), [1.5, 2.0])
    # a float32 array is not silently narrowed to bfloat16 (and vice versa)
    with pytest.raises(SpecError, match="expected bfloat16 .* got float32"):
        check(one("bfloat16"), {"t": np.zeros(2, np.float32)})
    with pytest.raises(SpecError, match="expected float32 .* got bfloat16"):
        check(one("float32"), {"t": array})


@pytest.mark.parametrize(
    "array",
    [
        np.array(["a", "bc"]),  # U
        np.array([b"a", b"bc"]),  # S
        np.array(["a", b"bc"], dtype=object),  # O of str/bytes
    ],
    ids=["unicode", "bytes", "object"],
)
def test_string_tensors_accept_U_S_and_object_arrays(array):
    out = check(one("string"), {"t": array})["t"]
    assert out.shape == (2,)
    assert dtype_name(out) == "string"


def test_string_tensor_rejects_numbers_and_object_arrays_of_non_strings():
    with pytest.raises(SpecError, match=r"input 't': expected string of shape \(None,\) but got float32"):
        check(one("string"), {"t": np.zeros(2, np.float32)})
    with pytest.raises(SpecError, match="expected string"):
        check(one("string"), {"t": np.array(["a", 1], dtype=object)})
    with pytest.raises(SpecError, match="expected string values"):
        check(one("string"), {"t": [1, 2]})
    # numpy would turn ["a", 1] into ["a", "1"]; the rule is: numbers never go into string tensors
    with pytest.raises(SpecError, match=r"expected string values, got values of type \['int'\]"):
        check(one("string"), {"t": ["a", 1]})


def test_string_python_values_become_object_arrays():
    out = check(one("string", (None, None)), {"t": [["a", "b"], ["c", "d"]]})["t"]
    assert out.dtype == object and out.shape == (2, 2)
    assert out[1, 0] == "c"
    out = check(one("string", ()), {"t": "hello"})["t"]
    assert out.shape == () and out.item() == "hello"
    empty = check(one("string"), {"t": []})["t"]
    assert empty.shape == (0,) and dtype_name(empty) == "string"


def test_numbers_reject_strings():
    with pytest.raises(SpecError, match="input 't': expected float32 values, got strings"):
        check(one("float32"), {"t": ["1.0", "2.0"]})
    with pytest.raises(SpecError, match="expected int64 .* got string"):
        check(one("int64"), {"t": np.array(["1"])})


# --------------------------------------------------------------------------------------------
# shapes and symbols


def test_fixed_dims():
    spec = one("float32", (2, 3), name="m")
    assert check(spec, {"m": np.zeros((2, 3), np.float32)})["m"].shape == (2, 3)
    with pytest.raises(SpecError) as info:
        check(spec, {"m": np.zeros((2, 4), np.float32)})
    msg = str(info.value)
    assert "input 'm'" in msg and "expected float32 of shape (2, 3)" in msg
    assert "(2, 4)" in msg and "dim 1 is 4, must be 3" in msg


def test_rank_mismatch_names_both_ranks():
    with pytest.raises(SpecError) as info:
        check(one("float32", ("n",), name="x"), {"x": np.zeros((5, 1), np.float32)})
    msg = str(info.value)
    assert "input 'x'" in msg
    assert "expected float32 of shape (n,) (1-D)" in msg
    assert "got float32 of shape (5, 1) (2-D)" in msg


def test_scalar_shape():
    spec = one("int32", ())
    assert check(spec, {"t": np.int32(4)})["t"].shape == ()
    assert check(spec, {"t": 4})["t"].dtype == np.int32
    with pytest.raises(SpecError, match="0-D"):
        check(spec, {"t": [4]})


def test_none_dims_take_any_size_independently():
    spec = [
        {"name": "a", "dtype": "float32", "shape": (None, None)},
        {"name": "b", "dtype": "float32", "shape": (None,)},
    ]
    out = check(spec, {"a": np.zeros((3, 7), np.float32), "b": np.zeros(11, np.float32)})
    assert out["a"].shape == (3, 7) and out["b"].shape == (11,)
    assert check(spec, {"a": np.zeros((0, 0), np.float32), "b": np.zeros(0, np.float32)})


def test_symbol_resolved_across_tensors():
    spec = INPUT_SPEC  # the seed addition model's inputs
    bindings: dict = {}
    SpecChecker(spec).check({"x": np.zeros(5, np.float32), "y": np.zeros(5, np.float32)}, bindings)
    assert bindings == {"num_inputs": (5, "x")}
    with pytest.raises(SpecError) as info:
        check(spec, {"x": np.zeros(5, np.float32), "y": np.zeros(4, np.float32)})
    assert str(info.value) == "symbol num_inputs is 5 in 'x' but 4 in 'y'"


def test_symbol_resolved_within_one_tensor():
    spec = one("float32", ("n", "n"), name="square")
    check(spec, {"square": np.zeros((3, 3), np.float32)})
    with pytest.raises(SpecError, match="symbol n is 3 in 'square' but 4 in 'square'"):
        check(spec, {"square": np.zeros((3, 4), np.float32)})


def test_symbol_bindings_carry_from_inputs_to_outputs():
    inputs = SpecChecker(one("float32", ("batch", 4), name="x"), "input")
    outputs = SpecChecker(one("float32", ("batch",), name="y"), "output")
    bindings: dict = {}
    inputs.check({"x": np.zeros((3, 4), np.float32)}, bindings)
    outputs.check({"y": np.zeros(3, np.float32)}, bindings)
    with pytest.raises(SpecError, match="symbol batch is 3 in 'x' but 2 in 'y'"):
        outputs.check({"y": np.zeros(2, np.float32)}, dict(bindings))


# --------------------------------------------------------------------------------------------
# names: missing, unexpected, subset


def test_missing_tensor_names_it_and_what_was_given():
    spec = [
        {"name": "x", "dtype": "float32", "shape": (None,)},
        {"name": "y", "dtype": "float32", "shape": (None,)},
    ]
    with pytest.raises(SpecError) as info:
        check(spec, {"x": np.zeros(2, np.float32)})
    msg = str(info.value)
    assert "missing input 'y'" in msg and "float32 of shape (None,)" in msg and "['x']" in msg
    with pytest.raises(SpecError, match="got tensors none"):
        check(spec, {})


def test_unexpected_tensor_is_named():
    with pytest.raises(SpecError) as info:
        check(one("float32", name="x"), {"x": np.zeros(2, np.float32), "z": np.zeros(2)})
    msg = str(info.value)
    assert "unexpected input(s) ['z']" in msg and "['x']" in msg


def test_subset_allows_missing_but_not_unknown():
    checker = SpecChecker(
        [{"name": "a", "dtype": "int64", "shape": ()}, {"name": "b", "dtype": "int64", "shape": ()}],
        "output",
    )
    assert set(checker.check({"a": np.int64(1)}, subset=True)) == {"a"}
    with pytest.raises(SpecError, match=r"unexpected output\(s\) \['c'\]"):
        checker.check({"a": np.int64(1), "c": np.int64(1)}, subset=True)


def test_tensors_must_be_a_mapping():
    with pytest.raises(SpecError, match="inputs must be a dict of name -> array, got list"):
        check(one("float32"), [np.zeros(2, np.float32)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# casting rules


def test_python_lists_are_converted_to_the_spec_dtype():
    out = check(one("float32"), {"t": [1, 2.5, True]})["t"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.0, 2.5, 1.0])
    out = check(one("int16"), {"t": (1, 2, 3)})["t"]
    assert out.dtype == np.int16
    out = check(one("uint8"), {"t": [0, 255]})["t"]
    assert out.dtype == np.uint8
    out = check(one("bool"), {"t": [True, False]})["t"]
    assert out.dtype == np.bool_
    out = check(one("float64", (None, None)), {"t": [[1.0], [2.0]]})["t"]
    assert out.dtype == np.float64 and out.shape == (2, 1)
    out = check(one("int32"), {"t": []})["t"]
    assert out.dtype == np.int32 and out.shape == (0,)


@pytest.mark.parametrize(
    "dtype, values",
    [
        ("int8", [127, 128]),
        ("int8", [-129]),
        ("uint8", [-1]),
        ("uint16", [70000]),
        ("int32", [2**31]),
        ("int64", [2**63]),
        ("int64", [2**70]),
        ("int64", [-1, 2**63]),
        ("uint64", [2**64]),
    ],
)
def test_python_ints_must_fit(dtype, values):
    with pytest.raises(SpecError) as info:
        check(one(dtype), {"t": values})
    msg = str(info.value)
    assert f"values must fit {dtype}" in msg
    assert str(max(values)) in msg or str(min(values)) in msg


def test_python_ints_at_the_limits_fit():
    assert check(one("uint64"), {"t": [0, 2**64 - 1]})["t"].dtype == np.uint64
    assert check(one("int64"), {"t": [-(2**63), 2**63 - 1]})["t"].dtype == np.int64
    assert check(one("int8"), {"t": [-128, 127]})["t"].tolist() == [-128, 127]


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "uint64", "bool"])
def test_python_floats_never_go_into_int_or_bool(dtype):
    with pytest.raises(SpecError, match=f"expected {dtype} values"):
        check(one(dtype), {"t": [1.0, 2.0]})


def test_bool_tensors_only_take_booleans():
    with pytest.raises(SpecError, match=r"expected bool values \(True/False\)"):
        check(one("bool"), {"t": [0, 1]})


def test_python_floats_must_not_overflow_the_float_type():
    with pytest.raises(SpecError, match="values must fit float16"):
        check(one("float16"), {"t": [70000.0]})
    with pytest.raises(SpecError, match="values must fit float32"):
        check(one("float32"), {"t": [1e300]})
    # infinities and nans given as such stay what they are
    out = check(one("float32"), {"t": [float("inf"), float("nan")]})["t"]
    assert np.isinf(out[0]) and np.isnan(out[1])


def test_python_none_and_objects_are_rejected_clearly():
    with pytest.raises(SpecError, match=r"expected float32 values, got values of type \['NoneType', 'int'\]"):
        check(one("float32"), {"t": [1, None]})


def test_ragged_lists_are_rejected():
    with pytest.raises(SpecError, match="input 't': cannot make a tensor from the given list"):
        check(one("int64", (None, None)), {"t": [[1, 2], [3]]})


def test_numpy_arrays_must_match_the_dtype_exactly():
    with pytest.raises(SpecError) as info:
        check(one("float32", ("n",), name="x"), {"x": np.arange(5.0)})
    msg = str(info.value)
    assert "input 'x': expected float32 of shape (n,) but got float64 of shape (5,)" in msg
    assert ".astype(np.float32)" in msg
    with pytest.raises(SpecError, match="expected int32 .* got int64"):
        check(one("int32"), {"t": np.arange(3)})
    # numpy scalars are arrays too
    with pytest.raises(SpecError, match="expected float32 of shape \\(\\) but got float64"):
        check(one("float32", ()), {"t": np.float64(1.0)})
    assert check(one("float32", ()), {"t": np.float32(1.0)})["t"].dtype == np.float32


def test_a_dtype_mismatch_carries_its_fields_for_a_wire_to_name():
    with pytest.raises(SpecError) as info:
        check(one("float32", ("n",), name="x"), {"x": np.arange(5.0)})
    err = info.value
    assert (err.tensor, err.role, err.expected, err.actual) == ("x", "input", "float32", "float64")
    assert err.in_words({"float32": "FP32", "float64": "FP64"}) == "input 'x': expected datatype FP32, got FP64"
    assert err.in_words({"float32": "DT_FLOAT"}, "dtype") == "input 'x': expected dtype DT_FLOAT, got float64"
    with pytest.raises(SpecError) as info:
        check(one("string", name="s"), {"s": np.zeros(2, np.int8)})
    assert (info.value.expected, info.value.actual) == ("string", "int8")
    with pytest.raises(SpecError) as info:  # not about a dtype: the message as it is
        check(one("float32", (3,), name="x"), {"x": np.zeros(2, np.float32)})
    assert info.value.expected is None and info.value.in_words({}) == str(info.value)


def test_checked_arrays_are_not_copied():
    array = np.zeros(4, np.float32)
    assert check(one("float32"), {"t": array})["t"] is array


# --------------------------------------------------------------------------------------------
# malformed specs


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"name": "x", "dtype": "float128", "shape": (1,)}, r"tensor 'x': unknown dtype 'float128'; use one of bool, "),
        ({"name": "x", "dtype": "float32", "shape": (-1,)}, r"tensor 'x': dim -1 must be an int >= 0"),
        ({"name": "x", "dtype": "float32", "shape": (1.5,)}, r"dim 1.5 must be"),
        ({"name": "x", "dtype": "float32", "shape": (True,)}, r"dim True must be"),
        ({"name": "x", "dtype": "float32", "shape": ("",)}, r"dim '' must be"),
        ({"name": "x", "dtype": "float32", "shape": "n"}, r"shape must be a list or tuple of dims"),
        ({"name": "x", "dtype": "float32", "shape": 3}, r"shape must be a list or tuple of dims"),
        ({"name": "x", "dtype": "float32"}, r"shape must be a list or tuple"),
        ({"name": "", "dtype": "float32", "shape": ()}, r"needs a non-empty string 'name'"),
        ({"dtype": "float32", "shape": ()}, r"needs a non-empty string 'name'"),
        ({"name": "x", "dtype": "float32", "shape": (), "extra": 1}, r"unknown field\(s\) \['extra'\]"),
        ("x", r"must be a dict"),
    ],
)
def test_malformed_tensor_specs(raw, match):
    with pytest.raises(SpecError, match=match):
        parse_spec([raw])


def test_duplicate_names_and_non_list_specs():
    spec = one("float32", name="x") * 2
    with pytest.raises(SpecError, match="tensor name 'x' appears twice"):
        parse_spec(spec)
    with pytest.raises(SpecError, match="appears twice"):
        SpecChecker(spec)
    with pytest.raises(SpecError, match="a spec must be a list of tensor specs, got dict"):
        parse_spec({"name": "x", "dtype": "float32", "shape": ()})


def test_neuropod_problem_definition_accepted_verbatim():
    spec = parse_spec(
        [
            {"name": "x", "dtype": "float32", "shape": ("num_inputs",)},
            {"name": "y", "dtype": "float32", "shape": ["num_inputs", None, 3]},
        ]
    )
    assert spec[0] == TensorSpec("x", "float32", ("num_inputs",))
    assert spec[1].shape == ("num_inputs", None, 3)
    assert spec[1].to_dict() == {"name": "y", "dtype": "float32", "shape": ["num_inputs", None, 3]}
    assert parse_spec(spec) == spec  # TensorSpec objects pass through
    assert parse_spec(None) == ()
    # numpy ints are fine as fixed dims
    assert parse_spec(one("float32", (np.int64(3),)))[0].shape == (3,)


def test_format_shape():
    assert format_shape(()) == "()"
    assert format_shape(("n",)) == "(n,)"
    assert format_shape((None, 3, "b")) == "(None, 3, b)"


# --------------------------------------------------------------------------------------------
# property: symbol resolution

SYMBOLS = ["a", "b", "c"]


@st.composite
def symbol_cases(draw):
    """Random specs sharing symbols, plus random shapes for them (sometimes disagreeing)."""
    n = draw(st.integers(1, 4))
    specs, tensors, uses = [], {}, {}
    for i in range(n):
        rank = draw(st.integers(0, 3))
        dims, shape = [], []
        for axis in range(rank):
            kind = draw(st.sampled_from(["sym", "sym", "fixed", "none"]))
            if kind == "sym":
                sym = draw(st.sampled_from(SYMBOLS))
                size = draw(st.integers(0, 3))
                dims.append(sym)
                uses.setdefault(sym, []).append(size)
            elif kind == "fixed":
                size = draw(st.integers(0, 3))
                dims.append(size)
            else:
                size = draw(st.integers(0, 3))
                dims.append(None)
            shape.append(size)
        name = f"t{i}"
        specs.append({"name": name, "dtype": "float32", "shape": tuple(dims)})
        tensors[name] = np.zeros(tuple(shape), np.float32)
    return specs, tensors, uses


@settings(max_examples=200, deadline=None)
@given(symbol_cases())
def test_check_passes_iff_each_symbols_sizes_agree(case):
    specs, tensors, uses = case
    consistent = all(len(set(sizes)) == 1 for sizes in uses.values())
    bindings: dict = {}
    if consistent:
        out = SpecChecker(specs).check(tensors, bindings)
        assert set(out) == set(tensors)
        assert {sym: size for sym, (size, _) in bindings.items()} == {s: v[0] for s, v in uses.items()}
    else:
        with pytest.raises(SpecError) as info:
            SpecChecker(specs).check(tensors, bindings)
        assert re.fullmatch(r"symbol [abc] is \d+ in 't\d' but \d+ in 't\d'", str(info.value))


@settings(max_examples=100, deadline=None)
@given(symbol_cases(), st.integers(0, 3))
def test_outputs_are_held_to_the_sizes_inputs_fixed(case, out_size):
    specs, tensors, uses = case
    if not all(len(set(sizes)) == 1 for sizes in uses.values()):
        return
    bindings: dict = {}
    SpecChecker(specs, "input").check(tensors, bindings)
    out_spec = [{"name": "o", "dtype": "float32", "shape": ("a",)}]
    ok = "a" not in uses or uses["a"][0] == out_size
    out = {"o": np.zeros(out_size, np.float32)}
    if ok:
        SpecChecker(out_spec, "output").check(out, bindings)
    else:
        with pytest.raises(SpecError, match=f"symbol a is {uses['a'][0]} in 't\\d' but {out_size} in 'o'"):
            SpecChecker(out_spec, "output").check(out, bindings)


@st.composite
def checker_cases(draw):
    """A random spec and a random dict of arrays that may break it in any one of several ways."""
    dtypes = ["float32", "int64", "float16"]
    dims = st.one_of(st.integers(0, 3), st.none(), st.sampled_from(SYMBOLS))
    specs = [{"name": f"t{i}", "dtype": draw(st.sampled_from(dtypes)), "shape": tuple(draw(st.lists(dims, max_size=3)))}
             for i in range(draw(st.integers(1, 3)))]
    tensors = {}
    for spec in specs:
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        rank = max(0, len(spec["shape"]) + draw(st.sampled_from([0, 0, 0, 1, -1])))
        shape = tuple(draw(st.integers(0, 3)) for _ in range(rank))
        dtype = spec["dtype"] if draw(st.integers(0, 5)) else draw(st.sampled_from(dtypes))
        tensors[spec["name"]] = np.zeros(shape, dtype)
    if draw(st.integers(0, 9)) == 0:
        tensors["extra"] = np.zeros(1, np.float32)
    prebound = {sym: (draw(st.integers(0, 3)), "earlier") for sym in draw(st.sets(st.sampled_from(SYMBOLS)))}
    return specs, tensors, prebound


@settings(max_examples=400, deadline=None)
@given(checker_cases())
def test_the_straight_line_check_agrees_with_the_general_one(case):
    """SpecChecker generates straight-line code for the all-good case: it must accept exactly what
    the general loop accepts, with the same bindings, and leave every refusal to the general loop."""
    specs, tensors, prebound = case
    generated, general = SpecChecker(specs), SpecChecker(specs)
    assert "check" in vars(generated)  # the generated check, on the instance
    del general.check  # the class's general loop only
    in_python = _straight_line_check(general._compiled, general.check, native=None)  # without the C half
    assert generated.check.__closure__ is not None and in_python.__closure__ is None  # C, then Python
    outcomes = []
    for run in (generated.check, in_python, general.check):
        bindings = dict(prebound)
        try:
            result = run(tensors, bindings)
            outcomes.append(("ok", {k: id(v) for k, v in result.items()}, bindings))
        except SpecError as exc:
            outcomes.append(("error", str(exc), bindings))
    assert outcomes[0] == outcomes[1] == outcomes[2]
