"""Isolated models in one server: each package in its own environment, served with real clients.

One server for the module holds a numpy-1.26 package, a numpy-2 package, a ModelArts folder that
depends on an exact Pillow and on ``inflection`` (which the server's venv lacks), a ModelArts folder
whose dependency does not exist, and a plain package. Everything is really installed (uv, PyPI).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.helpers.addition import pack_addition
from tests.helpers.isolated import (
    NUMPY_1,
    NUMPY_2,
    PILLOW,
    pack_numpy_reporter_with_hooks,
    png_bytes,
    write_modelarts_pillow,
)
from tests.helpers.sched_models import wait_until
from tests.helpers.servers import RunningServer, module_server, start_server

X = np.array([1.0, 2.0, 4.0], dtype=np.float32)
NO_SUCH_PACKAGE = "modelpod-test-no-such-package-4f1e"


def build_repo(root: Path, numpy_packages: dict[str, Path], broken: bool) -> Path:
    root.mkdir(parents=True)
    for name, package in numpy_packages.items():
        shutil.copytree(package, root / name)
    write_modelarts_pillow(root / "pillow")
    if broken:
        write_modelarts_pillow(root / "broken", extra_dependency=NO_SUCH_PACKAGE)
        pack_addition(root / "addition")
        pack_numpy_reporter_with_hooks(root / "hooks", "hooks", NUMPY_1)  # shares np1's environment
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, numpy_packages: dict[str, Path]) -> Iterator[RunningServer]:
    repo = build_repo(tmp_path_factory.mktemp("isolated") / "repo", numpy_packages, broken=True)
    yield from module_server(tmp_path_factory, repo, wait_ready=False, ready_timeout=300)


def wait_ready(server: RunningServer, name: str) -> None:
    wait_until(lambda: httpx.get(f"{server.url}/v2/models/{name}/ready", timeout=5).status_code == 200,
               f"model {name} to become ready", timeout=300)


def infer_numpy(server: RunningServer, name: str) -> dict[str, np.ndarray]:
    client = triton_http.InferenceServerClient(server.host)
    x = triton_http.InferInput("x", list(X.shape), "FP32")
    x.set_data_from_numpy(X)
    result = client.infer(name, [x])
    return {out: result.as_numpy(out) for out in ("y", "numpy", "sees_server")}


def test_two_numpy_versions_serve_side_by_side(server: RunningServer) -> None:
    for name, version in (("np1", NUMPY_1), ("np2", NUMPY_2)):
        wait_ready(server, name)
        out = infer_numpy(server, name)
        assert out["numpy"].tolist() == [version.encode()]
        np.testing.assert_array_equal(out["y"], np.cumsum(X))
        assert out["sees_server"].tolist() == [False]


def test_a_modelarts_folder_with_dependencies_the_server_lacks_is_served_unchanged(server: RunningServer) -> None:
    import PIL

    wait_ready(server, "pillow")
    response = httpx.post(f"{server.url}/api/predict/pillow", timeout=60,
                          files={"images": ("a.png", png_bytes(5, 3), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["results"] == [{"size": [5, 3], "mode": "RGB"}]
    assert body["pillow"] == PILLOW != PIL.__version__  # its own Pillow, not the server's
    assert body["label"] == "Image Info Service"  # inflection, which the server's venv does not have
    bad = httpx.post(f"{server.url}/api/predict/pillow", timeout=60, files={"images": ("b.png", b"not png")})
    assert bad.status_code == 500 and "UnidentifiedImageError" in bad.text


def test_a_packages_service_hooks_run_in_its_environment(server: RunningServer) -> None:
    wait_ready(server, "hooks")
    response = httpx.post(f"{server.url}/api/predict/hooks", json={"x": [1, 2, 3]}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json() == {"total": 6.0, "numpy": NUMPY_1}
    bad = httpx.post(f"{server.url}/api/predict/hooks", content=b"{not json", timeout=60,
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    missing = httpx.post(f"{server.url}/api/predict/hooks", json={"y": 1}, timeout=60)
    assert missing.status_code == 500 and "KeyError" in missing.text
    keys = {r["name"]: r for r in httpx.post(f"{server.url}/v2/repository/index", timeout=30).json()}
    assert keys["hooks"]["state"] == "READY"


def test_a_model_whose_environment_cannot_be_built_is_not_ready_with_the_reason(server: RunningServer) -> None:
    wait_ready(server, "addition")  # the rest of the server serves
    wait_ready(server, "np1")
    assert httpx.get(f"{server.url}/v2/models/broken/ready", timeout=5).status_code != 200
    rows = httpx.post(f"{server.url}/v2/repository/index", timeout=30).json()
    broken = next(r for r in rows if r["name"] == "broken")
    assert broken["state"] != "READY"
    assert "environment cannot be built" in broken["reason"] and NO_SUCH_PACKAGE in broken["reason"], broken
    refused = httpx.post(f"{server.url}/api/predict/broken", timeout=30, json={})
    assert refused.status_code == 503 and NO_SUCH_PACKAGE in refused.text


def worker_pids(server: RunningServer, model: str) -> list[int]:
    """The server's worker processes for ``model`` (their MODELPOD_WORKER label names it)."""
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])
        if parent == server.process.pid and f"MODELPOD_WORKER=model '{model}' worker".encode() in b"\0".join(environ):
            found.append(pid)
    return found


def test_kill_9_of_an_isolated_worker_recovers(server: RunningServer) -> None:
    wait_ready(server, "np1")
    (victim,) = worker_pids(server, "np1")
    os.kill(victim, signal.SIGKILL)

    def answered() -> dict[str, np.ndarray] | None:
        try:
            return infer_numpy(server, "np1")
        except Exception:  # noqa: BLE001 - 503 while the worker restarts
            return None

    out = wait_until(answered, "the restarted worker to answer", timeout=120)
    assert out["numpy"].tolist() == [NUMPY_1.encode()]
    (successor,) = worker_pids(server, "np1")
    assert successor != victim
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'modelpod_instance_restarts_total{model="np1"' in metrics


def test_a_second_start_reuses_the_environments_without_network(
        server: RunningServer, tmp_path: Path, numpy_packages: dict[str, Path]) -> None:
    for name in ("np1", "np2", "pillow"):
        wait_ready(server, name)  # the first server built them
    home = Path(os.environ["MODELPOD_HOME"]) / "envs"
    before = sorted(p.name for p in home.iterdir())
    repo = build_repo(tmp_path / "repo", numpy_packages, broken=False)
    offline = {"UV_OFFLINE": "1", "UV_INDEX_URL": "http://127.0.0.1:9/simple", "UV_DEFAULT_INDEX":
               "http://127.0.0.1:9/simple", "MODELPOD_UV": "/bin/false"}  # uv is not even run
    second = start_server(repo, tmp_path, env=offline, ready_timeout=120)
    try:
        assert infer_numpy(second, "np1")["numpy"].tolist() == [NUMPY_1.encode()]
        assert infer_numpy(second, "np2")["numpy"].tolist() == [NUMPY_2.encode()]
        response = httpx.post(f"{second.url}/api/predict/pillow", timeout=60,
                              files={"images": ("a.png", png_bytes(2, 2), "image/png")})
        assert response.json()["pillow"] == PILLOW
    finally:
        second.stop()
    assert sorted(p.name for p in home.iterdir()) == before  # nothing new was built
    assert "creating environment" not in second.log(), second.log()
