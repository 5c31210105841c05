"""Lifecycle on Ray Serve under constant load: a new version rolls out inside the replicas (modelpod's
own zero-drop swap, ``watch_s``) with no failed request; a SIGKILLed replica is replaced and fails at
most the requests it held; rescaling 1 -> 2 -> 1 fails nothing. A real local Ray instance."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.packages import pack_code
from tests.helpers.ray_cluster import local_serve
from tests.helpers.sched_models import wait_until

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

import modelpod.ray  # noqa: E402

pytestmark = pytest.mark.timeout(300)
VERSIONED = """
    import os

    import numpy as np

    def get_model(data_dir):
        return lambda x: {{"y": x + {offset}, "pid": np.array([os.getpid()], dtype=np.int64)}}
"""
SPEC_IN = [{"name": "x", "dtype": "float32", "shape": (1,)}]
SPEC_OUT = [{"name": "y", "dtype": "float32", "shape": (1,)}, {"name": "pid", "dtype": "int64", "shape": (1,)}]
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]}]}


def pack_version(folder: Path, version: int) -> Path:
    staging = folder.parent.parent / f"staging-{version}"
    pack_code(staging, "r", VERSIONED.format(offset=1000.0 * version), SPEC_IN, SPEC_OUT)
    folder.mkdir(parents=True, exist_ok=True)
    os.rename(staging, folder / str(version))  # appears whole: a watcher never sees it half-written
    return folder / str(version)


class Load:
    """Clients sending requests back to back until stopped; every answer and failure is kept."""

    def __init__(self, url: str, clients: int = 2) -> None:
        self.url = url
        self.answers: list[tuple[float, int]] = []  # (y, replica pid)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self.url}/v2/models/r/infer", json=BODY)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text[:200]}")
                        continue
                    outputs = {o["name"]: o["data"][0] for o in response.json()["outputs"]}
                    self.answers.append((outputs["y"], int(outputs["pid"])))
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_for(self, check: Callable[[list[tuple[float, int]]], bool], what: str) -> None:
        wait_until(lambda: check(self.answers[-40:]), what, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    repo = tmp_path_factory.mktemp("ray-life") / "repo"
    pack_version(repo / "r", 1)
    with local_serve() as proxies:
        deploy(repo, 2)
        yield f"http://{proxies.http}", repo


def deploy(repo: Path, replicas: int) -> None:
    options = modelpod.ray.DeploymentOptions(replicas=replicas, ray_actor_options={"num_cpus": 0.25})
    serve.run(modelpod.ray.app(repo, options=options, watch_s=0.3), name="modelpod", route_prefix="/")


def replicas_running() -> int:
    status = serve.status().applications["modelpod"].deployments["modelpod"]
    return status.replica_states.get("RUNNING", 0)


def test_a_new_version_rolls_out_inside_the_replicas_with_no_failed_request(cluster: tuple[str, Path]) -> None:
    url, repo = cluster
    with Load(url) as load:
        load.wait_for(lambda last: len({pid for _, pid in last}) == 2 and all(y == 1000.0 for y, _ in last),
                      "both replicas on version 1")
        pack_version(repo / "r", 2)
        load.wait_for(lambda last: len(last) == 40 and all(y == 2000.0 for y, _ in last), "version 2 everywhere")
    assert load.failures == []
    assert {pid for y, pid in load.answers if y == 2000.0} == {pid for y, pid in load.answers if y == 1000.0}


def test_a_sigkilled_replica_is_replaced_and_fails_only_what_it_held(cluster: tuple[str, Path]) -> None:
    url, _ = cluster
    with Load(url, clients=2) as load:
        load.wait_for(lambda last: len({pid for _, pid in last}) == 2, "both replicas answering")
        victim = load.answers[-1][1]
        os.kill(victim, signal.SIGKILL)
        load.wait_for(lambda last: len({pid for _, pid in last} - {victim}) == 2, "a replacement replica")
    assert len(load.failures) <= 2, load.failures  # at most the requests the dead replica held


def test_rescaling_1_2_1_under_load_fails_nothing(cluster: tuple[str, Path]) -> None:
    url, repo = cluster
    with Load(url) as load:
        for replicas in (1, 2, 1):
            deploy(repo, replicas)
            wait_until(lambda: replicas_running() == replicas, f"{replicas} running replica(s)", timeout=120)
            count = len(load.answers)
            wait_until(lambda: len(load.answers) >= count + 20, "20 answers at this scale")
    assert load.failures == [], load.failures[:5]
