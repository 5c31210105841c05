#!/usr/bin/env python
"""Pack the bundled example models into a model repository.

    python examples/build_examples.py OUTDIR

writes ``OUTDIR/repository/<model_name>/1/`` for every example (one sub-folder per model, numbered
versions), each a package with its test vectors checked at pack time. Re-running overwrites.

* ``addition``: python platform, ``out = x + y`` (code in ``examples/addition/``).
* ``mlp``: python platform, numpy MLP ``y = relu(x @ W1) @ W2`` (code in ``examples/mlp/``), the
  weights drawn from a fixed seed and packaged as ``.npy`` data files.
* ``simple_sequence``: Triton's stateful example model (``OUTPUT = INPUT``, plus one on a
  sequence's first request; ``examples/simple_sequence/``), what Triton's sequence client examples call.
* ``repeat_int32``: Triton's decoupled example model (one stream response per element of ``IN``;
  ``examples/repeat/``), what Triton's ``simple_grpc_custom_repeat.py`` calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

import modelpod

HERE = Path(__file__).resolve().parent
VERSION = "1"


def build_addition(target: Path) -> Path:
    x = np.arange(5, dtype=np.float32)
    y = np.arange(5, dtype=np.float32)
    return modelpod.pack_python(
        target,
        name="addition",
        input_spec=[
            {"name": "x", "dtype": "float32", "shape": ("num_inputs",)},
            {"name": "y", "dtype": "float32", "shape": ("num_inputs",)},
        ],
        output_spec=[{"name": "out", "dtype": "float32", "shape": ("num_inputs",)}],
        entrypoint_package="main",
        entrypoint="get_model",
        code_path_spec=[{"python_root": str(HERE / "addition"), "dirs_to_package": [""]}],
        test_input_data={"x": x, "y": y},
        test_expected_out={"out": x + y},
        overwrite=True,
    )


MLP_SEED = 0
MLP_IN, MLP_HIDDEN, MLP_OUT = 256, 1024, 10


def mlp_weights(seed: int = MLP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The MLP's weights: He-scaled normal draws from a fixed seed."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((MLP_IN, MLP_HIDDEN), dtype=np.float32) * np.float32(np.sqrt(2 / MLP_IN))
    w2 = rng.standard_normal((MLP_HIDDEN, MLP_OUT), dtype=np.float32) * np.float32(np.sqrt(2 / MLP_HIDDEN))
    return w1, w2


def mlp_reference(x: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    return (np.maximum(x @ w1, 0.0) @ w2).astype(np.float32)


def build_mlp(target: Path) -> Path:
    w1, w2 = mlp_weights()
    x = np.random.default_rng(MLP_SEED + 1).standard_normal((4, MLP_IN), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="modelpod-mlp-") as tmp:
        np.save(Path(tmp) / "w1.npy", w1)
        np.save(Path(tmp) / "w2.npy", w2)
        return modelpod.pack_python(
            target,
            name="mlp",
            input_spec=[{"name": "x", "dtype": "float32", "shape": ("batch", MLP_IN)}],
            output_spec=[{"name": "y", "dtype": "float32", "shape": ("batch", MLP_OUT)}],
            code_path_spec=[{"python_root": str(HERE / "mlp"), "dirs_to_package": [""]}],
            data_paths=[str(Path(tmp) / "w1.npy"), str(Path(tmp) / "w2.npy")],
            test_input_data={"x": x},
            test_expected_out={"y": mlp_reference(x, w1, w2)},
            overwrite=True,
        )


def build_simple_sequence(target: Path) -> Path:
    x = np.array([[5]], dtype=np.int32)
    return modelpod.pack_python(
        target,
        name="simple_sequence",
        input_spec=[{"name": "INPUT", "dtype": "int32", "shape": ("batch", 1)}],
        output_spec=[{"name": "OUTPUT", "dtype": "int32", "shape": ("batch", 1)}],
        code_path_spec=[{"python_root": str(HERE / "simple_sequence"), "dirs_to_package": [""]}],
        test_input_data={"INPUT": x},
        test_expected_out={"OUTPUT": x + 1},  # in process, a call is a sequence of one: it starts
        overwrite=True,
    )


def build_repeat(target: Path) -> Path:
    return modelpod.pack_python(
        target,
        name="repeat_int32",
        input_spec=[{"name": "IN", "dtype": "int32", "shape": ("n",)},
                    {"name": "DELAY", "dtype": "uint32", "shape": ("n",)},
                    {"name": "WAIT", "dtype": "uint32", "shape": (1,)}],
        output_spec=[{"name": "OUT", "dtype": "int32", "shape": (1,)},
                     {"name": "IDX", "dtype": "uint32", "shape": (1,)}],
        code_path_spec=[{"python_root": str(HERE / "repeat"), "dirs_to_package": [""]}],
        test_input_data={"IN": np.array([4, 5, 6], np.int32), "DELAY": np.zeros(3, np.uint32),
                         "WAIT": np.zeros(1, np.uint32)},
        test_expected_out={"OUT": np.array([6], np.int32), "IDX": np.array([2], np.uint32)},  # the last answer
        overwrite=True,
    )


#: model name -> function that packs it at the path it is given
EXAMPLES: dict[str, Callable[[Path], Path]] = {
    "addition": build_addition,
    "mlp": build_mlp,
    "simple_sequence": build_simple_sequence,
    "repeat_int32": build_repeat,
}


def build(outdir: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Pack the examples (all, or ``names``) into ``outdir/repository``; return name -> package."""
    repository = Path(outdir) / "repository"
    built = {}
    for name in names or list(EXAMPLES):
        built[name] = EXAMPLES[name](repository / name / VERSION)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="folder to write; the repository is OUTDIR/repository")
    parser.add_argument("--only", action="append", choices=sorted(EXAMPLES), help="pack only this example")
    args = parser.parse_args(argv)
    for name, path in build(args.outdir, args.only).items():
        print(f"packed {name} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
