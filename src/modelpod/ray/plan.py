"""Which Ray Serve deployments a served PATH becomes, and what each one's replicas get.

A model may size its own deployment from its own settings (service config ``metadata`` or
``serving.json``), over the deployment options ``modelpod serve --ray`` was given:

- the EAS keys: ``instance`` is the number of replicas (each replica then runs one instance),
  ``cpu`` the CPUs of each replica (``num_cpus``), ``memory`` its memory in MB;
- a ``ray`` object sets them explicitly and wins: ``{"replicas": 4}`` or ``{"autoscale": "1:4"}``,
  ``num_cpus``, ``num_gpus``, ``memory_mb``, ``max_ongoing_requests`` (with ``ray.replicas`` or
  ``ray.autoscale``, ``instance`` keeps its in-server meaning: instances inside each replica).

The layout: when the models of a repository ask for nothing of their own, one deployment serves
the whole repository (one hop from Ray's proxy to a replica: the cheapest); when any asks for its
own replicas or resources, every model gets a deployment of its own behind a router
(:mod:`modelpod.ray.router`), so one model can run on 4 replicas and another on 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from modelpod.ray.options import DeploymentOptions, parse_autoscale
from modelpod.serving.models.lifecycle import ModelManager
from modelpod.serving.models.repository import Repository
from modelpod.serving.settings import ModelSettings

Layout = Literal["auto", "repository", "models"]
LAYOUTS = ("auto", "repository", "models")


@dataclass(frozen=True)
class ModelPlan:
    """One model of the served PATH and the deployment it gets."""

    name: str
    options: DeploymentOptions
    #: the model's own settings asked for something on Ray (its options differ from the defaults)
    own: bool
    #: each replica runs one instance (``instance`` counted replicas)
    one_instance: bool
    #: the model has a token of its own (left out of the model lists others see)
    guarded: bool


def model_options(own: ModelSettings, base: DeploymentOptions) -> tuple[DeploymentOptions, bool]:
    """The deployment options of a model whose own settings are ``own``, over ``base``; and whether
    its replicas run one instance each (its ``instance`` count became the replica count)."""
    given = own.model_fields_set
    replicas, autoscale = base.replicas, base.autoscale
    actor: dict[str, Any] = dict(base.ray_actor_options)
    ongoing = base.max_ongoing_requests
    one_instance = False
    if "instances" in given:
        replicas, autoscale, one_instance = own.instances, None, True
    if own.cpu is not None:
        actor["num_cpus"] = own.cpu
    if own.memory is not None:
        actor["memory"] = own.memory << 20
    ray = own.ray
    if ray is not None:
        if ray.replicas is not None:
            replicas, autoscale, one_instance = ray.replicas, None, False
        if ray.autoscale is not None:
            autoscale, one_instance = parse_autoscale(ray.autoscale), False
        if ray.num_cpus is not None:
            actor["num_cpus"] = ray.num_cpus
        if ray.num_gpus is not None:
            actor["num_gpus"] = ray.num_gpus
        if ray.memory_mb is not None:
            actor["memory"] = int(ray.memory_mb * (1 << 20))
        if ray.max_ongoing_requests is not None:
            ongoing = ray.max_ongoing_requests
    return replace(base, replicas=replicas, autoscale=autoscale, ray_actor_options=actor,
                   max_ongoing_requests=ongoing), one_instance


def plan_models(path: Path, base: DeploymentOptions, defaults: ModelSettings | None = None) -> list[ModelPlan]:
    """Every model ``path`` names (once, whatever its versions), with its deployment options.
    Reads manifests and settings only; loads nothing. ValueError when the source cannot be read."""
    manager = ModelManager(path, Repository(), defaults=defaults)
    plans: dict[str, ModelPlan] = {}
    for entry in manager.entries():
        name = entry.name or manager.served_name(entry.package)
        options, one_instance = model_options(entry.own, base)
        plans[name] = ModelPlan(name, options, options != base or one_instance, one_instance, bool(entry.token))
    return list(plans.values())


def choose_layout(layout: Layout, plans: list[ModelPlan]) -> Literal["repository", "models"]:
    """``auto``: one deployment per model only when there are several models and one asks for
    replicas or resources of its own."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout != "auto":
        return layout
    return "models" if len(plans) > 1 and any(p.own for p in plans) else "repository"
