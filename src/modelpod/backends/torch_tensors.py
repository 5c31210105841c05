"""numpy <-> torch conversion shared by the torchscript and pytorch platforms.

Inputs reach a backend already checked against the spec, so each one is a numpy array of the spec's
dtype. They become torch tensors with :func:`torch.from_numpy` (no copy; the tensor shares the
array's memory) except where torch cannot share:

* **read-only arrays** (from ``np.frombuffer(bytes)``, a read-only memory map...) are copied once.
  Torch has no read-only tensors: a model that writes into its input (``x.add_(1)``) would write
  into memory numpy promised not to change, so sharing would be undefined behaviour. Hand over
  writable arrays (``np.frombuffer(bytearray)``) to stay on the zero-copy path.
* arrays with negative strides or a non-native byte order are copied into a native contiguous array.
* **bfloat16** (``ml_dtypes.bfloat16`` in numpy) is passed as its int16 bits and reinterpreted with
  ``Tensor.view(torch.bfloat16)``: still no copy.

Outputs go back with ``Tensor.numpy()`` (no copy for CPU tensors), after ``detach()`` / ``cpu()``
where needed. **string** tensors do not exist in torch: :func:`check_torch_spec` rejects them when
the package is packed, not when it first runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np
import torch

from modelpod.errors import ModelError
from modelpod.spec import parse_spec

#: Spec dtypes that have a torch tensor dtype (every spec dtype but ``string``).
TORCH_DTYPES: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "uint16": torch.uint16,
    "uint32": torch.uint32,
    "uint64": torch.uint64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}

_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def check_torch_spec(
    platform: str, input_spec: Sequence[Mapping[str, Any]] | None,
    output_spec: Sequence[Mapping[str, Any]] | None,
) -> None:
    """Raise ValueError at pack time when a spec uses a dtype torch has no tensor for (string)."""
    for role, spec in (("input", input_spec), ("output", output_spec)):
        for tensor in parse_spec(spec):
            if tensor.dtype not in TORCH_DTYPES:
                raise ValueError(
                    f"{role} '{tensor.name}' is a {tensor.dtype} tensor, which the {platform} platform "
                    f"cannot carry: torch has no {tensor.dtype} tensors. Supported dtypes: "
                    f"{', '.join(TORCH_DTYPES)}. Encode strings as integer ids (or bytes as uint8) "
                    "before the model, or pack the model with the python or onnx platform."
                )


def to_torch(array: np.ndarray) -> torch.Tensor:
    """A torch tensor sharing ``array``'s memory where torch allows it (see module doc)."""
    if array.flags.writeable and array.dtype.kind != "V":  # V: bfloat16 (and other void types)
        try:
            return torch.from_numpy(array)
        except (ValueError, TypeError):  # negative strides, non-native byte order
            return torch.from_numpy(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")))
    if array.dtype == _BFLOAT16:
        return to_torch(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, order="K"))  # read-only: one private copy


def tensors_to_torch(inputs: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Convert a dict of checked numpy inputs to a dict of torch tensors."""
    return {name: to_torch(array) for name, array in inputs.items()}


def to_numpy(value: Any) -> Any:
    """A numpy array for a torch tensor (no copy for CPU tensors); other values pass through."""
    if type(value) is not torch.Tensor and not isinstance(value, torch.Tensor):
        return value
    if value.requires_grad:
        value = value.detach()
    if not value.is_cpu:
        value = value.cpu()
    if value.dtype is torch.bfloat16:
        return value.view(torch.int16).numpy().view(_BFLOAT16)
    return value.numpy()


def outputs_to_numpy(result: Any, output_names: Sequence[str], model: str) -> dict[str, Any]:
    """Turn what a torch model returned into a dict of numpy outputs.

    A dict is taken by name. A tuple or list is matched to the output spec by position (first item
    -> first output), and a single tensor is the one output of a one-output spec.
    """
    if type(result) is dict or isinstance(result, Mapping):
        return {name: to_numpy(value) for name, value in result.items()}
    if isinstance(result, torch.Tensor):
        result = (result,)
    if isinstance(result, (tuple, list)):
        if len(result) != len(output_names):
            raise ModelError(
                f"model '{model}' returned {len(result)} value(s) by position but its output spec "
                f"has {len(output_names)} ({list(output_names)}); return a dict of outputs by name "
                "or one value per output in spec order"
            )
        return {name: to_numpy(value) for name, value in zip(output_names, result)}
    return result  # not a dict: Model.infer reports what came back


def call_module(module: Any, inputs: Mapping[str, np.ndarray], output_names: Sequence[str],
                model_name: str) -> dict[str, np.ndarray]:
    """Run a torch module (or callable) on numpy inputs under ``inference_mode``; numpy outputs."""
    with torch.inference_mode():
        result = module(**tensors_to_torch(inputs))
    return outputs_to_numpy(result, output_names, model_name)
