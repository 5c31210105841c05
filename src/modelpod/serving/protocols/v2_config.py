"""Triton's model configuration extension: a served model's configuration, and config overrides on load.

The configuration is derived, never stored: from the package (name, platform, inputs and outputs
with ``TYPE_*`` data types, ``-1`` for dims of any size) and the model's settings (batching,
instances, queue, deadline, input formats). As in Triton, with ``max_batch_size > 0`` the batch dim
is left out of ``dims``. A model whose inputs and outputs all start with one symbolic dim has a
batch dim: its ``max_batch_size`` is the settings' (1 when dynamic batching is off, the batch dim
still there); any other model has ``max_batch_size`` 0.

An override (the ``config`` parameter of a repository load) is parsed as Triton's ModelConfig
JSON. The fields that map onto modelpod's settings are applied: ``max_batch_size``,
``dynamic_batching`` (preferred sizes, queue delay, default queue policy's size and timeout),
``instance_group`` counts, and inputs' ``format``. Fields that restate the model as it is (its
name, platform, inputs' types and dims...) are accepted. Anything else is refused with a
"failed to load '<m>': ..." that names the field: modelpod serves a package as it was packed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from modelpod.errors import ServeError, clip
from modelpod.protos import model_config_pb2 as mc
from modelpod.serving.execution.batching import batch_symbol
from modelpod.serving.settings import ModelSettings
from modelpod.spec import TensorSpec, parse_spec

TRITON_TYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "string": "TYPE_STRING", "bfloat16": "TYPE_BF16",
}
#: modelpod platform -> (Triton platform, Triton backend); models Triton has no backend for run in Python
_PLATFORMS = {
    "onnx": ("onnxruntime_onnx", "onnxruntime"),
    "torchscript": ("pytorch_libtorch", "pytorch"),
}
#: ModelConfig fields of Triton's that modelpod has no equivalent for (set to anything but their
#: default, they are refused by name; snake_case as in the proto)
_TRITON_ONLY = frozenset({
    "runtime", "batch_input", "batch_output", "optimization", "sequence_batching", "ensemble_scheduling",
    "cc_model_filenames", "metric_tags", "model_warmup", "model_operations", "model_transaction_policy",
    "model_repository_agents", "response_cache", "model_metrics",
})
_HONOURED = "max_batch_size, dynamic_batching, instance_group (count, KIND_CPU/KIND_AUTO) and input format"


@dataclass(frozen=True)
class ModelFacts:
    """What a model's configuration says about the package: its name, platform and spec."""

    name: str
    platform: str
    platform_options: dict[str, Any]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def of_model(cls, name: str, model: Any) -> "ModelFacts":
        spec = model.spec
        return cls(name, model.platform, dict(model.manifest.platform_options), spec.inputs, spec.outputs)

    @classmethod
    def of_package(cls, name: str, package: Path) -> "ModelFacts":
        """From a package's manifest (folder or archive; nothing extracted, nothing run)."""
        from modelpod.runtime.modelarts import PLATFORM, is_modelarts_folder

        if is_modelarts_folder(package):
            return cls(name, PLATFORM, {}, (), ())
        if package.is_file():
            from modelpod.package.archive import read_archive_manifest

            manifest = read_archive_manifest(package)[0]
        else:
            from modelpod.package.manifest import read_manifest

            manifest = read_manifest(package, verify_hashes=False)
        return cls(name, manifest.platform, dict(manifest.platform_options), parse_spec(manifest.input_spec),
                   parse_spec(manifest.output_spec))

    @property
    def batch_symbol(self) -> str | None:
        return batch_symbol(self.inputs, self.outputs)


def platform_and_backend(facts: ModelFacts) -> tuple[str, str]:
    if facts.platform == "tensorflow":
        graph = facts.platform_options.get("format") == "graph"
        return ("tensorflow_graphdef" if graph else "tensorflow_savedmodel"), "tensorflow"
    return _PLATFORMS.get(facts.platform, ("", "python"))


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    shape = spec.shape[1:] if batched else spec.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def _guess_format(spec: TensorSpec, dims: list[int]) -> str:
    """NHWC / NCHW for an image-like input: three dims (batch left out) with a fixed channel dim of
    1 or 3 at exactly one end; NONE otherwise."""
    if len(dims) != 3 or spec.dtype not in ("uint8", "float16", "float32", "float64", "bfloat16"):
        return "NONE"
    first, last = dims[0] in (1, 3), dims[2] in (1, 3)
    if last and not first:
        return "NHWC"
    if first and not last:
        return "NCHW"
    return "NONE"


