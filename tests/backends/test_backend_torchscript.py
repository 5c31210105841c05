"""The torchscript platform: real TorchScript modules packed, verified, reloaded and run."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

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
from modelpod.backends.torch_tensors import to_numpy, to_torch
from modelpod.packers.torchscript import inspect_source, pack_source

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),  # our own script/save calls
]


class Addition(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"out": x + y}


class SumAndDiff(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return x + y, x - y


class Echo(torch.nn.Module):
    """Returns every input as '<name>_out' (dtype round trips)."""

    def forward(
        self, b: torch.Tensor, i8: torch.Tensor, u8: torch.Tensor, i16: torch.Tensor, i32: torch.Tensor,
        i64: torch.Tensor, u16: torch.Tensor, u32: torch.Tensor, u64: torch.Tensor, f16: torch.Tensor,
        bf16: torch.Tensor, f32: torch.Tensor, f64: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        named: List[Tuple[str, torch.Tensor]] = [
            ("b", b), ("i8", i8), ("u8", u8), ("i16", i16), ("i32", i32), ("i64", i64), ("u16", u16),
            ("u32", u32), ("u64", u64), ("f16", f16), ("bf16", bf16), ("f32", f32), ("f64", f64),
        ]
        out: Dict[str, torch.Tensor] = {}
        for name, value in named:
            out[name + "_out"] = value.clone()
        return out


def _pack_addition(path: Path, **kwargs) -> Path:
    return modelpod.pack_torchscript(
        path, name="addition", module=torch.jit.script(Addition()), input_spec=ADDITION_INPUT_SPEC,
        output_spec=ADDITION_OUTPUT_SPEC, test_input_data=ADDITION_INPUTS, **kwargs,
    )


def test_addition_packs_verifies_and_runs_in_a_fresh_process(tmp_path: Path) -> None:
    package = _pack_addition(tmp_path / "addition", test_expected_out=ADDITION_EXPECTED)
    assert (package / "model" / "model.pt").is_file()
    out = infer_in_fresh_process(package, ADDITION_INPUTS, tmp_path / "run")
    np.testing.assert_array_equal(out["out"], [0, 2, 4, 6, 8])
    assert out["out"].dtype == np.float32


def test_addition_as_archive_and_from_a_saved_file(tmp_path: Path) -> None:
    saved = tmp_path / "addition.pt"
    torch.jit.save(torch.jit.script(Addition()), str(saved))
    archive = modelpod.pack_torchscript(
        tmp_path / "addition.tar.gz", name="addition", module_path=saved,
        input_spec=ADDITION_INPUT_SPEC, output_spec=ADDITION_OUTPUT_SPEC,
        test_input_data=ADDITION_INPUTS, test_expected_out=ADDITION_EXPECTED,
    )
    with modelpod.load(archive) as model:
        assert model.platform == "torchscript"
        np.testing.assert_array_equal(model.infer({"x": [1.0, 2.0], "y": [3.0, 4.0]})["out"], [4, 6])


def test_wrong_expected_output_fails_packing_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="output 'out' differs"):
        _pack_addition(tmp_path / "addition", test_expected_out={"out": np.ones(5, np.float32)})
    assert leftovers(tmp_path) == []


def test_tuple_outputs_map_onto_the_output_spec_by_position(tmp_path: Path) -> None:
    spec_out = [
        {"name": "sum", "dtype": "float32", "shape": ("n",)},
        {"name": "diff", "dtype": "float32", "shape": ("n",)},
    ]
    spec_in = [{"name": "x", "dtype": "float32", "shape": ("n",)}, {"name": "y", "dtype": "float32", "shape": ("n",)}]
    package = modelpod.pack_torchscript(
        tmp_path / "sd", name="sd", module=torch.jit.script(SumAndDiff()), input_spec=spec_in,
        output_spec=spec_out, test_input_data={"x": [3.0], "y": [1.0]},
        test_expected_out={"sum": [4.0], "diff": [2.0]},
    )
    with modelpod.load(package) as model:
        out = model.infer({"x": np.array([5, 1], np.float32), "y": np.array([2, 2], np.float32)})
        np.testing.assert_array_equal(out["sum"], [7, 3])
        np.testing.assert_array_equal(out["diff"], [3, -1])
        assert list(model.infer({"x": [1.0], "y": [1.0]}, outputs=["diff"])) == ["diff"]


def test_tuple_with_the_wrong_number_of_outputs_is_a_model_error(tmp_path: Path) -> None:
    package = modelpod.pack_torchscript(
        tmp_path / "sd", name="sd", module=torch.jit.script(SumAndDiff()),
        input_spec=ADDITION_INPUT_SPEC, output_spec=ADDITION_OUTPUT_SPEC,
    )
    with modelpod.load(package) as model, pytest.raises(modelpod.ModelError, match="2 value"):
        model.infer(ADDITION_INPUTS)


def test_conv_detector_with_symbolic_detection_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    detector = import_source(tmp_path / "src", "detector", DETECTOR_SOURCE).Detector().eval()
    image = make_image()
    with torch.inference_mode():
        reference = {k: v.numpy() for k, v in detector(torch.from_numpy(image)).items()}
    assert 0 < len(reference["scores"]) < image.shape[0] * image.shape[1] * image.shape[2]
    package = modelpod.pack_torchscript(
        tmp_path / "detector", name="detector", module=torch.jit.script(detector),
        input_spec=DETECTOR_INPUT_SPEC, output_spec=DETECTOR_OUTPUT_SPEC,
        test_input_data={"image": image}, test_expected_out=reference,
    )
    with modelpod.load(package) as model:
        out = model.infer({"image": make_image(batch=1, height=7, width=9, seed=3)})
        assert out["boxes"].shape == (len(out["scores"]), 4)
        assert out["boxes"].dtype == np.float32 and np.all((out["scores"] > 0.5) & (out["scores"] < 1))
        with pytest.raises(modelpod.SpecError, match="image"):
            model.infer({"image": image.astype(np.float32)})


def test_every_torch_dtype_round_trips(tmp_path: Path) -> None:
    dtypes = {
        "b": "bool", "i8": "int8", "u8": "uint8", "i16": "int16", "i32": "int32", "i64": "int64",
        "u16": "uint16", "u32": "uint32", "u64": "uint64", "f16": "float16", "bf16": "bfloat16",
        "f32": "float32", "f64": "float64",
    }
    spec_in = [{"name": n, "dtype": d, "shape": (2,)} for n, d in dtypes.items()]
    spec_out = [{"name": n + "_out", "dtype": d, "shape": (2,)} for n, d in dtypes.items()]
    inputs = {
        n: (np.array([True, False]) if d == "bool" else np.array([1, 2]).astype(
            ml_dtypes.bfloat16 if d == "bfloat16" else d))
        for n, d in dtypes.items()
    }
    inputs["u64"] = np.array([0, 2**64 - 1], np.uint64)
    inputs["i8"] = np.array([-128, 127], np.int8)
    package = modelpod.pack_torchscript(
        tmp_path / "echo", name="echo", module=torch.jit.script(Echo()), input_spec=spec_in,
        output_spec=spec_out, test_input_data=inputs,
        test_expected_out={n + "_out": v for n, v in inputs.items()},
    )
    with modelpod.load(package) as model:
        out = model.infer(inputs)
    for n, value in inputs.items():
        assert out[n + "_out"].dtype == value.dtype, n
        np.testing.assert_array_equal(out[n + "_out"], value)


def test_string_tensors_are_refused_at_pack_time(tmp_path: Path) -> None:
    spec_in = [{"name": "text", "dtype": "string", "shape": (None,)}]
    with pytest.raises(ValueError, match="input 'text' is a string tensor.*torch has no string"):
        modelpod.pack_torchscript(
            tmp_path / "p", name="p", module=torch.jit.script(Addition()), input_spec=spec_in,
            output_spec=ADDITION_OUTPUT_SPEC,
        )
    assert leftovers(tmp_path) == []


def test_an_eager_module_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="torch.jit.script"):
        modelpod.pack_torchscript(
            tmp_path / "p", name="p", module=Addition(), input_spec=ADDITION_INPUT_SPEC,
            output_spec=ADDITION_OUTPUT_SPEC,
        )


def test_conversion_shares_memory_except_for_read_only_arrays() -> None:
    writable = np.arange(6, dtype=np.float32)
    assert np.shares_memory(to_torch(writable).numpy(), writable)
    read_only = np.frombuffer(np.arange(6, dtype=np.float32).tobytes(), dtype=np.float32)
    tensor = to_torch(read_only)
    assert not np.shares_memory(tensor.numpy(), read_only)
    np.testing.assert_array_equal(tensor.numpy(), read_only)
    reversed_view = writable[::-1]
    np.testing.assert_array_equal(to_torch(reversed_view).numpy(), reversed_view)
    bf16 = np.array([1.5, -2.0], ml_dtypes.bfloat16)
    assert to_torch(bf16).dtype == torch.bfloat16
    back = to_numpy(to_torch(bf16))
    assert back.dtype == bf16.dtype and np.shares_memory(back, bf16)
    grad = torch.ones(2, requires_grad=True) * 2
    np.testing.assert_array_equal(to_numpy(grad), [2, 2])


def test_cli_hooks(tmp_path: Path) -> None:
    saved = tmp_path / "addition.pt"
    torch.jit.save(torch.jit.script(Addition()), str(saved))
    with pytest.raises(ValueError, match="--input-spec"):
        inspect_source(saved)
    with pytest.raises(ValueError, match="--input-spec"):
        pack_source(saved, tmp_path / "pkg", name="addition")
    package = pack_source(
        saved, tmp_path / "pkg", name="addition", input_spec=ADDITION_INPUT_SPEC,
        output_spec=ADDITION_OUTPUT_SPEC, test_input_data=ADDITION_INPUTS,
        test_expected_out=ADDITION_EXPECTED,
    )
    with modelpod.load(package) as model:
        np.testing.assert_array_equal(model.infer(ADDITION_INPUTS)["out"], ADDITION_EXPECTED["out"])
