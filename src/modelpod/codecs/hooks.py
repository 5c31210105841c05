"""Service-hook bodies (the ModelArts ``/api/predict`` flow): request bytes -> the object a service's
preprocess gets, and its answer -> response bytes. Used by the server and by an isolated worker, so
a service sees the same request in both.

Runs where orjson is installed (the server) and where it may not be (a package's own environment):
the standard library's json reads and writes the same JSON.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from modelpod.codecs.multipart import decode_multipart
from modelpod.errors import CodecError

try:
    import orjson
except ImportError:  # an isolated worker's environment holds only what the package needs
    orjson = None  # type: ignore[assignment]

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain"


def decode_hook_body(content_type: str, body: bytes, max_fields: int) -> Any:
    """JSON -> dict/list; multipart -> {field: {filename: file}} (plain fields: {field: str}); else bytes.

    CodecError (TooLargeError past ``max_fields``) for a body that claims a type it is not."""
    if content_type.startswith("multipart/form-data"):
        return decode_multipart(content_type, body, max_fields)
    if content_type.startswith(JSON_TYPE) or (not content_type and body[:1] in (b"{", b"[")):
        try:
            return orjson.loads(body) if orjson is not None else json.loads(body)
        except ValueError as exc:
            if content_type:
                raise CodecError(f"the body is not valid JSON: {exc}") from None
    return body


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_hook_answer(result: Any) -> tuple[bytes, str]:
    """(body, content type) for what a service returned: bytes and str as text, the rest as JSON.

    TypeError when the answer is not JSON serializable (the service's bug)."""
    if isinstance(result, (bytes, str)):
        return (result.encode() if isinstance(result, str) else result), TEXT_TYPE
    if orjson is not None:
        try:
            return orjson.dumps(result, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY), JSON_TYPE
        except orjson.JSONEncodeError as exc:
            raise TypeError(str(exc)) from None
    return json.dumps(result, default=_jsonable, separators=(",", ":")).encode(), JSON_TYPE
