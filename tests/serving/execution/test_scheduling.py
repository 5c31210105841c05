"""Queue limits and deadlines on the real server, on every protocol.

A model is held busy by a gate file (see tests/sched_models.py), so "the queue is full" and "this
request is still queued" are facts the test sets up, not races against a clock. Nothing here
asserts a duration: refusals are proven fast by coming back while the model is still held.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers.sched_models import (
    SCHED_DIR_ENV,
    calls,
    eas_outputs,
    eas_request,
    metric,
    pack_counter,
    v2_body,
    wait_until,
    write_config,
)
from tests.helpers.servers import RunningServer, start_server

pytestmark = pytest.mark.timeout(180)

QUEUE = 2


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    root = tmp_path_factory.mktemp("sched")
    folder = root / "calls"
    folder.mkdir()
    pack_counter(root / "models" / "gated", "gated")
    pack_counter(root / "models" / "expiring", "expiring", sleep_ms=300)
    pack_counter(root / "models" / "slow", "slow", sleep_ms=300)
    config = write_config(root / "services.json", [
        {"name": "gated", "model_path": "models/gated", "processor": "python",
         "metadata": {"execution": "queued", "instance": 1, "rpc.max_queue_size": QUEUE, "rpc.keepalive": 60000}},
        {"name": "expiring", "model_path": "models/expiring",
         "metadata": {"execution": "queued", "instance": 1, "rpc.keepalive": 100}},
        {"name": "slow", "model_path": "models/slow",
         "metadata": {"execution": "queued", "instance": 1, "rpc.keepalive": 60000}},
    ])
    server = start_server(config, root, env={SCHED_DIR_ENV: str(folder)})
    try:
        yield server, folder
    finally:
        server.stop(9, timeout=10)


def post_v2(server: RunningServer, model: str, value: float, **kw) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=v2_body(np.array([value, 0], np.float32)),
                      timeout=60, **kw)


def post_eas(server: RunningServer, model: str, value: float, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/api/predict/{model}", content=eas_request(np.array([value, 0], np.float32)),
                      headers=headers, timeout=60)


def grpc_infer(server: RunningServer, model: str, value: float, client_timeout: float | None = None) -> np.ndarray:
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        tensor = grpcclient.InferInput("x", [2], "FP32")
        tensor.set_data_from_numpy(np.array([value, 0], np.float32))
        return client.infer(model, [tensor], client_timeout=client_timeout).as_numpy("y")


def grpc_status(server: RunningServer, model: str, value: float, client_timeout: float | None = None) -> str:
    with pytest.raises(InferenceServerException) as info:
        grpc_infer(server, model, value, client_timeout)
    return str(info.value.status())


def values_run(folder: Path, tag: str) -> list[float]:
    return [float(v) for _, v in calls(folder, tag)]


def test_flood_beyond_the_queue_is_refused_at_once_and_admitted_requests_succeed(sched) -> None:
    server, folder = sched
    gate = folder / "gated.hold"
    gate.touch()
    try:
        with ThreadPoolExecutor(24) as pool:
            running = pool.submit(post_v2, server, "gated", 100)
            wait_until(lambda: 100.0 in values_run(folder, "gated"), "the first request to reach the model")
            queued = [pool.submit(post_v2, server, "gated", 101 + i) for i in range(QUEUE)]
            wait_until(lambda: metric(server.url, "modelpod_queue_depth", model="gated") == QUEUE,
                       "the queue to fill")
            # the model is held: every answer below arrives while it still runs the first request
            refused_v2 = [post_v2(server, "gated", 200 + i) for i in range(3)]
            refused_eas = [post_eas(server, "gated", 300 + i) for i in range(3)]
            refused_grpc = [grpc_status(server, "gated", 400 + i) for i in range(3)]
            flood = [f.result(timeout=60) for f in [pool.submit(post_v2, server, "gated", 500 + i) for i in range(20)]]
            assert not any(f.done() for f in [running, *queued]), "admitted requests finished while held"
            gate.unlink()
            admitted = [running.result(timeout=60)] + [f.result(timeout=60) for f in queued]
    finally:
        gate.unlink(missing_ok=True)
    for response in refused_v2 + flood:
        assert response.status_code == 503, response.text
        assert "queue is full" in response.json()["error"]
    for response in refused_eas:
        assert response.status_code == 450, response.text
        assert "queue is full" in response.text
    assert refused_grpc == ["StatusCode.RESOURCE_EXHAUSTED"] * 3
    for i, response in enumerate(admitted):
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [101.0 + i, 1.0]
    # only the admitted requests ever reached the model
    assert sorted(values_run(folder, "gated")) == [100.0, 101.0, 102.0]
    assert metric(server.url, "modelpod_rejected_total", model="gated") == 3 + 3 + 3 + 20
    assert metric(server.url, "modelpod_queue_depth", model="gated") == 0


def test_deadline_answers_504_408_and_deadline_exceeded(sched) -> None:
    server, _ = sched
    response = post_v2(server, "expiring", 1)
    assert response.status_code == 504, response.text
    assert "deadline" in response.json()["error"]
    response = post_eas(server, "expiring", 2)
    assert response.status_code == 408, response.text
    assert "deadline" in response.text
    assert grpc_status(server, "expiring", 3) == "StatusCode.DEADLINE_EXCEEDED"
    # TF Serving REST answers 504 like v2
    response = httpx.post(f"{server.url}/v1/models/expiring:predict", json={"instances": [4.0, 0.0]}, timeout=60)
    assert response.status_code == 504, response.text


def test_request_expiring_in_the_queue_never_runs_and_is_counted(sched) -> None:
    server, folder = sched
    gate = folder / "expiring.hold"
    # earlier requests may still sit expired in the queue: let the scheduler drop them first
    wait_until(lambda: metric(server.url, "modelpod_queue_depth", model="expiring") == 0, "an empty queue")
    before = metric(server.url, "modelpod_expired_total", model="expiring")
    gate.touch()
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(post_v2, server, "expiring", 600)
            wait_until(lambda: 600.0 in values_run(folder, "expiring"), "the first request to reach the model")
            # these wait behind the held request until their 100 ms deadline passes in the queue
            queued_v2 = post_v2(server, "expiring", 601)
            queued_eas = post_eas(server, "expiring", 602)
            queued_grpc = grpc_status(server, "expiring", 603)
            assert running.result(timeout=60).status_code == 504  # its deadline passed while running
            assert metric(server.url, "modelpod_queue_depth", model="expiring") == 3  # still queued, unrun
    finally:
        gate.unlink(missing_ok=True)
    assert queued_v2.status_code == 504, queued_v2.text
    assert queued_eas.status_code == 408, queued_eas.text
    assert queued_grpc == "StatusCode.DEADLINE_EXCEEDED"
    wait_until(lambda: metric(server.url, "modelpod_expired_total", model="expiring") >= before + 3,
               "the scheduler to drop the expired requests")
    wait_until(lambda: metric(server.url, "modelpod_queue_depth", model="expiring") == 0, "an empty queue")
    assert metric(server.url, "modelpod_expired_total", model="expiring") == before + 3
    ran = values_run(folder, "expiring")
    assert 600.0 in ran
    assert not {601.0, 602.0, 603.0} & set(ran), f"an expired request reached the model: {ran}"


def test_clients_can_shorten_the_deadline(sched) -> None:
    server, _ = sched
    x = np.array([7, 0], np.float32)
    # v2 "timeout" parameter, in microseconds
    response = httpx.post(f"{server.url}/v2/models/slow/infer",
                          json=v2_body(x, parameters={"timeout": 50_000}), timeout=60)
    assert response.status_code == 504, response.text
    # timeout-ms header on v2 and on the EAS path
    response = post_v2(server, "slow", 8, headers={"timeout-ms": "50"})
    assert response.status_code == 504, response.text
    response = post_eas(server, "slow", 9, headers={"timeout-ms": "50"})
    assert response.status_code == 408, response.text
    # gRPC deadline
    assert grpc_status(server, "slow", 10, client_timeout=0.05) == "StatusCode.DEADLINE_EXCEEDED"
    # without a shorter deadline the same model answers (its own deadline is 60 s)
    response = post_v2(server, "slow", 11)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [12.0, 1.0]
    response = post_eas(server, "slow", 12)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(eas_outputs(response.content)["y"], [13.0, 1.0])
    np.testing.assert_array_equal(grpc_infer(server, "slow", 13, client_timeout=30), [14.0, 1.0])
    # a bad header is the client's error, not a deadline
    response = post_v2(server, "slow", 14, headers={"timeout-ms": "soon"})
    assert response.status_code == 400, response.text


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
