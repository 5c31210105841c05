"""Loading, reloading and unloading model versions while the server runs, dropping no request.

A swap loads the new version in new instances and warms it up first; only a READY version is put
in place (one dict assignment: requests that already hold the old version finish on it). The old
version is then drained (queued and running requests complete) and unloaded, which returns its
memory (worker processes exit). A version that fails to load or warm up is *not* put in place:
the old one keeps serving and the failure is kept in :attr:`ModelManager.failures` (shown by the
v2 repository index, TF Serving status and the logs).

``modelpod serve --watch`` polls the served PATH and applies what changed; the v2 repository API
(``POST /v2/repository/index``, ``.../models/<m>/load``, ``.../models/<m>/unload``) does it on demand.
A model unloaded through the API stays unloaded under ``--watch`` until it is loaded again.
A version that failed (under ``--watch``, or at start) is retried with exponential backoff (1 s,
2 s, 4 s ... at most 5 min; its worker may have been killed during warm-up), and at once when its
files change.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelpod.errors import ModelpodError, ServeError
from modelpod.package.layout import MANIFEST_NAME
from modelpod.runtime.modelarts import is_modelarts_folder, modelarts_name
from modelpod.serving.execution.served import ServedModel
from modelpod.serving.models.loading import build_served
from modelpod.serving.models.repository import Repository, discover
from modelpod.serving.settings import ModelSettings, read_model_settings, read_service_configs
from modelpod.serving.settings import _first_problem as first_problem

log = logging.getLogger("modelpod.serve")
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 300.0


def fingerprint(package: Path) -> str:
    """Changes whenever the package is replaced or any of its files is (re)written.

    A folder: its manifest's bytes plus every file's path, size and mtime, so a package that was
    caught half-copied (and failed to load) is retried once the copy completes. An archive: its size
    and mtime.
    """
    try:
        if package.is_dir():
            manifest = package / MANIFEST_NAME  # a ModelArts folder has none: its files decide
            digest = hashlib.sha256(manifest.read_bytes() if manifest.is_file() else b"")
            for file in sorted(p for p in package.rglob("*") if p.is_file()):
                stat = file.stat()
                digest.update(f"\0{file.relative_to(package)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
            return digest.hexdigest()
        stat = package.stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        return "missing"


@dataclass(frozen=True)
class SourceEntry:
    """One model version the source names, with everything needed to load it."""

    #: the served name (None: the package's manifest name)
    name: str | None
    version: int
    package: Path
    settings: ModelSettings
    #: the platform the source requires (EAS ``processor``), checked against the package
    processor: str | None = None
    #: the model's own token (None: the server's)
    token: str | None = None
    #: the settings the model itself gives (service config metadata, serving.json), before the defaults
    own: ModelSettings = ModelSettings()


@dataclass(frozen=True)
class ScannedEntry:
    """A :class:`SourceEntry` as ``--watch`` sees it: its served key and its files' fingerprint."""

    entry: SourceEntry
    key: tuple[str, int]
    fingerprint: str