def model_config(facts: ModelFacts, settings: ModelSettings) -> dict[str, Any]:
    """The model's configuration as Triton's ModelConfig JSON (HTTP answers this; gRPC parses it)."""
    batched = facts.batch_symbol is not None
    platform, backend = platform_and_backend(facts)
    formats = settings.input_formats or {}
    labels = settings.labels or {}
    inputs = []
    for spec in facts.inputs:
        dims = _dims(spec, batched)
        inputs.append({"name": spec.name, "data_type": TRITON_TYPES[spec.dtype],
                       "format": "FORMAT_" + formats.get(spec.name, _guess_format(spec, dims)), "dims": dims,
                       "is_shape_tensor": False, "allow_ragged_batch": False, "optional": False})
    batching = settings.batching
    config: dict[str, Any] = {
        "name": facts.name,
        "platform": platform,
        "backend": backend,
        "version_policy": {"all": {}},  # every version the repository holds is served
        "max_batch_size": batching.max_batch_size if batched else 0,
        "input": inputs,
        "output": [{"name": spec.name, "data_type": TRITON_TYPES[spec.dtype], "dims": _dims(spec, batched),
                    "label_filename": Path(labels[spec.name]).name if spec.name in labels else "",
                    "is_shape_tensor": False} for spec in facts.outputs],
        "instance_group": [{"name": facts.name, "kind": "KIND_CPU", "count": settings.instances, "gpus": [],
                            "profile": [], "passive": False, "host_policy": ""}],
        "default_model_filename": "",
        "parameters": {"modelpod_platform": {"string_value": facts.platform}},
    }
    if batched and batching.enabled:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": round(batching.max_batch_delay_ms * 1000),
            "preserve_ordering": False,
            "priority_levels": 0,
            "default_priority_level": 0,
            "default_queue_policy": {"timeout_action": "REJECT",
                                     "default_timeout_microseconds": round(settings.timeout_ms * 1000),
                                     "allow_timeout_override": True, "max_queue_size": settings.max_queue_size},
        }
    return config


def config_message(config: dict[str, Any]) -> Any:
    """The ModelConfig protobuf message of :func:`model_config`'s JSON."""
    return json_format.ParseDict(config, mc.ModelConfig())


# -- overrides on load -------------------------------------------------------------------------------
def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _refuse(model: str, why: str) -> ServeError:
    return ServeError("bad_input", f"failed to load '{clip(model)}': {why}")


#: a config override longer than this is refused unread (Triton's configurations are a few KB)
MAX_CONFIG_CHARS = 1 << 20


class ConfigOverride:
    """A load request's ``config`` parameter, checked as Triton's ModelConfig JSON.

    Construction refuses what is not a ModelConfig at all (malformed JSON, unknown fields, fields
    modelpod has no equivalent for); :meth:`changes` then checks it against one package and turns
    it into settings changes.
    """

    def __init__(self, model: str, text: Any) -> None:
        self.model = model
        if isinstance(text, dict):  # an object instead of the JSON string Triton takes: the same thing
            text = json.dumps(text)
        if not isinstance(text, str):
            raise _refuse(model, f"the 'config' parameter must be a string of JSON, got {type(text).__name__}")
        if len(text) > MAX_CONFIG_CHARS:
            raise _refuse(model, f"the config override is {len(text)} characters long; at most {MAX_CONFIG_CHARS}")
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise _refuse(model, f"the config override is not valid JSON ({exc})") from None
        except RecursionError:
            raise _refuse(model, "the config override nests too deeply to be a model configuration") from None
        if not isinstance(raw, dict):
            raise _refuse(model, f"the config override must be a JSON object, got {type(raw).__name__}")
        self.raw = {_snake(k): v for k, v in raw.items()}
        unsupported = sorted(k for k, v in self.raw.items() if k in _TRITON_ONLY and v not in (None, "", 0, False, [], {}))
        if unsupported:
            raise _refuse(model, f"the config override sets {', '.join(unsupported)}, which modelpod has no "
                                 f"equivalent for (it honours {_HONOURED})")
        self.raw = {k: v for k, v in self.raw.items() if k not in _TRITON_ONLY}
        try:
            self.message = json_format.ParseDict(self.raw, mc.ModelConfig())
        except json_format.ParseError as exc:
            detail = str(exc).split("\n")[0].replace("modelpod.v2.", "inference.")
            raise _refuse(model, f"the config override is not a valid model configuration: {clip(detail, 300)}") \
                from None

    def changes(self, facts: ModelFacts, settings: ModelSettings) -> dict[str, Any]:
        """The settings changes this override asks of a model with these facts and settings;
        ValueError naming the field when it asks something modelpod cannot do."""
        raw, msg = self.raw, self.message
        current = model_config(facts, settings)
        for key in ("name", "platform", "backend", "default_model_filename"):
            if raw.get(key) not in (None, "") and getattr(msg, key) != current[key]:
                raise ValueError(f"'{key}' is {getattr(msg, key)!r} but the package's is {current[key]!r} "
                                 "(modelpod serves a package as it was packed)")
        given = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        mine = json_format.MessageToDict(config_message(current), preserving_proto_field_name=True)
        for key in ("version_policy", "parameters"):
            if raw.get(key) and given.get(key) != mine.get(key):
                raise ValueError(f"'{key}' cannot be changed (modelpod's is {json.dumps(current[key])})")
        changes: dict[str, Any] = {}
        batching: dict[str, Any] = {}
        symbol = facts.batch_symbol
        max_batch = current["max_batch_size"]
        if raw.get("max_batch_size") is not None:
            max_batch = msg.max_batch_size
            if max_batch < 0:
                raise ValueError(f"max_batch_size must be 0 or more, got {max_batch}")
            if max_batch == 0 and symbol is not None:
                raise ValueError(f"max_batch_size 0 says the tensors have no batch dim, but every input and output "
                                 f"of this model starts with the batch dim '{symbol}' (1 turns dynamic batching off)")
            if max_batch > 0 and symbol is None:
                raise ValueError(f"max_batch_size {max_batch} needs a batch dim: every input and output must start "
                                 f"with the same symbolic dim, and this model's are {_shapes(facts)}")
            if max_batch > 0:
                batching["max_batch_size"] = max_batch
        if msg.HasField("dynamic_batching"):
            if symbol is None:
                raise ValueError("dynamic_batching needs a batch dim: every input and output must start with the "
                                 f"same symbolic dim, and this model's are {_shapes(facts)}")
            batching.update(_dynamic_batching(msg.dynamic_batching, max_batch, changes))
        if batching:
            changes["batching"] = batching
        if raw.get("instance_group"):
            changes["instances"] = _instances(msg.instance_group)
        formats = _check_tensors("input", raw.get("input"), msg.input, current["input"])
        if formats:
            changes["input_formats"] = formats
        _check_tensors("output", raw.get("output"), msg.output, current["output"])
        return changes


