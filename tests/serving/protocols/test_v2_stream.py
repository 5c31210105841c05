"""gRPC ModelStreamInfer and decoupled models, driven by the unmodified tritonclient.grpc
(start_stream / async_stream_infer / stop_stream, and the aio client's stream_infer)."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.addition import pack_addition
from tests.helpers.sched_models import SCHED_DIR_ENV, metric, pack_counter, wait_until
from tests.helpers.sequence_models import VALUES, build_examples, lines, pack_accumulator, pack_ticker, write_settings
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
    pack_ticker(repo / "ticker" / "1", "ticker")
    pack_accumulator(repo / "acc_stream" / "1", "acc_stream")
    pack_counter(repo / "held" / "1", "held")  # y = x + 1; waits while held.hold exists
    write_settings(repo / "held", {"execution": "queued", "max_queue_size": 500})
    with running_server(repo, tmp_path_factory.mktemp("server"), env={SCHED_DIR_ENV: str(gates)}) as srv:
        yield srv


class Stream:
    """A tritonclient.grpc stream whose callback puts every result (or error) on a queue."""

    def __init__(self, target: str) -> None:
        self.client = grpcclient.InferenceServerClient(target)
        self.answers: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.answers.put(error or result))

    def get(self) -> grpcclient.InferResult | InferenceServerException:
        return self.answers.get(timeout=60)

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


@pytest.fixture
def stream(server: RunningServer) -> Iterator[Stream]:
    s = Stream(server.grpc_target)
    yield s
    s.close()


def _input(name: str, values, datatype: str = "INT32", shape: list[int] | None = None) -> grpcclient.InferInput:
    dtype = {"INT32": np.int32, "UINT32": np.uint32, "FP32": np.float32}[datatype]
    array = np.asarray(values, dtype=dtype).reshape(shape or [len(values)])
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _final(result: grpcclient.InferResult) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


def _repeat_inputs(values: list[int], delay_ms: int = 0) -> list[grpcclient.InferInput]:
    return [_input("IN", values), _input("DELAY", [delay_ms] * len(values), "UINT32"), _input("WAIT", [0], "UINT32")]


def test_the_triton_sequence_stream_example_numbers(stream: Stream) -> None:
    """What simple_grpc_sequence_stream_infer_client.py sends on one stream, and checks."""
    string_id = str(uuid.uuid4())
    plans = {"3000": [0] + VALUES, "3001": [100] + [-v for v in VALUES], string_id: [20] + [-v for v in VALUES]}
    for sid, values in plans.items():
        for count, value in enumerate(values, 1):
            stream.client.async_stream_infer(
                "simple_sequence", [_input("INPUT", [value], shape=[1, 1])],
                outputs=[grpcclient.InferRequestedOutput("OUTPUT")], request_id=f"{sid}_{count}",
                sequence_id=int(sid) if sid.isdigit() else sid, sequence_start=count == 1,
                sequence_end=count == len(values))
    got: dict[str, list[int]] = {sid: [] for sid in plans}
    for _ in range(sum(len(v) for v in plans.values())):
        result = stream.get()
        assert not isinstance(result, InferenceServerException), result
        assert _final(result)  # one-answer models: every response is final
        got[result.get_response().id.rsplit("_", 1)[0]].append(int(result.as_numpy("OUTPUT")[0][0]))
    assert got["3000"] == [1] + VALUES
    assert got["3001"] == [101] + [-v for v in VALUES]
    assert got[string_id] == [21] + [-v for v in VALUES]


def test_the_aio_client_streams_a_sequence(server: RunningServer) -> None:
    async def run() -> list[int]:
        async with aioclient.InferenceServerClient(server.grpc_target) as client:
            async def requests():
                for count, value in enumerate([0] + VALUES, 1):
                    yield {"model_name": "simple_sequence", "inputs": [_aio_input(value)], "request_id": str(count),
                           "sequence_id": 3100, "sequence_start": count == 1, "sequence_end": count == len(VALUES) + 1}

            answers = []
            async for result, error in client.stream_infer(inputs_iterator=requests()):
                assert error is None, error
                answers.append(int(result.as_numpy("OUTPUT")[0][0]))
            return answers  # the stream ended by itself once every request was answered

    assert asyncio.run(run()) == [1] + VALUES


def _aio_input(value: int) -> aioclient.InferInput:
    tensor = aioclient.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[value]], np.int32))
    return tensor


def test_a_decoupled_model_streams_one_response_per_answer(stream: Stream) -> None:
    """Triton's repeat_int32, as simple_grpc_custom_repeat.py calls it (without its delays)."""
    stream.client.async_stream_infer("repeat_int32", _repeat_inputs(list(range(100, 110))),
                                     outputs=[grpcclient.InferRequestedOutput("OUT")], request_id="r")
    results = [stream.get() for _ in range(10)]
    assert all(not isinstance(r, InferenceServerException) for r in results), results
    assert [int(r.as_numpy("OUT")[0]) for r in results] == list(range(100, 110))
    assert [r.get_response().id for r in results] == ["r"] * 10
    assert not any(_final(r) for r in results)  # the end is a flag of its own (opt-in, below)
    assert results[0].as_numpy("IDX") is None  # only what was asked for


