"""The torchscript platform: a ``torch.jit`` module saved as ``model/model.pt``, no Python code needed.

The module's ``forward`` takes the inputs as keyword arguments named like the input spec and returns
the outputs. It should return ``Dict[str, Tensor]`` keyed by output name; a tuple or list of tensors
(matched to the output spec by position) or a single tensor (for a one-output spec) is accepted too.
numpy <-> torch conversion is zero-copy where torch allows it (see :mod:`modelpod.backends.torch_tensors`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelpod.backends.base import Backend
from modelpod.backends.torch_tensors import call_module
from modelpod.errors import BackendError

MODEL_FILE = "model/model.pt"


class TorchScriptBackend(Backend):
    """Runs a saved TorchScript module on CPU under ``torch.inference_mode()``."""

    platform = "torchscript"

    def __init__(self, root: Path, manifest: Any) -> None:
        super().__init__(root, manifest)
        path = root / manifest.platform_options.get("model_file", MODEL_FILE)
        try:
            with warnings.catch_warnings():  # torch 2.10+ flags TorchScript as deprecated on every load
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError/ValueError for bad archives
            raise BackendError(f"cannot load the TorchScript module {path}: {exc}") from exc
        self.module.eval()
        self._output_names = [spec["name"] for spec in manifest.output_spec]

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> Mapping[str, Any]:
        return call_module(self.module, inputs, self._output_names, self.manifest.name)

    def close(self) -> None:
        self.module = None
