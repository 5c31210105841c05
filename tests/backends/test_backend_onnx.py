"""The onnx platform: graphs built with onnx.helper, packed, verified, reloaded and run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import modelpod
from tests.helpers.frameworks_common import (
    ADDITION_EXPECTED,
    ADDITION_INPUT_SPEC,
    ADDITION_INPUTS,
    ADDITION_OUTPUT_SPEC,
    DETECTOR_INPUT_SPEC,
    DETECTOR_OUTPUT_SPEC,
    infer_in_fresh_process,
    leftovers,
    make_image,
)
from modelpod.packers.onnx import inspect_source, pack_source
from modelpod.backends.onnx import spec_from_graph

pytestmark = pytest.mark.timeout(60)


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def addition_model() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Add", ["x", "y"], ["out"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["num_inputs"]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["num_inputs"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None])],
    )


def detector_model(seed: int = 0) -> onnx.ModelProto:
    """Conv features + per-pixel score; one box per pixel scoring above 0.5 (like the torch detector)."""
    rng = np.random.default_rng(seed)
    init = [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (1, 4, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([-0.2], np.float32), "b2"),
        numpy_helper.from_array(np.array(255.0, np.float32), "scale"),
        numpy_helper.from_array(np.array(0.5, np.float32), "threshold"),
        numpy_helper.from_array(np.array(2.0, np.float32), "half"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([3], np.int64), "three"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["image_f", "scale"], ["image_n"]),
        helper.make_node("Transpose", ["image_n"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["f1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["f1"], ["f1r"]),
        helper.make_node("Conv", ["f1r", "w2", "b2"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["prob"]),
        helper.make_node("Squeeze", ["prob", "one"], ["score_map"]),
        helper.make_node("Greater", ["score_map", "threshold"], ["keep"]),
        helper.make_node("NonZero", ["keep"], ["where_t"]),
        helper.make_node("Transpose", ["where_t"], ["where"], perm=[1, 0]),
        helper.make_node("GatherND", ["score_map", "where"], ["scores"]),
        helper.make_node("Slice", ["where", "one", "three", "one"], ["yx"]),
        helper.make_node("Cast", ["yx"], ["yx_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["yx_f", "half"], ["top_left"]),
        helper.make_node("Add", ["yx_f", "half"], ["bottom_right"]),
        helper.make_node("Concat", ["top_left", "bottom_right"], ["boxes"], axis=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", None, None, 3])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["num_det", 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["num_det"])],
        init,
    )


def test_addition_packs_verifies_and_runs_in_a_fresh_process(tmp_path: Path) -> None:
    package = modelpod.pack_onnx(
        tmp_path / "addition", name="addition", model=addition_model(), input_spec=ADDITION_INPUT_SPEC,
        output_spec=ADDITION_OUTPUT_SPEC, test_input_data=ADDITION_INPUTS,
        test_expected_out=ADDITION_EXPECTED,
    )
    assert (package / "model" / "model.onnx").is_file()
    out = infer_in_fresh_process(package, ADDITION_INPUTS, tmp_path / "run")
    np.testing.assert_array_equal(out["out"], [0, 2, 4, 6, 8])
    assert out["out"].dtype == np.float32


def test_wrong_expected_output_fails_packing_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="output 'out' differs"):
        modelpod.pack_onnx(
            tmp_path / "addition.tar.gz", name="addition", model=addition_model(),
            test_input_data=ADDITION_INPUTS, test_expected_out={"out": -ADDITION_EXPECTED["out"] - 1},
        )
    assert leftovers(tmp_path) == []


def test_spec_is_derived_from_the_graph(tmp_path: Path) -> None:
    package = modelpod.pack_onnx(tmp_path / "detector", name="detector", model=detector_model())
    with modelpod.load(package) as model:
        assert [s.to_dict() for s in model.spec.inputs] == [
            {"name": "image", "dtype": "uint8", "shape": ["batch", None, None, 3]}
        ]
        assert [s.to_dict() for s in model.spec.outputs] == [
            {"name": "boxes", "dtype": "float32", "shape": ["num_det", 4]},
            {"name": "scores", "dtype": "float32", "shape": ["num_det"]},
        ]
    # the addition graph: the named dim is a symbol, the unnamed output dim is None
    assert spec_from_graph(addition_model()) == (
        [{"name": "x", "dtype": "float32", "shape": ["num_inputs"]},
         {"name": "y", "dtype": "float32", "shape": ["num_inputs"]}],
        [{"name": "out", "dtype": "float32", "shape": [None]}],
    )


def test_conv_detector_with_symbolic_detection_count(tmp_path: Path) -> None:
    proto = detector_model()
    image = make_image()
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(["boxes", "scores"], {"image": image})
    assert 0 < len(scores) < image.size // 3
    package = modelpod.pack_onnx(
        tmp_path / "detector", name="detector", model=proto, input_spec=DETECTOR_INPUT_SPEC,
        output_spec=DETECTOR_OUTPUT_SPEC, test_input_data={"image": image},
        test_expected_out={"boxes": boxes, "scores": scores},
    )
    with modelpod.load(package) as model:
        out = model.infer({"image": make_image(batch=1, height=5, width=6, seed=9)})
        assert out["boxes"].shape == (len(out["scores"]), 4)
        assert np.all(out["scores"] > 0.5)
        # only the requested outputs are fetched from the session
        assert list(model.infer({"image": image}, outputs=["scores"])) == ["scores"]
        assert list(model._backend.run({"image": image}, ["scores"])) == ["scores"]
        with pytest.raises(modelpod.SpecError, match="input 'image'"):
            model.infer({"image": image[..., :2]})


def _echo_model(types: dict[str, int]) -> onnx.ModelProto:
    return _model(
        [helper.make_node("Identity", [f"{d}_in"], [f"{d}_out"]) for d in types],
        [helper.make_tensor_value_info(f"{d}_in", t, ["n"]) for d, t in types.items()],
        [helper.make_tensor_value_info(f"{d}_out", t, ["n"]) for d, t in types.items()],
    )


def test_every_dtype_round_trips_strings_included(tmp_path: Path) -> None:
    types = {
        "bool": TensorProto.BOOL, "int8": TensorProto.INT8, "int16": TensorProto.INT16,
        "int32": TensorProto.INT32, "int64": TensorProto.INT64, "uint8": TensorProto.UINT8,
        "uint16": TensorProto.UINT16, "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
        "float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
        "string": TensorProto.STRING,
    }
    inputs = {f"{d}_in": np.array([1, 0]).astype(d) for d in types if d not in ("string", "bool")}
    inputs["bool_in"] = np.array([True, False])
    inputs["uint64_in"] = np.array([0, 2**64 - 1], np.uint64)
    inputs["string_in"] = np.array(["héllo", ""], dtype=object)
    package = modelpod.pack_onnx(
        tmp_path / "echo", name="echo", model=_echo_model(types), test_input_data=inputs,
        test_expected_out={k.replace("_in", "_out"): v for k, v in inputs.items()},
    )
    with modelpod.load(package) as model:
        assert {s.name: s.dtype for s in model.spec.inputs} == {f"{d}_in": d for d in types}
        out = model.infer(inputs)
        for name, value in inputs.items():
            got = out[name.replace("_in", "_out")]
            assert got.dtype == value.dtype, name
            np.testing.assert_array_equal(got, value)
        # str as a fixed-width array and UTF-8 bytes are accepted for string tensors too
        more = dict(inputs, string_in=np.array(["ab", "c"]))
        assert list(model.infer(more, outputs=["string_out"])["string_out"]) == ["ab", "c"]
        more = dict(inputs, string_in=np.array(["é".encode(), b"x"], dtype=object))
        assert list(model.infer(more, outputs=["string_out"])["string_out"]) == ["é", "x"]
        with pytest.raises(modelpod.SpecError, match="UTF-8"):
            model.infer(dict(inputs, string_in=np.array([b"\xff", b"x"], dtype=object)))


def test_bfloat16_round_trips(tmp_path: Path) -> None:
    types = {"bfloat16": TensorProto.BFLOAT16, "float32": TensorProto.FLOAT}
    package = modelpod.pack_onnx(tmp_path / "echo", name="echo", model=_echo_model(types))
    inputs = {
        "bfloat16_in": np.array([1.5, -2.0, 3.0], ml_dtypes.bfloat16),
        "float32_in": np.array([1, 2, 3], np.float32),
    }
    with modelpod.load(package) as model:
        out = model.infer(inputs)
        assert out["bfloat16_out"].dtype == ml_dtypes.bfloat16 and out["float32_out"].dtype == np.float32
        np.testing.assert_array_equal(out["bfloat16_out"], inputs["bfloat16_in"])
        np.testing.assert_array_equal(out["float32_out"], inputs["float32_in"])
        assert list(model.infer(inputs, outputs=["float32_out"])) == ["float32_out"]
        empty = model.infer({k: v[:0] for k, v in inputs.items()})
        assert empty["bfloat16_out"].shape == (0,)


def test_string_inputs_with_bfloat16_outputs_give_a_clear_error(tmp_path: Path) -> None:
    types = {"bfloat16": TensorProto.BFLOAT16, "string": TensorProto.STRING}
    package = modelpod.pack_onnx(tmp_path / "echo", name="echo", model=_echo_model(types))
    inputs = {"bfloat16_in": np.array([1.5], ml_dtypes.bfloat16), "string_in": np.array(["a"], dtype=object)}
    with modelpod.load(package) as model:
        assert list(model.infer(inputs, outputs=["string_out"])["string_out"]) == ["a"]
        with pytest.raises(modelpod.BackendError, match="string inputs and return bfloat16 outputs"):
            model.infer(inputs)


def test_unsupported_graph_types_and_mismatched_specs_fail_at_pack_time(tmp_path: Path) -> None:
    complex_model = _model(
        [helper.make_node("Identity", ["z"], ["w"])],
        [helper.make_tensor_value_info("z", TensorProto.COMPLEX64, [2])],
        [helper.make_tensor_value_info("w", TensorProto.COMPLEX64, [2])],
    )
    with pytest.raises(ValueError, match="input 'z' has element type COMPLEX64"):
        modelpod.pack_onnx(tmp_path / "c", name="c", model=complex_model)
    wrong_dtype = [dict(ADDITION_INPUT_SPEC[0], dtype="float64"), ADDITION_INPUT_SPEC[1]]
    with pytest.raises(ValueError, match="input 'x': the spec says float64 but the ONNX graph says float32"):
        modelpod.pack_onnx(tmp_path / "a", name="a", model=addition_model(), input_spec=wrong_dtype)
    with pytest.raises(ValueError, match="'total'"):
        modelpod.pack_onnx(
            tmp_path / "a", name="a", model=addition_model(),
            output_spec=[{"name": "total", "dtype": "float32", "shape": [None]}],
        )
    assert leftovers(tmp_path) == []


def test_providers_option_is_stored_and_missing_providers_fall_back(tmp_path: Path) -> None:
    package = modelpod.pack_onnx(
        tmp_path / "addition", name="addition", model=addition_model(),
        providers=["NoSuchExecutionProvider", "CPUExecutionProvider"], intra_op_num_threads=1,
    )
    with pytest.warns(RuntimeWarning, match="NoSuchExecutionProvider"):
        model = modelpod.load(package)
    with model:
        assert model.manifest.platform_options["providers"] == ["NoSuchExecutionProvider", "CPUExecutionProvider"]
        np.testing.assert_array_equal(model.infer(ADDITION_INPUTS)["out"], ADDITION_EXPECTED["out"])


def test_cli_hooks(tmp_path: Path) -> None:
    source = tmp_path / "detector.onnx"
    onnx.save(detector_model(), str(source))
    inputs, outputs = inspect_source(source)
    assert inputs == [{"name": "image", "dtype": "uint8", "shape": ["batch", None, None, 3]}]
    assert [o["name"] for o in outputs] == ["boxes", "scores"]
    package = pack_source(source, tmp_path / "pkg", name="detector", test_input_data={"image": make_image()})
    with modelpod.load(package) as model:
        assert model.name == "detector" and model.platform == "onnx"
    with pytest.raises(ValueError, match="no named signatures"):
        pack_source(source, tmp_path / "other", name="d", signature="serving_default")
    with pytest.raises(ValueError, match="not an ONNX model"):
        inspect_source(Path(__file__))
