"""The v2 ``timeout`` request parameter (µs) follows the ``timeout-ms`` header's rule on REST and gRPC:
a positive number shortens the deadline, anything else is a 400 / INVALID_ARGUMENT naming it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.packages import build_repository, session_root
from tests.helpers.servers import RunningServer, module_server

pytestmark = pytest.mark.timeout(120)

BAD = [0, -1, -0.5, "abc", "5000", True, None]
MESSAGE = "parameter 'timeout' must be a positive number of microseconds, got "


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from module_server(tmp_path_factory, build_repository(session_root(tmp_path_factory)))


def _body(parameters: dict) -> dict:
    return {"parameters": parameters,
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}


@pytest.mark.parametrize("value", BAD)
def test_a_timeout_parameter_that_is_not_a_positive_number_is_a_400(server: RunningServer, value) -> None:
    response = httpx.post(f"{server.url}/v2/models/scaled/infer", json=_body({"timeout": value}))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == MESSAGE + repr(value)


def test_tritonclient_timeouts_of_zero_or_below_are_refused_on_http_and_grpc(server: RunningServer) -> None:
    x = np.array([1, 2], np.float32)
    with httpclient.InferenceServerClient(server.host) as client:
        tensor = httpclient.InferInput("x", [2], "FP32")
        tensor.set_data_from_numpy(x)
        for value in (0, -1):
            with pytest.raises(InferenceServerException) as info:
                client.infer("scaled", [tensor], timeout=value)
            assert info.value.status() == "400" and info.value.message() == MESSAGE + repr(value)
        np.testing.assert_array_equal(client.infer("scaled", [tensor], timeout=30_000_000).as_numpy("y"), x * 2)
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        tensor = grpcclient.InferInput("x", [2], "FP32")
        tensor.set_data_from_numpy(x)
        for value in (0, -1):
            with pytest.raises(InferenceServerException) as info:
                client.infer("scaled", [tensor], timeout=value)
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert info.value.message() == MESSAGE + repr(value)
        np.testing.assert_array_equal(client.infer("scaled", [tensor], timeout=30_000_000).as_numpy("y"), x * 2)


def test_a_string_or_bool_timeout_parameter_on_grpc_is_invalid_argument(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for field, value in (("string_param", "abc"), ("bool_param", True), ("double_param", -2.5)):
            request = service_pb2.ModelInferRequest(model_name="scaled")
            tensor = request.inputs.add(name="x", datatype="FP32", shape=[2])
            tensor.contents.fp32_contents.extend([1, 2])
            setattr(request.parameters["timeout"], field, value)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == MESSAGE + repr(value)


def test_the_parameter_and_the_header_are_both_checked(server: RunningServer) -> None:
    # a bad header is refused even beside a good parameter, and a bad parameter beside a good header
    response = httpx.post(f"{server.url}/v2/models/scaled/infer", json=_body({"timeout": 30_000_000}),
                          headers={"timeout-ms": "0"})
    assert response.status_code == 400 and "timeout-ms" in response.json()["error"]
    response = httpx.post(f"{server.url}/v2/models/scaled/infer", json=_body({"timeout": "soon"}),
                          headers={"timeout-ms": "30000"})
    assert response.status_code == 400 and response.json()["error"] == MESSAGE + "'soon'"
    response = httpx.post(f"{server.url}/v2/models/scaled/infer", json=_body({"timeout": 30_000_000}),
                          headers={"timeout-ms": "30000"})
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [2.0, 4.0]
