"""KServe v2 gRPC (``inference.GRPCInferenceService``), on the same models as HTTP.

gRPC runs on grpcio's threaded server: its own threads receive, decode and encode messages, and
each RPC's work runs on the server's event loop (the one HTTP uses), so models, queues and metrics
are touched from one thread only. A handler answers at once when it can (models that run inline)
and hands back an awaitable otherwise, as on HTTP. On one core this answers more calls than
grpc.aio, whose poller thread wakes the loop several times per RPC: tiny add at concurrency 16 went
from 4.5k to 6.5k rps (``modelpod bench grpc://... --protocol grpc``, server on core 0, bench on
core 1).

The messages' tensors are :mod:`modelpod.codecs.v2_grpc`; this module is the servicer (the six
core RPCs and Triton's model configuration, statistics and model repository RPCs, which share their
logic with HTTP in :mod:`modelpod.serving.protocols.v2_models`), their statuses and the server's options. Message limits are raised past gRPC's 4 MiB
default (requests up to ``--max-body-mb``, like HTTP bodies).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from _thread import allocate_lock
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from modelpod._version import __version__
from modelpod.codecs import transport
from modelpod.codecs.datatypes import DTYPE_TO_V2, v2_shape
from modelpod.codecs.v2_grpc import decode_infer_request, encode_infer_response, grpc_params, param_value
from modelpod.errors import CodecError, ServeError
from modelpod.protos import grpc_service_pb2 as pb
from modelpod.serving.auth import check_token
from modelpod.serving.context import ServerContext
from modelpod.serving.execution import sequences
from modelpod.serving.http.messages import MaybeAwaitable, then, timeout_parameter_ms
from modelpod.serving.protocols import v2_classification, v2_shm
from modelpod.serving.protocols.v2_config import config_message
from modelpod.serving.protocols.v2_models import (
    config_of,
    control,
    lookup,
    repository_index,
    repository_load,
    repository_unload,
    statistics,
    v2_error,
)
from modelpod.serving.protocols.v2_stream import METHOD as STREAM_METHOD
from modelpod.serving.protocols.v2_stream import stream_handler

SERVICE = "inference.GRPCInferenceService"
#: the extensions this gRPC service speaks (Triton's names; the binary tensor extension is HTTP's:
#: gRPC always carries raw tensor bytes)
EXTENSIONS = ["classification", "model_repository", "model_configuration", "statistics", "sequence",
              "sequence(string_id)"]
#: the six core RPCs: name -> (request type, response type)
RPCS = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}
#: Triton's extension RPCs (model configuration, statistics, model repository) of :data:`EXTENSIONS`
EXTENSION_RPCS = {
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}
_GRPC_LIMIT_MAX = (1 << 31) - 1  # gRPC channel options are 32-bit ints
class InferenceServicer:
    """The v2 RPCs, answering from a ServerContext: the six core ones and Triton's extension RPCs.

    ``extensions`` is what ServerMetadata lists: :data:`EXTENSIONS` where the extension RPCs are
    registered (:func:`build_grpc_server`), none where only the core ones are (Ray Serve's proxy).
    """

    def __init__(self, ctx: ServerContext, extensions: list[str] | tuple[str, ...] = ()) -> None:
        self.ctx = ctx
        self.extensions = list(extensions)

    @staticmethod
    def _given(context: grpc.ServicerContext) -> str | None:
        """The ``authorization`` metadata the caller sent."""
        return dict(context.invocation_metadata() or ()).get("authorization")

    def _authorize(self, context: grpc.ServicerContext, model: str) -> None:
        token = self.ctx.token_for(model)
        if token:
            check_token(token, self._given(context))

    def _may_use(self, context: grpc.ServicerContext, model: str) -> bool:
        try:
            self._authorize(context, model)
        except ServeError:
            return False
        return True

    def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC names
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.ctx.repository.ready)

    def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize(context, request.name)
        try:
            lookup(self.ctx.repository, request.name, request.version or None)
        except ServeError as err:
            if err.kind in ("not_ready", "not_found"):  # like Triton: unknown is simply not ready
                return pb.ModelReadyResponse(ready=False)
            raise
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(name="modelpod", version=__version__, extensions=self.extensions)

    def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize(context, request.name)
        served = lookup(self.ctx.repository, request.name, request.version or None, require_ready=False)
        spec = served.model.spec
        meta = pb.ModelMetadataResponse.TensorMetadata
        if served.transport:  # the v2 message has no parameters field
            context.set_trailing_metadata((("modelpod-transport", orjson.dumps(served.transport).decode()),))
        return pb.ModelMetadataResponse(
            name=served.name, versions=[served.version_label], platform=served.model.platform,
            inputs=[meta(name=s.name, datatype=DTYPE_TO_V2[s.dtype], shape=v2_shape(s.shape)) for s in spec.inputs],
            outputs=[meta(name=s.name, datatype=DTYPE_TO_V2[s.dtype], shape=v2_shape(s.shape)) for s in spec.outputs],
        )

    def ModelInfer(self, request: Any, context: Any) -> MaybeAwaitable[Any]:  # noqa: N802
        self._authorize(context, request.model_name)
        try:
            served = self.ctx.repository.get(request.model_name, request.model_version or None)
        except ServeError as err:
            raise v2_error(self.ctx.repository, request.model_name, request.model_version, err) from None
        try:
            inputs = decode_infer_request(request, v2_shm.input_reader(self.ctx, request.model_name))
            transport.decode_inputs(inputs, {t.name: grpc_params(t.parameters) for t in request.inputs
                                             if t.parameters})
        except CodecError as exc:
            raise ServeError("bad_input", f"model '{request.model_name}': {exc}") from None
        outputs = [o.name for o in request.outputs] or None
        shm = top = None
        if outputs and any(len(o.parameters) for o in request.outputs):
            output_parameters = {o.name: grpc_params(o.parameters) for o in request.outputs if o.parameters}
            top = v2_classification.requested(served, output_parameters)
            shm = v2_shm.output_targets(self.ctx, request.model_name, output_parameters)
        remaining = context.time_remaining()
        timeout = remaining * 1000 if remaining is not None else None
        if "timeout" in request.parameters:  # µs; the shorter of it and the call's deadline
            param = timeout_parameter_ms(param_value(request.parameters["timeout"]))
            timeout = param if timeout is None else min(timeout, param)
        if request.parameters or served.sequences is not None:  # Triton's sequence extension
            admitted = sequences.admit(served, grpc_params(request.parameters), inputs, outputs)
            if admitted is not None:
                return then(sequences.infer(served, *admitted, outputs, timeout), _infer_response, served, request,
                            shm, top)
        return then(served.infer(inputs, outputs, None, timeout), _infer_response, served, request, shm, top)


    # -- Triton's extensions ----------------------------------------------------------------------
    def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize(context, request.name)
        served = lookup(self.ctx.repository, request.name, request.version or None, require_ready=False)
        return pb.ModelConfigResponse(config=config_message(config_of(served)))

    def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.name:
            self._authorize(context, request.name)
        elif self.ctx.token:
            check_token(self.ctx.token, self._given(context))
        stats = statistics(self.ctx, request.name, request.version or None, lambda m: self._may_use(context, m))
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        rows = repository_index(self.ctx, self._given(context), lambda m: self._may_use(context, m), request.ready,
                                request.repository_name)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

    def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._control(request, context, "load")

    def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._control(request, context, "unload")

    def _control(self, request: Any, context: Any, action: str) -> Any:
        manager = control(self.ctx, request.model_name, action, self._given(context))  # manager, token, flag
        parameters = {key: _repository_param(value) for key, value in request.parameters.items()}

        async def run() -> Any:
            if action == "load":
                await repository_load(manager, request.model_name, parameters, request.repository_name)
                return pb.RepositoryModelLoadResponse()
            await repository_unload(manager, request.model_name, parameters, request.repository_name)
            return pb.RepositoryModelUnloadResponse()

        return run()


def _repository_param(param: Any) -> Any:
    """A ModelRepositoryParameter's value (None when it holds none)."""
    which = param.WhichOneof("parameter_choice")
    return getattr(param, which) if which else None


def _infer_response(result: dict[str, np.ndarray], served: Any, request: Any,
                    shm: dict[str, v2_shm.OutputTarget] | None = None, top: dict[str, int] | None = None) -> Any:
    if top:  # outputs asked for as their top k (Triton's classification extension)
        result = v2_classification.classify(result, top, served)
    try:  # outputs the client asked to receive compact (int8/uint8/float16)
        result, compact = transport.encode_outputs(
            result, {o.name: grpc_params(o.parameters) for o in request.outputs if o.parameters})
    except CodecError as exc:
        raise ServeError("bad_input", f"model '{request.model_name}': {exc}") from None
    written = v2_shm.write_outputs(shm, result, served.name) if shm else None  # outputs into shared memory
    return encode_infer_response(served.name, served.version_label, request.id, result, compact, written)


class _Handoff:
    """One RPC's answer, handed from the event loop to the gRPC thread that waits for it: a lock
    the thread holds until the loop releases it (0.3 µs a call against 4.5 µs for a concurrent.futures.Future,
    whose Condition takes and notifies more locks: timeit, uncontended, this machine)."""

    __slots__ = ("lock", "response", "error")

    def __init__(self) -> None:
        self.lock = allocate_lock()
        self.lock.acquire()
        self.response: Any = None
        self.error: BaseException | None = None

    def set(self, response: Any, error: BaseException | None) -> None:  # on the loop
        self.response, self.error = response, error
        self.lock.release()

    def wait(self) -> tuple[Any, BaseException | None]:  # on the gRPC thread
        self.lock.acquire()
        return self.response, self.error


def _handler(ctx: ServerContext, loop: asyncio.AbstractEventLoop, fn: Any, request_cls: Any) -> grpc.RpcMethodHandler:
    """Wrap one RPC: run it on ``loop``; ServeError -> its gRPC status; every call counted in /metrics."""

    def finish(done: _Handoff, request: Any, start: float, response: Any, error: BaseException | None) -> None:
        if error is None:
            status = 200
        else:
            status = error.http_status if isinstance(error, ServeError) else 500
        if ctx.metrics is not None:  # labelled with served models and versions only (bounded)
            model = getattr(request, "model_name", None) or getattr(request, "name", "")
            if model not in ctx.repository.models:
                model = ""
            version = getattr(response, "model_version", "") if model else ""  # the version that answered
            if model and not version:  # an error, or an RPC that names none: the one it resolves to
                asked = getattr(request, "model_version", None) or getattr(request, "version", "")
                version = ctx.repository.version_label(model, asked)
            ctx.metrics.record("grpc", model, version, status, time.perf_counter() - start)
        done.set(response, error)

    def start(request: Any, context: grpc.ServicerContext, done: _Handoff) -> None:  # on the loop
        began = time.perf_counter()
        try:
            result = fn(request, context)
        except Exception as exc:  # noqa: BLE001 - ServeError -> its status; anything else -> UNKNOWN
            finish(done, request, began, None, exc)
            return
        if not inspect.isawaitable(result):
            finish(done, request, began, result, None)
            return

        def settled(task: asyncio.Future) -> None:
            try:
                finish(done, request, began, task.result(), None)
            except BaseException as exc:  # noqa: BLE001 - cancelled at shutdown included
                finish(done, request, began, None, exc)

        asyncio.ensure_future(result).add_done_callback(settled)

    parse = request_cls.FromString

    def call(raw: bytes, context: grpc.ServicerContext) -> Any:  # on a gRPC thread
        try:  # here, not in grpcio: its own failure path leaks memory and logs a traceback per call
            request = parse(raw)
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the {request_cls.__name__} message cannot be decoded: {exc}")
        done = _Handoff()
        loop.call_soon_threadsafe(start, request, context, done)
        response, error = done.wait()
        if error is not None:
            if not isinstance(error, ServeError):
                raise error  # grpcio answers UNKNOWN and logs it
            context.abort(grpc.StatusCode[error.grpc_code], error.in_words(DTYPE_TO_V2))
        return response

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=None, response_serializer=lambda msg: msg.SerializeToString(),
    )


