"""The same HTTP app under uvicorn: ``uvicorn --factory modelpod.serving.asgi:app_from_env``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tests.helpers.addition import pack_addition
from tests.helpers.servers import free_port

pytestmark = pytest.mark.timeout(120)


def test_uvicorn_serves_the_app_to_tritonclient(tmp_path: Path) -> None:
    package = pack_addition(tmp_path / "addition")
    port = free_port()
    log = open(tmp_path / "uvicorn.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "modelpod.serving.asgi:app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "MODELPOD_PATH": str(package), "MODELPOD_TOKEN": "t0k", "MODELPOD_MAX_BODY_MB": "1"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "uvicorn.log").read_text())
            try:
                if httpx.get(url + "/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.arange(5, dtype=np.float32)
        inputs = [httpclient.InferInput("x", [5], "FP32"), httpclient.InferInput("y", [5], "FP32")]
        for tensor in inputs:
            tensor.set_data_from_numpy(x)
        result = client.infer("addition", inputs, headers={"Authorization": "Bearer t0k"})
        np.testing.assert_array_equal(result.as_numpy("out"), x + x)
        assert httpx.post(f"{url}/v2/models/addition/infer", json={"inputs": []}).status_code == 401
        tf = httpx.post(f"{url}/v1/models/addition:predict", json={"inputs": {"x": [1.0], "y": [2.0]}},
                        headers={"Authorization": "t0k"})
        assert tf.json() == {"outputs": [3.0]}
        # the app's own limits hold under another server: the body limit, escaped slashes in paths
        big = httpx.post(f"{url}/v2/models/addition/infer", content=b"x" * (2 << 20), headers={"Authorization": "t0k"})
        assert big.status_code == 413
        escaped = httpx.post(f"{url}/v2%2Frepository%2Fmodels%2Faddition%2Funload", headers={"Authorization": "t0k"})
        assert escaped.status_code == 404
        assert httpx.get(url + "/metrics").status_code == 401  # the server token guards what models exist
        metrics = httpx.get(url + "/metrics", headers={"Authorization": "t0k"}).text
        assert 'modelpod_requests_total{model="addition",protocol="v2",status="200",version="1"} 1.0' in metrics
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
