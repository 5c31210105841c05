"""Bad input on every protocol: the right 4xx / gRPC code, a message naming the problem, and the
server keeps serving. Also model failures (500, never 400), body limits (413) and token auth."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.packages import build_repository, session_root, write_service_config
from tests.helpers.servers import RunningServer, module_server

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = build_repository(session_root(tmp_path_factory))
    yield from module_server(tmp_path_factory, repo, "--max-body-mb", "1")


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def triton(server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.host) as client:
        yield client


@pytest.fixture(scope="module")
def triton_grpc(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        yield client


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def still_serves(server: RunningServer) -> None:
    """The same server answers a good request on every protocol."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]},
                       {"name": "y", "datatype": "FP32", "shape": [2], "data": [3, 4]}]}
    response = httpx.post(f"{server.url}/v2/models/addition/infer", json=body, timeout=30)
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [4.0, 6.0]
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        inputs = [grpcclient.InferInput(n, [2], "FP32") for n in ("x", "y")]
        for tensor in inputs:
            tensor.set_data_from_numpy(np.ones(2, np.float32))
        np.testing.assert_array_equal(client.infer("addition", inputs).as_numpy("out"), [2, 2])


def binary_request(inputs: list[dict], blob: bytes, header_length: int | None = None) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": inputs}).encode()
    length = len(head) if header_length is None else header_length
    return head + blob, {"Inference-Header-Content-Length": str(length)}


def v2_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]


def addition_inputs(x: np.ndarray, y: np.ndarray, datatype: str = "FP32", module=httpclient) -> list:
    inputs = []
    for name, array in (("x", x), ("y", y)):
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


# -- v2 REST: bodies ---------------------------------------------------------------------------------
def test_truncated_binary_body(http: httpx.Client, server: RunningServer) -> None:
    x = np.arange(5, dtype=np.float32).tobytes()
    inputs = [{"name": "x", "datatype": "FP32", "shape": [5], "parameters": {"binary_data_size": 20}},
              {"name": "y", "datatype": "FP32", "shape": [5], "parameters": {"binary_data_size": 20}}]
    body, headers = binary_request(inputs, x + x[:7])
    message = v2_error(http.post("/v2/models/addition/infer", content=body, headers=headers), 400)
    assert "'y'" in message and "binary_data_size 20 runs past the end" in message
    still_serves(server)


def test_wrong_binary_data_size(http: httpx.Client, server: RunningServer) -> None:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [5], "parameters": {"binary_data_size": 16}},
              {"name": "y", "datatype": "FP32", "shape": [5], "parameters": {"binary_data_size": 16}}]
    body, headers = binary_request(inputs, bytes(32))
    message = v2_error(http.post("/v2/models/addition/infer", content=body, headers=headers), 400)
    assert "'x'" in message and "16 bytes" in message and "needs 20" in message
    still_serves(server)


def test_stray_binary_bytes(http: httpx.Client) -> None:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
              {"name": "y", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]
    body, headers = binary_request(inputs, bytes(12))
    assert "4 bytes of binary data that no input claims" in v2_error(
        http.post("/v2/models/addition/infer", content=body, headers=headers), 400)


def test_header_length_larger_than_body(http: httpx.Client, server: RunningServer) -> None:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
              {"name": "y", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]
    body, headers = binary_request(inputs, bytes(8), header_length=10_000)
    message = v2_error(http.post("/v2/models/addition/infer", content=body, headers=headers), 400)
    assert "Inference-Header-Content-Length is 10000" in message
    headers["Inference-Header-Content-Length"] = "lots"
    assert "Inference-Header-Content-Length" in v2_error(
        http.post("/v2/models/addition/infer", content=body, headers=headers), 400)
    still_serves(server)


def test_malformed_json(http: httpx.Client, server: RunningServer) -> None:
    message = v2_error(http.post("/v2/models/addition/infer", content=b'{"inputs": [oops'), 400)
    assert "malformed" in message
    assert "'inputs'" in v2_error(http.post("/v2/models/addition/infer", content=b"[1, 2]"), 400)
    assert "'inputs'" in v2_error(http.post("/v2/models/addition/infer", json={"inputs": []}), 400)
    still_serves(server)


