"""The client SDK against a real ``modelpod serve``: every dtype over v2 binary, v2 JSON and gRPC,
errors, safe retries and tokens."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import modelpod
from tests.helpers.client_models import (
    DTYPES,
    build_repository,
    calls,
    pack_counter,
    pack_echo,
    sample,
)
from tests.helpers.servers import RunningServer, free_port, running_server, start_server

pytestmark = pytest.mark.timeout(180)

FLAVOURS = ["binary", "json", "grpc"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.getbasetemp() / "client_models"
    root.mkdir(exist_ok=True)
    repo = build_repository(root)
    running = start_server(repo, tmp_path_factory.mktemp("server"))
    try:
        yield running
    finally:
        running.stop(9, timeout=10)


def _client(server: RunningServer, flavour: str, **options) -> modelpod.Client:
    if flavour == "grpc":
        return modelpod.connect(f"grpc://{server.grpc_target}", **options)
    return modelpod.Client(server.url, transport=flavour, **options)


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert list(got.ravel()) == list(want.ravel())
        assert all(isinstance(v, bytes) for v in got.ravel())
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8))


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips(server: RunningServer, flavour: str, dtype: str) -> None:
    # JSON cannot carry non-UTF-8 bytes back; the request side sends them binary (mixed body)
    x = sample(dtype, (3, 4), raw_bytes=flavour != "json")
    with _client(server, flavour) as client:
        out = client.infer(f"echo_{dtype}", {"x": x})
    assert list(out) == ["y"]
    _assert_same(out["y"], x)
    assert out["y"].flags.writeable  # like a local model's outputs


def test_non_utf8_bytes_input_goes_binary_in_json_mode(server: RunningServer) -> None:
    x = sample("string", (2, 3))
    with _client(server, "binary") as client:
        _assert_same(client.infer("echo_string", {"x": x})["y"], x)
    with _client(server, "json") as client:
        got = client.infer("echo_string", {"x": x})["y"]  # accepted (sent as a binary tensor)
    assert got.shape == x.shape


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_python_values_take_the_spec_dtype_and_outputs_filter(server: RunningServer, flavour: str) -> None:
    with _client(server, flavour) as client:
        out = client.infer("affine", {"x": [[1.0, 2.0], [3.0, 4.0]], "k": [1, 2]}, outputs=["k1"], quantize="none")
        assert list(out) == ["k1"]
        np.testing.assert_array_equal(out["k1"], np.array([2, 3], np.int32))
        meta = client.metadata("affine")
        assert [t["name"] for t in meta["inputs"]] == ["x", "k"]
        assert client.ready("affine") and not client.ready("no_such_model")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_same_call_as_a_local_model(server: RunningServer, flavour: str, tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    k = np.array([5, 6], np.int32)
    from tests.helpers.client_models import pack_affine

    with modelpod.load(pack_affine(tmp_path / "affine")) as local, _client(server, flavour) as remote:
        want = local.infer({"x": x, "k": k})
        got = remote.infer("affine", {"x": x, "k": k})
    assert got.keys() == want.keys()
    for name in want:
        _assert_same(got[name], want[name])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_errors_raise_server_error_with_status_and_message(server: RunningServer, flavour: str) -> None:
    with _client(server, flavour, retries=5) as client:
        with pytest.raises(modelpod.ServerError) as bad:
            client.infer("affine", {"x": np.zeros((2, 2), np.float64), "k": np.zeros(1, np.int32)})
        assert bad.value.status == 400
        assert bad.value.message == "model 'affine': input 'x': expected datatype FP32, got FP64"  # v2's words
        assert client.stats.retries == 0  # never retried
        with pytest.raises(modelpod.ServerError) as missing:
            client.infer("no_such_model", {"x": np.zeros(2, np.float32)}, quantize="none")
        assert missing.value.status == 404 and "no_such_model" in missing.value.message
        if flavour == "grpc":
            assert missing.value.grpc_code == "NOT_FOUND"
        assert client.stats.retries == 0


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_model_failure_is_500_and_runs_once(tmp_path: Path, serve_factory, flavour: str) -> None:
    package = pack_counter(tmp_path / "counter")
    running = serve_factory(package)
    with _client(running, flavour, retries=5) as client:
        with pytest.raises(modelpod.ServerError) as failed:
            client.infer("counter", {"x": np.array([-1.0], np.float32)})
    assert failed.value.status == 500 and "negative input" in failed.value.message
    assert calls(package) == 1  # the model ran exactly once: a 500 is never retried


def test_not_ready_503_is_retried_then_raised(tmp_path: Path, serve_factory) -> None:
    package = pack_echo(tmp_path / "echo", "float32")
    warm = tmp_path / "warm.json"
    # a warm-up request the model rejects (wrong dtype) keeps it FAILED: every infer is a 503
    warm.write_text('{"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 1], "data": [1]}]}')
    config = tmp_path / "service.json"
    config.write_text(f'{{"name": "flaky", "model_path": "{package}", "warm_up_data_path": "{warm}"}}')
    running = serve_factory(config, wait_ready=False)
    with modelpod.Client(running.url, retries=2, backoff=0.01) as client:
        assert not client.ready("flaky")
        with pytest.raises(modelpod.ServerError) as err:
            client.infer("flaky", {"x": np.zeros((1, 1), np.float32)}, quantize="none")
        assert err.value.status == 503
        assert client.stats.retries == 2


@pytest.mark.parametrize("flavour", ["binary", "grpc"])
def test_retries_connection_refused_until_the_server_is_up(tmp_path: Path, flavour: str) -> None:
    package = pack_echo(tmp_path / "echo", "float32")
    http_port, grpc_port = free_port(), free_port()
    url = f"grpc://127.0.0.1:{grpc_port}" if flavour == "grpc" else f"http://127.0.0.1:{http_port}"
    client = modelpod.connect(url, retries=10_000, backoff=0.05, max_backoff=0.2)
    assert not client.ready("echo_float32")  # nothing listens yet
    result: dict = {}

    def call() -> None:
        try:
            result["out"] = client.infer("echo_float32", {"x": np.ones((1, 2), np.float32)})
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)  # the client is retrying a refused connection by now
    with running_server(package, tmp_path, http_port=http_port, grpc_port=grpc_port):
        thread.join(120)
    client.close()
    assert "error" not in result, result.get("error")
    np.testing.assert_array_equal(result["out"]["y"], np.ones((1, 2), np.float32))
    assert client.stats.retries > 0


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_token(tmp_path: Path, serve_factory, flavour: str) -> None:
    package = pack_echo(tmp_path / "echo", "int32")
    running = serve_factory(package, "--token", "s3cret")
    x = np.arange(4, dtype=np.int32).reshape(2, 2)
    with _client(running, flavour, token="s3cret") as client:
        _assert_same(client.infer("echo_int32", {"x": x})["y"], x)
    with _client(running, flavour, token="wrong") as client:
        with pytest.raises(modelpod.ServerError) as err:
            client.infer("echo_int32", {"x": x}, quantize="none")
    assert err.value.status == 401


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_async_client(server: RunningServer, flavour: str) -> None:
    url = f"grpc://{server.grpc_target}" if flavour == "grpc" else server.url

    async def main() -> list[dict]:
        async with modelpod.connect_async(url, transport="binary" if flavour == "grpc" else flavour) as client:
            assert await client.ready("echo_int64")
            calls_ = [client.infer("echo_int64", {"x": sample("int64") + i}) for i in range(8)]
            return await asyncio.gather(*calls_)

    results = asyncio.run(main())
    for i, out in enumerate(results):
        _assert_same(out["y"], sample("int64") + i)


def test_cli_infer_uses_the_sdk(server: RunningServer, tmp_path: Path) -> None:
    import json
    import subprocess

    from tests.helpers.servers import MODELPOD

    for url in (server.url, f"grpc://{server.grpc_target}"):
        out = subprocess.run([MODELPOD, "infer", url, "affine", "-i", "x=[[1.0, 2.0]]", "-i", "k=[7]", "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["k1"]["data"] == [8]
        assert doc["y"]["dtype"] == "float32"
