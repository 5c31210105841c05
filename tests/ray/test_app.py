"""modelpod on Ray Serve: a real local Ray instance, 2 replicas, real clients through Ray's HTTP proxy.

Ray starts once for this module (about 5-10 s here) and is shut down in teardown, also when a test
fails. Every replica builds the modelpod app itself from the repository path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.helpers.addition import pack_addition
from tests.helpers.eas_client import ensure_eas_python, run_sdk
from tests.helpers.packages import pack_code
from tests.helpers.ray_cluster import local_serve
from tests.helpers.sched_models import wait_until
from tests.helpers.servers import RunningServer, module_server

ray = pytest.importorskip("ray")  # the ray extra is part of `make test`: this only guards a bare venv
from ray import serve  # noqa: E402

import modelpod.ray  # noqa: E402

pytestmark = pytest.mark.timeout(300)
GRPC_TARGET: list[str] = []  # Serve's gRPC proxy, set by the fixture
TOKEN = "ray-secret"


def auth() -> dict[str, str]:
    """A fresh header dict each call (tritonclient adds its own headers to the dict it is given)."""
    return {"authorization": f"Bearer {TOKEN}"}


WHOAMI = """
    import os

    import numpy as np

    def get_model(data_dir):
        return lambda x: {"pid": np.array([os.getpid()], dtype=np.int64)}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("ray") / "repo"
    pack_addition(repo / "addition")
    pack_code(repo / "whoami", "whoami", WHOAMI, [{"name": "x", "dtype": "float32", "shape": (1,)}],
              [{"name": "pid", "dtype": "int64", "shape": (1,)}])
    return repo


