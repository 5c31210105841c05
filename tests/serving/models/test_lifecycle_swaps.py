"""Versions, zero-drop swaps, failed loads, the repository API, warm-up and readiness, on the real server.

Swaps run under constant load from several client threads (bounded loops that stop a fixed number
of requests after the new version was first seen) and must not fail a single request. A version
is told apart by its answer: ``y = x + 1000 * version`` (tests/sched_models.py).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.sched_models import (
    SCHED_DIR_ENV,
    calls,
    eas_request,
    pack_broken,
    pack_counter,
    pack_versioned,
    v2_body,
    wait_until,
    write_bad_manifest,
    write_config,
)
from tests.helpers.servers import RunningServer
import time
from tests.helpers.addition import pack_addition

pytestmark = pytest.mark.timeout(180)

THREADS = 6
AFTER_SWITCH = 120  # requests each load run sends after the new version first answered


def answer_offset(client: httpx.Client, url: str, value: float) -> tuple[int, float | None]:
    response = client.post(url, json=v2_body(np.array([value, 1], np.float32)))
    if response.status_code != 200:
        return response.status_code, None
    data = response.json()["outputs"][0]["data"]
    offset = data[1] - 1.0
    assert data[0] - value == offset  # the request's own answer
    return 200, offset


def under_load(server: RunningServer, model: str, change: Callable[[], None], new_offset: float,
               ) -> list[list[tuple[int, float | None]]]:
    """Run ``change()`` while THREADS clients hammer ``model``; per-thread (status, offset) lists."""
    url = f"{server.url}/v2/models/{model}/infer"
    stop = threading.Event()
    per_thread: list[list[tuple[int, float | None]]] = [[] for _ in range(THREADS)]

    def client(index: int) -> None:
        with httpx.Client(timeout=60) as http:
            for i in range(20000):  # bounded; the test stops it long before
                if stop.is_set():
                    return
                per_thread[index].append(answer_offset(http, url, float(index * 100000 + i)))

    def total() -> int:
        return sum(len(r) for r in per_thread)

    def switched() -> bool:
        return any(off == new_offset for r in per_thread for _, off in list(r))

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(client, i) for i in range(THREADS)]
        try:
            wait_until(lambda: total() >= 60, "load to get going")
            change()
            wait_until(switched, "the new version to answer", timeout=90)
            seen = total()
            wait_until(lambda: total() >= seen + AFTER_SWITCH, "more requests after the switch")
        finally:
            stop.set()
            for future in futures:
                future.result(timeout=60)
    return per_thread


def assert_zero_drop_switch(per_thread: list[list[tuple[int, float | None]]], old: float, new: float) -> None:
    answered = [r for rows in per_thread for r in rows]
    failed = [r for r in answered if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(answered)} requests failed during the swap: {failed[:5]}"
    for rows in per_thread:
        offsets = [off for _, off in rows]
        assert set(offsets) <= {old, new}, set(offsets)
        if new in offsets:  # once a client saw the new version it never sees the old one again
            first_new = offsets.index(new)
            assert all(off == new for off in offsets[first_new:])
    assert any(off == old for _, off in answered) and any(off == new for _, off in answered)


def index(server: RunningServer) -> list[dict]:
    response = httpx.post(f"{server.url}/v2/repository/index", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def index_row(server: RunningServer, name: str, version: int) -> dict | None:
    return next((r for r in index(server) if r["name"] == name and r["version"] == str(version)), None)


def offset_now(server: RunningServer, model: str) -> float | None:
    with httpx.Client(timeout=30) as http:
        return answer_offset(http, f"{server.url}/v2/models/{model}/infer", 5.0)[1]


def place(staging: Path, dest: Path) -> None:
    """Put a finished package in the repository in one rename (the watcher never sees half of it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, dest)


def repoint(link: Path, target: Path) -> None:
    """Replace the package a version folder points at, atomically (new link renamed over the old)."""
    tmp = link.parent / f".{link.name}.new"
    tmp.symlink_to(target.resolve(), target_is_directory=True)
    os.replace(tmp, link)


@pytest.fixture
def watched(tmp_path: Path, serve_factory) -> tuple[RunningServer, Path, Path]:
    """A repository folder served with --watch: swapped/1 (a folder) and inplace/1 (a symlink)."""
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    place(pack_versioned(staging / "swapped_v1", 1, sleep_ms=2), repo / "swapped" / "1")
    pack_versioned(staging / "inplace_v1", 1, sleep_ms=2, name="inplace")
    (repo / "inplace").mkdir()
    repoint(repo / "inplace" / "1", staging / "inplace_v1")
    server = serve_factory(repo, "--watch", "--watch-interval", "0.3", "--model-control")
    return server, repo, staging


