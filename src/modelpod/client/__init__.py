"""The Python client SDK: call served models with the same ``infer(dict) -> dict`` as local ones.

* :class:`Client` / :class:`AsyncClient`: ``http://host:port`` (KServe v2 REST, binary tensors by
  default, ``transport="json"`` on request) or ``grpc://host:port`` (KServe v2 gRPC);
* compact transport (``quantize="int8"`` ...) and body compression, see
  :mod:`modelpod.codecs.transport` for the schemes and their worst-case error;
* :class:`ServerError` for every refused request (``status``, ``message``);
* ``modelpod bench`` lives in :mod:`modelpod.client.bench`.
"""

from __future__ import annotations

from typing import Any

from modelpod.client._core import Stats
from modelpod.client.aio import AsyncClient
from modelpod.client.errors import ServerError
from modelpod.client.sync import Client


def connect(url: str, token: str | None = None, **options: Any) -> Client:
    """A :class:`Client` for ``url`` (http://, https:// or grpc://); use it as a context manager."""
    return Client(url, token, **options)


__all__ = ["AsyncClient", "Client", "ServerError", "Stats", "connect"]
