"""The keras platform: Keras 3 models (tensorflow backend) packed as model/model.keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import tf_models as tm
import keras
import modelpod
from modelpod.packers.keras import inspect_source, pack_keras, pack_source

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keras")


@pytest.fixture(scope="module")
def addition_packages(work: Path) -> dict[str, Path]:
    """The seed addition model packed from a keras.Model, a .keras file and a legacy .h5 file."""
    common = dict(
        name="addition_model", input_spec=tm.ADD_INPUT_SPEC, output_spec=tm.ADD_OUTPUT_SPEC,
        test_input_data=tm.ADD_TEST_INPUT, test_expected_out=tm.ADD_TEST_EXPECTED,
    )
    model = tm.addition_keras()
    model.save(work / "addition.keras")
    model.save(work / "addition.h5")
    return {
        "model": pack_keras(work / "add_model", model=model, **common),
        "keras_file": pack_keras(work / "add_file.zip", model_path=work / "addition.keras", **common),
        "h5_file": pack_keras(work / "add_h5", model_path=work / "addition.h5", **common),
    }


def test_addition_packs_and_infers_in_a_fresh_process(addition_packages: dict[str, Path]) -> None:
    results = tm.fresh_infer_addition(list(addition_packages.values()))
    for kind, path in addition_packages.items():
        got = results[str(path)]
        assert got["platform"] == "keras", kind
        assert got["out"] == [0.0, 2.0, 4.0, 6.0, 8.0], kind
        assert got["dtype"] == "float32", kind


def test_keras_file_is_copied_as_is(addition_packages: dict[str, Path], work: Path) -> None:
    with modelpod.load(addition_packages["keras_file"]) as model:
        assert (model.root / "model" / "model.keras").read_bytes() == (work / "addition.keras").read_bytes()
        out = model.infer({"x": [1.0, 2.0, 3.0, 4.0], "y": [5.0, 6.0, 7.0, 8.0]})
        np.testing.assert_array_equal(out["out"], np.array([6, 8, 10, 12], np.float32))


def test_spec_is_derived_from_the_model(work: Path) -> None:
    assert inspect_source(work / "addition.keras") == (
        [{"name": "x", "dtype": "float32", "shape": [None]}, {"name": "y", "dtype": "float32", "shape": [None]}],
        [{"name": "out", "dtype": "float32", "shape": [None]}],
    )
    path = pack_source(
        work / "addition.keras", work / "add_derived", name="add",
        test_input_data=tm.ADD_TEST_INPUT, test_expected_out=tm.ADD_TEST_EXPECTED,
    )
    with modelpod.load(path) as model:
        assert [s.name for s in model.spec.inputs] == ["x", "y"]
        assert [s.name for s in model.spec.outputs] == ["out"]


def test_node_name_mapping_renames_spec_tensors(work: Path) -> None:
    path = pack_keras(
        work / "add_renamed", name="add", model=tm.addition_keras(),
        input_spec=[{"name": "a", "dtype": "float32", "shape": ("n",)}, {"name": "b", "dtype": "float32", "shape": ("n",)}],
        output_spec=[{"name": "total", "dtype": "float32", "shape": ("n",)}],
        node_name_mapping={"a": "x", "b": "y", "total": "out"},
        test_input_data={"a": [1.0, 2.0], "b": [10.0, 20.0]}, test_expected_out={"total": [11.0, 22.0]},
    )
    with modelpod.load(path) as model:
        assert model.infer({"a": [0.5], "b": [0.25]})["total"].tolist() == [0.75]


def test_wrong_expected_output_fails_packing_and_leaves_nothing(work: Path) -> None:
    parent = work / "wrong"
    parent.mkdir()
    with pytest.raises(ValueError, match=r"output 'out' differs .* max abs difference 1"):
        pack_keras(
            parent / "pkg", name="add", model=tm.addition_keras(), test_input_data=tm.ADD_TEST_INPUT,
            test_expected_out={"out": np.arange(5, dtype=np.float32) * 2 + 1},
        )
    assert list(parent.iterdir()) == []


def test_spec_that_does_not_fit_the_model_fails_at_pack_time(work: Path) -> None:
    model = tm.addition_keras()
    with pytest.raises(ValueError, match=r"input_spec names \['x', 'z'\] but the model's inputs are \['x', 'y'\]"):
        pack_keras(work / "bad1", name="a", model=model,
                   input_spec=[tm.ADD_INPUT_SPEC[0], {**tm.ADD_INPUT_SPEC[1], "name": "z"}])
    with pytest.raises(ValueError, match="input 'x': the spec says float16 but the model's tensor is float32"):
        pack_keras(work / "bad2", name="a", model=model,
                   input_spec=[{**tm.ADD_INPUT_SPEC[0], "dtype": "float16"}, tm.ADD_INPUT_SPEC[1]])
    with pytest.raises(ValueError, match="unknown dtype 'complex64'"):
        pack_keras(work / "bad3", name="a", model=model,
                   output_spec=[{"name": "out", "dtype": "complex64", "shape": [None]}])
    with pytest.raises(ValueError, match="exactly one of model"):
        pack_keras(work / "bad4", name="a")
    assert not any((work / n).exists() for n in ("bad1", "bad2", "bad3", "bad4"))


# -- a conv net on uint8 images, two outputs sharing the batch symbol -------------------------------------
@pytest.fixture(scope="module")
def conv(work: Path) -> tuple[Path, keras.Model]:
    model = tm.keras_conv_net()
    image = tm.images(2, 32, 40)
    prob, emb = (np.asarray(t) for t in model(image, training=False))
    path = pack_keras(
        work / "conv", name="conv", model=model,
        input_spec=tm.KERAS_CONV_INPUT_SPEC, output_spec=tm.KERAS_CONV_OUTPUT_SPEC,
        test_input_data={"image": image}, test_expected_out={"class_prob": prob, "embedding": emb},
    )
    return path, model


def test_conv_net_on_uint8_images(conv: tuple[Path, keras.Model]) -> None:
    path, reference = conv
    with modelpod.load(path) as model:
        for batch, h, w, seed in [(1, 16, 16, 3), (4, 24, 20, 4)]:
            image = tm.images(batch, h, w, seed)
            out = model.infer({"image": image})
            want_prob, want_emb = (np.asarray(t) for t in reference(image, training=False))
            assert out["class_prob"].shape == (batch, 4) and out["embedding"].shape == (batch, 8)
            np.testing.assert_allclose(out["class_prob"], want_prob, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out["embedding"], want_emb, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out["class_prob"].sum(axis=1), 1.0, rtol=1e-5)
        assert list(model.infer({"image": tm.images(1, 8, 8)}, outputs=["embedding"])) == ["embedding"]
        with pytest.raises(modelpod.SpecError, match="expected uint8"):
            model.infer({"image": tm.images(1, 8, 8).astype(np.float32)})


def test_conv_net_spec_derived_from_model(work: Path, conv: tuple[Path, keras.Model]) -> None:
    _, reference = conv
    path = pack_keras(work / "conv_derived", name="conv", model=reference)
    with modelpod.load(path) as model:
        assert [s.to_dict() for s in model.spec.inputs] == [
            {"name": "image", "dtype": "uint8", "shape": [None, None, None, 3]}
        ]
        assert [s.to_dict() for s in model.spec.outputs] == [
            {"name": "class_prob", "dtype": "float32", "shape": [None, 4]},
            {"name": "embedding", "dtype": "float32", "shape": [None, 8]},
        ]
