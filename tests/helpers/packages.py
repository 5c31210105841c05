"""Small python-platform packages for the server tests, plus a module-scoped server helper.

Every builder packs with :func:`modelpod.pack_python` and returns the package path:

* ``pack_echo(path, dtype)``: ``x`` (any 2-D shape ``("rows", "cols")``) -> ``y`` = ``x``, for every dtype;
* ``pack_multi(path)``: three inputs of different dtypes, three outputs (one named ``*_bytes``);
* ``pack_scaled(path, version)``: ``x`` -> ``y = x * version`` (tells versions apart);
* ``pack_raises(path)``: raises ``RuntimeError`` when ``x`` holds a negative number;
* ``pack_bad_output(path)``: returns an output that breaks its own spec;
* ``pack_slow(path, seconds)``: sleeps, then echoes (for graceful-shutdown tests);
* ``pack_warmup_fails(path)``: fine on its test vectors, raises on the warm-up request file.
* ``pack_import_fails(path)``: packs where its code's dependency exists; the server cannot import it.

``build_repository(root)`` lays out a repository folder (``<model>/<version>/``) with all of them
once per test session; ``tests.helpers.servers.module_server`` starts one server for a whole test module.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import modelpod
from tests.helpers.addition import pack_addition  # noqa: E402

#: spec dtype -> KServe v2 datatype, for every dtype the server speaks
V2_DATATYPES = {
    "bool": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "float16": "FP16", "bfloat16": "BF16", "float32": "FP32", "float64": "FP64", "string": "BYTES",
}
ALL_DTYPES = list(V2_DATATYPES)


def spec_dtype(array: np.ndarray) -> str:
    """The spec dtype name of an array (``string`` for object arrays)."""
    if array.dtype == object:
        return "string"
    if array.dtype == ml_dtypes.bfloat16:
        return "bfloat16"
    return array.dtype.name


def assert_same(got: np.ndarray, want: np.ndarray, dtype: str) -> None:
    """Bit-exact equality (strings compared as bytes: JSON outputs come back as str)."""
    assert got.shape == want.shape
    if dtype == "string":
        as_bytes = [v.encode() if isinstance(v, str) else v for v in got.ravel()]
        assert as_bytes == list(want.ravel())
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8))


def sample(dtype: str, shape: Sequence[int] = (2, 3), raw_bytes: bool = True) -> np.ndarray:
    """A deterministic array of ``dtype`` that exercises the type's range.

    Strings include non-UTF-8 bytes unless ``raw_bytes`` is False.
    """
    count = int(np.prod(shape))
    if dtype == "bool":
        return (np.arange(count) % 3 == 0).reshape(shape)
    if dtype == "string":
        words = [b"hello", b"", "caf\u00e9".encode(), b"\x00\xffraw" if raw_bytes else b"raw", b"x" * 40, b"z"]
        return np.array([words[i % len(words)] for i in range(count)], dtype=object).reshape(shape)
    if dtype == "bfloat16":
        return (np.arange(count, dtype=np.float32) * 0.5 - 1).astype(ml_dtypes.bfloat16).reshape(shape)
    np_dtype = np.dtype(dtype)
    if np_dtype.kind == "f":
        return (np.arange(count, dtype=np.float64) * 1.25 - 2).astype(np_dtype).reshape(shape)
    info = np.iinfo(np_dtype)
    values = [info.min, info.max, 0, 1, info.max // 3, info.min // 2 if info.min else 7]
    return np.array([values[i % len(values)] for i in range(count)], dtype=np_dtype).reshape(shape)


def pack_code(path: Path, name: str, main_py: str, input_spec: list[dict], output_spec: list[dict],
              test_inputs: dict[str, np.ndarray] | None = None, expected: dict[str, np.ndarray] | None = None,
              **options: Any) -> Path:
    """Write ``main_py`` as the package's code and pack it (``options`` go to ``pack_python``)."""
    code = path.parent / f"{path.name}-code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "main.py").write_text(textwrap.dedent(main_py))
    return modelpod.pack_python(
        path, name=name, input_spec=input_spec, output_spec=output_spec,
        code_path_spec=[{"python_root": str(code), "dirs_to_package": [""]}],
        test_input_data=test_inputs, test_expected_out=expected, overwrite=True, **options,
    )


