"""Ray Serve applications that serve a modelpod PATH, as ``modelpod serve`` would.

Every replica builds its modelpod server itself (Serve's builder pattern), from a path every node
can read: nothing but the path and a few settings crosses the cluster, and models load and warm up
before Serve routes to a replica. Ray's HTTP proxy then carries every modelpod HTTP protocol
unchanged (KServe v2 REST and its binary extension, TF Serving REST, PAI-EAS protobuf, service
hooks, token auth, the status codes), and Serve's gRPC proxy the KServe v2 gRPC service
(:mod:`modelpod.ray.grpc`).

Two layouts (:mod:`modelpod.ray.plan` chooses; ``layout=`` forces one):

- ``repository``: one deployment whose replicas each serve the whole repository. One hop from the
  proxy to a replica, so the cheapest, and the one when no model asks for replicas of its own.
- ``models``: one deployment per model, sized by that model's own settings (``instance``/``cpu``/
  ``memory`` or a ``ray`` object: one model on 4 replicas, another on 1), behind a router
  deployment (:mod:`modelpod.ray.router`) that reads the model name from the request the way
  modelpod's server does. One more hop per request.

A deployment cannot simply be "one model" behind Ray's proxy alone: the protocols name the model in
different places of the path (``/v2/models/<m>/...``, ``/v1/models/<m>:predict``,
``/api/predict/<m>``) while the proxy routes one path prefix to one application, and the
repository and health endpoints answer for every model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelpod.ray.options import DeploymentOptions, deployment_options
from modelpod.ray.plan import Layout, ModelPlan, choose_layout, plan_models
from modelpod.serving.limits import DEFAULT_LIMITS, Limits
from modelpod.serving.settings import ModelSettings

__all__ = ["DEFAULT_NAME", "DeploymentOptions", "app", "deployment_options"]
DEFAULT_NAME = "modelpod"


def _builder(path: str, token: str | None, model_defaults: dict[str, Any] | None, limits: Limits,
             model_control: bool, watch_s: float | None, one_instance: bool = False) -> Callable[[], Any]:
    """The function each replica calls to build its app (only plain values are captured)."""

    def build() -> Any:
        from modelpod.serving.asgi import create_app

        defaults = ModelSettings.model_validate(model_defaults) if model_defaults else None
        return create_app(path, token=token, model_defaults=defaults, limits=limits, model_control=model_control,
                          watch_s=watch_s, model_overrides=ModelSettings(instances=1) if one_instance else None)

    return build


def app(path: str | Path, *, options: DeploymentOptions | None = None, name: str = DEFAULT_NAME,
        token: str | None = None, model_defaults: ModelSettings | None = None, limits: Limits = DEFAULT_LIMITS,
        model_control: bool = False, replicas: int | None = None, watch_s: float | None = None,
        layout: Layout = "auto") -> Any:
    """A Serve application (``serve.run(app(...))``) serving what ``path`` names, as ``modelpod serve``
    would. ``options`` (``replicas=`` is a shortcut) size every deployment a model's own settings do
    not size; ``layout`` as the module says (``auto``: per model only when a model asks for its own
    replicas or resources). ``watch_s``: every replica polls ``path`` and swaps in new versions of
    its models with no failed request (``modelpod serve --watch``)."""
    if options is None:
        options = DeploymentOptions(replicas=replicas or 1)
    elif replicas is not None:
        raise ValueError("give replicas or options, not both")
    resolved = str(Path(path).resolve())
    if not Path(resolved).exists():
        raise ValueError(f"{path}: no such package, repository or service config (every Ray node must be "
                         "able to read it)")
    plans = plan_models(Path(resolved), options, model_defaults)
    defaults = model_defaults.model_dump(exclude_unset=True) if model_defaults is not None else None
    if choose_layout(layout, plans) == "repository":
        own = plans[0] if len(plans) == 1 else None  # one model: its own settings size the one deployment
        return _repository_app(resolved, name, own.options if own else options, own is not None and own.one_instance,
                               token, defaults, limits, model_control, watch_s)
    return _models_app(resolved, name, plans, token, defaults, limits, model_control, watch_s)


def _repository_app(path: str, name: str, options: DeploymentOptions, one_instance: bool, token: str | None,
                    defaults: dict[str, Any] | None, limits: Limits, model_control: bool,
                    watch_s: float | None) -> Any:
    from ray import serve

    from modelpod.ray.grpc import GrpcMethods

    ingress = serve.ingress(_builder(path, token, defaults, limits, model_control, watch_s, one_instance))
    replica = ingress(type("ModelpodReplica", (GrpcMethods,), {"__doc__": "A whole modelpod server (HTTP + v2 gRPC)."}))
    return serve.deployment(replica, name=name, **options.serve_options()).bind()


def _models_app(path: str, name: str, plans: list[ModelPlan], token: str | None, defaults: dict[str, Any] | None,
                limits: Limits, model_control: bool, watch_s: float | None) -> Any:
    from ray import serve

    from modelpod.ray.model_replica import ModelReplica
    from modelpod.ray.router import Router

    handles = {}
    for plan in plans:
        others = {p.name: p.guarded for p in plans if p.name != plan.name}
        deployment = serve.deployment(ModelReplica, name=deployment_name(name, plan.name),
                                      **plan.options.serve_options())
        handles[plan.name] = deployment.bind(
            path, plan.name, token=token, model_defaults=defaults, limits=limits, model_control=model_control,
            watch_s=watch_s, listed_elsewhere=others, one_instance=plan.one_instance)
    router = serve.ingress()(type("ModelpodRouter", (Router,), {"__doc__": Router.__doc__}))
    front = DeploymentOptions(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0})
    return serve.deployment(router, name=name, **front.serve_options()).bind(handles, limits.max_body_bytes)


def deployment_name(app_name: str, model: str) -> str:
    """The Serve deployment of one model in the per-model layout."""
    return f"{app_name}-{model}"
