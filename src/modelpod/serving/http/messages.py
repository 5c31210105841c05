"""The server's own tiny request/response types, shared by the native HTTP server and ASGI.

Handlers return a :class:`Response` directly when they can finish without waiting (the fast path
for models that run inline), or an awaitable of one. :func:`then` chains work on either.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

import orjson

T = TypeVar("T")
U = TypeVar("U")
MaybeAwaitable = Union[T, Awaitable[T]]


@dataclass(slots=True)
class Request:
    """One HTTP request: method, path (no query), raw query string, lower-case headers, body."""

    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    client: str = ""
    #: the model version that answered (set by the protocol handler, for metrics and logs)
    version: str = ""


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes | memoryview = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


def timeout_header_ms(headers: dict[str, str]) -> float | None:
    """The client's ``timeout-ms`` header: a deadline in ms (> 0), None when absent.

    Raises ServeError('bad_input') for anything but a finite positive number.
    """
    header = headers.get("timeout-ms")
    if header is None:
        return None
    try:
        value = float(header)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        from modelpod.errors import ServeError

        raise ServeError("bad_input", f"timeout-ms header must be a positive number of milliseconds, got {header!r}")
    return value


def timeout_parameter_ms(value: Any) -> float:
    """The v2 ``timeout`` request parameter (µs, as Triton's) as a deadline in ms.

    The same rule as the ``timeout-ms`` header: ServeError('bad_input') for anything but a finite
    positive number (0, negatives, strings and booleans included).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf:
        return value / 1000.0
    from modelpod.errors import ServeError, clip

    raise ServeError("bad_input", "parameter 'timeout' must be a positive number of microseconds, "
                     f"got {clip(repr(value))}")


def json_response(doc: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), headers or [])


def then(value: MaybeAwaitable[T], fn: Callable[..., U], *args: Any) -> MaybeAwaitable[U]:
    """``fn(value, *args)`` now, or after awaiting ``value`` when it is awaitable."""
    if type(value) is dict or not inspect.isawaitable(value):  # the inline fast path first
        return fn(value, *args)

    async def _chain() -> U:
        return fn(await value, *args)  # type: ignore[misc]

    return _chain()
