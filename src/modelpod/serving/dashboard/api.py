"""The dashboard's HTTP side: the page and its files under ``/ui``, and the JSON it reads.

``GET /ui`` is the page (static: it holds no data, so it needs no token); its script reads

* ``GET /ui/api/overview``: the server, every model the caller may see (versions with state and
  reason, platform, instances, worker PIDs and restarts, environment, warm-up), and the events;
* ``GET /ui/api/models/<m>``: one model's spec, its per-second samples and its recent errors.

When the server has a token, both need it (``Authorization: Bearer <token>``, as ``/metrics``);
models guarded by a token of their own appear only to callers that carry it. The page asks for the
token with a login form and keeps it in the browser's session storage. The try-it form calls the
model's ordinary endpoints (``/v2/models/<m>/infer``, ``/api/predict/<m>`` for service hooks).
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import Any

from modelpod._version import __version__
from modelpod.codecs.datatypes import DTYPE_TO_V2
from modelpod.errors import ServeError, clip
from modelpod.serving.auth import check_token
from modelpod.serving.context import ServerContext
from modelpod.serving.http.messages import Request, Response, json_response

_STATIC = {"": ("index.html", "text/html; charset=utf-8"),
           "app.js": ("app.js", "text/javascript; charset=utf-8"),
           "style.css": ("style.css", "text/css; charset=utf-8")}
_CACHE: dict[str, bytes] = {}


def handle(ctx: ServerContext, http: Request, rest: list[str]) -> Response:
    """``/ui/<rest...>``."""
    if http.method not in ("GET", "HEAD"):
        raise ServeError("method", f"{http.method} {clip(http.path)} is not supported; use GET")
    if len(rest) <= 1 and (not rest or rest[0] in _STATIC):
        return _static(rest[0] if rest else "")
    if rest[:1] != ["api"]:
        raise ServeError("not_found", f"no such dashboard page: {clip(http.path)}")
    if ctx.token:
        check_token(ctx.token, http.headers.get("authorization"))
    if rest[1:] == ["overview"]:
        return json_response(overview(ctx, http))
    if len(rest) == 3 and rest[1] == "models":
        return json_response(model_detail(ctx, http, rest[2]))
    raise ServeError("not_found", f"no such dashboard endpoint: {clip(http.path)}")


def _static(name: str) -> Response:
    filename, content_type = _STATIC[name]
    body = _CACHE.get(filename)
    if body is None:
        body = _CACHE[filename] = (files(__package__) / "static" / filename).read_bytes()
    return Response(200, body, [("cache-control", "no-cache")], content_type)


def _visible(ctx: ServerContext, http: Request, name: str) -> bool:
    entry = ctx.repository.models.get(name)
    token = entry.token if entry is not None else (ctx.manager.configured_token(name) if ctx.manager else None)
    return not token or ctx.may_use(http, name)


def overview(ctx: ServerContext, http: Request) -> dict[str, Any]:
    """The server and every model the caller may see."""
    monitor = ctx.monitor
    models = [_model_row(ctx, entry) for name, entry in sorted(ctx.repository.models.items())
              if _visible(ctx, http, name)]
    served = {m["name"] for m in models}
    manager = ctx.manager
    for (name, version), reason in sorted((manager.failures if manager is not None else {}).items()):
        if name not in served and _visible(ctx, http, name):  # never loaded: only its failure is known
            models.append({"name": name, "platform": "", "ready": False, "hooks": False, "versions": [
                {"version": str(version), "state": "FAILED", "reason": reason, "mode": "", "instances": 0,
                 "workers": [], "restarts": 0, "environment": None, "warm_up_ms": None}]})
    return {
        "server": {"name": "modelpod", "version": __version__, "ready": ctx.repository.ready,
                   "uptime_s": time.time() - monitor.started if monitor else None,
                   "token": bool(ctx.token), "model_control": ctx.model_control},
        "models": models,
        "events": monitor.recent_events(lambda m: _visible(ctx, http, m)) if monitor else [],
    }


def _model_row(ctx: ServerContext, entry: Any) -> dict[str, Any]:
    failures = ctx.manager.failures if ctx.manager is not None else {}
    versions = []
    platform, hooks = "", False
    for version, served in sorted(entry.versions.items()):
        platform = served.model.platform
        hooks = hooks or served.service is not None
        environment = getattr(served, "environment", None)
        reason = served.reason or failures.get((served.name, version), "")
        versions.append({
            "version": served.version_label, "state": served.state, "reason": reason, "mode": served.mode,
            "instances": served.settings.instances,
            "workers": [w.pid for w in getattr(served, "_workers", ()) if w.pid is not None],
            "restarts": served.restarts,
            "environment": getattr(environment, "key", None) if environment is not None else None,
            "warm_up_ms": served.warm_up_ms,
        })
    default = entry.default()
    return {"name": entry.name, "platform": platform, "ready": bool(default and default.ready), "hooks": hooks,
            "versions": versions}


def model_detail(ctx: ServerContext, http: Request, name: str) -> dict[str, Any]:
    """One model's spec, samples and recent errors (its own token when it has one)."""
    ctx.authorize(http, name)
    served = ctx.repository.get(name, require_ready=False)
    spec = served.model.spec

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "dtype": s.dtype, "datatype": DTYPE_TO_V2[s.dtype],
                 "shape": [d if isinstance(d, int) else (None if d is None else str(d)) for d in s.shape]}
                for s in specs]

    monitor = ctx.monitor
    return {"name": name, "version": served.version_label, "platform": served.model.platform,
            "hooks": served.service is not None, "inputs": tensors(spec.inputs), "outputs": tensors(spec.outputs),
            "series": monitor.series(name) if monitor else [],
            "errors": monitor.recent_errors(name) if monitor else []}
