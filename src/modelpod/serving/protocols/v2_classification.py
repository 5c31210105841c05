"""Triton's classification extension, shared by v2 REST and gRPC (unary and streaming).

An output asked for with ``parameters: {"classification": k}`` comes back as its ``k`` highest
values instead of the tensor: a BYTES tensor whose elements read ``"value:index"``, or
``"value:index:label"`` when the model's settings give the output a label file (``labels`` in
``serving.json``: ``{"output": "labels.txt"}``, one label per line, line ``i`` for index ``i``).
A model whose first dim is its batch dim is classified per row (shape ``[batch, k]``), any other
over the whole tensor (shape ``[k]``), as Triton does for ``max_batch_size`` > 0 and 0. Values are
written as Triton writes them (``std::to_string``: floats with six decimals). Triton's
``image_client.py`` and ``ensemble_image_client.py`` ask for their results this way.

``k`` must be a whole number of at least 1; an output that is BYTES or not a model output is
refused before the model runs (400 / INVALID_ARGUMENT). A ``k`` past the element count gives
every element, up to :data:`MAX_CLASSES` per row (more is a 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelpod.errors import ServeError, clip
from modelpod.spec import DTYPES

PARAM = "classification"
#: classes one row may answer: each becomes a Python string, written on the event loop
MAX_CLASSES = 1 << 16


def requested(served: Any, output_parameters: Mapping[str, Mapping[str, Any]] | None) -> dict[str, int] | None:
    """``{output: k}`` for the outputs the request asks to classify (None when it asks none);
    ServeError naming the output when ``k`` or the output cannot be classified."""
    if not output_parameters:
        return None
    wanted: dict[str, int] = {}
    specs = None
    for name, params in output_parameters.items():
        if PARAM not in params:
            continue
        count = params[PARAM]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ServeError("bad_input", f"model '{served.name}': output '{clip(name)}': classification must be "
                                          f"a whole number of 1 or more, got {clip(repr(count))}")
        if specs is None:
            specs = {s.name: s for s in served.model.spec.outputs}
        spec = specs.get(name)
        if spec is None:
            raise ServeError("bad_input", f"model '{served.name}': output '{clip(name)}' is not one of its outputs "
                                          f"({', '.join(spec.name for spec in served.model.spec.outputs)})")
        if DTYPES.get(spec.dtype) is None:
            raise ServeError("bad_input", f"model '{served.name}': output '{name}' holds strings; only numbers "
                                          "can be classified")
        elements = _elements_per_row(served, spec)
        if elements is not None and min(count, elements) > MAX_CLASSES:
            raise ServeError("bad_input", f"model '{served.name}': output '{name}': classification asks for "
                                          f"{min(count, elements)} classes per row; at most {MAX_CLASSES}")
        wanted[name] = count
    return wanted or None


def _elements_per_row(served: Any, spec: Any) -> int | None:
    """The output's element count per classified row when its spec fixes it (None: known only after the run)."""
    dims = spec.shape[1:] if served.batch_symbol is not None else spec.shape
    if not all(isinstance(d, int) for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64)) if dims else 1


def classify(outputs: dict[str, np.ndarray], wanted: Mapping[str, int], served: Any) -> dict[str, np.ndarray]:
    """``outputs`` with each output in ``wanted`` replaced by its top-k BYTES tensor."""
    result = dict(outputs)
    labels: Mapping[str, list[str]] = getattr(served, "labels", None) or {}
    per_row = served.batch_symbol is not None
    for name, count in wanted.items():
        array = result.get(name)
        if array is None:
            continue
        array = np.asarray(array)
        rows = array.reshape(array.shape[0] if per_row and array.ndim else 1, -1)
        if min(count, rows.shape[1]) > MAX_CLASSES:  # an output whose spec left its size open
            raise ServeError("bad_input", f"model '{served.name}': output '{name}': classification asks for "
                                          f"{min(count, rows.shape[1])} classes per row; at most {MAX_CLASSES}")
        classes = [_top(row, count, labels.get(name)) for row in rows]
        top = np.empty((len(classes), len(classes[0]) if classes else 0), dtype=object)
        for i, row in enumerate(classes):
            top[i, :] = row
        result[name] = top if per_row else top.reshape(-1)
    return result


def _top(values: np.ndarray, count: int, labels: list[str] | None) -> list[bytes]:
    """The ``count`` largest of ``values`` (ties: the lower index first) as ``value:index[:label]``."""
    integral = values.dtype.kind in "iub"
    keys = values if integral else values.astype(np.float64)  # bfloat16 and float16 sort as floats
    index = np.arange(values.size)
    if count < values.size:  # only what can be in the top k (ties at the k-th value included): no full sort
        threshold = np.partition(keys, values.size - count)[values.size - count]
        index = np.flatnonzero(keys >= threshold)
        keys = keys[index]
    # ascending by value, ties by descending index; reversed: descending value, ties by lower index
    order = index[np.lexsort((-index, keys))[::-1][:count]]
    out = []
    for index in order.tolist():
        value = values[index]
        text = str(int(value)) if integral else f"{float(value):f}"
        if labels is not None and index < len(labels):
            text = f"{text}:{index}:{labels[index]}"
        else:
            text = f"{text}:{index}"
        out.append(text.encode())
    return out