def pack_echo(path: Path, dtype: str) -> Path:
    main = """
        def get_model(data_dir):
            def echo(x):
                return {"y": x}
            return echo
    """
    x = sample(dtype, raw_bytes=False)
    spec_in = [{"name": "x", "dtype": dtype, "shape": ("rows", "cols")}]
    spec_out = [{"name": "y", "dtype": dtype, "shape": ("rows", "cols")}]
    return pack_code(path, f"echo_{dtype}", main, spec_in, spec_out, {"x": x}, {"y": x})


def pack_multi(path: Path) -> Path:
    """x float32 (n, 2), k int64 (n,), s string (n,) -> xo = 2x, ko = k + 1, s_bytes = upper(s)."""
    main = """
        import numpy as np

        def get_model(data_dir):
            def multi(x, k, s):
                upper = np.array([bytes(v).upper() for v in s.ravel()], dtype=object).reshape(s.shape)
                return {"xo": x * 2, "ko": k + 1, "s_bytes": upper}
            return multi
    """
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    k = np.array([1, 2, 3], dtype=np.int64)
    s = np.array([b"a", b"bc", b"def"], dtype=object)
    spec_in = [
        {"name": "x", "dtype": "float32", "shape": ("n", 2)},
        {"name": "k", "dtype": "int64", "shape": ("n",)},
        {"name": "s", "dtype": "string", "shape": ("n",)},
    ]
    spec_out = [
        {"name": "xo", "dtype": "float32", "shape": ("n", 2)},
        {"name": "ko", "dtype": "int64", "shape": ("n",)},
        {"name": "s_bytes", "dtype": "string", "shape": ("n",)},
    ]
    expected = {"xo": x * 2, "ko": k + 1, "s_bytes": np.array([b"A", b"BC", b"DEF"], dtype=object)}
    return pack_code(path, "multi", main, spec_in, spec_out, {"x": x, "k": k, "s": s}, expected)


def pack_scaled(path: Path, version: int) -> Path:
    main = f"""
        def get_model(data_dir):
            def scaled(x):
                return {{"y": x * {version}}}
            return scaled
    """
    x = np.arange(4, dtype=np.float32)
    spec_in = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    spec_out = [{"name": "y", "dtype": "float32", "shape": (None,)}]
    return pack_code(path, "scaled", main, spec_in, spec_out, {"x": x}, {"y": x * version})


def pack_raises(path: Path) -> Path:
    main = """
        def get_model(data_dir):
            def raises(x):
                if (x < 0).any():
                    raise RuntimeError("negative input reached the model")
                return {"y": x}
            return raises
    """
    x = np.arange(4, dtype=np.float32)
    spec_in = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    spec_out = [{"name": "y", "dtype": "float32", "shape": (None,)}]
    return pack_code(path, "raises", main, spec_in, spec_out, {"x": x}, {"y": x})


#: the slow model creates the file this environment variable names when a request reaches it
SLOW_MARKER_ENV = "MODELPOD_TEST_SLOW_MARKER"


def pack_bad_output(path: Path) -> Path:
    """Declares a float32 output ``y`` but returns int64 and an undeclared extra (a model bug)."""
    main = """
        import numpy as np

        def get_model(data_dir):
            def liar(x):
                return {"y": np.zeros(x.shape, dtype=np.int64)}
            return liar
    """
    spec_in = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    spec_out = [{"name": "y", "dtype": "float32", "shape": (None,)}]
    return pack_code(path, "liar", main, spec_in, spec_out, None, None)


