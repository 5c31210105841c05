"""Prometheus /metrics and the --access-log lines of the real server, after real traffic."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers.sched_models import eas_request, metric, pack_batch_echo, pack_counter, scrape, v2_body, write_config

pytestmark = pytest.mark.timeout(180)


def config(tmp_path: Path) -> Path:
    pack_batch_echo(tmp_path / "models" / "becho", "becho", sleep_ms=1)
    pack_counter(tmp_path / "models" / "plain", "plain")
    return write_config(tmp_path / "services.json", [
        {"name": "becho", "model_path": "models/becho",
         "metadata": {"execution": "queued", "max_batch_size": 8, "max_batch_delay_ms": 2}},
        {"name": "plain", "model_path": "models/plain", "metadata": {"execution": "inline"}},
    ])


def access_lines(log: str) -> list[dict]:
    return [json.loads(line.split("modelpod.access: ", 1)[1]) for line in log.splitlines()
            if "modelpod.access: " in line]


def test_metrics_and_access_log_after_traffic(tmp_path: Path, serve_factory) -> None:
    server = serve_factory(config(tmp_path), "--access-log")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    url = server.url
    for path in ("/v2/models/becho/infer", "/v2/models/becho/infer", "/v2/models/becho/versions/1/infer"):
        assert httpx.post(url + path, json=v2_body(x)).status_code == 200
    assert httpx.post(f"{url}/v2/models/becho/infer", json=v2_body(np.ones(3, np.float32))).status_code == 400
    assert httpx.post(f"{url}/v2/models/nope/infer", json=v2_body(x)).status_code == 404
    for _ in range(2):
        assert httpx.post(f"{url}/v1/models/becho:predict", json={"instances": [[1.0, 2.0, 3.0]]}).status_code == 200
        assert httpx.post(f"{url}/api/predict/becho", content=eas_request(x)).status_code == 200
    assert httpx.post(f"{url}/v2/models/plain/infer", json=v2_body(np.ones(2, np.float32))).status_code == 200

    samples = scrape(url)
    requests = {(lab["model"], lab["version"], lab["protocol"], lab["status"]): v
                for name, lab, v in samples if name == "modelpod_requests_total"}
    # labelled with the version that answered, whether or not the request named it
    assert requests[("becho", "1", "v2", "200")] == 3
    assert sum(v for (m, _, p, s), v in requests.items() if (m, p, s) == ("becho", "v2", "200")) == 3
    assert sum(v for (m, _, p, s), v in requests.items() if (m, p, s) == ("becho", "v2", "400")) == 1
    # an unknown model is not a label (callers must not grow /metrics): it counts under ""
    assert sum(v for (m, _, p, s), v in requests.items() if (m, p, s) == ("", "v2", "404")) == 1
    assert not any(m == "nope" for (m, _, _, _) in requests)
    assert sum(v for (m, _, p, s), v in requests.items() if (m, p, s) == ("becho", "tfserving", "200")) == 2
    assert sum(v for (m, _, p, s), v in requests.items() if (m, p, s) == ("becho", "eas", "200")) == 2
    assert sum(v for (m, _, p, s), v in requests.items() if (m, p, s) == ("plain", "v2", "200")) == 1

    # where queued requests spent their time: queue, batch wait and compute, per model and version
    assert metric(url, "modelpod_queue_seconds_count", model="becho", version="1") == 7  # one per request run
    for name in ("modelpod_batch_wait_seconds_count", "modelpod_compute_seconds_count", "modelpod_batch_size_count"):
        calls = metric(url, name, model="becho", version="1")
        assert 1 <= calls <= 7, (name, calls)
    assert metric(url, "modelpod_batch_size_sum", model="becho", version="1") == 3 * 2 + 2 * 1 + 2 * 2  # rows
    assert metric(url, "modelpod_compute_seconds_sum", model="becho", version="1") != 0.0  # time was recorded
    assert metric(url, "modelpod_request_seconds_count", model="becho", protocol="v2") == 4
    assert metric(url, "modelpod_request_seconds_count", model="becho", protocol="eas") == 2
    names = {name for name, _, _ in samples}
    assert {"modelpod_queue_seconds_bucket", "modelpod_batch_wait_seconds_bucket",
            "modelpod_compute_seconds_bucket", "modelpod_batch_size_bucket"} <= names
    # live gauges and counters for every served model version
    for name in ("modelpod_queue_depth", "modelpod_in_flight", "modelpod_expired_total",
                 "modelpod_rejected_total", "modelpod_instance_restarts_total"):
        for model in ("becho", "plain"):
            assert any(n == name and lab == {"model": model, "version": "1"} for n, lab, _ in samples), (name, model)
    assert metric(url, "modelpod_queue_depth", model="becho") == 0
    assert metric(url, "modelpod_in_flight", model="becho") == 0

    # one structured access-log line per request to a model
    lines = access_lines(server.log())
    becho = [line for line in lines if line["model"] == "becho"]
    assert len(becho) == 8
    assert sorted((line["protocol"], line["status"]) for line in becho) == sorted(
        [("v2", 200)] * 3 + [("v2", 400), ("tfserving", 200), ("tfserving", 200), ("eas", 200), ("eas", 200)])
    for line in becho:
        assert {"ts", "client", "method", "path", "protocol", "model", "version", "status", "ms"} <= set(line)
        assert line["method"] == "POST" and line["client"].startswith("127.0.0.1") and line["ms"] >= 0
    assert [(line["model"], line["status"]) for line in lines if line["path"] == "/v2/models/nope/infer"] == [("", 404)]
    assert sum(1 for line in lines if line["model"] == "plain") == 1


def test_access_log_is_off_by_default(tmp_path: Path, serve_factory) -> None:
    server = serve_factory(config(tmp_path))
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    assert httpx.post(f"{server.url}/v2/models/becho/infer", json=v2_body(x)).status_code == 200
    assert access_lines(server.log()) == []
    assert metric(server.url, "modelpod_requests_total", model="becho", protocol="v2", status="200") == 1


def test_inline_models_record_compute_and_every_request_is_labelled_with_its_version(tmp_path: Path,
                                                                                    serve_factory) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    server = serve_factory(config(tmp_path))
    url = server.url
    one = v2_body(np.ones(2, np.float32))
    for _ in range(3):
        assert httpx.post(f"{url}/v2/models/plain/infer", json=one).status_code == 200
    fp64 = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1, 2]}]}
    assert httpx.post(f"{url}/v2/models/plain/infer", json=fp64).status_code == 400
    assert httpx.get(f"{url}/v2/models/plain").status_code == 200
    assert httpx.get(f"{url}/v2/models/plain/ready").status_code == 200
    assert httpx.get(f"{url}/v1/models/plain").status_code == 200
    assert httpx.post(f"{url}/v2/models/plain/versions/9/infer", json=one).status_code == 404
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        assert client.is_model_ready("plain") and client.get_model_metadata("plain").name == "plain"
        tensor = grpcclient.InferInput("x", [2], "FP64")
        tensor.set_data_from_numpy(np.ones(2, np.float64))
        with pytest.raises(InferenceServerException):
            client.infer("plain", [tensor])
    # an inline model's calls are timed too (three answered, the refused one checked and timed as well)
    assert metric(url, "modelpod_compute_seconds_count", model="plain", version="1") >= 3
    assert metric(url, "modelpod_compute_seconds_sum", model="plain", version="1") > 0.0
    # one label per model: what answered, or what the request resolves to; an unknown version is ""
    requests = {(lab["version"], lab["protocol"], lab["status"]): v
                for name, lab, v in scrape(url) if name == "modelpod_requests_total" and lab["model"] == "plain"}
    assert requests == {("1", "v2", "200"): 5, ("1", "v2", "400"): 1, ("1", "tfserving", "200"): 1,
                        ("", "v2", "404"): 1, ("1", "grpc", "200"): 2, ("1", "grpc", "400"): 1}, requests
