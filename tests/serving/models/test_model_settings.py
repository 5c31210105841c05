"""``<repository>/<model>/serving.json``: per-model serving settings in repository-folder mode."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers.addition import pack_addition
from tests.helpers.sched_models import metric, pack_batch_echo, v2_body
from tests.helpers.servers import MODELPOD
from tests.helpers.sched_models import (
    write_config,
)
from tests.helpers.cli import modelpod

pytestmark = pytest.mark.timeout(120)


def test_serving_json_sets_token_and_batching_per_model(tmp_path: Path, serve_factory, monkeypatch) -> None:
    monkeypatch.setenv("MODELPOD_SCHED_DIR", str(tmp_path / "calls"))
    (tmp_path / "calls").mkdir()
    repo = tmp_path / "repo"
    pack_addition(repo / "addition" / "1")
    pack_batch_echo(repo / "becho" / "1", "becho")
    (repo / "becho" / "serving.json").write_text(json.dumps({
        "token": "becho-secret",
        "metadata": {"max_batch_size": 8, "execution": "queued"},
    }))
    server = serve_factory(repo, env={"MODELPOD_SCHED_DIR": str(tmp_path / "calls")})
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    url = f"{server.url}/v2/models/becho/infer"
    assert httpx.post(url, json=v2_body(x)).status_code == 401
    answer = httpx.post(url, json=v2_body(x), headers={"Authorization": "Bearer becho-secret"})
    assert answer.status_code == 200, answer.text
    # the other model has no settings file: no token, default options
    add = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]},
                      {"name": "y", "datatype": "FP32", "shape": [2], "data": [3, 4]}]}
    assert httpx.post(f"{server.url}/v2/models/addition/infer", json=add).json()["outputs"][0]["data"] == [4, 6]
    # queued execution (from the settings) is what feeds the batch-size histogram
    assert metric(server.url, "modelpod_batch_size_count", model="becho", version="1") == 0  # hidden without its token
    assert metric(server.url, "modelpod_batch_size_count", "becho-secret", model="becho", version="1") == 1
    assert "batching up to 8" in server.log()


def test_bad_serving_json_stops_the_start_with_the_file_and_field(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    pack_addition(repo / "addition" / "1")
    (repo / "addition" / "serving.json").write_text(json.dumps({"metadata": {}, "instances": 2}))
    out = subprocess.run([MODELPOD, "serve", str(repo), "--http-port", "0", "--grpc-port", "-1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "serving.json" in out.stderr and "instances" in out.stderr


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
    assert result.returncode == 2 and "--max-queue-size" in result.stderr, result.stderr  # a usage error
