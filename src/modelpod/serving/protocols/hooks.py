"""Service hooks over HTTP: decode the body the ModelArts way, run the service, answer JSON."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson

from modelpod.codecs.multipart import decode_multipart
from modelpod.errors import CodecError, ServeError, TooLargeError
from modelpod.serving.execution.served import ServedModel
from modelpod.serving.http.messages import Request, Response
from modelpod.serving.limits import DEFAULT_LIMITS
from modelpod.spec import SpecError


def decode_body(http: Request, max_fields: int = DEFAULT_LIMITS.max_form_fields) -> Any:
    """JSON -> dict/list; multipart -> {field: {filename: file}} (plain fields: {field: str}); else bytes."""
    ctype = http.headers.get("content-type", "")
    body = http.body
    if ctype.startswith("multipart/form-data"):
        try:
            return decode_multipart(ctype, body, max_fields)
        except TooLargeError as exc:
            raise ServeError("too_large", str(exc)) from None
        except CodecError as exc:
            raise ServeError("bad_input", str(exc)) from None
    if ctype.startswith("application/json") or (not ctype and body[:1] in (b"{", b"[")):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if ctype:
                raise ServeError("bad_input", f"the body is not valid JSON: {exc}") from None
    return body


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def run_hooks(served: ServedModel, http: Request, max_fields: int = DEFAULT_LIMITS.max_form_fields) -> Response:
    """preprocess -> inference -> postprocess on an instance thread; 400 for bad input, 500 for bugs.

    A multipart body is parsed on a thread too, so a big form never stalls the event loop."""
    served.check_ready()
    if http.headers.get("content-type", "").startswith("multipart/form-data"):
        request = await asyncio.to_thread(decode_body, http, max_fields)
    else:
        request = decode_body(http)
    service = served.service

    def call() -> Any:
        try:
            return service.handle(request)
        except ServeError:
            raise
        except SpecError as exc:
            raise ServeError("bad_input", f"service '{served.name}': {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the service's own bug is a 500
            raise ServeError("model_failed", f"service '{served.name}' raised {type(exc).__name__}: {exc}") from None

    result = await served.submit(call)
    if isinstance(result, Response):
        return result
    if isinstance(result, (bytes, str)):
        return Response(200, result.encode() if isinstance(result, str) else result, content_type="text/plain")
    try:
        body = orjson.dumps(result, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:  # orjson.JSONEncodeError: the service's answer, so the service's bug
        raise ServeError("model_failed", f"service '{served.name}' returned an answer that is not "
                         f"JSON serializable ({exc}); return dicts, lists, numbers, strings or arrays") from None
    return Response(200, body)
