"""Service hooks over HTTP: decode the body the ModelArts way, run the service, answer JSON."""

from __future__ import annotations

import asyncio
import io
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import numpy as np
import orjson

from modelpod.serving.errors import ServeError
from modelpod.serving.http import Request, Response
from modelpod.serving.limits import DEFAULT_LIMITS
from modelpod.serving.served import ServedModel
from modelpod.spec import SpecError


def decode_body(http: Request, max_fields: int = DEFAULT_LIMITS.max_form_fields) -> Any:
    """JSON -> dict/list; multipart -> {field: {filename: file}} (plain fields: {field: str}); else bytes."""
    ctype = http.headers.get("content-type", "")
    body = http.body
    if ctype.startswith("multipart/form-data"):
        return decode_multipart(ctype, body, max_fields)
    if ctype.startswith("application/json") or (not ctype and body[:1] in (b"{", b"[")):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if ctype:
                raise ServeError("bad_input", f"the body is not valid JSON: {exc}") from None
    return body


def _boundary(content_type: str) -> bytes:
    """The multipart boundary named in a Content-Type (RFC 2046: 1 to 70 characters)."""
    value = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip()
    if value.startswith('"'):
        value = value[1:].split('"', 1)[0]
    if not 0 < len(value) <= 70:
        raise ServeError("bad_input", "the multipart boundary must be 1 to 70 characters")
    return value.encode("latin-1", "replace")


def decode_multipart(content_type: str, body: bytes,
                     max_fields: int = DEFAULT_LIMITS.max_form_fields) -> dict[str, Any]:
    """Parse a multipart/form-data body of at most ``max_fields`` parts (413 past it).

    Slow for big bodies (the standard library's email parser): the server calls it off the loop.
    """
    if "boundary=" not in content_type:
        raise ServeError("bad_input", "multipart/form-data without a boundary")
    parts = body.count(b"--" + _boundary(content_type)) - 1  # delimiters, less the closing one
    if parts > max_fields:
        raise ServeError("too_large", f"the multipart body has {parts} parts, more than the server limit "
                         f"of {max_fields} (--max-form-fields)")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ServeError("bad_input", "the multipart body cannot be parsed")
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        field = part.get_param("name", header="content-disposition")
        if not field:
            raise ServeError("bad_input", "a multipart part has no name")
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        seen = form.get(field)
        if seen is not None and (filename is None or not isinstance(seen, dict) or filename in seen):
            raise ServeError("bad_input", f"multipart field '{field}' is sent more than once; only "
                             "files with different filenames may share a field name")
        if filename is None:
            form[field] = payload.decode("utf-8", "replace")
            continue
        file = io.BytesIO(payload)
        file.name = filename
        form.setdefault(field, {})[filename] = file
    return form


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
