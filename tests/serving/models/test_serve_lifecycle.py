"""Server lifecycle: graceful SIGTERM/SIGINT with a request in flight, EAS-style service configs,
and a model that fails warm-up staying out of traffic while the others serve."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers.packages import (
    SLOW_MARKER_ENV, pack_addition_model, pack_scaled, pack_slow, pack_warmup_fails, write_service_config,
)

pytestmark = pytest.mark.timeout(120)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` (a readiness wait, not an assertion about time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def slow_config(tmp_path: Path) -> Path:
    pack_slow(tmp_path / "models" / "slow", seconds=1.0)
    return write_service_config(tmp_path / "slow.json", [{
        "name": "slow", "model_path": "models/slow", "processor": "python",
        "metadata": {"execution": "thread", "rpc.keepalive": 60000},
    }])


def test_sigterm_finishes_the_request_in_flight(serve_factory, tmp_path: Path) -> None:
    marker = tmp_path / "request-reached-model"
    server = serve_factory(slow_config(tmp_path), env={SLOW_MARKER_ENV: str(marker)})
    body = {"id": "in-flight", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{server.url}/v2/models/slow/infer", json=body, timeout=60)
        wait_until(marker.exists, "the request to reach the model")
        returncode = server.stop(signal.SIGTERM, timeout=60)
        response = pending.result(timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "in-flight"
    assert response.json()["outputs"][0]["data"] == [2.0, 3.0]
    assert returncode == 0, server.log()
    assert "stopped" in server.log()


def test_sigint_finishes_the_grpc_request_in_flight(serve_factory, tmp_path: Path) -> None:
    marker = tmp_path / "request-reached-model"
    server = serve_factory(slow_config(tmp_path), env={SLOW_MARKER_ENV: str(marker)})

    def call() -> np.ndarray:
        with grpcclient.InferenceServerClient(server.grpc_target) as client:
            tensor = grpcclient.InferInput("x", [3], "FP32")
            tensor.set_data_from_numpy(np.array([0, 1, 2], np.float32))
            return client.infer("slow", [tensor], client_timeout=60).as_numpy("y")

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(call)
        wait_until(marker.exists, "the request to reach the model")
        returncode = server.stop(signal.SIGINT, timeout=60)
        result = pending.result(timeout=60)
    np.testing.assert_array_equal(result, [1, 2, 3])
    assert returncode == 0, server.log()


def test_service_config_with_two_services(serve_factory, tmp_path: Path) -> None:
    pack_addition_model(tmp_path / "models" / "addition")
    pack_scaled(tmp_path / "models" / "scaled", 3)
    config = write_service_config(tmp_path / "conf" / "services.json", [
        {"name": "adder", "model_path": "../models/addition", "processor": "python"},
        {"name": "tripler", "model_path": "../models/scaled", "processor": "python", "metadata": {"instance": 2}},
    ])
    server = serve_factory(config)
    x = np.arange(3, dtype=np.float32)
    with httpclient.InferenceServerClient(server.host) as client:
        assert client.is_model_ready("adder") and client.is_model_ready("tripler")
        assert client.get_model_metadata("adder")["name"] == "adder"
        inputs = [httpclient.InferInput(n, [3], "FP32") for n in ("x", "y")]
        for tensor in inputs:
            tensor.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("adder", inputs).as_numpy("out"), x * 2)
    tf = httpx.post(f"{server.url}/v1/models/tripler:predict", json={"instances": [1.0, 2.0]})
    assert tf.json() == {"predictions": [3.0, 6.0]}
    assert httpx.get(f"{server.url}/v2/models/addition").status_code == 404  # served under its config name


def test_service_config_processor_must_match(tmp_path: Path, serve_factory) -> None:
    pack_scaled(tmp_path / "models" / "scaled", 1)
    config = write_service_config(tmp_path / "bad.json", [
        {"name": "m", "model_path": "models/scaled", "processor": "tensorflow_cpu_2.7"},
    ])
    with pytest.raises(RuntimeError) as info:
        serve_factory(config, ready_timeout=60)
    assert "does not match the package platform" in str(info.value)


def test_model_failing_warm_up_stays_unready(serve_factory, tmp_path: Path) -> None:
    package, warm = pack_warmup_fails(tmp_path / "models" / "picky")
    shutil.copy(warm, tmp_path / "warm.json")
    pack_addition_model(tmp_path / "models" / "addition")
    config = write_service_config(tmp_path / "services.json", [
        {"name": "picky", "model_path": "models/picky", "warm_up_data_path": "warm.json"},
        {"name": "addition", "model_path": "models/addition"},
    ])
    server = serve_factory(config, wait_ready=False)
    x = np.ones(2, np.float32)
    with httpclient.InferenceServerClient(server.host) as client:
        assert not client.is_model_ready("picky")
        assert client.is_model_ready("addition")
        assert client.get_model_metadata("picky")["name"] == "picky"  # metadata still answers
        tensor = httpclient.InferInput("x", [2], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as info:
            client.infer("picky", [tensor])
        assert info.value.status() == "503"
        assert "warm-up failed" in info.value.message() and "picky model refuses" in info.value.message()
        inputs = [httpclient.InferInput(n, [2], "FP32") for n in ("x", "y")]
        for t in inputs:
            t.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("addition", inputs).as_numpy("out"), [2, 2])
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        assert not client.is_model_ready("picky")
        assert client.is_model_ready("addition")
        tensor = grpcclient.InferInput("x", [2], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as info:
            client.infer("picky", [tensor])
        assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert httpx.get(f"{server.url}/v2/models/picky/ready").status_code == 400
    assert httpx.get(f"{server.url}/v2/models/addition/ready").status_code == 200
    status = httpx.get(f"{server.url}/v1/models/picky").json()["model_version_status"]
    assert status[0]["state"] != "AVAILABLE"
    assert "picky model refuses" in status[0]["status"]["error_message"]
    tf = httpx.post(f"{server.url}/v1/models/picky:predict", json={"instances": [1.0]})
    assert tf.status_code == 503
