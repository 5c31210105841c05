"""One Ray Serve deployment per model, sized by each model's own settings, behind the router.

A real local Ray (2 CPUs) serves a repository whose models ask for different replica counts: the
EAS keys (``instance: 2``, ``cpu``) for one, a ``ray`` object for another, nothing for the third.
Clients reach them through Ray's HTTP and gRPC proxies and get what plain ``modelpod serve`` gives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.addition import pack_addition
from tests.helpers.packages import pack_code
from tests.helpers.ray_cluster import local_serve
from tests.helpers.sched_models import wait_until
from tests.helpers.servers import RunningServer, module_server

ray = pytest.importorskip("ray")  # the ray extra is part of `make test`: this only guards a bare venv
from ray import serve  # noqa: E402

import modelpod.ray  # noqa: E402

pytestmark = pytest.mark.timeout(300)
TOKEN = "per-model-secret"
GRPC_TARGET: list[str] = []

WHOAMI = """
    import os

    import numpy as np

    def get_model(data_dir):
        return lambda x: {"pid": np.array([os.getpid()], dtype=np.int64)}
"""
PID_IN = [{"name": "x", "dtype": "float32", "shape": (1,)}]
PID_OUT = [{"name": "pid", "dtype": "int64", "shape": (1,)}]


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("raymodels") / "repo"
    pack_addition(repo / "addition")  # no settings of its own: the app's options
    pack_code(repo / "twice" / "1", "twice", WHOAMI, PID_IN, PID_OUT)
    (repo / "twice" / "serving.json").write_text(json.dumps({"metadata": {"instance": 2, "cpu": 0.25}}))
    pack_code(repo / "once" / "1", "once", WHOAMI, PID_IN, PID_OUT)
    (repo / "once" / "serving.json").write_text(json.dumps({"metadata": {"ray": {"replicas": 1, "num_cpus": 0.2}}}))
    return repo


@pytest.fixture(scope="module")
def plain(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from module_server(tmp_path_factory, repo, "--token", TOKEN, "--no-shared-memory")  # Ray has none


@pytest.fixture(scope="module")
def proxy(repo: Path) -> Iterator[str]:
    with local_serve(grpc=True) as proxies:
        assert proxies.grpc is not None
        GRPC_TARGET.append(proxies.grpc)
        options = modelpod.ray.DeploymentOptions(ray_actor_options={"num_cpus": 0.25})
        serve.run(modelpod.ray.app(repo, options=options, token=TOKEN), name="modelpod", route_prefix="/")
        yield proxies.http


def pids(proxy: str, model: str, calls: int) -> set[int]:
    client = triton_http.InferenceServerClient(proxy)
    x = triton_http.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.zeros(1, np.float32))
    return {int(client.infer(model, [x], headers=auth()).as_numpy("pid")[0]) for _ in range(calls)}


def test_each_model_gets_the_replicas_its_settings_ask_for(proxy: str) -> None:
    deployments = serve.status().applications["modelpod"].deployments
    replicas = {name: sum(d.replica_states.values()) for name, d in deployments.items()}
    assert replicas == {"modelpod": 1, "modelpod-addition": 1, "modelpod-twice": 2, "modelpod-once": 1}
    seen: set[int] = set()

    def both_replicas_answer() -> bool:
        seen.update(pids(proxy, "twice", 4))
        return len(seen) == 2

    wait_until(both_replicas_answer, "answers from both replicas of 'twice'")
    once = pids(proxy, "once", 8)
    assert len(once) == 1 and not once & seen  # its own single replica, another process


def test_replicas_get_the_resources_their_model_asks_for(proxy: str) -> None:
    cpus = {model: serve.get_deployment_handle(f"modelpod-{model}", "modelpod").resources.remote().result()["CPU"]
            for model in ("addition", "twice", "once")}
    assert cpus == {"addition": 0.25, "twice": 0.25, "once": 0.2}  # the app's options, cpu, ray.num_cpus
    assert ray.available_resources()["CPU"] == pytest.approx(2 - 0.25 - 2 * 0.25 - 0.2)  # the router takes none


CASES = [  # (method, path, authorized, json body): answered alike through the router and by plain serve
    ("POST", "/v2/models/addition/infer", True, {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]},
        {"name": "y", "datatype": "FP32", "shape": [2], "data": [3, 4]}]}),
    ("POST", "/v2/models/addition/infer", True, {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                                                              "data": [1, 2]}]}),
    ("POST", "/v2/models/addition/infer", False, {"inputs": []}),
    ("POST", "/v1/models/addition:predict", True, {"inputs": {"x": [1, 2], "y": [3, 4]}}),
    ("GET", "/v2/models/nope/ready", True, None),
    ("POST", "/v2/models/nope/infer", True, {"inputs": []}),
    ("GET", "/v2/models/once", True, None),
    ("GET", "/v2/models/twice/versions/7", True, None),
    ("GET", "/v2/health/ready", False, None),
    ("GET", "/v2/health/live", False, None),
    ("GET", "/v2", False, None),
    ("GET", "/nowhere", False, None),
    ("POST", "/api/predict/addition", False, None),
]


@pytest.mark.parametrize("method, path, authorized, body", CASES)
def test_the_router_answers_as_plain_serve(proxy: str, plain: RunningServer, method: str, path: str,
                                           authorized: bool, body: object) -> None:
    headers = auth() if authorized else {}
    via_ray = httpx.request(method, f"http://{proxy}{path}", json=body, headers=headers, timeout=30)
    direct = httpx.request(method, f"{plain.url}{path}", json=body, headers=headers, timeout=30)
    assert (via_ray.status_code, via_ray.content) == (direct.status_code, direct.content)
    assert via_ray.headers.get("content-type") == direct.headers.get("content-type")


def test_the_repository_index_lists_every_deployments_models(proxy: str, plain: RunningServer) -> None:
    via_ray = httpx.post(f"http://{proxy}/v2/repository/index", headers=auth(), timeout=30)
    direct = httpx.post(f"{plain.url}/v2/repository/index", headers=auth(), timeout=30)
    assert via_ray.status_code == direct.status_code == 200
    assert sorted(via_ray.json(), key=lambda e: e["name"]) == sorted(direct.json(), key=lambda e: e["name"])
    assert httpx.post(f"http://{proxy}/v2/repository/index", timeout=30).status_code == 401


def test_metrics_of_every_deployment_in_one_valid_exposition(proxy: str) -> None:
    assert httpx.get(f"http://{proxy}/metrics", timeout=30).status_code == 401
    pids(proxy, "once", 1)
    text = httpx.get(f"http://{proxy}/metrics", headers=auth(), timeout=30).text
    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses: HELP/TYPE once each
    requests = [s for s in families["modelpod_requests"].samples if s.name == "modelpod_requests_total"]
    assert {s.labels["deployment"] for s in requests} >= {"once"}
    assert {s.labels["deployment"] for s in families["modelpod_queue_depth"].samples} == {"addition", "twice", "once"}
    assert any(s.labels["model"] == "once" and s.labels["deployment"] == "once" and s.value >= 1 for s in requests)


def test_tritonclient_grpc_through_the_router(proxy: str) -> None:
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    client = triton_grpc.InferenceServerClient(GRPC_TARGET[0])
    headers = {"application": "modelpod", **auth()}
    x = np.arange(8, dtype=np.float32)
    inputs = []
    for name in ("x", "y"):
        tensor = triton_grpc.InferInput(name, [8], "FP32")
        tensor.set_data_from_numpy(x)
        inputs.append(tensor)
    np.testing.assert_array_equal(client.infer("addition", inputs, headers=headers).as_numpy("out"), x + x)
    assert client.is_server_ready(headers=headers)
    assert client.is_model_ready("twice", headers=headers)
    assert [o.name for o in client.get_model_metadata("once", headers=headers).outputs] == ["pid"]
    with pytest.raises(InferenceServerException) as refused:
        client.infer("addition", inputs, headers={"application": "modelpod"})
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", inputs, headers=headers)
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert "addition, once, twice" in unknown.value.message()
