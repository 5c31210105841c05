"""The HTTP app: routes a Request to its protocol and turns every failure into that protocol's error.

``ServerApp.dispatch`` is what the native server calls; :mod:`modelpod.serving.asgi` wraps the
same object as an ASGI app (for uvicorn or a Ray Serve ingress).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from modelpod.serving.context import ServerContext
from modelpod.serving.errors import ServeError
from modelpod.serving.http import MaybeAwaitable, Request, Response
from modelpod.serving.protocols import eas, tfserving, v2_rest

log = logging.getLogger("modelpod.serve")
ErrorFormatter = Callable[[ServeError], Response]


class ServerApp:
    """Routes ``/v2`` (KServe v2), ``/v1`` (TF Serving), ``/api/predict`` (EAS and hooks)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def dispatch(self, request: Request) -> MaybeAwaitable[Response]:
        path = request.path
        if path.startswith("/v2"):
            parts = [p for p in path[3:].split("/") if p]
            return self._guard(v2_rest.error_response, lambda: v2_rest.dispatch(self.ctx, request, parts))
        if path.startswith("/api/predict/"):
            return self._guard(eas.error_response, lambda: eas.dispatch(self.ctx, request, path[13:]))
        if path[:4].lower() == "/v1/":
            return self._guard(tfserving.error_response, lambda: tfserving.dispatch(self.ctx, request))
        if path == "/metrics" and self.ctx.metrics is not None:
            return self.ctx.metrics.response()
        if path in ("/", "/healthz"):
            return Response(200 if self.ctx.repository.ready else 503, b"", content_type="")
        return v2_rest.error_response(ServeError("not_found", f"no such endpoint: {request.method} {path} "
                                                 "(try /v2, /v1/models/<m>, /api/predict/<m>)"))

    @staticmethod
    def _guard(on_error: ErrorFormatter, call: Callable[[], MaybeAwaitable[Response]]) -> MaybeAwaitable[Response]:
        try:
            result = call()
        except ServeError as err:
            return on_error(err)
        if isinstance(result, Response):
            return result
        return _guarded(result, on_error)


async def _guarded(awaitable: Awaitable[Response], on_error: ErrorFormatter) -> Response:
    try:
        return await awaitable
    except ServeError as err:
        return on_error(err)
