"""Test vectors and tensor files: ``.npz`` without pickle, written byte-for-byte deterministically.

String tensors are stored as fixed-width unicode (``U``) or bytes (``S``) arrays and come back as
object arrays of ``str`` / ``bytes``, so no pickle is ever needed to read a package.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from modelpod.errors import PackageError

_EPOCH = (1980, 1, 1, 0, 0, 0)


def to_storable(array: np.ndarray) -> np.ndarray:
    """Turn an object array of str / bytes into a fixed-width array that needs no pickle."""
    array = np.asarray(array)
    if array.dtype.kind != "O":
        return array
    flat = list(array.flat)
    if all(isinstance(v, str) for v in flat):
        return np.array(flat, dtype=str).reshape(array.shape) if flat else array.astype("U1")
    if all(isinstance(v, bytes) for v in flat):
        return np.array(flat, dtype=bytes).reshape(array.shape)
    raise ValueError("object arrays may only hold str or bytes (mixed or other objects cannot be stored)")


def from_stored(array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_storable`: fixed-width string arrays become object arrays.

    ``.npy`` has no name for bfloat16: numpy writes it as 2-byte void (``V2``), which is read back
    as bfloat16 (the only 2-byte void type modelpod stores).
    """
    if array.dtype.kind in "US":
        return array.astype(object)
    if array.dtype.kind == "V" and array.dtype.itemsize == 2 and array.dtype.names is None:
        return array.view(ml_dtypes.bfloat16)
    return array


def save_npz(path: Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``tensors`` as an uncompressed .npz with fixed timestamps (no pickle)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(tensors):
            info = zipfile.ZipInfo(f"{name}.npy", _EPOCH)
            info.external_attr = (0o100644 & 0xFFFF) << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, to_storable(tensors[name]), allow_pickle=False)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an .npz written by :func:`save_npz` (or numpy) without allowing pickle."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: from_stored(data[name]) for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise PackageError(f"{path}: cannot read tensors ({exc})") from None
