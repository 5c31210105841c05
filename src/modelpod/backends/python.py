"""The python platform: packaged code plus data, an entrypoint that returns the model callable.

Layout inside a package: ``code/`` (the ``dirs_to_package`` of each ``python_root``) and ``data/``
(the ``data_paths``). ``entrypoint_package.entrypoint(data_dir)`` returns a callable that takes the
inputs as keyword arguments and returns a dict of arrays. The pytorch platform reuses all of this.

The callable may declare ``stateful = True`` (it then gets ``sequence=``, a SequenceContext) and
may be a generator (a decoupled model); see :mod:`modelpod.runtime.sequence`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelpod.backends.base import Backend
from modelpod.backends.declarations import SEQUENCE_ARGUMENT, is_decoupled, is_stateful
from modelpod.errors import BackendError
from modelpod.package.codeimport import forget_modules, import_entrypoint
from modelpod.package.layout import CODE_DIR, DATA_DIR


def load_entrypoint(root: Path, options: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """Import the packaged entrypoint and call it with the data folder: (model, private modules)."""
    package = options.get("entrypoint_package", "main")
    name = options.get("entrypoint", "get_model")
    factory, modules = import_entrypoint(root / CODE_DIR, package, name)
    try:
        model = factory(str(root / DATA_DIR))
    except Exception:
        forget_modules(modules)
        raise
    if not callable(model):
        forget_modules(modules)
        raise BackendError(f"{package}.{name}(data_dir) must return a callable, got {type(model).__name__}")
    return model, modules


class PythonBackend(Backend):
    """Runs ``model(**inputs)`` from the packaged entrypoint."""

    platform = "python"

    def __init__(self, root: Path, manifest: Any) -> None:
        super().__init__(root, manifest)
        self.model, self._modules = load_entrypoint(root, manifest.platform_options)
        self.stateful = is_stateful(self.model)
        self.decoupled = is_decoupled(self.model)
        if self.stateful and any(spec["name"] == SEQUENCE_ARGUMENT for spec in manifest.input_spec):
            forget_modules(self._modules)
            raise BackendError(f"model '{manifest.name}' is stateful, so its call takes '{SEQUENCE_ARGUMENT}=' "
                               f"(its SequenceContext); rename its input '{SEQUENCE_ARGUMENT}'")

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
        signature: str | None = None, sequence: Any = None,
    ) -> Mapping[str, Any]:
        if sequence is not None:
            return self.model(**inputs, sequence=sequence)
        return self.model(**inputs)

    def close(self) -> None:
        forget_modules(self._modules)
        self.model = None
