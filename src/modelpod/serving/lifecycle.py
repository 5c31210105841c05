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
import time
from pathlib import Path
from typing import Any

from modelpod.package.layout import MANIFEST_NAME
from modelpod.runtime.modelarts import is_modelarts_folder, modelarts_name
from modelpod.serving.config import build_served, read_model_settings, read_service_configs
from modelpod.errors import ServeError
from modelpod.serving.repository import Repository, discover
from modelpod.serving.served import ServedModel, ServingOptions

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


class ModelManager:
    """Keeps the repository in step with the served PATH (repository folders, packages, configs)."""

    def __init__(self, source: Path, repository: Repository, *, token: str | None = None,
                 defaults: dict[str, Any] | None = None, metrics: Any = None) -> None:
        self.source = source
        self.repository = repository
        self.token = token
        self.defaults = defaults or {}
        self.metrics = metrics
        self.failures: dict[tuple[str, int], str] = {}
        self.fingerprints: dict[tuple[str, int], str] = {}
        #: key -> (fingerprint that failed, when to retry it (monotonic), the backoff that led there)
        self._failed_marks: dict[tuple[str, int], tuple[str, float, float]] = {}
        self.unloaded: set[str] = set()  # unloaded through the API: --watch leaves them out until loaded
        self._names: dict[Path, tuple[str, str]] = {}  # package -> (fingerprint, manifest name)
        self._tokens: dict[str, str] = {}  # model -> its own token, from the last read of the source
        self._lock = asyncio.Lock()

    # -- what the source holds -----------------------------------------------------------------
    def _entries(self) -> list[tuple[str | None, int, Path, ServingOptions, str | None, str | None]]:
        """(name, version, package, options, processor, token) for everything the source names; the
        tokens are kept for :meth:`configured_token`."""
        entries = self._read_entries()
        self._tokens = {e[0]: e[5] for e in entries if e[0] and e[5]}
        return entries

    def _read_entries(self) -> list[tuple[str | None, int, Path, ServingOptions, str | None, str | None]]:
        if self.source.is_file() and self.source.suffix == ".json":
            return [
                (cfg.name, cfg.version, Path(cfg.model_path),
                 ServingOptions.from_metadata(cfg.metadata, warm_up_data_path=cfg.warm_up_data_path, **self.defaults),
                 cfg.processor, cfg.token)
                for cfg in read_service_configs(self.source)
            ]
        if is_modelarts_folder(self.source):
            return [(None, 1, self.source, ServingOptions(**self.defaults), None, None)]
        entries = []
        for name, version, package in discover(self.source):
            settings = read_model_settings(self.source / name) if name else None
            if settings is None:
                entries.append((name, version, package, ServingOptions(**self.defaults), None, None))
            else:
                options = ServingOptions.from_metadata(
                    settings.metadata, warm_up_data_path=settings.warm_up_data_path, **self.defaults)
                entries.append((name, version, package, options, settings.processor, settings.token))
        return entries

    def configured_token(self, name: str) -> str | None:
        """The token the source set for model ``name`` when it was last read (also while the model
        is unloaded), or None. No file-system work: a request may ask."""
        return self._tokens.get(name)

    def load_all(self) -> None:
        """The initial load (blocking): every model the source names, warmed up.

        A model that fails to warm up is kept, unready, with its reason; one that cannot be read at
        all stops the start with a clear error.
        """
        for name, version, package, options, processor, token in self._entries():
            served = build_served(name, version, package, options, processor, metrics=self.metrics)
            self.repository.add(served, token=token or None)
            self.fingerprints[(served.name, version)] = fingerprint(package)
            if name is None:
                self._names[package] = (self.fingerprints[(served.name, version)], served.name)
            log.info("loaded %s version %s from %s (%s)", served.name, version, package, served.state)

    def _served_name(self, package: Path) -> str:
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
    async def _swap_in(self, key: tuple[str, int], package: Path, options: ServingOptions,
                       processor: str | None, token: str | None) -> ServedModel | None:
        name, version = key
        try:
            new = await asyncio.to_thread(build_served, name, version, package, options, processor,
                                          True, self.metrics)
        except Exception as exc:  # noqa: BLE001 - a broken new version must not take the old one down
            self.failures[key] = f"load failed: {type(exc).__name__}: {exc}"
            log.error("model %s version %s: %s (still serving what was there)", name, version, self.failures[key])
            return None
        if not new.ready:
            self.failures[key] = new.reason
            log.error("model %s version %s: %s (still serving what was there)", name, version, new.reason)
            await asyncio.to_thread(new.close)
            return None
        self.failures.pop(key, None)
        self._failed_marks.pop(key, None)
        gc.freeze()  # the new model's objects live long: keep full collections from rescanning them
        old = self.repository.swap(new, token=token)
        self.fingerprints[key] = fingerprint(package)
        log.info("model %s version %s: now serving %s", name, version, package)
        if old is not None:
            await self.retire(old)
        return new

    async def retire(self, old: ServedModel) -> None:
        """Drain a version that is no longer reachable, then unload it."""
        await old.drain()
        if old.scheduler is not None:
            old.scheduler.close()  # cancels its asyncio tasks: on the loop, not from close()'s thread
        await asyncio.to_thread(old.close)
        log.info("model %s version %s: old instance drained and unloaded", old.name, old.version)

    async def load(self, name: str) -> list[ServedModel]:
        """(Re)load every version of ``name`` the source holds; ServeError if none could be."""
        async with self._lock:
            entries = [e for e in self._entries() if (e[0] or self._served_name(e[2])) == name]
            if not entries:
                raise ServeError("not_found", f"model '{name}' is not in {self.source}")
            self.unloaded.discard(name)
            loaded = []
            for ename, version, package, options, processor, token in entries:
                served = await self._swap_in((name, version), package, options, processor, token or None)
                if served is not None:
                    loaded.append(served)
            if not loaded:
                reasons = "; ".join(self.failures.get((name, e[1]), "") for e in entries)
                raise ServeError("bad_input", f"model '{name}' failed to load: {reasons}")
            return loaded

    async def unload(self, name: str) -> None:
        async with self._lock:
            removed = self.repository.remove(name)
            if not removed:
                raise ServeError("not_found", f"model '{name}' is not loaded")
            for key in [k for k in self.fingerprints if k[0] == name]:
                del self.fingerprints[key]
            self.unloaded.add(name)
        for served in removed:
            await self.retire(served)

    def _scan(self) -> list[tuple[tuple[str, int], Path, ServingOptions, str | None, str | None, str]]:
        """(key, package, options, processor, token, fingerprint) for each entry: file-system work,
        run off the event loop."""
        scanned = []
        for name, version, package, options, processor, token in self._entries():
            try:
                served_name = name or self._served_name(package)
            except Exception as exc:  # noqa: BLE001 - one unreadable package must not stop the others
                log.warning("watch: cannot read %s: %s", package, exc)
                continue
            scanned.append(((served_name, version), package, options, processor, token, fingerprint(package)))
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
            for key, package, options, processor, token, mark in scanned:
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
                served = await self._swap_in(key, package, options, processor, token or None)
                if served is None:
                    delay = min(failed[2] * 2, RETRY_MAX_S) if failed is not None and failed[0] == mark \
                        else RETRY_FIRST_S
                    self._failed_marks[key] = (mark, time.monotonic() + delay, delay)
                    log.info("model %s version %s: retrying in %.0f s (or when its files change)", key[0],
                             key[1], delay)
            for key in [k for k in self._failed_marks if k not in seen]:  # gone: nothing to retry
                del self._failed_marks[key]
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
