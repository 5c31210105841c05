"""The python platform end to end: pack_python, load, infer (the seed addition example first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelpod
from tests.helpers.addition import INPUT_SPEC, OUTPUT_SPEC, pack_addition, write_addition_code
from modelpod import BackendError, ModelError, SpecError

pytestmark = pytest.mark.timeout(60)


def write_code(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def pack_code(tmp_path: Path, name: str, files: dict[str, str], **kwargs) -> Path:
    code = write_code(tmp_path / f"{name}-src", files)
    kwargs.setdefault("input_spec", INPUT_SPEC)
    kwargs.setdefault("output_spec", OUTPUT_SPEC)
    return modelpod.pack_python(
        tmp_path / name,
        name=name,
        code_path_spec=[{"python_root": str(code), "dirs_to_package": [""]}],
        **kwargs,
    )


def private_modules() -> set[str]:
    return {m for m in sys.modules if m.startswith("_modelpod_code_")}


@pytest.fixture
def no_leaks():
    """Fails the test if packaged code stays in ``sys.modules`` (models other tests hold are fine)."""
    before = private_modules()
    yield
    assert private_modules() <= before


# --------------------------------------------------------------------------------------------
# the seed example, verbatim


def test_addition_example(tmp_path):
    path = pack_addition(tmp_path / "addition_model")
    with modelpod.load(path) as model:
        assert model.name == "addition"
        assert model.platform == "python"
        x = np.arange(5, dtype=np.float32)
        y = np.arange(5, dtype=np.float32)
        out = model.infer({"x": x, "y": y})
        assert list(out) == ["out"]
        assert out["out"].dtype == np.float32
        np.testing.assert_array_equal(out["out"], [0, 2, 4, 6, 8])

        with pytest.raises(SpecError, match=r"input 'x'.*\(1-D\).*\(5, 1\) \(2-D\)"):
            model.infer({"x": x.reshape(5, 1), "y": y})
        with pytest.raises(SpecError, match=r"input 'x': expected float32 of shape \(num_inputs,\) but got float64"):
            model.infer({"x": np.arange(5.0), "y": y})
        with pytest.raises(SpecError, match="symbol num_inputs is 5 in 'x' but 4 in 'y'"):
            model.infer({"x": x, "y": np.arange(4, dtype=np.float32)})
        # plain lists are converted by the casting rules
        np.testing.assert_array_equal(model.infer({"x": [1, 2], "y": [0.5, 0.5]})["out"], [1.5, 2.5])
        # the call form is the same
        np.testing.assert_array_equal(model({"x": x, "y": y})["out"], x * 2)


def test_model_spec_and_test_vectors(tmp_path):
    path = pack_addition(tmp_path / "pkg")
    with modelpod.load(path) as model:
        assert [s.name for s in model.spec.inputs] == ["x", "y"]
        assert model.spec.outputs[0].shape == ("num_inputs",)
        inputs, expected = model.test_vectors()
        np.testing.assert_array_equal(inputs["x"], np.arange(5, dtype=np.float32))
        np.testing.assert_array_equal(expected["out"], np.arange(5, dtype=np.float32) * 2)
        assert "addition" in repr(model)


def test_wrong_expected_output_fails_and_leaves_nothing_behind(no_leaks, tmp_path):
    code = write_addition_code(tmp_path / "code")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError) as info:
        pack_addition(
            tmp_path / "pkg",
            code_dir=code,
            test_expected_out={"out": np.array([0, 2, 4, 6, 9], dtype=np.float32)},
        )
    msg = str(info.value)
    assert "'out'" in msg
    assert "max abs difference 1" in msg
    assert "rtol=0.0001" in msg and "atol=1e-05" in msg
    assert sorted(os.listdir(tmp_path)) == before
    # the same for an archive target
    with pytest.raises(ValueError, match="max abs difference"):
        pack_addition(
            tmp_path / "pkg.tar.gz",
            code_dir=code,
            test_expected_out={"out": np.ones(5, dtype=np.float32)},
        )
    assert sorted(os.listdir(tmp_path)) == before


def test_expected_out_shape_and_unknown_name(tmp_path):
    code = write_addition_code(tmp_path / "code")
    with pytest.raises(ValueError, match=r"output 'out' has shape \(5,\), the expected output has shape \(4,\)"):
        pack_addition(tmp_path / "a", code_dir=code, test_expected_out={"out": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"unknown output\(s\) \['nope'\]"):
        pack_addition(tmp_path / "b", code_dir=code, test_expected_out={"nope": np.zeros(5, np.float32)})
    assert sorted(os.listdir(tmp_path)) == ["code"]


def test_expected_out_without_inputs_is_refused(tmp_path):
    code = write_addition_code(tmp_path / "code")
    with pytest.raises(ValueError, match="test_expected_out was given without test_input_data"):
        pack_addition(tmp_path / "pkg", code_dir=code, test_input_data=None)
    assert not (tmp_path / "pkg").exists()


def test_bad_test_inputs_are_refused_before_anything_is_written(tmp_path):
    code = write_addition_code(tmp_path / "code")
    with pytest.raises(SpecError, match="test_input_data 'x': expected float32"):
        pack_addition(
            tmp_path / "pkg", code_dir=code,
            test_input_data={"x": np.arange(5.0), "y": np.arange(5.0)}, test_expected_out=None,
        )
    assert sorted(os.listdir(tmp_path)) == ["code"]


def test_pack_without_test_vectors(tmp_path):
    path = pack_addition(tmp_path / "pkg", test_input_data=None, test_expected_out=None)
    with modelpod.load(path) as model:
        assert model.test_vectors() is None
        np.testing.assert_array_equal(model.infer({"x": [1.0], "y": [2.0]})["out"], [3.0])


def test_existing_target_needs_overwrite(tmp_path):
    code = write_addition_code(tmp_path / "code")
    path = pack_addition(tmp_path / "pkg", code_dir=code)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        pack_addition(path, code_dir=code)
    (code / "helper.py").write_text("def add(x, y):\n    return x - y\n")
    pack_addition(path, code_dir=code, overwrite=True, test_expected_out={"out": np.zeros(5, np.float32)})
    with modelpod.load(path) as model:
        np.testing.assert_array_equal(model.infer({"x": [3.0], "y": [1.0]})["out"], [2.0])


# --------------------------------------------------------------------------------------------
# packaged code: isolation, imports, entrypoints


def test_two_packages_with_main_py_load_side_by_side(no_leaks, tmp_path):
    add = pack_addition(tmp_path / "add")
    mul = pack_code(
        tmp_path, "mul",
        {
            "main.py": "from .helper import op\n\ndef get_model(data_dir):\n"
                       "    return lambda x, y: {'out': op(x, y)}\n",
            "helper.py": "def op(x, y):\n    return x * y\n",
        },
    )
    x = np.arange(5, dtype=np.float32)
    with modelpod.load(add) as m1, modelpod.load(mul) as m2:
        np.testing.assert_array_equal(m1.infer({"x": x, "y": x})["out"], x + x)
        np.testing.assert_array_equal(m2.infer({"x": x, "y": x})["out"], x * x)
        np.testing.assert_array_equal(m1.infer({"x": x, "y": x})["out"], x + x)
        assert "main" not in sys.modules and "helper" not in sys.modules
        assert len(private_modules()) >= 4  # two parents, two main, two helper


def test_bare_absolute_sibling_imports_work_and_do_not_leak(no_leaks, tmp_path):
    files = {
        "main.py": "import mp_sibling_ops\nfrom mp_sibling_pkg.inner import scale\n\n"
                   "def get_model(data_dir):\n"
                   "    return lambda x, y: {'out': scale(mp_sibling_ops.add(x, y))}\n",
        "mp_sibling_ops.py": "def add(x, y):\n    return x + y\n",
        "mp_sibling_pkg/__init__.py": "",
        "mp_sibling_pkg/inner.py": "def scale(v):\n    return v * 10\n",
    }
    path = pack_code(tmp_path, "bare", files)
    with modelpod.load(path) as model:
        np.testing.assert_array_equal(model.infer({"x": [1.0], "y": [2.0]})["out"], [30.0])
        leaked = [m for m in sys.modules if m.split(".")[0] in {"main", "mp_sibling_ops", "mp_sibling_pkg"}]
        assert leaked == []
    # a second package with the same bare module names gets its own code
    files["mp_sibling_ops.py"] = "def add(x, y):\n    return x - y\n"
    other = pack_code(tmp_path, "bare2", files)
    with modelpod.load(path) as m1, modelpod.load(other) as m2:
        np.testing.assert_array_equal(m1.infer({"x": [1.0], "y": [2.0]})["out"], [30.0])
        np.testing.assert_array_equal(m2.infer({"x": [1.0], "y": [2.0]})["out"], [-10.0])


def test_loading_does_not_write_bytecode_into_the_package(tmp_path):
    path = pack_addition(tmp_path / "pkg")
    for _ in range(2):  # the second load re-checks every hash
        with modelpod.load(path) as model:
            model.infer({"x": [1.0], "y": [1.0]})
    assert not list(path.rglob("__pycache__"))


def test_code_path_spec_subfolders(tmp_path):
    root = write_code(
        tmp_path / "src",
        {
            "model/main.py": "from .util import f\n\ndef get_model(d):\n    return lambda x, y: {'out': f(x, y)}\n",
            "model/util.py": "def f(x, y):\n    return x + 2 * y\n",
            "unrelated/big.py": "raise SystemExit('must not be packaged')\n",
        },
    )
    path = modelpod.pack_python(
        tmp_path / "pkg", name="sub", input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC,
        code_path_spec=[{"python_root": str(root), "dirs_to_package": ["model"]}],
        entrypoint_package="model.main",
        test_input_data={"x": [1.0], "y": [1.0]}, test_expected_out={"out": np.array([3.0], np.float32)},
    )
    assert (path / "code" / "model" / "util.py").is_file()
    assert not (path / "code" / "unrelated").exists()
    with pytest.raises(ValueError, match="is not a folder inside"):
        modelpod.pack_python(
            tmp_path / "pkg2", name="sub", input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC,
            code_path_spec=[{"python_root": str(root / "model"), "dirs_to_package": [".."]}],
        )
    with pytest.raises(ValueError, match="packages no code"):
        modelpod.pack_python(
            tmp_path / "pkg3", name="none", input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC,
            code_path_spec=[],
        )


def test_missing_entrypoint_function_is_a_clear_import_error(no_leaks, tmp_path):
    code = write_addition_code(tmp_path / "code")
    with pytest.raises(ImportError, match=r"entrypoint 'make_model' not found in packaged module 'main' \(it defines: .*get_model"):
        pack_addition(tmp_path / "pkg", code_dir=code, entrypoint="make_model")
    with pytest.raises(ImportError, match="entrypoint package 'model' not found in the packaged code"):
        pack_addition(tmp_path / "pkg", code_dir=code, entrypoint_package="model")
    assert sorted(os.listdir(tmp_path)) == ["code"]


def test_missing_module_inside_the_package_is_named(no_leaks, tmp_path):
    with pytest.raises(ImportError, match="packaged module 'main' could not be imported: no module named 'nothere'"):
        pack_code(tmp_path, "broken", {"main.py": "from .nothere import f\n\ndef get_model(d):\n    return f\n"},
                  test_input_data={"x": [1.0], "y": [1.0]})


def test_entrypoint_errors_propagate_without_leaking(no_leaks, tmp_path):
    with pytest.raises(ZeroDivisionError):
        pack_code(tmp_path, "boom", {"main.py": "def get_model(d):\n    return 1 / 0\n"},
                  test_input_data={"x": [1.0], "y": [1.0]})
    with pytest.raises(BackendError, match=r"main.get_model\(data_dir\) must return a callable, got int"):
        pack_code(tmp_path, "notcallable", {"main.py": "def get_model(d):\n    return 3\n"},
                  test_input_data={"x": [1.0], "y": [1.0]})


# --------------------------------------------------------------------------------------------
# data_paths


def test_data_paths_are_copied_and_passed_to_the_entrypoint(tmp_path):
    weights = tmp_path / "weights.npy"
    np.save(weights, np.array([10.0, 20.0], np.float32))
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    (vocab / "words.txt").write_text("a\nb\n")
    files = {
        "main.py": (
            "import os\nimport numpy as np\n\n"
            "def get_model(data_dir):\n"
            "    w = np.load(os.path.join(data_dir, 'weights.npy'))\n"
            "    b = np.load(os.path.join(data_dir, 'extra', 'bias.npy'))\n"
            "    n = len(open(os.path.join(data_dir, 'vocab', 'words.txt')).read().split())\n"
            "    return lambda x, y: {'out': (x * w + y + b + n).astype(np.float32)}\n"
        )
    }
    bias = tmp_path / "b.npy"
    np.save(bias, np.array([1.0, 1.0], np.float32))
    path = pack_code(
        tmp_path, "data",
        files,
        input_spec=[{"name": "x", "dtype": "float32", "shape": (2,)}, {"name": "y", "dtype": "float32", "shape": (2,)}],
        output_spec=[{"name": "out", "dtype": "float32", "shape": (2,)}],
        data_paths=[str(weights), vocab, {"path": str(bias), "packaged_name": "extra/bias.npy"}],
        test_input_data={"x": [1.0, 1.0], "y": [0.0, 0.0]},
        test_expected_out={"out": np.array([13.0, 23.0], np.float32)},
    )
    assert (path / "data" / "weights.npy").is_file()
    assert (path / "data" / "vocab" / "words.txt").read_text() == "a\nb\n"
    assert (path / "data" / "extra" / "bias.npy").is_file()
    with modelpod.load(path) as model:
        np.testing.assert_array_equal(model.infer({"x": [2.0, 0.0], "y": [1.0, 1.0]})["out"], [24.0, 4.0])


def test_data_paths_must_exist_and_stay_inside(tmp_path):
    code = write_addition_code(tmp_path / "code")
    with pytest.raises(ValueError, match="data_paths: .*missing.npy does not exist"):
        pack_addition(tmp_path / "pkg", code_dir=code, data_paths=[tmp_path / "missing.npy"])
    src = tmp_path / "f.txt"
    src.write_text("x")
    with pytest.raises(ValueError, match="packaged_name '../escape.txt' must be a relative path"):
        pack_addition(tmp_path / "pkg", code_dir=code, data_paths=[{"path": src, "packaged_name": "../escape.txt"}])
    assert sorted(os.listdir(tmp_path)) == ["code", "f.txt"]


# --------------------------------------------------------------------------------------------
# outputs: filter, spec held to input symbols, model contract


TWO_OUTPUTS = [
    {"name": "sum", "dtype": "float32", "shape": ("num_inputs",)},
    {"name": "diff", "dtype": "float32", "shape": ("num_inputs",)},
]


def test_outputs_filter(tmp_path):
    path = pack_code(
        tmp_path, "two",
        {"main.py": "def get_model(d):\n    return lambda x, y: {'sum': x + y, 'diff': x - y}\n"},
        output_spec=TWO_OUTPUTS,
    )
    with modelpod.load(path) as model:
        x, y = np.ones(3, np.float32), np.full(3, 2.0, np.float32)
        assert set(model.infer({"x": x, "y": y})) == {"sum", "diff"}
        only = model.infer({"x": x, "y": y}, outputs=["diff"])
        assert list(only) == ["diff"]
        np.testing.assert_array_equal(only["diff"], [-1, -1, -1])
        with pytest.raises(SpecError, match=r"unknown output\(s\) \['nope'\] requested; this model's outputs are \['sum', 'diff'\]"):
            model.infer({"x": x, "y": y}, outputs=["nope"])


def test_output_violating_an_input_symbol_is_a_model_error(tmp_path):
    path = pack_code(
        tmp_path, "longer",
        {"main.py": "import numpy as np\n\ndef get_model(d):\n"
                    "    return lambda x, y: {'out': np.concatenate([x, y])}\n"},
    )
    with modelpod.load(path) as model:
        with pytest.raises(ModelError, match="symbol num_inputs is 3 in 'x' but 6 in 'out'"):
            model.infer({"x": np.ones(3, np.float32), "y": np.ones(3, np.float32)})


@pytest.mark.parametrize(
    "body, match",
    [
        ("return [x]", "returned list; it must return a dict of outputs"),
        ("return {'out': x, 'extra': x}", r"returned output\(s\) \['extra'\] that its output spec does not declare"),
        ("return {}", "broke its output spec: missing output 'out'"),
        ("return {'out': x.astype('float64')}", "broke its output spec: output 'out': expected float32"),
    ],
)
def test_model_breaking_its_contract_is_a_model_error(tmp_path, body, match):
    path = pack_code(tmp_path, "bad", {"main.py": f"def get_model(d):\n    return lambda x, y: ({body})\n".replace("(return ", "(")})
    with modelpod.load(path) as model:
        with pytest.raises(ModelError, match=match):
            model.infer({"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)})


def test_requested_output_the_model_does_not_return(tmp_path):
    path = pack_code(
        tmp_path, "partial", {"main.py": "def get_model(d):\n    return lambda x, y: {'sum': x + y}\n"},
        output_spec=TWO_OUTPUTS,
    )
    with modelpod.load(path) as model:
        with pytest.raises(ModelError, match=r"did not return output\(s\) \['diff'\]"):
            model.infer({"x": [1.0], "y": [1.0]}, outputs=["diff"])


def test_model_exceptions_propagate_and_closed_models_refuse(no_leaks, tmp_path):
    path = pack_code(tmp_path, "raises", {"main.py": "def get_model(d):\n    def f(x, y):\n        raise KeyError('inside')\n    return f\n"})
    model = modelpod.load(path)
    with pytest.raises(KeyError, match="inside"):
        model.infer({"x": [1.0], "y": [1.0]})
    model.close()
    with pytest.raises(RuntimeError, match="'raises' is closed"):
        model.infer({"x": [1.0], "y": [1.0]})
    model.close()  # closing twice is fine


def test_unknown_platform_and_missing_package(tmp_path):
    with pytest.raises(modelpod.PackageError, match="no such package"):
        modelpod.load(tmp_path / "nothing")
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(modelpod.PackageError, match="not a package folder"):
        modelpod.load(f)


# --------------------------------------------------------------------------------------------
# the bundled examples (examples/build_examples.py)

EXAMPLES_SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "build_examples.py"


def test_build_examples_writes_a_repository_of_loadable_packages(tmp_path):
    def build() -> None:
        result = subprocess.run(
            [sys.executable, str(EXAMPLES_SCRIPT), str(tmp_path / "out")],
            capture_output=True, text=True, timeout=50,
        )
        assert result.returncode == 0, result.stderr

    build()
    repository = tmp_path / "out" / "repository"
    assert {"addition", "mlp"} <= set(os.listdir(repository))
    for name in os.listdir(repository):
        assert os.listdir(repository / name) == ["1"], name
    manifests = {name: (repository / name / "1" / "modelpod.json").read_bytes() for name in os.listdir(repository)}

    with modelpod.load(repository / "addition" / "1") as model:
        assert model.name == "addition" and model.platform == "python"
        assert model.test_vectors()[1] is not None
        np.testing.assert_array_equal(
            model.infer({"x": np.arange(5, dtype=np.float32), "y": np.arange(5, dtype=np.float32)})["out"],
            [0, 2, 4, 6, 8],
        )

    with modelpod.load(repository / "mlp" / "1") as model:
        assert model.name == "mlp" and model.platform == "python"
        assert model.spec.inputs[0].shape == ("batch", 256)
        assert model.spec.outputs[0].shape == ("batch", 10)
        w1 = np.load(model.root / "data" / "w1.npy")
        w2 = np.load(model.root / "data" / "w2.npy")
        assert w1.shape == (256, 1024) and w2.shape == (1024, 10)
        inputs, expected = model.test_vectors()
        assert expected is not None
        x = np.random.default_rng(7).standard_normal((3, 256), dtype=np.float32)
        y = model.infer({"x": x})["y"]
        assert y.shape == (3, 10) and y.dtype == np.float32
        np.testing.assert_allclose(y, np.maximum(x @ w1, 0) @ w2, rtol=1e-5, atol=1e-5)
        with pytest.raises(SpecError, match=r"input 'x': expected float32 of shape \(batch, 256\)"):
            model.infer({"x": np.zeros((3, 255), np.float32)})

    # idempotent: a second run overwrites with the same packages and leaves nothing else behind
    build()
    assert {n: (repository / n / "1" / "modelpod.json").read_bytes() for n in os.listdir(repository)} == manifests
    for name in os.listdir(repository):
        assert os.listdir(repository / name) == ["1"], name
