"""Shutdown and crash clean-up on the real server, with worker processes.

* A SIGTERM / SIGINT sent to the server's whole process group (Ctrl-C, systemd) leaves the workers
  alone: the server drains what is in flight, then stops them itself; nothing is restarted.
* A worker never outlives its server: killed with SIGKILL, the server's pipe closes and the worker exits.
* SIGKILL of the whole group leaves shared-memory segments and an archive's extraction folder behind;
  both carry the dead server's pid, and the next ``modelpod serve`` removes them (never a live pid's).
* Under ``--watch``, a new version whose worker was killed during warm-up is retried (with backoff)
  and comes up READY without its files changing.

Counting models log ``<pid> <tag> <value>`` per call and hold while ``<tag>.hold`` exists
(tests/sched_models.py), so "in flight" and "in warm-up" are facts, not races.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers.servers import RunningServer
from modelpod.package.archive import write_archive
from tests.helpers.sched_models import (
    SCHED_DIR_ENV, _pack, alive, calls, metric, pack_counter, v2_body, wait_until, write_config,
)

pytestmark = pytest.mark.timeout(240)

SHM = Path("/dev/shm")
needs_shm = pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm")


def infer(server: RunningServer, model: str, value: float) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=v2_body(np.array([value, 1], np.float32)),
                      timeout=90)


def owned(folder: Path, pid: int) -> list[Path]:
    """``modelpod-<pid>-*`` entries of ``folder``."""
    return sorted(folder.glob(f"modelpod-{pid}-*"))


def shm_segments(pid: int) -> set[str]:
    """Names of the shared-memory segments ``pid`` has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.rsplit("/", 1)[1].split(" ")[0] for line in maps.splitlines() if "/dev/shm/" in line}


def worker_config(root: Path, tag: str, model_path: str, instances: int = 1) -> Path:
    return write_config(root / "services.json", [
        {"name": tag, "model_path": model_path,
         "metadata": {"worker": "process", "instance": instances, "rpc.keepalive": 90000}},
    ])


# -- (a) a signal to the whole group drains worker requests ---------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_group_signal_lets_in_flight_worker_requests_finish(tmp_path: Path, serve_factory, sig: int) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    pack_counter(tmp_path / "models" / "slow", "slow")
    config = worker_config(tmp_path, "slow", "models/slow", instances=2)
    server = serve_factory(config, env={SCHED_DIR_ENV: str(folder)})
    gate = folder / "slow.hold"
    gate.touch()
    values = [10.0, 20.0, 30.0]  # two held in the two workers, one queued behind them
    with ThreadPoolExecutor(len(values)) as pool:
        futures = [pool.submit(infer, server, "slow", v) for v in values]
        try:
            wait_until(lambda: len(calls(folder, "slow")) >= 2, "two requests to be held in the workers")
            wait_until(lambda: metric(server.url, "modelpod_in_flight", model="slow") == len(values),
                       "the third request to be queued")
            workers = sorted({pid for pid, _ in calls(folder, "slow")})
            assert len(workers) == 2 and all(alive(pid) for pid in workers)
            os.killpg(server.process.pid, sig)  # what Ctrl-C or systemd's KillMode=control-group does
            wait_until(lambda: "shutting down" in server.log(), "the server to begin shutting down")
            assert all(alive(pid) for pid in workers), "the signal reached the workers"
        finally:
            gate.unlink(missing_ok=True)
        responses = [future.result(timeout=90) for future in futures]
    for value, response in zip(values, responses):
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [value + 1, 2.0]
    assert server.process.wait(60) == 0, server.log()
    log = server.log()
    assert "restarting" not in log and "died" not in log and "Traceback" not in log, log
    wait_until(lambda: not any(alive(pid) for pid in workers), "the workers to exit")
    if SHM.is_dir():
        assert not owned(SHM, server.process.pid)  # a clean stop unlinks every segment


def test_a_worker_exits_when_its_server_is_killed(tmp_path: Path, serve_factory) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    pack_counter(tmp_path / "models" / "idle", "idle")
    server = serve_factory(worker_config(tmp_path, "idle", "models/idle"), env={SCHED_DIR_ENV: str(folder)})
    assert infer(server, "idle", 1.0).status_code == 200
    ((worker, _),) = calls(folder, "idle")
    os.kill(server.process.pid, signal.SIGKILL)  # the server alone: the idle worker sees EOF on its pipe
    server.process.wait(30)
    wait_until(lambda: not alive(worker), "the orphaned worker to exit")


