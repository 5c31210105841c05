"""What a Ray Serve deployment of modelpod asks of Ray: replicas, autoscaling, resources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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

    def describe(self) -> str:
        """``2 replica(s)`` or ``autoscaling 1-4 replicas``, for logs."""
        if self.autoscale is not None:
            return f"autoscaling {self.autoscale[0]}-{self.autoscale[1]} replicas"
        return f"{self.replicas} replica(s)"


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"1:4"`` as (1, 4); ValueError naming the form otherwise."""
    low, sep, high = text.partition(":")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"autoscale must be MIN:MAX (e.g. 1:4), got {text!r}")
    return int(low), int(high)


def deployment_options(replicas: int = 1, autoscale: str | tuple[int, int] | None = None,
                       num_cpus: float | None = None, num_gpus: float | None = None,
                       memory_mb: float | None = None) -> DeploymentOptions:
    """DeploymentOptions from CLI-style values (``autoscale="1:4"``); ValueError naming what is wrong."""
    if isinstance(autoscale, str):
        try:
            autoscale = parse_autoscale(autoscale)
        except ValueError:
            raise ValueError(f"--autoscale must be MIN:MAX (e.g. 1:4), got {autoscale!r}") from None
    actor: dict[str, Any] = {}
    if num_cpus is not None:
        actor["num_cpus"] = num_cpus
    if num_gpus is not None:
        actor["num_gpus"] = num_gpus
    if memory_mb is not None:
        actor["memory"] = int(memory_mb * (1 << 20))
    return DeploymentOptions(replicas=replicas, autoscale=autoscale, ray_actor_options=actor)
