"""Comparing model outputs with expected outputs: exact for ints/bools/strings, tolerant for floats.

A float output matches when ``|actual - expected| <= atol + rtol * |expected|`` everywhere.
Default tolerances by dtype (override with ``tolerance={"rtol": .., "atol": ..}``):

=========  ======  ======
dtype      rtol    atol
=========  ======  ======
float64    1e-7    1e-9
float32    1e-4    1e-5
float16    1e-2    1e-3
bfloat16   2e-2    1e-2
=========  ======  ======
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from modelpod.spec import TensorSpec

DEFAULT_TOLERANCE: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-9),
    "float32": (1e-4, 1e-5),
    "float16": (1e-2, 1e-3),
    "bfloat16": (2e-2, 1e-2),
}


def tolerance_for(dtype: str, override: Mapping[str, float] | None = None) -> tuple[float, float]:
    rtol, atol = DEFAULT_TOLERANCE.get(dtype, (0.0, 0.0))
    if override:
        rtol = float(override.get("rtol", rtol))
        atol = float(override.get("atol", atol))
    return rtol, atol


def compare_outputs(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    output_specs: Sequence[TensorSpec],
    tolerance: Mapping[str, float] | None = None,
) -> list[str]:
    """Return one message per output that differs from ``expected`` (empty list: all match)."""
    specs = {s.name: s for s in output_specs}
    problems = []
    for name, want in expected.items():
        if name not in actual:
            problems.append(f"output '{name}' is expected but the model did not return it")
            continue
        got = np.asarray(actual[name])
        want = np.asarray(want)
        if got.shape != want.shape:
            problems.append(
                f"output '{name}' has shape {got.shape}, the expected output has shape {want.shape}"
            )
            continue
        dtype = specs[name].dtype if name in specs else got.dtype.name
        if dtype in DEFAULT_TOLERANCE:
            rtol, atol = tolerance_for(dtype, tolerance)
            g, w = got.astype(np.float64), want.astype(np.float64)
            diff = np.abs(g - w)
            if got.size and not np.all((diff <= atol + rtol * np.abs(w)) | (np.isnan(g) & np.isnan(w))):
                problems.append(
                    f"output '{name}' differs from the expected output: max abs difference "
                    f"{float(np.nanmax(diff)):.6g} exceeds the tolerance (rtol={rtol:g}, atol={atol:g})"
                )
        elif dtype == "string":
            g = [_as_bytes(v) for v in got.flat]
            w = [_as_bytes(v) for v in want.flat]
            bad = [i for i, (a, b) in enumerate(zip(g, w)) if a != b]
            if bad:
                i = bad[0]
                problems.append(
                    f"output '{name}' differs from the expected output at {len(bad)} element(s); first at "
                    f"flat index {i}: {g[i]!r} != {w[i]!r} (strings compare exactly, as UTF-8 bytes)"
                )
        else:
            mismatch = got != want
            if np.any(mismatch):
                count = int(np.count_nonzero(mismatch))
                diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                problems.append(
                    f"output '{name}' differs from the expected output at {count} element(s): max abs "
                    f"difference {float(diff.max()):.6g} ({dtype} compares exactly, tolerance 0)"
                )
    return problems


def _as_bytes(value: object) -> bytes:
    """str and bytes compare as UTF-8 bytes, so non-UTF-8 outputs compare too."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