# -- (b) SIGKILL leftovers are swept at the next start --------------------------------------------

@needs_shm
def test_sigkill_leftovers_are_removed_by_the_next_start(tmp_path: Path, serve_factory) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    private = tmp_path / "tmp"
    private.mkdir()
    pack_counter(tmp_path / "pkg", "k")
    write_archive(tmp_path / "pkg", tmp_path / "k.tar.gz")  # an archive: extracted under TMPDIR
    config = worker_config(tmp_path, "k", "k.tar.gz")
    env = {"TMPDIR": str(private), SCHED_DIR_ENV: str(folder)}
    server = serve_factory(config, env=env)
    assert infer(server, "k", 1.0).status_code == 200  # segments both ways
    pid = server.process.pid
    ((worker, _),) = calls(folder, "k")
    worker_shm = shm_segments(worker)
    assert worker_shm and all(name.startswith(f"modelpod-{pid}-") for name in worker_shm), worker_shm

    assert server.stop(signal.SIGKILL) == -signal.SIGKILL  # the whole group, resource tracker included
    # look at once: /dev/shm is shared, and any other modelpod server starting now sweeps it too
    shm_left, tmp_left = owned(SHM, pid), owned(private, pid)
    assert {p.name for p in shm_left} >= worker_shm and len(shm_left) >= 2, shm_left  # request + answer
    assert len(tmp_left) == 1 and tmp_left[0].is_dir(), tmp_left  # the extraction folder
    wait_until(lambda: not alive(worker), "the worker to die with its group")

    # what a live process owns is left alone (this test process stands in for a running server)
    live_shm = SHM / f"modelpod-{os.getpid()}-sweeptest"
    live_tmp = private / f"modelpod-{os.getpid()}-sweeptest"
    live_shm.write_bytes(b"x")
    live_tmp.mkdir()
    try:
        second = serve_factory(config, env=env)
        assert not [p for p in shm_left + tmp_left if p.exists()], second.log()
        assert live_shm.exists() and live_tmp.is_dir()
        assert f"removed {tmp_left[0]}" in second.log(), second.log()  # each removal is logged
        assert infer(second, "k", 2.0).status_code == 200
        assert owned(private, second.process.pid)  # its own extraction folder, marked with its pid
    finally:
        live_shm.unlink(missing_ok=True)
        live_tmp.rmdir()


def test_remove_stale_takes_only_dead_pids_entries(tmp_path: Path) -> None:
    from modelpod.serving.execution.stale import remove_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: no process has this pid now
    tmpdir, shm = tmp_path / "tmp", tmp_path / "shm"
    for folder in (tmpdir, shm):
        folder.mkdir()
    gone = [tmpdir / f"modelpod-{dead.pid}-abc", shm / f"modelpod-{dead.pid}-0123abcd"]
    gone[0].mkdir()
    (gone[0] / "pkg").mkdir()
    (gone[0] / "pkg" / "file").write_text("x")
    gone[1].write_bytes(b"x")
    kept = [tmpdir / f"modelpod-{os.getpid()}-abc", shm / f"modelpod-{os.getpid()}-0123abcd",
            tmpdir / "modelpod-eas-venv-1.lock", tmpdir / f"modelpod{dead.pid}-x", shm / "psm_1234"]
    kept[0].mkdir()
    for path in kept[1:]:
        path.write_bytes(b"x")
    (tmpdir / f"modelpod-{dead.pid}-link").symlink_to(kept[0])  # never followed

    removed = remove_stale(tmpdir, shm)
    assert sorted(removed) == sorted(str(p) for p in gone)
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)
    assert remove_stale(tmpdir, shm) == [] and remove_stale(tmp_path / "missing", tmp_path / "none") == []


# -- (c) a version whose worker died in warm-up is retried under --watch ---------------------------

