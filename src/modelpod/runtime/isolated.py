"""Running a package in its own environment, out of process: ``modelpod.load(path, isolated=True)``.

The package's environment (:mod:`modelpod.envs`: its lock, else its requirements, else just what
the worker needs) is built or found, a worker is started with that environment's interpreter, and
the :class:`~modelpod.runtime.model.Model` returned runs every ``infer`` there. The server does the
same for each instance of an isolated model (:mod:`modelpod.serving.models.loading`).
"""

from __future__ import annotations

from pathlib import Path

from modelpod.backends.base import canonical_platform
from modelpod.envs.requirements import Progress, framework_requirements
from modelpod.envs.sources import modelarts_source, package_source, worker_only_source
from modelpod.envs.store import Environment, EnvSource, EnvStore
from modelpod.package.layout import LOCK_FILE
from modelpod.package.manifest import Manifest


def env_source(root: Path, requirements: list[str] | None, modelarts: bool = False,
               force: bool = False, platform: str = "python") -> EnvSource | None:
    """The environment a package (or ModelArts folder) asks for; with ``force`` one even when it
    has no requirements (the worker's needs and the platform's framework), else None for such a
    package. A package without a lock gets its ``platform``'s framework added, as packing would."""
    if modelarts:
        return modelarts_source(root, force=force)
    if not (root / LOCK_FILE).is_file():
        wanted = list(requirements or [])
        if wanted or force:
            wanted += framework_requirements(canonical_platform(platform), wanted)
        requirements = wanted
    source = package_source(root, requirements)
    if source is None and force:
        source = worker_only_source(str(root))
    return source


def open_environment(source: EnvSource, used_by: str | None = None, progress: Progress | None = None,
                     store: EnvStore | None = None) -> Environment:
    """The built environment for ``source`` (EnvBuildError with uv's message if it cannot be built)."""
    return (store or EnvStore()).ensure(source, used_by=used_by, progress=progress)


def package_environment(root: Path, manifest: Manifest, used_by: str | None, *, force: bool = False,
                        progress: Progress | None = None) -> Environment | None:
    """The built environment a package runs in out of process (:func:`env_source`, then
    :func:`open_environment`), or None for a package without requirements unless ``force``.
    ``used_by`` is what ``modelpod env list`` records (the path given: the archive, not its extraction)."""
    source = env_source(root, manifest.requirements, force=force, platform=manifest.platform)
    if source is None:
        return None
    return open_environment(source, used_by=used_by, progress=progress)
