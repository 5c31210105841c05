"""Packing with requirements: they are locked into the package, and what cannot be resolved fails packing."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import modelpod
from modelpod.envs.requirements import python_version, read_lock
from tests.helpers.cli import modelpod as modelpod_cli
from tests.helpers.isolated import NUMPY_1
from tests.helpers.packages import pack_code

ECHO = """
    def get_model(data_dir):
        return lambda x: {"y": x}
"""
SPEC_IN = [{"name": "x", "dtype": "float32", "shape": ("n",)}]
SPEC_OUT = [{"name": "y", "dtype": "float32", "shape": ("n",)}]


def test_the_lock_is_a_hashed_payload_file_that_inspect_shows(numpy_packages: dict[str, Path]) -> None:
    package = numpy_packages["np1"]
    manifest = json.loads((package / "modelpod.json").read_text())
    assert manifest["requirements"] == [f"numpy=={NUMPY_1}"]
    assert "requirements.lock" in manifest["files"]  # tampering with it fails the package's hash check
    lock = read_lock((package / "requirements.lock").read_text())
    assert lock.pins["numpy"] == NUMPY_1 and lock.python == python_version()
    shown = modelpod_cli("inspect", str(package))
    assert shown.returncode == 0, shown.stderr
    assert f"numpy=={NUMPY_1}" in shown.stdout and f"locked in requirements.lock for python {lock.python}" in shown.stdout
    as_json = json.loads(modelpod_cli("inspect", "--json", str(package)).stdout)
    assert as_json["lock"]["pins"]["numpy"] == NUMPY_1


def test_a_package_without_requirements_has_no_lock(tmp_path: Path) -> None:
    package = pack_code(tmp_path / "plain", "plain", ECHO, SPEC_IN, SPEC_OUT)
    assert not (package / "requirements.lock").exists()


def test_an_unresolvable_requirement_fails_packing_with_the_resolvers_message(tmp_path: Path) -> None:
    target = tmp_path / "out" / "broken"
    with pytest.raises(ValueError) as caught:
        pack_code(target, "broken", ECHO, SPEC_IN, SPEC_OUT, requirements=["numpy==1.26.4", "numpy==2.2.6"])
    message = str(caught.value)
    assert "cannot lock the requirements" in message and "numpy" in message and "uv exited with" in message
    assert not target.exists() and not [p for p in target.parent.iterdir() if p.name.startswith(".broken")]


def test_requirements_must_be_a_list(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="list of requirement strings"):
        pack_code(tmp_path / "p", "p", ECHO, SPEC_IN, SPEC_OUT, requirements="numpy")


def test_modelpod_pack_requirements_from_the_command_line(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "echo",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    source = tmp_path / "echo.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    (tmp_path / "reqs.txt").write_text("# the model's own needs\nsix==1.16.0\n")
    done = modelpod_cli("pack", str(source), "-o", str(tmp_path / "echo"), "--requirements", str(tmp_path / "reqs.txt"),
                        "-r", "inflection")
    assert done.returncode == 0, done.stderr
    pins = read_lock((tmp_path / "echo" / "requirements.lock").read_text()).pins
    assert pins["six"] == "1.16.0" and "inflection" in pins
    # the framework comes along, at the version packing ran with: the isolated worker imports it
    assert pins["onnxruntime"] == version("onnxruntime") and pins["onnx"] == version("onnx")
    with modelpod.load(tmp_path / "echo", isolated=True) as model:
        np.testing.assert_array_equal(model.infer({"x": np.array([1.0, 2.0], np.float32)})["y"], [1.0, 2.0])
