"""KServe v2 datatype names <-> spec dtype names <-> numpy dtypes."""

from __future__ import annotations

import numpy as np

from modelpod.spec import DTYPES, dtype_name

V2_TO_DTYPE: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "BF16": "bfloat16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "string",
}
DTYPE_TO_V2: dict[str, str] = {v: k for k, v in V2_TO_DTYPE.items()}
#: v2 datatype -> numpy dtype (None for BYTES): one dict lookup on the hot path
V2_NUMPY: dict[str, np.dtype | None] = {v2: DTYPES[name] for v2, name in V2_TO_DTYPE.items()}
#: numpy dtype -> v2 datatype, for the fixed-size dtypes
V2_BY_DTYPE: dict[np.dtype, str] = {d: v2 for v2, d in V2_NUMPY.items() if d is not None}


class CodecError(ValueError):
    """A request body cannot be decoded; the message says what is wrong with it."""


def v2_numpy_dtype(datatype: str, tensor: str) -> np.dtype | None:
    """numpy dtype for a v2 datatype (None for BYTES); CodecError for an unknown name."""
    try:
        return V2_NUMPY[datatype]
    except (KeyError, TypeError):
        raise CodecError(
            f"input '{tensor}': unknown datatype {datatype!r}; use one of {', '.join(V2_TO_DTYPE)}"
        ) from None


def v2_datatype(array: np.ndarray) -> str:
    """The v2 datatype of an array (BYTES for str/bytes/object arrays)."""
    return V2_BY_DTYPE.get(array.dtype) or DTYPE_TO_V2[dtype_name(array)]


def v2_shape(shape: tuple) -> list[int]:
    """Spec shape -> v2 metadata shape (None and symbols become -1)."""
    return [d if isinstance(d, int) else -1 for d in shape]
