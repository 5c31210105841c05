"""Packing TorchScript modules: ``pack_torchscript`` and the CLI hooks (``inspect_source``, ``pack_source``)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import torch

from modelpod.backends.torch_tensors import check_torch_spec
from modelpod.backends.torchscript import MODEL_FILE
from modelpod.packers.flow import PackOptions, pack
from modelpod.packers.sources import pack_file


def pack_torchscript(
    package_path: str | Path,
    *,
    name: str,
    module: torch.jit.ScriptModule | None = None,
    module_path: str | Path | None = None,
    input_spec: Sequence[Mapping[str, Any]],
    output_spec: Sequence[Mapping[str, Any]],
    **options: Unpack[PackOptions],
) -> Path:
    """Pack a TorchScript module (Neuropod's ``create_torchscript_neuropod``).

    Give either ``module`` (a ``torch.jit.script``/``torch.jit.trace`` result) or ``module_path`` (a
    file written by ``torch.jit.save``). ``forward`` takes the inputs as keyword arguments and
    returns ``Dict[str, Tensor]`` keyed by output name, or a tuple/list of tensors in output-spec
    order, or one tensor for a one-output spec. string tensors are rejected here (torch has none).
    Packing runs ``test_input_data`` through a fresh load of the written package and raises
    ValueError naming the output when it differs from ``test_expected_out``.
    """
    if (module is None) == (module_path is None):
        raise ValueError("give exactly one of module (a TorchScript module) or module_path (a saved .pt)")
    if module is not None and not isinstance(module, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise TypeError(
            f"module must be a TorchScript module (torch.jit.script or torch.jit.trace of your model), "
            f"got {type(module).__name__}; to pack an eager nn.Module with its Python code use pack_pytorch"
        )
    if module_path is not None:
        module_path = Path(module_path)
        if not module_path.is_file():
            raise ValueError(f"module_path {module_path} is not a file")
    check_torch_spec("torchscript", input_spec, output_spec)

    def write(root: Path) -> dict[str, Any]:
        target = root / MODEL_FILE
        target.parent.mkdir(parents=True)
        if module is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(module, str(target))
        else:
            assert module_path is not None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    torch.jit.load(str(module_path), map_location="cpu")
            except Exception as exc:
                raise ValueError(f"{module_path} is not a TorchScript file torch.jit.load reads: {exc}") from None
            shutil.copyfile(module_path, target)
        return {}

    return pack(
        package_path, name=name, platform="torchscript", write_payload=write,
        input_spec=input_spec, output_spec=output_spec, **options,
    )


def inspect_source(source: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """For the CLI: the spec of a raw TorchScript file. A .pt file does not record one, so this raises."""
    raise ValueError(
        f"{source}: a TorchScript file does not record its input and output tensors (names, dtypes, "
        "shapes); give them with --input-spec and --output-spec"
    )


def pack_source(source: Path, output: Path, **options: Any) -> Path:
    """For the CLI: pack a saved TorchScript file; both specs are required."""
    if options.get("input_spec") is None or options.get("output_spec") is None:
        inspect_source(source)  # raises with the message naming the missing options
    return pack_file(pack_torchscript, "module_path", source, output, platform="TorchScript", **options)