def test_new_version_swaps_in_under_load_with_zero_failures(watched) -> None:
    server, repo, staging = watched
    assert offset_now(server, "swapped") == 1000.0
    pack_versioned(staging / "swapped_v2", 2, sleep_ms=2)
    results = under_load(server, "swapped", lambda: place(staging / "swapped_v2", repo / "swapped" / "2"), 2000.0)
    assert_zero_drop_switch(results, 1000.0, 2000.0)
    assert offset_now(server, "swapped") == 2000.0
    # both versions stay addressable by number; the newest is the default
    with httpx.Client(timeout=30) as http:
        assert answer_offset(http, f"{server.url}/v2/models/swapped/versions/1/infer", 1.0) == (200, 1000.0)
    assert index_row(server, "swapped", 2)["state"] == "READY"

    # a new version that cannot load leaves the old one serving, and the index says why
    place(write_bad_manifest(staging / "swapped_bad"), repo / "swapped" / "3")
    row = wait_until(lambda: index_row(server, "swapped", 3), "the failed version in the index")
    assert row["state"] == "UNAVAILABLE" and row["reason"], row
    assert offset_now(server, "swapped") == 2000.0
    assert httpx.get(f"{server.url}/v2/models/swapped/versions/3/ready").status_code == 400


def test_package_replaced_in_place_swaps_under_load_and_a_broken_one_keeps_the_old(watched) -> None:
    server, repo, staging = watched
    assert offset_now(server, "inplace") == 1000.0
    pack_versioned(staging / "inplace_v3", 3, sleep_ms=2, name="inplace")  # same version folder, new contents
    results = under_load(server, "inplace", lambda: repoint(repo / "inplace" / "1", staging / "inplace_v3"), 3000.0)
    assert_zero_drop_switch(results, 1000.0, 3000.0)
    assert index_row(server, "inplace", 1)["state"] == "READY"

    # replace it with a package whose entrypoint raises: the running one keeps serving, under load
    pack_broken(staging / "inplace_broken", name="inplace")

    def break_it() -> None:
        repoint(repo / "inplace" / "1", staging / "inplace_broken")
        wait_until(lambda: (index_row(server, "inplace", 1) or {}).get("reason"), "the failure in the index")

    url = f"{server.url}/v2/models/inplace/infer"
    with httpx.Client(timeout=60) as http:
        before = [answer_offset(http, url, float(i)) for i in range(20)]
        break_it()
        after = [answer_offset(http, url, float(i)) for i in range(20)]
    assert before == after == [(200, 3000.0)] * 20
    row = index_row(server, "inplace", 1)
    assert "broken on purpose" in row["reason"], row
    # fixing the package (a new one in place) clears the failure and swaps again
    pack_versioned(staging / "inplace_v4", 4, sleep_ms=2, name="inplace")
    repoint(repo / "inplace" / "1", staging / "inplace_v4")
    wait_until(lambda: offset_now(server, "inplace") == 4000.0, "the fixed package to serve")
    assert index_row(server, "inplace", 1) == {"name": "inplace", "version": "1", "state": "READY", "reason": ""}


def test_a_package_caught_half_copied_loads_once_the_copy_completes(watched) -> None:
    server, repo, staging = watched
    package = pack_versioned(staging / "swapped_v2", 2, sleep_ms=2)
    dest = repo / "swapped" / "2"
    dest.mkdir()
    shutil.copy2(package / "modelpod.json", dest / "modelpod.json")  # `cp -r` caught half-way
    row = wait_until(lambda: index_row(server, "swapped", 2), "the half-copied version to fail")
    assert row["state"] == "UNAVAILABLE", row
    assert offset_now(server, "swapped") == 1000.0
    shutil.copytree(package, dest, dirs_exist_ok=True)  # the copy completes; the manifest is unchanged
    wait_until(lambda: offset_now(server, "swapped") == 2000.0, "the completed version to serve")
    assert index_row(server, "swapped", 2)["state"] == "READY"


def test_unload_under_watch_stays_unloaded_until_loaded(watched) -> None:
    server, repo, staging = watched
    response = httpx.post(f"{server.url}/v2/repository/models/inplace/unload", timeout=60)
    assert response.status_code == 200, response.text
    assert httpx.get(f"{server.url}/v2/models/inplace/ready").status_code == 400
    # the watcher keeps polling (it picks up a new version of another model) ...
    place(pack_versioned(staging / "swapped_v2", 2, sleep_ms=2), repo / "swapped" / "2")
    wait_until(lambda: offset_now(server, "swapped") == 2000.0, "the watcher to load swapped/2")
    # ... but does not bring back what was explicitly unloaded
    response = httpx.post(f"{server.url}/v2/models/inplace/infer", json=v2_body(np.ones(2, np.float32)))
    assert response.status_code == 404, response.text
    response = httpx.post(f"{server.url}/v2/repository/models/inplace/load", timeout=60)
    assert response.status_code == 200, response.text
    assert offset_now(server, "inplace") == 1000.0


