"""Triton's v2 extensions (statistics, model configuration, model repository over HTTP and gRPC)
and Triton's error wording, driven by the unmodified tritonclient.http and tritonclient.grpc with
the calls Triton's own example programs make (simple_*_model_control.py, simple_*_health_metadata.py,
image_client.py's metadata + config parsing)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.model_config_pb2 as mc
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers.addition import pack_addition
from tests.helpers.image_models import pack_image
from tests.helpers.packages import pack_scaled
from tests.helpers.servers import RunningServer, module_server

pytestmark = pytest.mark.timeout(180)
TOKEN = "own-secret"
ADMIN = "admin-secret"

def build(root: Path) -> Path:
    repo = root / "repo"
    for name in ("image", "simple"):
        pack_image(repo / name / "1", name)
        (repo / name / "serving.json").write_text(json.dumps(
            {"metadata": {"max_batch_size": 4, "max_batch_delay_ms": 2, "preferred_batch_sizes": [2, 4]}}))
    pack_addition(repo / "addition" / "1")
    pack_scaled(repo / "scaled" / "1", 1)
    pack_scaled(repo / "scaled" / "2", 2)
    pack_addition(repo / "guarded" / "1", name="guarded")
    (repo / "guarded" / "serving.json").write_text(json.dumps({"token": TOKEN}))
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("v2ext"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> Iterator[RunningServer]:
    yield from module_server(tmp_path_factory, repo, "--model-control")


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> Iterator[RunningServer]:
    """The same models behind a server token, model control off."""
    yield from module_server(tmp_path_factory, repo, "--token", ADMIN)


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def grpc(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        yield client


def _infer_image(client: httpclient.InferenceServerClient | grpcclient.InferenceServerClient, rows: int,
                 module=httpclient, model: str = "image") -> np.ndarray:
    image = np.ones((rows, 8, 8, 3), dtype=np.float32)
    tensor = module.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    return client.infer(model, [tensor]).as_numpy("scores")


def _add(client: httpclient.InferenceServerClient, model: str = "addition", **kwargs) -> np.ndarray:
    x = np.arange(4, dtype=np.float32)
    inputs = [httpclient.InferInput(n, [4], "FP32") for n in ("x", "y")]
    for tensor in inputs:
        tensor.set_data_from_numpy(x)
    return client.infer(model, inputs, **kwargs).as_numpy("out")


def _stat(client: httpclient.InferenceServerClient, model: str, version: str = "") -> dict:
    (row,) = client.get_inference_statistics(model, version)["model_stats"]
    return row


# -- server metadata: each protocol lists what it speaks ------------------------------------------------
def test_server_metadata_lists_what_each_protocol_speaks(http, grpc) -> None:
    meta = http.get_server_metadata()
    assert meta["name"] == "modelpod"  # never pretends to be Triton
    assert {"binary_tensor_data", "model_repository", "model_configuration", "statistics"} <= set(meta["extensions"])
    grpc_meta = grpc.get_server_metadata()
    assert grpc_meta.name == "modelpod"
    assert {"model_repository", "model_configuration", "statistics"} <= set(grpc_meta.extensions)
    assert "binary_tensor_data" not in grpc_meta.extensions  # an HTTP extension


# -- 2. statistics ----------------------------------------------------------------------------------
def test_statistics_move_after_real_inferences(http) -> None:
    before = _stat(http, "image")
    assert before["name"] == "image" and before["version"] == "1"
    started_ms = time.time() * 1000
    for rows in (1, 3, 2):
        assert _infer_image(http, rows).shape == (rows, 4)
    after = _stat(http, "image")
    stats, old = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] == old["success"]["count"] + 3
    assert stats["success"]["ns"] > old["success"]["ns"]
    assert after["inference_count"] == before["inference_count"] + 6  # rows of a model with a batch dim
    assert after["execution_count"] - before["execution_count"] in (1, 2, 3)  # batches (dynamic batching on)
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[key]["count"] == stats["success"]["count"], key
    assert stats["compute_infer"]["ns"] > old["compute_infer"]["ns"]
    assert stats["success"]["ns"] >= stats["compute_infer"]["ns"]
    assert started_ms - 1000 <= after["last_inference"] <= time.time() * 1000 + 1000
    assert sum(b["compute_infer"]["count"] for b in after["batch_stats"]) == after["execution_count"]
    assert all(b["batch_size"] >= 1 for b in after["batch_stats"])
    assert stats["fail"]["count"] == old["fail"]["count"]


def test_failures_count_as_fail(http) -> None:
    before = _stat(http, "image")["inference_stats"]["fail"]["count"]
    bad = httpclient.InferInput("image", [1, 8, 8, 4], "FP32")
    bad.set_data_from_numpy(np.ones((1, 8, 8, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        http.infer("image", [bad])
    assert info.value.status() == "400"
    assert _stat(http, "image")["inference_stats"]["fail"]["count"] == before + 1


def test_statistics_of_inline_models(http) -> None:
    before = _stat(http, "addition")  # x, y, out: ("num_inputs",): a batch dim of 4 rows per request
    for _ in range(5):
        np.testing.assert_array_equal(_add(http), np.arange(4) * 2)
    after = _stat(http, "addition")
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 5
    assert after["inference_count"] == before["inference_count"] + 20
    assert after["execution_count"] == before["execution_count"] + 5
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    assert [b["batch_size"] for b in after["batch_stats"]] == [4]
    before = _stat(http, "scaled", "2")  # x (None,) -> y (None,): no batch dim, 1 per request
    x = httpclient.InferInput("x", [6], "FP32")
    x.set_data_from_numpy(np.ones(6, dtype=np.float32))
    for _ in range(3):
        http.infer("scaled", [x])
    after = _stat(http, "scaled", "2")
    assert after["inference_count"] == before["inference_count"] + 3
    assert [b["batch_size"] for b in after["batch_stats"]] == [1]


def test_statistics_of_every_model_and_of_one_version(http, server) -> None:
    every = http.get_inference_statistics()["model_stats"]
    names = {(row["name"], row["version"]) for row in every}
    assert {("image", "1"), ("addition", "1"), ("scaled", "1"), ("scaled", "2")} <= names
    assert not any(row["name"] == "guarded" for row in every)  # needs its own token: not revealed
    held = httpx.get(f"{server.url}/v2/models/stats", headers={"Authorization": TOKEN}).json()["model_stats"]
    assert any(row["name"] == "guarded" for row in held)
    assert [row["version"] for row in http.get_inference_statistics("scaled")["model_stats"]] == ["1", "2"]
    (one,) = http.get_inference_statistics("scaled", "2")["model_stats"]
    assert one["version"] == "2"


def test_grpc_statistics_match_http(http, grpc) -> None:
    for rows in (2, 2):
        _infer_image(grpc, rows, grpcclient)
    via_grpc = grpc.get_inference_statistics("image").model_stats[0]
    via_http = _stat(http, "image")
    assert via_grpc.name == "image" and via_grpc.version == "1"
    assert via_grpc.inference_stats.success.count == via_http["inference_stats"]["success"]["count"]
    assert via_grpc.inference_count == via_http["inference_count"]
    assert via_grpc.execution_count == via_http["execution_count"]
    assert via_grpc.last_inference > 0
    as_json = grpc.get_inference_statistics(as_json=True)
    assert {row["name"] for row in as_json["model_stats"]} >= {"image", "addition", "scaled"}


def test_statistics_need_the_model_token(http, grpc, server) -> None:
    with pytest.raises(InferenceServerException) as info:
        http.get_inference_statistics("guarded")
    assert info.value.status() == "401"
    with pytest.raises(InferenceServerException) as info:
        grpc.get_inference_statistics("guarded")
    assert info.value.status() == "StatusCode.UNAUTHENTICATED"
    assert grpc.get_inference_statistics("guarded", headers={"authorization": TOKEN}).model_stats[0].name == "guarded"


# -- 3. model configuration ---------------------------------------------------------------------------
def test_model_config_over_http(http) -> None:
    config = http.get_model_config("image")
    assert config["name"] == "image" and config["backend"] == "python" and config["platform"] == ""
    assert config["max_batch_size"] == 4
    (tensor,) = config["input"]
    assert tensor == {"name": "image", "data_type": "TYPE_FP32", "format": "FORMAT_NHWC", "dims": [8, 8, 3],
                      "is_shape_tensor": False, "allow_ragged_batch": False, "optional": False}
    assert config["output"][0]["dims"] == [4] and config["output"][0]["data_type"] == "TYPE_FP32"
    assert config["dynamic_batching"]["preferred_batch_size"] == [2, 4]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert config["instance_group"][0]["count"] == 1 and config["instance_group"][0]["kind"] == "KIND_CPU"
    addition = http.get_model_config("addition")  # a batch dim, dynamic batching off
    assert addition["max_batch_size"] == 1 and "dynamic_batching" not in addition
    assert addition["input"][0]["dims"] == [] and addition["input"][0]["format"] == "FORMAT_NONE"
    scaled = http.get_model_config("scaled", "2")  # no batch dim
    assert scaled["name"] == "scaled" and scaled["max_batch_size"] == 0 and scaled["input"][0]["dims"] == [-1]


def test_model_config_over_grpc_is_tritons_message(grpc) -> None:
    config = grpc.get_model_config("image").config
    assert isinstance(config, mc.ModelConfig)  # decoded by tritonclient's own model_config_pb2
    assert config.name == "image" and config.max_batch_size == 4
    assert config.input[0].format == mc.ModelInput.FORMAT_NHWC
    assert config.input[0].data_type == mc.TYPE_FP32 and list(config.input[0].dims) == [8, 8, 3]
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert grpc.get_model_config("image", as_json=True)["config"]["input"][0]["format"] == "FORMAT_NHWC"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_what_image_client_reads_from_metadata_and_config(http, grpc, protocol) -> None:
    """image_client.py's parse_model: one input and output, batch dim from max_batch_size, NHWC/NCHW."""
    client = http if protocol == "http" else grpc
    metadata = client.get_model_metadata("image")
    config = client.get_model_config("image")
    if protocol == "grpc":
        config = config.config
        inputs, outputs, max_batch = metadata.inputs, metadata.outputs, config.max_batch_size
        fmt, shape = config.input[0].format, list(inputs[0].shape)
        datatype = outputs[0].datatype
    else:
        inputs, outputs, max_batch = metadata["inputs"], metadata["outputs"], config["max_batch_size"]
        fmt, shape = dict(mc.ModelInput.Format.items())[config["input"][0]["format"]], inputs[0]["shape"]
        datatype = outputs[0]["datatype"]
    assert len(inputs) == 1 and len(outputs) == 1 and datatype == "FP32"
    assert max_batch > 0 and len(shape) == 3 + 1
    assert fmt == mc.ModelInput.FORMAT_NHWC
    h, w, c = shape[1], shape[2], shape[3]
    assert (c, h, w) == (3, 8, 8)
    assert _infer_image(client, 2, grpcclient if protocol == "grpc" else httpclient).shape == (2, 4)


