"""TF Serving REST (``/v1/models/...``) driven by plain httpx with TF Serving request bodies."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.packages import build_repository, session_root, write_service_config
from tests.helpers.servers import RunningServer, module_server, running_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = build_repository(session_root(tmp_path_factory))
    yield from module_server(tmp_path_factory, repo)


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def b64(raw: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(raw).decode()}


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


# -- status and metadata ---------------------------------------------------------------------------
def test_status_lists_every_version(http: httpx.Client) -> None:
    response = http.get("/v1/models/scaled")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    statuses = response.json()["model_version_status"]
    assert [s["version"] for s in statuses] == ["1", "2"]
    for status in statuses:
        assert status["state"] == "AVAILABLE"
        assert status["status"] == {"error_code": "OK", "error_message": ""}


def test_status_of_one_version_and_label(http: httpx.Client) -> None:
    one = http.get("/v1/models/scaled/versions/1").json()["model_version_status"]
    assert [s["version"] for s in one] == ["1"]
    latest = http.get("/v1/models/scaled/labels/latest")
    assert latest.status_code == 200
    assert [s["version"] for s in latest.json()["model_version_status"]] == ["2"]
    assert "canary" in _error(http.get("/v1/models/scaled/labels/canary"), 404)


def test_status_errors(http: httpx.Client) -> None:
    assert "nope" in _error(http.get("/v1/models/nope"), 404)
    assert "9" in _error(http.get("/v1/models/scaled/versions/9"), 404)
    assert "Failed to convert version" in _error(http.get("/v1/models/scaled/versions/99999999999999999999999"), 400)


def test_metadata(http: httpx.Client) -> None:
    response = http.get("/v1/models/multi/metadata")
    assert response.status_code == 200
    doc = response.json()
    assert doc["model_spec"] == {"name": "multi", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    x = sig["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT"
    assert x["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}], "unknown_rank": False}
    assert sig["inputs"]["k"]["dtype"] == "DT_INT64"
    assert sig["inputs"]["s"]["dtype"] == "DT_STRING"
    assert set(sig["outputs"]) == {"xo", "ko", "s_bytes"}


def test_metadata_of_a_version(http: httpx.Client) -> None:
    doc = http.get("/v1/models/scaled/versions/1/metadata").json()
    assert doc["model_spec"]["version"] == "1"
    assert http.get("/v1/models/scaled/metadata").json()["model_spec"]["version"] == "2"


# -- predict -----------------------------------------------------------------------------------------
def test_row_format_single_input_and_output(http: httpx.Client) -> None:
    response = http.post("/v1/models/scaled:predict", json={"instances": [1.0, 2.5, -3.0]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": [2.0, 5.0, -6.0]}  # latest version (2) doubles


def test_columnar_format_single_input_and_output(http: httpx.Client) -> None:
    response = http.post("/v1/models/scaled/versions/1:predict", json={"inputs": [1.0, 2.0]})
    assert response.json() == {"outputs": [1.0, 2.0]}
    response = http.post("/v1/models/scaled/labels/latest:predict", json={"inputs": {"x": [1.0, 2.0]}})
    assert response.json() == {"outputs": [2.0, 4.0]}


def test_row_format_multiple_inputs_and_outputs(http: httpx.Client) -> None:
    body = {"instances": [
        {"x": [1.0, 2.0], "k": 10, "s": "ab"},
        {"x": [3.0, 4.0], "k": -1, "s": b64(b"\xffz")},
    ]}
    response = http.post("/v1/models/multi:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [
        {"xo": [2.0, 4.0], "ko": 11, "s_bytes": b64(b"AB")},
        {"xo": [6.0, 8.0], "ko": 0, "s_bytes": b64(b"\xffZ")},
    ]}


def test_columnar_format_multiple_inputs_and_outputs(http: httpx.Client) -> None:
    body = {"signature_name": "serving_default",
            "inputs": {"x": [[1.0, 2.0]], "k": [5], "s": [b64(b"\x00q")]}}
    response = http.post("/v1/models/multi:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": {"xo": [[2.0, 4.0]], "ko": [6], "s_bytes": [b64(b"\x00Q")]}}


def test_plain_string_outputs_without_bytes_suffix(http: httpx.Client) -> None:
    body = {"inputs": [["a", "b"], [b64(b"c"), "d"]]}
    response = http.post("/v1/models/echo_string:predict", json=body)
    assert response.json() == {"outputs": [["a", "b"], ["c", "d"]]}


def test_b64_key_written_with_unicode_escapes_still_decodes(http: httpx.Client) -> None:
    """Numeric bodies skip the b64 walk when the raw JSON has no "b64"; an escaped key must not."""
    body = b'{"inputs": [[{"\\u0062\\u0036\\u0034": "' + base64.b64encode(b"zz") + b'"}, "d"]]}'
    response = http.post("/v1/models/echo_string:predict", content=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": [["zz", "d"]]}


def test_an_object_where_a_number_belongs_is_400(http: httpx.Client) -> None:
    message = _error(http.post("/v1/models/scaled:predict", json={"instances": [{"a": 1.0}]}), 400)
    assert "x" in message
    message = _error(http.post("/v1/models/multi:predict", json={"inputs": {"x": [[{"a": 1}, 2.0]], "k": [5],
                                                                             "s": ["q"]}}), 400)
    assert "'x'" in message, message


def test_ints_and_bools(http: httpx.Client) -> None:
    response = http.post("/v1/models/echo_bool:predict", json={"instances": [[True, False]]})
    assert response.json() == {"predictions": [[True, False]]}
    response = http.post("/v1/models/echo_int64:predict", json={"inputs": [[-(2**63), 2**63 - 1]]})
    assert response.json() == {"outputs": [[-(2**63), 2**63 - 1]]}


def test_unknown_signature(http: httpx.Client) -> None:
    message = _error(http.post("/v1/models/scaled:predict", json={"signature_name": "nope", "instances": [1.0]}), 400)
    assert "nope" in message


# -- errors --------------------------------------------------------------------------------------------
def test_both_keys_is_400(http: httpx.Client) -> None:
    message = _error(http.post("/v1/models/scaled:predict", json={"instances": [1.0], "inputs": [1.0]}), 400)
    assert "only one of 'inputs' or 'instances'" in message


def test_neither_key_is_400(http: httpx.Client) -> None:
    message = _error(http.post("/v1/models/scaled:predict", json={"signature_name": "serving_default"}), 400)
    assert "Missing 'inputs' or 'instances' key" in message


def test_wrong_method_is_malformed(http: httpx.Client) -> None:
    assert _error(http.get("/v1/models/scaled:predict"), 400) == "Malformed request: GET /v1/models/scaled:predict"
    assert "Malformed request: POST" in _error(http.post("/v1/models/scaled/metadata", content=b"{}"), 400)
    assert "Malformed request" in _error(http.get("/v1/models/scaled/bogus/path"), 400)


def test_missing_model_name(http: httpx.Client) -> None:
    assert "Missing model name" in _error(http.get("/v1/models"), 400)


SERVED = ("addition, echo_bfloat16, echo_bool, echo_float16, echo_float32, echo_float64, echo_int16, echo_int32, "
          "echo_int64, echo_int8, echo_string, echo_uint16, echo_uint32, echo_uint64, echo_uint8, liar, multi, "
          "raises, scaled")


def test_unknown_model_is_404_listing_the_served_models(http: httpx.Client) -> None:
    response = http.post("/v1/models/nope:predict", json={"instances": [1.0]})
    assert _error(response, 404) == f"Servable not found for request: Latest(nope) (models: {SERVED})"
    assert _error(http.get("/v1/models/nope/metadata"), 404) == _error(response, 404)
    assert _error(http.get("/v1/models/nope"), 404) == f"Could not find any versions of model nope (models: {SERVED})"
    versioned = _error(http.post("/v1/models/nope/versions/1:predict", json={"instances": [1.0]}), 404)
    assert versioned == f"model 'nope' is not served here (models: {SERVED})"  # v2's words, the same list


def test_the_404_list_leaves_out_models_with_a_token_of_their_own(tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = build_repository(session_root(tmp_path_factory))
    config = write_service_config(tmp_path_factory.mktemp("config") / "services.json", [
        {"name": "guarded", "model_path": str(repo / "addition" / "1"), "token": "its-own"},
        {"name": "open", "model_path": str(repo / "addition" / "1")},
    ])
    with running_server(config, tmp_path_factory.mktemp("server"), "--grpc-port", "-1") as server:
        for headers in ({}, {"Authorization": "its-own"}):  # hidden even from its token's holder, as on v2
            tf = httpx.post(f"{server.url}/v1/models/nope:predict", json={"instances": [1.0]}, headers=headers)
            assert _error(tf, 404) == "Servable not found for request: Latest(nope) (models: open)"
            v2 = httpx.post(f"{server.url}/v2/models/nope/infer", json={"inputs": []}, headers=headers)
            assert v2.json()["error"] == ("Request for unknown model: 'nope' is not found; it is not served here "
                                          "(models: open)")  # Triton's wording first on v2


def test_bad_bodies_are_400_naming_the_problem(http: httpx.Client) -> None:
    assert "JSON" in _error(http.post("/v1/models/scaled:predict", content=b"{not json"), 400)
    assert "x" in _error(http.post("/v1/models/scaled:predict", json={"instances": ["a", "b"]}), 400)
    message = _error(http.post("/v1/models/multi:predict", json={"instances": [{"x": [1.0, 2.0]}]}), 400)
    assert "k" in message and "s" in message
    assert "b64" in _error(http.post("/v1/models/echo_string:predict", json={"inputs": [[{"b64": "%%%"}]]}), 400)
    # the server still answers afterwards
    assert http.post("/v1/models/scaled:predict", json={"instances": [1.0]}).json() == {"predictions": [2.0]}
