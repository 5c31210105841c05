"""KServe v2 REST with Triton's binary tensor extension, driven by unmodified tritonclient.http / .aio."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.helpers.packages import (
    ALL_DTYPES,
    V2_DATATYPES,
    assert_same,
    build_repository,
    sample,
    session_root,
    spec_dtype,
)
from tests.helpers.servers import RunningServer, module_server
from pathlib import Path
from tests.helpers.sched_models import (
    SCHED_DIR_ENV, calls, eas_outputs, eas_request, metric, pack_counter, v2_body, write_config,
)

pytestmark = pytest.mark.timeout(120)

JSON_DTYPES = [d for d in ALL_DTYPES if d != "bfloat16"]  # tritonclient refuses BF16 as JSON


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = build_repository(session_root(tmp_path_factory))
    yield from module_server(tmp_path_factory, repo)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.host) as c:
        yield c


def _input(name: str, array: np.ndarray, binary: bool = True, module=httpclient) -> httpclient.InferInput:
    tensor = module.InferInput(name, list(array.shape), V2_DATATYPES[spec_dtype(array)])
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


# -- health and metadata ---------------------------------------------------------------------------
def test_live_and_ready(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_server_metadata_lists_binary_extension(client: httpclient.InferenceServerClient) -> None:
    meta = client.get_server_metadata()
    assert meta["name"] == "modelpod"
    assert isinstance(meta["version"], str) and meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_model_metadata_datatypes(client: httpclient.InferenceServerClient, dtype: str) -> None:
    meta = client.get_model_metadata(f"echo_{dtype}")
    assert meta["name"] == f"echo_{dtype}"
    assert meta["platform"] == "python"
    assert meta["inputs"] == [{"name": "x", "datatype": V2_DATATYPES[dtype], "shape": [-1, -1]}]
    assert meta["outputs"] == [{"name": "y", "datatype": V2_DATATYPES[dtype], "shape": [-1, -1]}]


def test_model_metadata_fixed_symbol_and_none_dims(client: httpclient.InferenceServerClient) -> None:
    multi = client.get_model_metadata("multi")
    assert {t["name"]: t["shape"] for t in multi["inputs"]} == {"x": [-1, 2], "k": [-1], "s": [-1]}
    assert {t["name"]: t["datatype"] for t in multi["outputs"]} == {"xo": "FP32", "ko": "INT64", "s_bytes": "BYTES"}
    scaled = client.get_model_metadata("scaled")  # shape (None,)
    assert scaled["inputs"][0]["shape"] == [-1]


def test_model_ready(client: httpclient.InferenceServerClient, server: RunningServer) -> None:
    assert client.is_model_ready("addition")
    assert client.is_model_ready("scaled", "1")
    assert not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("scaled", "7")
    response = httpx.get(f"{server.url}/v2/models/no_such_model/ready")
    assert response.status_code == 400  # what Triton answers for an unknown or unready model
    assert "no_such_model" in response.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/scaled/versions/7/ready").status_code == 400


def test_unknown_model_metadata_is_404(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.status() == "404"
    assert "no_such_model" in info.value.message()


# -- infer -------------------------------------------------------------------------------------------
def test_infer_binary_default_echoes_request_id(client: httpclient.InferenceServerClient) -> None:
    x = np.arange(5, dtype=np.float32)
    y = np.full(5, 0.5, dtype=np.float32)
    result = client.infer("addition", [_input("x", x), _input("y", y)], request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_name"] == "addition"
    assert response["model_version"] == "1"
    (out,) = response["outputs"]
    assert out["parameters"]["binary_data_size"] == 20  # binary_data_output: true by default
    assert "data" not in out
    np.testing.assert_array_equal(result.as_numpy("out"), x + y)


def test_infer_json_inputs_and_json_outputs(client: httpclient.InferenceServerClient) -> None:
    x = np.arange(4, dtype=np.float32)
    outputs = [httpclient.InferRequestedOutput("out", binary_data=False)]
    result = client.infer("addition", [_input("x", x, False), _input("y", x, False)], outputs=outputs)
    (out,) = result.get_response()["outputs"]
    assert out["data"] == [0.0, 2.0, 4.0, 6.0]
    assert "binary_data_size" not in out.get("parameters", {})
    np.testing.assert_array_equal(result.as_numpy("out"), x * 2)


def test_infer_mixed_binary_and_json_inputs(client: httpclient.InferenceServerClient) -> None:
    x = np.arange(3, dtype=np.float32)
    y = np.array([10, 20, 30], dtype=np.float32)
    result = client.infer("addition", [_input("x", x, True), _input("y", y, False)])
    np.testing.assert_array_equal(result.as_numpy("out"), x + y)


def test_mixed_binary_and_json_outputs(client: httpclient.InferenceServerClient) -> None:
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    k = np.array([5, 6], dtype=np.int64)
    s = np.array([b"ab", b"c"], dtype=object)
    outputs = [
        httpclient.InferRequestedOutput("s_bytes", binary_data=True),
        httpclient.InferRequestedOutput("xo", binary_data=False),
        httpclient.InferRequestedOutput("ko", binary_data=True),
    ]
    result = client.infer("multi", [_input("x", x), _input("k", k, False), _input("s", s)], outputs=outputs)
    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert set(by_name) == {"xo", "ko", "s_bytes"}
    assert "data" in by_name["xo"] and "binary_data_size" in by_name["ko"]["parameters"]
    np.testing.assert_array_equal(result.as_numpy("xo"), x * 2)
    np.testing.assert_array_equal(result.as_numpy("ko"), k + 1)
    assert list(result.as_numpy("s_bytes")) == [b"AB", b"C"]


def test_binary_data_output_parameter(server: RunningServer) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}],
            "parameters": {"binary_data_output": True}}
    response = httpx.post(f"{server.url}/v2/models/scaled/versions/1/infer", json=body)
    assert response.status_code == 200
    json_len = int(response.headers["inference-header-content-length"])
    import json

    doc = json.loads(response.content[:json_len])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 8
    np.testing.assert_array_equal(np.frombuffer(response.content[json_len:], np.float32), [1, 2])
    # without it, a plain JSON client gets plain JSON back
    del body["parameters"]
    plain = httpx.post(f"{server.url}/v2/models/scaled/versions/1/infer", json=body)
    assert plain.status_code == 200
    assert "inference-header-content-length" not in plain.headers
    assert plain.json()["outputs"][0]["data"] == [1.0, 2.0]


def test_requested_output_subset(client: httpclient.InferenceServerClient) -> None:
    x = np.ones((1, 2), dtype=np.float32)
    inputs = [_input("x", x), _input("k", np.array([1], np.int64)), _input("s", np.array([b"q"], dtype=object))]
    result = client.infer("multi", inputs, outputs=[httpclient.InferRequestedOutput("ko")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["ko"]
    np.testing.assert_array_equal(result.as_numpy("ko"), [2])
    assert result.as_numpy("xo") is None


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_every_dtype_round_trips_binary(client: httpclient.InferenceServerClient, dtype: str) -> None:
    x = sample(dtype)
    result = client.infer(f"echo_{dtype}", [_input("x", x)])
    assert result.get_response()["outputs"][0]["datatype"] == V2_DATATYPES[dtype]
    assert_same(result.as_numpy("y"), x, dtype)


@pytest.mark.parametrize("dtype", JSON_DTYPES)
def test_every_dtype_round_trips_json(client: httpclient.InferenceServerClient, dtype: str) -> None:
    x = sample(dtype, raw_bytes=False)
    outputs = [httpclient.InferRequestedOutput("y", binary_data=False)]
    result = client.infer(f"echo_{dtype}", [_input("x", x, binary=False)], outputs=outputs)
    (out,) = result.get_response()["outputs"]
    assert "data" in out and out["datatype"] == V2_DATATYPES[dtype]
    assert_same(result.as_numpy("y"), x, dtype)


def test_bf16_output_is_binary_even_when_json_requested(client: httpclient.InferenceServerClient) -> None:
    x = sample("bfloat16")
    outputs = [httpclient.InferRequestedOutput("y", binary_data=False)]
    result = client.infer("echo_bfloat16", [_input("x", x)], outputs=outputs)
    assert_same(result.as_numpy("y"), x, "bfloat16")


def test_scalar_and_empty_tensors(client: httpclient.InferenceServerClient) -> None:
    empty = np.zeros((0, 3), dtype=np.float32)
    result = client.infer("echo_float32", [_input("x", empty)])
    assert result.as_numpy("y").shape == (0, 3)


def test_eight_mib_tensor(client: httpclient.InferenceServerClient) -> None:
    x = np.random.default_rng(0).standard_normal((1024, 2048)).astype(np.float32)  # 8 MiB
    result = client.infer("echo_float32", [_input("x", x)])
    np.testing.assert_array_equal(result.as_numpy("y"), x)


# -- versions ------------------------------------------------------------------------------------------
def test_versions(client: httpclient.InferenceServerClient) -> None:
    x = np.array([1, 2, 3], dtype=np.float32)
    default = client.infer("scaled", [_input("x", x)])
    assert default.get_response()["model_version"] == "2"  # the highest version is the default
    np.testing.assert_array_equal(default.as_numpy("y"), x * 2)
    v1 = client.infer("scaled", [_input("x", x)], model_version="1")
    assert v1.get_response()["model_version"] == "1"
    np.testing.assert_array_equal(v1.as_numpy("y"), x)
    assert client.get_model_metadata("scaled", "1")["versions"] == ["1"]
    assert client.get_model_metadata("scaled")["versions"] == ["2"]
    with pytest.raises(InferenceServerException) as info:
        client.infer("scaled", [_input("x", x)], model_version="3")
    assert info.value.status() == "404"
    assert "version 3" in info.value.message()


# -- tritonclient.http.aio -----------------------------------------------------------------------------
def test_aio_client(server: RunningServer) -> None:
    async def main() -> None:
        client = aioclient.InferenceServerClient(server.host)
        try:
            assert await client.is_server_live()
            assert await client.is_server_ready()
            assert "binary_tensor_data" in (await client.get_server_metadata())["extensions"]
            meta = await client.get_model_metadata("multi")
            assert meta["outputs"][2] == {"name": "s_bytes", "datatype": "BYTES", "shape": [-1]}
            assert await client.is_model_ready("addition")
            assert not await client.is_model_ready("no_such_model")
            for dtype in ALL_DTYPES:
                x = sample(dtype)
                result = await client.infer(f"echo_{dtype}", [_input("x", x, module=aioclient)], request_id=dtype)
                assert result.get_response()["id"] == dtype
                assert_same(result.as_numpy("y"), x, dtype)
            x = np.arange(3, dtype=np.float32)
            json_out = [aioclient.InferRequestedOutput("out", binary_data=False)]
            result = await client.infer("addition", [_input("x", x, False, aioclient), _input("y", x, True, aioclient)],
                                        outputs=json_out)
            np.testing.assert_array_equal(result.as_numpy("out"), x * 2)
            v1 = await client.infer("scaled", [_input("x", x, module=aioclient)], model_version="1")
            np.testing.assert_array_equal(v1.as_numpy("y"), x)
            big = np.ones((1024, 2048), dtype=np.float32)
            result = await client.infer("echo_float32", [_input("x", big, module=aioclient)])
            np.testing.assert_array_equal(result.as_numpy("y"), big)
            with pytest.raises(InferenceServerException) as info:
                await client.infer("no_such_model", [_input("x", x, module=aioclient)])
            assert info.value.status() == "404"
        finally:
            await client.close()

    asyncio.run(main())


@pytest.mark.parametrize("header", ["nan", "inf", "-5", "0", "soon"])
def test_a_timeout_ms_header_that_is_not_a_positive_number_is_a_400(tmp_path: Path, serve_factory, header) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    pack_counter(tmp_path / "models" / "queued", "queued")
    config = write_config(tmp_path / "services.json", [
        {"name": "queued", "model_path": "models/queued", "metadata": {"execution": "queued"}},
    ])
    server = serve_factory(config, "--grpc-port", "-1", env={SCHED_DIR_ENV: str(folder)})
    x = np.array([5, 0], np.float32)
    response = httpx.post(f"{server.url}/v2/models/queued/infer", json=v2_body(x), headers={"timeout-ms": header})
    assert response.status_code == 400, response.text
    assert "timeout-ms" in response.json()["error"]
    response = httpx.post(f"{server.url}/api/predict/queued", content=eas_request(x), headers={"timeout-ms": header})
    assert response.status_code == 400 and "timeout-ms" in response.text, response.text
    # nothing was left behind: the model still answers, and no request stays in flight
    response = httpx.post(f"{server.url}/v2/models/queued/infer", json=v2_body(x), headers={"timeout-ms": "30000"})
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [6.0, 1.0]
    np.testing.assert_array_equal(
        eas_outputs(httpx.post(f"{server.url}/api/predict/queued", content=eas_request(x),
                               headers={"timeout-ms": "30000"}).content)["y"], [6.0, 1.0])
    assert metric(server.url, "modelpod_in_flight", model="queued") == 0
    assert [v for _, v in calls(folder, "queued")] == ["5.0", "5.0"]


def _plain(x: list, y: list, **extra) -> dict:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(x)], "data": x},
                       {"name": "y", "datatype": "FP32", "shape": [len(y)], "data": y}], **extra}


def test_a_plain_json_request_answers_as_any_other(server: RunningServer) -> None:
    """Most requests carry only inputs and take the short path; every answer must be the one the
    general path gives, and everything the general path checks stays checked."""
    url = f"{server.url}/v2/models/addition/infer"
    plain = httpx.post(url, json=_plain([1, 2.5], [3, 4]))
    general = httpx.post(url, json=_plain([1, 2.5], [3, 4], id="7"))
    assert plain.status_code == general.status_code == 200
    assert plain.headers["content-type"] == general.headers["content-type"] == "application/json"
    assert {**general.json(), "id": None} == {**plain.json(), "id": None}
    assert plain.json()["outputs"] == [{"name": "out", "datatype": "FP32", "shape": [2], "data": [4.0, 6.5]}]
    # the timeout-ms header is still checked, and compression still offered
    bad = httpx.post(url, json=_plain([1], [2]), headers={"timeout-ms": "0"})
    assert bad.status_code == 400 and "timeout-ms" in bad.json()["error"]
    zipped = httpx.post(url, json=_plain([1], [2]), headers={"accept-encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.headers["content-encoding"] == "gzip"
    assert zipped.json()["outputs"][0]["data"] == [3.0]
    # what the plain path leaves gets the general path's messages
    for body, words in [
        (_plain([1, 2], [3]), "symbol"),
        (_plain(["1"], [2]), "must be numbers"),
        ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1]},
                     {"name": "y", "datatype": "FP32", "shape": [1], "data": [1]}]}, "expected datatype FP32, got FP64"),
        (_plain([1], [1]) | {"inputs": _plain([1], [1])["inputs"][:1]}, "missing input 'y'"),
    ]:
        response = httpx.post(url, json=body)
        assert response.status_code == 400 and words in response.json()["error"], response.text