@pytest.fixture(scope="module")
def plain(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The same repository on plain ``modelpod serve``: what the proxy must answer alike."""
    yield from module_server(tmp_path_factory, repo, "--token", TOKEN, "--no-shared-memory")  # Ray has none


@pytest.fixture(scope="module")
def proxy(repo: Path) -> Iterator[str]:
    with local_serve(grpc=True) as proxies:
        assert proxies.grpc is not None
        GRPC_TARGET.append(proxies.grpc)
        options = modelpod.ray.DeploymentOptions(replicas=2, ray_actor_options={"num_cpus": 0.5})
        serve.run(modelpod.ray.app(repo, options=options, token=TOKEN), name="modelpod", route_prefix="/")
        yield proxies.http


def addition_inputs(x: np.ndarray, y: np.ndarray) -> list[triton_http.InferInput]:
    inputs = []
    for name, value in (("x", x), ("y", y)):
        tensor = triton_http.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value, binary_data=True)
        inputs.append(tensor)
    return inputs


def test_tritonclient_binary_through_the_ray_proxy(proxy: str) -> None:
    client = triton_http.InferenceServerClient(proxy)
    x = np.arange(1000, dtype=np.float32)
    result = client.infer("addition", addition_inputs(x, x), headers=auth(),
                          outputs=[triton_http.InferRequestedOutput("out", binary_data=True)])
    np.testing.assert_array_equal(result.as_numpy("out"), x + x)
    assert client.is_model_ready("addition", headers=auth())
    metadata = client.get_model_metadata("addition", headers=auth())
    assert [i["name"] for i in metadata["inputs"]] == ["x", "y"]


CASES = [  # (method, path, headers, json body): answered alike by the proxy and by plain modelpod serve
    ("POST", "/v1/models/addition:predict", True, {"inputs": {"x": [1, 2], "y": [3, 4]}}),
    ("POST", "/v1/models/addition:predict", False, {"inputs": {"x": [1, 2], "y": [3, 4]}}),
    ("POST", "/v2/models/addition/infer", True, {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                                                              "data": [1, 2]}]}),
    ("POST", "/v2/models/addition/infer", True, {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                                                              "data": [1, 2]}, {"name": "y", "datatype": "INT8",
                                                              "shape": [2], "data": [1, 2]}]}),
    ("GET", "/v2/models/nope/ready", True, None),
    ("GET", "/v2/models/addition", True, None),
    ("GET", "/v1/models/addition", True, None),
    ("GET", "/v2/health/ready", False, None),
    ("GET", "/v2", False, None),
    ("POST", "/api/predict/addition", False, None),
]


@pytest.mark.parametrize("method, path, authorized, body", CASES)
def test_every_answer_is_the_plain_servers(proxy: str, plain: RunningServer, method: str, path: str,
                                           authorized: bool, body: object) -> None:
    headers = auth() if authorized else {}
    via_ray = httpx.request(method, f"http://{proxy}{path}", json=body, headers=headers, timeout=30)
    direct = httpx.request(method, f"{plain.url}{path}", json=body, headers=headers, timeout=30)
    assert (via_ray.status_code, via_ray.content) == (direct.status_code, direct.content)
    assert via_ray.headers.get("content-type") == direct.headers.get("content-type")


def test_the_eas_sdk_through_the_proxy(proxy: str) -> None:
    python = ensure_eas_python()
    feeds = [["x", [3], "DT_FLOAT", [1.0, 2.0, 3.0]], ["y", [3], "DT_FLOAT", [0.5, 0.25, 0.125]]]
    [result] = run_sdk(python, [{"endpoint": proxy, "service": "addition", "token": TOKEN, "request": {
        "type": "tf", "signature": "serving_default", "feeds": feeds, "fetches": ["out"]}}])
    assert result["ok"], result
    assert result["outputs"]["out"]["values"] == [1.5, 2.25, 3.125]


def test_a_replicas_metrics_through_the_proxy(proxy: str) -> None:
    assert httpx.get(f"http://{proxy}/metrics", timeout=30).status_code == 401  # the token protects them
    metrics = httpx.get(f"http://{proxy}/metrics", headers=auth(), timeout=30)
    assert metrics.status_code == 200 and "modelpod_queue_depth" in metrics.text  # the answering replica's


def test_two_replicas_answer(proxy: str) -> None:
    client = triton_http.InferenceServerClient(proxy)
    x = triton_http.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.zeros(1, np.float32))
    pids: set[int] = set()

    def both_seen() -> bool:
        pids.add(int(client.infer("whoami", [x], headers=auth()).as_numpy("pid")[0]))
        return len(pids) == 2

    wait_until(both_seen, "answers from two replica processes")  # each with its own copy of the models


def test_tritonclient_grpc_through_serves_grpc_proxy(proxy: str) -> None:
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    client = triton_grpc.InferenceServerClient(GRPC_TARGET[0])
    headers = {"application": "modelpod", **auth()}  # Serve routes by the application metadata
    x = np.arange(8, dtype=np.float32)
    inputs = []
    for name in ("x", "y"):
        tensor = triton_grpc.InferInput(name, [8], "FP32")
        tensor.set_data_from_numpy(x)
        inputs.append(tensor)
    result = client.infer("addition", inputs, headers=headers)
    np.testing.assert_array_equal(result.as_numpy("out"), x + x)
    assert client.is_model_ready("addition", headers=headers)
    assert [i.name for i in client.get_model_metadata("addition", headers=headers).inputs] == ["x", "y"]
    with pytest.raises(InferenceServerException) as refused:  # no token: the status plain serve gives
        client.infer("addition", inputs, headers={"application": "modelpod"})
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", inputs, headers=headers)
    assert unknown.value.status() == "StatusCode.NOT_FOUND"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="MIN:MAX"):
        modelpod.ray.deployment_options(autoscale="4")
    with pytest.raises(ValueError, match="at least 1"):
        modelpod.ray.DeploymentOptions(replicas=0)
    assert modelpod.ray.deployment_options(autoscale="1:3").serve_options()["autoscaling_config"] == {
        "min_replicas": 1, "max_replicas": 3, "initial_replicas": 1}
    with pytest.raises(ValueError, match="every Ray node"):
        modelpod.ray.app("/no/such/repository")
