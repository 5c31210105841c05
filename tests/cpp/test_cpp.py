"""The C++ library (cpp/): built with CMake once per session, its ctest suite run on real packages.

The packages are packed here with the Python API and handed to the C++ tests in ``MODELPOD_TEST_*``
environment variables; the worker's interpreter is this one (``MODELPOD_PYTHON``). The C++ cases
themselves (cpp/tests/test_modelpod.cpp) check the addition model from a folder and an archive,
wrong dtypes, symbol mismatches, missing inputs, requested outputs, string tensors, a model that
raises, a worker SIGKILLed mid-call and between calls, interpreter errors, several models under
several threads, move-only models, an ONNX package and a package with its own environment. The
examples and a consumer project (find_package after ``cmake --install``, and add_subdirectory) are
built and run too.

cmake and a C++ compiler are required: without them these tests fail, they are not skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import modelpod
from tests.helpers.addition import pack_addition
from tests.helpers.isolated import NUMPY_1, pack_numpy_reporter
from tests.helpers.packages import pack_code, pack_echo, pack_multi

REPO = Path(__file__).resolve().parents[2]
CPP = REPO / "cpp"

SLOW_MAIN = """
    import time

    import numpy as np


    def get_model(data_dir):
        def run(marker, seconds):
            wait = float(seconds[0])
            if wait < 0:
                raise ValueError("negative seconds")
            path = marker[0].decode() if isinstance(marker[0], bytes) else marker[0]
            if path:  # tells the test that this request is running
                with open(path, "w") as f:
                    f.write("running")
            time.sleep(wait)
            return {"done": np.asarray(seconds, dtype=np.float64)}
        return run
"""

#: the ONNX example's model: y = x @ W + b
LINEAR_W = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)
LINEAR_B = np.array([0.5, -0.5], dtype=np.float32)


def pack_linear_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(LINEAR_W, "W"), numpy_helper.from_array(LINEAR_B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32)
    return modelpod.pack_onnx(path, name="linear", model=model, test_input_data={"x": x},
                              test_expected_out={"y": x @ LINEAR_W + LINEAR_B})


def tool(name: str) -> str:
    """cmake / ctest from this venv (the dev extra installs cmake from PyPI), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is needed to build and test the C++ library (cpp/): pip install 'cmake>=3.20' "
                    f"(in the dev extra) or install it from your system's packages", pytrace=False)
    return found


def run(cmd: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run to completion (killed at ``timeout``); fail the test with the output when it fails."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited with {result.returncode}\n--- stdout\n{result.stdout[-6000:]}"
                    f"\n--- stderr\n{result.stderr[-6000:]}", pytrace=False)
    return result


