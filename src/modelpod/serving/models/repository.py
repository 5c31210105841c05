"""What the server serves: models by name, each with numbered versions, and how PATH becomes that.

``modelpod serve PATH`` accepts:

* a package folder or archive -> one model (its manifest name), version 1;
* a repository folder -> one sub-folder per model; numbered sub-folders inside are versions (the
  highest ready one is the default), or the sub-folder is itself a package (version 1);
* an EAS-style service config JSON (one object or a list), see :mod:`modelpod.serving.models.loading`;
* a ModelArts model folder (``config.json`` + ``customize_service.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modelpod.errors import ServeError, clip
from modelpod.package.archive import is_archive
from modelpod.package.layout import MANIFEST_NAME
from modelpod.serving.execution.served import ServedModel

log = logging.getLogger("modelpod.serve")


@dataclass
class ModelVersions:
    """All loaded versions of one model name."""

    name: str
    versions: dict[int, ServedModel] = field(default_factory=dict)
    token: str | None = None

    def default(self) -> ServedModel | None:
        """The highest ready version (the highest of all when none is ready)."""
        versions = self.versions
        if len(versions) == 1:
            return next(iter(versions.values()))
        ready = [v for v in versions.values() if v.ready]
        pool = ready or list(self.versions.values())
        return max(pool, key=lambda v: v.version) if pool else None


class Repository:
    """Name -> versions, with lookups that raise the right ServeError."""

    def __init__(self) -> None:
        self.models: dict[str, ModelVersions] = {}
        #: models other servers of the same deployment serve (name -> guarded by a token of its
        #: own): named in "not served here" errors as if they were here (Ray's per-model layout)
        self.listed_elsewhere: dict[str, bool] = {}
        #: (name, version) -> why the source's package for it failed to load (kept by the
        #: ModelManager): a version it left out answers 503 with the reason, not 404
        self.failures: dict[tuple[str, int], str] = {}

    def swap(self, served: ServedModel, token: str | None = None) -> ServedModel | None:
        """Put ``served`` in place of its name/version at once; return the version it replaced."""
        entry = self.models.get(served.name)
        if entry is None:
            entry = ModelVersions(served.name, token=token)
            self.models[served.name] = entry
        elif token:
            entry.token = token
        old = entry.versions.get(served.version)
        versions = dict(entry.versions)
        versions[served.version] = served
        entry.versions = versions  # one assignment: readers see the old or the new dict, never a mix
        return old

    def remove(self, name: str) -> list[ServedModel]:
        """Take a model out of service (all versions); the caller drains and closes them."""
        entry = self.models.pop(name, None)
        return list(entry.versions.values()) if entry else []

    def remove_version(self, name: str, version: int) -> ServedModel | None:
        entry = self.models.get(name)
        if entry is None or version not in entry.versions:
            return None
        versions = dict(entry.versions)
        served = versions.pop(version)
        entry.versions = versions
        if not versions:
            del self.models[name]
        return served

    def listing(self) -> str:
        """The served model names for a "not served here" message (every protocol's 404): models
        with a token of their own stay out of it, since the caller may not use them."""
        names = {n for n, e in self.models.items() if not e.token}
        names.update(n for n, guarded in self.listed_elsewhere.items() if not guarded)
        return ", ".join(sorted(names)) or "none"

    def get(self, name: str, version: str | int | None = None, *, require_ready: bool = True) -> ServedModel:
        entry = self.models.get(name)
        if entry is None:
            if self.failures:
                self._raise_failed(name, version)
            raise ServeError("not_found", f"model '{clip(name)}' is not served here (models: {self.listing()})")
        if version is None or version == "":
            served = entry.default()
        else:
            try:
                if isinstance(version, str) and not (version.isascii() and version.isdigit()):
                    raise ValueError(version)  # int() takes ' 1', '+1', '1_0' and other scripts' digits
                served = entry.versions.get(int(version))
            except (TypeError, ValueError):
                raise ServeError("bad_input", f"model '{name}': version must be a number, got {clip(repr(version))}") from None
            if served is None and self.failures:
                self._raise_failed(name, version)
        if served is None:
            raise ServeError("not_found", f"model '{name}' has no version {clip(str(version))} "
                             f"(versions: {self.known_versions(name)})")
        if require_ready and served.state != "READY":
            raise ServeError(
                "not_ready",
                f"model '{name}' version {served.version} is not ready ({served.state.lower()}"
                + (f": {served.reason}" if served.reason else "") + ")",
            )
        return served

    def known_versions(self, name: str) -> str:
        """The versions of ``name`` served here, in words ("1, 2", or "none")."""
        entry = self.models.get(name)
        return ", ".join(str(v) for v in sorted(entry.versions)) if entry is not None and entry.versions else "none"

    def version_label(self, name: str, asked: str) -> str:
        """The version metrics label a request for ``name`` with, when no handler set the one that
        answered (errors, metadata, readiness): ``asked`` when it is loaded, the default version when
        none was asked, else "" (unknown versions must not grow /metrics)."""
        entry = self.models.get(name)
        if entry is None:
            return ""
        if not asked:
            default = entry.default()
            return default.version_label if default is not None else ""
        if not (asked.isascii() and asked.isdigit()):
            return ""
        served = entry.versions.get(int(asked))
        return served.version_label if served is not None else ""

    def _raise_failed(self, name: str, version: str | int | None) -> None:
        """ServeError('not_ready') with the reason when the asked version of ``name`` failed to load
        (no version given: the highest that failed); nothing when none did."""
        failed = sorted(v for n, v in self.failures if n == name)
        if version is not None and version != "":
            failed = [v for v in failed if str(v) == str(version)]
        if failed:
            raise ServeError("not_ready", f"model '{name}' version {failed[-1]} is not ready "
                             f"({self.failures[(name, failed[-1])]})")

    def all(self) -> Iterable[ServedModel]:
        for entry in self.models.values():
            yield from entry.versions.values()

    @property
    def ready(self) -> bool:
        """Every model ready: its default version is, and none failed to load with no version served."""
        return (bool(self.models) and all(e.default() is not None and e.default().ready for e in self.models.values())
                and all(name in self.models for name, _ in self.failures))

    async def close(self) -> None:
        """Take every version out of service and close it (see :meth:`ServedModel.close`)."""
        served = list(self.all())
        self.models.clear()
        for version in served:
            await version.close()


def is_package(path: Path) -> bool:
    """A modelpod package (folder or archive) or a ModelArts model folder: something to serve."""
    from modelpod.runtime.modelarts import is_modelarts_folder

    return ((path.is_dir() and ((path / MANIFEST_NAME).is_file() or is_modelarts_folder(path)))
            or (path.is_file() and is_archive(path)))


def discover(path: Path) -> list[tuple[str | None, int, Path]]:
    """(name or None for the manifest's, version, package path) for every package under ``path``."""
    if is_package(path):
        return [(None, 1, path)]
    if not path.is_dir():
        raise ValueError(f"{path}: not a package, archive, repository folder or service config")
    found: list[tuple[str | None, int, Path]] = []
    for model_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if is_package(model_dir):
            found.append((model_dir.name, 1, model_dir))
            continue
        for version_dir in sorted(model_dir.iterdir()):
            if version_dir.name.isdigit() and is_package(version_dir):
                found.append((model_dir.name, int(version_dir.name), version_dir))
            elif version_dir.name.split(".")[0].isdigit() and is_archive(version_dir):
                found.append((model_dir.name, int(version_dir.name.split(".")[0]), version_dir))
    if not found:
        from modelpod.packers.sources import repository_hint

        raise ValueError(f"{path}: no packages found (expected <model>/<version>/modelpod.json or "
                         f"<model>/modelpod.json){repository_hint(path)}")
    return found
