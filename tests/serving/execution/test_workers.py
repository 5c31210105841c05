"""Worker-process instances on the real server: kill -9 / segfault of a worker mid-load fails only
the request it was running, the worker comes back without a server restart, and unloading the
model ends its worker process.

Counting models log ``<pid> <tag> <value>`` per call (tests/sched_models.py), which names the
worker process to kill and the request that was in flight; a gate file holds that request in the
model while the worker is killed, so "in flight" is a fact, not a race.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers.servers import RunningServer, start_server
from tests.helpers.sched_models import (
    SCHED_DIR_ENV, alive, calls, metric, pack_counter, parent_of, v2_body, wait_until, write_config,
)

pytestmark = pytest.mark.timeout(180)

CLIENTS = 4


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    root = tmp_path_factory.mktemp("workers")
    folder = root / "calls"
    folder.mkdir()
    pack_counter(root / "models" / "w", "w", sleep_ms=20)
    pack_counter(root / "models" / "seg", "seg")
    config = write_config(root / "services.json", [
        {"name": name, "model_path": f"models/{name}",
         "metadata": {"worker": "process", "instance": 1, "rpc.keepalive": 60000}}
        for name in ("w", "seg")
    ])
    server = start_server(config, root, "--model-control", env={SCHED_DIR_ENV: str(folder)})
    try:
        yield server, folder
    finally:
        server.stop(signal.SIGTERM, timeout=15)


def infer(server: RunningServer, model: str, x: np.ndarray) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=v2_body(x), timeout=60)


def shm_segments(pid: int) -> set[str]:
    """Names of the shared-memory segments ``pid`` has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.rsplit("/", 1)[1].split(" ")[0] for line in maps.splitlines() if "/dev/shm/" in line}


def worker_pids(folder: Path, tag: str) -> list[int]:
    seen: list[int] = []
    for pid, _ in calls(folder, tag):
        if pid not in seen:
            seen.append(pid)
    return seen


def test_segfault_fails_only_its_request_and_the_worker_comes_back(workers) -> None:
    server, folder = workers
    x = np.arange(1 << 20, dtype=np.float32)  # 4 MiB through shared memory, both ways
    response = infer(server, "seg", x)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(np.array(response.json()["outputs"][0]["data"], np.float32), x + 1)
    (first_pid,) = worker_pids(folder, "seg")
    assert parent_of(first_pid) == server.process.pid  # a worker process of this server

    response = infer(server, "seg", np.array([-11, 0], np.float32))
    assert response.status_code == 503, response.text
    message = response.json()["error"]
    assert "died" in message and "-11" in message, message
    # the next request waits for the restarted worker and succeeds: no server restart
    response = infer(server, "seg", np.array([5, 6], np.float32))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [6.0, 7.0]
    pids = worker_pids(folder, "seg")
    assert len(pids) == 2 and pids[1] != first_pid and not alive(first_pid)
    assert parent_of(pids[1]) == server.process.pid
    assert server.process.poll() is None
    assert metric(server.url, "modelpod_instance_restarts_total", model="seg") == 1