def cmake_build(source: Path, build: Path, *options: str) -> None:
    if shutil.which("c++") is None and shutil.which("g++") is None and shutil.which("clang++") is None \
            and "CXX" not in os.environ:
        pytest.fail("a C++17 compiler (g++ or clang++) is needed to build the C++ library", pytrace=False)
    run([tool("cmake"), "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *options], 300)
    run([tool("cmake"), "--build", str(build), "-j2"], 600)


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("cpp-build")
    cmake_build(CPP, build)
    return build


@pytest.fixture(scope="session")
def cpp_packages(tmp_path_factory: pytest.TempPathFactory, modelpod_home: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cpp-packages")
    slow_in = [{"name": "marker", "dtype": "string", "shape": (1,)},
               {"name": "seconds", "dtype": "float64", "shape": (1,)}]
    slow_out = [{"name": "done", "dtype": "float64", "shape": (1,)}]
    zero = np.zeros(1, np.float64)
    return {
        "ADDITION": pack_addition(root / "addition"),
        "ADDITION_ARCHIVE": pack_addition(root / "addition.tar.gz"),
        "MULTI": pack_multi(root / "multi"),
        "ECHO_STRING": pack_echo(root / "echo", "string"),
        "SLOW": pack_code(root / "slow", "slow", SLOW_MAIN, slow_in, slow_out,
                          {"marker": np.array([""], dtype=object), "seconds": zero}, {"done": zero}),
        "ONNX": pack_linear_onnx(root / "linear"),
        "ISOLATED": pack_numpy_reporter(root / "np1", "np1", NUMPY_1),
    }


def test_environment(packages: dict[str, Path]) -> dict[str, str]:
    env = {**os.environ, "MODELPOD_PYTHON": sys.executable, "MODELPOD_TEST_ISOLATED_NUMPY": NUMPY_1}
    env.update({f"MODELPOD_TEST_{key}": str(path) for key, path in packages.items()})
    return env


test_environment.__test__ = False  # type: ignore[attr-defined]


def ctest_names(build: Path) -> list[str]:
    listing = run([tool("ctest"), "-N"], 60, cwd=build).stdout
    return sorted(re.findall(r"Test\s+#\d+: cpp\.(\w+)", listing))


def test_every_cpp_case_is_registered_with_ctest(cpp_build: Path) -> None:
    cases = run([str(cpp_build / "tests" / "modelpod_tests"), "--list"], 60).stdout.split()
    assert len(cases) >= 19
    assert ctest_names(cpp_build) == sorted(cases)


@pytest.mark.timeout(900)
def test_ctest_passes_on_real_packages(cpp_build: Path, cpp_packages: dict[str, Path]) -> None:
    result = run([tool("ctest"), "--output-on-failure", "-j2", "--timeout", "300"], 900, cwd=cpp_build,
                 env=test_environment(cpp_packages))
    passed = re.search(r"100% tests passed(?:, 0 tests failed)? out of (\d+)", result.stdout)
    assert passed is not None, result.stdout[-3000:]
    assert int(passed.group(1)) == len(ctest_names(cpp_build))


def test_the_examples_print_the_models_answers(cpp_build: Path, cpp_packages: dict[str, Path],
                                               tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from build_examples import build_addition  # the seed's bundled addition model
    finally:
        sys.path.remove(str(REPO / "examples"))
    seed = build_addition(tmp_path / "addition")
    env = test_environment(cpp_packages)
    out = run([str(cpp_build / "examples" / "modelpod_addition"), str(seed)], 120, env=env).stdout
    assert "model addition (python)" in out
    assert "input x: float32 of shape (num_inputs,)" in out
    assert re.search(r"^out = 6 8 10 12$", out, re.M), out
    assert re.search(r"^shape = 4$", out, re.M), out

    out = run([str(cpp_build / "examples" / "modelpod_onnx_linear"), str(cpp_packages["ONNX"])], 120, env=env).stdout
    x = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32)
    want = (x @ LINEAR_W + LINEAR_B).ravel()
    line = re.search(r"^y float32 of shape \(2, 2\) = (.*)$", out, re.M)
    assert line is not None, out
    np.testing.assert_allclose([float(v) for v in line.group(1).split()], want)
    one = re.search(r"^y1 = (.*)$", out, re.M)
    assert one is not None, out
    np.testing.assert_allclose([float(v) for v in one.group(1).split()], np.ones(3, np.float32) @ LINEAR_W + LINEAR_B)
    assert re.search(r"^error: input 'x': expected float32 .* but got float64", out, re.M), out


@pytest.mark.timeout(600)
def test_a_consumer_links_through_find_package_and_add_subdirectory(cpp_build: Path, cpp_packages: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    run([tool("cmake"), "--install", str(cpp_build), "--prefix", str(prefix)], 120)
    assert (prefix / "include" / "modelpod" / "modelpod.hpp").is_file()
    config = list(prefix.glob("lib*/cmake/modelpod/modelpodConfig.cmake"))
    assert config, sorted(str(p) for p in prefix.rglob("*"))
    consumer = CPP / "tests" / "consumer"
    env = test_environment(cpp_packages)
    for how, option in (("package", f"-DCMAKE_PREFIX_PATH={prefix}"), ("subdirectory", f"-DMODELPOD_SOURCE_DIR={CPP}")):
        build = tmp_path / f"consumer-{how}"
        cmake_build(consumer, build, option)
        out = run([str(build / "consumer"), str(cpp_packages["ADDITION_ARCHIVE"])], 120, env=env).stdout
        assert out.strip() == "consumer out = 11 22 33 44", (how, out)


def test_the_readme_and_docs_name_the_cpp_api(cpp_build: Path) -> None:
    """The C++ snippets of docs/cpp.md and the README are the API as built: each compiles against the header
    (a whole program as it stands, a README fragment inside a main())."""
    text = (REPO / "docs" / "cpp.md").read_text()
    snippets = re.findall(r"```cpp\n(.*?)```", text, re.S)
    whole = [s for s in snippets if "int main" in s]
    assert whole, "docs/cpp.md shows at least one whole program"
    fragments = re.findall(r"```cpp\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert fragments, "the README shows the C++ call"
    programs = whole + ["#include <modelpod/modelpod.hpp>\n#include <vector>\nint main() {\n" + f + "}\n"
                        for f in fragments]
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    assert compiler, "a C++ compiler is needed"
    for i, program in enumerate(programs):
        source = cpp_build / f"doc_snippet_{i}.cpp"
        source.write_text(textwrap.dedent(program))
        run([compiler, "-std=c++17", "-Wall", "-Werror", "-Wno-unused-variable", "-fsyntax-only",
             f"-I{CPP / 'include'}", str(source)], 120)
