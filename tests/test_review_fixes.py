"""Regression tests for defects found in review, each on the real server or the real CLI.

* a request answered ``deadline`` while queued no longer holds a queue place (it used to, so fresh
  requests got "queue full" from a queue of dead requests);
* gRPC requests obey ``--max-body-mb`` (RESOURCE_EXHAUSTED) like HTTP bodies (413);
* a ``timeout-ms`` header that is not a finite positive number is a 400 on v2 and EAS (``nan``
  used to crash the queued path with a 500 and leave a phantom request in flight forever);
* ``serve --watch`` of an archive no longer extracts it on every poll to learn its name;
* unreadable ``warm_up_data_path`` stops the start with an error naming that file;
* ``modelpod infer`` and ``modelpod serve`` report bad arguments and server refusals as one
  ``error:`` line instead of a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers.addition import pack_addition
from tests.helpers.sched_models import (
    SCHED_DIR_ENV, calls, eas_outputs, eas_request, metric, pack_counter, v2_body, wait_until, write_config,
)

pytestmark = pytest.mark.timeout(120)

_SCRIPT = Path(sys.executable).with_name("modelpod")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "modelpod.cli"]


def modelpod(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def test_requests_answered_deadline_while_queued_free_their_queue_places(tmp_path: Path, serve_factory) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    pack_counter(tmp_path / "models" / "gated", "gated")
    config = write_config(tmp_path / "services.json", [
        {"name": "gated", "model_path": "models/gated",
         "metadata": {"execution": "queued", "instance": 1, "rpc.max_queue_size": 2, "rpc.keepalive": 60000}},
    ])
    server = serve_factory(config, env={SCHED_DIR_ENV: str(folder)})
    url = f"{server.url}/v2/models/gated/infer"
    hold = folder / "gated.hold"
    hold.touch()
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(httpx.post, url, json=v2_body(np.array([1, 0], np.float32)), timeout=60)
            wait_until(lambda: [v for _, v in calls(folder, "gated")] == ["1.0"], "the first request to run")
            # two requests fill the queue, then are answered 504 while still queued
            for value in (2, 3):
                response = httpx.post(url, json=v2_body(np.array([value, 0], np.float32)),
                                      headers={"timeout-ms": "50"}, timeout=60)
                assert response.status_code == 504, response.text
            # nothing waits any more, so the next request is admitted (and then times out while
            # the model is still held) instead of being refused as "queue full"
            response = httpx.post(url, json=v2_body(np.array([4, 0], np.float32)),
                                  headers={"timeout-ms": "200"}, timeout=60)
            assert response.status_code == 504, response.text
            assert "deadline" in response.json()["error"]
            hold.unlink()
            assert running.result().status_code == 200
    finally:
        hold.unlink(missing_ok=True)
    # the expired requests never reached the model
    assert [v for _, v in calls(folder, "gated")] == ["1.0"]


def test_grpc_requests_over_max_body_mb_are_resource_exhausted(tmp_path: Path, serve_factory) -> None:
    package = pack_addition(tmp_path / "addition")
    server = serve_factory(package, "--max-body-mb", "1")
    big = np.ones(512 * 1024, np.float32)  # 2 MiB per input
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        inputs = []
        for name in ("x", "y"):
            tensor = grpcclient.InferInput(name, list(big.shape), "FP32")
            tensor.set_data_from_numpy(big)
            inputs.append(tensor)
        with pytest.raises(InferenceServerException) as info:
            client.infer("addition", inputs)
        assert "RESOURCE_EXHAUSTED" in str(info.value.status())
        # requests under the limit still work
        small = []
        for name in ("x", "y"):
            tensor = grpcclient.InferInput(name, [2], "FP32")
            tensor.set_data_from_numpy(np.array([1, 2], np.float32))
            small.append(tensor)
        np.testing.assert_array_equal(client.infer("addition", small).as_numpy("out"), [2, 4])
    # and HTTP answers 413 for the same body, as before
    response = httpx.post(f"{server.url}/v2/models/addition/infer", content=big.tobytes() * 2, timeout=60)
    assert response.status_code == 413


def test_infer_reports_an_unreadable_npz_without_a_traceback(tmp_path: Path) -> None:
    package = pack_addition(tmp_path / "addition")
    result = modelpod("infer", str(package), "--input", "@missing.npz", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.npz" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_infer_against_a_server_reports_its_refusal_without_a_traceback(tmp_path: Path, serve_factory) -> None:
    package = pack_addition(tmp_path / "addition")
    server = serve_factory(package)
    result = modelpod("infer", server.url, "nope", "--input", "x=[1]")
    assert result.returncode == 1
    assert "error:" in result.stderr and "404" in result.stderr and "not served here" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    result = modelpod("infer", server.url, "addition", "--input", "x=[1]")
    assert result.returncode == 2
    assert "missing input 'y'" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_serve_rejects_an_unknown_log_level_with_a_message(tmp_path: Path) -> None:
    package = pack_addition(tmp_path / "addition")
    result = modelpod("serve", str(package), "--log-level", "loud", "--http-port", "0", "--grpc-port", "-1")
    assert result.returncode == 1
    assert "--log-level" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_serve_names_unreadable_warm_up_data_in_its_error(tmp_path: Path) -> None:
    pack_addition(tmp_path / "addition")
    (tmp_path / "warm.json").write_text('{"inputs": [')
    config = write_config(tmp_path / "services.json", [
        {"name": "add", "model_path": "addition", "warm_up_data_path": "warm.json"},
    ])
    result = modelpod("serve", str(config), "--http-port", "0", "--grpc-port", "-1")
    assert result.returncode == 1
    assert "warm_up_data_path" in result.stderr and "warm.json" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("header", ["nan", "inf", "-5", "0", "soon"])
def test_a_timeout_ms_header_that_is_not_a_positive_number_is_a_400(tmp_path: Path, serve_factory, header) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    pack_counter(tmp_path / "models" / "queued", "queued")
    config = write_config(tmp_path / "services.json", [
        {"name": "queued", "model_path": "models/queued", "metadata": {"execution": "queued"}},
    ])
    server = serve_factory(config, "--grpc-port", "-1", env={SCHED_DIR_ENV: str(folder)})
    x = np.array([5, 0], np.float32)
    response = httpx.post(f"{server.url}/v2/models/queued/infer", json=v2_body(x), headers={"timeout-ms": header})
    assert response.status_code == 400, response.text
    assert "timeout-ms" in response.json()["error"]
    response = httpx.post(f"{server.url}/api/predict/queued", content=eas_request(x), headers={"timeout-ms": header})
    assert response.status_code == 400 and "timeout-ms" in response.text, response.text
    # nothing was left behind: the model still answers, and no request stays in flight
    response = httpx.post(f"{server.url}/v2/models/queued/infer", json=v2_body(x), headers={"timeout-ms": "30000"})
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [6.0, 1.0]
    np.testing.assert_array_equal(
        eas_outputs(httpx.post(f"{server.url}/api/predict/queued", content=eas_request(x),
                               headers={"timeout-ms": "30000"}).content)["y"], [6.0, 1.0])
    assert metric(server.url, "modelpod_in_flight", model="queued") == 0
    assert [v for _, v in calls(folder, "queued")] == ["5.0", "5.0"]


def test_watch_does_not_reread_an_unchanged_archive_on_every_poll(tmp_path: Path, serve_factory) -> None:
    archive = pack_addition(tmp_path / "addition.tar.gz")
    server = serve_factory(archive, "--watch", "--watch-interval", "0.05", "--grpc-port", "-1")
    # same size and mtime, so the same fingerprint: only a poll that re-reads the file notices
    stat = archive.stat()
    archive.write_bytes(b"\0" * stat.st_size)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(1.0)  # room for many polls (a pause, not an assertion about time)
    assert "cannot read" not in server.log(), server.log()
    body = {"inputs": [{"name": n, "datatype": "FP32", "shape": [2], "data": [1, 2]} for n in ("x", "y")]}
    response = httpx.post(f"{server.url}/v2/models/addition/infer", json=body)
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [2.0, 4.0]


@pytest.mark.parametrize("metadata", [{"rpc.max_queue_size": 0}, {"rpc.keepalive": 0}])
def test_serve_refuses_a_queue_size_or_deadline_that_would_refuse_every_request(tmp_path: Path, metadata) -> None:
    pack_addition(tmp_path / "addition")
    config = write_config(tmp_path / "services.json", [
        {"name": "add", "model_path": "addition", "metadata": {"execution": "queued", **metadata}},
    ])
    result = modelpod("serve", str(config), "--http-port", "0", "--grpc-port", "-1")
    assert result.returncode == 1
    assert "must be" in result.stderr and "Traceback" not in result.stderr, result.stderr
    result = modelpod("serve", str(tmp_path / "addition"), "--max-queue-size", "0", "--http-port", "0",
                      "--grpc-port", "-1")
    assert result.returncode == 1 and "--max-queue-size" in result.stderr, result.stderr


def test_garbage_after_a_queued_request_is_answered_after_it_in_order(tmp_path: Path, serve_factory) -> None:
    """A malformed request pipelined behind one still running gets its 400 second, then the close."""
    calls = tmp_path / "calls"
    calls.mkdir()
    package = pack_counter(tmp_path / "counter", "pipe")
    config = tmp_path / "svc.json"
    config.write_text(json.dumps({"name": "counter", "model_path": str(package), "metadata": {"execution": "queued"}}))
    server = serve_factory(config, env={"MODELPOD_SCHED_DIR": str(calls)})
    (calls / "pipe.hold").touch()  # the first request waits inside the model
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode()
    good = (b"POST /v2/models/counter/infer HTTP/1.1\r\nhost: x\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        sock.sendall(good + b"THIS IS NOT HTTP\r\n\r\n")
        wait_until(lambda: (calls / "pipe.calls").exists(), "the first request to reach the model")
        (calls / "pipe.hold").unlink()
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"HTTP/1.1 400" in rest and b"malformed HTTP request" in rest
