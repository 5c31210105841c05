"""The Python client SDK: call served models with the same ``infer(dict) -> dict`` as local ones.

* :func:`connect` / :func:`connect_async`: the client for a URL: ``http://host:port`` gives
  :class:`Client` / :class:`AsyncClient` (KServe v2 REST, binary tensors by default,
  ``transport="json"`` on request), ``grpc://host:port`` gives :class:`GrpcClient` /
  :class:`AsyncGrpcClient` (KServe v2 gRPC); each class may also be created directly;
* compact transport (``quantize="int8"`` ...) and body compression, see
  :mod:`modelpod.codecs.transport` for the schemes and their worst-case error;
* :class:`~modelpod.errors.ServerError` for every refused request (``status``, ``message``).
"""

from __future__ import annotations

from typing import Any

from modelpod.client.aio import AsyncClient
from modelpod.client.core import Stats, parse_url
from modelpod.client.grpc import AsyncGrpcClient, GrpcClient
from modelpod.client.sync import Client
from modelpod.errors import ServerError


def connect(url: str, token: str | None = None, **options: Any) -> Client:
    """The synchronous client for ``url``: :class:`GrpcClient` for ``grpc://``, else :class:`Client`
    (http:// or https://). Use it as a context manager; ``options`` are the client's."""
    flavour = GrpcClient if parse_url(url)[0] == "grpc" else Client
    return flavour(url, token, **options)


def connect_async(url: str, token: str | None = None, **options: Any) -> AsyncClient:
    """The asyncio client for ``url``: :class:`AsyncGrpcClient` for ``grpc://``, else
    :class:`AsyncClient`. Create it inside the event loop that uses it."""
    flavour = AsyncGrpcClient if parse_url(url)[0] == "grpc" else AsyncClient
    return flavour(url, token, **options)


__all__ = ["AsyncClient", "AsyncGrpcClient", "Client", "GrpcClient", "ServerError", "Stats", "connect",
           "connect_async"]