def test_input_formats_setting(tmp_path: Path, serve_factory) -> None:
    repo = tmp_path / "repo"
    pack_image(repo / "image" / "1")
    (repo / "image" / "serving.json").write_text(json.dumps({"metadata": {"input_formats": {"image": "FORMAT_NCHW"}}}))
    server = serve_factory(repo)
    assert httpx.get(f"{server.url}/v2/models/image/config").json()["input"][0]["format"] == "FORMAT_NCHW"


# -- 6. model repository over gRPC, and config overrides on load (both protocols) ----------------------------
def test_grpc_repository_index_unload_load(grpc) -> None:
    index = grpc.get_model_repository_index()
    rows = {(m.name, m.version): m.state for m in index.models}
    assert rows[("simple", "1")] == "READY" and ("guarded", "1") not in rows
    grpc.unload_model("simple")
    assert not grpc.is_model_ready("simple")
    grpc.load_model("simple")
    assert grpc.is_model_ready("simple")
    assert {m["name"] for m in grpc.get_model_repository_index(as_json=True)["models"]} >= {"image", "simple"}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_config_override_on_load_as_in_tritons_model_control_example(http, grpc, protocol) -> None:
    client = http if protocol == "http" else grpc

    def max_batch() -> int:
        config = client.get_model_config("simple")
        return config["max_batch_size"] if protocol == "http" else config.config.max_batch_size

    assert max_batch() == 4
    with pytest.raises(InferenceServerException) as info:  # not JSON: refused, the old config serves on
        client.load_model("simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    assert "failed to load 'simple'" in info.value.message() and "not valid JSON" in info.value.message()
    assert client.is_model_ready("simple") and max_batch() == 4
    client.load_model("simple", config='{"max_batch_size":"16"}')  # a string, as the example sends it
    assert max_batch() == 16
    assert _infer_image(client, 3, grpcclient if protocol == "grpc" else httpclient).shape == (3, 4)
    client.load_model("simple")  # without a config: back to the repository's settings, as Triton
    assert max_batch() == 4
    client.unload_model("simple")
    assert not client.is_model_ready("simple")
    client.load_model("simple")
    assert client.is_model_ready("simple")
    with pytest.raises(InferenceServerException) as info:
        client.load_model("wrong_model_name")
    assert "failed to load 'wrong_model_name'" in info.value.message()


def test_config_override_maps_onto_settings(http) -> None:
    config = http.get_model_config("simple")
    config["instance_group"][0]["count"] = 2
    config["dynamic_batching"]["preferred_batch_size"] = [4]
    config["dynamic_batching"]["max_queue_delay_microseconds"] = 500
    config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] = 7
    config["input"][0]["format"] = "FORMAT_NCHW"
    http.load_model("simple", config=json.dumps(config))  # get, change, load: the whole config round-trips
    try:
        now = http.get_model_config("simple")
        assert now["instance_group"][0]["count"] == 2
        assert now["dynamic_batching"]["preferred_batch_size"] == [4]
        assert now["dynamic_batching"]["max_queue_delay_microseconds"] == 500
        assert now["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 7
        assert now["input"][0]["format"] == "FORMAT_NCHW"
        assert _infer_image(http, 2, model="simple").shape == (2, 4)
    finally:
        http.load_model("simple")
    assert http.get_model_config("simple")["instance_group"][0]["count"] == 1


@pytest.mark.parametrize(("model", "config", "says"), [
    ("simple", '{"optimization": {"graph": {"level": 1}}}', "sets optimization, which modelpod has no equivalent"),
    ("simple", '{"max_batch_size": "many"}', "not a valid model configuration"),
    ("simple", '{"no_such_field": 1}', "not a valid model configuration"),
    ("simple", '[1, 2]', "must be a JSON object"),
    ("simple", '{"max_batch_size": 0}', "batch dim 'batch'"),
    ("scaled", '{"max_batch_size": 8}', "needs a batch dim"),
    ("scaled", '{"dynamic_batching": {}}', "needs a batch dim"),
    ("simple", '{"input": [{"name": "image", "data_type": "TYPE_INT32"}]}', "data_type TYPE_INT32"),
    ("simple", '{"input": [{"name": "image", "dims": [3, 8, 8]}]}', "dims [3, 8, 8]"),
    ("simple", '{"input": [{"name": "other"}]}', "'other' is not one of the model's inputs"),
    ("simple", '{"instance_group": [{"kind": "KIND_GPU", "count": 1}]}', "KIND_GPU"),
    ("simple", '{"platform": "tensorrt_plan"}', "'platform'"),
    ("simple", '{"name": "another"}', "'name'"),
    ("simple", '{"dynamic_batching": {"preferred_batch_size": [64]}}', "preferred_batch_size [64]"),
    ("simple", '{"dynamic_batching": {"priority_levels": 2}}', "priority levels"),
    ("simple", '{"instance_group": [{"count": -1}]}', "count must be 1 or more"),
    # what would claim unbounded memory or time is refused, never loaded
    ("simple", '{"instance_group": [{"count": 100000000, "kind": "KIND_CPU"}]}', "must be at most 256"),
    ("simple", '{"instance_group": [{"count": 2147483647}, {"count": 2147483647}]}', "must be at most 256"),
    ("simple", '{"dynamic_batching": {"max_queue_delay_microseconds": "18446744073709551615"}}', "must be at most"),
    ("simple", '{"dynamic_batching": {"default_queue_policy": {"default_timeout_microseconds": '
               '"18446744073709551615"}}}', "must be at most"),
    ("simple", "[" * 100000, "nests too deeply"),
    ("simple", '{"input": [{"name": "image", "dims": ' + "[" * 50000 + "]" * 50000 + "}]}", "nests too deeply"),
    ("simple", '{"name": "' + "x" * (1 << 20) + '"}', "characters long; at most"),
])
def test_a_config_override_modelpod_cannot_honour_is_refused(http, grpc, model, config, says) -> None:
    for client in (http, grpc):
        with pytest.raises(InferenceServerException) as info:
            client.load_model(model, config=config)
        message = info.value.message()
        assert message.startswith(f"failed to load '{model}': ") and says in message, message
        assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    assert http.is_model_ready(model)


def test_model_files_in_a_load_request_are_refused(http, grpc) -> None:
    for client in (http, grpc):
        with pytest.raises(InferenceServerException) as info:
            client.load_model("simple", config="{}", files={"file:1/model.onnx": b"onnx"})
        assert "failed to load 'simple'" in info.value.message() and "file:1/model.onnx" in info.value.message()
        # Triton's status and words (its simple_grpc_model_control.py checks both)
        assert "failed to poll from model repository" in info.value.message()
        assert info.value.status() in ("500", "StatusCode.INTERNAL")
    assert http.is_model_ready("simple")


def test_repository_api_with_a_server_token(locked: RunningServer) -> None:
    with grpcclient.InferenceServerClient(locked.grpc_target) as client:
        for call in (client.get_model_repository_index, lambda: client.get_inference_statistics(),
                     lambda: client.get_model_config("image"), lambda: client.load_model("image")):
            with pytest.raises(InferenceServerException) as info:
                call()
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        admin = {"authorization": ADMIN}
        names = {m.name for m in client.get_model_repository_index(headers=admin).models}
        assert "image" in names and "guarded" not in names  # its own token, not the server's, opens it
        assert client.get_model_config("image", headers=admin).config.max_batch_size == 4
        with pytest.raises(InferenceServerException) as info:
            client.load_model("image", headers=admin)  # model control is off on this server
        assert info.value.status() == "StatusCode.PERMISSION_DENIED" and "--model-control" in info.value.message()
    for path in ("/v2/models/stats", "/v2/models/image/stats", "/v2/models/image/config"):
        assert httpx.get(locked.url + path).status_code == 401, path
        assert httpx.get(locked.url + path, headers={"Authorization": ADMIN}).status_code == 200, path


def test_hostile_repository_requests_get_clear_errors(server: RunningServer) -> None:
    base = f"{server.url}/v2/repository"
    response = httpx.post(f"{base}/models/simple/load", content=b"{not json")
    assert response.status_code == 400 and response.json()["error"].startswith("failed to load 'simple': ")
    response = httpx.post(f"{base}/models/simple/load", json={"parameters": "config"})
    assert response.status_code == 400 and "'parameters' must be a JSON object" in response.json()["error"]
    response = httpx.post(f"{base}/models/simple/load", json={"parameters": {"config": 16}})
    assert response.status_code == 400 and "must be a string of JSON" in response.json()["error"]
    response = httpx.post(f"{base}/models/simple/load", json={"parameters": {"colour": "red"}})
    assert response.status_code == 400 and "colour" in response.json()["error"]
    response = httpx.post(f"{base}/index", json={"ready": "yes"})
    assert response.status_code == 400 and "'ready'" in response.json()["error"]
    assert all(row["state"] == "READY" for row in httpx.post(f"{base}/index", json={"ready": True}).json())
    assert httpx.get(f"{server.url}/v2/models/image/config", params={}).status_code == 200
    assert httpx.post(f"{server.url}/v2/models/image/config").status_code == 405
    assert httpx.post(f"{server.url}/v2/models/stats").status_code == 405


# -- 7. the error wording Triton's clients match on -----------------------------------------------------
def test_unknown_model_and_version_errors_start_as_tritons(http, grpc, server) -> None:
    for call in (lambda c: c.get_model_metadata("wrong_model_name"), lambda c: c.get_model_config("wrong_model_name"),
                 lambda c: c.get_inference_statistics("wrong_model_name")):
        for client in (http, grpc):
            with pytest.raises(InferenceServerException) as info:
                call(client)
            message = info.value.message()
            assert message.startswith("Request for unknown model: 'wrong_model_name' is not found"), message
            assert "addition" in message and "guarded" not in message  # modelpod's detail after it
    with pytest.raises(InferenceServerException) as info:
        http.get_model_metadata("scaled", "7")
    assert info.value.message().startswith("Request for unknown model: 'scaled' version 7 is not found")
    assert "versions: 1, 2" in info.value.message()
    for client in (http, grpc):
        # only ASCII digits name a version (gRPC can carry what a URL cannot)
        for version in ("abc", "+1", "1_0", *(("\u0661", " 1") if client is grpc else ())):
            with pytest.raises(InferenceServerException) as info:
                client.get_model_config("scaled", version)
            assert info.value.message().startswith(
                f"failed to get model version from specified version string '{version}'"), info.value.message()
    x = np.arange(4, dtype=np.float32)
    inputs = [grpcclient.InferInput(n, [4], "FP32") for n in ("x", "y")]
    for tensor in inputs:
        tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as info:
        grpc.infer("wrong_model_name", inputs)
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert info.value.message().startswith("Request for unknown model: 'wrong_model_name' is not found")
    response = httpx.post(f"{server.url}/v2/models/wrong_model_name/infer", json={"inputs": []})
    assert response.status_code == 404
    assert response.json()["error"].startswith("Request for unknown model: 'wrong_model_name' is not found")
