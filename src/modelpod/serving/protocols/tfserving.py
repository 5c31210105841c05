"""TensorFlow Serving REST: ``/v1/models/<m>[/versions/<v>|/labels/<l>][:predict|/metadata]``.

Routing, status and metadata answers, ``signature_name``, and TF Serving's ``{"error": ...}`` bodies;
the predict bodies themselves are :mod:`modelpod.codecs.tfserving`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import numpy as np

from modelpod.codecs import tfserving as tf_codec
from modelpod.codecs.eas import SPEC_TO_DT_NAME
from modelpod.errors import CodecError, ServeError, clip
from modelpod.serving.context import ServerContext
from modelpod.serving.execution.served import ServedModel
from modelpod.serving.http.messages import MaybeAwaitable, Request, Response, json_response, then
from modelpod.spec import TensorSpec

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>:predict|:classify|:regress|/metadata)?/?$",
    re.IGNORECASE,
)


def error_response(err: ServeError) -> Response:
    """``{"error": ...}`` with a tensor of the wrong dtype said in TF's words (dtype DT_FLOAT...)."""
    return json_response({"error": err.in_words(SPEC_TO_DT_NAME, "dtype")}, err.http_status)


_INT64_MAX = (1 << 63) - 1


def _check_version(version: str | None) -> None:
    """TF Serving's rule: a version is an int64 written in digits."""
    if version is not None and (not version.isdigit() or int(version) > _INT64_MAX):
        raise ServeError("bad_input", f"Failed to convert version: {version}")


def route(path: str) -> dict[str, str | None] | None:
    """Parse a raw /v1 path once: name, version, label, action, each percent-decoded (None: no TF route)."""
    match = _ROUTE.match(path)
    if match is None:
        return None
    return {key: unquote(value) if value and "%" in value else value for key, value in match.groupdict().items()}


def _resolve(ctx: ServerContext, name: str, version: str | None, label: str | None,
             require_ready: bool = True) -> ServedModel:
    _check_version(version)
    if label is not None:
        if label not in ("latest", "stable", "default"):
            raise ServeError("not_found", f"model '{name}' has no label {label!r} (labels: latest)")
        version = None
    try:
        return ctx.repository.get(name, version, require_ready=require_ready)
    except ServeError as err:
        if err.kind == "not_found" and version is None:
            raise ServeError("not_found", f"Servable not found for request: Latest({clip(name)}) "
                             f"(models: {ctx.repository.listing()})") from None
        raise


def dispatch(ctx: ServerContext, http: Request, match: dict[str, str | None] | None) -> MaybeAwaitable[Response]:
    """Answer a /v1 request whose path :func:`route` parsed into ``match``."""
    if match is None:
        if http.path.rstrip("/").lower() == "/v1/models":
            raise ServeError("bad_input", "Missing model name in request.")
        raise ServeError("bad_input", f"Malformed request: {http.method} {clip(http.path)}")
    name, version, label, action = match["name"], match["version"], match["label"], (match["action"] or "").lower()
    if version is not None and label is not None:
        raise ServeError("bad_input", "a request may name a version or a label, not both")
    ctx.authorize(http, name)
    if action in ("", "/metadata"):
        if http.method != "GET":
            raise ServeError("bad_input", f"Malformed request: {http.method} {clip(http.path)}")
        if action == "":
            if label is not None:  # a label names one version: the one it resolves to
                version = str(_resolve(ctx, name, None, label, require_ready=False).version)
            return json_response(_status(ctx, name, version))
        return json_response(_metadata(_resolve(ctx, name, version, label, require_ready=False)))
    if http.method != "POST":
        raise ServeError("bad_input", f"Malformed request: {http.method} {clip(http.path)}")
    if action != ":predict":
        raise ServeError("bad_input", f"{action[1:]} needs a tf.Example model; modelpod serves :predict only")
    served = _resolve(ctx, name, version, label)
    http.version = served.version_label
    return _predict(ctx, http, served)


def _status(ctx: ServerContext, name: str, version: str | None) -> dict[str, Any]:
    _check_version(version)
    entry = ctx.repository.models.get(name)
    if entry is None:
        failed = sorted((v, reason) for (n, v), reason in ctx.repository.failures.items()
                        if n == name and (version is None or str(v) == version))
        if failed:  # what the source names for it failed to load: TF Serving's END with the error
            return {"model_version_status": [
                {"version": str(v), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": reason}}
                for v, reason in failed]}
        raise ServeError("not_found", f"Could not find any versions of model {clip(name)} "
                         f"(models: {ctx.repository.listing()})")
    versions = sorted(entry.versions.values(), key=lambda v: v.version)
    if version is not None:
        versions = [v for v in versions if str(v.version) == version]
        if not versions:
            raise ServeError("not_found", f"Could not find version {version} of model {name}")
    states = {"READY": "AVAILABLE", "LOADING": "LOADING", "FAILED": "END", "UNLOADING": "UNLOADING", "END": "END"}
    return {"model_version_status": [
        {"version": str(v.version), "state": states.get(v.state, "UNKNOWN"),
         "status": {"error_code": "OK" if v.ready else ("UNKNOWN" if v.reason else "OK"),
                    "error_message": v.reason}}
        for v in versions
    ]}


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": SPEC_TO_DT_NAME[spec.dtype],
        "tensor_shape": {"dim": [{"size": str(d if isinstance(d, int) else -1), "name": ""} for d in spec.shape],
                         "unknown_rank": False},
        "name": spec.name,
    }


def _metadata(served: ServedModel) -> dict[str, Any]:
    model = served.model
    sigs = {served.default_signature: model.spec, **model.signatures}
    return {
        "model_spec": {"name": served.name, "signature_name": "", "version": served.version_label},
        "metadata": {"signature_def": {"signature_def": {
            sig: {"inputs": {s.name: _tensor_info(s) for s in spec.inputs},
                  "outputs": {s.name: _tensor_info(s) for s in spec.outputs},
                  "method_name": "tensorflow/serving/predict", "defaults": {}}
            for sig, spec in sigs.items()
        }}},
    }


def _predict(ctx: ServerContext, http: Request, served: ServedModel) -> MaybeAwaitable[Response]:
    try:
        doc = tf_codec.read_predict(http.body)
        signature = served.resolve_signature(doc.get("signature_name"))
        inputs, row_format = tf_codec.predict_inputs(doc, http.body, served.model.signature_spec(signature).inputs)
    except CodecError as exc:
        raise ServeError("bad_input", str(exc)) from None
    return then(served.infer(inputs, None, signature), _encode, row_format)


def _encode(outputs: dict[str, np.ndarray], row_format: bool) -> Response:
    try:
        return Response(200, tf_codec.encode_predict(outputs, row_format))
    except CodecError as exc:
        raise ServeError("bad_input", str(exc)) from None