def pack_held_in_worker(path: Path, version: int) -> Path:
    """``y = x + 1000 * version``; loading it in a worker process logs a call and waits on ``warm.hold``."""
    body = f"""
        import os

        def get_model(data_dir):
            if os.environ.get("MODELPOD_WORKER"):  # a worker process, not the server
                _record("warm", {version})
                _hold("warm")
            def versioned(x):
                return {{"y": x + {1000.0 * version}}}
            return versioned
    """
    spec_in = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    spec_out = [{"name": "y", "dtype": "float32", "shape": (None,)}]
    return _pack(path, "r", body, spec_in, spec_out)


def test_a_version_whose_worker_died_in_warm_up_is_retried_under_watch(tmp_path: Path, serve_factory) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    pack_held_in_worker(staging / "r1", 1)
    (repo / "r").mkdir(parents=True)
    os.rename(staging / "r1", repo / "r" / "1")
    (repo / "r" / "serving.json").write_text('{"metadata": {"worker": "process", "rpc.keepalive": 60000}}')
    server = serve_factory(repo, "--watch", "--watch-interval", "0.2", env={SCHED_DIR_ENV: str(folder)})
    url = f"{server.url}/v2/models/r/infer"
    assert httpx.post(url, json=v2_body(np.array([0], np.float32)), timeout=30).json()["outputs"][0]["data"] == [1000.0]
    assert len(calls(folder, "warm")) == 1

    gate = folder / "warm.hold"
    gate.touch()
    try:
        pack_held_in_worker(staging / "r2", 2)
        os.rename(staging / "r2", repo / "r" / "2")
        wait_until(lambda: len(calls(folder, "warm")) == 2, "version 2's worker to be held in warm-up")
        victim = calls(folder, "warm")[-1][0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: "version 2: warm-up failed" in server.log(), "the warm-up failure")
    finally:
        gate.unlink(missing_ok=True)
    # the same files, retried: version 2 comes up and serves
    wait_until(lambda: httpx.get(f"{server.url}/v2/models/r/versions/2/ready", timeout=10).status_code == 200,
               "version 2 to be retried and come up", timeout=90)
    response = httpx.post(url, json=v2_body(np.array([0], np.float32)), timeout=30)
    assert response.json()["outputs"][0]["data"] == [2000.0]
    retried = calls(folder, "warm")[2:]
    assert retried and all(pid != victim for pid, _ in retried)
    rows = httpx.post(f"{server.url}/v2/repository/index", timeout=30).json()
    assert {"name": "r", "version": "2", "state": "READY", "reason": ""} in rows, rows
    assert "retrying" in server.log(), server.log()


def test_a_model_that_failed_at_start_is_retried_under_watch(tmp_path: Path, serve_factory) -> None:
    """Its warm-up failed for a reason outside the package (a missing resource); once that is
    fixed, --watch brings it up without its files changing."""
    from tests.helpers.packages import pack_code

    flag = tmp_path / "broken"
    flag.touch()
    main = """
        import os

        def get_model(data_dir):
            def guarded(x):
                if os.path.exists(os.environ["RETRY_FLAG"]):
                    raise RuntimeError("the resource this model needs is missing")
                return {"y": x}
            return guarded
    """
    x = np.arange(3, dtype=np.float32)
    spec = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    os.environ["RETRY_FLAG"] = str(tmp_path / "absent-while-packing")
    try:
        package = pack_code(tmp_path / "repo" / "g" / "1", "g", main, spec,
                            [{"name": "y", "dtype": "float32", "shape": (None,)}], {"x": x}, {"y": x})
    finally:
        del os.environ["RETRY_FLAG"]
    server = serve_factory(package.parent.parent, "--watch", "--watch-interval", "0.2", wait_ready=False,
                           env={"RETRY_FLAG": str(flag)})
    ready = f"{server.url}/v2/models/g/ready"
    wait_until(lambda: "retrying" in server.log(), "a retry of the failed model")
    assert httpx.get(ready, timeout=10).status_code == 400
    flag.unlink()
    wait_until(lambda: httpx.get(ready, timeout=10).status_code == 200, "the model to come up", timeout=90)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    assert httpx.post(f"{server.url}/v2/models/g/infer", json=body).json()["outputs"][0]["data"] == [1.0, 2.0]
