"""The tensorflow platform: GraphDef, frozen .pb and SavedModel packages of real TF models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import tf_models as tm
import modelpod
from modelpod.packers.tensorflow import inspect_signatures, inspect_source, pack_source, pack_tensorflow

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tf")


@pytest.fixture(scope="module")
def addition_packages(work: Path) -> dict[str, Path]:
    """The seed addition model packed three ways, each verified with the seed's test vectors."""
    common = dict(
        name="addition_model", input_spec=tm.ADD_INPUT_SPEC, output_spec=tm.ADD_OUTPUT_SPEC,
        test_input_data=tm.ADD_TEST_INPUT, test_expected_out=tm.ADD_TEST_EXPECTED,
    )
    frozen = tm.write_frozen_graph(tm.addition_graph_def(), work / "addition_frozen.pb")
    return {
        "graph_def": pack_tensorflow(
            work / "add_graphdef", graph_def=tm.addition_graph_def(),
            node_name_mapping=tm.ADD_NODE_NAME_MAPPING, **common,
        ),
        "frozen": pack_tensorflow(
            work / "add_frozen.tar.gz", frozen_graph_path=frozen,
            node_name_mapping=tm.ADD_NODE_NAME_MAPPING, **common,
        ),
        "saved_model": pack_tensorflow(
            work / "add_savedmodel", saved_model_dir=tm.addition_saved_model(work / "add_sm_src"), **common,
        ),
    }


def test_addition_packs_three_ways_and_infers_in_a_fresh_process(addition_packages: dict[str, Path]) -> None:
    results = tm.fresh_infer_addition(list(addition_packages.values()))
    for kind, path in addition_packages.items():
        got = results[str(path)]
        assert got["platform"] == "tensorflow", kind
        assert got["out"] == [0.0, 2.0, 4.0, 6.0, 8.0], kind
        assert got["dtype"] == "float32", kind


def test_graph_package_payload_and_options(addition_packages: dict[str, Path]) -> None:
    root = addition_packages["graph_def"]
    assert (root / "model" / "frozen_graph.pb").is_file()
    with modelpod.load(root) as model:
        opts = model.manifest.platform_options
        assert opts == {"format": "graph", "node_name_mapping": tm.ADD_NODE_NAME_MAPPING}
        out = model.infer({"x": [1.0, 2.0, 3.0, 4.0], "y": [5.0, 6.0, 7.0, 8.0]})
        np.testing.assert_array_equal(out["out"], np.array([6, 8, 10, 12], dtype=np.float32))
        # the shared symbol num_inputs still holds x and y to one size
        with pytest.raises(modelpod.SpecError, match="num_inputs"):
            model.infer({"x": np.zeros(3, np.float32), "y": np.zeros(4, np.float32)})


def test_saved_model_spec_is_derived_like_saved_model_cli(work: Path) -> None:
    folder = tm.addition_saved_model(work / "add_sm_derive")
    assert inspect_source(folder) == (
        [{"name": "x", "dtype": "float32", "shape": [None]}, {"name": "y", "dtype": "float32", "shape": [None]}],
        [{"name": "out", "dtype": "float32", "shape": [None]}],
    )
    path = pack_source(
        folder, work / "add_derived", name="add",
        test_input_data=tm.ADD_TEST_INPUT, test_expected_out=tm.ADD_TEST_EXPECTED,
    )
    with modelpod.load(path) as model:
        assert [s.to_dict() for s in model.spec.inputs] == [
            {"name": "x", "dtype": "float32", "shape": [None]}, {"name": "y", "dtype": "float32", "shape": [None]},
        ]
        assert model.manifest.platform_options["signature"] == "serving_default"
        assert (path / "model" / "saved_model" / "saved_model.pb").is_file()


@pytest.mark.parametrize("how", ["graph_def", "saved_model"])
def test_wrong_expected_output_fails_packing_and_leaves_nothing(work: Path, how: str) -> None:
    parent = work / f"wrong_{how}"
    parent.mkdir()
    kwargs = (
        dict(graph_def=tm.addition_graph_def(), node_name_mapping=tm.ADD_NODE_NAME_MAPPING,
             input_spec=tm.ADD_INPUT_SPEC, output_spec=tm.ADD_OUTPUT_SPEC)
        if how == "graph_def" else dict(saved_model_dir=tm.addition_saved_model(work / "wrong_src"))
    )
    with pytest.raises(ValueError, match=r"output 'out' differs .* max abs difference 1"):
        pack_tensorflow(
            parent / "pkg", name="add", test_input_data=tm.ADD_TEST_INPUT,
            test_expected_out={"out": np.arange(5, dtype=np.float32) * 2 + 1}, **kwargs,
        )
    assert list(parent.iterdir()) == []


