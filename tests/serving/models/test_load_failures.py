"""A model that fails to load leaves the others serving: it is not ready, with its reason in the
requests' 503, the repository index, TF Serving's status, the dashboard and one log line; it is
retried under ``--watch``. A source of which nothing loads stops ``modelpod serve`` (exit 1) naming
every reason."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers.packages import (
    VANISHING_MODULE,
    pack_addition_model,
    pack_import_fails,
    pack_scaled,
    write_service_config,
)
from tests.helpers.sched_models import wait_until
from tests.helpers.servers import MODELPOD, free_port

pytestmark = pytest.mark.timeout(180)


def import_error(package: Path) -> str:
    """What loading a :func:`pack_import_fails` package raises, as the server reports it."""
    return (f"packaged module 'main' could not be imported: no module named '{VANISHING_MODULE}' "
            f"(looked in {package}/code and the installed packages)")

TOKEN = "its-own"


def _addition(client: httpclient.InferenceServerClient) -> np.ndarray:
    inputs = [httpclient.InferInput(n, [2], "FP32") for n in ("x", "y")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.array([1, 2], np.float32))
    return client.infer("addition", inputs).as_numpy("out")


def test_a_package_whose_code_cannot_be_imported_is_unready_and_the_others_serve(tmp_path: Path,
                                                                                serve_factory) -> None:
    repo = tmp_path / "repo"
    pack_addition_model(repo / "addition" / "1")
    reason = f"load failed: ImportError: {import_error(pack_import_fails(repo / 'broken' / '1'))}"
    server = serve_factory(repo, "--watch", "--watch-interval", "0.2", wait_ready=False)
    wait_until(lambda: "serving HTTP" in server.log(), "the server to finish loading")
    with httpclient.InferenceServerClient(server.host) as client:
        np.testing.assert_array_equal(_addition(client), [2, 4])
        assert client.is_model_ready("addition") and not client.is_model_ready("broken")
        assert not client.is_server_ready()  # as for a failed warm-up: not every model is ready
        tensor = httpclient.InferInput("x", [2], "FP32")
        tensor.set_data_from_numpy(np.ones(2, np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.infer("broken", [tensor])
        assert info.value.status() == "503"
        assert info.value.message() == f"model 'broken' version 1 is not ready ({reason})"
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        assert client.is_model_ready("addition") and not client.is_model_ready("broken")
        tensor = grpcclient.InferInput("x", [2], "FP32")
        tensor.set_data_from_numpy(np.ones(2, np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.infer("broken", [tensor])
        assert info.value.status() == "StatusCode.UNAVAILABLE" and reason in info.value.message()
    index = httpx.post(f"{server.url}/v2/repository/index").json()
    assert {"name": "broken", "version": "1", "state": "UNAVAILABLE", "reason": reason} in index
    assert {"name": "addition", "version": "1", "state": "READY", "reason": ""} in index
    status = httpx.get(f"{server.url}/v1/models/broken").json()["model_version_status"]
    assert status == [{"version": "1", "state": "END",
                       "status": {"error_code": "UNKNOWN", "error_message": reason}}]
    eas = httpx.post(f"{server.url}/api/predict/broken", content=b"")
    assert eas.status_code == 503 and reason in eas.text
    # the dashboard's data: the model with its reason, and a "load failed" event carrying it
    overview = httpx.get(f"{server.url}/ui/api/overview").json()
    (row,) = [m for m in overview["models"] if m["name"] == "broken"]
    assert row["versions"][0]["state"] == "FAILED" and row["versions"][0]["reason"] == reason
    events = [e for e in overview["events"] if e["model"] == "broken"]
    assert events and events[0]["kind"] == "load failed" and events[0]["message"] == reason
    # the logs: one clear line, no traceback
    lines = [line for line in server.log().splitlines() if "broken" in line and "ERROR" in line]
    assert lines[0].endswith(f"model broken version 1 is not served (the others are): {reason}"), lines
    assert "Traceback" not in server.log()
    # --watch retries it: a fixed package in its place comes up and the server is ready again
    shutil.rmtree(repo / "broken" / "1")
    pack_scaled(repo / "broken" / "1", 3)
    wait_until(lambda: {"name": "broken", "version": "1", "state": "READY", "reason": ""} in
               httpx.post(f"{server.url}/v2/repository/index").json(), "the fixed model")
    answer = httpx.post(f"{server.url}/v2/models/broken/infer", json={
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [2]}]})
    assert answer.json()["outputs"][0]["data"] == [6.0]
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_a_processor_mismatch_in_one_service_of_a_config_leaves_the_others_serving(tmp_path: Path,
                                                                                   serve_factory) -> None:
    pack_addition_model(tmp_path / "models" / "addition")
    pack_scaled(tmp_path / "models" / "scaled", 2)
    config = write_service_config(tmp_path / "services.json", [
        {"name": "addition", "model_path": "models/addition", "processor": "python"},
        {"name": "detector", "model_path": "models/scaled", "processor": "tensorflow_cpu_2.7", "token": TOKEN},
    ])
    server = serve_factory(config, wait_ready=False)
    wait_until(lambda: "serving HTTP" in server.log(), "the server to finish loading")
    with httpclient.InferenceServerClient(server.host) as client:
        np.testing.assert_array_equal(_addition(client), [2, 4])
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [2]}]}
    # its own token still guards it: without it nothing about it is revealed
    assert httpx.post(f"{server.url}/v2/models/detector/infer", json=body).status_code == 401
    assert [r["name"] for r in httpx.post(f"{server.url}/v2/repository/index").json()] == ["addition"]
    answer = httpx.post(f"{server.url}/v2/models/detector/infer", json=body, headers={"authorization": TOKEN})
    assert answer.status_code == 503
    message = answer.json()["error"]
    assert message.startswith("model 'detector' version 1 is not ready (load failed: ValueError: ")
    assert "processor 'tensorflow_cpu_2.7' does not match the package platform 'python'" in message
    index = httpx.post(f"{server.url}/v2/repository/index", headers={"authorization": TOKEN}).json()
    (row,) = [r for r in index if r["name"] == "detector"]
    assert row["state"] == "UNAVAILABLE" and "does not match the package platform" in row["reason"]
    assert "model detector version 1 is not served (the others are): load failed: ValueError:" in server.log()


def _serve(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MODELPOD, "serve", str(path), "--http-port", str(free_port()), "--grpc-port", "-1"],
                          capture_output=True, text=True, timeout=120)


def test_serve_exits_1_naming_every_reason_when_no_model_can_be_loaded(tmp_path: Path) -> None:
    broken = pack_import_fails(tmp_path / "models" / "broken")
    pack_scaled(tmp_path / "models" / "scaled", 2)
    config = write_service_config(tmp_path / "services.json", [
        {"name": "broken", "model_path": "models/broken"},
        {"name": "detector", "model_path": "models/scaled", "processor": "onnx"},
    ])
    result = _serve(config)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: none of the 2 models of {config} could be loaded: model 'broken' version 1: "
                      f"{import_error(broken)}; model 'detector' version 1: "
                      f"{tmp_path / 'models' / 'scaled'}: processor 'onnx' does not match the package platform "
                      "'python'"], result.stderr
    # a source of one model: its own error, as before
    single = _serve(tmp_path / "models" / "broken")
    assert single.returncode == 1
    assert [line for line in single.stderr.splitlines() if "error" in line.lower()] == [
        f"error: {import_error(broken)}"], single.stderr
