"""Shared test helper: the seed "addition" model (Neuropod's README example) as python code.

``write_addition_code(dir)`` writes the model code folder (``main.py`` importing ``helper.py``
relatively, like Neuropod's python packages); ``pack_addition(path, **overrides)`` packs it with
:func:`modelpod.pack_python` and returns the package path. Other test files import this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import modelpod

INPUT_SPEC = [
    {"name": "x", "dtype": "float32", "shape": ("num_inputs",)},
    {"name": "y", "dtype": "float32", "shape": ("num_inputs",)},
]
OUTPUT_SPEC = [
    {"name": "out", "dtype": "float32", "shape": ("num_inputs",)},
]

MAIN_PY = '''\
"""Addition model: out = x + y."""

from .helper import add


def get_model(data_dir):
    def addition_model(x, y):
        return {"out": add(x, y)}

    return addition_model
'''

HELPER_PY = '''\
def add(x, y):
    return x + y
'''


def test_inputs() -> dict[str, np.ndarray]:
    return {"x": np.arange(5, dtype=np.float32), "y": np.arange(5, dtype=np.float32)}


def expected_outputs() -> dict[str, np.ndarray]:
    return {"out": np.arange(5, dtype=np.float32) * 2}


# keep pytest from collecting the two helpers above as tests
test_inputs.__test__ = False  # type: ignore[attr-defined]


def write_addition_code(directory: str | Path) -> Path:
    """Write the addition model's code folder (``main.py`` + ``helper.py``) and return it."""
    code = Path(directory)
    code.mkdir(parents=True, exist_ok=True)
    (code / "main.py").write_text(MAIN_PY)
    (code / "helper.py").write_text(HELPER_PY)
    return code


def pack_addition(path: str | Path, **overrides: Any) -> Path:
    """Pack the addition model at ``path`` (folder or archive); keyword arguments override defaults.

    ``code_dir=`` uses an existing code folder; by default the code is written beside the package
    (``<path>-code``).
    """
    path = Path(path)
    code_dir = overrides.pop("code_dir", None)
    if code_dir is None:
        code_dir = write_addition_code(path.parent / f"{path.name}-code")
    kwargs: dict[str, Any] = {
        "name": "addition",
        "input_spec": INPUT_SPEC,
        "output_spec": OUTPUT_SPEC,
        "code_path_spec": [{"python_root": str(code_dir), "dirs_to_package": [""]}],
        "test_input_data": test_inputs(),
        "test_expected_out": expected_outputs(),
    }
    kwargs.update(overrides)
    return modelpod.pack_python(path, **kwargs)
