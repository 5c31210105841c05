"""Shared test helpers: real TensorFlow / Keras models the tensorflow and keras tests pack.

Every builder makes a small real model (no mocks): the seed addition model as a TF1 GraphDef, a
frozen .pb, a SavedModel and a Keras model; a small uint8-image detector; a SavedModel with two
signatures and a string input; a dtype round-trip SavedModel. ``run_fresh`` runs code in a new
Python process so tests can show that a package loads without anything the packing process held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# -- the seed addition problem (Neuropod's README) ------------------------------------------------
from tests.helpers.frameworks_common import (  # noqa: E402,F401 (the shared addition, under the names these tests use)
    ADDITION_EXPECTED as ADD_TEST_EXPECTED,
    ADDITION_INPUT_SPEC as ADD_INPUT_SPEC,
    ADDITION_INPUTS as ADD_TEST_INPUT,
    ADDITION_OUTPUT_SPEC as ADD_OUTPUT_SPEC,
)
ADD_NODE_NAME_MAPPING = {
    "x": "some_namespace/in_x:0",
    "y": "some_namespace/in_y:0",
    "out": "some_namespace/out:0",
}


def addition_graph_def() -> tf.compat.v1.GraphDef:
    """The seed's ``create_tf_addition_model``: placeholders of unknown shape in a name scope."""
    graph = tf.Graph()
    with graph.as_default():
        with tf.name_scope("some_namespace"):
            x = tf.compat.v1.placeholder(tf.float32, name="in_x")
            y = tf.compat.v1.placeholder(tf.float32, name="in_y")
            tf.add(x, y, name="out")
    return graph.as_graph_def()


def write_frozen_graph(graph_def: tf.compat.v1.GraphDef, path: Path) -> Path:
    """Write a GraphDef as a binary frozen-graph .pb file (what tf.io.write_graph does)."""
    path.write_bytes(graph_def.SerializeToString())
    return path


class _Addition(tf.Module):
    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.float32, name="x"), tf.TensorSpec([None], tf.float32, name="y"),
    ])
    def add(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"out": x + y}


def addition_saved_model(folder: Path) -> Path:
    """The addition model as a TF2 SavedModel with one serving_default signature."""
    module = _Addition()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.add})
    return folder


def addition_keras() -> Any:
    """The seed's ``create_keras_addition_model`` in Keras 3."""
    import keras

    x = keras.Input(batch_shape=(None,), name="x")
    y = keras.Input(batch_shape=(None,), name="y")
    out = keras.layers.Add(name="out")([x, y])
    return keras.Model(inputs=[x, y], outputs=[out])


# -- a small detector on uint8 images ---------------------------------------------------------------
DETECTOR_INPUT_SPEC = [{"name": "image", "dtype": "uint8", "shape": ("batch", None, None, 3)}]
DETECTOR_OUTPUT_SPEC = [
    {"name": "boxes", "dtype": "float32", "shape": ("num_detections", 4)},
    {"name": "scores", "dtype": "float32", "shape": ("num_detections",)},
]
DETECTOR_MAPPING = {"image": "image:0", "boxes": "detections/boxes:0", "scores": "detections/scores:0"}


def detector_graph_def(seed: int = 0) -> tf.compat.v1.GraphDef:
    """A frozen TF1 detector: uint8 [batch, H, W, 3] -> cast/255 -> two convs -> per-cell
    box (4) and score; cells scoring over 0.5 become detections. ``boxes`` and ``scores`` share
    their first dim, the number of detections, which depends on the image."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (3, 3, 3, 8)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    w2 = rng.normal(0, 0.5, (1, 1, 8, 5)).astype(np.float32)
    b2 = np.array([0, 0, 0, 0, -0.5], dtype=np.float32)
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3], name="image")
        x = tf.cast(image, tf.float32) / 255.0
        x = tf.nn.relu(tf.nn.conv2d(x, tf.constant(w1), strides=2, padding="SAME") + b1)
        head = tf.nn.conv2d(x, tf.constant(w2), strides=1, padding="SAME") + b2
        with tf.name_scope("detections"):
            boxes = tf.reshape(tf.sigmoid(head[..., :4]), [-1, 4])
            scores = tf.reshape(tf.sigmoid(head[..., 4]), [-1])
            keep = scores > 0.5
            tf.identity(tf.boolean_mask(boxes, keep), name="boxes")
            tf.identity(tf.boolean_mask(scores, keep), name="scores")
    return graph.as_graph_def()


def run_graph(graph_def: tf.compat.v1.GraphDef, feeds: dict[str, Any], fetches: list[str]) -> list[Any]:
    """Run a GraphDef directly in a plain Session (the reference the packaged model must match)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        return sess.run(fetches, {graph.get_tensor_by_name(k): v for k, v in feeds.items()})


