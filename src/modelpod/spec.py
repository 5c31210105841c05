"""Tensor specs: dtypes, shapes with symbols, and the one check every call goes through.

A spec is a list of tensor specs ``{"name": "x", "dtype": "float32", "shape": ("num_inputs",)}``
(Neuropod's problem definition, accepted verbatim). A dim is an int (fixed size), ``None`` (any
size) or a str (a *symbol*: every use of one symbol in one call, across inputs and outputs, must
have the same size).

Implicit conversions (the *casting rules*):

* A numpy array (or numpy scalar) must already carry the spec's dtype. modelpod never changes the
  precision of data you typed: a float64 array for a float32 tensor is an error, and so is an
  int64 array for an int32 tensor. Cast it yourself (``x.astype(np.float32)``).
* Plain Python values (lists, tuples, ints, floats, bools, str, bytes) have no dtype of their own,
  so they are converted to the spec's dtype when no value changes: integers must fit the integer
  type, floats never go into integer or bool tensors, numbers never go into string tensors, and
  strings only go into string tensors.
* String tensors accept numpy arrays of kind ``U`` (str), ``S`` (bytes) or ``O`` (objects that
  are all str or bytes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import ml_dtypes
import numpy as np

from modelpod.errors import SpecError

try:  # the all-good case of a check in C (an optional extension: setup.py)
    from modelpod._fastspec import check_arrays as _native_check
except ImportError:  # pragma: no cover - built wherever a C compiler is
    _native_check = None

Dim = Union[int, str, None]

#: Every dtype name a spec may use, with the numpy dtype that carries it (``None`` for string).
DTYPES: dict[str, np.dtype | None] = {
    "bool": np.dtype(np.bool_),
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "string": None,
}

_STRING_KINDS = frozenset("USO")
#: numpy dtype -> spec name, for the fixed-size dtypes (a dict lookup: dtype.name is slow)
_NAME_BY_DTYPE: dict[np.dtype, str] = {
    dt.newbyteorder("="): name for name, dt in DTYPES.items() if dt is not None
}


def dtype_name(array: np.ndarray) -> str:
    """The spec dtype name of a numpy array (``string`` for str/bytes/object arrays)."""
    dtype = array.dtype
    name = _NAME_BY_DTYPE.get(dtype)
    if name is not None:
        return name
    if dtype.kind in _STRING_KINDS:
        return "string"
    return dtype.name  # not a spec dtype (complex...): its numpy name, for messages


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype used for a spec dtype name (object for ``string``)."""
    dtype = DTYPES[name]
    return np.dtype(object) if dtype is None else dtype


def format_shape(shape: Sequence[Dim]) -> str:
    """Render a shape the way it is written in Python: ``(num_inputs, None, 3)``."""
    inner = ", ".join("None" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: its dtype name and its shape of int / None / symbol dims."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | "TensorSpec") -> "TensorSpec":
        """Build a TensorSpec from a Neuropod-style dict, checking every field."""
        if isinstance(raw, TensorSpec):
            return raw
        if not isinstance(raw, Mapping):
            raise SpecError(f"a tensor spec must be a dict with name, dtype and shape, got {raw!r}")
        unknown = set(raw) - {"name", "dtype", "shape"}
        if unknown:
            raise SpecError(f"tensor spec {raw!r} has unknown field(s) {sorted(unknown)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError(f"tensor spec {raw!r} needs a non-empty string 'name'")
        dtype = raw.get("dtype")
        if dtype not in DTYPES:
            raise SpecError(
                f"tensor '{name}': unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}"
            )
        shape = raw.get("shape")
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
            raise SpecError(f"tensor '{name}': shape must be a list or tuple of dims, got {shape!r}")
        shape = [int(d) if isinstance(d, np.integer) else d for d in shape]
        for dim in shape:
            valid = dim is None or (isinstance(dim, str) and dim) or (
                isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0
            )
            if not valid:
                raise SpecError(
                    f"tensor '{name}': dim {dim!r} must be an int >= 0, None or a symbol name"
                )
        return cls(name, dtype, tuple(shape))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form used in manifests (shape as a list)."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def describe(self) -> str:
        """``float32 of shape (num_inputs,)``."""
        return f"{self.dtype} of shape {format_shape(self.shape)}"


def parse_spec(raw: Iterable[Mapping[str, Any] | TensorSpec] | None) -> tuple[TensorSpec, ...]:
    """Parse a whole spec (list of tensor specs); names must be unique."""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes, Mapping)):
        raise SpecError(f"a spec must be a list of tensor specs, got {type(raw).__name__}")
    specs = tuple(TensorSpec.parse(item) for item in raw)
    seen: set[str] = set()
    for item in specs:
        if item.name in seen:
            raise SpecError(f"tensor name '{item.name}' appears twice in the spec")
        seen.add(item.name)
    return specs


