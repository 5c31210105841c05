"""modelpod: pack a model from any framework, run it through one ``infer()``, serve it to any client.

>>> import modelpod
>>> with modelpod.load("addition.modelpod") as model:
...     model.infer({"x": [1.0, 2.0], "y": [3.0, 4.0]})
{'out': array([4., 6.], dtype=float32)}

Framework packers (``pack_torchscript``, ``pack_onnx``...) import their framework only when called.
"""

from __future__ import annotations

import importlib
from typing import Any

from modelpod._version import __version__
from modelpod.backends.base import BackendError
from modelpod.backends.python import pack_python
from modelpod.package.manifest import PackageError
from modelpod.runtime.model import Model, ModelError, ModelSpec, load
from modelpod.spec import SpecError, TensorSpec

# public name -> module that defines it (imported on first use)
_LAZY = {
    "pack_pytorch": "modelpod.backends.pytorch",
    "pack_torchscript": "modelpod.backends.torchscript",
    "pack_onnx": "modelpod.backends.onnx",
    "pack_tensorflow": "modelpod.backends.tensorflow",
    "pack_keras": "modelpod.backends.keras",
    "ModelService": "modelpod.runtime.service",
    "Client": "modelpod.client.sync",
    "AsyncClient": "modelpod.client.aio",
    "ServerError": "modelpod.client.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelpod' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BackendError", "Model", "ModelError", "ModelSpec", "PackageError", "SpecError", "TensorSpec",
    "__version__", "load", "pack_python", *_LAZY,
]
