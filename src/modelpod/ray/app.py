"""One Ray Serve deployment whose replicas each serve a whole modelpod repository over HTTP.

Each replica builds the modelpod ASGI app itself (Serve's builder-function ingress), from a path
every node can read: nothing but the path and a few settings crosses the cluster, and models load
on the replica's ASGI lifespan startup, so Serve routes to a replica only once its models are
warm. Ray's HTTP proxy then carries every modelpod HTTP protocol unchanged (KServe v2 REST and its
binary extension, TF Serving REST, PAI-EAS protobuf, service hooks, token auth, the status codes),
and Serve's gRPC proxy the KServe v2 gRPC service (:mod:`modelpod.ray.grpc`).

A deployment holds the whole repository rather than one model: the protocols name the model in
different places of the path (``/v2/models/<m>/...``, ``/v1/models/<m>:predict``,
``/api/predict/<m>``) while Ray's proxy routes by path prefix to one application, and the
repository and health endpoints must answer for every model. Per-model settings (instances,
batching, isolation...) still apply inside each replica; per-model replica counts would need a
router deployment in front of one deployment per model (docs/scale-out.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpod.serving.limits import DEFAULT_LIMITS, Limits
from modelpod.serving.settings import ModelSettings

DEFAULT_NAME = "modelpod"


@dataclass(frozen=True)
class DeploymentOptions:
    """How many replicas, and what each one may use (``ray_actor_options``)."""

    replicas: int = 1
    #: (min, max) replicas for Serve's autoscaler instead of a fixed count
    autoscale: tuple[int, int] | None = None
    #: requests one replica works on at once before Serve queues them at the proxy
    max_ongoing_requests: int = 64
    #: Ray resources of each replica: {"num_cpus": 1, "num_gpus": 0, "memory": bytes}
    ray_actor_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or high < 1:
                raise ValueError(f"autoscale must be MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got {low}:{high}")

    def serve_options(self) -> dict[str, Any]:
        """The keyword arguments of ``serve.deployment`` these options make."""
        options: dict[str, Any] = {"max_ongoing_requests": self.max_ongoing_requests,
                                   "ray_actor_options": dict(self.ray_actor_options)}
        if self.autoscale is not None:
            low, high = self.autoscale
            options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                             "initial_replicas": max(low, 1)}
        else:
            options["num_replicas"] = self.replicas
        return options


def deployment_options(replicas: int = 1, autoscale: str | tuple[int, int] | None = None,
                       num_cpus: float | None = None, num_gpus: float | None = None,
                       memory_mb: float | None = None) -> DeploymentOptions:
    """DeploymentOptions from CLI-style values (``autoscale="1:4"``); ValueError naming what is wrong."""
    if isinstance(autoscale, str):
        low, sep, high = autoscale.partition(":")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise ValueError(f"--autoscale must be MIN:MAX (e.g. 1:4), got {autoscale!r}")
        autoscale = (int(low), int(high))
    actor: dict[str, Any] = {}
    if num_cpus is not None:
        actor["num_cpus"] = num_cpus
    if num_gpus is not None:
        actor["num_gpus"] = num_gpus
    if memory_mb is not None:
        actor["memory"] = int(memory_mb * (1 << 20))
    return DeploymentOptions(replicas=replicas, autoscale=autoscale, ray_actor_options=actor)


def _builder(path: str, token: str | None, model_defaults: dict[str, Any] | None, limits: Limits,
             model_control: bool, watch_s: float | None) -> Callable[[], Any]:
    """The function each replica calls to build its app (only plain values are captured)."""

    def build() -> Any:
        from modelpod.serving.asgi import create_app

        defaults = ModelSettings.model_validate(model_defaults) if model_defaults else None
        return create_app(path, token=token, model_defaults=defaults, limits=limits, model_control=model_control,
                          watch_s=watch_s)

    return build


def app(path: str | Path, *, options: DeploymentOptions | None = None, name: str = DEFAULT_NAME,
        token: str | None = None, model_defaults: ModelSettings | None = None, limits: Limits = DEFAULT_LIMITS,
        model_control: bool = False, replicas: int | None = None, watch_s: float | None = None) -> Any:
    """A Serve application (``serve.run(app(...))``) serving what ``path`` names, as ``modelpod serve``
    would, on ``options.replicas`` replicas (``replicas=`` is a shortcut). ``watch_s``: every replica
    polls ``path`` and swaps in new versions with no failed request (``modelpod serve --watch``)."""
    from ray import serve

    if options is None:
        options = DeploymentOptions(replicas=replicas or 1)
    elif replicas is not None:
        raise ValueError("give replicas or options, not both")
    resolved = str(Path(path).resolve())
    if not Path(resolved).exists():
        raise ValueError(f"{path}: no such package, repository or service config (every Ray node must be "
                         "able to read it)")
    defaults = model_defaults.model_dump(exclude_unset=True) if model_defaults is not None else None
    from modelpod.ray.grpc import GrpcMethods

    ingress = serve.ingress(_builder(resolved, token, defaults, limits, model_control, watch_s))
    replica = ingress(type("ModelpodReplica", (GrpcMethods,), {"__doc__": "A whole modelpod server (HTTP + v2 gRPC)."}))
    deployment = serve.deployment(replica, name=name, **options.serve_options())
    return deployment.bind()