def _convert_python_value(name: str, value: Any, spec: TensorSpec) -> np.ndarray:
    """Convert a plain Python value to the spec dtype when no value changes (see module doc)."""
    try:
        probe = np.asarray(value, dtype=object) if spec.dtype == "string" else np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise SpecError(f"{name}: cannot make a tensor from the given list ({exc})") from None
    if spec.dtype == "string" and probe.size and _all_strings(probe):
        return probe  # str and bytes may mix (numpy would refuse non-ASCII bytes beside str)
    kind = probe.dtype.kind
    if spec.dtype == "string":
        if probe.size == 0 and kind not in "USO":
            return probe.astype(object)  # [] is an empty string tensor
        if kind not in "USO":
            raise SpecError(f"{name}: expected string values, got {dtype_name(probe)} values")
        leaves = np.asarray(value, dtype=object)  # numpy turns ["a", 1] into ["a", "1"]
        if not _all_strings(leaves):
            kinds = sorted({type(v).__name__ for v in leaves.flat} - {"str", "bytes"})
            raise SpecError(f"{name}: expected string values, got values of type {kinds}")
        return leaves
    target = numpy_dtype(spec.dtype)
    if probe.size == 0:
        return probe.astype(target)
    if kind == "O" or (kind == "f" and target.kind in "iu"):
        # numpy gives object for ints beyond 64 bits and float64 for [-1, 2**63]: look at the
        # Python values themselves before calling them strings or floats
        leaves = list(np.asarray(value, dtype=object).flat)
        if leaves and all(isinstance(v, (int, np.integer)) for v in leaves):
            if target.kind in "iu":
                _check_int_range(name, spec.dtype, target, min(leaves), max(leaves))
                return np.array(leaves, dtype=target).reshape(probe.shape)
            if target.kind == "f":
                probe = np.array([float(v) for v in leaves]).reshape(probe.shape)
                kind = "f"
        elif kind == "O":
            if any(isinstance(v, (str, bytes)) for v in leaves):
                raise SpecError(f"{name}: expected {spec.dtype} values, got strings")
            kinds = sorted({type(v).__name__ for v in leaves})
            raise SpecError(f"{name}: expected {spec.dtype} values, got values of type {kinds}")
    if kind in "US":
        raise SpecError(f"{name}: expected {spec.dtype} values, got strings")
    if spec.dtype == "bool":
        if kind != "b":
            raise SpecError(f"{name}: expected bool values (True/False), got {probe.dtype.name} values")
        return probe
    if target.kind in "iu":
        if kind not in "biu":
            raise SpecError(f"{name}: expected {spec.dtype} values, got floating point values")
        if kind != "b":
            _check_int_range(name, spec.dtype, target, probe.min(), probe.max())
        return probe.astype(target)
    # float targets accept python ints, floats and bools, but never overflow to inf
    with np.errstate(over="ignore"):
        converted = probe.astype(target)
    if kind != "b" and np.any(np.isinf(converted) & np.isfinite(probe)):
        finfo = np.finfo(target)
        raise SpecError(
            f"{name}: values must fit {spec.dtype} (largest magnitude {float(finfo.max):g}), "
            f"got a value of {float(np.max(np.abs(probe[np.isfinite(probe)]))):g}"
        )
    return converted


def _check_int_range(name: str, dtype: str, target: np.dtype, low: Any, high: Any) -> None:
    info = np.iinfo(target)
    if int(low) < int(info.min) or int(high) > int(info.max):
        raise SpecError(
            f"{name}: values must fit {dtype} [{info.min}, {info.max}], got range [{low}, {high}]"
        )


def _all_strings(array: np.ndarray) -> bool:
    return all(isinstance(v, (str, bytes)) for v in array.flat)


