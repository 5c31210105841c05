"""Hostile requests above the HTTP layer: declared sizes, shapes, gRPC messages, auth on every surface.

One real server holds an open model, a model guarded by its own token and a BYTES echo, with
``--model-control`` on and no server token, the setup where a per-model token must still protect
its model's control surface. Clients are tritonclient's gRPC stubs, httpx and raw protobuf.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.addition import pack_addition
from tests.helpers.servers import RunningServer
from tests.helpers.packages import build_repository, session_root, write_service_config
from tests.helpers.servers import module_server
from tests.serving.protocols.test_serve_hooks import SERVICE_PY

pytestmark = pytest.mark.timeout(180)

TOKEN = "guard-token"
ADD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]},
                  {"name": "y", "datatype": "FP32", "shape": [2], "data": [3, 4]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = build_repository(session_root(tmp_path_factory))
    config = write_service_config(tmp_path_factory.mktemp("hardening") / "services.json", [
        {"name": "guarded", "model_path": str(repo / "addition" / "1"), "token": TOKEN},
        {"name": "open", "model_path": str(repo / "addition" / "1")},
        {"name": "strings", "model_path": str(repo / "echo_string" / "1")},
    ])
    yield from module_server(tmp_path_factory, config, "--model-control", "--max-body-mb", "4")


@pytest.fixture
def stub(server: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def served(server: RunningServer, model: str = "open") -> bool:
    response = httpx.post(f"{server.url}/v2/models/{model}/infer", json=ADD, headers={"Authorization": TOKEN})
    return response.status_code == 200 and response.json()["outputs"][0]["data"] == [4.0, 6.0]


# -- 4. declared sizes are checked against the bytes present ------------------------------------
@pytest.mark.parametrize("count", [300_000_000, 10**9, 10**12])
def test_bytes_tensor_declaring_far_more_elements_than_sent_is_400(server: RunningServer, count: int) -> None:
    before = rss_kib(server.process.pid)
    data = struct.pack("<I", 0)
    header = orjson.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [count],
                                       "parameters": {"binary_data_size": len(data)}}]})
    response = httpx.post(f"{server.url}/v2/models/strings/infer", content=header + data,
                          headers={"Inference-Header-Content-Length": str(len(header))}, timeout=30)
    assert response.status_code == 400, response.text
    assert "BYTES elements need at least" in response.json()["error"]
    assert rss_kib(server.process.pid) - before < 100_000  # no slot per declared element
    assert served(server)


def test_grpc_raw_bytes_tensor_declaring_300m_elements_is_invalid_argument(server: RunningServer, stub) -> None:
    before = rss_kib(server.process.pid)
    request = service_pb2.ModelInferRequest(model_name="strings")
    request.inputs.add(name="x", datatype="BYTES", shape=[300_000_000])
    request.raw_input_contents.append(struct.pack("<I", 0))
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rss_kib(server.process.pid) - before < 100_000


# -- 13. shapes that cannot exist are bad input on every protocol ---------------------------------
@pytest.mark.parametrize("shape", [[0, 2**63], [0, 2**62], [2**32, 2**32], [-1], [True, 2]])
def test_v2_json_impossible_shapes_are_400(server: RunningServer, shape: list) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []},
                       {"name": "y", "datatype": "FP32", "shape": shape, "data": []}]}
    response = httpx.post(f"{server.url}/v2/models/open/infer", content=orjson.dumps(body))
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("shape, raw", [([-1, -1], False), ([2**32, 2**32], False), ([0, 2**62], True),
                                        ([2**32, 2**32], True), ([-1], True)])
def test_grpc_impossible_shapes_are_invalid_argument(server: RunningServer, stub, shape: list, raw: bool) -> None:
    request = service_pb2.ModelInferRequest(model_name="open")
    for name in ("x", "y"):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=shape)
        if raw:
            request.raw_input_contents.append(b"")
        else:
            tensor.contents.fp32_contents.extend([])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


# -- 7. undecodable gRPC messages: INVALID_ARGUMENT, nothing logged, nothing kept ----------------------
def test_undecodable_grpc_messages_are_invalid_argument_without_a_leak(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        garbage = b"\xff\xff\xff\xff\x0f" + b"\x00" * 64

        def bad() -> None:
            with pytest.raises(grpc.RpcError) as info:
                call(garbage, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        for _ in range(200):  # warm up: allocator and thread pool reach their steady size
            bad()
        before = rss_kib(server.process.pid)
        for _ in range(2000):
            bad()
        grown = rss_kib(server.process.pid) - before
    assert grown < 16_000, f"RSS grew {grown} KiB over 2000 undecodable messages"
    assert "Traceback" not in server.log()
    assert served(server)


# -- 9. the control surface: raw path segments, opt-in, authenticated ----------------------------
def test_percent_encoded_slashes_cannot_reach_the_repository_api(server: RunningServer) -> None:
    for path in ("/v2%2Frepository%2Fmodels%2Fguarded%2Funload", "/v2/repository%2Fmodels%2Fguarded%2Funload",
                 "/v2/repository/models/guarded%2Funload"):
        response = httpx.post(server.url + path)
        assert response.status_code == 404, (path, response.status_code)
    # escaped letters are the same path (RFC 3986): it reaches the control surface, which wants the token
    assert httpx.post(f"{server.url}/%76%32/repository/models/guarded/unload").status_code == 401
    assert served(server, "guarded")


def test_a_model_with_its_own_token_cannot_be_unloaded_or_reloaded_without_it(server: RunningServer) -> None:
    base = f"{server.url}/v2/repository/models/guarded"
    assert httpx.post(f"{base}/unload").status_code == 401
    assert httpx.post(f"{base}/unload", headers={"Authorization": "wrong"}).status_code == 401
    assert httpx.post(f"{base}/load").status_code == 401
    assert served(server, "guarded")
    assert httpx.post(f"{base}/load", headers={"Authorization": TOKEN}, timeout=60).status_code == 200
    assert served(server, "guarded")


def test_index_lists_only_models_the_caller_may_use(server: RunningServer) -> None:
    anonymous = {row["name"] for row in httpx.post(f"{server.url}/v2/repository/index").json()}
    assert anonymous == {"open", "strings"}
    holder = httpx.post(f"{server.url}/v2/repository/index", headers={"Authorization": TOKEN}).json()
    assert {row["name"] for row in holder} == {"open", "strings", "guarded"}


def test_model_control_is_off_unless_asked_for(tmp_path_factory: pytest.TempPathFactory) -> None:
    package = pack_addition(session_root(tmp_path_factory) / "control_off", overwrite=True)
    gen = module_server(tmp_path_factory, package)
    plain = next(gen)
    try:
        response = httpx.post(f"{plain.url}/v2/repository/models/addition/unload")
        assert response.status_code == 403 and "--model-control" in response.json()["error"]
        assert httpx.post(f"{plain.url}/v2/repository/index").status_code == 200
        assert httpx.post(f"{plain.url}/v2/models/addition/infer", json=ADD).status_code == 200
    finally:
        gen.close()


def test_server_token_guards_model_control(tmp_path_factory: pytest.TempPathFactory) -> None:
    package = pack_addition(session_root(tmp_path_factory) / "control_token", overwrite=True)
    gen = module_server(tmp_path_factory, package, "--model-control", "--token", "admin")
    guarded = next(gen)
    try:
        base = f"{guarded.url}/v2/repository"
        assert httpx.post(f"{base}/index").status_code == 401
        assert httpx.post(f"{base}/models/addition/unload").status_code == 401
        ok = httpx.post(f"{base}/models/addition/unload", headers={"Authorization": "Bearer admin"}, timeout=60)
        assert ok.status_code == 200
        assert httpx.post(f"{base}/models/addition/load", headers={"Authorization": "admin"}, timeout=60).status_code == 200
    finally:
        gen.close()


# -- 12. what a caller may not use is not revealed -------------------------------------------------
def test_404_lists_no_model_that_needs_a_token(server: RunningServer) -> None:
    for path in ("/v2/models/nope", "/v2/models/nope/infer"):
        response = httpx.post(server.url + path, json=ADD) if path.endswith("infer") else httpx.get(server.url + path)
        assert response.status_code == 404
        assert "guarded" not in response.text and "open" in response.text
    eas = httpx.post(f"{server.url}/api/predict/nope", content=b"x")
    assert eas.status_code == 404 and "guarded" not in eas.text


def test_grpc_model_ready_needs_the_models_token(server: RunningServer) -> None:
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        with pytest.raises(InferenceServerException) as info:
            client.is_model_ready("guarded")
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.is_model_ready("guarded", headers={"authorization": TOKEN})
        assert client.is_model_ready("open")


# -- 10. an EAS signature is bound to its body and its time ---------------------------------------
def signed(body: bytes, date: str, service: str = "guarded", md5: str | None = None) -> dict[str, str]:
    """Headers the EAS SDK sends with a token (its documented algorithm, written out here)."""
    md5 = hashlib.md5(body).hexdigest() if md5 is None else md5
    ctype = "application/octet-stream"
    message = f"POST\n{md5}\n{ctype}\n{date}\n/api/predict/{service}"
    digest = hmac.new(TOKEN.encode(), message.encode(), hashlib.sha1).digest()
    headers = {"Content-Type": ctype, "Date": date, "Authorization": f"EAS {base64.b64encode(digest).decode()}"}
    if md5:
        headers["Content-MD5"] = md5
    return headers


def eas_body() -> bytes:
    from modelpod.codecs.eas import encode_predict_request

    x = np.array([1.0, 2.0], np.float32)
    return encode_predict_request({"x": x, "y": x})


def test_eas_signature_fresh_and_matching_passes(server: RunningServer) -> None:
    body = eas_body()
    response = httpx.post(f"{server.url}/api/predict/guarded", content=body,
                          headers=signed(body, formatdate(usegmt=True)))
    assert response.status_code == 200, response.text
    local = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.localtime())  # what the SDK writes
    assert httpx.post(f"{server.url}/api/predict/guarded", content=body,
                      headers=signed(body, local)).status_code == 200


def test_eas_signature_replayed_with_another_body_is_401(server: RunningServer) -> None:
    body, other = eas_body(), eas_body() + b"\x12\x00"
    response = httpx.post(f"{server.url}/api/predict/guarded", content=other,
                          headers=signed(body, formatdate(usegmt=True)))
    assert response.status_code == 401 and "Content-MD5" in response.text


def test_eas_signature_from_2001_is_401(server: RunningServer) -> None:
    body = eas_body()
    response = httpx.post(f"{server.url}/api/predict/guarded", content=body,
                          headers=signed(body, "Mon, 01 Jan 2001 00:00:00 GMT"))
    assert response.status_code == 401 and "Date" in response.text


def test_eas_signature_without_content_md5_is_401(server: RunningServer) -> None:
    body = eas_body()
    response = httpx.post(f"{server.url}/api/predict/guarded", content=body,
                          headers=signed(body, formatdate(usegmt=True), md5=""))
    assert response.status_code == 401 and "Content-MD5" in response.text


# -- 6. unknown names neither grow /metrics nor the route cache --------------------------------------
def test_unknown_model_names_do_not_grow_metrics(server: RunningServer) -> None:
    before = len(httpx.get(f"{server.url}/metrics").content)
    with httpx.Client() as client:
        for i in range(500):
            client.post(f"{server.url}/v2/models/ghost{i}-{'g' * 200}/infer", json=ADD)
            client.post(f"{server.url}/v2/models/guarded/versions/{i + 10}/infer", json=ADD)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "ghost" not in metrics
    assert 'version="11"' not in metrics
    assert len(metrics) - before < 20_000


def test_route_cache_keeps_only_served_paths() -> None:
    from modelpod.serving.app import MAX_CACHED_PATH, ServerApp
    from modelpod.serving.context import ServerContext
    from modelpod.serving.http.messages import Request
    from modelpod.serving.models.repository import Repository

    app = ServerApp(ServerContext(Repository()))
    for i in range(400):
        app.dispatch(Request("GET", f"/v2/models/m{i}{'u' * 4000}"))
        app.dispatch(Request("GET", f"/unknown/{i}"))
    app.dispatch(Request("GET", "/v2/health/ready"))
    assert list(app._routes) == ["/v2/health/ready"]
    assert all(len(path) <= MAX_CACHED_PATH for path in app._routes)


# -- 2. multipart: bounded field count, parsed off the event loop -----------------------------------
@pytest.fixture(scope="module")
def hooks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("hooks_hardening")
    (root / "service_src.py").write_text(SERVICE_PY)
    package = pack_addition(root / "adder", name="adder", service_path=root / "service_src.py")
    env = {"HOOK_SETUP_LOG": str(root / "setup.log")}
    yield from module_server(tmp_path_factory, package, "--grpc-port", "-1", "--max-form-fields", "50", env=env)


def form(fields: int) -> tuple[bytes, str]:
    parts = [b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(fields)]
    return b"".join(parts) + b"--B--\r\n", "multipart/form-data; boundary=B"


def test_multipart_with_too_many_fields_is_413(hooks_server: RunningServer) -> None:
    body, ctype = form(100_000)
    response = httpx.post(f"{hooks_server.url}/api/predict/adder", content=body,
                          headers={"Content-Type": ctype}, timeout=30)
    assert response.status_code == 413 and "--max-form-fields" in response.text
    ok = httpx.post(f"{hooks_server.url}/api/predict/adder", json={"x": [1], "y": [2]})
    assert ok.status_code == 200 and ok.json()["out"] == [3.0]


def test_multipart_within_the_limit_is_still_served(hooks_server: RunningServer) -> None:
    files = {"files": [("files", ("a.txt", b"1 2")), ("files", ("b.txt", b"3 4"))]}
    response = httpx.post(f"{hooks_server.url}/api/predict/adder", files=files["files"], data={"note": "n"})
    assert response.status_code == 200, response.text
    assert response.json()["out"] == [4.0, 6.0]


def test_metrics_leave_out_models_guarded_by_their_own_token(server: RunningServer) -> None:
    assert served(server, "guarded")
    anonymous = httpx.get(f"{server.url}/metrics").text
    assert 'model="open"' in anonymous and 'model="guarded"' not in anonymous
    holder = httpx.get(f"{server.url}/metrics", headers={"Authorization": TOKEN}).text
    assert 'model="guarded"' in holder


def test_metrics_need_the_server_token(tmp_path_factory: pytest.TempPathFactory) -> None:
    package = pack_addition(session_root(tmp_path_factory) / "metrics_token", overwrite=True)
    gen = module_server(tmp_path_factory, package, "--token", "admin")
    guarded = next(gen)
    try:
        assert httpx.get(f"{guarded.url}/metrics").status_code == 401
        response = httpx.get(f"{guarded.url}/metrics", headers={"Authorization": "Bearer admin"})
        assert response.status_code == 200 and "modelpod_requests_total" in response.text
        assert httpx.get(f"{guarded.url}/v2/health/ready").status_code == 200  # health stays open
    finally:
        gen.close()


def test_nested_multipart_is_not_parsed_as_more_fields(hooks_server: RunningServer) -> None:
    """One outer part holding 100k inner parts: the limit counts what is parsed (the inner body is
    just that field's bytes), so the request is cheap, and 2000 levels of nesting are no 500."""
    inner = b"".join(b"--in\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(100_000)) + b"--in--"
    for payload in (inner, b"--in\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n" * 2000):
        body = (b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n'
                b"Content-Type: multipart/mixed; boundary=in\r\n\r\n" + payload + b"\r\n--B--\r\n")
        response = httpx.post(f"{hooks_server.url}/api/predict/adder", content=body,
                              headers={"Content-Type": "multipart/form-data; boundary=B"}, timeout=30)
        assert response.status_code == 400, response.text  # the service wants two files, got one
        assert "exactly two files" in response.text
    assert "Traceback" not in hooks_server.log()


@pytest.mark.parametrize("body, status", [
    (b"--B\r\n" + b"X-H: v\r\n" * 200 + b'Content-Disposition: form-data; name="a"\r\n\r\nv\r\n--B--', 413),
    (b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nno closing boundary', 400),
    (b"no boundary at all", 400),
    (b"--B\r\n\r\nnameless\r\n--B--", 400),
])
def test_malformed_multipart_is_refused_clearly(hooks_server: RunningServer, body: bytes, status: int) -> None:
    response = httpx.post(f"{hooks_server.url}/api/predict/adder", content=body,
                          headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert response.status_code == status, response.text
    assert "multipart" in response.text