def test_graph_packing_checks_the_mapping_and_dtypes(work: Path) -> None:
    common = dict(name="add", graph_def=tm.addition_graph_def(), output_spec=tm.ADD_OUTPUT_SPEC)
    with pytest.raises(ValueError, match="no entry for input 'y'"):
        pack_tensorflow(work / "bad1", input_spec=tm.ADD_INPUT_SPEC, **common,
                        node_name_mapping={"x": "some_namespace/in_x:0", "out": "some_namespace/out:0"})
    with pytest.raises(ValueError, match="'nope:0' is not a tensor of the graph"):
        pack_tensorflow(work / "bad2", input_spec=tm.ADD_INPUT_SPEC, **common,
                        node_name_mapping={**tm.ADD_NODE_NAME_MAPPING, "x": "nope:0"})
    int_spec = [{**tm.ADD_INPUT_SPEC[0], "dtype": "int32"}, tm.ADD_INPUT_SPEC[1]]
    with pytest.raises(ValueError, match="input 'x' .* spec says int32 but the model's tensor is float32"):
        pack_tensorflow(work / "bad3", input_spec=int_spec, node_name_mapping=tm.ADD_NODE_NAME_MAPPING, **common)
    with pytest.raises(ValueError, match="required"):
        pack_tensorflow(work / "bad4", name="add", graph_def=tm.addition_graph_def())
    assert not any((work / n).exists() for n in ("bad1", "bad2", "bad3", "bad4"))


# -- (c) a realistic detector: frozen graph, uint8 images, outputs sharing a symbol --------------------
@pytest.fixture(scope="module")
def detector(work: Path) -> tuple[Path, object]:
    graph_def = tm.detector_graph_def()
    frozen = tm.write_frozen_graph(graph_def, work / "detector.pb")
    image = tm.images(2, 32, 48)
    boxes, scores = tm.run_graph(graph_def, {"image:0": image}, ["detections/boxes:0", "detections/scores:0"])
    path = pack_tensorflow(
        work / "detector", name="detector", frozen_graph_path=frozen, node_name_mapping=tm.DETECTOR_MAPPING,
        input_spec=tm.DETECTOR_INPUT_SPEC, output_spec=tm.DETECTOR_OUTPUT_SPEC,
        test_input_data={"image": image}, test_expected_out={"boxes": boxes, "scores": scores},
    )
    return path, graph_def


def test_detector_runs_uint8_images_with_a_shared_detection_symbol(detector: tuple[Path, object]) -> None:
    path, graph_def = detector
    with modelpod.load(path) as model:
        for batch, h, w, seed in [(1, 64, 64, 5), (3, 16, 24, 6)]:
            image = tm.images(batch, h, w, seed)
            out = model.infer({"image": image})
            want_boxes, want_scores = tm.run_graph(
                graph_def, {"image:0": image}, ["detections/boxes:0", "detections/scores:0"]
            )
            assert out["boxes"].shape[0] == out["scores"].shape[0] > 0
            np.testing.assert_allclose(out["boxes"], want_boxes, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out["scores"], want_scores, rtol=1e-5, atol=1e-6)
            assert np.all(out["scores"] > 0.5)
        only = model.infer({"image": tm.images(1, 8, 8, 7)}, outputs=["scores"])
        assert list(only) == ["scores"]
        with pytest.raises(modelpod.SpecError, match="expected uint8"):
            model.infer({"image": tm.images(1, 8, 8).astype(np.float32)})
        with pytest.raises(modelpod.SpecError, match="dim 3 is 4, must be 3"):
            model.infer({"image": np.zeros((1, 8, 8, 4), np.uint8)})


# -- (d) two signatures, one with string tensors ------------------------------------------------------------
@pytest.fixture(scope="module")
def two_signatures(work: Path) -> Path:
    folder = tm.two_signature_saved_model(work / "two_sig_src")
    return pack_tensorflow(
        work / "two_sig", name="two", saved_model_dir=folder,
        test_input_data={"features": np.array([[1, 2], [3, 4]], np.float32)},
        test_expected_out={"score": np.array([9, 21], np.float32)},
    )


