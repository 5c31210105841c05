"""KServe v2 datatype names <-> spec dtype names <-> numpy dtypes."""

from __future__ import annotations

import numpy as np

from modelpod.errors import CodecError
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


#: no tensor has more elements than this (2**48: far past any memory), whatever its shape says
MAX_ELEMENTS = 1 << 48


def element_count(shape: list[int], name: str, field: str = "shape") -> int:
    """The element count a declared shape needs, checked before anything is allocated.

    Every dim must be a non-negative int (not a bool), and the product of the non-zero dims at
    most :data:`MAX_ELEMENTS`, so no product overflows and no zero-size shape has dims numpy
    refuses. CodecError names the tensor otherwise; one check for every protocol.
    """
    count = 1
    nonzero = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise CodecError(f"input '{name}': {field} {_short(shape)} must be a list of non-negative ints")
        count *= dim
        if dim:
            nonzero *= dim
            if nonzero > MAX_ELEMENTS:
                raise CodecError(f"input '{name}': {field} {_short(shape)} is too large (more than 2**48 elements)")
    return count


def _short(shape: object) -> str:
    text = str(shape)
    return text if len(text) <= 120 else text[:120] + "...]"
