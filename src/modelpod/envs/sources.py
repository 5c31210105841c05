"""Which environment a package (or ModelArts folder) asks for: its lock, else its requirements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelpod.envs.requirements import modelarts_requirements, read_lock, satisfied_here
from modelpod.envs.store import EnvSource
from modelpod.package.layout import LOCK_FILE, MODELARTS_CONFIG_FILE


def package_source(root: Path, requirements: list[str] | None = None) -> EnvSource | None:
    """The package's ``requirements.lock``, else its manifest ``requirements`` unlocked, else None."""
    lock = root / LOCK_FILE
    if lock.is_file():
        text = lock.read_text()
        info = read_lock(text)
        return EnvSource(lock=text, python=info.python, platform=info.platform, label=str(root))
    if requirements:
        return EnvSource(requirements=tuple(requirements), label=str(root))
    return None


def modelarts_missing(folder: Path) -> list[str]:
    """The ``config.json`` ``dependencies`` of a ModelArts folder that this server does not satisfy."""
    try:
        config: Any = json.loads((folder / MODELARTS_CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return []
    requirements = modelarts_requirements(config if isinstance(config, dict) else {},
                                          str(folder / MODELARTS_CONFIG_FILE))
    return [r for r in requirements if not satisfied_here(r)]


def modelarts_source(folder: Path, force: bool = False) -> EnvSource | None:
    """A ModelArts folder's environment: its dependencies the server lacks, layered over the
    server's packages (as ModelArts installs them over its image); None when there are none."""
    missing = modelarts_missing(folder)
    if not missing and not force:
        return None
    return EnvSource(requirements=tuple(missing), label=str(folder), layered=True)


def worker_only_source(label: str) -> EnvSource:
    """An environment with nothing but what the worker needs (isolation forced on a package without
    requirements)."""
    return EnvSource(requirements=(), label=label)
