"""TensorFlow Serving REST: ``/v1/models/<m>[/versions/<v>|/labels/<l>][:predict|/metadata]``.

Row (``instances`` -> ``predictions``) and columnar (``inputs`` -> ``outputs``) predict bodies,
``{"b64": ...}`` strings, ``signature_name``, and TF Serving's ``{"error": ...}`` bodies.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote

import numpy as np
import orjson

from modelpod.codecs.eas import SPEC_TO_DT_NAME
from modelpod.serving.context import ServerContext
from modelpod.errors import ServeError
from modelpod.serving.http import MaybeAwaitable, Request, Response, json_response, then
from modelpod.serving.limits import clip
from modelpod.serving.served import ServedModel
from modelpod.spec import TensorSpec

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>:predict|:classify|:regress|/metadata)?/?$",
    re.IGNORECASE,
)


def error_response(err: ServeError) -> Response:
    return json_response({"error": err.message}, err.http_status)


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
            raise ServeError("not_found", f"Servable not found for request: Latest({name})") from None
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
        raise ServeError("not_found", f"Could not find any versions of model {name}")
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


def _unb64(value: Any) -> Any:
    """Replace ``{"b64": ...}`` objects (anywhere in nested lists) with bytes."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise ServeError("bad_input", "a {\"b64\": ...} value is not valid base64") from None
        raise ServeError("bad_input", f"unexpected object {list(value)[:3]} where a value was expected")
    if isinstance(value, list):
        return [_unb64(v) for v in value]
    return value


def _as_is(value: Any) -> Any:
    return value


def _string_tensor(value: Any) -> Any:
    """A DT_STRING input: JSON strings become UTF-8 bytes, like ``{"b64": ...}`` values already are.

    Done here because numpy cannot build one array from a mix of str and non-ASCII bytes.
    """
    try:
        array = np.array(value, dtype=object)
    except ValueError as exc:
        raise ServeError("bad_input", f"a string input is not a regular nested list ({exc})") from None
    flat = array.reshape(-1).copy()
    for i, item in enumerate(flat):
        if isinstance(item, str):
            flat[i] = item.encode()
    return flat.reshape(array.shape)


def _predict(ctx: ServerContext, http: Request, served: ServedModel) -> MaybeAwaitable[Response]:
    try:
        doc = orjson.loads(http.body)
    except orjson.JSONDecodeError as exc:
        raise ServeError("bad_input", f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise ServeError("bad_input", "the request must be a JSON object with 'instances' or 'inputs'")
    if "instances" in doc and "inputs" in doc:
        raise ServeError("bad_input", "expecting only one of 'inputs' or 'instances' to be set")
    if b"b64" not in http.body and b"\\u" not in http.body:  # no {"b64": ...} anywhere: no walk
        unb64 = _as_is
    else:
        unb64 = _unb64
    signature = served.resolve_signature(doc.get("signature_name"))
    spec = served.model.signature_spec(signature)
    names = [s.name for s in spec.inputs]
    if "instances" in doc:
        rows = doc["instances"]
        if not isinstance(rows, list) or not rows:
            raise ServeError("bad_input", "'instances' must be a non-empty list")
        if len(names) == 1 and not all(isinstance(r, dict) and set(r) == set(names) for r in rows):
            inputs = {names[0]: unb64(rows)}
        else:
            for r in rows:
                if not isinstance(r, dict) or set(r) != set(names):
                    raise ServeError("bad_input", f"each instance must be an object with exactly the inputs {names}")
            inputs = {n: unb64([r[n] for r in rows]) for n in names}
        row_format = True
    elif "inputs" in doc:
        raw = doc["inputs"]
        if isinstance(raw, dict) and not (len(names) == 1 and set(raw) == {"b64"}):
            inputs = {k: unb64(v) for k, v in raw.items()}
        elif len(names) == 1:
            inputs = {names[0]: unb64(raw)}
        else:
            raise ServeError("bad_input", f"'inputs' must be an object with every input {names}")
        row_format = False
    else:
        raise ServeError("bad_input", "Missing 'inputs' or 'instances' key")
    dtypes = {s.name: s.dtype for s in spec.inputs}
    for key, value in inputs.items():
        if dtypes.get(key) == "string":
            inputs[key] = _string_tensor(value)
    result = served.infer(inputs, None, signature)
    return then(result, _encode, row_format)


def _json_value(name: str, array: np.ndarray) -> Any:
    if array.dtype.kind == "O":
        if name.endswith("_bytes"):
            flat = [{"b64": base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode()} for v in array.flat]
        else:
            flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.flat]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    if array.dtype.kind == "V":  # bfloat16
        array = array.astype(np.float32)
    return array


def _encode(outputs: dict[str, np.ndarray], row_format: bool) -> Response:
    if not row_format:
        if len(outputs) == 1:
            (name, array), = outputs.items()
            body = {"outputs": _json_value(name, array)}
        else:
            body = {"outputs": {n: _json_value(n, a) for n, a in outputs.items()}}
        return Response(200, orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
    if len(outputs) == 1:
        (name, array), = outputs.items()
        return Response(200, orjson.dumps({"predictions": _json_value(name, array)}, option=orjson.OPT_SERIALIZE_NUMPY))
    sizes = {a.shape[0] if a.ndim else None for a in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise ServeError("bad_input", "Tensor name: inconsistent batch size across outputs; use the columnar 'inputs' format")
    (size,) = sizes
    lists = {n: _json_value(n, a) for n, a in outputs.items()}
    rows = [{n: v[i] for n, v in lists.items()} for i in range(size)]
    return Response(200, orjson.dumps({"predictions": rows}, option=orjson.OPT_SERIALIZE_NUMPY))
