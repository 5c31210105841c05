"""PAI-EAS: ``POST /api/predict/<service>[/...]`` with a PredictRequest protobuf, or service hooks.

A model whose package carries ``service.py`` answers through its hooks (JSON, multipart or raw
bytes in, JSON out); other models speak the TF-processor protobuf. An empty body returns the
signature JSON. Errors are plain text with EAS status codes (450 queue full, 408 deadline).
"""

from __future__ import annotations

import numpy as np
import orjson

from modelpod.codecs.eas import SPEC_TO_DT_NAME, decode_predict_request, encode_predict_response, signature_json
from modelpod.errors import CodecError, ServeError, clip
from modelpod.serving.context import ServerContext
from modelpod.serving.http.messages import MaybeAwaitable, Request, Response, then, timeout_header_ms
from modelpod.serving.protocols.hooks import run_hooks


def error_response(err: ServeError) -> Response:
    """Plain text, with a tensor of the wrong dtype said in the TF processor's words (dtype DT_FLOAT...)."""
    return Response(err.eas_status, err.in_words(SPEC_TO_DT_NAME, "dtype").encode(),
                    content_type="text/plain; charset=utf-8")


def dispatch(ctx: ServerContext, http: Request, name: str, service_path: str) -> MaybeAwaitable[Response]:
    """``POST /api/predict/<name>[/...]``; ``service_path`` is the raw path after /api/predict/ (what
    EAS signatures sign)."""
    if http.method != "POST":
        raise ServeError("method", f"use POST /api/predict/{clip(service_path)}")
    ctx.authorize(http, name, eas_resource=f"/api/predict/{service_path}")
    served = ctx.repository.get(name)
    http.version = served.version_label
    if served.service is not None:
        return run_hooks(served, http, ctx.limits.max_form_fields)
    if not http.body:
        spec = served.model.spec
        return Response(200, orjson.dumps(signature_json(served.default_signature, spec.inputs, spec.outputs)))
    try:
        request = decode_predict_request(http.body)
    except CodecError as exc:
        raise ServeError("bad_input", f"service '{name}': {exc}") from None
    signature = served.resolve_signature(request.signature_name)
    outputs = request.output_filter or None
    result = served.infer(request.inputs, outputs, signature, timeout_header_ms(http.headers))
    return then(result, _encode)


def _encode(outputs: dict[str, np.ndarray]) -> Response:
    return Response(200, encode_predict_response(outputs), content_type="application/octet-stream")
