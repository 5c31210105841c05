"""``modelpod.load(path, isolated=True)``: the same infer(), in a worker with the package's own environment."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

import modelpod
from modelpod.errors import BridgeError, ModelError, SpecError
from tests.helpers.isolated import NUMPY_1, NUMPY_2
from tests.helpers.packages import pack_echo

X = np.array([1.0, 2.0, 3.0], dtype=np.float32)


def test_each_package_runs_with_its_own_numpy(numpy_packages: dict[str, Path]) -> None:
    for name, version in (("np1", NUMPY_1), ("np2", NUMPY_2)):
        with modelpod.load(numpy_packages[name], isolated=True) as model:
            out = model.infer({"x": X})
            assert out["numpy"].tolist() == [version]
            np.testing.assert_array_equal(out["y"], np.cumsum(X))
            assert out["sees_server"].tolist() == [False]  # the server's site-packages are not on its path
            assert model.spec.inputs[0].name == "x"


def test_in_process_load_uses_the_servers_numpy(numpy_packages: dict[str, Path]) -> None:
    with modelpod.load(numpy_packages["np1"]) as model:
        out = model.infer({"x": X})
    assert out["numpy"].tolist() == [np.__version__]
    assert out["sees_server"].tolist() == [True]


def test_bad_input_is_a_spec_error_before_the_worker(numpy_packages: dict[str, Path]) -> None:
    with modelpod.load(numpy_packages["np2"], isolated=True) as model:
        with pytest.raises(SpecError, match="x"):
            model.infer({"x": np.zeros((2, 2), np.float32)})
        assert model.infer({"x": X})["numpy"].tolist() == [NUMPY_2]  # still serving


def test_a_package_without_requirements_gets_a_worker_only_environment(tmp_path: Path) -> None:
    package = pack_echo(tmp_path / "echo", "string")
    with modelpod.load(package, isolated=True) as model:
        backend = model._backend
        assert Path(backend.worker.hello["executable"]).parent.parent.parent.name == "envs"
        data = np.array([[b"a", b"bc"], [b"", b"\xff"]], dtype=object)
        np.testing.assert_array_equal(model.infer({"x": data})["y"], data)


def test_an_archive_is_recorded_as_its_environments_user(tmp_path: Path) -> None:
    from modelpod.envs.store import EnvStore

    archive = pack_echo(tmp_path / "echo.tar.gz", "float32")
    with modelpod.load(archive, isolated=True) as model:
        x = np.ones((2, 2), np.float32)
        np.testing.assert_array_equal(model.infer({"x": x})["y"], x)
    users = [user for record in EnvStore().list() for user in record.used_by]
    assert str(archive.resolve()) in users  # not the temporary extraction folder: prune keeps it


def test_a_killed_isolated_worker_fails_the_call_clearly(numpy_packages: dict[str, Path]) -> None:
    model = modelpod.load(numpy_packages["np1"], isolated=True)
    try:
        os.kill(model._backend.worker.pid, signal.SIGKILL)
        model._backend.worker.process.wait(10)
        with pytest.raises((ModelError, BridgeError), match="worker"):
            model.infer({"x": X})
    finally:
        model.close()


def test_a_framework_package_without_requirements_runs_isolated_with_its_framework(tmp_path: Path) -> None:
    from importlib.metadata import version

    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "neg",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    package = modelpod.pack_onnx(tmp_path / "neg", name="neg",
                                 model=helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with modelpod.load(package, isolated=True) as model:  # its environment gets onnxruntime, as the server's
        np.testing.assert_array_equal(model.infer({"x": X})["y"], -X)
        executable = model._backend.worker.hello["executable"]
    from modelpod.envs.store import EnvStore

    (record,) = [r for r in EnvStore().list() if executable.startswith(str(r.path))]
    assert record.packages["onnxruntime"] == version("onnxruntime")
