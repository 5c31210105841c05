"""A model's ``cpu`` and ``memory`` settings (EAS service config keys) without Ray: ``cpu`` holds its
worker's frameworks to that many threads; ``memory`` caps each worker process, so a request that
needs more fails alone with a clear error and its worker is restarted, while the server serves on."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers.packages import pack_code, write_service_config
from tests.helpers.sched_models import wait_until
from tests.helpers.servers import running_server

pytestmark = pytest.mark.timeout(180)
HUNGRY = """
    import os

    import numpy as np

    def get_model(data_dir):
        def run(n):
            block = np.ones(int(n[0]), dtype=np.float64)  # n * 8 bytes
            return {"total": np.array([block.sum()]),
                    "threads": np.array([os.environ.get("OMP_NUM_THREADS", "")], dtype=object),
                    "pid": np.array([os.getpid()], dtype=np.int64)}
        return run
"""


def call(url: str, n: int) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/hungry/infer", timeout=60, json={"inputs": [
        {"name": "n", "datatype": "INT64", "shape": [1], "data": [n]}]})


def test_cpu_and_memory_limit_the_models_worker(tmp_path: Path) -> None:
    package = pack_code(tmp_path / "hungry", "hungry", HUNGRY, [{"name": "n", "dtype": "int64", "shape": (1,)}],
                        [{"name": "total", "dtype": "float64", "shape": (1,)},
                         {"name": "threads", "dtype": "string", "shape": (1,)},
                         {"name": "pid", "dtype": "int64", "shape": (1,)}])
    config = write_service_config(tmp_path / "services.json", [
        {"name": "hungry", "model_path": str(package), "metadata": {"cpu": 1, "memory": 400}}])
    with running_server(config, tmp_path) as server:
        small = call(server.url, 1_000_000)
        assert small.status_code == 200, small.text
        outputs = {o["name"]: o["data"][0] for o in small.json()["outputs"]}
        assert outputs["total"] == 1_000_000.0 and outputs["threads"] == "1"
        first_pid = outputs["pid"]

        big = call(server.url, 200_000_000)  # 1.6 GB, past the 400 MB cap
        assert big.status_code == 500 and "ran out of memory of 400 MB" in big.json()["error"], big.text

        def restarted() -> httpx.Response | None:
            response = call(server.url, 1_000_000)
            assert response.status_code in (200, 503), response.text  # 503 while the worker restarts
            return response if response.status_code == 200 else None

        again = wait_until(restarted, "the restarted worker to answer")
        assert {o["name"]: o["data"][0] for o in again.json()["outputs"]}["pid"] != first_pid
        assert "hungry" in httpx.get(f"{server.url}/v2/models/hungry", timeout=10).text
