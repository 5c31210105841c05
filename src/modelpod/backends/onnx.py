"""The onnx platform: an ONNX graph saved as ``model/model.onnx``, run by onnxruntime.

The graph knows its own tensors, so ``pack_onnx`` derives the spec when none is given: a named
dim (``dim_param``) becomes a symbol, an unnamed dynamic dim becomes ``None``, a fixed dim an int.
Every spec dtype is supported, strings included (onnxruntime takes and returns object arrays of
``str``; ``bytes`` inputs are decoded as UTF-8) and bfloat16 (passed as OrtValues, since
onnxruntime's numpy bridge has no bfloat16; one call cannot both take string inputs and return
bfloat16 outputs).

Platform options in the manifest: ``providers`` (onnxruntime execution providers in order of
preference, default ``["CPUExecutionProvider"]``; ones this machine lacks are skipped with a
warning) and ``intra_op_num_threads`` (default: the CPUs this process may use).
"""

from __future__ import annotations

import ctypes
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort

from modelpod.backends.base import Backend
from modelpod.errors import BackendError
from modelpod.spec import SpecError, parse_spec

MODEL_FILE = "model/model.onnx"
DEFAULT_PROVIDERS = ["CPUExecutionProvider"]

#: ONNX TensorProto element type -> spec dtype name.
ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.STRING: "string",
}

_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


# -- spec from the graph ------------------------------------------------------------------------
def _tensor_spec(value: onnx.ValueInfoProto, role: str) -> dict[str, Any]:
    """The spec of one graph input/output; ValueError for what a spec cannot describe."""
    if not value.type.HasField("tensor_type"):
        kind = value.type.WhichOneof("value") or "unknown"
        raise ValueError(
            f"ONNX graph {role} '{value.name}' is a {kind}, not a tensor; modelpod passes tensors only"
        )
    tensor = value.type.tensor_type
    dtype = ONNX_DTYPES.get(tensor.elem_type)
    if dtype is None:
        type_name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise ValueError(
            f"ONNX graph {role} '{value.name}' has element type {type_name}, which modelpod specs "
            f"cannot carry; supported: {', '.join(sorted(set(ONNX_DTYPES.values())))}"
        )
    if not tensor.HasField("shape"):
        raise ValueError(
            f"ONNX graph {role} '{value.name}' has no shape (unknown rank); give "
            f"{role}_spec explicitly"
        )
    shape: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_param") and dim.dim_param:
            shape.append(dim.dim_param)
        elif dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(None)
    return {"name": value.name, "dtype": dtype, "shape": shape}


def _graph_io(model: onnx.ModelProto) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """The graph's real inputs (initializers listed as inputs by old exporters excluded) and outputs."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return inputs, list(model.graph.output)


def spec_from_graph(model: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(input_spec, output_spec) read from an ONNX graph's declared inputs and outputs."""
    inputs, outputs = _graph_io(model)
    return [_tensor_spec(v, "input") for v in inputs], [_tensor_spec(v, "output") for v in outputs]


def check_spec_against_graph(
    model: onnx.ModelProto, input_spec: Sequence[Any] | None, output_spec: Sequence[Any] | None
) -> None:
    """ValueError when a given spec names tensors the graph lacks or gives them another dtype."""
    graph_inputs, graph_outputs = _graph_io(model)
    for role, spec, values in (("input", input_spec, graph_inputs), ("output", output_spec, graph_outputs)):
        if spec is None:
            continue
        by_name = {v.name: v for v in values}
        declared = [s.name for s in parse_spec(spec)]
        missing = sorted(set(declared) - set(by_name))
        if missing:
            raise ValueError(
                f"{role}_spec names {missing}, which the ONNX graph does not have; its {role}s are "
                f"{sorted(by_name)}"
            )
        if role == "input":
            absent = sorted(set(by_name) - set(declared))
            if absent:
                raise ValueError(f"input_spec leaves out graph input(s) {absent}; every input needs a spec")
        for tensor in parse_spec(spec):
            value = by_name[tensor.name]
            if value.type.HasField("tensor_type"):
                graph_dtype = ONNX_DTYPES.get(value.type.tensor_type.elem_type)
                if graph_dtype is not None and graph_dtype != tensor.dtype:
                    raise ValueError(
                        f"{role} '{tensor.name}': the spec says {tensor.dtype} but the ONNX graph "
                        f"says {graph_dtype}"
                    )


