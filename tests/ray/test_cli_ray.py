"""``modelpod serve PATH --ray``: a local Ray instance, Ray's proxy on --http-port, all of it gone after SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.helpers.addition import pack_addition
from tests.helpers.cli import modelpod
from tests.helpers.sched_models import wait_until
from tests.helpers.servers import start_server

pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(300)


def ray_processes(marker: str) -> list[int]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_serve_ray_serves_and_stops_everything_it_started(tmp_path: Path) -> None:
    pack_addition(tmp_path / "repo" / "addition")
    ray_tmp = tempfile.mkdtemp(prefix="mpcli", dir="/tmp")  # Ray's socket paths must stay short
    try:
        server = start_server(tmp_path / "repo", tmp_path, "--ray", "--replicas", "1", "--replica-cpus", "0.5",
                              "--ray-layout", "models",
                              env={"RAY_TMPDIR": ray_tmp}, ready_timeout=180)
        try:
            answer = httpx.post(f"{server.url}/v2/models/addition/infer", timeout=30, json={"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]},
                {"name": "y", "datatype": "FP32", "shape": [2], "data": [3, 4]}]})
            assert answer.json()["outputs"][0]["data"] == [4.0, 6.0]
            wait_until(lambda: "on Ray Serve" in server.log(), "the ready line")
            assert "modelpod-addition: 1 replica(s)" in server.log()  # its own deployment, behind the router
            assert ray_processes(ray_tmp)  # its own Ray instance
            import numpy as np
            import tritonclient.grpc as triton_grpc

            client = triton_grpc.InferenceServerClient(server.grpc_target)  # Serve's gRPC proxy on --grpc-port
            assert client.is_model_ready("addition", headers={"application": "modelpod"})
            x = triton_grpc.InferInput("x", [2], "FP32")
            x.set_data_from_numpy(np.array([1, 2], np.float32))
            y = triton_grpc.InferInput("y", [2], "FP32")
            y.set_data_from_numpy(np.array([3, 4], np.float32))
            out = client.infer("addition", [x, y], headers={"application": "modelpod"}).as_numpy("out")
            assert out.tolist() == [4.0, 6.0]
        finally:
            code = server.stop(signal.SIGTERM, timeout=90)
        assert code == 0, server.log()
        assert ray_processes(ray_tmp) == [], "Ray processes outlived modelpod serve --ray"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ray_flags_without_ray_are_refused(tmp_path: Path) -> None:  # usage errors: exit 2
    done = modelpod("serve", str(tmp_path), "--replicas", "2")
    assert done.returncode == 2 and "need --ray" in done.stderr
    done = modelpod("serve", str(tmp_path), "--ray-layout", "models")
    assert done.returncode == 2 and "need --ray" in done.stderr
    done = modelpod("serve", str(tmp_path), "--ray", "--autoscale", "3")
    assert done.returncode == 2 and "MIN:MAX" in done.stderr
