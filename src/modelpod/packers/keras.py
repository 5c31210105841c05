"""Packing Keras models: ``pack_keras`` and the CLI hooks (``inspect_source``, ``pack_source``)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import keras

from modelpod.backends.keras import (
    MODEL_FILE,
    Spec,
    check_spec,
    load_keras_file,
    model_io,
    require_tf_backend,
)
from modelpod.packers.flow import PackOptions, pack
from modelpod.packers.sources import pack_file
from modelpod.spec import parse_spec


def pack_keras(
    package_path: str | Path,
    *,
    name: str,
    model: keras.Model | None = None,
    model_path: str | Path | None = None,
    input_spec: Sequence[Mapping[str, Any]] | None = None,
    output_spec: Sequence[Mapping[str, Any]] | None = None,
    node_name_mapping: Mapping[str, str] | None = None,
    **options: Unpack[PackOptions],
) -> Path:
    """Pack a Keras 3 model (Neuropod's ``create_keras_neuropod``) as ``model/model.keras``.

    Give ``model`` (a keras.Model with defined inputs) or ``model_path`` (a ``.keras`` file, copied
    as is, or a legacy ``.h5`` file, converted). Spec names are the model's input / output names
    unless ``node_name_mapping`` maps them (spec name -> keras name); the spec is derived from the
    model when not given. Packing raises ValueError when spec and model disagree, and when
    ``test_expected_out`` differs from what the packaged model returns.
    """
    require_tf_backend()
    if (model is None) == (model_path is None):
        raise ValueError("give exactly one of model (a keras.Model) or model_path (.keras or .h5)")
    source = Path(model_path) if model_path is not None else None
    if source is not None:
        if not source.is_file() or source.suffix.lower() not in (".keras", ".h5", ".hdf5"):
            raise ValueError(f"model_path {source} must be an existing .keras or .h5 file")
        model = load_keras_file(source)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    mapping = dict(node_name_mapping or {})
    model_in, model_out = model_io(model)
    in_spec = [s.to_dict() for s in parse_spec(input_spec)] if input_spec is not None else None
    out_spec = [s.to_dict() for s in parse_spec(output_spec)] if output_spec is not None else None
    if in_spec is not None:
        check_spec(model_in, in_spec, mapping, "input", need_all=True)
    if out_spec is not None:
        check_spec(model_out, out_spec, mapping, "output", need_all=False)

    def write(root: Path) -> dict[str, Any]:
        target = root / MODEL_FILE
        target.parent.mkdir(parents=True)
        if source is not None and source.suffix.lower() == ".keras":
            shutil.copyfile(source, target)
        else:
            model.save(str(target))
        return {"format": "keras", "node_name_mapping": mapping} if mapping else {"format": "keras"}

    def derive(_root: Path, _options: Mapping[str, Any]) -> tuple[Spec, Spec]:
        return model_in, model_out

    return pack(
        package_path, name=name, platform="keras", write_payload=write,
        input_spec=in_spec, output_spec=out_spec, derive_spec=derive, **options,
    )


def inspect_source(source: Path) -> tuple[Spec, Spec]:
    """(input_spec, output_spec) a ``.keras`` / ``.h5`` file declares."""
    return model_io(load_keras_file(Path(source)))


def pack_source(source: Path, output: Path, **options: Any) -> Path:
    """For the CLI: pack a ``.keras`` / ``.h5`` file (options: name, specs, test vectors, overwrite)."""
    return pack_file(pack_keras, "model_path", source, output, platform="Keras", **options)