def test_the_empty_final_response_is_sent_when_asked_for(stream: Stream) -> None:
    stream.client.async_stream_infer("repeat_int32", _repeat_inputs([7, 8]), request_id="f",
                                     enable_empty_final_response=True)
    answers = [stream.get() for _ in range(3)]
    assert [_final(a) for a in answers] == [False, False, True]
    assert [int(a.as_numpy("OUT")[0]) for a in answers[:2]] == [7, 8]
    assert answers[2].get_response().outputs == [] and answers[2].get_response().id == "f"
    # zero answers: only the final flag comes back
    stream.client.async_stream_infer("ticker", [_input("COUNT", [0])], request_id="none",
                                     enable_empty_final_response=True)
    final = stream.get()
    assert _final(final) and final.get_response().id == "none" and final.get_response().outputs == []


def test_errors_answer_their_request_and_the_stream_goes_on(stream: Stream) -> None:
    stream.client.async_stream_infer("addition", [_input("x", [1.0], "FP32"), _input("y", [1, 2], "INT32")],
                                     request_id="bad")
    error = stream.get()
    assert isinstance(error, InferenceServerException) and "input 'y'" in error.message()
    stream.client.async_stream_infer("no_such_model", [_input("x", [1.0], "FP32")], request_id="unknown")
    assert "no_such_model" in stream.get().message()
    stream.client.async_stream_infer("addition", [_input("x", [1.0], "FP32"), _input("y", [2.0], "FP32")],
                                     request_id="good")
    good = stream.get()
    assert not isinstance(good, InferenceServerException), good
    assert good.as_numpy("out").tolist() == [3.0] and good.get_response().id == "good" and _final(good)
    # sequence rules on the stream too
    stream.client.async_stream_infer("acc_stream", [_input("INPUT", [1])], sequence_id=4040)
    assert "sequence 4040 is not active" in stream.get().message()


def test_decoupled_models_over_one_answer_calls(server: RunningServer) -> None:
    many = {"inputs": [{"name": "IN", "datatype": "INT32", "shape": [2], "data": [1, 2]},
                       {"name": "DELAY", "datatype": "UINT32", "shape": [2], "data": [0, 0]},
                       {"name": "WAIT", "datatype": "UINT32", "shape": [1], "data": [0]}]}
    response = httpx.post(f"{server.url}/v2/models/repeat_int32/infer", json=many, timeout=30)
    assert response.status_code == 400
    assert "decoupled and sent more than one answer" in response.json()["error"]
    assert "ModelStreamInfer" in response.json()["error"]
    zero = httpx.post(f"{server.url}/v2/models/ticker/infer", timeout=30, json={
        "inputs": [{"name": "COUNT", "datatype": "INT32", "shape": [1], "data": [0]}]})
    assert zero.status_code == 400 and "sent no answer" in zero.json()["error"]
    # exactly one answer is an ordinary answer
    client = httpclient.InferenceServerClient(server.host)
    try:
        tensor = httpclient.InferInput("COUNT", [1], "INT32")
        tensor.set_data_from_numpy(np.array([1], np.int32))
        assert client.infer("ticker", [tensor]).as_numpy("OUT").tolist() == [0]
    finally:
        client.close()
    with grpcclient.InferenceServerClient(server.grpc_target) as grpc_client:
        with pytest.raises(InferenceServerException) as info:
            grpc_client.infer("repeat_int32", _repeat_inputs([1, 2, 3]))
        assert str(info.value.status()) == "StatusCode.INVALID_ARGUMENT"


