"""Packing ONNX graphs: ``pack_onnx`` and the CLI hooks (``inspect_source``, ``pack_source``)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import onnx

from modelpod.backends.onnx import (
    MODEL_FILE,
    check_spec_against_graph,
    load_graph,
    spec_from_graph,
)
from modelpod.packers.flow import PackOptions, pack
from modelpod.packers.sources import pack_file


def _copy_with_external_data(source: Path, target: Path, graph: onnx.ModelProto) -> None:
    """Copy an .onnx file and any external-data files its initializers point to (same relative paths)."""
    shutil.copyfile(source, target)
    for init in graph.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in init.external_data if e.key == "location"), None)
        if location is None:
            continue
        src = (source.parent / location).resolve()
        dest = (target.parent / location).resolve()
        if not src.is_relative_to(source.parent.resolve()) or not src.is_file():
            raise ValueError(f"{source}: external data file {location!r} is missing or outside its folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copyfile(src, dest)


def pack_onnx(
    package_path: str | Path,
    *,
    name: str,
    model: onnx.ModelProto | None = None,
    model_path: str | Path | None = None,
    input_spec: Sequence[Mapping[str, Any]] | None = None,
    output_spec: Sequence[Mapping[str, Any]] | None = None,
    providers: Sequence[Any] | None = None,
    intra_op_num_threads: int | None = None,
    **options: Unpack[PackOptions],
) -> Path:
    """Pack an ONNX model (an ``onnx.ModelProto`` or a ``.onnx`` file with its external data).

    ``input_spec`` / ``output_spec`` default to what the graph declares (named dims become symbols);
    when given, their names and dtypes must agree with the graph, and ``output_spec`` may list a
    subset of the graph's outputs. ``providers`` is stored and used when the package is loaded.
    Packing runs ``test_input_data`` through a fresh load of the written package and raises
    ValueError naming the output when it differs from ``test_expected_out``.
    """
    if (model is None) == (model_path is None):
        raise ValueError("give exactly one of model (an onnx.ModelProto) or model_path (a .onnx file)")
    if model is not None:
        if not isinstance(model, onnx.ModelProto):
            raise TypeError(f"model must be an onnx.ModelProto, got {type(model).__name__}")
        graph = model
    else:
        model_path = Path(model_path)  # type: ignore[arg-type]
        if not model_path.is_file():
            raise ValueError(f"model_path {model_path} is not a file")
        graph = load_graph(model_path)
    check_spec_against_graph(graph, input_spec, output_spec)
    if input_spec is None or output_spec is None:
        spec_from_graph(graph)  # fail before anything is written when the graph cannot give a spec

    def write(root: Path) -> dict[str, Any]:
        target = root / MODEL_FILE
        target.parent.mkdir(parents=True)
        if model is not None:
            onnx.save(model, str(target))
        else:
            _copy_with_external_data(Path(model_path), target, graph)  # type: ignore[arg-type]
        options: dict[str, Any] = {}
        if providers is not None:
            options["providers"] = [list(p) if isinstance(p, (list, tuple)) else p for p in providers]
        if intra_op_num_threads is not None:
            options["intra_op_num_threads"] = int(intra_op_num_threads)
        return options

    def derive(root: Path, _options: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        return spec_from_graph(load_graph(root / MODEL_FILE))

    return pack(
        package_path, name=name, platform="onnx", write_payload=write,
        input_spec=input_spec, output_spec=output_spec, derive_spec=derive, **options,
    )


def inspect_source(source: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """For the CLI: (input_spec, output_spec) read from a raw ``.onnx`` file's graph."""
    return spec_from_graph(load_graph(Path(source)))


def pack_source(source: Path, output: Path, **options: Any) -> Path:
    """For the CLI: pack a raw ``.onnx`` file; specs default to the graph's."""
    return pack_file(pack_onnx, "model_path", source, output, platform="ONNX", **options)

