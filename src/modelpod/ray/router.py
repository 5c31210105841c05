"""The ingress of the per-model layout: one front deployment that hands each request to its model's.

Ray's proxies route by application, not by model, and modelpod's protocols name the model in
different places of the path, so a small router deployment reads the model name the way modelpod's
own server does (:func:`modelpod.serving.app.resolve`) and passes the request, unchanged, to that
model's deployment (:class:`~modelpod.ray.model_replica.ModelReplica`), whose replica answers it
exactly as ``modelpod serve`` would: protocol, auth, status codes and bodies. What names no model
is answered from every deployment together: readiness (ready when all are), the repository index
(every model's entries), ``/metrics`` (each deployment's series, labelled ``deployment``). An
unknown model goes to any deployment, whose error lists every model (the replicas know the others'
names). gRPC calls go the same way, by their model name.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson

from modelpod.ray.grpc import RPCS, RpcMethods, ray_metadata
from modelpod.serving.app import resolve, segments
from modelpod.serving.asgi import read_request, send_response
from modelpod.serving.http.messages import Request, Response


def request_kind(path: str) -> tuple[str, str]:
    """What a request path asks: ("model", name), or ("ready"|"index"|"metrics"|"any", "")."""
    parts = segments(path)
    if parts[:1] == ["v2"]:
        rest = [p for p in parts[1:] if p]
        if rest == ["health", "ready"]:
            return "ready", ""
        if rest == ["repository", "index"]:
            return "index", ""
        if len(rest) >= 3 and rest[:2] == ["repository", "models"]:
            return "model", rest[2]
    if path in ("/", "/healthz"):
        return "ready", ""
    if path == "/metrics":
        return "metrics", ""
    model = resolve(path).model
    return ("model", model) if model else ("any", "")


def merge_index(answers: list[Response]) -> Response:
    """Every deployment's repository index as one (the first failure instead, when one failed)."""
    failed = next((a for a in answers if a.status != 200), None)
    if failed is not None:
        return failed
    entries = [entry for answer in answers for entry in orjson.loads(answer.body)]
    return Response(200, orjson.dumps(entries), [], answers[0].content_type)


def merge_ready(answers: list[Response]) -> Response:
    """Ready when every deployment is (the first one that is not answers otherwise)."""
    return next((a for a in answers if a.status != 200), answers[0])


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?(\s.*)$")


def merge_metrics(answers: list[tuple[str, Response]]) -> Response:
    """Each deployment's Prometheus text as one exposition: every family's HELP and TYPE once, its
    samples from all deployments, each labelled ``deployment="<model>"`` (so no series repeats)."""
    failed = next((a for _, a in answers if a.status != 200), None)
    if failed is not None:
        return failed
    families: dict[str, list[str]] = {}
    headers: dict[str, list[str]] = {}
    for model, answer in answers:
        label = 'deployment="' + model.replace("\\", "\\\\").replace('"', '\\"') + '"'
        family = ""
        for line in bytes(answer.body).decode().splitlines():
            if line.startswith("# "):
                fields = line.split(" ", 3)
                if len(fields) >= 3 and fields[1] in ("HELP", "TYPE"):
                    family = fields[2]
                    lines = headers.setdefault(family, [])
                    if not any(h.split(" ", 2)[1] == fields[1] for h in lines):
                        lines.append(line)
                    families.setdefault(family, [])
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, labels, rest = match.groups()
            labels = "{" + label + ("," + labels[1:] if labels and labels != "{}" else "}")
            families.setdefault(family or name, []).append(name + labels + rest)
    out = []
    for family, samples in families.items():
        out += headers.get(family, [])
        out += samples
    return Response(200, ("\n".join(out) + "\n").encode(), [], answers[0][1].content_type)


class Router(RpcMethods):
    """The router deployment: ``handles`` maps each model to its deployment's handle."""

    def __init__(self, handles: dict[str, Any], max_body_bytes: int) -> None:
        if not handles:
            raise ValueError("the router needs at least one model deployment")
        self.handles = handles
        self.max_body_bytes = max_body_bytes
        self._first = next(iter(handles.values()))

    def __serve_build_asgi_app__(self) -> Any:
        return _RouterAsgi(self)

    async def serve_asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The router's HTTP side (ASGI)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive, send, self.max_body_bytes)
        if request is not None:
            await send_response(send, await self.dispatch(request))

    async def dispatch(self, request: Request) -> Response:
        """The answer to one HTTP request, from the deployment(s) it concerns."""
        kind, model = request_kind(request.path)
        if kind == "model":
            return await self.handles.get(model, self._first).http.remote(request)
        if kind == "any":
            return await self._first.http.remote(request)
        answers = await asyncio.gather(*(h.http.remote(request) for h in self.handles.values()))
        if kind == "ready":
            return merge_ready(answers)
        if kind == "index":
            return merge_index(answers)
        return merge_metrics(list(zip(self.handles, answers)))

    async def _rpc(self, name: str, request: Any, grpc_context: Any) -> Any:
        payload = request.SerializeToString()
        metadata = ray_metadata(grpc_context)
        model = getattr(request, "model_name", "") or getattr(request, "name", "")
        if name == "ServerReady":
            answers = await asyncio.gather(*(h.rpc.remote(name, payload, metadata) for h in self.handles.values()))
            failed = next((a for a in answers if a[1] is not None), None)
            answer = failed or next((a for a in answers if not RPCS[name][1].FromString(a[0]).ready), answers[0])
        else:
            answer = await self.handles.get(model, self._first).rpc.remote(name, payload, metadata)
        body, code, details, trailing = answer
        if grpc_context is not None:
            if code is not None:
                import grpc

                grpc_context.set_code(grpc.StatusCode[code])
                grpc_context.set_details(details)
            if trailing:
                grpc_context.set_trailing_metadata(trailing)
        return RPCS[name][1].FromString(body)


class _RouterAsgi:
    """The router as an ASGI 3 object (an object with an async ``__call__``, as ASGI servers expect)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.router.serve_asgi(scope, receive, send)
