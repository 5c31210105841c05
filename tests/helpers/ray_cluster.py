"""A local Ray instance with Serve's proxies on free loopback ports, for one test module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.helpers.servers import free_port


@dataclass(frozen=True)
class LocalServe:
    """Where Serve's proxies listen: ``http`` (host:port) and ``grpc`` (host:port, or None)."""

    http: str
    grpc: str | None


@contextmanager
def local_serve(grpc: bool = False) -> Iterator[LocalServe]:
    """Start Ray (2 CPUs, a short temp dir: Ray's socket paths must stay short) and Serve; shut both
    down and remove the temp dir however the block ends."""
    import ray
    from ray import serve

    from modelpod.ray.grpc import SERVICER_FUNCTION

    temp = tempfile.mkdtemp(prefix="mpray", dir="/tmp")
    http_port, grpc_port = free_port(), free_port() if grpc else None
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    try:
        grpc_options = {"port": grpc_port, "grpc_servicer_functions": [SERVICER_FUNCTION]} if grpc else None
        serve.start(http_options={"host": "127.0.0.1", "port": http_port}, grpc_options=grpc_options)
        yield LocalServe(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}" if grpc else None)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
