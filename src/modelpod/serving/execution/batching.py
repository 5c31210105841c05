"""Dynamic batching: which models can be batched, and how requests are merged and split back.

A model is batchable when every input and every output has rank >= 1 and the first dim of all of
them is the same symbol (e.g. ``("batch", 256)`` -> ``("batch", 10)``): then row ``i`` of every
output belongs to row ``i`` of the inputs, whatever the model does inside. Models whose spec says
nothing of the kind (fixed or ``None`` first dims, scalars) are never batched.

Requests are merged only when everything but the batch dim agrees (same dtypes and same trailing
shape for every input); requests of different lengths are *not* padded, they run in separate
batches — padding would change what a model computes unless it masks, which modelpod cannot know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from modelpod.spec import TensorSpec


def batch_symbol(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str | None:
    """The symbol every input and output starts with, or None when the model is not batchable."""
    firsts = {s.shape[0] if s.shape else None for s in (*inputs, *outputs)}
    if len(firsts) != 1:
        return None
    (first,) = firsts
    return first if isinstance(first, str) else None


def group_key(arrays: Mapping[str, np.ndarray]) -> tuple:
    """Requests with equal keys can be concatenated along dim 0."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(arrays.items()))


def rows(arrays: Mapping[str, np.ndarray]) -> int:
    return next(iter(arrays.values())).shape[0]


@dataclass
class Merged:
    """Inputs of several requests concatenated, with each request's row range."""

    inputs: dict[str, np.ndarray]
    offsets: list[tuple[int, int]]


def merge(requests: Sequence[Mapping[str, np.ndarray]]) -> Merged:
    """Concatenate requests (all with the same group_key) along dim 0."""
    offsets, start = [], 0
    for r in requests:
        n = rows(r)
        offsets.append((start, start + n))
        start += n
    if len(requests) == 1:
        return Merged(dict(requests[0]), offsets)
    names = list(requests[0])
    return Merged({n: np.concatenate([r[n] for r in requests]) for n in names}, offsets)


def split(outputs: Mapping[str, np.ndarray], offsets: Sequence[tuple[int, int]],
          wanted: Sequence[Sequence[str] | None]) -> list[dict[str, np.ndarray]]:
    """Give each request its own rows of the outputs it asked for."""
    total = offsets[-1][1] if offsets else 0
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(
                f"output '{name}' has {array.shape[0] if array.ndim else 0} rows for a batch of {total}; "
                "the model's output does not follow its batch dimension"
            )
    if len(offsets) == 1:
        names = wanted[0]
        return [dict(outputs) if names is None else {n: outputs[n] for n in names}]
    return [
        {n: outputs[n][a:b] for n in (names if names is not None else outputs)}
        for (a, b), names in zip(offsets, wanted)
    ]
