"""Triton's shared memory extension over v2 REST and gRPC: the region endpoints and the infer hooks.

System shared memory (``system_shared_memory`` in server metadata) is on where ``modelpod serve``
listens on loopback (``--shared-memory`` / ``--no-shared-memory`` decide elsewhere); the regions live
in :mod:`modelpod.serving.shared_memory`. REST:

- ``POST /v2/systemsharedmemory/region/<name>/register`` with ``{"key", "offset", "byte_size"}``
- ``GET /v2/systemsharedmemory[/region/<name>]/status`` -> ``[{"name", "key", "offset", "byte_size"}]``
- ``POST /v2/systemsharedmemory[/region/<name>]/unregister`` (every region without a name)

gRPC: ``SystemSharedMemoryRegister`` / ``Status`` / ``Unregister`` on the same service. Every one
needs the server token when one is set. With the extension off they answer 403 (nothing is
registered, and infer requests naming a region get 400).

CUDA shared memory is not spoken (no GPU support): ``cudasharedmemory`` register answers 400
saying so; its status lists no regions and its unregister has nothing to do (200), as a Triton
built without GPUs answers, so clients that clear both kinds of regions first work unchanged.

Infer: an input whose parameters hold ``shared_memory_region`` and ``shared_memory_byte_size``
(``shared_memory_offset`` optional, default 0) is read from the region (no data in the body); the
byte size must be what the datatype and shape need (BYTES: Triton's 4-byte length-prefixed
elements, read exactly). A requested output with those parameters is written to the region after
the model ran, when it fits, and its response entry carries the region's parameters and no data
(``shared_memory_byte_size`` is the bytes written); on gRPC its ``raw_output_contents`` entry is
empty, keeping the others' positions. Region and bounds are checked before the model runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orjson

from modelpod.codecs.datatypes import element_count, v2_datatype, v2_numpy_dtype
from modelpod.codecs.v2 import (
    SHM_OFFSET,
    SHM_REGION,
    SHM_SIZE,
    decode_bytes_tensor,
    encode_bytes_tensor,
    uses_shared_memory,
)
from modelpod.errors import ServeError, clip
from modelpod.protos import shared_memory_pb2 as pb
from modelpod.serving.auth import check_token
from modelpod.serving.context import ServerContext
from modelpod.serving.http.messages import Request, Response, json_response
from modelpod.serving.shared_memory import Region, SharedMemoryRegistry

EXTENSION = "system_shared_memory"
#: the v2 REST path heads this module answers
HEADS = ("systemsharedmemory", "cudasharedmemory")
#: gRPC RPCs: name -> (request type, response type)
RPCS = {
    "SystemSharedMemoryStatus": (pb.SystemSharedMemoryStatusRequest, pb.SystemSharedMemoryStatusResponse),
    "SystemSharedMemoryRegister": (pb.SystemSharedMemoryRegisterRequest, pb.SystemSharedMemoryRegisterResponse),
    "SystemSharedMemoryUnregister": (pb.SystemSharedMemoryUnregisterRequest,
                                     pb.SystemSharedMemoryUnregisterResponse),
    "CudaSharedMemoryStatus": (pb.CudaSharedMemoryStatusRequest, pb.CudaSharedMemoryStatusResponse),
    "CudaSharedMemoryRegister": (pb.CudaSharedMemoryRegisterRequest, pb.CudaSharedMemoryRegisterResponse),
    "CudaSharedMemoryUnregister": (pb.CudaSharedMemoryUnregisterRequest, pb.CudaSharedMemoryUnregisterResponse),
}
NO_CUDA = "CUDA shared memory is not supported on this server (no GPU support); use system shared memory"


def extensions(ctx: ServerContext) -> list[str]:
    """What server metadata lists for this module: the system extension when it is on."""
    return [EXTENSION] if ctx.shared_memory is not None else []


def _bad(message: str) -> ServeError:
    return ServeError("bad_input", message)


def _registry(ctx: ServerContext) -> SharedMemoryRegistry:
    registry = ctx.shared_memory
    if registry is None:
        raise ServeError("forbidden", "system shared memory is turned off on this server; start it with "
                         "--shared-memory to register regions")
    return registry


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _bad(f"{what} must be a non-negative integer, got {clip(repr(value))}")
    return value


# -- the region endpoints, one implementation for both protocols -----------------------------------
def system_status(ctx: ServerContext, name: str) -> list[dict[str, Any]]:
    return _registry(ctx).status(name or None)


def system_register(ctx: ServerContext, name: str, key: Any, offset: Any, byte_size: Any) -> None:
    if not name:
        raise _bad("a region name is needed to register system shared memory: "
                   "POST /v2/systemsharedmemory/region/<name>/register")
    _registry(ctx).register(name, key, offset, byte_size)


def system_unregister(ctx: ServerContext, name: str) -> None:
    _registry(ctx).unregister(name or None)


def cuda_status(name: str) -> list[dict[str, Any]]:
    if name:
        raise _bad(f"no CUDA shared memory region '{clip(name)}' is registered: {NO_CUDA}")
    return []


def cuda_register(name: str) -> None:
    raise _bad(f"failed to register CUDA shared memory region '{clip(name)}': {NO_CUDA}")


# -- REST ------------------------------------------------------------------------------------------
def http_route(head: str, rest: list[str]) -> tuple[Callable[..., Response], tuple[Any, ...]] | None:
    """The handler and arguments for ``/v2/<head>/<rest...>``, or None for no such endpoint."""
    if rest in (["status"], ["unregister"]):
        return _http, (head, rest[0], "")
    if len(rest) == 3 and rest[0] == "region" and rest[2] in ("status", "register", "unregister"):
        return _http, (head, rest[2], rest[1])
    return None


def _http(ctx: ServerContext, http: Request, head: str, action: str, name: str) -> Response:
    if ctx.token:
        check_token(ctx.token, http.headers.get("authorization"))
    wanted = "GET" if action == "status" else "POST"
    if http.method != wanted:
        raise ServeError("method", f"{http.method} {clip(http.path)} is not supported; use {wanted}")
    if head == "cudasharedmemory":
        if action == "status":
            return json_response(cuda_status(name))
        if action == "register":
            cuda_register(name)
        return Response(200, b"", content_type="application/json")
    if action == "status":
        return json_response(system_status(ctx, name))
    if action == "register":
        _registry(ctx)
        doc = _body(http, name)
        for field in ("key", "byte_size"):
            if field not in doc:
                raise _bad(f"failed to register shared memory region '{clip(name)}': the request has no "
                           f"'{field}' field")
        system_register(ctx, name, doc["key"], doc.get("offset", 0), doc["byte_size"])
    else:
        system_unregister(ctx, name)
    return Response(200, b"", content_type="application/json")


def _body(http: Request, name: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(http.body) if bytes(http.body).strip() else None
    except orjson.JSONDecodeError as exc:
        raise _bad(f"failed to register shared memory region '{clip(name)}': the body is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _bad(f"failed to register shared memory region '{clip(name)}': send a JSON object "
                   '{"key": "/object", "offset": 0, "byte_size": N}')
    return doc


# -- gRPC ------------------------------------------------------------------------------------------
class SharedMemoryServicer:
    """The shared memory RPCs, registered next to the core ones by ``build_grpc_server``."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def _authorize(self, context: Any) -> None:
        if self.ctx.token:
            check_token(self.ctx.token, dict(context.invocation_metadata() or ()).get("authorization"))

    def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC names
        self._authorize(context)
        response = pb.SystemSharedMemoryStatusResponse()
        for row in system_status(self.ctx, request.name):
            response.regions[row["name"]].CopyFrom(pb.SystemSharedMemoryStatusResponse.RegionStatus(**row))
        return response

    def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize(context)
        system_register(self.ctx, request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize(context)
        system_unregister(self.ctx, request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize(context)
        cuda_status(request.name)
        return pb.CudaSharedMemoryStatusResponse()

    def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize(context)
        cuda_register(request.name)

    def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize(context)
        return pb.CudaSharedMemoryUnregisterResponse()


# -- infer: inputs from regions, outputs into them ------------------------------------------------
def _span(params: Mapping[str, Any], what: str) -> tuple[Any, int, int]:
    """(region name, offset, byte size) from a tensor's parameters."""
    if SHM_REGION not in params or SHM_SIZE not in params:
        raise _bad(f"{what}: shared memory needs both parameters.{SHM_REGION} and parameters.{SHM_SIZE} "
                   f"({SHM_OFFSET} is optional)")
    return (params[SHM_REGION], _uint(params.get(SHM_OFFSET, 0), f"{what}: {SHM_OFFSET}"),
            _uint(params[SHM_SIZE], f"{what}: {SHM_SIZE}"))


def input_reader(ctx: ServerContext, model: str) -> Callable[[str, str, list, Mapping[str, Any]], np.ndarray]:
    """What the v2 decoders call for an input that names a region: its array, read from the region."""

    def read(name: str, datatype: str, shape: list, params: Mapping[str, Any]) -> np.ndarray:
        what = f"model '{clip(model)}': input '{clip(name)}'"
        registry = ctx.shared_memory
        if registry is None:
            raise _bad(f"{what}: system shared memory is turned off on this server (start it with --shared-memory)")
        region_name, offset, size = _span(params, what)
        region = registry.get(region_name, what)
        dtype = v2_numpy_dtype(datatype, name)
        count = element_count(shape, name)
        if dtype is not None:
            if size != count * dtype.itemsize:
                raise _bad(f"{what}: {SHM_SIZE} is {size} bytes but {datatype} of shape {shape} needs "
                           f"{count * dtype.itemsize}")
            return region.read(offset, size, what).view(dtype).reshape(shape)
        if count > size // 4:  # every BYTES element has a 4-byte length: check before reading
            raise _bad(f"{what}: {count} BYTES elements need at least {count * 4} bytes, {SHM_SIZE} is {size}")
        region.check_span(offset, size, what)
        return decode_bytes_tensor(memoryview(region.read(offset, size, what)), count, name).reshape(shape)

    return read


class OutputTarget:
    """Where one requested output goes: ``size`` bytes at ``offset`` in ``region``."""

    __slots__ = ("region", "offset", "size")

    def __init__(self, region: Region, offset: int, size: int) -> None:
        self.region, self.offset, self.size = region, offset, size


def output_targets(ctx: ServerContext, model: str,
                   output_parameters: Mapping[str, Mapping[str, Any]]) -> dict[str, OutputTarget] | None:
    """The requested outputs that go to regions (checked now, before the model runs), or None."""
    targets: dict[str, OutputTarget] | None = None
    for name, params in output_parameters.items():
        if not uses_shared_memory(params):
            continue
        what = f"model '{clip(model)}': output '{clip(name)}'"
        if ctx.shared_memory is None:
            raise _bad(f"{what}: system shared memory is turned off on this server (start it with --shared-memory)")
        if params.get("binary_data") is True:
            raise _bad(f"{what}: set either parameters.{SHM_REGION} or parameters.binary_data, not both")
        if "classification" in params:
            raise _bad(f"{what}: set either parameters.{SHM_REGION} or parameters.classification, not both")
        region_name, offset, size = _span(params, what)
        region = ctx.shared_memory.get(region_name, what)
        region.check_span(offset, size, what)
        if targets is None:
            targets = {}
        targets[name] = OutputTarget(region, offset, size)
    return targets


def write_outputs(targets: Mapping[str, OutputTarget], outputs: Mapping[str, np.ndarray],
                  model: str) -> dict[str, dict[str, Any]]:
    """Write each targeted output to its region (every size checked before anything is written);
    returns the parameters each one's response entry carries."""
    blobs: dict[str, memoryview | bytes] = {}
    for name, target in targets.items():
        array = outputs.get(name)
        if array is None:
            continue
        datatype = v2_datatype(array)
        blob: memoryview | bytes = (encode_bytes_tensor(array) if datatype == "BYTES"
                                    else memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
        if len(blob) > target.size:
            raise _bad(f"model '{clip(model)}': output '{clip(name)}' ({datatype} of shape {list(array.shape)}) "
                       f"needs {len(blob)} bytes but its {SHM_SIZE} is {target.size}")
        blobs[name] = blob
    sent: dict[str, dict[str, Any]] = {}
    for name, blob in blobs.items():
        target = targets[name]
        target.region.write(target.offset, memoryview(blob), f"model '{clip(model)}': output '{clip(name)}'")
        params: dict[str, Any] = {SHM_REGION: target.region.name, SHM_SIZE: len(blob)}
        if target.offset:
            params[SHM_OFFSET] = target.offset
        sent[name] = params
    return sent
