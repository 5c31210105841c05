"""Shared fixtures: free ports and a real ``modelpod serve`` process that is always cleaned up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELPOD = str(Path(sys.executable).parent / "modelpod")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    """A ``modelpod serve`` subprocess on loopback ports."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def host(self) -> str:
        """host:port form that tritonclient.http wants."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the server's process group and wait; SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        return self.process.returncode


def start_server(path: Path | str, tmp_path: Path, *args: str, ready_timeout: float = 120.0,
                 wait_ready: bool = True, env: dict[str, str] | None = None, http_port: int | None = None,
                 grpc_port: int | None = None) -> RunningServer:
    """Start ``modelpod serve path`` (on free ports unless given) and wait until /v2/health/ready
    (``wait_ready=False``: /v2/health/live) answers; a server that exits or never gets there is
    stopped (its whole process group) and the error carries its log."""
    http_port, grpc_port = http_port or free_port(), grpc_port or free_port()
    log_path = tmp_path / f"server-{http_port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [MODELPOD, "serve", str(path), "--http-port", str(http_port), "--grpc-port", str(grpc_port), *args],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    server = RunningServer(process, http_port, grpc_port, log_path)
    deadline = time.monotonic() + ready_timeout
    endpoint = "/v2/health/ready" if wait_ready else "/v2/health/live"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"modelpod serve exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + endpoint, timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise RuntimeError(f"modelpod serve did not become ready in {ready_timeout} s:\n{server.log()}")
        time.sleep(0.1)


@contextmanager
def running_server(path: Path | str, tmp_path: Path, *args: str, **kwargs: Any) -> Iterator[RunningServer]:
    """:func:`start_server` as a context manager: the server is stopped however the block ends."""
    server = start_server(path, tmp_path, *args, **kwargs)
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM, timeout=15)


def module_server(tmp_path_factory: pytest.TempPathFactory, path: Path | str, *args: str,
                  **kwargs: Any) -> Iterator[RunningServer]:
    """Generator body for a module-scoped fixture: one server, always stopped afterwards."""
    with running_server(path, tmp_path_factory.mktemp("server"), *args, **kwargs) as server:
        yield server


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator:
    """Call ``serve_factory(path, *args)`` to start servers; all are stopped after the test."""
    started: list[RunningServer] = []

    def factory(path: Path | str, *args: str, **kwargs) -> RunningServer:
        server = start_server(path, tmp_path, *args, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:  # graceful first, so worker processes and shared memory are released
        server.stop(signal.SIGTERM, timeout=15)


def wait_models_ready(server: RunningServer, *names: str, timeout: float = 120.0) -> None:
    """Wait until each of ``names`` answers ready on ``/v2/models/<name>/ready`` (for a server
    started with ``wait_ready=False`` because one of its models is meant to fail)."""
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"modelpod serve exited with {server.process.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.url}/v2/models/{name}/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"model {name} did not become ready in {timeout} s:\n{server.log()}")
            time.sleep(0.1)
