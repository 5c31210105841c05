"""TensorFlow Serving REST predict bodies <-> arrays: row (``instances`` -> ``predictions``) and
columnar (``inputs`` -> ``outputs``) formats, ``{"b64": ...}`` strings. Every malformed body raises
:class:`~modelpod.errors.CodecError` with TF Serving's own wording where it has one.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from modelpod.errors import CodecError
from modelpod.spec import TensorSpec

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def read_predict(body: bytes) -> dict[str, Any]:
    """A ``:predict`` body as a JSON object with one of ``instances`` / ``inputs`` (CodecError otherwise)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise CodecError("the request must be a JSON object with 'instances' or 'inputs'")
    if "instances" in doc and "inputs" in doc:
        raise CodecError("expecting only one of 'inputs' or 'instances' to be set")
    return doc


def predict_inputs(doc: dict[str, Any], body: bytes, specs: Sequence[TensorSpec]) -> tuple[dict[str, Any], bool]:
    """(inputs by name, row format?) of a :func:`read_predict` document, for a signature's input specs.

    ``body`` is the raw request: when it holds no ``b64`` anywhere, values are not walked."""
    if b"b64" not in body and b"\\u" not in body:  # no {"b64": ...} anywhere: no walk
        unb64 = _as_is
    else:
        unb64 = _unb64
    names = [s.name for s in specs]
    if "instances" in doc:
        rows = doc["instances"]
        if not isinstance(rows, list) or not rows:
            raise CodecError("'instances' must be a non-empty list")
        if len(names) == 1 and not all(isinstance(r, dict) and set(r) == set(names) for r in rows):
            inputs = {names[0]: unb64(rows)}
        else:
            for r in rows:
                if not isinstance(r, dict) or set(r) != set(names):
                    raise CodecError(f"each instance must be an object with exactly the inputs {names}")
            inputs = {n: unb64([r[n] for r in rows]) for n in names}
        row_format = True
    elif "inputs" in doc:
        raw = doc["inputs"]
        if isinstance(raw, dict) and not (len(names) == 1 and set(raw) == {"b64"}):
            inputs = {k: unb64(v) for k, v in raw.items()}
        elif len(names) == 1:
            inputs = {names[0]: unb64(raw)}
        else:
            raise CodecError(f"'inputs' must be an object with every input {names}")
        row_format = False
    else:
        raise CodecError("Missing 'inputs' or 'instances' key")
    dtypes = {s.name: s.dtype for s in specs}
    for key, value in inputs.items():
        if dtypes.get(key) == "string":
            inputs[key] = _string_tensor(value)
    return inputs, row_format


def _unb64(value: Any) -> Any:
    """Replace ``{"b64": ...}`` objects (anywhere in nested lists) with bytes."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise CodecError("a {\"b64\": ...} value is not valid base64") from None
        raise CodecError(f"unexpected object {list(value)[:3]} where a value was expected")
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
        raise CodecError(f"a string input is not a regular nested list ({exc})") from None
    flat = array.reshape(-1).copy()
    for i, item in enumerate(flat):
        if isinstance(item, str):
            flat[i] = item.encode()
    return flat.reshape(array.shape)


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


def encode_predict(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    """The predict answer: ``predictions`` (row format) or ``outputs`` (columnar)."""
    if not row_format:
        if len(outputs) == 1:
            (name, array), = outputs.items()
            body = {"outputs": _json_value(name, array)}
        else:
            body = {"outputs": {n: _json_value(n, a) for n, a in outputs.items()}}
        return orjson.dumps(body, option=_NUMPY)
    if len(outputs) == 1:
        (name, array), = outputs.items()
        return orjson.dumps({"predictions": _json_value(name, array)}, option=_NUMPY)
    sizes = {a.shape[0] if a.ndim else None for a in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise CodecError("Tensor name: inconsistent batch size across outputs; use the columnar 'inputs' format")
    (size,) = sizes
    lists = {n: _json_value(n, a) for n, a in outputs.items()}
    rows = [{n: v[i] for n, v in lists.items()} for i in range(size)]
    return orjson.dumps({"predictions": rows}, option=_NUMPY)
