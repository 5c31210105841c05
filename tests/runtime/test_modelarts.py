"""A ModelArts model folder served unchanged: config.json + customize_service.py over a frozen graph.

The folder follows seed 000 (a TF1 frozen-graph detector moved into ModelArts): ``config.json``,
``customize_service.py`` subclassing ``model_service.tfserving_model_service.TfServingBaseService``
and the frozen ``.pb``. The templates live in ``tests/modelarts_detector_src/``; the fixture builds
the graph and assembles the folder (``modelarts_detector/``) under a temporary directory, so the
repository stays clean.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from modelpod.runtime.modelarts import is_modelarts_folder, load_modelarts  # noqa: E402

pytestmark = pytest.mark.timeout(180)

TEMPLATES = Path(__file__).resolve().parents[1] / "helpers" / "data" / "modelarts_detector_src"
SIZE = 64
CELLS = 16


def detector_graph_def(seed: int = 0) -> tf.compat.v1.GraphDef:
    """float32 [N, 64, 64, 3] in [0, 1] -> ``detection_boxes`` [N, 16, 4] (ymin, xmin, ymax, xmax,
    normalized to [0, 1]) and ``detection_scores`` [N, 16]: one box per cell of a 4x4 grid."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (3, 3, 3, 8)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    w2 = rng.normal(0, 0.8, (1, 1, 8, 5)).astype(np.float32)
    b2 = rng.normal(0, 0.3, 5).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, SIZE, SIZE, 3], name="input_image")
        h = tf.nn.relu(tf.nn.conv2d(x, tf.constant(w1), strides=2, padding="SAME") + b1)
        h = tf.nn.avg_pool2d(h, ksize=8, strides=8, padding="VALID")
        head = tf.nn.conv2d(h, tf.constant(w2), strides=1, padding="SAME") + b2
        raw = tf.sigmoid(tf.reshape(head[..., :4], [-1, CELLS, 4]))
        y0, x0, y1, x1 = tf.unstack(raw, axis=-1)
        tf.stack([tf.minimum(y0, y1), tf.minimum(x0, x1), tf.maximum(y0, y1), tf.maximum(x0, x1)],
                 axis=-1, name="detection_boxes")
        tf.sigmoid(tf.reshape(head[..., 4], [-1, CELLS]), name="detection_scores")
    return graph.as_graph_def()


def png(height: int, width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[: height // 2, : width // 3] = (250, 30, 30)  # some structure, not only noise
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def expected_detections(graph_def: tf.compat.v1.GraphDef, image_bytes: bytes, top_k: int) -> dict:
    """The reference: decode and resize like demo.py, run the graph in a plain Session, rescale."""
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    height, width = image.height, image.width
    batch = (np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255.0)[None]
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        boxes, scores = sess.run(["detection_boxes:0", "detection_scores:0"], {"input_image:0": batch})
    assert 0.0 <= boxes.min() and boxes.max() <= 1.0
    keep = np.argsort(-scores[0], kind="stable")[:top_k]
    return {
        "boxes": boxes[0][keep] * np.array([height, width, height, width], dtype=np.float32),
        "scores": scores[0][keep],
        "size": [height, width],
    }


@pytest.fixture(scope="module")
def detector_graph() -> tf.compat.v1.GraphDef:
    return detector_graph_def()


@pytest.fixture(scope="module")
def modelarts_folder(tmp_path_factory, detector_graph) -> Path:
    """<tmp>/modelarts_detector/: config.json, customize_service.py (+ its sibling module
    detector_utils.py, like the seed's yolov3_utils.py) and frozen_detector.pb."""
    folder = tmp_path_factory.mktemp("modelarts") / "modelarts_detector"
    folder.mkdir()
    shutil.copyfile(TEMPLATES / "config.json", folder / "config.json")
    for name in ("customize_service.py", "detector_utils.py"):
        shutil.copyfile(TEMPLATES / name, folder / name)
    (folder / "frozen_detector.pb").write_bytes(detector_graph.SerializeToString())
    return folder


def check_detections(answer: dict, graph_def, images: dict[str, bytes], top_k: int) -> None:
    assert set(answer) == set(images)
    for name, data in images.items():
        want = expected_detections(graph_def, data, top_k)
        got = answer[name]
        assert got["image_size"] == want["size"]
        boxes = np.array(got["detection_boxes"], dtype=np.float32)
        assert boxes.shape == (top_k, 4)
        np.testing.assert_allclose(boxes, want["boxes"], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got["detection_scores"], want["scores"], rtol=1e-5, atol=1e-6)
        # boxes are in pixels of *this* image: inside it, ordered corners
        h, w = want["size"]
        assert (boxes[:, [0, 2]] <= h).all() and (boxes[:, [1, 3]] <= w).all() and (boxes >= 0).all()
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()


# -- recognising and loading the folder ---------------------------------------------------------
def test_is_modelarts_folder(modelarts_folder, tmp_path):
    assert is_modelarts_folder(modelarts_folder)
    assert not is_modelarts_folder(modelarts_folder / "config.json")
    partial = tmp_path / "no_service"
    partial.mkdir()
    shutil.copyfile(modelarts_folder / "config.json", partial / "config.json")
    assert not is_modelarts_folder(partial)
    other = tmp_path / "not_modelarts"
    other.mkdir()
    (other / "config.json").write_text('{"hidden_size": 4}')
    (other / "customize_service.py").write_text("")
    assert not is_modelarts_folder(other)


def test_load_in_process_leaves_no_model_service_module(modelarts_folder, detector_graph):
    assert "model_service" not in sys.modules
    service = load_modelarts(modelarts_folder)
    try:
        assert not any(m == "model_service" or m.startswith("model_service.") for m in sys.modules)
        assert "detector_utils" not in sys.modules  # the sibling module stays private too
        assert service.name == "modelarts_detector"
        assert service.config["model_type"] == "TensorFlow"
        instance = service.instance
        assert type(instance).__name__ == "DetectorService"
        assert instance.model_name == "modelarts_detector"
        assert Path(instance.model_path) == modelarts_folder.resolve()
        image = png(48, 80, seed=3)
        answer = service.handle({"images": {"one.png": io.BytesIO(image)}})
        check_detections(answer, detector_graph, {"one.png": image}, top_k=3)
    finally:
        service.model.close()


def test_folder_needs_exactly_one_service_class(tmp_path):
    folder = tmp_path / "empty_service"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "TensorFlow", "runtime": "python3.6"}')
    (folder / "customize_service.py").write_text(
        "from model_service.tfserving_model_service import TfServingBaseService\n"
    )
    with pytest.raises(ValueError, match="exactly one subclass of TfServingBaseService"):
        load_modelarts(folder)
    assert "model_service" not in sys.modules


def test_base_class_defaults_pass_data_through(tmp_path):
    """A subclass that overrides nothing: the stand-in's __init__ stores name and path, hooks pass
    data through; the SingleNodeService alias imports too."""
    folder = tmp_path / "passthrough"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "TensorFlow", "runtime": "python3.6", "name": "echo"}')
    (folder / "customize_service.py").write_text(
        "from model_service.tfserving_model_service import TfServingBaseService\n"
        "from model_service.model_service import SingleNodeService\n"
        "assert SingleNodeService is TfServingBaseService\n"
        "class Echo(TfServingBaseService):\n"
        "    pass\n"
    )
    service = load_modelarts(folder)
    try:
        assert service.name == "echo"  # config.json's name wins over the folder name
        assert service.instance.model_name == "echo"
        assert service.instance.model_path == str(folder.resolve())
        assert service.handle({"a": [1, 2]}) == {"a": [1, 2]}
    finally:
        service.model.close()


