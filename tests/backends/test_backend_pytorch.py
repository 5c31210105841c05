"""The pytorch platform: eager torch models shipped as code + weights, packed, verified and run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

import modelpod
from tests.helpers.frameworks_common import (
    ADDITION_EXPECTED,
    ADDITION_INPUT_SPEC,
    ADDITION_INPUTS,
    ADDITION_OUTPUT_SPEC,
    DETECTOR_INPUT_SPEC,
    DETECTOR_OUTPUT_SPEC,
    DETECTOR_SOURCE,
    import_source,
    infer_in_fresh_process,
    leftovers,
    make_image,
)

pytestmark = pytest.mark.timeout(60)

ADDITION_CODE = textwrap.dedent(
    """
    import torch


    class Addition(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.eval_called = False

        def eval(self):
            self.eval_called = True
            return super().eval()

        def forward(self, x, y):
            assert isinstance(x, torch.Tensor) and torch.is_inference_mode_enabled()
            assert self.eval_called and not self.training
            return {"out": x + y}


    def get_model(data_dir):
        return Addition()
    """
)


def _code(tmp_path: Path, source: str, name: str = "main") -> list[dict]:
    root = tmp_path / "code"
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text(source)
    return [{"python_root": str(root), "dirs_to_package": [""]}]


def test_addition_packs_verifies_and_runs_in_a_fresh_process(tmp_path: Path) -> None:
    package = modelpod.pack_pytorch(
        tmp_path / "addition", name="addition", input_spec=ADDITION_INPUT_SPEC,
        output_spec=ADDITION_OUTPUT_SPEC, code_path_spec=_code(tmp_path, ADDITION_CODE),
        test_input_data=ADDITION_INPUTS, test_expected_out=ADDITION_EXPECTED,
    )
    out = infer_in_fresh_process(package, ADDITION_INPUTS, tmp_path / "run")
    np.testing.assert_array_equal(out["out"], [0, 2, 4, 6, 8])
    assert out["out"].dtype == np.float32


def test_wrong_expected_output_fails_packing_and_leaves_nothing(tmp_path: Path) -> None:
    code = _code(tmp_path / "src", ADDITION_CODE)
    with pytest.raises(ValueError, match="output 'out' differs"):
        modelpod.pack_pytorch(
            tmp_path / "out" / "addition", name="addition", input_spec=ADDITION_INPUT_SPEC,
            output_spec=ADDITION_OUTPUT_SPEC, code_path_spec=code, test_input_data=ADDITION_INPUTS,
            test_expected_out={"out": np.array([0, 2, 4, 6, 9], np.float32)},
        )
    assert leftovers(tmp_path / "out") == []


def test_conv_detector_from_code_and_weights(tmp_path: Path) -> None:
    torch.manual_seed(1)
    detector = import_source(tmp_path / "ref", "detector", DETECTOR_SOURCE).Detector().eval()
    weights = tmp_path / "weights.pt"
    torch.save(detector.state_dict(), weights)
    image = make_image(seed=5)
    with torch.inference_mode():
        reference = {k: v.numpy() for k, v in detector(torch.from_numpy(image)).items()}
    assert len(reference["scores"]) > 0
    package = modelpod.pack_pytorch(
        tmp_path / "detector.zip", name="detector", input_spec=DETECTOR_INPUT_SPEC,
        output_spec=DETECTOR_OUTPUT_SPEC, code_path_spec=_code(tmp_path / "pkgsrc", DETECTOR_SOURCE),
        data_paths=[weights], test_input_data={"image": image}, test_expected_out=reference,
    )
    out = infer_in_fresh_process(package, {"image": image}, tmp_path / "run")
    np.testing.assert_allclose(out["scores"], reference["scores"], rtol=1e-5)
    np.testing.assert_array_equal(out["boxes"], reference["boxes"])
    assert out["boxes"].shape == (len(out["scores"]), 4)


def test_a_model_breaking_the_shared_symbol_is_reported(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import torch

        def get_model(data_dir):
            def detect(image):
                return {"boxes": torch.zeros(3, 4), "scores": torch.zeros(2)}
            return detect
        """
    )
    package = modelpod.pack_pytorch(
        tmp_path / "bad", name="bad", input_spec=DETECTOR_INPUT_SPEC, output_spec=DETECTOR_OUTPUT_SPEC,
        code_path_spec=_code(tmp_path, code),
    )
    with modelpod.load(package) as model, pytest.raises(modelpod.ModelError, match="num_det"):
        model.infer({"image": make_image(batch=1)})


def test_dtypes_round_trip_and_strings_are_refused(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import torch

        def get_model(data_dir):
            def echo(**tensors):
                # positional outputs, in output-spec order
                return [tensors[name] * 1 if tensors[name].dtype != torch.bool else ~tensors[name]
                        for name in ("f16", "bf16", "i8", "u8", "b", "i64")]
            return echo
        """
    )
    dtypes = {"f16": "float16", "bf16": "bfloat16", "i8": "int8", "u8": "uint8", "b": "bool", "i64": "int64"}
    spec_in = [{"name": n, "dtype": d, "shape": ("n",)} for n, d in dtypes.items()]
    spec_out = [{"name": n + "_out", "dtype": d, "shape": ("n",)} for n, d in dtypes.items()]
    inputs = {
        "f16": np.array([0.5, -1], np.float16), "bf16": np.array([1.5, 3], ml_dtypes.bfloat16),
        "i8": np.array([-128, 127], np.int8), "u8": np.array([0, 255], np.uint8),
        "b": np.array([True, False]), "i64": np.array([-(2**63), 2**63 - 1], np.int64),
    }
    package = modelpod.pack_pytorch(
        tmp_path / "echo", name="echo", input_spec=spec_in, output_spec=spec_out,
        code_path_spec=_code(tmp_path, code),
    )
    with modelpod.load(package) as model:
        out = model.infer(inputs)
    for name, value in inputs.items():
        expected = ~value if value.dtype == np.bool_ else value
        assert out[name + "_out"].dtype == value.dtype
        np.testing.assert_array_equal(out[name + "_out"], expected)

    spec_strings = [*spec_out, {"name": "label", "dtype": "string", "shape": ("n",)}]
    with pytest.raises(ValueError, match="output 'label' is a string tensor"):
        modelpod.pack_pytorch(
            tmp_path / "strings", name="strings", input_spec=spec_in, output_spec=spec_strings,
            code_path_spec=_code(tmp_path, code),
        )
    assert not (tmp_path / "strings").exists()
