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
import torch

from modelpod.backends.base import Backend
from modelpod.backends.python import load_entrypoint, pack_python
from modelpod.backends.torch_tensors import check_torch_spec, outputs_to_numpy, tensors_to_torch
from modelpod.runtime.codeimport import forget_modules


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
        with torch.inference_mode():
            result = self.model(**tensors_to_torch(inputs))
        return outputs_to_numpy(result, self._output_names, self.manifest.name)

    def close(self) -> None:
        forget_modules(self._modules)
        self.model = None


def pack_pytorch(
    package_path: str | Path,
    *,
    name: str,
    input_spec: Sequence[Mapping[str, Any]],
    output_spec: Sequence[Mapping[str, Any]],
    entrypoint_package: str = "main",
    entrypoint: str = "get_model",
    code_path_spec: Sequence[Mapping[str, Any]] | None = None,
    data_paths: Sequence[Any] | None = None,
    test_input_data: Mapping[str, Any] | None = None,
    test_expected_out: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    tolerance: Mapping[str, float] | None = None,
    transport: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Pack an eager PyTorch model as code + data (Neuropod's ``create_pytorch_neuropod``).

    ``entrypoint_package.entrypoint(data_dir)`` must return an ``nn.Module`` or callable taking the
    inputs as torch tensors by keyword and returning a dict of tensors by output name (or tensors in
    output-spec order). Weights usually go in ``data_paths`` and are loaded from ``data_dir``.
    string tensors are rejected here (torch has none). Packing runs ``test_input_data`` through a
    fresh load of the written package and raises ValueError naming the output that differs.
    """
    check_torch_spec("pytorch", input_spec, output_spec)
    return pack_python(
        package_path, name=name, input_spec=input_spec, output_spec=output_spec,
        entrypoint_package=entrypoint_package, entrypoint=entrypoint, code_path_spec=code_path_spec,
        data_paths=data_paths, test_input_data=test_input_data, test_expected_out=test_expected_out,
        requirements=requirements, tolerance=tolerance, transport=transport, overwrite=overwrite,
        platform="pytorch",
    )
