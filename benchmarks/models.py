"""The models the benchmarks serve, packed as modelpod packages.

* ``add``: out = x + y, float32 of shape (num_inputs,) (the seed addition problem).
* ``mlp``: y = relu(x @ W1) @ W2, x float32 (batch, 256), W1 256x1024, W2 1024x10, fixed seed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import modelpod

CODE = Path(__file__).resolve().parent / "model_code"


def mlp_weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((256, 1024), dtype=np.float32) * 0.05
    w2 = rng.standard_normal((1024, 10), dtype=np.float32) * 0.05
    return w1, w2


def mlp_reference(x: np.ndarray) -> np.ndarray:
    w1, w2 = mlp_weights()
    return np.maximum(x @ w1, 0) @ w2


def pack_add(path: Path) -> Path:
    x = np.arange(5, dtype=np.float32)
    return modelpod.pack_python(
        path, name="add", code_path_spec=[{"python_root": str(CODE / "add"), "dirs_to_package": [""]}],
        input_spec=[{"name": "x", "dtype": "float32", "shape": ("num_inputs",)},
                    {"name": "y", "dtype": "float32", "shape": ("num_inputs",)}],
        output_spec=[{"name": "out", "dtype": "float32", "shape": ("num_inputs",)}],
        test_input_data={"x": x, "y": x}, test_expected_out={"out": x + x}, overwrite=True,
    )


def pack_mlp(path: Path) -> Path:
    w1, w2 = mlp_weights()
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "w1.npy", w1)
        np.save(Path(tmp) / "w2.npy", w2)
        x = np.random.default_rng(1).standard_normal((2, 256), dtype=np.float32)
        return modelpod.pack_python(
            path, name="mlp", code_path_spec=[{"python_root": str(CODE / "mlp"), "dirs_to_package": [""]}],
            data_paths=[str(Path(tmp) / "w1.npy"), str(Path(tmp) / "w2.npy")],
            input_spec=[{"name": "x", "dtype": "float32", "shape": ("batch", 256)}],
            output_spec=[{"name": "y", "dtype": "float32", "shape": ("batch", 10)}],
            test_input_data={"x": x}, test_expected_out={"y": mlp_reference(x)}, overwrite=True,
        )


def pack_identity(path: Path, elements: int = 1 << 20, requirements: list[str] | None = None) -> Path:
    """out = x for float32 vectors (any length); test vector of ``elements`` floats; ``requirements``
    give it an environment of its own."""
    x = np.arange(elements, dtype=np.float32)
    return modelpod.pack_python(
        path, name="identity",
        code_path_spec=[{"python_root": str(CODE / "identity"), "dirs_to_package": [""]}],
        input_spec=[{"name": "x", "dtype": "float32", "shape": ("n",)}],
        output_spec=[{"name": "out", "dtype": "float32", "shape": ("n",)}],
        test_input_data={"x": x}, test_expected_out={"out": x}, overwrite=True, requirements=requirements,
    )