def _shapes(facts: ModelFacts) -> str:
    return ", ".join(f"{s.name} {tuple(s.shape)}" for s in (*facts.inputs, *facts.outputs)) or "none"


def _dynamic_batching(dyn: Any, max_batch: int, changes: dict[str, Any]) -> dict[str, Any]:
    if dyn.priority_levels or dyn.default_priority_level:
        raise ValueError("dynamic_batching priority levels are not supported (modelpod has one queue per model)")
    preferred = list(dyn.preferred_batch_size)
    too_big = [p for p in preferred if p < 1 or p > max_batch]
    if too_big:
        raise ValueError(f"dynamic_batching.preferred_batch_size {too_big} must be between 1 and max_batch_size "
                         f"({max_batch})")
    policy = dyn.default_queue_policy
    if policy.timeout_action == mc.ModelQueuePolicy.DELAY:
        raise ValueError("dynamic_batching.default_queue_policy.timeout_action DELAY is not supported "
                         "(a request past its deadline is answered at once, as REJECT)")
    if policy.max_queue_size:
        changes["max_queue_size"] = policy.max_queue_size
    if policy.default_timeout_microseconds:
        changes["timeout_ms"] = policy.default_timeout_microseconds / 1000
    return {"preferred_batch_sizes": tuple(preferred), "max_batch_delay_ms": dyn.max_queue_delay_microseconds / 1000}


def _instances(groups: Any) -> int:
    count = 0
    for group in groups:
        kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
        if kind not in ("KIND_AUTO", "KIND_CPU") or group.gpus:
            raise ValueError(f"instance_group kind {kind}{' with gpus' if group.gpus else ''} is not supported: "
                             "modelpod's instances are threads or processes on the CPU (a framework uses the "
                             "GPUs it is given by itself); use KIND_CPU or KIND_AUTO")
        if group.profile or group.passive or group.host_policy:
            raise ValueError("instance_group profile, passive and host_policy are not supported")
        if group.count < 0:
            raise ValueError(f"instance_group count must be 1 or more, got {group.count}")
        count += group.count or 1  # Triton's default count is 1
    return count


def _check_tensors(role: str, raw: Any, given: Any, current: list[dict[str, Any]]) -> dict[str, str]:
    """Check an override's inputs or outputs against the model's; the input formats it sets."""
    if not raw:
        return {}
    by_name = {t["name"]: t for t in current}
    formats: dict[str, str] = {}
    for i, tensor in enumerate(given):
        mine = by_name.get(tensor.name)
        if mine is None:
            raise ValueError(f"{role} {tensor.name!r} is not one of the model's {role}s ({', '.join(by_name) or 'none'})")
        data_type = mc.DataType.Name(tensor.data_type)
        if tensor.data_type and data_type != mine["data_type"]:
            raise ValueError(f"{role} '{tensor.name}': data_type {data_type} is not the model's {mine['data_type']} "
                             "(modelpod serves a package's spec as it was packed)")
        if tensor.dims and list(tensor.dims) != mine["dims"]:
            raise ValueError(f"{role} '{tensor.name}': dims {list(tensor.dims)} are not the model's {mine['dims']} "
                             "(-1: any size; modelpod serves a package's spec as it was packed)")
        if tensor.HasField("reshape") or tensor.is_shape_tensor or tensor.is_non_linear_format_io \
                or (role == "input" and (tensor.allow_ragged_batch or tensor.optional)) \
                or (role == "output" and tensor.label_filename):
            raise ValueError(f"{role} '{tensor.name}': reshape, shape tensors, ragged batches, optional inputs, "
                             "non-linear formats and label files are not supported")
        entry = raw[i] if isinstance(raw, list) and i < len(raw) and isinstance(raw[i], dict) else {}
        if role == "input" and "format" in entry:
            formats[tensor.name] = mc.ModelInput.Format.Name(tensor.format).removeprefix("FORMAT_")
    return formats