def load_graph(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ValueError(f"{path} is not an ONNX model onnx.load reads: {exc}") from None


# -- running ------------------------------------------------------------------------------------
def _usable_cpus() -> int:
    """``MODELPOD_THREADS`` (a model's ``cpu`` setting, in its worker), else the CPUs this process may use."""
    configured = os.environ.get("MODELPOD_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _providers(requested: Sequence[Any] | None) -> list[Any]:
    """The requested providers this onnxruntime build has (a warning for the others), CPU at worst."""
    available = set(ort.get_available_providers())
    wanted = list(requested or DEFAULT_PROVIDERS)
    usable = [p for p in wanted if (p[0] if isinstance(p, (list, tuple)) else p) in available]
    skipped = [p for p in wanted if p not in usable]
    if skipped:
        warnings.warn(
            f"onnxruntime here lacks execution provider(s) {skipped}; running on "
            f"{usable or DEFAULT_PROVIDERS}", RuntimeWarning, stacklevel=3,
        )
    return usable or list(DEFAULT_PROVIDERS)


def _string_input(name: str, array: np.ndarray) -> np.ndarray:
    """onnxruntime wants object arrays of str: U arrays are converted, bytes decoded as UTF-8."""
    if array.dtype.kind == "U":
        return array.astype(object)
    if array.dtype.kind == "S" or any(isinstance(v, bytes) for v in array.flat):
        try:
            return np.array(
                [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.flat], dtype=object
            ).reshape(array.shape)
        except UnicodeDecodeError as exc:
            raise SpecError(
                f"input '{name}': ONNX string tensors hold UTF-8 text, but a bytes value is not "
                f"UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
    return array


def _bfloat16_ortvalue(array: np.ndarray) -> ort.OrtValue:
    """An OrtValue holding a copy of a bfloat16 array (onnxruntime's numpy bridge lacks bfloat16)."""
    value = ort.OrtValue.ortvalue_from_shape_and_type(list(array.shape), onnx.TensorProto.BFLOAT16)
    if array.size:
        ctypes.memmove(value.data_ptr(), np.ascontiguousarray(array).ctypes.data, array.nbytes)
    return value


class OnnxBackend(Backend):
    """Runs an ONNX graph in an onnxruntime InferenceSession, fetching only the outputs asked for."""

    platform = "onnx"

    def __init__(self, root: Path, manifest: Any) -> None:
        super().__init__(root, manifest)
        options = manifest.platform_options
        path = root / options.get("model_file", MODEL_FILE)
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = int(options.get("intra_op_num_threads") or _usable_cpus())
        session_options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options, providers=_providers(options.get("providers")),
            )
        except Exception as exc:
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from exc
        self._output_names = [spec["name"] for spec in manifest.output_spec]
        self._string_inputs = {s["name"] for s in manifest.input_spec if s["dtype"] == "string"}
        self._bf16 = {
            s["name"] for s in (*manifest.input_spec, *manifest.output_spec) if s["dtype"] == "bfloat16"
        }

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> Mapping[str, Any]:
        names = list(outputs) if outputs is not None else self._output_names
        feed: dict[str, Any] = dict(inputs)
        for name in self._string_inputs:
            feed[name] = _string_input(name, feed[name])
        if not self._bf16:
            return dict(zip(names, self.session.run(names, feed)))
        for name, array in feed.items():
            if array.dtype == _BFLOAT16:
                feed[name] = _bfloat16_ortvalue(array)
        if not any(name in self._bf16 for name in names):
            return dict(zip(names, self.session.run(names, feed)))
        return self._run_ortvalues(feed, names)

    def _run_ortvalues(self, feed: Mapping[str, Any], names: Sequence[str]) -> dict[str, np.ndarray]:
        """Run with OrtValues, the only onnxruntime Python path that returns bfloat16 outputs."""
        if self._string_inputs:
            raise BackendError(
                f"model '{self.manifest.name}': onnxruntime's Python API cannot take string inputs "
                "and return bfloat16 outputs in one call; request the bfloat16 outputs separately "
                "with outputs=[...] or cast them to float32 inside the graph"
            )
        values = {
            name: value if isinstance(value, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(value)
            for name, value in feed.items()
        }
        result = {}
        for name, value in zip(names, self.session.run_with_ort_values(names, values)):
            if name in self._bf16:
                out = np.empty(tuple(value.shape()), dtype=_BFLOAT16)
                if out.size:
                    ctypes.memmove(out.ctypes.data, value.data_ptr(), out.nbytes)
                result[name] = out
            else:
                result[name] = value.numpy()
        return result

    def close(self) -> None:
        self.session = None


# -- packing ------------------------------------------------------------------------------------
