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
    """What modelpod's servicer asks of a gRPC context, over Serve's RayServegRPCContext."""

    def __init__(self, ray_context: Any) -> None:
        self._ray = ray_context

    def invocation_metadata(self) -> Any:
        return self._ray.invocation_metadata() if self._ray is not None else ()

    def time_remaining(self) -> None:
        return None  # Serve's proxy does not pass the client's deadline on

    def set_trailing_metadata(self, metadata: Any) -> None:
        if self._ray is not None:
            self._ray.set_trailing_metadata(metadata)


class GrpcMethods:
    """The v2 RPCs as methods of a Serve replica whose ``_asgi_app`` is modelpod's AsgiApp."""

    _asgi_app: Any

    async def _rpc(self, name: str, request: Any, grpc_context: Any) -> Any:
        parts = await self._asgi_app.open()
        servicer = getattr(self, "_modelpod_servicer", None)
        if servicer is None or servicer.ctx is not parts.ctx:
            servicer = self._modelpod_servicer = InferenceServicer(parts.ctx)
        try:
            result = getattr(servicer, name)(request, _Context(grpc_context))
            if inspect.isawaitable(result):
                result = await result
            return result
        except ServeError as error:
            if grpc_context is not None:
                grpc_context.set_code(grpc.StatusCode[error.grpc_code])
                grpc_context.set_details(error.message)
            return RPCS[name][1]()

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