def _straight_line_check(compiled: list[tuple[Any, ...]], general: Any, native: Any = _native_check) -> Any:
    """Generate :meth:`SpecChecker.check` with its all-good case as straight-line code.

    The generated ``check(tensors, bindings=None, *, subset=False)`` accepts exactly the spec's
    names with numpy arrays of the spec's dtypes and shapes (symbols agreeing with ``bindings``
    and each other), updates ``bindings`` and returns the dict of arrays. For anything else it
    changes nothing and returns ``general(tensors, bindings, subset=subset)``: the general loop,
    which converts or explains what is wrong. None for specs with string tensors, which always
    take the general loop.

    With ``native`` (``modelpod._fastspec.check_arrays``, where the extension is built) the
    all-good case runs in C on a plan of the same checks; without it, in generated Python.
    """
    if not compiled or any(dtype is None for _, _, dtype, _, _ in compiled):
        return None
    symbols: dict[str, int] = {}  # symbol -> local variable number
    first_user: dict[str, str] = {}  # symbol -> the tensor a new binding names
    for _, name, _, _, dims in compiled:
        for _, dim, fixed in dims:
            if not fixed:
                symbols.setdefault(dim, len(symbols))
                first_user.setdefault(dim, name)
    if native is not None:
        return _native_straight_line_check(compiled, general, native, symbols, first_user)
    other = "return general(tensors, bindings, subset=subset)"
    lines = ["def check(tensors, bindings=None, *, subset=False):",
             f"    if subset or type(tensors) is not dict or len(tensors) != {len(compiled)}: {other}"]
    if symbols:
        lines.append("    if bindings is None: bindings = {}")
    for sym, i in symbols.items():
        lines.append(f"    b{i} = bindings.get({sym!r})")
        lines.append(f"    v{i} = -1 if b{i} is None else b{i}[0]")
    seen: set[str] = set()
    for k, (_, name, _, rank, dims) in enumerate(compiled):
        lines.append(f"    t{k} = tensors.get({name!r})")
        lines.append(f"    if type(t{k}) is not ndarray or t{k}.dtype is not D{k}: {other}")
        lines.append(f"    s = t{k}.shape")
        lines.append(f"    if len(s) != {rank}: {other}")
        for axis, dim, fixed in dims:
            if fixed:
                lines.append(f"    if s[{axis}] != {dim}: {other}")
                continue
            i = symbols[dim]
            if dim in seen:
                lines.append(f"    if s[{axis}] != v{i}: {other}")
            else:  # its first use here: bound by an earlier check of the call, or bound now
                seen.add(dim)
                lines.append(f"    if v{i} < 0: v{i} = s[{axis}]")
                lines.append(f"    elif s[{axis}] != v{i}: {other}")
    for sym, i in symbols.items():
        lines.append(f"    if b{i} is None: bindings[{sym!r}] = (v{i}, {first_user[sym]!r})")
    lines.append("    return {" + ", ".join(f"{name!r}: t{k}" for k, (_, name, _, _, _) in enumerate(compiled)) + "}")
    namespace: dict[str, Any] = {"ndarray": np.ndarray, "general": general}
    namespace.update({f"D{k}": dtype for k, (_, _, dtype, _, _) in enumerate(compiled)})
    exec(compile("\n".join(lines), "<modelpod spec check>", "exec"), namespace)  # noqa: S102 - code we wrote
    return namespace["check"]


def _native_straight_line_check(compiled: list[tuple[Any, ...]], general: Any, native: Any,
                                symbols: dict[str, int], first_user: dict[str, str]) -> Any:
    """:func:`_straight_line_check` with the all-good case in C (``native``)."""
    entries = tuple(
        (name, dtype, rank, tuple((axis, not fixed, dim if fixed else symbols[dim]) for axis, dim, fixed in dims))
        for _, name, dtype, rank, dims in compiled)
    plan = (entries, tuple((sym, first_user[sym]) for sym in symbols))

    def check(tensors: Any, bindings: Any = None, *, subset: bool = False) -> Any:
        if not subset:
            result = native(plan, tensors, bindings)
            if result is not None:
                return result
        return general(tensors, bindings, subset=subset)

    return check


