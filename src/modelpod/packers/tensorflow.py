"""Packing TensorFlow SavedModels and graphs: ``pack_tensorflow`` and the CLI hooks."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

from modelpod.backends.tensorflow import (
    FROZEN_GRAPH,
    SAVED_MODEL,
    as_graph_def,
    check_graph,
    default_mapping,
    read_graph_def,
)
from modelpod.backends.tf_signatures import (  # noqa: F401 (CLI hooks)
    DEFAULT_SIGNATURE,
    DEFAULT_TAGS,
    Spec,
    _check_tensor,
    infos_spec,
    inspect_signatures,
    inspect_source,
    pick_signature,
    signature_infos,
    spec_dtype,
)
from modelpod.packers.flow import PackOptions, pack
from modelpod.spec import parse_spec


def _saved_model_options(
    folder: Path, signature: str | None, tags: Sequence[str], input_spec: Spec | None, output_spec: Spec | None
) -> tuple[dict[str, Any], Spec, Spec]:
    """Platform options for a SavedModel plus the default signature's spec (given, or derived)."""
    infos = signature_infos(folder, tags)
    default = pick_signature(infos, signature, folder)
    info = infos[default]
    if isinstance(info, str):
        raise ValueError(f"signature '{default}': {info}")
    keys = {"input": {i.key: i for i in info.inputs}, "output": {i.key: i for i in info.outputs}}
    derived: dict[str, Spec | None] = {"input": None, "output": None}
    for role, given in (("input", input_spec), ("output", output_spec)):
        if given is None:
            derived[role] = infos_spec(default, info.inputs if role == "input" else info.outputs, role)
            continue
        names = [s["name"] for s in given]
        if role == "input" and sorted(names) != sorted(keys[role]):
            raise ValueError(
                f"input_spec names {names} but signature '{default}' takes inputs {sorted(keys[role])}"
            )
        for spec in given:
            found = keys[role].get(spec["name"])
            if found is None:
                raise ValueError(
                    f"output_spec names '{spec['name']}' but signature '{default}' has outputs "
                    f"{sorted(keys[role])}"
                )
            what = f"signature '{default}' {role} '{spec['name']}'"
            _check_tensor(spec, spec_dtype(found.dtype, what), found.dims, what)
        derived[role] = list(given)
    others: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, other in infos.items():
        if name == default:
            continue
        if isinstance(other, str):
            skipped[name] = other
            continue
        try:
            ins, outs = other.spec()
        except ValueError as exc:
            skipped[name] = str(exc)
            continue
        others[name] = {"input_spec": ins, "output_spec": outs}
    options: dict[str, Any] = {"format": "saved_model", "signature": default, "tags": list(tags)}
    if others:
        options["signatures"] = others
    if skipped:
        options["skipped_signatures"] = skipped
    assert derived["input"] is not None and derived["output"] is not None
    return options, derived["input"], derived["output"]


def pack_tensorflow(
    package_path: str | Path,
    *,
    name: str,
    graph_def: Any = None,
    frozen_graph_path: str | Path | None = None,
    saved_model_dir: str | Path | None = None,
    node_name_mapping: Mapping[str, str] | None = None,
    signature: str | None = DEFAULT_SIGNATURE,
    tags: Sequence[str] = DEFAULT_TAGS,
    input_spec: Sequence[Mapping[str, Any]] | None = None,
    output_spec: Sequence[Mapping[str, Any]] | None = None,
    **options: Unpack[PackOptions],
) -> Path:
    """Pack a TensorFlow model (Neuropod's ``create_tensorflow_neuropod``, plus SavedModels).

    Give exactly one of ``graph_def`` (a GraphDef or tf.Graph), ``frozen_graph_path`` (a binary
    frozen GraphDef) or ``saved_model_dir``. Graphs need ``input_spec``, ``output_spec`` and
    ``node_name_mapping`` (spec name -> graph tensor such as ``"some_namespace/in_x:0"``; without
    it, spec name ``x`` maps to tensor ``x:0``). SavedModels need neither: ``signature`` picks the
    default signature (None: serving_default, or the only one) and the spec is derived from it
    unless given. Spec and model must agree on names, dtypes and ranks; packing raises ValueError
    otherwise, and when ``test_expected_out`` differs from what the packaged model returns.
    """
    sources = [s for s in (graph_def, frozen_graph_path, saved_model_dir) if s is not None]
    if len(sources) != 1:
        raise ValueError("give exactly one of graph_def, frozen_graph_path or saved_model_dir")
    in_spec = [s.to_dict() for s in parse_spec(input_spec)] if input_spec is not None else None
    out_spec = [s.to_dict() for s in parse_spec(output_spec)] if output_spec is not None else None
    derived: dict[str, Spec] = {}

    if saved_model_dir is not None:
        folder = Path(saved_model_dir)
        if not folder.is_dir():
            raise ValueError(f"saved_model_dir {folder} is not a folder")
        if node_name_mapping is not None:
            raise ValueError("node_name_mapping is for graphs; a SavedModel's signature names its tensors")

        def write(root: Path) -> dict[str, Any]:
            options, ins, outs = _saved_model_options(folder, signature, tags, in_spec, out_spec)
            derived["input"], derived["output"] = ins, outs
            shutil.copytree(folder, root / SAVED_MODEL)
            return options

    else:
        if in_spec is None or out_spec is None:
            raise ValueError("input_spec and output_spec are required when packing a TensorFlow graph")
        mapping = dict(node_name_mapping) if node_name_mapping is not None else default_mapping([*in_spec, *out_spec])
        if graph_def is not None:
            graph = as_graph_def(graph_def)
        else:
            if not Path(frozen_graph_path).is_file():  # type: ignore[arg-type]
                raise ValueError(f"frozen_graph_path {frozen_graph_path} is not a file")
            graph = read_graph_def(Path(frozen_graph_path))  # type: ignore[arg-type]
        check_graph(graph, mapping, in_spec, out_spec)

        def write(root: Path) -> dict[str, Any]:
            target = root / FROZEN_GRAPH
            target.parent.mkdir(parents=True)
            if frozen_graph_path is not None:
                shutil.copyfile(frozen_graph_path, target)
            else:
                target.write_bytes(graph.SerializeToString(deterministic=True))
            return {"format": "graph", "node_name_mapping": mapping}

    def derive(_root: Path, _options: Mapping[str, Any]) -> tuple[Spec, Spec]:
        return derived["input"], derived["output"]

    return pack(
        package_path, name=name, platform="tensorflow", write_payload=write,
        input_spec=in_spec, output_spec=out_spec, derive_spec=derive, **options,
    )


def pack_source(
    source: Path,
    output: Path,
    *,
    name: str,
    input_spec: Sequence[Mapping[str, Any]] | None = None,
    output_spec: Sequence[Mapping[str, Any]] | None = None,
    test_input_data: Mapping[str, Any] | None = None,
    test_expected_out: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    signature: str | None = None,
) -> Path:
    """CLI entry: pack a SavedModel folder (or a frozen .pb whose tensors are named like the spec)."""
    source = Path(source)
    common: dict[str, Any] = dict(
        name=name, input_spec=input_spec, output_spec=output_spec, test_input_data=test_input_data,
        test_expected_out=test_expected_out, overwrite=overwrite,
    )
    if source.is_dir():
        return pack_tensorflow(output, saved_model_dir=source, signature=signature, **common)
    return pack_tensorflow(output, frozen_graph_path=source, **common)

