"""KServe v2 gRPC (inference.GRPCInferenceService), driven by the unmodified tritonclient.grpc."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.packages import ALL_DTYPES, V2_DATATYPES, assert_same, build_repository, sample, session_root
from tests.helpers.servers import RunningServer, module_server
from pathlib import Path
import httpx
from tests.helpers.addition import pack_addition

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = build_repository(session_root(tmp_path_factory))
    yield from module_server(tmp_path_factory, repo)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_target) as c:
        yield c


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_live_ready_and_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "modelpod"
    assert {"model_repository", "model_configuration", "statistics"} <= set(meta.extensions)
    assert "binary_tensor_data" not in meta.extensions  # HTTP's extension: gRPC always carries raw bytes


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_model_metadata(client: grpcclient.InferenceServerClient, dtype: str) -> None:
    meta = client.get_model_metadata(f"echo_{dtype}")
    assert meta.name == f"echo_{dtype}"
    assert meta.platform == "python"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", V2_DATATYPES[dtype], [-1, -1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("y", V2_DATATYPES[dtype], [-1, -1])]


def test_model_metadata_as_json(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("multi", as_json=True)
    assert {t["name"]: t["shape"] for t in meta["inputs"]} == {"x": ["-1", "2"], "k": ["-1"], "s": ["-1"]}
    assert meta["versions"] == ["1"]


def test_model_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_model_ready("addition")
    assert client.is_model_ready("scaled", "1")
    assert not client.is_model_ready("no_such_model")  # like Triton: unknown is simply not ready
    assert not client.is_model_ready("scaled", "7")


def test_infer_echoes_request_id(client: grpcclient.InferenceServerClient) -> None:
    x = np.arange(5, dtype=np.float32)
    result = client.infer("addition", [_input("x", x, "FP32"), _input("y", x, "FP32")], request_id="grpc-7")
    response = result.get_response()
    assert response.id == "grpc-7"
    assert response.model_name == "addition" and response.model_version == "1"
    np.testing.assert_array_equal(result.as_numpy("out"), x * 2)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_every_dtype_round_trips(client: grpcclient.InferenceServerClient, dtype: str) -> None:
    x = sample(dtype)
    result = client.infer(f"echo_{dtype}", [_input("x", x, V2_DATATYPES[dtype])])
    assert result.get_output("y").datatype == V2_DATATYPES[dtype]
    assert_same(result.as_numpy("y"), x, dtype)


def test_requested_output_subset_and_order(client: grpcclient.InferenceServerClient) -> None:
    x = np.ones((2, 2), dtype=np.float32)
    k = np.array([3, 4], dtype=np.int64)
    s = np.array([b"ab", b"\xff"], dtype=object)
    inputs = [_input("x", x, "FP32"), _input("k", k, "INT64"), _input("s", s, "BYTES")]
    result = client.infer("multi", inputs, outputs=[grpcclient.InferRequestedOutput("ko")])
    assert [o.name for o in result.get_response().outputs] == ["ko"]
    np.testing.assert_array_equal(result.as_numpy("ko"), k + 1)
    assert result.as_numpy("xo") is None
    # every output, asked for in a different order than the spec's
    asked = [grpcclient.InferRequestedOutput(n) for n in ("s_bytes", "xo")]
    result = client.infer("multi", inputs, outputs=asked)
    assert list(result.as_numpy("s_bytes")) == [b"AB", b"\xff"]
    np.testing.assert_array_equal(result.as_numpy("xo"), x * 2)
    # nothing asked for: all outputs
    result = client.infer("multi", inputs)
    assert {o.name for o in result.get_response().outputs} == {"xo", "ko", "s_bytes"}


def test_eight_mib_tensor_both_ways(client: grpcclient.InferenceServerClient) -> None:
    x = np.random.default_rng(1).standard_normal((1024, 2048)).astype(np.float32)  # 8 MiB, over gRPC's 4 MiB default
    result = client.infer("echo_float32", [_input("x", x, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("y"), x)


def test_versions(client: grpcclient.InferenceServerClient) -> None:
    x = np.array([1, 2], dtype=np.float32)
    default = client.infer("scaled", [_input("x", x, "FP32")])
    assert default.get_response().model_version == "2"
    np.testing.assert_array_equal(default.as_numpy("y"), x * 2)
    v1 = client.infer("scaled", [_input("x", x, "FP32")], model_version="1")
    assert v1.get_response().model_version == "1"
    np.testing.assert_array_equal(v1.as_numpy("y"), x)
    assert list(client.get_model_metadata("scaled", "1").versions) == ["1"]
    with pytest.raises(InferenceServerException) as info:
        client.infer("scaled", [_input("x", x, "FP32")], model_version="3")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "version 3" in info.value.message()


def test_unknown_model(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("no_such_model", [_input("x", np.ones(1, np.float32), "FP32")])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "no_such_model" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_typed_contents_inputs(server: RunningServer) -> None:
    """Other KServe clients send typed ``contents`` instead of raw bytes; outputs still come back raw."""
    request = service_pb2.ModelInferRequest(model_name="multi", id="typed")
    x = request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    x.contents.fp32_contents.extend([1.5, 2.5])
    k = request.inputs.add(name="k", datatype="INT64", shape=[1])
    k.contents.int64_contents.append(-4)
    s = request.inputs.add(name="s", datatype="BYTES", shape=[1])
    s.contents.bytes_contents.append(b"ok")
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert response.id == "typed"
    outputs = {o.name: (o, raw) for o, raw in zip(response.outputs, response.raw_output_contents)}
    assert np.frombuffer(outputs["xo"][1], np.float32).tolist() == [3.0, 5.0]
    assert np.frombuffer(outputs["ko"][1], np.int64).tolist() == [-3]
    assert outputs["s_bytes"][1] == b"\x02\x00\x00\x00OK"
    assert list(outputs["xo"][0].shape) == [1, 2]


def test_grpc_requests_over_max_body_mb_are_resource_exhausted(tmp_path: Path, serve_factory) -> None:
    package = pack_addition(tmp_path / "addition")
    server = serve_factory(package, "--max-body-mb", "1")
    big = np.ones(512 * 1024, np.float32)  # 2 MiB per input
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        inputs = []
        for name in ("x", "y"):
            tensor = grpcclient.InferInput(name, list(big.shape), "FP32")
            tensor.set_data_from_numpy(big)
            inputs.append(tensor)
        with pytest.raises(InferenceServerException) as info:
            client.infer("addition", inputs)
        assert "RESOURCE_EXHAUSTED" in str(info.value.status())
        # requests under the limit still work
        small = []
        for name in ("x", "y"):
            tensor = grpcclient.InferInput(name, [2], "FP32")
            tensor.set_data_from_numpy(np.array([1, 2], np.float32))
            small.append(tensor)
        np.testing.assert_array_equal(client.infer("addition", small).as_numpy("out"), [2, 4])
    # and HTTP answers 413 for the same body, as before
    response = httpx.post(f"{server.url}/v2/models/addition/infer", content=big.tobytes() * 2, timeout=60)
    assert response.status_code == 413
