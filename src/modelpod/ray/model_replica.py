"""One model of a repository on its own Ray Serve deployment (the per-model layout).

Each replica builds a modelpod server holding that one model (loaded and warmed up in the
constructor, so Serve routes to a replica only once it is ready) and answers what the router
(:mod:`modelpod.ray.router`) hands it: HTTP requests as modelpod's own :class:`Request` and v2 gRPC
calls as serialized messages. Only plain values cross the cluster: the package path, settings as
dicts, requests and responses.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from modelpod.ray.grpc import RPCS, _Context, answer_rpc
from modelpod.serving.http.messages import Request, Response
from modelpod.serving.limits import Limits
from modelpod.serving.settings import ModelSettings


class ModelReplica:
    """A replica of one model's deployment."""

    async def __init__(self, path: str, model: str, *, token: str | None, model_defaults: dict[str, Any] | None,
                       limits: Limits, model_control: bool, watch_s: float | None,
                       listed_elsewhere: dict[str, bool], one_instance: bool) -> None:
        from modelpod.serving.asgi import create_app

        defaults = ModelSettings.model_validate(model_defaults) if model_defaults else None
        overrides = ModelSettings(instances=1) if one_instance else None  # its instances are the replicas
        self._app = create_app(path, token=token, model_defaults=defaults, limits=limits,
                               model_control=model_control, watch_s=watch_s, only=model,
                               listed_elsewhere=listed_elsewhere, model_overrides=overrides)
        await self._app.open()

    async def http(self, request: Request) -> Response:
        """One HTTP request through this replica's server."""
        parts = await self._app.open()
        response = parts.app.dispatch(request)
        if inspect.isawaitable(response):
            response = await response
        return Response(response.status, bytes(response.body), list(response.headers), response.content_type)

    async def rpc(self, name: str, payload: bytes, metadata: tuple[tuple[str, str], ...]
                  ) -> tuple[bytes, str | None, str, tuple[tuple[str, str], ...]]:
        """One v2 gRPC call: (response bytes, status code name or None, details, trailing metadata)."""
        context = _Context(metadata)
        response = await answer_rpc(self, self._app, name, RPCS[name][0].FromString(payload), context)
        return response.SerializeToString(), context.code, context.details, context.trailing

    def pid(self) -> int:
        """The replica's process id."""
        return os.getpid()

    def resources(self) -> dict[str, float]:
        """The Ray resources this replica holds (``{"CPU": 0.25, ...}``)."""
        import ray

        return dict(ray.get_runtime_context().get_assigned_resources())

    async def __del__(self) -> None:
        await self._app.close()
