"""A Ray cluster of three nodes on this machine (a head and two worker nodes, each its own raylet,
as ``ray start`` on separate machines would make): replicas of one model land on both worker
nodes, and requests through the head's proxy reach both.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.addition import pack_addition
from tests.helpers.packages import pack_code
from tests.helpers.sched_models import wait_until
from tests.helpers.servers import free_port

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import modelpod.ray  # noqa: E402

pytestmark = pytest.mark.timeout(300)

WHERE = """
    import numpy as np
    import ray

    def get_model(data_dir):
        node = ray.get_runtime_context().get_node_id()
        return lambda x: {"node": np.array([node], dtype=object)}
"""


@pytest.fixture(scope="module")
def cluster_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, set[str]]]:
    repo = tmp_path_factory.mktemp("multinode") / "repo"
    pack_code(repo / "where" / "1", "where", WHERE, [{"name": "x", "dtype": "float32", "shape": (1,)}],
              [{"name": "node", "dtype": "string", "shape": (1,)}])
    (repo / "where" / "serving.json").write_text(json.dumps({"metadata": {"ray": {"replicas": 2, "num_cpus": 1}}}))
    pack_addition(repo / "addition")
    temp = tempfile.mkdtemp(prefix="mpmn", dir="/tmp")
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                                "temp_dir": temp})
        workers = {cluster.add_node(num_cpus=1).node_id, cluster.add_node(num_cpus=1).node_id}
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
        options = modelpod.ray.DeploymentOptions(ray_actor_options={"num_cpus": 0})
        serve.run(modelpod.ray.app(repo, options=options), name="modelpod", route_prefix="/")
        yield f"127.0.0.1:{port}", workers
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            if cluster is not None:
                cluster.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def test_replicas_on_two_nodes_answer_through_the_heads_proxy(cluster_proxy: tuple[str, set[str]]) -> None:
    proxy, workers = cluster_proxy
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}]}
    seen: set[str] = set()

    def both_nodes_answer() -> bool:
        answer = httpx.post(f"http://{proxy}/v2/models/where/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        seen.add(answer.json()["outputs"][0]["data"][0])
        return len(seen) == 2

    wait_until(both_nodes_answer, "answers from replicas on both worker nodes")
    assert seen == workers  # one replica per worker node: each needs a whole CPU, each node has one
    added = httpx.post(f"http://{proxy}/v2/models/addition/infer", timeout=30, json={"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]},
        {"name": "y", "datatype": "FP32", "shape": [2], "data": [3, 4]}]})
    assert added.json()["outputs"][0]["data"] == [4.0, 6.0]
