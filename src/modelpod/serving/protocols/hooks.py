"""Service hooks over HTTP: decode the body the ModelArts way, run the service, answer JSON."""

from __future__ import annotations

import asyncio
from typing import Any

from modelpod.codecs.hooks import decode_hook_body, encode_hook_answer
from modelpod.errors import CodecError, ServeError, TooLargeError
from modelpod.serving.execution.served import ServedModel
from modelpod.serving.http.messages import Request, Response
from modelpod.serving.limits import DEFAULT_LIMITS
from modelpod.spec import SpecError


def decode_body(http: Request, max_fields: int = DEFAULT_LIMITS.max_form_fields) -> Any:
    """The request as a service's preprocess gets it (see :func:`modelpod.codecs.hooks.decode_hook_body`)."""
    try:
        return decode_hook_body(http.headers.get("content-type", ""), http.body, max_fields)
    except TooLargeError as exc:
        raise ServeError("too_large", str(exc)) from None
    except CodecError as exc:
        raise ServeError("bad_input", str(exc)) from None


async def run_hooks(served: ServedModel, http: Request, max_fields: int = DEFAULT_LIMITS.max_form_fields) -> Response:
    """preprocess -> inference -> postprocess on an instance thread; 400 for bad input, 500 for bugs.

    A multipart body is parsed on a thread too, so a big form never stalls the event loop."""
    served.check_ready()
    service = served.service
    if getattr(service, "remote", False):  # an isolated model: its worker decodes and answers
        content_type = http.headers.get("content-type", "")
        body, answer_type = await served.submit(lambda: service.handle_raw(content_type, http.body, max_fields))
        return Response(200, body, content_type=answer_type)
    if http.headers.get("content-type", "").startswith("multipart/form-data"):
        request = await asyncio.to_thread(decode_body, http, max_fields)
    else:
        request = decode_body(http)

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
    try:
        body, content_type = encode_hook_answer(result)
    except TypeError as exc:  # the service's answer, so the service's bug
        raise ServeError("model_failed", f"service '{served.name}' returned an answer that is not "
                         f"JSON serializable ({exc}); return dicts, lists, numbers, strings or arrays") from None
    return Response(200, body, content_type=content_type)
