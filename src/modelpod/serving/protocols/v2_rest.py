"""KServe v2 / Open Inference Protocol over REST, with Triton's binary tensor extension."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from modelpod._version import __version__
from modelpod.codecs import transport
from modelpod.codecs.datatypes import DTYPE_TO_V2, v2_shape
from modelpod.codecs.v2 import HEADER_LENGTH, V2Request, decode_document, encode_response, parse_body, plain_inputs
from modelpod.errors import CodecError, ServeError, clip
from modelpod.serving.auth import check_token
from modelpod.serving.context import ServerContext
from modelpod.serving.execution import sequences
from modelpod.serving.execution.served import ServedModel
from modelpod.serving.http.messages import (
    MaybeAwaitable,
    Request,
    Response,
    json_response,
    then,
    timeout_header_ms,
    timeout_parameter_ms,
)
from modelpod.serving.protocols import v2_classification, v2_shm
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

PROTOCOL = "v2"
#: the extensions v2 REST speaks (gRPC lists its own: v2_grpc.EXTENSIONS)
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "model_configuration", "statistics",
              "sequence", "sequence(string_id)"]


def error_response(err: ServeError) -> Response:
    """``{"error": ...}`` with a tensor of the wrong dtype said in v2's words (datatype FP32...)."""
    return json_response({"error": err.in_words(DTYPE_TO_V2)}, err.http_status)


def model_metadata(served: ServedModel) -> dict[str, Any]:
    spec = served.model.spec
    return {
        "name": served.name,
        "versions": [served.version_label],
        "platform": served.model.platform,
        "inputs": [{"name": s.name, "datatype": DTYPE_TO_V2[s.dtype], "shape": v2_shape(s.shape)} for s in spec.inputs],
        "outputs": [{"name": s.name, "datatype": DTYPE_TO_V2[s.dtype], "shape": v2_shape(s.shape)} for s in spec.outputs],
        "parameters": {"transport": served.transport} if served.transport else {},
    }


def timeout_ms(request: V2Request, http: Request) -> float | None:
    """Client deadline: the v2 ``timeout`` parameter (µs) and the ``timeout-ms`` header, the shorter
    when both are given; either one that is not a positive number is a 400."""
    header = timeout_header_ms(http.headers)
    if "timeout" not in request.parameters:
        return header
    param = timeout_parameter_ms(request.parameters["timeout"])
    return param if header is None else min(param, header)


def infer(ctx: ServerContext, http: Request, name: str, version: str | None) -> MaybeAwaitable[Response]:
    """``POST /v2/models/<name>[/versions/<version>]/infer``."""
    ctx.authorize(http, name)
    if http.method != "POST":
        raise ServeError("method", "use POST for infer")
    try:
        served = ctx.repository.get(name, version)
    except ServeError as err:
        raise v2_error(ctx.repository, name, version, err) from None
    http.version = served.version_label
    headers = http.headers
    header = headers.get(HEADER_LENGTH)
    try:
        header_length = int(header) if header is not None else None
    except ValueError:
        raise ServeError("bad_input", f"Inference-Header-Content-Length must be an integer, got {header!r}") from None
    try:
        body = http.body
        if "content-encoding" in headers:
            body = transport.decompress(body, headers["content-encoding"], ctx.limits.max_body_bytes)
        doc, binary = parse_body(body, header_length)
        if served.inline and served.sequences is None and not binary and "timeout-ms" not in headers:
            inputs = plain_inputs(doc, _datatypes(served))
            if inputs is not None:  # the common case: no parameters, outputs or id
                outputs = served.infer(inputs, None, None, None)
                if "accept-encoding" in headers:
                    return _answer(outputs, served, _PLAIN, http)
                return Response(200, encode_response(served.name, served.version_label, outputs)[0])
        request = decode_document(doc, binary, v2_shm.input_reader(ctx, name))
        if request.input_parameters:  # compact transport -> float32
            transport.decode_inputs(request.inputs, request.input_parameters)
    except transport.TooLargeError as exc:
        raise ServeError("too_large", f"model '{name}': {exc}") from None
    except CodecError as exc:
        raise ServeError("bad_input", f"model '{name}': {exc}") from None
    deadline = timeout_ms(request, http) if request.parameters or "timeout-ms" in headers else None
    shm = top = None
    if request.output_parameters:
        top = v2_classification.requested(served, request.output_parameters)
        shm = v2_shm.output_targets(ctx, name, request.output_parameters)
    if request.parameters or served.sequences is not None:  # Triton's sequence extension
        admitted = sequences.admit(served, request.parameters, request.inputs, request.outputs)
        if admitted is not None:
            return then(sequences.infer(served, *admitted, request.outputs, deadline), _answer, served, request, http,
                        shm, top)
    result = served.infer(request.inputs, request.outputs, None, deadline)
    if type(result) is dict:  # inline models: answer now
        return _answer(result, served, request, http, shm, top)
    return then(result, _answer, served, request, http, shm, top)