def test_kill_9_mid_load_fails_only_the_request_in_flight(workers) -> None:
    server, folder = workers
    gate = folder / "w.hold"
    stop = threading.Event()
    results: list[tuple[float, int, str]] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for i in range(2000):  # bounded; stopped by the test long before
            if stop.is_set():
                return
            value = float(index * 10000 + i)
            response = infer(server, "w", np.array([value, 1], np.float32))
            if response.status_code == 200:
                assert response.json()["outputs"][0]["data"] == [value + 1, 2.0]
            with lock:
                results.append((value, response.status_code, response.text))

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, i) for i in range(CLIENTS)]
        try:
            wait_until(lambda: len(results) >= 20, "load to get going")
            (victim,) = worker_pids(folder, "w")
            assert parent_of(victim) == server.process.pid
            gate.touch()
            logged = len(calls(folder, "w"))
            # the next call to reach the model is held there: it is the one in flight
            wait_until(lambda: len(calls(folder, "w")) > logged, "a request to be held in the model")
            in_flight = calls(folder, "w")[-1]
            assert in_flight[0] == victim
            victim_segments = shm_segments(victim)  # the server's request segment and its own answer one
            assert len(victim_segments) == 2
            os.kill(victim, signal.SIGKILL)
            gate.unlink()
            wait_until(lambda: len(worker_pids(folder, "w")) == 2, "the restarted worker to take requests")
            after = len(results)
            wait_until(lambda: len(results) >= after + 20, "more requests after the restart")
        finally:
            stop.set()
            gate.unlink(missing_ok=True)
            for future in futures:
                future.result(timeout=60)

    failed = [r for r in results if r[1] != 200]
    assert len(failed) == 1, failed
    value, status, text = failed[0]
    assert value == float(in_flight[1])  # exactly the request the worker was running
    assert status == 503
    assert "died" in text and "exit code -9" in text, text
    assert len(results) >= 40
    new_pid = worker_pids(folder, "w")[1]
    assert new_pid != victim and not alive(victim)
    assert parent_of(new_pid) == server.process.pid
    assert server.process.poll() is None
    assert metric(server.url, "modelpod_instance_restarts_total", model="w") == 1
    # the dead worker's answer segment was unlinked, not leaked in /dev/shm; the request one lives on
    (remaining,) = [name for name in victim_segments if Path("/dev/shm", name).exists()]
    assert remaining in shm_segments(server.process.pid)


def test_unloading_ends_the_worker_process(workers) -> None:
    server, folder = workers
    assert infer(server, "w", np.array([1, 2], np.float32)).status_code == 200
    pid = worker_pids(folder, "w")[-1]
    assert alive(pid)
    segments = shm_segments(pid)
    assert segments and all(Path("/dev/shm", name).exists() for name in segments)
    response = httpx.post(f"{server.url}/v2/repository/models/w/unload", timeout=60)
    assert response.status_code == 200, response.text
    wait_until(lambda: not alive(pid), "the worker process to exit")
    # its shared memory went back too: the request and answer segments are unlinked
    assert not [name for name in segments if Path("/dev/shm", name).exists()]
    assert infer(server, "w", np.array([1, 2], np.float32)).status_code == 404
    assert infer(server, "seg", np.array([1, 2], np.float32)).status_code == 200  # the other model serves on
    # and loading it again starts a fresh worker
    response = httpx.post(f"{server.url}/v2/repository/models/w/load", timeout=60)
    assert response.status_code == 200, response.text
    response = infer(server, "w", np.array([3, 4], np.float32))
    assert response.status_code == 200, response.text
    new_pid = worker_pids(folder, "w")[-1]
    assert new_pid != pid and alive(new_pid) and parent_of(new_pid) == server.process.pid
    assert "resource_tracker" not in server.log() and "Traceback" not in server.log(), server.log()


def test_unloading_while_a_worker_restarts_leaves_no_worker_running(tmp_path: Path) -> None:
    """stop() racing the watcher's restart: the successor that finishes loading afterwards is stopped."""
    import time

    from modelpod.serving.execution.workers import ProcessInstance
    from tests.helpers.packages import pack_code

    gate = tmp_path / "slow-load"
    body = f"""
        import os, time
        from pathlib import Path

        def get_model(data_dir):
            if os.environ.get("MODELPOD_WORKER") and Path({str(gate)!r}).exists():
                time.sleep(3)  # the successor is still loading when the instance is stopped
            return lambda x: {{"y": x}}
    """
    spec = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    package = pack_code(tmp_path / "slow", "slow", body, spec, [{**spec[0], "name": "y"}])
    instance = ProcessInstance(package, "slow", 0)
    instance.start()
    first = instance.pid
    gate.touch()
    os.kill(first, signal.SIGKILL)
    time.sleep(1.0)  # the watcher is now starting a successor, which sleeps in get_model
    instance.stop()
    time.sleep(4.0)  # the successor has finished loading by now
    assert instance.worker is None or not instance.worker.alive()
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_worker_of(int(pid), "slow")]


def _is_worker_of(pid: int, model: str) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    parent = int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])
    zombie = "State:\tZ" in status
    return parent == os.getpid() and not zombie and f"MODELPOD_WORKER=model '{model}' worker".encode() in environ