class SpecChecker:
    """A compiled spec: checks dicts of tensors quickly on every call.

    ``check(tensors, bindings)`` validates names, dtypes and shapes, converts plain Python values
    by the casting rules, and records each symbol's size in ``bindings`` so the outputs of the same
    call are held to the sizes the inputs fixed.

    This is on every request's path, so the spec is compiled once: per tensor, its numpy dtype, its
    rank and the dims that need a look (fixed sizes and symbols; ``None`` dims are skipped). A numpy
    array that already has the right dtype takes the short path; messages are built only on error.
    """

    def __init__(self, specs: Sequence[Mapping[str, Any] | TensorSpec], role: str = "input"):
        self.specs = parse_spec(specs)
        self.role = role
        self.by_name = {s.name: s for s in self.specs}
        self._compiled = [
            (
                s,
                s.name,
                numpy_dtype(s.dtype) if s.dtype != "string" else None,
                len(s.shape),
                tuple((axis, dim, isinstance(dim, int)) for axis, dim in enumerate(s.shape) if dim is not None),
            )
            for s in self.specs
        ]
        fast = _straight_line_check(self._compiled, self.check)
        if fast is not None:  # this instance's check: the all-good case first, then this class's
            self.check = fast  # type: ignore[method-assign]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def check(
        self,
        tensors: Mapping[str, Any],
        bindings: dict[str, tuple[int, str]] | None = None,
        *,
        subset: bool = False,
    ) -> dict[str, np.ndarray]:
        """Validate ``tensors`` against the spec and return them as numpy arrays.

        ``bindings`` maps symbol -> (size, tensor that fixed it) and is updated in place.
        With ``subset=True`` missing tensors are allowed (used for requested outputs).
        """
        if bindings is None:
            bindings = {}
        if type(tensors) is not dict and not isinstance(tensors, Mapping):
            raise SpecError(
                f"{self.role}s must be a dict of name -> array, got {type(tensors).__name__}"
            )
        result: dict[str, np.ndarray] = {}
        get = tensors.get
        for spec, name, dtype, rank, dims in self._compiled:
            value = get(name, _MISSING)
            if type(value) is np.ndarray and dtype is not None and value.dtype == dtype:
                array = value  # the common case: already a numpy array of the spec's dtype
            elif value is _MISSING:
                if subset:
                    continue
                raise SpecError(
                    f"missing {self.role} '{name}': expected {spec.describe()}; "
                    f"got tensors {sorted(tensors) or 'none'}"
                )
            else:
                array = self._coerce(spec, dtype, value)
            shape = array.shape
            if len(shape) != rank:
                raise SpecError(
                    f"{self.role} '{name}': expected {spec.describe()} ({rank}-D) but got "
                    f"{dtype_name(array)} of shape {tuple(shape)} ({len(shape)}-D)"
                )
            for axis, dim, fixed in dims:
                size = shape[axis]
                if fixed:
                    if size != dim:
                        raise SpecError(
                            f"{self.role} '{name}': expected {spec.describe()} but got shape "
                            f"{tuple(shape)} (dim {axis} is {size}, must be {dim})"
                        )
                    continue
                bound = bindings.get(dim)
                if bound is None:
                    bindings[dim] = (size, name)
                elif bound[0] != size:
                    raise SpecError(
                        f"symbol {dim} is {bound[0]} in '{bound[1]}' but {size} in '{name}'"
                    )
            result[name] = array
        if len(result) != len(tensors):
            unexpected = sorted(set(tensors) - set(self.by_name))
            if unexpected:
                raise SpecError(
                    f"unexpected {self.role}(s) {unexpected}; this model's {self.role}s are "
                    f"{self.names}"
                )
        return result

    def _coerce(self, spec: TensorSpec, dtype: np.dtype | None, value: Any) -> np.ndarray:
        """The slow path of :meth:`check`: numpy values of another dtype, strings, Python values."""
        label = f"{self.role} '{spec.name}'"
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            fields = {"tensor": spec.name, "role": self.role, "expected": spec.dtype, "actual": dtype_name(array)}
            if dtype is None:
                if array.dtype.kind not in _STRING_KINDS or (
                    array.dtype.kind == "O" and not _all_strings(array)
                ):
                    raise SpecError(  # objects that are not strings: no dtype to name
                        f"{label}: expected {spec.describe()} but got {dtype_name(array)} "
                        f"of shape {tuple(array.shape)}", **(fields if array.dtype.kind != "O" else {})
                    )
            elif array.dtype != dtype:
                raise SpecError(
                    f"{label}: expected {spec.describe()} but got {dtype_name(array)} of shape "
                    f"{tuple(array.shape)}; cast it with .astype(np.{dtype.name}) "
                    "if that is what you mean", **fields
                )
            return array
        return _convert_python_value(label, value, spec)


_MISSING = object()


def check(
    spec: Sequence[Mapping[str, Any] | TensorSpec],
    tensors: Mapping[str, Any],
    bindings: dict[str, tuple[int, str]] | None = None,
    role: str = "input",
) -> dict[str, np.ndarray]:
    """One-shot form of :class:`SpecChecker` (compile the spec once when calling repeatedly)."""
    return SpecChecker(spec, role).check(tensors, bindings)
