"""The ``modelpod`` command on local packages, run as a real subprocess: inspect, verify, infer, --help."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from modelpod.package.manifest import read_manifest, write_manifest
from modelpod.package.vectors import save_npz
from tests.helpers.addition import pack_addition
from tests.helpers.cli import modelpod, without_module

pytestmark = pytest.mark.timeout(60)

@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return pack_addition(tmp_path_factory.mktemp("cli") / "addition")


@pytest.mark.parametrize("command", [[], ["inspect"], ["verify"], ["infer"], ["pack"], ["serve"], ["bench"],
                                     ["bench-report"], ["env"], ["env", "build"], ["env", "list"], ["env", "prune"]])
def test_help_of_every_command(command):
    result = modelpod(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    # flags show as flags (no value placeholder), and help text shows as written (no markup eaten)
    assert "<bool>" not in result.stdout and "--help " in result.stdout
    expected = {"pack": ["--overwrite ", "-r, --requirements REQUIREMENT"], "serve": ["--watch ", "modelpod[ray]"],
                "bench": ["[NAME=]shape/dtype", "--json "], "infer": ["-i, --input NAME=VALUE", "Exit status"],
                "env prune": ["--all "]}.get(" ".join(command), [])
    for text in expected:
        assert text in result.stdout, (text, result.stdout)
    assert "--no-overwrite" not in result.stdout


def test_pack_messages_name_the_flags(tmp_path):
    raw, _ = _onnx_addition(tmp_path)
    assert modelpod("pack", str(raw), "-o", str(tmp_path / "p")).returncode == 0
    result = modelpod("pack", str(raw), "-o", str(tmp_path / "p"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'p'} already exists; remove it or pass --overwrite"
    np.savez(tmp_path / "expected.npz", out=np.zeros(1, np.float32))
    result = modelpod("pack", str(raw), "-o", str(tmp_path / "q"), "--test-expected", str(tmp_path / "expected.npz"))
    assert "--test-expected was given without --test-inputs" in result.stderr, result.stderr
    assert modelpod("pack", str(raw), "-o", str(tmp_path / "p"), "--overwrite").returncode == 0


def test_version():
    result = modelpod("--version")
    assert result.returncode == 0 and result.stdout.startswith("modelpod ")


def test_inspect_table(package):
    result = modelpod("inspect", str(package))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "addition" in out and "platform: python" in out
    for text in ["inputs", "outputs", "x", "y", "out", "float32", "(num_inputs,)"]:
        assert text in out
    assert "test vectors: True" in out


def test_inspect_json_of_a_folder_and_an_archive(package, tmp_path):
    archive = pack_addition(tmp_path / "addition.zip")
    for path in [package, archive]:
        result = modelpod("inspect", "--json", str(path))
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["name"] == "addition" and info["platform"] == "python"
        assert info["format_version"] == 1 and info["test_vectors"] is True
        sig = info["signatures"][""]
        assert [s["name"] for s in sig["inputs"]] == ["x", "y"]
        assert sig["outputs"] == [{"name": "out", "dtype": "float32", "shape": ["num_inputs"]}]
        assert "code/main.py" in info["files"]


def test_inspect_of_something_that_is_not_a_package(tmp_path):
    (tmp_path / "folder").mkdir()
    result = modelpod("inspect", str(tmp_path / "folder"))
    assert result.returncode == 1
    assert "saved_model.pb is missing" in result.stderr


def test_verify_ok(package):
    result = modelpod("verify", str(package))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "expected outputs" in result.stdout


def test_verify_reports_the_difference(tmp_path):
    path = pack_addition(tmp_path / "pkg")
    # a package whose stored expected output disagrees (hashes rewritten, so only the values differ)
    save_npz(path / "test" / "expected.npz", {"out": np.array([0, 2, 4, 6, 10], dtype=np.float32)})
    write_manifest(path, read_manifest(path, verify_hashes=False))
    result = modelpod("verify", str(path))
    assert result.returncode == 1
    assert "output 'out' differs from the expected output" in result.stderr
    assert "max abs difference 2" in result.stderr
    assert "rtol=0.0001, atol=1e-05" in result.stderr


def test_verify_reports_a_tampered_payload(tmp_path):
    path = pack_addition(tmp_path / "pkg.tar.gz")
    ok = modelpod("verify", str(path))
    assert ok.returncode == 0, ok.stderr
    folder = pack_addition(tmp_path / "folder")
    (folder / "code" / "helper.py").write_text("def add(x, y):\n    return x\n")
    result = modelpod("verify", str(folder))
    assert result.returncode == 1
    assert "'code/helper.py'" in result.stderr and "modified or damaged" in result.stderr


def test_verify_without_vectors(tmp_path):
    path = pack_addition(tmp_path / "pkg", test_input_data=None, test_expected_out=None)
    result = modelpod("verify", str(path))
    assert result.returncode == 0
    assert "no test vectors" in result.stdout


def test_infer_with_npy_and_json_inputs_and_output_dir(package, tmp_path):
    np.save(tmp_path / "x.npy", np.arange(5, dtype=np.float32))
    result = modelpod(
        "infer", str(package), "-i", "x=@x.npy", "-i", "y=[1, 1, 1, 1, 1]",
        "--output-dir", "outputs", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "out float32 (5,)" in result.stdout
    written = np.load(tmp_path / "outputs" / "out.npy", allow_pickle=False)
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, [1, 2, 3, 4, 5])


def test_infer_json_output_and_npz_inputs(package, tmp_path):
    np.savez(tmp_path / "inputs.npz", x=np.ones(3, np.float32), y=np.full(3, 2, np.float32))
    result = modelpod("infer", str(package), "-i", "@inputs.npz", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc == {"out": {"dtype": "float32", "shape": [3], "data": [3.0, 3.0, 3.0]}}


def test_infer_on_an_archive(tmp_path):
    path = pack_addition(tmp_path / "pkg.tgz")
    result = modelpod("infer", str(path), "-i", "x=[1.5]", "-i", "y=[2]", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["out"]["data"] == [3.5]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-i", "x=[1, 2, 3]", "-i", "y=[1, 2]"], "symbol num_inputs is 3 in 'x' but 2 in 'y'"),
        (["-i", "x=[1, 2]"], "missing input 'y'"),
        (["-i", "x=[1]", "-i", "y=[1]", "-i", "z=[1]"], "unexpected input(s) ['z']"),
        (["-i", "x=[1]", "-i", "y=[[1]]"], "input 'y': expected float32 of shape (num_inputs,)"),
        (["-i", "x=[1]", "-i", "y=[1]", "--output", "nope"], "unknown output(s) ['nope']"),
    ],
)
def test_infer_bad_input_exits_1_with_the_message(package, args, message):
    result = modelpod("infer", str(package), *args)
    assert result.returncode == 1  # the model refused it (the same status as a server's 400)
    assert "bad input" in result.stderr and message in result.stderr


@pytest.mark.parametrize("value, message", [
    ("[1,2", "input 'x': '[1,2' is malformed JSON (Expecting ',' delimiter at character 4); give NAME=<JSON>"),
    ('{"a": ', "input 'x': '{\"a\": ' is malformed JSON"),
    ("1,2,3", "input 'x': '1,2,3' is not JSON; a list needs brackets: x=[1,2,3]"),
])
def test_infer_names_the_input_whose_json_is_malformed(package, value, message):
    result = modelpod("infer", str(package), "-i", f"x={value}", "-i", "y=[1]")
    assert result.returncode == 2
    assert "--input" in result.stderr and message in " ".join(result.stderr.split()), result.stderr


def test_usage_errors_exit_2_and_failures_1_in_every_command(package, tmp_path):
    usage = [
        ["pack", str(package), "-o", str(tmp_path / "x"), "--input-spec", "[{"],
        ["pack", str(package), "-o", str(tmp_path / "x"), "--test-inputs", str(tmp_path / "missing.npz")],
        ["serve", str(package), "--instances", "0", "--grpc-port", "-1"],
        ["serve", str(package), "--replicas", "2", "--grpc-port", "-1"],
        ["infer", str(package), "--no-such-option"],
        ["bench", "http://127.0.0.1:9", "m", "--duration", "soon"],
    ]
    for args in usage:
        result = modelpod(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
    failed = [["inspect", str(tmp_path / "missing")], ["verify", str(tmp_path / "missing")],
              ["bench", "http://127.0.0.1:9", "m", "--duration", "1s"], ["bench-report", str(tmp_path / "none.json")]]
    for args in failed:
        result = modelpod(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_infer_with_an_unreadable_input_file(package, tmp_path):
    result = modelpod("infer", str(package), "-i", "x=@missing.npy", "-i", "y=[1]", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.npy" in result.stderr


def test_infer_on_a_missing_package(tmp_path):
    result = modelpod("infer", str(tmp_path / "nothing"), "-i", "x=[1]")
    assert result.returncode == 1
    assert "no such package" in result.stderr


def test_infer_reports_an_unreadable_npz_without_a_traceback(tmp_path: Path) -> None:
    package = pack_addition(tmp_path / "addition")
    result = modelpod("infer", str(package), "--input", "@missing.npz", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.npz" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_infer_against_a_server_reports_its_refusal_without_a_traceback(tmp_path: Path, serve_factory) -> None:
    package = pack_addition(tmp_path / "addition")
    server = serve_factory(package)
    result = modelpod("infer", server.url, "nope", "--input", "x=[1]")
    assert result.returncode == 1
    assert "error:" in result.stderr and "404" in result.stderr and "not served here" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    result = modelpod("infer", server.url, "addition", "--input", "x=[1]")
    assert result.returncode == 1  # refused by the server (400) as by the model (404): 1
    assert "missing input 'y'" in result.stderr and "Traceback" not in result.stderr, result.stderr
    result = modelpod("infer", server.url, "addition", "--input", "x=abc", "--input", "y=[1]")
    assert result.returncode == 1
    assert "input 'x': expected FP32 values, got 'abc'" in result.stderr, result.stderr
    result = modelpod("infer", server.url, "--input", "x=[1]")
    assert result.returncode == 2 and "give the model name after the server URL" in result.stderr


def test_serve_rejects_an_unknown_log_level_with_a_message(tmp_path: Path) -> None:
    package = pack_addition(tmp_path / "addition")
    result = modelpod("serve", str(package), "--log-level", "loud", "--http-port", "0", "--grpc-port", "-1")
    assert result.returncode == 2
    assert "--log-level" in result.stderr and "Traceback" not in result.stderr, result.stderr


def _onnx_addition(folder: Path) -> tuple[Path, Path]:
    """A raw addition.onnx and the package packed from it (needs onnx and onnxruntime here)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    import modelpod

    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["out"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n"]) for n in ("x", "y")],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    raw = folder / "addition.onnx"
    onnx.save(model, raw)
    return raw, modelpod.pack_onnx(folder / "addition", name="addition", model=model)


def test_a_missing_framework_is_one_line_naming_the_extra_in_every_command(tmp_path: Path) -> None:
    raw, package = _onnx_addition(tmp_path)
    repository = tmp_path / "repository" / "adder" / "1"
    repository.parent.mkdir(parents=True)
    package.rename(repository)
    no_ort = without_module(tmp_path, "onnxruntime")
    wanted = "error: model '{}' needs onnxruntime: pip install 'modelpod[onnx]'"
    for args, model in [(["serve", str(repository), "--http-port", "0", "--grpc-port", "-1"], "addition"),
                        (["serve", str(repository.parents[1]), "--http-port", "0", "--grpc-port", "-1"], "adder"),
                        (["infer", str(repository), "-i", "x=[1]", "-i", "y=[2]"], "addition"),
                        (["verify", str(repository)], "addition")]:
        result = modelpod(*args, env=no_ort)
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
        assert errors == [wanted.format(model)], (args, result.stderr)
    result = modelpod("pack", str(raw), "-o", str(tmp_path / "again"), env=no_ort)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {raw} needs onnxruntime: pip install 'modelpod[onnx]'"


def test_a_raw_model_where_a_package_is_wanted_gets_the_pack_command(tmp_path: Path) -> None:
    raw, _ = _onnx_addition(tmp_path)
    for command in (["serve"], ["infer"], ["verify"]):
        result = modelpod(*command, str(raw), *(["-i", "x=[1]"] if command == ["infer"] else []), cwd=tmp_path)
        assert result.returncode == 1
        line = result.stderr.strip()
        assert line.startswith(f"error: {raw} is an ONNX model, not a package; pack it first: modelpod pack "), line
        assert line.endswith(f"(then: modelpod {command[0]} {tmp_path / 'addition.modelpod'})"), line
    # the suggested command line packs it, and the package it names then runs
    suggested = line.split("pack it first: ", 1)[1].split(" (then:", 1)[0]
    packed = modelpod(*shlex.split(suggested)[1:])
    assert packed.returncode == 0, packed.stderr
    result = modelpod("infer", str(tmp_path / "addition.modelpod"), "-i", "x=[1]", "-i", "y=[2]", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["out"]["data"] == [3.0], result.stderr
    # the other raw kinds (recognised by name: serve refuses them before opening anything)
    (tmp_path / "net.pt").write_bytes(b"")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    pt = modelpod("serve", str(tmp_path / "net.pt")).stderr
    assert "is a TorchScript file" in pt and "--input-spec '[{" in pt and "--output-spec" in pt
    saved = modelpod("serve", str(tmp_path / "saved")).stderr
    assert "is a TensorFlow SavedModel folder" in saved and f"modelpod pack {tmp_path / 'saved'} -o" in saved


def test_a_triton_repository_of_raw_files_gets_the_pack_command(tmp_path: Path) -> None:
    raw, _ = _onnx_addition(tmp_path)
    triton = tmp_path / "models"
    (triton / "adder" / "1").mkdir(parents=True)
    raw.rename(triton / "adder" / "1" / "model.onnx")
    (triton / "adder" / "config.pbtxt").write_text('name: "adder"\nplatform: "onnxruntime_onnx"\n')
    result = modelpod("serve", str(triton), "--http-port", "0")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "it looks like a Triton model repository of raw model files (adder/1/model.onnx is an ONNX model)" in line
    # the suggested command line packs the version where the repository it names expects it
    suggested = line.split("e.g. ", 1)[1].split(", then modelpod serve ", 1)
    packed = modelpod(*shlex.split(suggested[0])[1:])
    assert packed.returncode == 0, packed.stderr
    assert suggested[1] == str(tmp_path / "models-packed")
    result = modelpod("infer", str(tmp_path / "models-packed" / "adder" / "1"), "-i", "x=[1]", "-i", "y=[2]", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["out"]["data"] == [3.0], result.stderr


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                 ("[::1]", True), ("127.0.0.5", True), ("0.0.0.0", False),
                                                 ("::", False), ("10.1.2.3", False), ("example.org", False)])
def test_shared_memory_is_on_by_default_only_where_only_this_host_connects(host, loopback):
    from modelpod.serving.server import is_loopback

    assert is_loopback(host) is loopback