def test_saved_model_signatures_are_listed_and_named_requests_work(two_signatures: Path, work: Path) -> None:
    sigs = inspect_signatures(work / "two_sig_src")
    assert sigs["classify"] == (
        [{"name": "text", "dtype": "string", "shape": [None]}],
        [{"name": "class_id", "dtype": "int64", "shape": [None]}, {"name": "label", "dtype": "string", "shape": [None]}],
    )
    assert set(sigs) == {"serving_default", "classify"}
    with modelpod.load(two_signatures) as model:
        assert set(model.signatures) == {"classify"}
        np.testing.assert_allclose(model.infer({"features": [[0.5, 0.5]]})["score"], [3.0])
        np.testing.assert_allclose(
            model.infer({"features": [[1.0, 1.0]]}, signature="serving_default")["score"], [6.0]
        )
        out = model.infer({"text": np.array(["dog", b"cat", "fish"], dtype=object)}, signature="classify")
        np.testing.assert_array_equal(out["class_id"], np.array([1, 0, -1], np.int64))
        assert out["label"].dtype == object
        assert list(out["label"]) == [b"DOG!", b"CAT!", b"FISH!"]
        # plain str lists and fixed-width unicode arrays go in too
        assert list(model.infer({"text": ["bird"]}, signature="classify")["label"]) == [b"BIRD!"]
        assert model.infer({"text": np.array(["cat", "bird"])}, signature="classify")["class_id"].tolist() == [0, 2]
        with pytest.raises(modelpod.SpecError, match="unknown signature 'nope'"):
            model.infer({"text": ["dog"]}, signature="nope")
        with pytest.raises(modelpod.SpecError, match="expected string"):
            model.infer({"text": np.array([1.0], np.float32)}, signature="classify")


def test_default_signature_can_be_chosen_by_name(work: Path, two_signatures: Path) -> None:
    path = pack_tensorflow(
        work / "two_sig_classify", name="two", saved_model_dir=work / "two_sig_src", signature="classify",
        test_input_data={"text": ["cat"]}, test_expected_out={"class_id": [0], "label": np.array(["CAT!"])},
    )
    with modelpod.load(path) as model:
        assert [s.name for s in model.spec.inputs] == ["text"]
        assert set(model.signatures) == {"serving_default"}
        assert model.infer({"text": ["dog"]})["class_id"].tolist() == [1]
        assert model.infer({"features": [[1.0, 0.0]]}, signature="serving_default")["score"].tolist() == [3.0]
    with pytest.raises(ValueError, match=r"no signature 'missing'; its signatures are \['classify', 'serving_default'\]"):
        pack_tensorflow(work / "two_sig_missing", name="two", saved_model_dir=work / "two_sig_src", signature="missing")


# -- (e) dtypes ---------------------------------------------------------------------------------------------
def test_dtypes_round_trip(work: Path) -> None:
    inputs = {
        "f16": np.array([0.5, -1.25, 1000.0], np.float16),
        "i8": np.array([-128 + 1, 0, 127], np.int8),
        "u8": np.array([0, 1, 255], np.uint8),
        "flag": np.array([True, False, True]),
        "text": np.array(["a", "bé", ""], dtype=object),
    }
    expected = {
        "f16_out": inputs["f16"] * np.float16(2),
        "i8_out": -inputs["i8"],
        "u8_out": np.uint8(255) - inputs["u8"],
        "flag_out": ~inputs["flag"],
        "text_out": np.array(["aa", "bébé", ""], dtype=object),
    }
    path = pack_tensorflow(
        work / "dtypes", name="dtypes", saved_model_dir=tm.dtypes_saved_model(work / "dtypes_src"),
        test_input_data=inputs, test_expected_out=expected,
    )
    with modelpod.load(path) as model:
        assert {s.name: s.dtype for s in model.spec.outputs} == {
            "f16_out": "float16", "i8_out": "int8", "u8_out": "uint8", "flag_out": "bool", "text_out": "string",
        }
        out = model.infer(inputs)
        for name, want in expected.items():
            if name == "text_out":
                assert [v.decode() for v in out[name]] == list(want)
            else:
                assert out[name].dtype == want.dtype, name
                np.testing.assert_array_equal(out[name], want)


def test_unsupported_dtypes_fail_at_pack_time(work: Path) -> None:
    folder = tm.complex_saved_model(work / "complex_src")
    with pytest.raises(ValueError, match="input 'z' has TensorFlow dtype complex64, which modelpod cannot carry"):
        pack_tensorflow(work / "complex", name="c", saved_model_dir=folder)
    with pytest.raises(ValueError, match="complex64"):
        inspect_source(folder)
    with pytest.raises(ValueError, match="unknown dtype 'complex64'"):
        pack_tensorflow(
            work / "complex_graph", name="c", graph_def=tm.addition_graph_def(), node_name_mapping=tm.ADD_NODE_NAME_MAPPING,
            input_spec=[{**tm.ADD_INPUT_SPEC[0], "dtype": "complex64"}, tm.ADD_INPUT_SPEC[1]],
            output_spec=tm.ADD_OUTPUT_SPEC,
        )
    assert not (work / "complex").exists() and not (work / "complex_graph").exists()
