"""Triton's classification extension (an output asked for with ``class_count``): the unmodified
tritonclient.http and tritonclient.grpc, as Triton's image_client.py asks, against ``modelpod serve``
with a label file from serving.json; and the requests it must refuse."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers.image_models import pack_image
from tests.helpers.packages import pack_echo, pack_scaled
from tests.helpers.servers import RunningServer, module_server, wait_models_ready

pytestmark = pytest.mark.timeout(180)
LABELS = ["MEAN", "MAX", "MIN"]  # the fourth score (the sum) has no label


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("classify") / "repo"
    pack_image(repo / "image" / "1")
    (repo / "image" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (repo / "image" / "serving.json").write_text(json.dumps({"metadata": {"labels": {"scores": "labels.txt"}}}))
    pack_scaled(repo / "scaled" / "1", 1)
    pack_echo(repo / "echo_string" / "1", "string")
    pack_echo(repo / "echo_int32" / "1", "int32")
    pack_scaled(repo / "unlabelled" / "1", 1)
    (repo / "unlabelled" / "serving.json").write_text(json.dumps({"metadata": {"labels": {"y": "missing.txt"}}}))
    # not every model becomes ready (unlabelled cannot): wait for the others
    for server in module_server(tmp_path_factory, repo, wait_ready=False):
        wait_models_ready(server, "image", "scaled", "echo_string", "echo_int32")
        yield server


def _images() -> np.ndarray:
    return np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)


def _expected(image: np.ndarray, k: int) -> list[list[bytes]]:
    flat = image.reshape(image.shape[0], -1)
    scores = np.stack([flat.mean(1), flat.max(1), flat.min(1), flat.sum(1)], axis=1).astype(np.float32)
    rows = []
    for row in scores:
        order = sorted(range(4), key=lambda i: (-row[i], i))[:k]
        rows.append([(f"{float(row[i]):f}:{i}" + (f":{LABELS[i]}" if i < len(LABELS) else "")).encode()
                     for i in order])
    return rows


@pytest.mark.parametrize("module", [httpclient, grpcclient])
def test_top_k_with_labels_per_batch_row(server: RunningServer, module) -> None:
    image = _images()
    target = server.host if module is httpclient else server.grpc_target
    with module.InferenceServerClient(target) as client:
        tensor = module.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        answer = client.infer("image", [tensor], outputs=[module.InferRequestedOutput("scores", class_count=3)])
        top = answer.as_numpy("scores")
        assert top.shape == (2, 3)
        assert top.tolist() == _expected(image, 3)
        output = answer.get_output("scores")
        assert (output["datatype"] if module is httpclient else output.datatype) == "BYTES"
        # how image_client.py reads one: value, index, label
        value, index, label = top[0][1].decode().split(":")  # [0][0] is the sum, index 3: no label line
        assert label in LABELS and int(index) == LABELS.index(label)
        every = client.infer("image", [tensor], outputs=[module.InferRequestedOutput("scores", class_count=10)])
        # k past the elements: all of them; index 3 has no label line: value:index
        assert every.as_numpy("scores").tolist() == _expected(image, 4)


@pytest.mark.parametrize("module", [httpclient, grpcclient])
def test_a_model_without_a_batch_dim_is_classified_whole(server: RunningServer, module) -> None:
    x = np.array([0.5, 3.0, -1.0, 3.0, 2.0], dtype=np.float32)
    target = server.host if module is httpclient else server.grpc_target
    with module.InferenceServerClient(target) as client:
        tensor = module.InferInput("x", [5], "FP32")
        tensor.set_data_from_numpy(x)
        top = client.infer("scaled", [tensor], outputs=[module.InferRequestedOutput("y", class_count=3)])
        # ties: the lower index first; no labels: value:index
        assert top.as_numpy("y").tolist() == [b"3.000000:1", b"3.000000:3", b"2.000000:4"]


def test_integers_are_written_as_integers(server: RunningServer) -> None:
    x = np.array([[7, -2, 9], [1, 1, 0]], dtype=np.int32)
    with httpclient.InferenceServerClient(server.host) as client:
        tensor = httpclient.InferInput("x", [2, 3], "INT32")
        tensor.set_data_from_numpy(x)
        top = client.infer("echo_int32", [tensor], outputs=[httpclient.InferRequestedOutput("y", class_count=2)])
        assert top.as_numpy("y").tolist() == [[b"9:2", b"7:0"], [b"1:0", b"1:1"]]


def test_the_config_names_the_label_file(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.host) as client:
        assert client.get_model_config("image")["output"][0]["label_filename"] == "labels.txt"
        assert client.get_model_config("scaled")["output"][0]["label_filename"] == ""
    for extensions in (httpx.get(f"{server.url}/v2").json()["extensions"],
                       list(grpcclient.InferenceServerClient(server.grpc_target).get_server_metadata().extensions)):
        assert "classification" in extensions


def _body(model: str, name: str, output: str, count: object, datatype: str = "FP32",
          data: object = (1.0, 2.0)) -> dict:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": [len(data)] if datatype != "BYTES" else
                        [1, len(data)], "data": list(data)}],
            "outputs": [{"name": output, "parameters": {"classification": count}}]}


@pytest.mark.parametrize(("count", "says"), [
    (0, "got 0"), (-1, "got -1"), ("3", "got '3'"), (True, "got True"), (1.5, "got 1.5"),
])
def test_a_bad_class_count_is_refused(server: RunningServer, count: object, says: str) -> None:
    answer = httpx.post(f"{server.url}/v2/models/scaled/infer", json=_body("scaled", "x", "y", count))
    assert answer.status_code == 400
    assert "classification must be a whole number of 1 or more" in answer.json()["error"] and says in \
        answer.json()["error"]


def test_strings_and_unknown_outputs_are_refused(server: RunningServer) -> None:
    answer = httpx.post(f"{server.url}/v2/models/echo_string/infer",
                        json=_body("echo_string", "x", "y", 1, "BYTES", ("a", "b")))
    assert answer.status_code == 400 and "holds strings" in answer.json()["error"]
    answer = httpx.post(f"{server.url}/v2/models/scaled/infer", json=_body("scaled", "x", "nope", 1))
    assert answer.status_code == 400 and "'nope' is not one of its outputs" in answer.json()["error"]
    with grpcclient.InferenceServerClient(server.grpc_target) as client:
        tensor = grpcclient.InferInput("x", [2, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b"a"], [b"b"]], dtype=object))
        with pytest.raises(InferenceServerException) as info:
            client.infer("echo_string", [tensor], outputs=[grpcclient.InferRequestedOutput("y", class_count=1)])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "holds strings" in info.value.message()


def test_a_label_file_that_cannot_be_read_fails_that_model_alone(server: RunningServer) -> None:
    answer = httpx.get(f"{server.url}/v2/models/unlabelled/ready")
    assert answer.status_code == 400
    index = httpx.post(f"{server.url}/v2/repository/index").json()
    row = next(r for r in index if r["name"] == "unlabelled")
    assert "label file of output 'y' cannot be read" in row["reason"] and "missing.txt" in row["reason"]
    assert httpx.get(f"{server.url}/v2/models/image/ready").status_code == 200


def test_classes_per_row_are_bounded(server: RunningServer) -> None:
    x = np.random.default_rng(2).random(70000, dtype=np.float32)
    with httpclient.InferenceServerClient(server.host) as client:
        tensor = httpclient.InferInput("x", [x.size], "FP32")
        tensor.set_data_from_numpy(x)
        top = client.infer("scaled", [tensor], outputs=[httpclient.InferRequestedOutput("y", class_count=3)])
        assert [int(v.split(b":")[1]) for v in top.as_numpy("y")] == np.argsort(-x, kind="stable")[:3].tolist()
        with pytest.raises(InferenceServerException) as info:
            client.infer("scaled", [tensor], outputs=[httpclient.InferRequestedOutput("y", class_count=1 << 40)])
        assert info.value.status() == "400" and "70000 classes per row; at most 65536" in info.value.message()
