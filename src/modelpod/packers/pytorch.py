"""Packing eager PyTorch models: ``pack_pytorch`` (python code + data, run with torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelpod.backends.torch_tensors import check_torch_spec
from modelpod.packers.python import pack_python


def pack_pytorch(package_path: str | Path, **options: Any) -> Path:
    """Pack an eager PyTorch model as code + data (Neuropod's ``create_pytorch_neuropod``).

    Takes exactly the arguments of :func:`modelpod.pack_python` (``name``, ``input_spec``,
    ``output_spec``, ``code_path_spec``, ``data_paths``, ``entrypoint_package``, ``entrypoint``,
    test vectors, ``requirements``...). ``entrypoint_package.entrypoint(data_dir)`` must return an
    ``nn.Module`` or callable taking the inputs as torch tensors by keyword and returning a dict of
    tensors by output name (or tensors in output-spec order). Weights usually go in ``data_paths``
    and are loaded from ``data_dir``. string tensors are rejected here (torch has none).
    """
    check_torch_spec("pytorch", options.get("input_spec"), options.get("output_spec"))
    return pack_python(package_path, **options, platform="pytorch")

