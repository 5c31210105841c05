"""Content-addressed Python environments under the modelpod home, built with uv.

An environment is keyed by the hash of what it is made from (a lock's text, or unlocked
requirements) with the Python version and platform it is for; ``<home>/envs/<key>/`` is a venv
(no system site-packages) plus ``modelpod-env.json``. It is built in ``<home>/envs/.tmp-<key>-*``
and renamed into place only once complete, under an exclusive ``flock`` on ``<key>.lock`` so
concurrent servers build it once; a half-built folder is never used and is removed by the next
build or by ``modelpod env prune``. Whoever uses an environment holds a shared lock on it, so
prune leaves it alone. A built environment needs no network: the next start finds it by its key.

The home is ``$MODELPOD_HOME``, else ``$XDG_CACHE_HOME/modelpod`` (``~/.cache/modelpod``;
``~/Library/Caches/modelpod`` on macOS).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpod.envs.requirements import (
    compile_lock,
    platform_tag,
    python_version,
    read_lock,
)
from modelpod.envs.uvtool import run_uv
from modelpod.errors import EnvBuildError
from modelpod.package.layout import LOCK_FILE

#: bumped when the layout of an environment changes (old ones are then simply not found)
ENV_FORMAT = 1
INFO_FILE = "modelpod-env.json"
LOCK_NAME = LOCK_FILE  # the lock an environment was built from is kept in it too
Progress = Callable[[str], None]


def modelpod_home() -> Path:
    """``$MODELPOD_HOME``, else modelpod's folder in the user's cache directory."""
    configured = os.environ.get("MODELPOD_HOME")
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "modelpod"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelpod"


@dataclass(frozen=True)
class EnvSource:
    """What an environment is made from: a lock's text, or requirements to lock when it is built."""

    lock: str | None = None
    requirements: tuple[str, ...] = ()
    python: str = field(default_factory=python_version)
    platform: str = field(default_factory=platform_tag)
    #: who wants it (a package path), for messages and ``modelpod env list``
    label: str = ""
    #: layered over this server's site-packages (its own packages first): ModelArts' install flow
    layered: bool = False

    @property
    def key(self) -> str:
        made_from = self.lock if self.lock is not None else "unlocked\n" + "\n".join(self.requirements)
        base = f"layered over {' '.join(server_site_packages())}\n" if self.layered else ""
        text = f"modelpod-env {ENV_FORMAT}\npython {self.python}\nplatform {self.platform}\n{base}{made_from}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class Environment:
    """A built environment in use: ``python`` is its interpreter. ``release()`` when done."""

    def __init__(self, path: Path, info: dict[str, Any], lock_fd: int) -> None:
        self.path = path
        self.info = info
        self.key: str = info["key"]
        self._fd: int | None = lock_fd

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def lock_fd(self) -> int | None:
        """The descriptor holding the shared lock (None once released): a process that execs a
        worker in this environment keeps it open across the exec, so prune sees it in use."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()


@dataclass(frozen=True)
class EnvRecord:
    """One environment as ``modelpod env list`` shows it."""

    key: str
    path: Path
    python: str
    platform: str
    packages: dict[str, str]
    used_by: list[str]
    created: float
    size: int
    unshared: int
    in_use: bool


class EnvStore:
    """The environments under one modelpod home."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home) if home is not None else modelpod_home()
        self.root = self.home / "envs"

    # -- building -------------------------------------------------------------------------------
    def ensure(self, source: EnvSource, used_by: str | None = None, progress: Progress | None = None) -> Environment:
        """The environment for ``source``, built first if it is not there; held (shared) until released."""
        self.root.mkdir(parents=True, exist_ok=True)
        key = source.key
        final = self.root / key
        fd = os.open(self.root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                if (final / INFO_FILE).is_file():
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    if (final / INFO_FILE).is_file():  # not pruned while we waited
                        return self._held(final, fd, used_by)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                if not _try_lock(fd, fcntl.LOCK_EX):
                    if progress:
                        progress(f"waiting for another process building environment {key}")
                    fcntl.flock(fd, fcntl.LOCK_EX)
                if not (final / INFO_FILE).is_file():
                    try:
                        self._build(source, final, progress)
                    except OSError as exc:  # the disk, permissions...: still this model's failure, not the server's
                        raise EnvBuildError(f"building the environment for {source.label or key} failed: {exc}") from None
                fcntl.flock(fd, fcntl.LOCK_SH)  # held while in use: prune leaves it alone
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _held(final: Path, fd: int, used_by: str | None) -> Environment:
        if used_by is not None:  # one file per user: no lock needed to record it
            users = final / "users"
            users.mkdir(exist_ok=True)
            mark = users / hashlib.sha256(used_by.encode()).hexdigest()[:16]
            if not mark.is_file():
                mark.write_text(used_by)
        return Environment(final, _read_info(final), fd)

    def _build(self, source: EnvSource, final: Path, progress: Progress | None) -> None:
        key = final.name
        for leftover in [*self.root.glob(f".tmp-{key}-*"), final]:  # what a dead build left: ours to clear
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
        tmp = self.root / f".tmp-{key}-{secrets.token_hex(4)}"
        started = time.monotonic()
        what = f"building the environment for {source.label or key}"
        try:
            lock = source.lock if source.lock is not None else compile_lock(
                source.requirements, progress, with_worker=not source.layered)
            info = read_lock(lock)
            if info.python != python_version():
                interpreter = info.python  # uv finds (or fetches) that Python
            else:
                interpreter = sys.executable
            if progress:
                progress(f"creating environment {key} (python {info.python})")
            run_uv(["venv", str(tmp), "--python", interpreter, "--relocatable", "--no-project", "--quiet"],
                   what=what)
            (tmp / LOCK_NAME).write_text(lock)
            if source.layered:
                _layer_over_server(tmp)
            if progress:
                progress(f"installing {len(info.pins)} package(s)")
            hashed = "--hash=" in lock
            said = "" if not info.pins else run_uv(["pip", "sync", str(tmp / LOCK_NAME), "--python", str(tmp / "bin" / "python"),
                           *(["--require-hashes"] if hashed else []), "--no-progress"], what=what)
            _write_info(tmp, {
                "format": ENV_FORMAT, "key": key, "python": info.python, "platform": info.platform,
                "packages": info.pins, "created": time.time(),
                "build_seconds": round(time.monotonic() - started, 3),
                "made_from": "lock" if source.lock is not None else "requirements",
                "layered_over": server_site_packages() if source.layered else [],
            })
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if progress:
            last = [line for line in said.splitlines() if line.strip()]
            progress(f"built environment {key} in {time.monotonic() - started:.1f} s"
                     + (f" ({last[-1].strip()})" if last else ""))

    # -- listing and pruning --------------------------------------------------------------------
    def list(self) -> list[EnvRecord]:
        """Every complete environment, oldest first."""
        records = []
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if path.name.startswith(".") or not (path / INFO_FILE).is_file():
                continue
            info = _read_info(path)
            size, unshared = _disk_usage(path)
            records.append(EnvRecord(path.name, path, info.get("python", "?"), info.get("platform", "?"),
                                     dict(info.get("packages", {})), _users(path),
                                     float(info.get("created", 0)), size, unshared, self._in_use(path.name)))
        return sorted(records, key=lambda r: r.created)

    def prune(self, everything: bool = False) -> list[tuple[str, str]]:
        """Remove half-built folders, and environments no recorded package exists for any more
        (``everything``: every environment not in use). Returns (key, why) for each removed."""
        removed = []
        if not self.root.is_dir():
            return removed
        for path in sorted(self.root.iterdir()):
            if path.suffix == ".lock" or not path.is_dir():
                continue
            half = path.name.startswith(".tmp-")
            key = path.name.split("-")[1] if half else path.name
            if not half:
                if not (path / INFO_FILE).is_file():
                    why = "incomplete"
                elif everything:
                    why = "removed (--all)"
                else:
                    users = _users(path)
                    if any(Path(user).exists() for user in users):
                        continue
                    why = "no package that used it is left"
            else:
                why = "half-built"
            fd = os.open(self.root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _try_lock(fd, fcntl.LOCK_EX):
                    continue  # in use, or being built
                shutil.rmtree(path, ignore_errors=True)  # (the .lock file stays: others may hold it open)
                removed.append((path.name, why))
            finally:
                os.close(fd)
        return removed

    def _in_use(self, key: str) -> bool:
        try:
            fd = os.open(self.root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        try:
            if _try_lock(fd, fcntl.LOCK_EX):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
            return True
        finally:
            os.close(fd)


def server_site_packages() -> list[str]:
    """This interpreter's site-packages folders (what a layered environment falls back to)."""
    import site
    import sysconfig

    found = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(str(Path(p).resolve()) for p in found if Path(p).is_dir()))


def _layer_over_server(env: Path) -> None:
    """Make the environment fall back to the server's site-packages (after its own), .pth files included."""
    purelibs = list(env.glob("lib/python*/site-packages"))
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in server_site_packages())
    for purelib in purelibs:
        (purelib / "zzz_modelpod_layered.pth").write_text(lines)


def _users(path: Path) -> list[str]:
    """The packages recorded as using the environment at ``path``."""
    try:
        return sorted(mark.read_text() for mark in (path / "users").iterdir())
    except OSError:
        return []


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise EnvBuildError(f"{path / INFO_FILE} is unreadable ({exc}); remove the folder or run modelpod env prune")
    return info if isinstance(info, dict) else {}


def _write_info(path: Path, info: dict[str, Any]) -> None:
    tmp = path / f".{INFO_FILE}.{secrets.token_hex(3)}"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path / INFO_FILE)


def _disk_usage(path: Path) -> tuple[int, int]:
    """(bytes of the files, counting each inode once; bytes only this folder holds: files with one link)."""
    seen: set[tuple[int, int]] = set()
    size = unshared = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            size += st.st_size
            if st.st_nlink == 1:
                unshared += st.st_size
    return size, unshared

