"""TensorFlow SavedModel signatures read without running the model (what ``saved_model_cli show``
prints), and the dtype / shape checks the tensorflow platform applies to graphs and signatures.

Used by the tensorflow backend at pack and load time and by ``modelpod inspect`` on a raw
SavedModel folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2  # noqa: E402

from modelpod.spec import DTYPES  # noqa: E402

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_TAGS: tuple[str, ...] = ("serve",)

Spec = list[dict[str, Any]]


# ---------------------------------------------------------------------------------------------
# dtypes and shapes


def spec_dtype(dtype: Any, what: str) -> str:
    """The spec dtype name of a TF dtype (``tf.float32``, a DataType enum...); ValueError if none.

    ``what`` names the tensor in the error message.
    """
    tf_dtype = tf.dtypes.as_dtype(dtype).base_dtype
    name = tf_dtype.name
    if name not in DTYPES:
        supported = ", ".join(DTYPES)
        raise ValueError(
            f"{what} has TensorFlow dtype {name}, which modelpod cannot carry; "
            f"supported dtypes: {supported} (cast it inside the model)"
        )
    return name


def _shape_dims(shape: Any) -> list[int | None] | None:
    """Dims of a TensorShape / TensorShapeProto (-1 and unknown -> None); None if the rank is unknown."""
    if isinstance(shape, tf.TensorShape):
        return None if shape.rank is None else [d if d is not None and d >= 0 else None for d in shape.as_list()]
    if shape.unknown_rank:
        return None
    return [d.size if d.size >= 0 else None for d in shape.dim]


def _check_tensor(spec: Mapping[str, Any], dtype: str, dims: list[int | None] | None, what: str) -> None:
    """Raise ValueError when a spec entry contradicts the model's tensor (dtype, rank, fixed dims)."""
    if spec["dtype"] != dtype:
        raise ValueError(
            f"{what}: the spec says {spec['dtype']} but the model's tensor is {dtype}; "
            f"make the spec dtype {dtype}"
        )
    if dims is None:
        return
    shape = list(spec["shape"])
    if len(shape) != len(dims):
        raise ValueError(
            f"{what}: the spec has {len(shape)} dims {tuple(shape)} but the model's tensor has "
            f"{len(dims)} {tuple(dims)}"
        )
    for axis, (want, have) in enumerate(zip(shape, dims)):
        if isinstance(want, int) and have is not None and want != have:
            raise ValueError(
                f"{what}: dim {axis} is {want} in the spec but {have} in the model"
            )


# ---------------------------------------------------------------------------------------------
# SavedModel signatures (read from saved_model.pb, no graph import needed)


@dataclass(frozen=True)
class _TensorInfo:
    key: str
    tensor: str
    dtype: Any
    dims: list[int | None] | None


@dataclass(frozen=True)
class _SignatureInfo:
    name: str
    inputs: tuple[_TensorInfo, ...]
    outputs: tuple[_TensorInfo, ...]

    def spec(self) -> tuple[Spec, Spec]:
        """(input_spec, output_spec) as ``saved_model_cli show`` would describe it."""
        return infos_spec(self.name, self.inputs, "input"), infos_spec(self.name, self.outputs, "output")


def infos_spec(signature: str, infos: Sequence[_TensorInfo], role: str) -> Spec:
    specs = []
    for info in infos:
        what = f"signature '{signature}' {role} '{info.key}'"
        dtype = spec_dtype(info.dtype, what)
        if info.dims is None:
            raise ValueError(
                f"{what} has an unknown rank; pass input_spec and output_spec to say its shape"
            )
        specs.append({"name": info.key, "dtype": dtype, "shape": list(info.dims)})
    return specs


def _read_saved_model(folder: Path) -> saved_model_pb2.SavedModel:
    pb, pbtxt = folder / "saved_model.pb", folder / "saved_model.pbtxt"
    proto = saved_model_pb2.SavedModel()
    if pb.is_file():
        proto.ParseFromString(pb.read_bytes())
    elif pbtxt.is_file():
        text_format.Parse(pbtxt.read_text(), proto)
    else:
        raise ValueError(f"{folder} is not a SavedModel folder: saved_model.pb is missing")
    return proto


def _meta_graph(folder: Path, tags: Sequence[str]) -> meta_graph_pb2.MetaGraphDef:
    proto = _read_saved_model(folder)
    wanted = set(tags)
    for meta in proto.meta_graphs:
        if set(meta.meta_info_def.tags) == wanted:
            return meta
    found = [sorted(m.meta_info_def.tags) for m in proto.meta_graphs]
    raise ValueError(f"{folder}: no MetaGraph with tags {sorted(wanted)}; it has {found}")


def signature_infos(folder: Path, tags: Sequence[str]) -> dict[str, _SignatureInfo | str]:
    """Every signature of the SavedModel: its info, or a str saying why modelpod cannot run it."""
    meta = _meta_graph(folder, tags)
    result: dict[str, _SignatureInfo | str] = {}
    for name in sorted(meta.signature_def):
        if name.startswith("__"):  # __saved_model_init_op and friends are not signatures to call
            continue
        sig = meta.signature_def[name]
        parts: list[tuple[_TensorInfo, ...]] = []
        problem = None
        for role, items in (("input", sig.inputs), ("output", sig.outputs)):
            infos = []
            for key in sorted(items):
                info = items[key]
                if info.WhichOneof("encoding") != "name":
                    problem = f"{role} '{key}' is a sparse or composite tensor; modelpod runs dense tensors only"
                    break
                infos.append(_TensorInfo(key, info.name, info.dtype, _shape_dims(info.tensor_shape)))
            parts.append(tuple(infos))
        result[name] = problem or _SignatureInfo(name, parts[0], parts[1])
    return result


def pick_signature(infos: Mapping[str, Any], wanted: str | None, folder: Path) -> str:
    """The default signature: ``wanted``; or serving_default, or the only one, when None."""
    names = list(infos)
    if wanted is None:
        if DEFAULT_SIGNATURE in infos:
            return DEFAULT_SIGNATURE
        if len(names) == 1:
            return names[0]
        raise ValueError(f"{folder} has signatures {names} and none is serving_default; pass signature=")
    if wanted not in infos:
        raise ValueError(f"{folder} has no signature {wanted!r}; its signatures are {names}")
    return wanted


def inspect_signatures(source: Path, tags: Sequence[str] = DEFAULT_TAGS) -> dict[str, tuple[Spec, Spec]]:
    """Every runnable signature of a SavedModel folder as ``{name: (input_spec, output_spec)}``."""
    result = {}
    for name, info in signature_infos(Path(source), tags).items():
        if isinstance(info, _SignatureInfo):
            try:
                result[name] = info.spec()
            except ValueError:
                continue  # unknown rank or dtype modelpod cannot carry: not runnable as is
    return result


def inspect_source(source: Path) -> tuple[Spec, Spec]:
    """(input_spec, output_spec) of a SavedModel folder's default signature."""
    source = Path(source)
    if not source.is_dir():
        raise ValueError(
            f"{source}: a frozen graph does not say which tensors are inputs and outputs; "
            "pack it with modelpod.pack_tensorflow(..., node_name_mapping=, input_spec=, output_spec=)"
        )
    infos = signature_infos(source, DEFAULT_TAGS)
    info = infos[pick_signature(infos, None, source)]
    if isinstance(info, str):
        raise ValueError(f"{source}: {info}")
    return info.spec()
