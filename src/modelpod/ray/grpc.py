"""KServe v2 gRPC through Ray Serve's gRPC proxy.

Serve's proxy learns a service from an ``add_<Service>Servicer_to_server`` function (what protoc's
gRPC plugin writes); :func:`add_GRPCInferenceServiceServicer_to_server` is that function for
``inference.GRPCInferenceService``, named in ``gRPCOptions.grpc_servicer_functions``. The proxy
routes a call to the application its ``application`` metadata names (the only one when there is
one), where the replica's methods of the same names (:class:`GrpcMethods`) answer with modelpod's
own servicer, on the replica's models. A client sends ``application: modelpod`` as metadata
(tritonclient.grpc: ``headers={"application": "modelpod"}``), plus ``authorization`` when a token
is set.
"""

from __future__ import annotations

import inspect
from typing import Any

import grpc

from modelpod.errors import ServeError
from modelpod.serving.protocols.v2_grpc import RPCS, SERVICE, InferenceServicer

SERVICER_FUNCTION = f"{__name__}.add_GRPCInferenceServiceServicer_to_server"


def add_GRPCInferenceServiceServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802 - protoc's name
    """Register the v2 service's RPCs (protoc's generated function, written by hand)."""
    handlers = {name: grpc.unary_unary_rpc_method_handler(
        getattr(servicer, name), request_deserializer=request.FromString,
        response_serializer=response.SerializeToString) for name, (request, response) in RPCS.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


class _Context:
    """What modelpod's servicer asks of a gRPC context: the caller's metadata in, a status and
    trailing metadata out (kept here, and passed on to Serve's RayServegRPCContext when there is one)."""

    def __init__(self, metadata: Any = (), ray_context: Any = None) -> None:
        self.metadata = tuple(metadata or ())
        self._ray = ray_context
        self.code: str | None = None
        self.details = ""
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> Any:
        return self.metadata

    def time_remaining(self) -> None:
        return None  # Serve's proxy does not pass the client's deadline on

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = tuple(metadata)
        if self._ray is not None:
            self._ray.set_trailing_metadata(metadata)

    def fail(self, error: ServeError) -> None:
        self.code, self.details = error.grpc_code, error.message
        if self._ray is not None:
            self._ray.set_code(grpc.StatusCode[error.grpc_code])
            self._ray.set_details(error.message)


async def answer_rpc(holder: Any, asgi_app: Any, name: str, request: Any, context: _Context) -> Any:
    """RPC ``name`` answered by modelpod's own servicer on ``asgi_app``'s models (the servicer is
    kept on ``holder`` while the app's parts stay the same); a ServeError becomes the status."""
    parts = await asgi_app.open()
    servicer = getattr(holder, "_modelpod_servicer", None)
    if servicer is None or servicer.ctx is not parts.ctx:
        servicer = holder._modelpod_servicer = InferenceServicer(parts.ctx)
    try:
        result = getattr(servicer, name)(request, context)
        if inspect.isawaitable(result):
            result = await result
        return result
    except ServeError as error:
        context.fail(error)
        return RPCS[name][1]()


def ray_metadata(grpc_context: Any) -> tuple[tuple[str, str], ...]:
    """The caller's metadata from Serve's gRPC context (none when called through a handle)."""
    return tuple(grpc_context.invocation_metadata()) if grpc_context is not None else ()


class RpcMethods:
    """The v2 RPCs as methods of a Serve deployment, each handed to ``_rpc``."""

    async def _rpc(self, name: str, request: Any, grpc_context: Any) -> Any:
        raise NotImplementedError

    async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ServerLive", request, grpc_context)

    async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ServerReady", request, grpc_context)

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelReady", request, grpc_context)

    async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ServerMetadata", request, grpc_context)

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelMetadata", request, grpc_context)

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelInfer", request, grpc_context)


class GrpcMethods(RpcMethods):
    """The v2 RPCs of a replica whose ``_asgi_app`` is modelpod's AsgiApp (the repository layout)."""

    _asgi_app: Any

    async def _rpc(self, name: str, request: Any, grpc_context: Any) -> Any:
        context = _Context(ray_metadata(grpc_context), grpc_context)
        return await answer_rpc(self, self._asgi_app, name, request, context)