#: what a plain request (only inputs) asks of its answer: every output, as JSON, no id
_PLAIN = V2Request({})


def _datatypes(served: ServedModel) -> dict[str, str]:
    """The v2 datatype of each input of ``served`` (worked out once per version)."""
    datatypes = served.memo.get("v2_datatypes")
    if datatypes is None:
        datatypes = served.memo["v2_datatypes"] = {s.name: DTYPE_TO_V2[s.dtype] for s in served.model.spec.inputs}
    return datatypes


def _answer(outputs: dict[str, np.ndarray], served: ServedModel, request: V2Request, http: Request,
            shm: dict[str, v2_shm.OutputTarget] | None = None, top: dict[str, int] | None = None) -> Response:
    """Encode one infer answer: classified outputs (``top``), compact outputs, binary or JSON tensors
    or shared memory regions (``shm``), optional compression."""
    compact = None
    if request.output_parameters:
        if top:
            outputs = v2_classification.classify(outputs, top, served)
        try:
            outputs, compact = transport.encode_outputs(outputs, request.output_parameters)
        except CodecError as exc:
            raise ServeError("bad_input", f"model '{served.name}': {exc}") from None
    written = v2_shm.write_outputs(shm, outputs, served.name) if shm else None
    body, json_len = encode_response(served.name, served.version_label, outputs, request.id,
                                     request.binary_outputs, request.binary_default, compact, written)
    headers = [] if json_len is None else [(HEADER_LENGTH, str(json_len))]
    accept = http.headers.get("accept-encoding")
    if accept is not None:
        encoding = transport.response_encoding(accept)
        if encoding is not None:  # only an exact scheme: aiohttp's default list means "no"
            body = transport.compress(body, encoding)
            headers.append(("content-encoding", encoding))
    return Response(200, body, headers, "application/json" if json_len is None else "application/octet-stream")


Handler = Callable[..., MaybeAwaitable[Response]]