@pytest.mark.parametrize(("tensor", "expected"), [
    ({"name": "x", "datatype": "FP32", "shape": [5], "data": [1, 2, 3]}, "shape [5] needs 5 elements but data has 3"),
    ({"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}, "unknown datatype 'FP99'"),
    ({"name": "x", "datatype": "FP32", "shape": [2], "data": ["a", "b"]}, "FP32 data must be numbers"),
    ({"name": "x", "datatype": "INT32", "shape": [2], "data": [1.5, 2]}, "must be integers"),
    ({"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}, "out of range for UINT8"),
    ({"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}, "non-negative ints"),
    ({"name": "x", "datatype": "FP32", "shape": [1]}, "neither 'data' nor parameters.binary_data_size"),
])
def test_json_tensor_errors(http: httpx.Client, tensor: dict, expected: str) -> None:
    message = v2_error(http.post("/v2/models/scaled/infer", json={"inputs": [tensor]}), 400)
    assert expected in message
    assert "'x'" in message


# -- v2 REST via tritonclient: spec checks ------------------------------------------------------------
def test_wrong_dtype(triton: httpclient.InferenceServerClient, server: RunningServer) -> None:
    x = np.arange(3, dtype=np.float64)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("addition", addition_inputs(x, x, "FP64"))
    assert info.value.status() == "400"
    # the wire's words, not numpy's advice (that is for in-process infer() calls)
    assert info.value.message() == "model 'addition': input 'x': expected datatype FP32, got FP64"
    binary = httpx.post(f"{server.url}/v2/models/addition/infer", json={"inputs": [
        {"name": "x", "datatype": "INT64", "shape": [1], "data": [1]},
        {"name": "y", "datatype": "FP32", "shape": [1], "data": [1]}]})
    assert v2_error(binary, 400) == "model 'addition': input 'x': expected datatype FP32, got INT64"
    strings = httpx.post(f"{server.url}/v2/models/echo_string/infer", json={"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]})
    assert v2_error(strings, 400) == "model 'echo_string': input 'x': expected datatype BYTES, got FP32"
    still_serves(server)


def test_wrong_dtype_on_the_eas_path_and_tf_serving_names_tf_dtypes(server: RunningServer) -> None:
    from modelpod.protos import eas_predict_pb2 as pb

    request = pb.PredictRequest(signature_name="serving_default")
    for name in ("x", "y"):
        request.inputs[name].dtype = pb.DT_DOUBLE
        request.inputs[name].array_shape.dim.append(2)
        request.inputs[name].double_val.extend([1, 2])
    response = httpx.post(f"{server.url}/api/predict/addition", content=request.SerializeToString())
    assert response.status_code == 400
    assert response.text == "model 'addition': input 'x': expected dtype DT_FLOAT, got DT_DOUBLE"
    assert "astype" not in response.text
    # TF Serving's JSON has no dtypes of its own: values are converted by the spec's rules
    tf = httpx.post(f"{server.url}/v1/models/addition:predict", json={"inputs": {"x": ["a"], "y": [1.0]}})
    assert tf.status_code == 400 and "astype" not in tf.json()["error"] and "'x'" in tf.json()["error"]


def test_symbol_conflict(triton: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton.infer("addition", addition_inputs(np.ones(3, np.float32), np.ones(4, np.float32)))
    assert info.value.status() == "400"
    assert "num_inputs" in info.value.message()


def test_missing_input(triton: httpclient.InferenceServerClient) -> None:
    tensor = httpclient.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.ones(2, np.float32))
    with pytest.raises(InferenceServerException) as info:
        triton.infer("addition", [tensor])
    assert info.value.status() == "400"
    assert "'y'" in info.value.message() or " y" in info.value.message()


def test_unexpected_input(triton: httpclient.InferenceServerClient) -> None:
    inputs = addition_inputs(np.ones(2, np.float32), np.ones(2, np.float32))
    extra = httpclient.InferInput("zzz", [2], "FP32")
    extra.set_data_from_numpy(np.ones(2, np.float32))
    with pytest.raises(InferenceServerException) as info:
        triton.infer("addition", [*inputs, extra])
    assert info.value.status() == "400"
    assert "zzz" in info.value.message()


def test_unknown_model(triton: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton.infer("no_such_model", addition_inputs(np.ones(2, np.float32), np.ones(2, np.float32)))
    assert info.value.status() == "404"
    assert "no_such_model" in info.value.message() and "addition" in info.value.message()


def test_unknown_output(triton: httpclient.InferenceServerClient) -> None:
    inputs = addition_inputs(np.ones(2, np.float32), np.ones(2, np.float32))
    with pytest.raises(InferenceServerException) as info:
        triton.infer("addition", inputs, outputs=[httpclient.InferRequestedOutput("nope")])
    assert info.value.status() == "400"
    assert "nope" in info.value.message()


def test_body_over_limit_is_413(triton: httpclient.InferenceServerClient, server: RunningServer) -> None:
    big = np.ones(400_000, np.float32)  # 1.6 MB each, over --max-body-mb 1
    with pytest.raises(InferenceServerException) as info:
        triton.infer("addition", addition_inputs(big, big))
    assert info.value.status() == "413"
    assert "max-body-mb" in info.value.message()
    still_serves(server)


def test_model_raising_is_500(triton: httpclient.InferenceServerClient, http: httpx.Client,
                              server: RunningServer) -> None:
    tensor = httpclient.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1, -1], np.float32))
    with pytest.raises(InferenceServerException) as info:
        triton.infer("raises", [tensor])
    assert info.value.status() == "500"
    assert "RuntimeError" in info.value.message() and "negative input" in info.value.message()
    tf = http.post("/v1/models/raises:predict", json={"instances": [-1.0]})
    assert tf.status_code == 500
    assert "negative input" in tf.json()["error"]
    assert http.post("/v1/models/raises:predict", json={"instances": [1.0]}).json() == {"predictions": [1.0]}
    still_serves(server)


def test_raw_http_garbage(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01 THIS IS NOT HTTP\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection: recv returns b""
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 ")
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert "malformed HTTP request" in json.loads(body)["error"]
    still_serves(server)


# -- gRPC -------------------------------------------------------------------------------------------
def _grpc_request(model: str, tensors: list[tuple[str, str, list[int]]], raw: list[bytes]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw)
    return request


def _grpc_error(stub: service_pb2_grpc.GRPCInferenceServiceStub, request: service_pb2.ModelInferRequest,
                code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert info.value.code() == code, info.value.details()
    return info.value.details()


def test_grpc_raw_contents_count_mismatch(stub: service_pb2_grpc.GRPCInferenceServiceStub,
                                          server: RunningServer) -> None:
    request = _grpc_request("addition", [("x", "FP32", [2]), ("y", "FP32", [2])], [bytes(8)])
    message = _grpc_error(stub, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "1 raw_input_contents for 2 inputs" in message
    still_serves(server)


def test_grpc_typed_contents_beside_raw_ones_in_tritons_words(stub: service_pb2_grpc.GRPCInferenceServiceStub,
                                                               server: RunningServer) -> None:
    """Triton's grpc_explicit_int_content_client.py matches this message."""
    request = _grpc_request("addition", [("x", "FP32", [2]), ("y", "FP32", [2])], [bytes(8)])
    request.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    message = _grpc_error(stub, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "contents field must not be specified when using raw_input_contents for 'x' for model 'addition'" \
        in message
    still_serves(server)


@pytest.mark.parametrize(("tensors", "raw", "expected"), [
    ([("x", "FP32", [2]), ("y", "FP32", [2])], [bytes(8), bytes(5)], "'y'"),
    ([("x", "FP99", [2]), ("y", "FP32", [2])], [bytes(8), bytes(8)], "unknown datatype 'FP99'"),
    ([("x", "FP32", [2])], [bytes(8)], "y"),
    ([("x", "BYTES", [2]), ("y", "FP32", [2])], [b"\x05\x00\x00\x00ab", bytes(8)], "BYTES"),
])
def test_grpc_bad_tensors(stub: service_pb2_grpc.GRPCInferenceServiceStub, tensors: list, raw: list,
                          expected: str) -> None:
    message = _grpc_error(stub, _grpc_request("addition", tensors, raw), grpc.StatusCode.INVALID_ARGUMENT)
    assert expected in message


def test_grpc_spec_errors_via_tritonclient(triton_grpc: grpcclient.InferenceServerClient,
                                           server: RunningServer) -> None:
    x = np.ones(3, np.float64)
    with pytest.raises(InferenceServerException) as info:
        triton_grpc.infer("addition", addition_inputs(x, x, "FP64", grpcclient))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message() == "model 'addition': input 'x': expected datatype FP32, got FP64"
    with pytest.raises(InferenceServerException) as info:
        triton_grpc.infer("addition", addition_inputs(np.ones(2, np.float32), np.ones(3, np.float32), module=grpcclient))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "num_inputs" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton_grpc.infer("addition", addition_inputs(np.ones(2, np.float32), np.ones(2, np.float32), module=grpcclient),
                          outputs=[grpcclient.InferRequestedOutput("nope")])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "nope" in info.value.message()
    still_serves(server)


def test_grpc_model_raising_is_internal(triton_grpc: grpcclient.InferenceServerClient) -> None:
    tensor = grpcclient.InferInput("x", [1], "FP32")
    tensor.set_data_from_numpy(np.array([-5], np.float32))
    with pytest.raises(InferenceServerException) as info:
        triton_grpc.infer("raises", [tensor])
    assert info.value.status() == "StatusCode.INTERNAL"
    assert "negative input" in info.value.message()


def test_grpc_unknown_model(triton_grpc: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton_grpc.infer("no_such_model", addition_inputs(np.ones(1, np.float32), np.ones(1, np.float32),
                                                           module=grpcclient))
    assert info.value.status() == "StatusCode.NOT_FOUND"


# -- auth ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = build_repository(session_root(tmp_path_factory))
    yield from module_server(tmp_path_factory, repo / "addition" / "1", "--token", TOKEN)


def _addition_body() -> dict:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
                       {"name": "y", "datatype": "FP32", "shape": [1], "data": [2]}]}


def test_token_v2_rest(token_server: RunningServer) -> None:
    url = f"{token_server.url}/v2/models/addition/infer"
    missing = httpx.post(url, json=_addition_body())
    assert missing.status_code == 401
    assert "token" in missing.json()["error"]
    wrong = httpx.post(url, json=_addition_body(), headers={"Authorization": "nope"})
    assert wrong.status_code == 401 and "error" in wrong.json()
    for value in (TOKEN, f"Bearer {TOKEN}"):
        ok = httpx.post(url, json=_addition_body(), headers={"Authorization": value})
        assert ok.status_code == 200
        assert ok.json()["outputs"][0]["data"] == [3.0]
    assert httpx.get(f"{token_server.url}/v2/models/addition").status_code == 401
    tf = httpx.post(f"{token_server.url}/v1/models/addition:predict", json={"inputs": {"x": [1.0], "y": [1.0]}})
    assert tf.status_code == 401


def test_token_health_is_open(token_server: RunningServer) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2"):
        assert httpx.get(token_server.url + path).status_code == 200
    with grpcclient.InferenceServerClient(token_server.grpc_target) as client:
        assert client.is_server_live() and client.is_server_ready()


def test_token_tritonclient_http(token_server: RunningServer) -> None:
    x = np.ones(2, np.float32)
    with httpclient.InferenceServerClient(token_server.host) as client:
        result = client.infer("addition", addition_inputs(x, x), headers={"Authorization": TOKEN})
        np.testing.assert_array_equal(result.as_numpy("out"), [2, 2])
        assert client.get_model_metadata("addition", headers={"Authorization": TOKEN})["name"] == "addition"
        with pytest.raises(InferenceServerException) as info:
            client.infer("addition", addition_inputs(x, x))
        assert info.value.status() == "401"


def test_token_grpc(token_server: RunningServer) -> None:
    x = np.ones(2, np.float32)
    with grpcclient.InferenceServerClient(token_server.grpc_target) as client:
        result = client.infer("addition", addition_inputs(x, x, module=grpcclient), headers={"authorization": TOKEN})
        np.testing.assert_array_equal(result.as_numpy("out"), [2, 2])
        result = client.infer("addition", addition_inputs(x, x, module=grpcclient),
                              headers={"authorization": f"Bearer {TOKEN}"})
        np.testing.assert_array_equal(result.as_numpy("out"), [2, 2])
        with pytest.raises(InferenceServerException) as info:
            client.infer("addition", addition_inputs(x, x, module=grpcclient))
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("addition")
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"


@pytest.fixture(scope="module")
def per_model_token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = build_repository(session_root(tmp_path_factory))
    config = write_service_config(tmp_path_factory.mktemp("config") / "services.json", [
        {"name": "guarded", "model_path": str(repo / "addition" / "1"), "token": TOKEN},
        {"name": "open", "model_path": str(repo / "addition" / "1")},
    ])
    yield from module_server(tmp_path_factory, config)


def test_per_model_token(per_model_token_server: RunningServer) -> None:
    base = per_model_token_server.url
    assert httpx.post(f"{base}/v2/models/open/infer", json=_addition_body()).status_code == 200
    assert httpx.post(f"{base}/v2/models/guarded/infer", json=_addition_body()).status_code == 401
    ok = httpx.post(f"{base}/v2/models/guarded/infer", json=_addition_body(), headers={"Authorization": TOKEN})
    assert ok.status_code == 200
    x = np.ones(1, np.float32)
    with grpcclient.InferenceServerClient(per_model_token_server.grpc_target) as client:
        assert client.infer("open", addition_inputs(x, x, module=grpcclient)).as_numpy("out")[0] == 2
        with pytest.raises(InferenceServerException) as info:
            client.infer("guarded", addition_inputs(x, x, module=grpcclient))
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        result = client.infer("guarded", addition_inputs(x, x, module=grpcclient), headers={"authorization": TOKEN})
        assert result.as_numpy("out")[0] == 2


# -- model bugs, connections, concurrency ---------------------------------------------------------------
def test_model_breaking_its_own_spec_is_500(triton: httpclient.InferenceServerClient,
                                            triton_grpc: grpcclient.InferenceServerClient) -> None:
    tensor = httpclient.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.ones(2, np.float32))
    with pytest.raises(InferenceServerException) as info:
        triton.infer("liar", [tensor])
    assert info.value.status() == "500"
    assert "y" in info.value.message()
    tensor = grpcclient.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.ones(2, np.float32))
    with pytest.raises(InferenceServerException) as info:
        triton_grpc.infer("liar", [tensor])
    assert info.value.status() == "StatusCode.INTERNAL"


def _http_exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_pipelined_requests_answer_in_order(server: RunningServer) -> None:
    good = json.dumps(_addition_body()).encode()
    bad = b'{"inputs": [nope'
    requests = b"".join(
        b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        for body in (good, bad, good)
    ) + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    received = _http_exchange(server.http_port, requests)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200", b"400", b"200", b"200"]
    assert received.count(b'"data":[3.0]') == 2


def test_garbage_after_a_good_request_on_one_connection(server: RunningServer) -> None:
    body = json.dumps(_addition_body()).encode()
    raw = b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    received = _http_exchange(server.http_port, raw + b"\x00\x01garbage garbage\r\n\r\n")
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200", b"400"]
    still_serves(server)


def test_chunked_request_body(http: httpx.Client) -> None:
    payload = json.dumps(_addition_body()).encode()

    def chunks() -> Iterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    response = http.post("/v2/models/addition/infer", content=chunks())
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [3.0]


def test_concurrent_good_and_bad_requests_keep_their_own_results(server: RunningServer) -> None:
    import asyncio

    import tritonclient.http.aio as aioclient

    async def one(client: aioclient.InferenceServerClient, i: int) -> None:
        x = np.full(3, i, dtype=np.float32)
        if i % 3 == 0:  # a symbol conflict, mixed in between good requests
            inputs = addition_inputs(x, np.ones(4, np.float32), module=aioclient)
            with pytest.raises(InferenceServerException) as info:
                await client.infer("addition", inputs, request_id=str(i))
            assert info.value.status() == "400"
            return
        result = await client.infer("addition", addition_inputs(x, x, module=aioclient), request_id=str(i))
        assert result.get_response()["id"] == str(i)
        np.testing.assert_array_equal(result.as_numpy("out"), x * 2)

    async def main() -> None:
        client = aioclient.InferenceServerClient(server.host, conn_limit=8)
        try:
            await asyncio.gather(*(one(client, i) for i in range(60)))
        finally:
            await client.close()

    asyncio.run(main())
    still_serves(server)