def test_repository_api_load_unload_without_watch(tmp_path: Path, serve_factory) -> None:
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    place(pack_versioned(staging / "m_v1", 1), repo / "m" / "1")
    place(pack_versioned(staging / "other", 7, name="other"), repo / "other" / "1")
    server = serve_factory(repo, "--model-control")
    assert offset_now(server, "m") == 1000.0
    assert {(r["name"], r["version"], r["state"]) for r in index(server)} == {("m", "1", "READY"),
                                                                          ("other", "1", "READY")}
    assert httpx.post(f"{server.url}/v2/repository/models/m/unload").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/m/ready").status_code == 400
    assert [r["name"] for r in index(server)] == ["other"]
    assert offset_now(server, "other") == 7000.0
    # a version added while unloaded is there when it is loaded again
    place(pack_versioned(staging / "m_v2", 2), repo / "m" / "2")
    assert httpx.post(f"{server.url}/v2/repository/models/m/load", timeout=60).status_code == 200
    assert offset_now(server, "m") == 2000.0
    assert httpx.post(f"{server.url}/v2/repository/models/nope/load").status_code == 404
    assert httpx.post(f"{server.url}/v2/repository/models/nope/unload").status_code == 404
    # a load that fails is reported and the loaded version keeps serving
    place(pack_broken(staging / "m_broken"), repo / "m" / "3")
    response = httpx.post(f"{server.url}/v2/repository/models/m/load", timeout=60)
    assert response.status_code == 200, response.text  # versions 1 and 2 (re)loaded; 3 failed
    row = index_row(server, "m", 3)
    assert row["state"] == "UNAVAILABLE" and "broken on purpose" in row["reason"], row
    assert offset_now(server, "m") == 2000.0


# -- warm-up and readiness -------------------------------------------------------------------------

def test_warm_up_data_in_every_format_runs_and_a_failing_one_keeps_only_its_model_unready(
        tmp_path: Path, serve_factory) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    for tag in ("wnpz", "wjson", "weas", "picky"):
        pack_counter(tmp_path / "models" / tag, tag)
    np.savez(tmp_path / "warm.npz", x=np.array([41, 0], np.float32))
    (tmp_path / "warm.json").write_text('{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [42, 0]}]}')
    (tmp_path / "warm.bin").write_bytes(eas_request(np.array([43, 0], np.float32)))
    np.savez(tmp_path / "bad.npz", x=np.array([-1, 0], np.float32))  # the counter model raises on -1
    config = write_config(tmp_path / "services.json", [
        {"name": "wnpz", "model_path": "models/wnpz", "warm_up_data_path": "warm.npz"},
        {"name": "wjson", "model_path": "models/wjson", "warm_up_data_path": "warm.json"},
        {"name": "weas", "model_path": "models/weas", "warm_up_data_path": "warm.bin"},
        {"name": "picky", "model_path": "models/picky", "warm_up_data_path": "bad.npz"},
    ])
    server = serve_factory(config, wait_ready=False, env={SCHED_DIR_ENV: str(folder)})
    wait_until(lambda: "serving HTTP" in server.log(), "the server to finish loading")
    # each warm-up request really ran before any traffic
    for tag, value in (("wnpz", "41.0"), ("wjson", "42.0"), ("weas", "43.0")):
        assert [v for _, v in calls(folder, tag)] == [value] * 3, tag
        assert httpx.get(f"{server.url}/v2/models/{tag}/ready").status_code == 200
        response = httpx.post(f"{server.url}/v2/models/{tag}/infer", json=v2_body(np.array([1, 2], np.float32)))
        assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [2.0, 3.0]
    assert [v for _, v in calls(folder, "picky")] == ["-1.0"]
    # the model that failed warm-up is out of traffic, with its reason everywhere
    assert httpx.get(f"{server.url}/v2/models/picky/ready").status_code == 400
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
    response = httpx.post(f"{server.url}/v2/models/picky/infer", json=v2_body(np.array([1, 2], np.float32)))
    assert response.status_code == 503
    assert "warm-up failed" in response.json()["error"] and "refuses -1" in response.json()["error"]
    response = httpx.post(f"{server.url}/api/predict/picky", content=eas_request(np.array([1, 2], np.float32)))
    assert response.status_code == 503 and "refuses -1" in response.text
    status = httpx.get(f"{server.url}/v1/models/picky").json()["model_version_status"][0]
    assert status["state"] != "AVAILABLE" and "refuses -1" in status["status"]["error_message"], status
    assert httpx.get(f"{server.url}/v1/models/wnpz").json()["model_version_status"][0]["state"] == "AVAILABLE"
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        assert not client.is_model_ready("picky")
        assert client.is_model_ready("weas")
    assert [v for _, v in calls(folder, "picky")] == ["-1.0"]  # no request reached it


def test_watch_does_not_reread_an_unchanged_archive_on_every_poll(tmp_path: Path, serve_factory) -> None:
    archive = pack_addition(tmp_path / "addition.tar.gz")
    server = serve_factory(archive, "--watch", "--watch-interval", "0.05", "--grpc-port", "-1")
    # same size and mtime, so the same fingerprint: only a poll that re-reads the file notices
    stat = archive.stat()
    archive.write_bytes(b"\0" * stat.st_size)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(1.0)  # room for many polls (a pause, not an assertion about time)
    assert "cannot read" not in server.log(), server.log()
    body = {"inputs": [{"name": n, "datatype": "FP32", "shape": [2], "data": [1, 2]} for n in ("x", "y")]}
    response = httpx.post(f"{server.url}/v2/models/addition/infer", json=body)
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [2.0, 4.0]
