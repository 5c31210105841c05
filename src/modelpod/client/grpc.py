"""The gRPC flavours: :class:`GrpcClient` / :class:`AsyncGrpcClient` (``modelpod.connect("grpc://host:8081")``).

Speaks ``inference.GRPCInferenceService`` with modelpod's own compiled messages (the same wire as
Triton's); tensors travel in ``raw_input_contents`` / ``raw_output_contents``. The token goes as
``authorization: Bearer <token>`` metadata. ``compression="gzip"`` / ``"deflate"`` uses gRPC's
message compression (gRPC has no zstd). A modelpod server reports the package's default transport
in the ModelMetadata trailing metadata (``modelpod-transport``), since the v2 message has no
parameters field; other servers simply have none.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import orjson

from modelpod.client.aio import AsyncClient
from modelpod.client.sync import Client
from modelpod.codecs.v2 import WireRequest
from modelpod.codecs.v2_grpc import decode_infer_response, encode_infer_request, metadata_from_grpc
from modelpod.errors import GRPC_TO_HTTP, CodecError, ServerError
from modelpod.protos import grpc_service_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
TRANSPORT_METADATA = "modelpod-transport"
_MAX = 2**31 - 1
_OPTIONS = [("grpc.max_send_message_length", _MAX), ("grpc.max_receive_message_length", _MAX)]
_METHODS = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}


def _compression(name: str | None) -> Any:
    if name is None:
        return None
    if name == "gzip":
        return grpc.Compression.Gzip
    if name == "deflate":
        return grpc.Compression.Deflate
    raise ValueError(f"gRPC supports gzip or deflate compression, not {name!r}")


def _stubs(channel: Any) -> dict[str, Any]:
    return {
        name: channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=req.SerializeToString,
                                  response_deserializer=resp.FromString)
        for name, (req, resp) in _METHODS.items()
    }


def _error(err: grpc.RpcError) -> ServerError:
    code = err.code()
    name = code.name if code is not None else "UNKNOWN"
    return ServerError(GRPC_TO_HTTP.get(name, 500), err.details() or name, name)


def _transport_from(trailing: Any) -> dict[str, str] | None:
    for key, value in trailing or ():
        if key == TRANSPORT_METADATA:
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                return None
    return None


class GrpcClient(Client):
    """Synchronous v2 gRPC client (one channel; thread-safe)."""

    schemes = ("grpc",)

    def _open(self, max_connections: int) -> None:
        self._grpc_compression = _compression(self.compression)
        self._channel = grpc.insecure_channel(self.target, options=_OPTIONS)
        self._stub = _stubs(self._channel)
        self._call_metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any, timeout: float | None = None, retry: bool = True) -> tuple[Any, Any]:
        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                response, call = self._stub[method].with_call(
                    request, timeout=self.timeout if timeout is None else timeout,
                    metadata=self._call_metadata, compression=self._grpc_compression,
                )
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE and retry and attempt < self.retries:
                    self.stats.retries += 1
                    time.sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise _error(err) from None
            self.stats.bytes_sent += request.ByteSize()
            self.stats.bytes_received += response.ByteSize()
            return response, call

    def _fetch_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        response, call = self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version or ""))
        return metadata_from_grpc(response, _transport_from(call.trailing_metadata()))

    def ready(self, model: str, version: str | int | None = None) -> bool:
        request = pb.ModelReadyRequest(name=model, version="" if version is None else str(version))
        try:
            return bool(self._call("ModelReady", request, retry=False)[0].ready)
        except ServerError:
            return False

    def live(self) -> bool:
        try:
            return bool(self._call("ServerLive", pb.ServerLiveRequest(), retry=False)[0].live)
        except ServerError:
            return False

    def _infer(self, request: WireRequest, timeout: float | None) -> dict:
        response, _ = self._call("ModelInfer", encode_infer_request(request), timeout)
        try:
            return self._finish(decode_infer_response(response))
        except CodecError as exc:
            raise ServerError(200, f"the server's infer response cannot be decoded: {exc}") from None


class AsyncGrpcClient(AsyncClient):
    """v2 gRPC over grpc.aio (create it inside the event loop that uses it)."""

    schemes = ("grpc",)

    def _open(self, max_connections: int) -> None:
        self._grpc_compression = _compression(self.compression)
        self._channel = grpc.aio.insecure_channel(self.target, options=_OPTIONS)
        self._stub = _stubs(self._channel)
        self._call_metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, request: Any, timeout: float | None = None,
                    retry: bool = True) -> tuple[Any, Any]:
        attempt = 0
        while True:
            self.stats.requests += 1
            call = self._stub[method](
                request, timeout=self.timeout if timeout is None else timeout,
                metadata=self._call_metadata, compression=self._grpc_compression,
            )
            try:
                response = await call
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE and retry and attempt < self.retries:
                    self.stats.retries += 1
                    await asyncio.sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise _error(err) from None
            self.stats.bytes_sent += request.ByteSize()
            self.stats.bytes_received += response.ByteSize()
            return response, call

    async def _fetch_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        response, call = await self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version or ""))
        return metadata_from_grpc(response, _transport_from(await call.trailing_metadata()))

    async def ready(self, model: str, version: str | int | None = None) -> bool:
        request = pb.ModelReadyRequest(name=model, version="" if version is None else str(version))
        try:
            return bool((await self._call("ModelReady", request, retry=False))[0].ready)
        except ServerError:
            return False

    async def live(self) -> bool:
        try:
            return bool((await self._call("ServerLive", pb.ServerLiveRequest(), retry=False))[0].live)
        except ServerError:
            return False

    async def _infer(self, request: WireRequest, timeout: float | None) -> dict:
        response, _ = await self._call("ModelInfer", encode_infer_request(request), timeout)
        try:
            return self._finish(decode_infer_response(response))
        except CodecError as exc:
            raise ServerError(200, f"the server's infer response cannot be decoded: {exc}") from None
