"""Import code that lives inside a package without leaking it into ``sys.modules``.

Packaged code is imported as sub-modules of a private, uniquely named parent package
(``_modelpod_code_<n>``), so relative imports (``from .layers import Net``, Neuropod's rule) work and
two packages that both have a ``main.py`` load side by side. Bare absolute imports of sibling
modules (``import layers``) also work while the entrypoint is imported: the code folder is put on
``sys.path`` for that moment only, and any module it brought in under a bare name is taken out of
``sys.modules`` afterwards (the model keeps its references).
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys
import threading
import types
from pathlib import Path
from typing import Any

_counter = itertools.count()
_lock = threading.Lock()


def import_entrypoint(code_root: Path, module: str, attribute: str) -> tuple[Any, list[str]]:
    """Import ``module`` from ``code_root`` and return (``module.attribute``, private module names).

    The returned names are what the caller should drop from ``sys.modules`` on unload.
    """
    code_root = code_root.resolve()
    with _lock:
        parent = f"_modelpod_code_{next(_counter)}"
        pkg = types.ModuleType(parent)
        pkg.__path__ = [str(code_root)]  # type: ignore[attr-defined]
        pkg.__package__ = parent
        sys.modules[parent] = pkg
        before = set(sys.modules)
        sys.path.insert(0, str(code_root))
        write_bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True  # keep the package folder (and its hashes) untouched
        try:
            mod = importlib.import_module(f"{parent}.{module}")
        except ModuleNotFoundError as exc:
            _forget_private(parent)
            target = f"{parent}.{module}"
            if exc.name and (exc.name == target or target.startswith(exc.name + ".")):
                raise ImportError(
                    f"entrypoint package '{module}' not found in the packaged code at {code_root}"
                ) from None
            missing = exc.name.removeprefix(parent + ".") if exc.name else "?"
            raise ImportError(
                f"packaged module '{module}' could not be imported: no module named '{missing}' "
                f"(looked in {code_root} and the installed packages)"
            ) from exc
        except BaseException:
            _forget_private(parent)
            raise
        finally:
            sys.dont_write_bytecode = write_bytecode
            try:
                sys.path.remove(str(code_root))
            except ValueError:
                pass
            _drop_bare_modules(before, code_root)
        private = _private_names(parent)
    try:
        return getattr(mod, attribute), private
    except AttributeError:
        forget_modules(private)
        raise ImportError(
            f"entrypoint '{attribute}' not found in packaged module '{module}' "
            f"(it defines: {', '.join(n for n in dir(mod) if not n.startswith('_'))})"
        ) from None


def _private_names(parent: str) -> list[str]:
    return [name for name in list(sys.modules) if name == parent or name.startswith(parent + ".")]


def _forget_private(parent: str) -> None:
    for name in _private_names(parent):
        sys.modules.pop(name, None)


def _drop_bare_modules(before: set[str], code_root: Path) -> None:
    """Remove modules imported under bare names from files inside ``code_root``."""
    root = str(code_root)
    inside = root.rstrip(os.sep) + os.sep
    for name in set(sys.modules) - before:
        if name.startswith("_modelpod_code_"):
            continue
        mod = sys.modules.get(name)
        origin = getattr(mod, "__file__", None) or ""
        paths = list(getattr(mod, "__path__", []) or [])
        if origin.startswith(inside) or any(str(p) == root or str(p).startswith(inside) for p in paths):
            del sys.modules[name]


def forget_modules(names: list[str]) -> None:
    """Drop private module names from ``sys.modules`` (on model unload)."""
    with _lock:
        for name in names:
            sys.modules.pop(name, None)