def test_a_streamed_request_deadline_restarts_at_each_answer(stream: Stream, gates: Path) -> None:
    closed_before = len(lines(gates, "ticker", ".closed"))
    hold = gates / "ticker.hold"
    hold.touch()
    try:  # the first answer comes at once; the second waits on the gate past the 300 ms deadline
        stream.client.async_stream_infer("ticker", [_input("COUNT", [5])], request_id="slow", timeout=300_000)
        first = stream.get()
        assert int(first.as_numpy("OUT")[0]) == 0
        error = stream.get()
        assert isinstance(error, InferenceServerException)
        assert "no answer 2 within 300 ms" in error.message()
    finally:
        hold.unlink(missing_ok=True)
    # the generator, past its deadline, is closed at its next yield: the ticker's one instance is
    # free again before the next test holds the gate (else it would wait on that gate too)
    wait_until(lambda: len(lines(gates, "ticker", ".closed")) > closed_before, "the late generator closed")


def test_a_cancelled_stream_frees_everything(server: RunningServer, gates: Path) -> None:
    closed_before = len(lines(gates, "ticker", ".closed"))
    hold = gates / "ticker.hold"
    hold.touch()
    s = Stream(server.grpc_target)
    try:
        s.client.async_stream_infer("acc_stream", [_input("INPUT", [5])], sequence_id=5050, sequence_start=True)
        assert s.get().as_numpy("OUTPUT").tolist() == [5]
        s.client.async_stream_infer("ticker", [_input("COUNT", [1000])], request_id="long")
        assert int(s.get().as_numpy("OUT")[0]) == 0  # then it waits on the gate, mid-stream
        s.client.async_stream_infer("acc_stream", [_input("INPUT", [1])], sequence_id=5050)  # another model: runs
        assert s.get().as_numpy("OUTPUT").tolist() == [6]
        assert metric(server.url, "modelpod_sequences", model="acc_stream") == 1
    finally:
        s.close(cancel=True)
    # the sequence the stream started ends with it, its state freed
    wait_until(lambda: "5050" in lines(gates, "acc_stream", ".freed"), "the stream's sequence freed")
    assert metric(server.url, "modelpod_sequences", model="acc_stream") == 0
    hold.unlink()  # the generator reaches its next yield, sees the stream gone and is closed
    wait_until(lambda: len(lines(gates, "ticker", ".closed")) > closed_before, "the generator closed")
    wait_until(lambda: metric(server.url, "modelpod_in_flight", model="ticker") == 0, "nothing left in flight")
    yields = len(lines(gates, "ticker", ".yields"))
    # the server goes on serving, streams and the rest
    again = Stream(server.grpc_target)
    try:
        again.client.async_stream_infer("ticker", [_input("COUNT", [2])], request_id="after")
        assert [int(again.get().as_numpy("OUT")[0]) for _ in range(2)] == [0, 1]
    finally:
        again.close()
    assert len(lines(gates, "ticker", ".yields")) == yields + 2  # the cancelled one yielded no more
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


def test_a_stream_holds_at_most_its_in_flight_limit(server: RunningServer, gates: Path) -> None:
    hold = gates / "held.hold"
    hold.touch()
    s = Stream(server.grpc_target)
    try:
        for i in range(100):
            s.client.async_stream_infer("held", [_input("x", [float(i)], "FP32")], request_id=str(i))
        wait_until(lambda: metric(server.url, "modelpod_in_flight", model="held") == 64, "64 requests in flight")
        assert metric(server.url, "modelpod_in_flight", model="held") == 64  # the rest wait unread
        hold.unlink()
        ids = set()
        for _ in range(100):
            result = s.get()
            assert not isinstance(result, InferenceServerException), result
            ids.add(result.get_response().id)
        assert ids == {str(i) for i in range(100)}
    finally:
        hold.unlink(missing_ok=True)
        s.close()


