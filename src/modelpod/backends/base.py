"""The Backend interface every framework adapter implements, and the platform registry.

A backend loads the payload of one package and runs it: ``run(inputs) -> outputs`` with dicts of
numpy arrays that have already been checked against the spec. Backends import their framework
lazily, so ``import modelpod`` never pulls in torch or tensorflow.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpod.errors import BackendError, FrameworkMissingError

if TYPE_CHECKING:
    from modelpod.package.manifest import Manifest


class Backend(ABC):
    """A loaded model of one platform."""

    #: The ``platform`` value in the manifest this backend serves.
    platform: str = ""
    #: the model keeps state per sequence: ``run`` takes ``sequence=`` (see modelpod.runtime.sequence)
    stateful: bool = False
    #: the model yields its answers: ``run`` returns an iterator of output dicts
    decoupled: bool = False

    def __init__(self, root: Path, manifest: "Manifest") -> None:
        self.root = root
        self.manifest = manifest

    @abstractmethod
    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> Mapping[str, Any]:
        """Run the model. ``outputs`` is a hint: a backend may return more, never fewer."""

    def close(self) -> None:
        """Release what the model holds (sessions, GPU memory...)."""

    def signatures(self) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """Extra named signatures ``{name: (input_spec, output_spec)}`` (TF SavedModel)."""
        return {}


# platform name -> ("module:Class", extra to install for its framework, the framework's module)
_REGISTRY: dict[str, tuple[str, str | None, str | None]] = {
    "python": ("modelpod.backends.python:PythonBackend", None, None),
    "pytorch": ("modelpod.backends.pytorch:PyTorchBackend", "torch", "torch"),
    "torchscript": ("modelpod.backends.torchscript:TorchScriptBackend", "torch", "torch"),
    "onnx": ("modelpod.backends.onnx:OnnxBackend", "onnx", "onnxruntime"),
    "tensorflow": ("modelpod.backends.tensorflow:TensorFlowBackend", "tensorflow", "tensorflow"),
    "keras": ("modelpod.backends.keras:KerasBackend", "keras", "keras"),
}

#: EAS processor names and other spellings accepted for a platform.
PLATFORM_ALIASES: dict[str, str] = {
    "torch": "pytorch",
    "pytorch_cpu": "pytorch",
    "pytorch_gpu": "pytorch",
    "tf": "tensorflow",
    "savedmodel": "tensorflow",
    "onnxruntime": "onnx",
}


def canonical_platform(name: str) -> str:
    """Map an alias (``tensorflow_cpu_2.7``, ``pytorch_gpu_1.10``, ``onnx``) to a platform name."""
    key = name.strip().lower()
    if key in _REGISTRY:
        return key
    if key in PLATFORM_ALIASES:
        return PLATFORM_ALIASES[key]
    for platform in sorted(_REGISTRY, key=len, reverse=True):
        if key.startswith(platform + "_"):
            return platform
    raise BackendError(f"unknown platform {name!r}; known platforms: {', '.join(_REGISTRY)}")


def platforms() -> list[str]:
    return list(_REGISTRY)


def backend_class(platform: str, model: str | None = None) -> type[Backend]:
    """Import and return the Backend class for ``platform``; a framework that cannot be imported is a
    :class:`FrameworkMissingError` naming it, the extra that installs it and ``model`` when given."""
    platform = canonical_platform(platform)
    target, extra, framework = _REGISTRY[platform]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing and not missing.startswith("modelpod"):  # a module that is not there
            raise FrameworkMissingError(platform, missing, extra, model) from exc
        raise FrameworkMissingError(platform, framework or module_name, extra, model, reason=str(exc)) from exc
    return getattr(module, class_name)
