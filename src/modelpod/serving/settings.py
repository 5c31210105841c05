"""A served model's settings: one typed model that every source of settings parses into.

Sources, weakest first: the defaults (``ModelSettings()``), ``modelpod serve`` options
(``--instances``, ``--max-queue-size``, ``--timeout-ms``), then the model's own settings: the
``metadata`` of its EAS-style service config entry, or of ``<repository>/<model>/serving.json``
(which a ModelArts model folder may carry too). A service config looks like::

    {"name": "add", "model_path": "add.tar.gz", "processor": "tensorflow_cpu_2.7",
     "warm_up_data_path": "warm.bin", "token": "secret",
     "metadata": {"instance": 1, "rpc.max_queue_size": 64, "rpc.keepalive": 5000}}

``metadata`` keys take the EAS names (``instance``, ``rpc.max_queue_size``, ``rpc.keepalive``) or
modelpod's (``instances``, ``max_queue_size``, ``timeout_ms``); batching keys go flat or under
``"batching"``. ``cpu`` and ``memory`` hold the model's worker processes to a thread count and a
memory cap (on Ray Serve, ``instance``, ``cpu`` and ``memory`` also size the model's own deployment:
replicas, CPUs and memory of each; a ``ray`` object sets them explicitly); other EAS keys that describe the machine a service gets (``gpu``, ``resource``...)
mean nothing here and are ignored; other unknown keys are logged. Every value is checked once,
where it is read; an error names the file, the service and the key. The result reaches the
scheduler unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelpod.codecs.transport import parse_scheme
from modelpod.package.layout import SETTINGS_FILE

log = logging.getLogger("modelpod.serve")
#: EAS metadata keys about resources or the EAS runtime itself: accepted, without effect here
EAS_IGNORED_KEYS = frozenset({
    "gpu", "gpu_memory", "gpu_core_percentage", "disk", "resource", "resource_burstable",
    "rpc.worker_threads", "rpc.io_threads", "rpc.enable_jemalloc", "rpc.rate_limit", "rpc.batching",
    "region", "qos", "cuda", "enable_grpc", "enable_webservice", "type",
})
_BATCHING_KEYS = ("max_batch_size", "max_batch_delay_ms", "preferred_batch_sizes")


#: upper bounds of settings a request (a v2 config override) or a file can set: each one claims
#: memory or time per model, so none is unbounded
MAX_INSTANCES = 256
MAX_QUEUE_SIZE = 1 << 20
MAX_BATCH_SIZE = 1 << 16
MAX_BATCH_DELAY_MS = 60_000.0  # a minute
MAX_TIMEOUT_MS = 86_400_000.0  # a day


class BatchingSettings(BaseModel):
    """Dynamic batching of one model (see :mod:`modelpod.serving.execution.batching`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: rows per model call; batching is on when > 1 (and the model's spec allows it)
    max_batch_size: int = Field(1, ge=1, le=MAX_BATCH_SIZE)
    #: how long the oldest request may wait for others (0: take what is queued)
    max_batch_delay_ms: float = Field(0.0, ge=0, le=MAX_BATCH_DELAY_MS)
    #: run at once when the batch reaches one of these sizes
    preferred_batch_sizes: tuple[int, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1


class SequenceSettings(BaseModel):
    """How a stateful model's sequences are kept (see :mod:`modelpod.serving.execution.sequences`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a sequence with no request for this long is dropped, its state with it (Triton's
    #: max_sequence_idle_microseconds, which defaults to 1 s; HTTP clients need longer)
    idle_timeout_s: float = Field(60.0, gt=0)
    #: live sequences at once; a sequence_start past it is refused (503 / RESOURCE_EXHAUSTED)
    max_sequences: int = Field(1024, ge=1)


class ReplicaSettings(BaseModel):
    """How a model runs on Ray Serve (``modelpod serve --ray``): its own deployment's replicas and
    what each replica may use. Without Ray these mean nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: replicas of the model's deployment
    replicas: int | None = Field(None, ge=1)
    #: "MIN:MAX" replicas for Serve's autoscaler instead of a fixed count
    autoscale: str | None = Field(None, pattern=r"^\s*\d+\s*:\s*\d+\s*$")
    #: Ray resources of each replica
    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    memory_mb: float | None = Field(None, gt=0)
    #: requests one replica works on at once
    max_ongoing_requests: int | None = Field(None, ge=1)


class ModelSettings(BaseModel):
    """How one model is served: instances, queue, deadline, execution, batching, warm-up, transport."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    #: instances of the model (threads, or worker processes)
    instances: int = Field(1, ge=1, le=MAX_INSTANCES, validation_alias="instance")
    #: requests allowed to wait; beyond that the server refuses at once (503, EAS 450)
    max_queue_size: int = Field(64, ge=1, le=MAX_QUEUE_SIZE, validation_alias="rpc.max_queue_size")
    #: per-request deadline in ms (clients may shorten it)
    timeout_ms: float = Field(5000.0, gt=0, le=MAX_TIMEOUT_MS, validation_alias="rpc.keepalive")
    #: "inline" on the event loop, "queued" through the scheduler, "auto" decides from the warm-up
    execution: Literal["auto", "inline", "queued"] = "auto"
    #: "process": each instance is a worker process with its own copy of the model
    worker: Literal["thread", "process"] = "thread"
    #: CPUs for the model (EAS ``cpu``): its worker processes' framework thread count (OpenMP, MKL,
    #: onnxruntime intra-op, TF intra-op); on Ray, the replicas' CPUs
    cpu: float | None = Field(None, gt=0)
    #: MB of memory for each worker process of the model (EAS ``memory``); setting it runs the model
    #: in worker processes, and a request that needs more fails alone (500) and its worker restarts
    memory: int | None = Field(None, ge=16)
    #: own environment and worker processes: "auto" for packages with requirements (a ModelArts
    #: folder's dependencies), "on" always (the worker's needs and framework without requirements), "off" never
    isolation: Literal["auto", "on", "off"] = "auto"
    #: an "auto" model whose warm-up runs take less than this runs inline
    inline_threshold_ms: float = Field(1.0, ge=0)
    #: extra warm-up requests: an .npz, a v2 JSON infer request or a serialized EAS PredictRequest
    warm_up_data_path: str | None = None
    batching: BatchingSettings = BatchingSettings()
    #: compact transport defaults announced in model metadata ({tensor: scheme}); None: the package's
    transport: dict[str, str] | None = None
    #: the model's own deployment on Ray Serve (replicas, autoscaling, resources); see modelpod.ray
    ray: ReplicaSettings | None = None
    #: a stateful model's sequences: idle timeout and how many may be live
    sequence: SequenceSettings = SequenceSettings()
    #: image layout of inputs ({input: "NHWC" | "NCHW" | "NONE"}), reported in the v2 model
    #: configuration (Triton's ``format``); inputs not named here are guessed from their shape
    input_formats: dict[str, Literal["NHWC", "NCHW", "NONE"]] | None = None
    #: label files of outputs ({output: file}, one label per line; relative to the model's folder or
    #: the service config's): Triton's classification extension answers "value:index:label" with them
    labels: dict[str, str] | None = None

    @property
    def in_processes(self) -> bool:
        """Whether instances are worker processes (``worker: process``, or a ``memory`` cap)."""
        return self.worker == "process" or self.memory is not None

    @property
    def threads(self) -> int | None:
        """The framework thread count ``cpu`` asks for (None: the framework's own choice)."""
        return max(1, round(self.cpu)) if self.cpu is not None else None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        """Both spellings of a key (``instance`` and ``instances``...), flat batching keys."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, str) and name in data:
                if alias in data:
                    raise ValueError(f"give '{alias}' or '{name}', not both")
                data[alias] = data.pop(name)
        flat = {key: data.pop(key) for key in _BATCHING_KEYS if key in data}
        if flat:
            nested = data.get("batching") or {}
            if not isinstance(nested, dict):
                raise ValueError("'batching' must be an object")
            data["batching"] = {**nested, **flat}
        return data

    @field_validator("transport")
    @classmethod
    def _known_schemes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for scheme in (value or {}).values():
            parse_scheme(scheme)  # ValueError naming the scheme and the ones there are
        return value

    @field_validator("input_formats", mode="before")
    @classmethod
    def _triton_format_names(cls, value: Any) -> Any:
        """Triton's spellings (``FORMAT_NHWC``) too."""
        if isinstance(value, dict):
            return {k: v.removeprefix("FORMAT_") if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("execution", mode="before")
    @classmethod
    def _thread_means_queued(cls, value: Any) -> Any:
        return "queued" if value == "thread" else value

    def with_changes(self, changes: dict[str, Any]) -> "ModelSettings":
        """These settings with ``changes`` (field -> value) applied; an object value (batching,
        input_formats) changes only the keys it names. ValidationError when a value is wrong."""
        data = self.model_dump(exclude_unset=True)
        for key, value in changes.items():
            current = data.get(key)
            data[key] = {**current, **value} if isinstance(value, dict) and isinstance(current, dict) else value
        return ModelSettings.model_validate(data)

    def resolved(self, folder: Path) -> "ModelSettings":
        """These settings with relative label file paths made absolute against ``folder``."""
        if not self.labels or all(Path(f).is_absolute() for f in self.labels.values()):
            return self
        labels = {out: f if Path(f).is_absolute() else str((folder / f).resolve()) for out, f in self.labels.items()}
        return self.model_copy(update={"labels": labels})

    def over(self, base: "ModelSettings") -> "ModelSettings":
        """These settings on top of ``base``: what was given here wins, the rest comes from ``base``."""
        given = self.model_dump(exclude_unset=True)
        if not given:
            return base
        return ModelSettings.model_validate({**base.model_dump(exclude_unset=True), **given})


#: every metadata key ModelSettings reads (field names, their EAS aliases, flat batching keys)
_KNOWN_KEYS = frozenset({*ModelSettings.model_fields, *_BATCHING_KEYS,
                         *(f.validation_alias for f in ModelSettings.model_fields.values()
                           if isinstance(f.validation_alias, str))})
#: (where, key) already warned about: ``--watch`` rereads the source every poll
_WARNED: set[tuple[str, str]] = set()


def parse_metadata(metadata: dict[str, Any], where: str) -> ModelSettings:
    """A service's ``metadata`` as ModelSettings; ValueError naming ``where`` and the key."""
    kept = {}
    for key, value in metadata.items():
        if key in _KNOWN_KEYS:
            kept[key] = value
        elif key not in EAS_IGNORED_KEYS and (where, key) not in _WARNED:
            _WARNED.add((where, key))
            log.warning("%s: metadata key '%s' means nothing to modelpod; ignored", where, key)
    try:
        return ModelSettings.model_validate(kept)
    except ValidationError as exc:
        raise ValueError(f"{where}: {_first_problem(exc, 'metadata')}") from None


def _first_problem(exc: ValidationError, prefix: str = "") -> str:
    """``key '<where>': <what is wrong>`` for the first error pydantic found."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    where = ".".join(p for p in (prefix, key) if p) or "(root)"
    return f"key '{where}' {explain(err)}"


def explain(err: Any) -> str:
    """One pydantic error as a sentence: 'must be at least 1, got 0'."""
    ctx, given = err.get("ctx") or {}, err.get("input")
    kind = err["type"]
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {given!r}"
    if kind == "greater_than":
        return f"must be more than {ctx['gt']}, got {given!r}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, got {given!r}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}, got {given!r}"
    if kind.startswith(("int_", "float_")):
        return f"must be a number{' (whole)' if kind.startswith('int_') else ''}, got {given!r}"
    if kind == "extra_forbidden":
        return "is not a setting modelpod knows"
    return err["msg"].removeprefix("Value error, ")


class ServiceSettings(BaseModel):
    """``<repository>/<model>/serving.json``, and the settings part of a service config entry."""

    model_config = ConfigDict(extra="forbid")

    processor: str | None = None
    warm_up_data_path: str | None = None
    token: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def settings(self, where: str) -> ModelSettings:
        """The ModelSettings this entry gives (its metadata plus ``warm_up_data_path``)."""
        parsed = parse_metadata(self.metadata, where)
        if self.warm_up_data_path:
            parsed = ModelSettings(warm_up_data_path=self.warm_up_data_path).over(parsed)
        return parsed


class ServiceConfig(ServiceSettings):
    """One service in an EAS-style config file (other EAS keys are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    model_path: str
    version: int = 1


def read_model_settings(model_dir: Path) -> tuple[ModelSettings, ServiceSettings] | None:
    """The model folder's ``serving.json`` (None when it has none); relative paths from that folder."""
    path = model_dir / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        entry = ServiceSettings.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ValueError(f"{path}: {_first_problem(exc)}") from None
    if entry.warm_up_data_path and not Path(entry.warm_up_data_path).is_absolute():
        entry.warm_up_data_path = str((model_dir / entry.warm_up_data_path).resolve())
    return entry.settings(str(path)).resolved(model_dir), entry


def read_service_configs(path: Path) -> list[tuple[ModelSettings, ServiceConfig]]:
    """Parse a service config file (object or list); relative paths resolve against its folder."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the service config ({exc})") from None
    items = raw if isinstance(raw, list) else [raw]
    configs = []
    for i, item in enumerate(items):
        where = f"{path}: service {i}"
        try:
            cfg = ServiceConfig.model_validate(item)
        except ValidationError as exc:
            raise ValueError(f"{where}: {_first_problem(exc)}") from None
        for attr in ("model_path", "warm_up_data_path"):
            value = getattr(cfg, attr)
            if value and not Path(value).is_absolute():
                setattr(cfg, attr, str((path.parent / value).resolve()))
        configs.append((cfg.settings(where).resolved(path.parent), cfg))
    return configs
