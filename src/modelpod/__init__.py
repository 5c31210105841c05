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
from modelpod.errors import (
    BackendError,
    BridgeError,
    CodecError,
    EnvBuildError,
    ModelError,
    ModelpodError,
    PackageError,
    ServeError,
    ServerError,
    SpecError,
    WorkerDiedError,
    WorkerError,
)
from modelpod.packers.python import pack_python
from modelpod.runtime.model import Model, ModelSpec, load
from modelpod.spec import TensorSpec

# public name -> module that defines it (imported on first use)
_LAZY = {
    "pack_pytorch": "modelpod.packers.pytorch",
    "pack_torchscript": "modelpod.packers.torchscript",
    "pack_onnx": "modelpod.packers.onnx",
    "pack_tensorflow": "modelpod.packers.tensorflow",
    "pack_keras": "modelpod.packers.keras",
    "ModelService": "modelpod.runtime.service",
    "Client": "modelpod.client.sync",
    "AsyncClient": "modelpod.client.aio",
    "connect": "modelpod.client",
    "connect_async": "modelpod.client",
    "GrpcClient": "modelpod.client.grpc",
    "AsyncGrpcClient": "modelpod.client.grpc",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelpod' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BackendError", "BridgeError", "CodecError", "EnvBuildError", "WorkerDiedError", "WorkerError", "Model", "ModelError", "ModelSpec", "ModelpodError", "PackageError",
    "ServeError", "ServerError", "SpecError", "TensorSpec",
    "__version__", "load", "pack_python", *_LAZY,
]