def build_grpc_server(ctx: ServerContext, loop: asyncio.AbstractEventLoop, max_message_bytes: int = 1 << 30,
                      max_receive_bytes: int | None = None, threads: int | None = None) -> grpc.Server:
    """A gRPC server with the v2 service registered (call ``add_insecure_port`` and ``start``).

    RPCs run on ``loop``, which must keep running while the server serves (stop the server from
    another thread, e.g. ``await asyncio.to_thread(lambda: server.stop(grace).wait())``).
    ``threads`` (default ``ctx.limits.max_grpc_calls``) bounds the RPCs in progress at once, and
    calls past it get RESOURCE_EXHAUSTED at once instead of waiting for a thread; it is well above
    the default queue limits, so a full model queue answers RESOURCE_EXHAUSTED first. Requests over
    ``max_receive_bytes`` (default ``max_message_bytes``; ``modelpod serve`` passes
    ``--max-body-mb``) get RESOURCE_EXHAUSTED; answers may be up to ``max_message_bytes``.
    Connections with no call for ``ctx.limits.idle_timeout_s`` are closed, and metadata (headers)
    is bounded by ``ctx.limits.max_header_bytes``. Messages are decoded by the handler, so one that
    cannot be decoded gets INVALID_ARGUMENT.
    """
    limits = ctx.limits
    threads = threads or limits.max_grpc_calls
    servicer = InferenceServicer(ctx, EXTENSIONS + v2_shm.extensions(ctx))
    handlers = {name: _handler(ctx, loop, getattr(servicer, name), request_cls)
                for name, (request_cls, _) in {**RPCS, **EXTENSION_RPCS}.items()}
    shm_servicer = v2_shm.SharedMemoryServicer(ctx)  # Triton's shared memory RPCs
    handlers.update({name: _handler(ctx, loop, getattr(shm_servicer, name), request_cls)
                     for name, (request_cls, _) in v2_shm.RPCS.items()})
    handlers[STREAM_METHOD] = stream_handler(servicer, loop)  # bidirectional: ModelStreamInfer
    server = grpc.server(
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="modelpod-grpc"),
        options=[
            ("grpc.max_receive_message_length", min(max_receive_bytes or max_message_bytes, _GRPC_LIMIT_MAX)),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_connection_idle_ms", int(min(limits.idle_timeout_s * 1000, _GRPC_LIMIT_MAX))),
            ("grpc.max_metadata_size", min(limits.max_header_bytes, _GRPC_LIMIT_MAX)),
            ("grpc.so_reuseport", 0),  # a port already in use is an error, not a port silently shared
        ],
        maximum_concurrent_rpcs=threads,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return server
