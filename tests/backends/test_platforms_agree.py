"""One network, four frameworks: TorchScript, ONNX, TensorFlow (SavedModel) and Keras packages built
from the same numpy weights must give the same output through ``modelpod.load(...).infer``.

The network: NCHW float32 image [batch, 3, 8, 8] -> conv 3x3 (3->4, pad 1) + bias -> relu ->
flatten (channel-major, as torch does) -> dense 256->5 -> ``logits`` [batch, 5].
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import tf_models as tm
import modelpod

pytestmark = pytest.mark.timeout(240)

INPUT_SPEC = [{"name": "image", "dtype": "float32", "shape": ("batch", 3, 8, 8)}]
OUTPUT_SPEC = [{"name": "logits", "dtype": "float32", "shape": ("batch", 5)}]


def weights() -> dict[str, np.ndarray]:
    """Fixed weights in torch layout: conv OIHW, dense [out, in]."""
    rng = np.random.default_rng(42)
    return {
        "conv_w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, 4).astype(np.float32),
        "fc_w": rng.normal(0, 0.1, (5, 256)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, 5).astype(np.float32),
    }


def numpy_reference(image: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """The network in plain numpy (float64), the ground truth every framework is held to."""
    x = np.pad(image.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, _, h, wd = image.shape
    conv = np.zeros((n, 4, h, wd))
    for i in range(3):
        for j in range(3):
            patch = x[:, :, i:i + h, j:j + wd]  # [n, 3, h, w]
            conv += np.einsum("nchw,oc->nohw", patch, w["conv_w"][:, :, i, j])
    conv = np.maximum(conv + w["conv_b"][None, :, None, None], 0)
    return conv.reshape(n, -1) @ w["fc_w"].T.astype(np.float64) + w["fc_b"]


def torchscript_package(path: Path, w: dict[str, np.ndarray]) -> Path:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(256, 5)

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            x = torch.relu(self.conv(image))
            return {"logits": self.fc(torch.flatten(x, 1))}

    net = Net().eval()
    with torch.no_grad():
        net.conv.weight.copy_(torch.from_numpy(w["conv_w"]))
        net.conv.bias.copy_(torch.from_numpy(w["conv_b"]))
        net.fc.weight.copy_(torch.from_numpy(w["fc_w"]))
        net.fc.bias.copy_(torch.from_numpy(w["fc_b"]))
    with warnings.catch_warnings():  # torch 2.10+ flags torch.jit.script as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(net)
    return modelpod.pack_torchscript(
        path, name="net", module=scripted, input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC
    )


def onnx_package(path: Path, w: dict[str, np.ndarray]) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return modelpod.pack_onnx(path, name="net", model=model, input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC)


def tensorflow_package(path: Path, w: dict[str, np.ndarray]) -> Path:
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_w = tf.Variable(w["conv_w"].transpose(2, 3, 1, 0))  # OIHW -> HWIO
            self.conv_b = tf.Variable(w["conv_b"])
            self.fc_w = tf.Variable(w["fc_w"].T)
            self.fc_b = tf.Variable(w["fc_b"])

        @tf.function(input_signature=[tf.TensorSpec([None, 3, 8, 8], tf.float32, name="image")])
        def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            x = tf.transpose(image, [0, 2, 3, 1])  # NCHW -> NHWC (CPU conv wants NHWC)
            x = tf.nn.relu(tf.nn.conv2d(x, self.conv_w, 1, "SAME") + self.conv_b)
            x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, 256])  # flatten channel-major
            return {"logits": tf.matmul(x, self.fc_w) + self.fc_b}

    net = Net()
    src = path.parent / f"{path.name}_src"
    tf.saved_model.save(net, str(src), signatures={"serving_default": net.serve})
    return modelpod.pack_tensorflow(
        path, name="net", saved_model_dir=src, input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC
    )


def keras_package(path: Path, w: dict[str, np.ndarray]) -> Path:
    import keras

    image = keras.Input(shape=(3, 8, 8), name="image")
    x = keras.layers.Permute((2, 3, 1))(image)  # NCHW -> NHWC
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    x = keras.layers.Permute((3, 1, 2))(conv(x))  # back to channel-major before flattening
    dense = keras.layers.Dense(5, name="logits")
    model = keras.Model(image, dense(keras.layers.Flatten()(x)))
    conv.set_weights([w["conv_w"].transpose(2, 3, 1, 0), w["conv_b"]])
    dense.set_weights([w["fc_w"].T, w["fc_b"]])
    return modelpod.pack_keras(path, name="net", model=model, input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("agree")
    w = weights()
    return {
        "torchscript": torchscript_package(work / "ts", w),
        "onnx": onnx_package(work / "onnx", w),
        "tensorflow": tensorflow_package(work / "tf", w),
        "keras": keras_package(work / "keras", w),
    }


@pytest.mark.parametrize("batch", [1, 3])
def test_same_network_same_output_on_every_platform(packages: dict[str, Path], batch: int) -> None:
    image = np.random.default_rng(batch).normal(0, 1, (batch, 3, 8, 8)).astype(np.float32)
    want = numpy_reference(image, weights())
    outs = {}
    for platform, path in packages.items():
        with modelpod.load(path) as model:
            assert model.platform == platform
            out = model.infer({"image": image})["logits"]
        assert out.dtype == np.float32 and out.shape == (batch, 5), platform
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5, err_msg=platform)
        outs[platform] = out
    for platform, out in outs.items():
        np.testing.assert_allclose(out, outs["torchscript"], rtol=1e-4, atol=1e-5, err_msg=platform)
