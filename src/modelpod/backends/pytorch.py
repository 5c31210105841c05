"""The pytorch platform: packaged Python code whose entrypoint builds an eager torch model.

Same layout and packer arguments as the python platform (``code/``, ``data/``,
``entrypoint_package.entrypoint(data_dir)``); the difference is the tensors: the model receives
torch tensors as keyword arguments and may return torch tensors, and it runs under
``torch.inference_mode()`` after ``model.eval()``. What the model may return is described in
:func:`modelpod.backends.torch_tensors.outputs_to_numpy` (a dict by name, or values by position).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelpod.backends.base import Backend
from modelpod.backends.python import load_entrypoint
from modelpod.backends.torch_tensors import call_module
from modelpod.package.codeimport import forget_modules


class PyTorchBackend(Backend):
    """Runs the ``nn.Module`` (or any callable) returned by the packaged entrypoint."""

    platform = "pytorch"

    def __init__(self, root: Path, manifest: Any) -> None:
        super().__init__(root, manifest)
        self.model, self._modules = load_entrypoint(root, manifest.platform_options)
        set_eval = getattr(self.model, "eval", None)  # nn.Module, or a wrapper that forwards eval()
        if callable(set_eval):
            set_eval()
        self._output_names = [spec["name"] for spec in manifest.output_spec]

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> Mapping[str, Any]:
        return call_module(self.model, inputs, self._output_names, self.manifest.name)

    def close(self) -> None:
        forget_modules(self._modules)
        self.model = None