class ModelManager:
    """Keeps the repository in step with the served PATH (repository folders, packages, configs).

    ``defaults`` are the server-wide settings (``modelpod serve`` options); a model's own settings
    (service config metadata, ``serving.json``) go on top of them. ``stopping`` is set when the
    server shuts down: worker processes that die from then on stay down.
    """

    def __init__(self, source: Path, repository: Repository, *, defaults: ModelSettings | None = None,
                 metrics: Any = None, stopping: threading.Event | None = None, only: str | None = None,
                 overrides: ModelSettings | None = None) -> None:
        self.source = source
        #: settings that win over the model's own (a Ray replica of a model whose instances are replicas)
        self.overrides = overrides
        #: serve this one model of the source and leave the others out (one Ray deployment per model)
        self.only = only
        self.repository = repository
        self.defaults = defaults or ModelSettings()
        self.metrics = metrics
        self.stopping = stopping or threading.Event()
        #: (name, version) -> why its package failed to load; the repository's own dict, so a lookup
        #: of a version that never loaded answers the reason
        self.failures: dict[tuple[str, int], str] = repository.failures
        self.fingerprints: dict[tuple[str, int], str] = {}
        #: key -> (fingerprint that failed, when to retry it (monotonic), the backoff that led there)
        self._failed_marks: dict[tuple[str, int], tuple[str, float, float]] = {}
        self.unloaded: set[str] = set()  # unloaded through the API: --watch leaves them out until loaded
        #: model -> the settings changes its last load asked for (a v2 config override), kept until
        #: it is loaded without any or unloaded
        self.load_changes: dict[str, dict[str, Any]] = {}
        self._names: dict[Path, tuple[str, str]] = {}  # package -> (fingerprint, manifest name)
        self._tokens: dict[str, str] = {}  # model -> its own token, from the last read of the source
        self._lock = asyncio.Lock()

    # -- what the source holds -----------------------------------------------------------------
    def entries(self) -> list[SourceEntry]:
        """Everything the source names (file-system work: call off the event loop); the tokens are
        kept for :meth:`configured_token`."""
        entries = self._read_entries()
        if self.only is not None:
            entries = [e for e in entries if (e.name or self.served_name(e.package)) == self.only]
        if self.load_changes:
            entries = [self._changed(e) for e in entries]
        if self.overrides is not None:
            entries = [replace(e, settings=self.overrides.over(e.settings)) for e in entries]
        self._tokens = {e.name: e.token for e in entries if e.name and e.token}
        return entries

    def _changed(self, entry: SourceEntry) -> SourceEntry:
        """The entry with the settings changes its model was loaded with, if any."""
        given = self.load_changes.get(entry.name or self.served_name(entry.package))
        return replace(entry, settings=entry.settings.with_changes(given)) if given else entry

    def _read_entries(self) -> list[SourceEntry]:
        if self.source.is_file() and self.source.suffix == ".json":
            return [SourceEntry(cfg.name, cfg.version, Path(cfg.model_path), settings.over(self.defaults),
                                cfg.processor, cfg.token or None, settings)
                    for settings, cfg in read_service_configs(self.source)]
        if is_modelarts_folder(self.source):
            return [self._folder_entry(None, 1, self.source, self.source)]
        return [self._folder_entry(name, version, package, self.source / name if name else None)
                for name, version, package in discover(self.source)]

    def _folder_entry(self, name: str | None, version: int, package: Path, folder: Path | None) -> SourceEntry:
        """A package found in a folder, with the settings of the folder's ``serving.json`` if any."""
        found = read_model_settings(folder) if folder is not None else None
        if found is None:
            return SourceEntry(name, version, package, self.defaults)
        settings, entry = found
        return SourceEntry(name, version, package, settings.over(self.defaults), entry.processor, entry.token or None,
                           settings)

    def configured_token(self, name: str) -> str | None:
        """The token the source set for model ``name`` when it was last read (also while the model
        is unloaded), or None. No file-system work: a request may ask."""
        return self._tokens.get(name)

    async def load_all(self) -> None:
        """The initial load: every model the source names, warmed up (models load on a thread).

        A model that fails to warm up is kept, unready, with its reason. One that fails to load (its
        code cannot be imported, its processor does not match...) is left out with its reason in
        :attr:`failures` (the index, the dashboard, one log line; requests for it answer 503 with
        it) while the others serve, and it is retried under ``--watch``. When no model could be
        loaded at all there is nothing to serve: the start fails with the reason (the error itself
        for a source of one model, every model's reason otherwise), what was loaded is closed.
        """
        failed: list[tuple[tuple[str, int], Exception]] = []
        try:
            entries = await asyncio.to_thread(self.entries)
            for entry in entries:
                try:
                    served = await asyncio.to_thread(self._build, entry)
                except Exception as exc:  # noqa: BLE001 - one broken package must not stop the others
                    key = (await asyncio.to_thread(self._entry_name, entry), entry.version)
                    failed.append((key, exc))
                    self.failures[key] = f"load failed: {type(exc).__name__}: {exc}"
                    mark = await asyncio.to_thread(fingerprint, entry.package)
                    self._failed_marks[key] = (mark, time.monotonic() + RETRY_FIRST_S, RETRY_FIRST_S)
                    continue
                old = self.repository.swap(served, token=entry.token)
                if old is not None:  # the source names this version twice: the last one wins
                    await old.close()
                mark = await asyncio.to_thread(fingerprint, entry.package)
                self.fingerprints[(served.name, entry.version)] = mark
                if entry.name is None:
                    self._names[entry.package] = (mark, served.name)
                log.info("loaded %s version %s from %s (%s)", served.name, entry.version, entry.package,
                         served.state)
            if failed and not self.repository.models:
                if len(failed) == 1:
                    raise failed[0][1]
                raise ModelpodError(f"none of the {len(failed)} models of {self.source} could be loaded: "
                                    + "; ".join(f"model '{name}' version {version}: {exc}"
                                                for (name, version), exc in failed))
        except BaseException:
            await self.repository.close()
            for key, _ in failed:
                self.failures.pop(key, None)
            raise
        for (name, version), _ in failed:
            log.error("model %s version %s is not served (the others are): %s", name, version,
                      self.failures[(name, version)])

    def _entry_name(self, entry: SourceEntry) -> str:
        """The name an entry is served under, even when its package cannot be read (its folder's)."""
        if entry.name:
            return entry.name
        try:
            return self.served_name(entry.package)
        except Exception:  # noqa: BLE001 - the package is broken: its file name is what is known
            return entry.package.name.split(".")[0] or str(entry.package)

    def _build(self, entry: SourceEntry, name: str | None = None) -> ServedModel:
        return build_served(name or entry.name, entry.version, entry.package, entry.settings, entry.processor,
                            metrics=self.metrics, stopping=self.stopping)

    def served_name(self, package: Path) -> str:
        """The manifest name of a package PATH names no model for; read again only when it changes
        (an archive's manifest member is read, nothing is extracted)."""
        mark = fingerprint(package)
        cached = self._names.get(package)
        if cached is not None and cached[0] == mark:
            return cached[1]
        if is_modelarts_folder(package):
            name = modelarts_name(package)
        elif package.is_file():
            from modelpod.package.archive import read_archive_manifest

            name = read_archive_manifest(package)[0].name
        else:
            from modelpod.package.manifest import read_manifest

            name = read_manifest(package, verify_hashes=False).name
        self._names[package] = (mark, name)
        return name

    # -- operations ----------------------------------------------------------------------------
    async def _swap_in(self, key: tuple[str, int], entry: SourceEntry) -> ServedModel | None:
        name, version = key
        try:
            new = await asyncio.to_thread(self._build, entry, name)
        except Exception as exc:  # noqa: BLE001 - a broken new version must not take the old one down
            self.failures[key] = f"load failed: {type(exc).__name__}: {exc}"
            log.error("model %s version %s: %s%s", name, version, self.failures[key], self._kept(key))
            return None
        if not new.ready:
            self.failures[key] = new.reason
            log.error("model %s version %s: %s%s", name, version, new.reason, self._kept(key))
            await new.close()
            return None
        self.failures.pop(key, None)
        self._failed_marks.pop(key, None)
        gc.freeze()  # the new model's objects live long: keep full collections from rescanning them
        old = self.repository.swap(new, token=entry.token)
        self.fingerprints[key] = await asyncio.to_thread(fingerprint, entry.package)
        log.info("model %s version %s: now serving %s", name, version, entry.package)
        if old is not None:
            await self.retire(old)
        return new

    def _kept(self, key: tuple[str, int]) -> str:
        """What a failed swap leaves serving, for its log line."""
        entry = self.repository.models.get(key[0])
        return " (still serving what was there)" if entry is not None and key[1] in entry.versions else ""

    async def retire(self, old: ServedModel) -> None:
        """Drain a version that is no longer reachable, then close it."""
        await old.drain()
        await old.close()
        log.info("model %s version %s: old instance drained and unloaded", old.name, old.version)

    async def load(self, name: str, changes: Callable[[SourceEntry], dict[str, Any]] | None = None
                   ) -> list[ServedModel]:
        """(Re)load every version of ``name`` the source holds; ServeError if none could be.

        ``changes`` (a v2 config override) gives the settings changes for one entry, called off the
        event loop (ValueError refuses the load with its message). They are kept for the model
        (``--watch`` reloads keep them) until it is loaded without any or unloaded: a load without
        ``changes`` goes back to the source's settings, as Triton's load without a config goes back
        to the repository's. A load that fails leaves the previous changes in place.
        """
        async with self._lock:
            previous = self.load_changes.pop(name, None)
            try:
                entries = [e for e in await asyncio.to_thread(self.entries)
                           if (e.name or self.served_name(e.package)) == name]
                if not entries:
                    raise ServeError("not_found", f"failed to load '{name}': it is not in {self.source}")
                given: dict[str, Any] = {}
                if changes is not None:
                    entries, given = await asyncio.to_thread(self._apply_changes, name, entries, changes)
                self.unloaded.discard(name)
                loaded = []
                for entry in entries:
                    served = await self._swap_in((name, entry.version), entry)
                    if served is not None:
                        loaded.append(served)
                if not loaded:
                    reasons = "; ".join(self.failures.get((name, e.version), "") for e in entries)
                    raise ServeError("bad_input", f"failed to load '{name}': {reasons}")
            except BaseException:
                if previous is not None:
                    self.load_changes[name] = previous
                raise
            if given:
                self.load_changes[name] = given
            return loaded

    @staticmethod
    def _apply_changes(name: str, entries: list[SourceEntry], changes: Callable[[SourceEntry], dict[str, Any]]
                       ) -> tuple[list[SourceEntry], dict[str, Any]]:
        """Each entry with the settings ``changes`` gives it (and the last changes); ServeError when
        they are refused or make settings that are not valid."""
        changed, given = [], {}
        for entry in entries:
            try:
                given = changes(entry)
                changed.append(replace(entry, settings=entry.settings.with_changes(given)))
            except ValidationError as exc:
                raise ServeError("bad_input", f"failed to load '{name}': the config override makes the settings "
                                 f"invalid: {first_problem(exc)}") from None
            except ValueError as exc:
                raise ServeError("bad_input", f"failed to load '{name}': {exc}") from None
        return changed, given

    async def unload(self, name: str) -> None:
        async with self._lock:
            removed = self.repository.remove(name)
            self.load_changes.pop(name, None)
            if not removed:
                raise ServeError("not_found", f"model '{name}' is not loaded")
            for key in [k for k in self.fingerprints if k[0] == name]:
                del self.fingerprints[key]
            for key in [k for k in self.failures if k[0] == name]:  # nothing of it is wanted now
                del self.failures[key]
                self._failed_marks.pop(key, None)
            self.unloaded.add(name)
        for served in removed:
            await self.retire(served)

    def _scan(self) -> list[ScannedEntry]:
        """Each entry with its served key and fingerprint: file-system work, run off the event loop."""
        scanned = []
        for entry in self.entries():
            try:
                served_name = entry.name or self.served_name(entry.package)
            except Exception as exc:  # noqa: BLE001 - one unreadable package must not stop the others
                log.warning("watch: cannot read %s: %s", entry.package, exc)
                continue
            scanned.append(ScannedEntry(entry, (served_name, entry.version), fingerprint(entry.package)))
        return scanned

    async def sync(self) -> None:
        """Apply what changed in the source: new or replaced versions load, removed ones unload."""
        async with self._lock:
            try:
                scanned = await asyncio.to_thread(self._scan)
            except (ValueError, OSError) as exc:
                log.warning("watch: cannot read %s: %s", self.source, exc)
                return
            seen = set()
            for item in scanned:
                key, mark = item.key, item.fingerprint
                if key[0] in self.unloaded:
                    continue
                seen.add(key)
                if mark == self.fingerprints.get(key) and self._serving(key):
                    continue  # unchanged (one that failed at start is retried like a failed swap)
                failed = self._failed_marks.get(key)
                if failed is not None and failed[0] == mark:  # the same files failed before: back off
                    if time.monotonic() < failed[1]:
                        continue
                    log.info("model %s version %s: retrying its failed load (same files, after %.0f s)",
                             key[0], key[1], failed[2])
                served = await self._swap_in(key, item.entry)
                if served is None:
                    delay = min(failed[2] * 2, RETRY_MAX_S) if failed is not None and failed[0] == mark \
                        else RETRY_FIRST_S
                    self._failed_marks[key] = (mark, time.monotonic() + delay, delay)
                    log.info("model %s version %s: retrying in %.0f s (or when its files change)", key[0],
                             key[1], delay)
            for key in [k for k in self._failed_marks if k not in seen]:  # gone: nothing to retry
                del self._failed_marks[key]
            for key in [k for k in self.failures if k not in seen]:  # gone from the source (or unloaded)
                del self.failures[key]
            for name, version in [k for k in self.fingerprints if k not in seen]:
                served = self.repository.remove_version(name, version)
                del self.fingerprints[(name, version)]
                if served is not None:
                    await self.retire(served)

    def _serving(self, key: tuple[str, int]) -> bool:
        """False only for a version that is in the repository but not ready (it failed to load)."""
        entry = self.repository.models.get(key[0])
        served = entry.versions.get(key[1]) if entry is not None else None
        return served is None or served.ready

    async def watch(self, interval_s: float) -> None:
        """Call :meth:`sync` every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.sync()

    def index(self) -> list[dict[str, Any]]:
        """The v2 repository index: every version with its state (and why it is not ready).

        A version whose replacement failed to load keeps serving (READY) with the failure as reason.
        """
        rows = []
        for served in self.repository.all():
            failure = self.failures.get((served.name, served.version), "")
            rows.append({"name": served.name, "version": served.version_label,
                         "state": "READY" if served.ready else "UNAVAILABLE",
                         "reason": served.reason or (f"still serving the previous package; new one: {failure}"
                                                     if failure else "")})
        for key, reason in self.failures.items():
            if not any(r["name"] == key[0] and r["version"] == str(key[1]) for r in rows):
                rows.append({"name": key[0], "version": str(key[1]), "state": "UNAVAILABLE", "reason": reason})
        return rows
