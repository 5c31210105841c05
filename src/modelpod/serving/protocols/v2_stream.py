"""KServe v2 / Triton gRPC streaming: ``ModelStreamInfer``, requests in, responses out, one stream.

Each ``ModelInferRequest`` read from the stream runs as ``ModelInfer`` would (same models, tokens,
inputs, sequences, deadlines) and its answers go back as ``ModelStreamInferResponse`` messages:
``infer_response`` for an answer, ``error_message`` (plus the request's id in ``infer_response``)
for a failure, which ends that request and not the stream. Answers go out as they are ready, so
requests of different sequences may answer out of order; the client matches them by id. Like
Triton, every response carries the parameter ``triton_final_response``: true on a one-answer
model's response; false on each answer of a decoupled model, whose end is an empty response with it
true only when the request asked for ``triton_enable_empty_final_response``.

Bounds: a stream has at most ``limits.max_stream_in_flight`` requests in progress (past it the
server stops reading the stream until one is answered; gRPC flow control then holds the client's
sends), and at most ``limits.max_stream_answers`` decoupled answers waiting to be written (past it
the model's thread waits). Messages are bounded as ModelInfer's (``--max-body-mb``); a stream is
one of the ``--max-grpc-calls`` RPCs, and at most half of them may be streams (so unary calls
always find room). With a server token a stream must carry a token (the server's or a model's) when
it opens, not only with its first request: a stream that never sends cannot hold a slot unasked.

Threads: grpcio's threaded server gives the RPC a thread that writes the responses; a second one
reads the requests and hands each to the event loop, in order (so a sequence's requests are
admitted in the order they came). Everything about a request happens on the loop; decoupled
models run on their instance threads. When the stream ends (the client half-closes and every
request is answered, the client cancels, the deadline passes, the server stops), the requests still
running are cancelled, decoupled generators are closed at their next yield, the sequences the
stream started are ended, and both threads return.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from modelpod.codecs import transport
from modelpod.codecs.v2_grpc import decode_infer_request, grpc_params
from modelpod.errors import CodecError, ServeError
from modelpod.protos import grpc_service_pb2 as pb
from modelpod.serving.auth import check_token
from modelpod.serving.execution import decoupled, sequences
from modelpod.serving.http.messages import timeout_parameter_ms
from modelpod.serving.protocols import v2_classification

log = logging.getLogger("modelpod.serve")
METHOD = "ModelStreamInfer"
FINAL = "triton_final_response"
EMPTY_FINAL = "triton_enable_empty_final_response"


class Outbox:
    """Responses waiting to be written to one stream. Model threads wait while it holds ``limit``
    answers; the event loop never waits (its puts are bounded by the requests in flight)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, wait: bool) -> bool:
        """Queue ``item`` (waiting for room when ``wait``); False once the stream is closed."""
        with self._cond:
            while wait and len(self._items) >= self.limit and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self) -> Any:
        """The next response, waiting for one; None once closed and empty."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self, drop: bool = False) -> None:
        """No more responses: what is queued is still written (unless ``drop``), then the stream ends."""
        with self._cond:
            self._closed = True
            if drop:
                self._items.clear()
            self._cond.notify_all()


class StreamSession:
    """One ModelStreamInfer call."""

    def __init__(self, servicer: Any, loop: asyncio.AbstractEventLoop, context: grpc.ServicerContext) -> None:
        self.servicer = servicer
        self.ctx = servicer.ctx
        self.loop = loop
        self.context = context
        limits = self.ctx.limits
        self.outbox = Outbox(limits.max_stream_answers)
        self.max_in_flight = limits.max_stream_in_flight
        self._room = threading.Semaphore(self.max_in_flight)
        #: set once the stream is over (every producer and waiter checks it)
        self.gone = threading.Event()
        # the rest is touched on the event loop only
        self._tasks: set[asyncio.Task] = set()
        self._in_flight = 0
        self._reading = True
        self._tables: set[Any] = set()  # sequence tables where this stream started sequences

    # -- the two gRPC threads -------------------------------------------------------------------
    def responses(self, requests: Any) -> Any:
        """The RPC's response iterator (on a gRPC thread): starts the reader, yields what comes."""
        reader = threading.Thread(target=self._read, args=(requests,), daemon=True, name="modelpod-grpc-stream")
        reader.start()
        try:
            while True:
                item = self.outbox.get()
                if item is None:
                    return
                yield item
        finally:
            self.close()

    def _read(self, requests: Any) -> None:
        """Hand each request to the loop, in order, while fewer than the limit are in progress."""
        try:
            for raw in requests:
                self._room.acquire()
                if self.gone.is_set():
                    return
                self.loop.call_soon_threadsafe(self._start, raw)
        except Exception:  # noqa: BLE001 - grpc raises RpcError here when the call is cancelled
            pass
        finally:
            self._call_soon(self._read_done)

    def close(self) -> None:
        """The stream is over (any thread, more than once is fine): stop and free everything."""
        if self.gone.is_set():
            return
        self.gone.set()
        self.outbox.close(drop=True)
        for _ in range(self.max_in_flight):  # wake the reader if it waits for room
            self._room.release()
        self._call_soon(self._cleanup)

    def _call_soon(self, fn: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed: the server is gone, and everything with it
            pass

    # -- on the event loop ----------------------------------------------------------------------
    def _start(self, raw: bytes) -> None:
        if self.gone.is_set():
            return
        self._in_flight += 1
        began = time.perf_counter()
        request = None
        try:
            request = pb.ModelInferRequest.FromString(raw)
            work = self._admit(request)
        except DecodeError as exc:
            self._fail(None, ServeError("bad_input", f"the ModelInferRequest message cannot be decoded: {exc}"), began)
            self._done()
            return
        except ServeError as err:
            self._fail(request, err, began)
            self._done()
            return
        except Exception as exc:  # noqa: BLE001 - one request's failure never ends the stream
            log.error("ModelStreamInfer: request failed", exc_info=exc)
            self._fail(request, ServeError("model_failed", f"{type(exc).__name__}: {exc}"), began)
            self._done()
            return
        task = self.loop.create_task(self._finish(work, request, began))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _admit(self, request: Any) -> Any:
        """Everything up to the model, now and in stream order: the coroutine that answers it."""
        name = request.model_name
        self.servicer._authorize(self.context, name)
        served = self.ctx.repository.get(name, request.model_version or None)
        try:
            inputs = decode_infer_request(request)
            transport.decode_inputs(inputs, {t.name: grpc_params(t.parameters) for t in request.inputs
                                             if t.parameters})
        except CodecError as exc:
            raise ServeError("bad_input", f"model '{name}': {exc}") from None
        outputs = [o.name for o in request.outputs] or None
        top = v2_classification.requested(served, {o.name: grpc_params(o.parameters) for o in request.outputs
                                                   if o.parameters}) if outputs else None
        params = grpc_params(request.parameters) if request.parameters else None
        timeout = self._timeout_ms(params)
        admitted = sequences.admit(served, params, inputs, outputs, owner=self)
        ticket = None
        if admitted is not None:
            ticket, inputs = admitted
            self._tables.add(served.sequences)
        if served.decoupled:
            if ticket is None:
                inputs = sequences.check_inputs(served, inputs, outputs)
            empty_final = bool(params) and params.get(EMPTY_FINAL) is True  # type: ignore[union-attr]

            def emit(answer: Any) -> bool:  # on the model's thread
                return self.outbox.put(_response(served, request, answer, final=False, top=top), wait=True)

            running = decoupled.generate(served, ticket, inputs, outputs, timeout, emit, self.gone)
            return self._streamed(served, request, running, empty_final)
        if ticket is not None:
            result = sequences.infer(served, ticket, inputs, outputs, timeout)
        else:
            result = served.infer(inputs, outputs, None, timeout)
        return self._single(served, request, result, top)

    def _timeout_ms(self, params: dict[str, Any] | None) -> float | None:
        """The request's deadline: its ``timeout`` parameter (µs) and what is left of the stream's."""
        remaining = self.context.time_remaining()
        timeout = remaining * 1000 if remaining is not None else None
        if params and "timeout" in params:
            param = timeout_parameter_ms(params["timeout"])
            timeout = param if timeout is None else min(timeout, param)
        return timeout

    async def _single(self, served: Any, request: Any, result: Any, top: dict[str, int] | None) -> Any:
        if inspect.isawaitable(result):
            result = await result
        self.outbox.put(_response(served, request, result, final=True, top=top), wait=False)
        return served

    async def _streamed(self, served: Any, request: Any, running: Any, empty_final: bool) -> Any:
        await running
        if empty_final:
            final = pb.ModelInferResponse(model_name=served.name, model_version=served.version_label, id=request.id)
            final.parameters[FINAL].bool_param = True
            self.outbox.put(pb.ModelStreamInferResponse(infer_response=final), wait=False)
        return served

    async def _finish(self, work: Any, request: Any, began: float) -> None:
        served, status = None, 200
        try:
            served = await work
        except ServeError as err:
            status = err.http_status
            self._fail(request, err, None)
        except asyncio.CancelledError:  # the stream is gone: nobody to answer
            status = 499
            raise
        except Exception as exc:  # noqa: BLE001 - answered as the unary RPC would (INTERNAL)
            log.error("ModelStreamInfer: request failed", exc_info=exc)
            status = 500
            self._fail(request, ServeError("model_failed", f"{type(exc).__name__}: {exc}"), None)
        finally:
            self._record(request, served, status, began)
            self._done()

    def _fail(self, request: Any, err: ServeError, began: float | None) -> None:
        """One request's error as a stream response (the stream goes on)."""
        response = pb.ModelStreamInferResponse(error_message=err.message)
        if request is not None:
            info = response.infer_response
            info.model_name, info.model_version, info.id = request.model_name, request.model_version, request.id
            info.parameters[FINAL].bool_param = True
        self.outbox.put(response, wait=False)
        if began is not None:
            self._record(request, None, err.http_status, began)

    def _record(self, request: Any, served: Any, status: int, began: float) -> None:
        metrics = self.ctx.metrics
        if metrics is None:
            return
        model = request.model_name if request is not None else ""
        if model not in self.ctx.repository.models:  # labels of served models only (bounded)
            model = ""
        version = served.version_label if served is not None and model else ""
        metrics.record("grpc", model, version, status, time.perf_counter() - began)

    def _done(self) -> None:
        self._in_flight -= 1
        self._room.release()
        if not self._reading and self._in_flight == 0:
            self.outbox.close()

    def _read_done(self) -> None:
        self._reading = False
        if self._in_flight == 0:
            self.outbox.close()

    def _cleanup(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for table in self._tables:
            table.release_owned(self)
        self._tables.clear()


def _response(served: Any, request: Any, outputs: Any, final: bool, top: dict[str, int] | None = None) -> Any:
    """One answer as a ModelStreamInferResponse (classified and compact outputs as ModelInfer encodes them)."""
    from modelpod.serving.protocols.v2_grpc import _infer_response

    response = _infer_response(outputs, served, request, None, top)
    response.parameters[FINAL].bool_param = final
    return pb.ModelStreamInferResponse(infer_response=response)


def _proves(token: str, given: str | None) -> bool:
    try:
        check_token(token, given)
    except ServeError:
        return False
    return True


def stream_handler(servicer: Any, loop: asyncio.AbstractEventLoop) -> grpc.RpcMethodHandler:
    """The ModelStreamInfer handler for ``servicer``'s server (requests decoded on the loop)."""

    ctx = servicer.ctx
    # streams hold their RPC slot (and two threads) for as long as the client keeps them open:
    # at most half the --max-grpc-calls, so unary calls (health checks included) always find room
    max_streams = max(1, ctx.limits.max_grpc_calls // 2)
    open_streams = [0]
    count_lock = threading.Lock()

    def ended() -> None:
        with count_lock:
            open_streams[0] -= 1

    def call(requests: Any, context: grpc.ServicerContext) -> Any:  # on a gRPC thread
        if ctx.token:  # every model needs a token: a stream that carries none of them is refused at once
            given = servicer._given(context)
            tokens = {ctx.token, *(entry.token for entry in list(ctx.repository.models.values()) if entry.token)}
            if not any(_proves(token, given) for token in tokens):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "this service needs a token: send 'authorization' "
                              "metadata when the stream opens")
        with count_lock:
            if open_streams[0] >= max_streams:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{open_streams[0]} ModelStreamInfer streams are open, the most this server keeps "
                              "(half of --max-grpc-calls); close one or retry later")
            open_streams[0] += 1
        context.add_callback(ended)
        session = StreamSession(servicer, loop, context)
        context.add_callback(session.close)  # however the RPC ends (cancel, deadline, shutdown)
        return session.responses(requests)

    return grpc.stream_stream_rpc_method_handler(
        call, request_deserializer=None, response_serializer=lambda msg: msg.SerializeToString(),
    )