def images(batch: int, height: int, width: int, seed: int = 1) -> np.ndarray:
    """Random uint8 RGB images [batch, height, width, 3]."""
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)


# -- a SavedModel with two signatures, one taking strings ------------------------------------------
class _TwoSignatures(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable(3.0)
        keys = tf.constant(["cat", "dog", "bird"])
        values = tf.constant([0, 1, 2], dtype=tf.int64)
        self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1)

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="features")])
    def score(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"score": tf.reduce_sum(features, axis=1) * self.scale}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def classify(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "class_id": self.table.lookup(text),
            "label": tf.strings.join([tf.strings.upper(text), "!"]),
        }


def two_signature_saved_model(folder: Path) -> Path:
    """serving_default: float ``features`` [None, 2] -> ``score``; classify: string ``text`` ->
    int64 ``class_id`` (lookup table) and string ``label`` (upper-cased, with '!')."""
    module = _TwoSignatures()
    tf.saved_model.save(
        module, str(folder), signatures={"serving_default": module.score, "classify": module.classify}
    )
    return folder


# -- dtype round trip ---------------------------------------------------------------------------------
class _Dtypes(tf.Module):
    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.float16, name="f16"),
        tf.TensorSpec([None], tf.int8, name="i8"),
        tf.TensorSpec([None], tf.uint8, name="u8"),
        tf.TensorSpec([None], tf.bool, name="flag"),
        tf.TensorSpec([None], tf.string, name="text"),
    ])
    def run(self, f16, i8, u8, flag, text):  # type: ignore[no-untyped-def]
        return {
            "f16_out": f16 * tf.constant(2, tf.float16),
            "i8_out": -i8,
            "u8_out": tf.constant(255, tf.uint8) - u8,
            "flag_out": tf.logical_not(flag),
            "text_out": tf.strings.join([text, text]),
        }


def dtypes_saved_model(folder: Path) -> Path:
    """One signature taking and returning float16, int8, uint8, bool and string tensors."""
    module = _Dtypes()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.run})
    return folder


class _Complex(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.complex64, name="z")])
    def run(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"magnitude": tf.abs(z)}


def complex_saved_model(folder: Path) -> Path:
    """A SavedModel whose input is complex64, a dtype modelpod cannot carry."""
    module = _Complex()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.run})
    return folder


# -- fresh processes ------------------------------------------------------------------------------------
def run_fresh(code: str, timeout: float = 120) -> Any:
    """Run ``code`` in a new Python process; it must print one JSON line last, which is returned."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


FRESH_INFER_ADDITION = """
import json
import numpy as np
import modelpod
results = {}
for path in PATHS:
    with modelpod.load(path) as model:
        out = model.infer({"x": np.arange(5, dtype=np.float32), "y": np.arange(5, dtype=np.float32)})
        results[path] = {"out": out["out"].tolist(), "dtype": str(out["out"].dtype), "platform": model.platform}
print(json.dumps(results))
"""


def fresh_infer_addition(paths: list[Path]) -> dict[str, Any]:
    """Load each addition package in one new process and infer x = y = [0..4]."""
    code = f"PATHS = {[str(p) for p in paths]!r}\n" + FRESH_INFER_ADDITION
    return run_fresh(code)


# -- a small Keras conv net on uint8 images ------------------------------------------------------------
KERAS_CONV_INPUT_SPEC = [{"name": "image", "dtype": "uint8", "shape": ("batch", None, None, 3)}]
KERAS_CONV_OUTPUT_SPEC = [
    {"name": "class_prob", "dtype": "float32", "shape": ("batch", 4)},
    {"name": "embedding", "dtype": "float32", "shape": ("batch", 8)},
]


def keras_conv_net(seed: int = 0) -> Any:
    """uint8 [batch, H, W, 3] -> Rescaling (casts to float) -> two convs -> pooled features ->
    ``class_prob`` (softmax over 4) and ``embedding`` (8); both share the batch dim."""
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255)(image)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    class_prob = keras.layers.Dense(4, activation="softmax", name="class_prob")(x)
    embedding = keras.layers.Dense(8, name="embedding")(x)
    return keras.Model(inputs=image, outputs=[class_prob, embedding])
