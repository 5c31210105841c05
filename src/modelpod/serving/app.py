"""The HTTP app: routes a Request to its protocol and turns every failure into that protocol's error.

``ServerApp.dispatch`` is what the native server calls; :mod:`modelpod.serving.asgi` wraps the
same object as an ASGI app (for uvicorn or a Ray Serve ingress).

A route depends on the path alone, so each path is resolved once and kept: only paths of served
models and fixed endpoints, at most ``MAX_CACHED_PATH`` characters long, up to ``ROUTE_CACHE_SIZE``
of them (the cache starts over when full), so odd or unknown paths cannot grow it.

Paths arrive as sent. They are split on ``/`` first and each segment is percent-decoded after, so
an escaped slash (``/v2%2Frepository...``) stays inside one segment and can never reach another
handler. Metrics label a request with its model only when that model is served (unknown names
share the label ``""``), so callers cannot grow ``/metrics`` either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, NamedTuple
from urllib.parse import unquote

from modelpod.errors import ServeError, clip
from modelpod.serving.auth import check_token
from modelpod.serving.context import ServerContext
from modelpod.serving.dashboard import api as dashboard
from modelpod.serving.http.messages import MaybeAwaitable, Request, Response
from modelpod.serving.protocols import eas, tfserving, v2_rest

ErrorFormatter = Callable[[ServeError], Response]
ROUTE_CACHE_SIZE = 4096
MAX_CACHED_PATH = 256


class Route(NamedTuple):
    """What a path resolves to: the handler ``(ctx, http, *args)``, its protocol and labels."""

    handler: Callable[..., MaybeAwaitable[Response]]
    args: tuple[Any, ...]
    #: "v2", "tfserving" or "eas" (recorded in the metrics); None: not a protocol request
    protocol: str | None
    model: str
    version: str
    on_error: ErrorFormatter
    #: the path names an endpoint (False: it answers 404 whatever is served)
    known: bool = True


def _metrics(ctx: ServerContext, http: Request) -> Response:
    """Prometheus metrics: the server token when one is set; series of models guarded by a token of
    their own are left out for callers without it."""
    if ctx.metrics is None:
        return _not_found(ctx, http)
    if ctx.token:
        try:
            check_token(ctx.token, http.headers.get("authorization"))
        except ServeError as err:
            return v2_rest.error_response(err)
    hidden = {name for name, entry in ctx.repository.models.items()
              if entry.token and not ctx.may_use(http, name)}
    return ctx.metrics.response(hidden)


def _healthz(ctx: ServerContext, http: Request) -> Response:
    return Response(200 if ctx.repository.ready else 503, b"", content_type="")


def _not_found(ctx: ServerContext, http: Request) -> Response:
    return v2_rest.error_response(ServeError(
        "not_found", f"no such endpoint: {http.method} {clip(http.path)} (try /v2, /v1/models/<m>, /api/predict/<m>)"))


def segments(path: str) -> list[str]:
    """The segments of a raw path after its leading ``/``, each percent-decoded on its own."""
    return [unquote(part) if "%" in part else part for part in path.split("/")[1:]]


def resolve(path: str) -> Route:
    """The route for a raw request path (escapes as sent)."""
    parts = segments(path)
    head = parts[0] if parts else ""
    if head == "v2":
        parts = [p for p in parts[1:] if p]
        model, version = "", ""
        if len(parts) >= 2 and parts[0] == "models":
            model = parts[1]
            if len(parts) >= 4 and parts[2] == "versions":
                version = parts[3]
        handler, args = v2_rest.route(parts)
        return Route(handler, args, "v2", model, version, v2_rest.error_response, handler is not v2_rest.not_found)
    if head == "api" and len(parts) >= 3 and parts[1] == "predict" and parts[2]:
        model = parts[2]
        return Route(eas.dispatch, (model, path[len("/api/predict/"):]), "eas", model, "", eas.error_response)
    if head.lower() == "v1" and len(parts) > 1:
        match = tfserving.route(path)
        model, version = (match["name"], match["version"] or "") if match else ("", "")
        return Route(tfserving.dispatch, (match,), "tfserving", model, version, tfserving.error_response,
                     match is not None)
    if head == "ui":
        return Route(dashboard.handle, ([p for p in parts[1:] if p],), None, "", "", v2_rest.error_response)
    if path == "/metrics":
        return Route(_metrics, (), None, "", "", v2_rest.error_response)
    if path in ("/", "/healthz"):
        return Route(_healthz, (), None, "", "", v2_rest.error_response)
    return Route(_not_found, (), None, "", "", v2_rest.error_response, False)


class ServerApp:
    """Routes ``/v2`` (KServe v2), ``/v1`` (TF Serving), ``/api/predict`` (EAS and hooks)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._routes: dict[str, Route] = {}

    def dispatch(self, request: Request) -> MaybeAwaitable[Response]:
        """Answer one request (at once when possible), recording it in the metrics."""
        route = self._routes.get(request.path)
        if route is None:
            route = resolve(request.path)
            if route.known and len(request.path) <= MAX_CACHED_PATH and (
                    not route.model or route.model in self.ctx.repository.models):
                if len(self._routes) >= ROUTE_CACHE_SIZE:
                    self._routes.clear()
                self._routes[request.path] = route
        start = perf_counter()
        try:
            result = route.handler(self.ctx, request, *route.args)
        except ServeError as err:
            result = route.on_error(err)
            self._note(route, err)
        if type(result) is not Response:
            return self._guarded(result, route, request, start)
        metrics = self.ctx.metrics
        if metrics is not None and route.protocol is not None:  # _record, written out: the hot path
            repository = self.ctx.repository
            model = route.model if route.model in repository.models else ""
            version = request.version
            if not version and model:
                version = repository.version_label(model, route.version)
            metrics.record(route.protocol, model, version, result.status, perf_counter() - start, request)
        return result

    def _record(self, metrics: Any, route: Route, request: Request, status: int, start: float) -> None:
        """Count one answer, labelled with the model and the version that answered; one that never
        reached a version (an error, metadata, readiness) is labelled with the version it names, else
        the model's default: one model's requests never split between "" and its version."""
        repository = self.ctx.repository
        model = route.model if route.model in repository.models else ""
        version = request.version or (repository.version_label(model, route.version) if model else "")
        metrics.record(route.protocol, model, version, status, perf_counter() - start, request)

    def _note(self, route: Route, err: ServeError) -> None:
        """An error answer for the dashboard's recent errors (the error path only)."""
        monitor = self.ctx.monitor
        if monitor is not None and route.model:
            monitor.error(route.model, err.http_status, err.message)

    async def _guarded(self, awaitable: Awaitable[Response], route: Route, request: Request,
                       start: float) -> Response:
        try:
            response = await awaitable
        except ServeError as err:
            response = route.on_error(err)
            self._note(route, err)
        metrics = self.ctx.metrics
        if metrics is not None and route.protocol is not None:
            self._record(metrics, route, request, response.status, start)
        return response