def route(parts: list[str]) -> tuple[Handler, tuple[Any, ...]]:
    """The handler for ``/v2/...`` (``parts`` are the path segments after 'v2') and its arguments.

    Depends on the path alone, so the app resolves each path once. Handlers take
    ``(ctx, http, *args)``.
    """
    if not parts:
        return _server_metadata, ()
    head = parts[0]
    if head == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
        return _health, (parts[1],)
    if head == "repository":
        return repository_api, (parts[1:],)
    if head in v2_shm.HEADS:
        found = v2_shm.http_route(head, parts[1:])
        if found is not None:
            return found
    if parts == ["models", "stats"]:  # every model's (as in Triton, a model named "stats" loses this path)
        return _statistics, ("", None)
    if head == "models" and len(parts) >= 2:
        name = parts[1]
        rest = parts[2:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        if rest == ["infer"]:
            return infer, (name, version)
        if rest == ["ready"]:
            return _model_ready, (name, version)
        if rest == ["config"]:
            return _model_config, (name, version)
        if rest == ["stats"]:
            return _statistics, (name, version)
        if not rest:
            return _model_metadata, (name, version)
    return not_found, ()


def _server_metadata(ctx: ServerContext, http: Request) -> Response:
    if http.method != "GET":
        raise ServeError("method", f"{http.method} /v2 is not supported; use GET")
    return json_response({"name": "modelpod", "version": __version__,
                          "extensions": EXTENSIONS + v2_shm.extensions(ctx)})


def _health(ctx: ServerContext, http: Request, which: str) -> Response:
    if which == "live":
        return Response(200, b"", content_type="")
    return Response(200 if ctx.repository.ready else 503, b"", content_type="")


def _model_ready(ctx: ServerContext, http: Request, name: str, version: str | None) -> Response:
    ctx.authorize(http, name)
    try:
        lookup(ctx.repository, name, version)
    except ServeError as err:
        # Triton answers 400 for "not ready" and for an unknown model or version alike
        status = 400 if err.kind in ("not_ready", "not_found") else err.http_status
        return json_response({"error": err.message}, status)
    return Response(200, b"", content_type="")


def _model_metadata(ctx: ServerContext, http: Request, name: str, version: str | None) -> Response:
    ctx.authorize(http, name)
    return json_response(model_metadata(lookup(ctx.repository, name, version, require_ready=False)))


def _get_only(http: Request) -> None:
    if http.method != "GET":
        raise ServeError("method", f"{http.method} {clip(http.path)} is not supported; use GET")


def _model_config(ctx: ServerContext, http: Request, name: str, version: str | None) -> Response:
    """``GET /v2/models/<m>[/versions/<v>]/config``: Triton's model configuration extension."""
    _get_only(http)
    ctx.authorize(http, name)
    return json_response(config_of(lookup(ctx.repository, name, version, require_ready=False)))


def _statistics(ctx: ServerContext, http: Request, name: str, version: str | None) -> Response:
    """``GET /v2/models[/<m>[/versions/<v>]]/stats``: Triton's statistics extension. Every model's
    lists only those the caller may use (and needs the server token when one is set)."""
    _get_only(http)
    if name:
        ctx.authorize(http, name)
    elif ctx.token:
        check_token(ctx.token, http.headers.get("authorization"))
    return json_response({"model_stats": statistics(ctx, name, version, lambda model: ctx.may_use(http, model))})


def _body_object(http: Request, what: str) -> dict[str, Any]:
    """A repository request's JSON body ({} when empty); ServeError naming ``what`` otherwise."""
    body = bytes(http.body)
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServeError("bad_input", f"{what}: the request body is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ServeError("bad_input", f"{what}: the request body must be a JSON object")
    return doc


def _parameters(doc: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ServeError("bad_input", f"{what}: 'parameters' must be a JSON object")
    return parameters


def not_found(ctx: ServerContext, http: Request) -> Response:
    raise ServeError("not_found", f"no such endpoint: {http.method} {clip(http.path)}")


def repository_api(ctx: ServerContext, http: Request, parts: list[str]) -> MaybeAwaitable[Response]:
    """Triton's model repository extension: index, load (or reload) and unload, all POST.

    The index lists only the models the caller may use. Load and unload change what is served,
    so they are off unless the server runs with ``--model-control`` (403 otherwise), and they
    need the server's token when one is set, else the model's own token when it has one.
    """
    if http.method != "POST":
        raise ServeError("method", "the repository API takes POST")
    if ctx.manager is None:
        raise ServeError("not_found", "this server has no model repository to manage")
    given = http.headers.get("authorization")
    if ctx.token:
        check_token(ctx.token, given)
    if parts == ["index"]:
        doc = _body_object(http, "repository index")
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise ServeError("bad_input", f"repository index: 'ready' must be true or false, got {clip(repr(ready))}")
        return json_response(repository_index(ctx, given, lambda model: ctx.may_use(http, model), ready))
    if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
        name, action = parts[1], parts[2]
        manager = control(ctx, name, action, given)
        what = f"failed to {action} '{clip(name)}'"
        parameters = _parameters(_body_object(http, what), what)

        async def run() -> Response:
            if action == "load":
                await repository_load(manager, name, parameters)
            else:
                await repository_unload(manager, name, parameters)
            return Response(200, b"", content_type="")

        return run()
    raise ServeError("not_found", f"no such repository endpoint: {clip(http.path)}")