def pack_slow(path: Path, seconds: float = 1.0) -> Path:
    """``y = x + 1`` after ``seconds``; touches ``$MODELPOD_TEST_SLOW_MARKER`` first (when set)."""
    main = f"""
        import os
        import time

        def get_model(data_dir):
            def slow(x):
                marker = os.environ.get("{SLOW_MARKER_ENV}")
                if marker:
                    open(marker, "a").close()
                time.sleep({seconds})
                return {{"y": x + 1}}
            return slow
    """
    spec_in = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    spec_out = [{"name": "y", "dtype": "float32", "shape": (None,)}]
    return pack_code(path, "slow", main, spec_in, spec_out, None, None)


def pack_warmup_fails(path: Path) -> tuple[Path, Path]:
    """A model that raises on x > 100; returns (package, warm-up request file that triggers it)."""
    main = """
        def get_model(data_dir):
            def picky(x):
                if (x > 100).any():
                    raise ValueError("picky model refuses values over 100")
                return {"y": x}
            return picky
    """
    x = np.arange(3, dtype=np.float32)
    spec_in = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    spec_out = [{"name": "y", "dtype": "float32", "shape": (None,)}]
    package = pack_code(path, "picky", main, spec_in, spec_out, {"x": x}, {"y": x})
    warm = path.parent / f"{path.name}-warmup.json"
    warm.write_text(json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 500]}]}))
    return package, warm


#: the module :func:`pack_import_fails`'s code imports (it exists only while packing)
VANISHING_MODULE = "modelpod_test_vanishing_dep"


def pack_import_fails(path: Path, name: str = "broken") -> Path:
    """A package whose code imports a module that exists only while it is packed (its test vectors
    pass then): served by another process, its code cannot be imported."""
    import shutil
    import sys

    dep = path.parent / f"{path.name}-dep"
    dep.mkdir(parents=True, exist_ok=True)
    (dep / f"{VANISHING_MODULE}.py").write_text("def same(x):\n    return x\n")
    main = f"""
        import {VANISHING_MODULE}

        def get_model(data_dir):
            def broken(x):
                return {{"y": {VANISHING_MODULE}.same(x)}}
            return broken
    """
    x = np.arange(3, dtype=np.float32)
    spec = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    sys.path.insert(0, str(dep))
    try:
        return pack_code(path, name, main, spec, [{"name": "y", "dtype": "float32", "shape": (None,)}],
                         {"x": x}, {"y": x})
    finally:
        sys.path.remove(str(dep))
        sys.modules.pop(VANISHING_MODULE, None)
        shutil.rmtree(dep)


def pack_addition_model(path: Path) -> Path:
    """The seed addition model (tests/addition.py)."""
    return pack_addition(path, overwrite=True)


def build_repository(root: Path) -> Path:
    """A repository folder with every test model (built once per session, reused after)."""
    repo = root / "repo"
    done = root / "repo.done"
    if done.exists():
        return repo
    work = root / "packages"
    pack_addition_model(work / "addition")
    _link(repo / "addition" / "1", work / "addition")
    for dtype in V2_DATATYPES:
        _link(repo / f"echo_{dtype}" / "1", pack_echo(work / f"echo_{dtype}", dtype))
    _link(repo / "multi" / "1", pack_multi(work / "multi"))
    _link(repo / "scaled" / "1", pack_scaled(work / "scaled1", 1))
    _link(repo / "scaled" / "2", pack_scaled(work / "scaled2", 2))
    _link(repo / "raises" / "1", pack_raises(work / "raises"))
    _link(repo / "liar" / "1", pack_bad_output(work / "liar"))
    done.write_text("ok")
    return repo


def _link(dest: Path, package: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        dest.symlink_to(package.resolve(), target_is_directory=True)


def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "serve_models"
    root.mkdir(exist_ok=True)
    return root


def write_service_config(path: Path, services: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(services))
    return path