# -- served unchanged ---------------------------------------------------------------------------
def test_serve_modelarts_folder_multipart_images(serve_factory, modelarts_folder, detector_graph):
    server = serve_factory(modelarts_folder, "--grpc-port", "-1", env={"DETECTOR_TOP_K": "4"})
    images = {"wide.png": png(60, 130, seed=1), "tall.png": png(150, 70, seed=2)}
    files = [("images", (name, data, "image/png")) for name, data in images.items()]
    response = httpx.post(f"{server.url}/api/predict/modelarts_detector", files=files, timeout=60)
    assert response.status_code == 200, response.text
    # DETECTOR_TOP_K reached customize_service.py through the environment, as on ModelArts
    check_detections(response.json(), detector_graph, images, top_k=4)

    # a sub-path routes to the same service
    one = {"wide.png": images["wide.png"]}
    response = httpx.post(f"{server.url}/api/predict/modelarts_detector/v1/detect",
                          files=[("images", ("wide.png", one["wide.png"], "image/png"))], timeout=60)
    assert response.status_code == 200, response.text
    check_detections(response.json(), detector_graph, one, top_k=4)

    # the user's code failing on a non-image is the service's error: 500 with the exception named
    bad = httpx.post(f"{server.url}/api/predict/modelarts_detector",
                     files=[("images", ("notes.txt", b"not an image", "text/plain"))], timeout=60)
    assert bad.status_code == 500
    assert "UnidentifiedImageError" in bad.text

    # tensor protocols say where to go instead of failing obscurely
    v2 = httpx.post(f"{server.url}/v2/models/modelarts_detector/infer",
                    json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]})
    assert v2.status_code == 400
    assert "/api/predict/modelarts_detector" in v2.text
    unknown = httpx.post(f"{server.url}/api/predict/other", files=files, timeout=60)
    assert unknown.status_code == 404
    # the rest of the server copes with a model that has no tensor spec
    meta = httpx.get(f"{server.url}/v2/models/modelarts_detector")
    assert meta.status_code == 200 and meta.json()["platform"] == "modelarts", meta.text
    assert httpx.get(f"{server.url}/v2/models/modelarts_detector/ready").status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def test_modelarts_folder_inside_a_repository_and_a_service_config(
        serve_factory, modelarts_folder, detector_graph, tmp_path):
    """Beside modelpod packages in a repository folder, and named by an EAS-style service config."""
    from tests.helpers.addition import pack_addition

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(modelarts_folder, repo / "detector")
    pack_addition(repo / "addition" / "1")
    images = {"wide.png": png(60, 130, seed=1)}
    files = [("images", (name, data, "image/png")) for name, data in images.items()]
    server = serve_factory(repo, "--grpc-port", "-1", env={"DETECTOR_TOP_K": "3"})
    # in a repository the folder's name is the service name
    answer = httpx.post(f"{server.url}/api/predict/detector", files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    check_detections(answer.json(), detector_graph, images, top_k=3)
    add = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]},
                      {"name": "y", "datatype": "FP32", "shape": [1], "data": [2.0]}]}
    assert httpx.post(f"{server.url}/v2/models/addition/infer", json=add).json()["outputs"][0]["data"] == [3.0]

    config = tmp_path / "service.json"
    config.write_text(
        '{"name": "yolo", "model_path": "%s", "metadata": {"instance": 1}}' % (repo / "detector")
    )
    server = serve_factory(config, "--grpc-port", "-1", env={"DETECTOR_TOP_K": "2"})
    answer = httpx.post(f"{server.url}/api/predict/yolo", files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    check_detections(answer.json(), detector_graph, images, top_k=2)
