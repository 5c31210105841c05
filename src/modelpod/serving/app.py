"""The HTTP app: routes a Request to its protocol and turns every failure into that protocol's error.

``ServerApp.dispatch`` is what the native server calls; :mod:`modelpod.serving.asgi` wraps the
same object as an ASGI app (for uvicorn or a Ray Serve ingress).
"""

from __future__ import annotations

import logging
import time
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
        """Answer one request (at once when possible), recording it in the metrics."""
        path = request.path
        if path.startswith("/v2"):
            parts = [p for p in path[3:].split("/") if p]
            model, version = "", ""
            if len(parts) >= 2 and parts[0] == "models":
                model = parts[1]
                if len(parts) >= 4 and parts[2] == "versions":
                    version = parts[3]
            return self._guard("v2", model, version, request, v2_rest.error_response,
                               lambda: v2_rest.dispatch(self.ctx, request, parts))
        if path.startswith("/api/predict/"):
            model = path[13:].split("/", 1)[0]
            return self._guard("eas", model, "", request, eas.error_response,
                               lambda: eas.dispatch(self.ctx, request, path[13:]))
        if path[:4].lower() == "/v1/":
            match = tfserving.route(path)
            model, version = (match["name"], match["version"] or "") if match else ("", "")
            return self._guard("tfserving", model, version, request, tfserving.error_response,
                               lambda: tfserving.dispatch(self.ctx, request, match))
        if path == "/metrics" and self.ctx.metrics is not None:
            return self.ctx.metrics.response()
        if path in ("/", "/healthz"):
            return Response(200 if self.ctx.repository.ready else 503, b"", content_type="")
        return v2_rest.error_response(ServeError("not_found", f"no such endpoint: {request.method} {path} "
                                                 "(try /v2, /v1/models/<m>, /api/predict/<m>)"))

    def _guard(self, protocol: str, model: str, version: str, request: Request, on_error: ErrorFormatter,
               call: Callable[[], MaybeAwaitable[Response]]) -> MaybeAwaitable[Response]:
        """Run a protocol handler; ServeError -> that protocol's error answer; record the outcome."""
        start = time.perf_counter()
        try:
            result = call()
        except ServeError as err:
            result = on_error(err)
        if isinstance(result, Response):
            self._record(protocol, model, version, result.status, start, request)
            return result
        return self._guarded(result, protocol, model, version, request, on_error, start)

    async def _guarded(self, awaitable: Awaitable[Response], protocol: str, model: str, version: str,
                       request: Request, on_error: ErrorFormatter, start: float) -> Response:
        try:
            response = await awaitable
        except ServeError as err:
            response = on_error(err)
        self._record(protocol, model, version, response.status, start, request)
        return response

    def _record(self, protocol: str, model: str, version: str, status: int, start: float,
                request: Request) -> None:
        metrics = self.ctx.metrics
        if metrics is not None:
            metrics.record(protocol, model, request.version or version, status, time.perf_counter() - start,
                           request)
