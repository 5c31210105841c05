"""Triton's sequence extension (sequence_id / sequence_start / sequence_end) over v2 REST and gRPC,
driven by the unmodified tritonclient.http and tritonclient.grpc against a real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers.addition import pack_addition
from tests.helpers.sched_models import SCHED_DIR_ENV, metric, wait_until
from tests.helpers.sequence_models import VALUES, build_examples, lines, pack_accumulator, write_settings
from tests.helpers.servers import RunningServer, running_server

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gates: Path) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("repo")
    build_examples(repo)
    pack_addition(repo / "addition" / "1")
    pack_accumulator(repo / "accumulator" / "1", "accumulator")
    pack_accumulator(repo / "acc_threads" / "1", "acc_threads")  # two instance threads, queued
    write_settings(repo / "acc_threads", {"execution": "queued", "instances": 2})
    pack_accumulator(repo / "acc_idle" / "1", "acc_idle")
    write_settings(repo / "acc_idle", {"sequence": {"idle_timeout_s": 0.3}})
    pack_accumulator(repo / "acc_small" / "1", "acc_small")
    write_settings(repo / "acc_small", {"sequence": {"max_sequences": 2}})
    with running_server(repo, tmp_path_factory.mktemp("server"), env={SCHED_DIR_ENV: str(gates)}) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.host)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        yield client


def _int_input(module, name: str, values: list[int] | np.ndarray, shape: list[int] | None = None):
    array = np.asarray(values, dtype=np.int32).reshape(shape or [len(values)])
    tensor = module.InferInput(name, list(array.shape), "INT32")
    tensor.set_data_from_numpy(array)
    return tensor


def _add(client, model: str, values: list[int], sid, start: bool = False, end: bool = False) -> np.ndarray:
    """One request of sequence ``sid`` on an accumulator: its OUTPUT."""
    module = httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient
    result = client.infer(model, [_int_input(module, "INPUT", values)], sequence_id=sid,
                          sequence_start=start, sequence_end=end)
    return result.as_numpy("OUTPUT")


def _status(info: pytest.ExceptionInfo) -> str:
    return str(info.value.status())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_triton_sequence_example_numbers(http, grpc, protocol: str) -> None:
    """What simple_{http,grpc}_sequence_sync_infer_client.py send and check, on simple_sequence."""
    client, module = (http, httpclient) if protocol == "http" else (grpc, grpcclient)
    base = 1000 if protocol == "http" else 2000

    def send(values: list[int], sid) -> list[int]:
        got = []
        for i, value in enumerate(values):
            result = client.infer("simple_sequence", [_int_input(module, "INPUT", [value], [1, 1])],
                                  outputs=[module.InferRequestedOutput("OUTPUT")], sequence_id=sid,
                                  sequence_start=i == 0, sequence_end=i == len(values) - 1)
            output = result.as_numpy("OUTPUT")
            assert output.shape == (1, 1) and output.dtype == np.int32
            got.append(int(output[0][0]))
        return got

    assert send([0] + VALUES, base) == [1] + VALUES
    assert send([100] + [-v for v in VALUES], base + 1) == [101] + [-v for v in VALUES]
    assert send([20] + [-v for v in VALUES], str(uuid.uuid4())) == [21] + [-v for v in VALUES]


def test_two_interleaved_sequences_keep_their_own_sums_across_protocols(http, grpc) -> None:
    assert _add(http, "accumulator", [1, 2], 41, start=True).tolist() == [3, 3]
    assert _add(grpc, "accumulator", [100], 42, start=True).tolist() == [100]
    assert _add(grpc, "accumulator", [4], 41).tolist() == [7]  # the id correlates over gRPC too
    assert _add(http, "accumulator", [-1], 42).tolist() == [99]
    assert _add(http, "accumulator", [3], 41, end=True).tolist() == [10]
    assert _add(grpc, "accumulator", [1], 42, end=True).tolist() == [100]
    # a string id is its own sequence, even when it spells a number in use
    assert _add(http, "accumulator", [5], "41", start=True, end=True).tolist() == [5]


def test_sequence_parameters_on_a_stateless_model_are_refused(http, grpc, server: RunningServer) -> None:
    x = np.array([1.0], np.float32)
    inputs = []
    for name in ("x", "y"):
        tensor = httpclient.InferInput(name, [1], "FP32")
        tensor.set_data_from_numpy(x)
        inputs.append(tensor)
    with pytest.raises(InferenceServerException) as info:
        http.infer("addition", inputs, sequence_id=9, sequence_start=True)
    assert "model 'addition' is not stateful" in info.value.message()
    response = httpx.post(f"{server.url}/v2/models/addition/infer", timeout=10, json={
        "parameters": {"sequence_end": True, "sequence_id": 3},
        "inputs": [{"name": n, "datatype": "FP32", "shape": [1], "data": [1]} for n in ("x", "y")]})
    assert response.status_code == 400 and "not stateful" in response.json()["error"]
    grpc_inputs = []
    for name in ("x", "y"):
        tensor = grpcclient.InferInput(name, [1], "FP32")
        tensor.set_data_from_numpy(x)
        grpc_inputs.append(tensor)
    with pytest.raises(InferenceServerException) as info:
        grpc.infer("addition", grpc_inputs, sequence_id="s")
    assert _status(info) == "StatusCode.INVALID_ARGUMENT" and "not stateful" in info.value.message()
    # sequence_id 0 means "in no sequence" (Triton's rule): a stateless model answers it
    response = httpx.post(f"{server.url}/v2/models/addition/infer", timeout=10, json={
        "parameters": {"sequence_id": 0},
        "inputs": [{"name": n, "datatype": "FP32", "shape": [1], "data": [1]} for n in ("x", "y")]})
    assert response.status_code == 200, response.text


def test_a_stateful_model_needs_a_sequence_id(http, grpc) -> None:
    tensor = _int_input(httpclient, "INPUT", [1])
    with pytest.raises(InferenceServerException) as info:
        http.infer("accumulator", [tensor])
    assert "model 'accumulator' is stateful: every request needs a non-zero sequence_id" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        grpc.infer("accumulator", [_int_input(grpcclient, "INPUT", [1])])
    assert _status(info) == "StatusCode.INVALID_ARGUMENT"


def test_an_id_never_started_or_reused_after_its_end_needs_sequence_start(http, grpc) -> None:
    with pytest.raises(InferenceServerException) as info:
        _add(http, "accumulator", [1], 777)
    assert "sequence 777 is not active; start it with sequence_start" in info.value.message()
    assert _add(http, "accumulator", [5], 51, start=True).tolist() == [5]
    assert _add(http, "accumulator", [5], 51, end=True).tolist() == [10]
    for client in (http, grpc):  # ended: a request without sequence_start does not revive it
        with pytest.raises(InferenceServerException) as info:
            _add(client, "accumulator", [1], 51)
        assert "sequence 51 is not active" in info.value.message()
    assert _add(grpc, "accumulator", [2], 51, start=True).tolist() == [2]  # a new sequence, fresh state
    assert _add(grpc, "accumulator", [2], 51, start=True).tolist() == [2]  # start on a live id: over again
    assert _add(grpc, "accumulator", [1], 51, end=True).tolist() == [3]


def test_malformed_sequence_parameters_are_400(server: RunningServer) -> None:
    def post(parameters: dict) -> httpx.Response:
        return httpx.post(f"{server.url}/v2/models/accumulator/infer", timeout=10, json={
            "parameters": parameters, "inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [1], "data": [1]}]})

    for parameters, words in [
        ({"sequence_id": 1.5, "sequence_start": True}, "'sequence_id' must be an unsigned integer or a string"),
        ({"sequence_id": -3, "sequence_start": True}, "must fit in a uint64"),
        ({"sequence_id": True}, "'sequence_id' must be an unsigned integer"),
        ({"sequence_id": 4, "sequence_start": "yes"}, "'sequence_start' must be a boolean"),
        ({"sequence_id": "x" * 300, "sequence_start": True}, "at most 256"),
        ({"sequence_id": 0, "sequence_start": True}, "need a non-zero sequence_id"),
    ]:
        response = post(parameters)
        assert response.status_code == 400, parameters
        assert words in response.json()["error"], (parameters, response.text)
    # a bad input starts nothing
    response = httpx.post(f"{server.url}/v2/models/accumulator/infer", timeout=10, json={
        "parameters": {"sequence_id": 61, "sequence_start": True},
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1], "data": [1]}]})
    assert response.status_code == 400 and "input 'INPUT'" in response.json()["error"]
    assert post({"sequence_id": 61}).status_code == 400


def test_requests_of_one_sequence_run_one_at_a_time_in_order(server: RunningServer, gates: Path) -> None:
    """Sent on one stream while the model is held: they queue behind each other (two instance threads
    could otherwise run them at once), and their running sums show the order they ran in."""
    import queue

    answers: queue.Queue = queue.Queue()
    hold = gates / "acc_threads.hold"
    hold.touch()
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        client.start_stream(callback=lambda result, error: answers.put(error or result))
        try:
            steps = [1, 10, 100, 1000, 10000]
            for i, value in enumerate(steps):
                client.async_stream_infer("acc_threads", [_int_input(grpcclient, "INPUT", [value])], request_id=str(i),
                                          sequence_id=71, sequence_start=i == 0, sequence_end=i == len(steps) - 1)
            wait_until(lambda: metric(server.url, "modelpod_in_flight", model="acc_threads") == len(steps),
                       "the five requests in flight")
            hold.unlink()
            got = {}
            for _ in steps:
                item = answers.get(timeout=60)
                assert not isinstance(item, InferenceServerException), item
                got[int(item.get_response().id)] = int(item.as_numpy("OUTPUT")[0])
        finally:
            hold.unlink(missing_ok=True)
            client.stop_stream()
    assert [got[i] for i in range(5)] == [1, 11, 111, 1111, 11111]


def test_idle_sequences_expire_and_their_state_is_freed(http, server: RunningServer, gates: Path) -> None:
    assert _add(http, "acc_idle", [4], 81, start=True).tolist() == [4]
    wait_until(lambda: "81" in lines(gates, "acc_idle", ".freed"), "the idle sequence's state freed")
    assert metric(server.url, "modelpod_sequences", model="acc_idle") == 0
    with pytest.raises(InferenceServerException) as info:
        _add(http, "acc_idle", [1], 81)
    assert "sequence 81 is not active" in info.value.message() and "after 0.3 s without requests" in info.value.message()


def test_live_sequences_are_bounded(http, grpc, server: RunningServer, gates: Path) -> None:
    _add(http, "acc_small", [1], 91, start=True)
    _add(http, "acc_small", [1], 92, start=True)
    assert metric(server.url, "modelpod_sequences", model="acc_small") == 2
    with pytest.raises(InferenceServerException) as info:
        _add(http, "acc_small", [1], 93, start=True)
    assert "model 'acc_small' has 2 live sequences, its limit (sequence.max_sequences)" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        _add(grpc, "acc_small", [1], 93, start=True)
    assert _status(info) == "StatusCode.RESOURCE_EXHAUSTED"
    assert _add(grpc, "acc_small", [1], 91, end=True).tolist() == [2]  # live ones go on meanwhile
    wait_until(lambda: "91" in lines(gates, "acc_small", ".freed"), "the ended sequence's state freed")
    assert _add(http, "acc_small", [7], 93, start=True, end=True).tolist() == [7]
    _add(http, "acc_small", [0], 92, end=True)
    wait_until(lambda: metric(server.url, "modelpod_sequences", model="acc_small") == 0, "no live sequence left")


def test_server_metadata_lists_the_sequence_extension(http, grpc) -> None:
    for extensions in (http.get_server_metadata()["extensions"], list(grpc.get_server_metadata().extensions)):
        assert "sequence" in extensions and "sequence(string_id)" in extensions


def test_a_stateful_model_refuses_worker_processes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    pack_accumulator(repo / "acc_proc" / "1", "acc_proc")
    write_settings(repo / "acc_proc", {"worker": "process"})
    with running_server(repo, tmp_path, wait_ready=False) as server:
        row = wait_until(lambda: _index_row(server, "acc_proc"), "the model's load to settle")
        assert row["state"] == "UNAVAILABLE"
        assert "stateful and decoupled models run in the server's process" in row["reason"]


def _index_row(server: RunningServer, name: str) -> dict | None:
    rows = httpx.post(f"{server.url}/v2/repository/index", timeout=10).json()
    return next((r for r in rows if r["name"] == name), None)