def test_stream_messages_are_bounded_like_model_infer(tmp_path: Path) -> None:
    package = pack_addition(tmp_path / "addition")
    with running_server(package, tmp_path, "--max-body-mb", "1") as server:
        big = np.ones(512 * 1024, np.float32)  # 2 MiB per input
        s = Stream(server.grpc_target)
        try:
            s.client.async_stream_infer("addition", [_input("x", big, "FP32"), _input("y", big, "FP32")])
            error = s.get()
            assert isinstance(error, InferenceServerException) and "RESOURCE_EXHAUSTED" in str(error.status())
        finally:
            s.close()
        again = Stream(server.grpc_target)
        try:
            again.client.async_stream_infer("addition", [_input("x", [1.0], "FP32"), _input("y", [1.0], "FP32")])
            assert again.get().as_numpy("out").tolist() == [2.0]
        finally:
            again.close()


def test_a_stream_needs_the_token_per_request(tmp_path: Path) -> None:
    package = pack_addition(tmp_path / "addition")
    with running_server(package, tmp_path, "--token", "s3cret") as server:
        inputs = [_input("x", [1.0], "FP32"), _input("y", [1.0], "FP32")]
        for headers, ok in [(None, False), ({"authorization": "wrong"}, False), ({"authorization": "s3cret"}, True)]:
            client = grpcclient.InferenceServerClient(server.grpc_target)
            answers: queue.Queue = queue.Queue()
            client.start_stream(callback=lambda result, error: answers.put(error or result), headers=headers)
            try:
                try:
                    client.async_stream_infer("addition", inputs)
                except InferenceServerException:  # refused as it opened: the reason came to the callback
                    assert not ok
                answer = answers.get(timeout=60)
            finally:
                client.stop_stream()
                client.close()
            if ok:
                assert answer.as_numpy("out").tolist() == [2.0]
            else:
                assert isinstance(answer, InferenceServerException) and "token" in answer.message().lower()


def _idle_stream(stub: Any, release: threading.Event, metadata: tuple = ()) -> Any:
    """A ModelStreamInfer call that sends nothing until ``release`` is set."""
    def requests() -> Iterator[Any]:
        release.wait(60)
        return
        yield

    return stub.ModelStreamInfer(requests(), metadata=metadata, timeout=60)


def test_idle_streams_cannot_take_every_call_slot(tmp_path: Path) -> None:
    package = pack_addition(tmp_path / "addition")
    with running_server(package, tmp_path, "--token", "s3cret", "--max-grpc-calls", "8") as server:
        channel = grpc.insecure_channel(server.grpc_target)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        release = threading.Event()
        try:
            # without a token the stream is refused when it opens, before it sends anything
            with pytest.raises(grpc.RpcError) as refused:
                next(_idle_stream(stub, release))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as refused:
                next(_idle_stream(stub, release, (("authorization", "wrong"),)))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # with it: at most half of --max-grpc-calls streams; unary calls keep their room
            held = [_idle_stream(stub, release, (("authorization", "s3cret"),)) for _ in range(4)]
            time.sleep(1.0)
            with pytest.raises(grpc.RpcError) as full:
                next(_idle_stream(stub, release, (("authorization", "s3cret"),)))
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "half of --max-grpc-calls" in \
                full.value.details()
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
            ready = stub.ModelReady(service_pb2.ModelReadyRequest(name="addition"), timeout=10,
                                    metadata=(("authorization", "s3cret"),))
            assert ready.ready
        finally:
            release.set()
            channel.close()
        # once they end, streams open again
        with grpcclient.InferenceServerClient(server.grpc_target) as client:
            answers: queue.Queue = queue.Queue()
            client.start_stream(callback=lambda result, error: answers.put(error or result),
                                headers={"authorization": "s3cret"})
            client.async_stream_infer("addition", [_input("x", [1.0], "FP32"), _input("y", [2.0], "FP32")])
            assert answers.get(timeout=60).as_numpy("out").tolist() == [3.0]
            client.stop_stream()
        del held
