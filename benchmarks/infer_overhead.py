"""How much does ``model.infer`` cost on top of calling the framework directly?

For each platform the same addition model (``out = x + y``, float32 [n, d]) is packed, loaded with
``modelpod.load`` and timed against the plain framework call a user would write without modelpod
(same model file, same inputs, numpy in and numpy out):

==============  ==========================================================================
platform        framework baseline
==============  ==========================================================================
python          the packaged function called directly
torchscript     ``torch.jit.load`` of the same file, ``torch.from_numpy`` in, ``.numpy()`` out,
                under ``torch.inference_mode()``
pytorch         the same eager ``nn.Module``, same conversions
onnx            ``session.run`` on the very InferenceSession the loaded package holds (two sessions
                alternating on a small machine slow each other through their spinning thread pools)
tensorflow      ``tf.saved_model.load(...).signatures["serving_default"]`` (the TF2 way)
keras           a ``tf.function`` over ``model(x, training=False)`` (the fast Keras call)
==============  ==========================================================================

Sizes: ``small`` is [1, 16] and ``large`` [1024, 1024] (4 MiB per input). Calls of both kinds are
timed in paired rounds (order alternating); the table shows the fastest round of each kind (the one
least disturbed by other work); the JSON also keeps medians and the median paired difference.
The target: for large inputs, an overhead of at most 20 us and at most 5% of the framework call.
Prints a table and writes ``benchmarks/results/infer_overhead.json``.

Run: ``.venv/bin/python benchmarks/infer_overhead.py [--rounds 31] [--platforms onnx,torchscript]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform as platform_module
import statistics
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import modelpod

RESULTS = Path(__file__).resolve().parent / "results" / "infer_overhead.json"
SIZES = {"small": (1, 16), "large": (1024, 1024)}
INPUT_SPEC = [
    {"name": "x", "dtype": "float32", "shape": ("n", "d")},
    {"name": "y", "dtype": "float32", "shape": ("n", "d")},
]
OUTPUT_SPEC = [{"name": "out", "dtype": "float32", "shape": ("n", "d")}]

Call = Callable[[np.ndarray, np.ndarray], np.ndarray]


class FromModel:
    """A baseline that must be made from the loaded model (to share its framework object)."""

    def __init__(self, make: Callable[[modelpod.Model], Call]) -> None:
        self.make = make


#: A case builder: (work folder) -> (package path, direct framework call or FromModel).
Builder = Callable[[Path], tuple[Path, "Call | FromModel"]]

PYTHON_CODE = textwrap.dedent(
    """
    def add(x, y):
        return {"out": x + y}

    def get_model(data_dir):
        return add
    """
)
PYTORCH_CODE = textwrap.dedent(
    """
    import torch

    class Add(torch.nn.Module):
        def forward(self, x, y):
            return {"out": x + y}

    def get_model(data_dir):
        return Add()
    """
)
TORCHSCRIPT_CODE = textwrap.dedent(
    """
    from typing import Dict
    import torch

    class Add(torch.nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
            return {"out": x + y}
    """
)


def _code_dir(work: Path, source: str) -> Path:
    code = work / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "main.py").write_text(source)
    return code


def _import_file(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_python(work: Path) -> tuple[Path, Call]:
    code = _code_dir(work, PYTHON_CODE)
    package = modelpod.pack_python(
        work / "pkg", name="add", input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC,
        code_path_spec=[{"python_root": str(code), "dirs_to_package": [""]}],
    )
    fn = _import_file(code / "main.py", "_bench_python_add").get_model("")
    return package, lambda x, y: fn(x=x, y=y)["out"]


def build_pytorch(work: Path) -> tuple[Path, Call]:
    import torch

    code = _code_dir(work, PYTORCH_CODE)
    package = modelpod.pack_pytorch(
        work / "pkg", name="add", input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC,
        code_path_spec=[{"python_root": str(code), "dirs_to_package": [""]}],
    )
    module = _import_file(code / "main.py", "_bench_pytorch_add").get_model("").eval()

    def direct(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x), torch.from_numpy(y))["out"].numpy()

    return package, direct


def build_torchscript(work: Path) -> tuple[Path, Call]:
    import torch

    warnings.filterwarnings("ignore", message="`torch.jit", category=DeprecationWarning)
    source = work / "add_ts.py"
    source.write_text(TORCHSCRIPT_CODE)
    scripted = torch.jit.script(_import_file(source, "_bench_ts_add").Add())
    saved = work / "add.pt"
    torch.jit.save(scripted, str(saved))
    package = modelpod.pack_torchscript(
        work / "pkg", name="add", module_path=saved, input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC,
    )
    module = torch.jit.load(str(saved)).eval()

    def direct(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(x=torch.from_numpy(x), y=torch.from_numpy(y))["out"].numpy()

    return package, direct


def build_onnx(work: Path) -> tuple[Path, FromModel]:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["out"])], "add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", "d"]) for n in ("x", "y")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", "d"])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    saved = work / "add.onnx"
    onnx.save(proto, str(saved))
    package = modelpod.pack_onnx(work / "pkg", name="add", model_path=saved)

    def direct(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return session.run(["out"], {"x": x, "y": y})[0]

    # Same file, same options; the session is built once the package is loaded (see main): two
    # sessions alternating on a small machine fight through their spinning thread pools, so the
    # baseline calls the very session the loaded package holds, straight through onnxruntime.
    session: Any = None

    def bind(model: modelpod.Model) -> Call:
        nonlocal session
        session = model._backend.session  # noqa: SLF001 - the framework object itself
        return direct

    return package, FromModel(bind)


def build_tensorflow(work: Path) -> tuple[Path, Call]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    class Add(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="x"), tf.TensorSpec([None, None], tf.float32, name="y"),
        ])
        def serve(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"out": x + y}

    module = Add()
    saved = work / "saved_model"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    package = modelpod.pack_tensorflow(
        work / "pkg", name="add", saved_model_dir=saved, input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC,
    )
    fn = tf.saved_model.load(str(saved)).signatures["serving_default"]
    return package, lambda x, y: fn(x=tf.constant(x), y=tf.constant(y))["out"].numpy()


def build_keras(work: Path) -> tuple[Path, Call]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    x_in = keras.Input(shape=(None,), name="x", dtype="float32")
    y_in = keras.Input(shape=(None,), name="y", dtype="float32")
    out = keras.layers.Add(name="out")([x_in, y_in])
    model = keras.Model(inputs={"x": x_in, "y": y_in}, outputs={"out": out})
    package = modelpod.pack_keras(work / "pkg", name="add", model=model, input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC)
    fn = tf.function(lambda x, y: model({"x": x, "y": y}, training=False)["out"])
    return package, lambda x, y: fn(tf.constant(x), tf.constant(y)).numpy()


BUILDERS: dict[str, tuple[str, Builder]] = {
    # platform -> (module that must import, builder)
    "python": ("modelpod.backends.python", build_python),
    "torchscript": ("modelpod.backends.torchscript", build_torchscript),
    "pytorch": ("modelpod.backends.pytorch", build_pytorch),
    "onnx": ("modelpod.backends.onnx", build_onnx),
    "tensorflow": ("modelpod.backends.tensorflow", build_tensorflow),
    "keras": ("modelpod.backends.keras", build_keras),
}


def time_pair(direct: Call, infer: Call, x: np.ndarray, y: np.ndarray, rounds: int) -> dict[str, float]:
    """Per-call microseconds of the framework call and of ``infer``, measured in paired rounds.

    Each round times a block of direct calls and a block of ``infer`` calls back to back (the order
    alternates between rounds). The headline numbers are the fastest round of each kind (the round
    least disturbed by other work on the machine, as ``timeit`` recommends); the medians and the
    median of the per-round differences are kept too.
    """
    expected = direct(x, y)
    np.testing.assert_allclose(infer(x, y), expected)
    single = time.perf_counter()
    for _ in range(5):
        direct(x, y)
    per_call = (time.perf_counter() - single) / 5
    calls = max(5, min(2000, int(0.02 / max(per_call, 1e-7))))  # ~20 ms per block
    samples: dict[str, list[float]] = {"direct": [], "infer": []}
    for i in range(rounds):
        pair = (("direct", direct), ("infer", infer))
        for kind, fn in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn(x, y)
            samples[kind].append((time.perf_counter_ns() - start) / calls / 1000)
    return {
        "framework_us": min(samples["direct"]),
        "modelpod_us": min(samples["infer"]),
        "framework_median_us": statistics.median(samples["direct"]),
        "modelpod_median_us": statistics.median(samples["infer"]),
        "paired_overhead_median_us": statistics.median(
            b - a for a, b in zip(samples["direct"], samples["infer"])
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--platforms", default=",".join(BUILDERS))
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    rng = np.random.default_rng(0)
    inputs = {
        size: (rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32))
        for size, shape in SIZES.items()
    }
    with tempfile.TemporaryDirectory(prefix="modelpod-bench-") as tmp:
        for name in args.platforms.split(","):
            module_name, builder = BUILDERS[name]
            if importlib.util.find_spec(module_name) is None:
                skipped[name] = f"{module_name} does not exist yet"
                print(f"skipping {name}: {skipped[name]}", file=sys.stderr)
                continue
            work = Path(tmp) / name
            work.mkdir()
            try:
                package, direct = builder(work)
            except ImportError as exc:
                skipped[name] = f"framework not installed ({exc})"
                print(f"skipping {name}: {skipped[name]}", file=sys.stderr)
                continue
            with modelpod.load(package) as model:
                if isinstance(direct, FromModel):
                    direct = direct.make(model)
                def infer(x: np.ndarray, y: np.ndarray, _model: Any = model) -> np.ndarray:
                    return _model.infer({"x": x, "y": y})["out"]

                for size, (x, y) in inputs.items():
                    t = time_pair(direct, infer, x, y, args.rounds)
                    overhead = t["modelpod_us"] - t["framework_us"]
                    rows.append({
                        "platform": name, "size": size, "shape": list(SIZES[size]),
                        **{k: round(v, 2) for k, v in t.items()},
                        "overhead_us": round(overhead, 2),
                        "ratio": round(t["modelpod_us"] / t["framework_us"], 4),
                        "within_target": overhead <= min(20.0, 0.05 * t["framework_us"]) if size == "large" else None,
                    })

    header = f"{'platform':<12} {'size':<6} {'framework us':>13} {'modelpod us':>12} {'overhead us':>12} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['platform']:<12} {row['size']:<6} {row['framework_us']:>13.1f} {row['modelpod_us']:>12.1f} "
            f"{row['overhead_us']:>12.1f} {row['ratio']:>7.3f}"
        )
    for name, why in skipped.items():
        print(f"(skipped {name}: {why})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "infer_overhead",
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform_module.python_version(),
                    "platform": platform_module.platform()},
        "sizes": {k: list(v) for k, v in SIZES.items()},
        "rounds": args.rounds,
        "target": "large inputs: overhead <= 20 us and <= 5% of the framework call",
        "results": rows,
        "skipped": skipped,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
