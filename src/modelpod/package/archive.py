"""Package archives: deterministic ``.tar.gz`` / ``.zip`` writing and safe extraction.

Extraction refuses any member that could write outside the target folder or create something
other than a regular file or folder: absolute paths, ``..`` components, symlinks and hard links
(whatever they point at, since a package never needs them), device files and FIFOs. It reads the
manifest from the archive first and refuses, before writing anything, an archive without a valid
manifest, any file the manifest does not list, and archives whose declared size or file count is
over the limits (``MODELPOD_MAX_PACKAGE_MB``, ``MODELPOD_MAX_PACKAGE_FILES``) or whose size is over
the free disk space; while copying, no member may write more than it declared.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from modelpod.errors import PackageError
from modelpod.package.layout import IGNORED_NAMES, MANIFEST_NAME
from modelpod.package.manifest import Manifest, parse_manifest

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
#: Environment variables and defaults for the extraction limits (see :func:`package_limits`).
MAX_PACKAGE_MB_ENV = "MODELPOD_MAX_PACKAGE_MB"
MAX_PACKAGE_FILES_ENV = "MODELPOD_MAX_PACKAGE_FILES"
MAX_PACKAGE_RATIO_ENV = "MODELPOD_MAX_PACKAGE_RATIO"
DEFAULT_MAX_PACKAGE_RATIO = 100.0
#: archives declaring less than this are not held to the compression-ratio limit
RATIO_FLOOR = 256 << 20
DEFAULT_MAX_PACKAGE_MB = 65536
DEFAULT_MAX_PACKAGE_FILES = 100_000
#: A manifest member larger than this is refused before it is read.
MAX_MANIFEST_BYTES = 64 << 20
_CHUNK = 1 << 20
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def is_archive(path: str | os.PathLike[str]) -> bool:
    name = str(path).lower()
    return name.endswith(ARCHIVE_SUFFIXES)


def _members(root: Path) -> list[tuple[str, Path]]:
    """(archive name, path) for every folder and file under root, in a stable order."""
    out = []
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root)
        if any(part in IGNORED_NAMES for part in rel.parts) or path.suffix == ".pyc":
            continue
        if path.is_symlink():
            raise PackageError(f"{path}: packages cannot hold symlinks; copy the file instead")
        out.append((rel.as_posix(), path))
    return out


def write_archive(root: Path, target: Path) -> None:
    """Write the folder ``root`` as ``target`` (.tar.gz/.tgz/.zip); same input, same bytes."""
    name = str(target).lower()
    tmp = target.with_name(target.name + ".partial")
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for arcname, path in _members(root):
                    is_dir = path.is_dir()
                    info = zipfile.ZipInfo(arcname + ("/" if is_dir else ""), _ZIP_EPOCH)
                    info.external_attr = ((0o40755 if is_dir else 0o100644) & 0xFFFF) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, b"" if is_dir else path.read_bytes())
        elif name.endswith((".tar.gz", ".tgz")):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for arcname, path in _members(root):
                    info = tarfile.TarInfo(arcname)
                    info.mtime = 0
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if path.is_dir():
                        info.type = tarfile.DIRTYPE
                        info.mode = 0o755
                        tf.addfile(info)
                    else:
                        info.mode = 0o644
                        info.size = path.stat().st_size
                        with open(path, "rb") as fh:
                            tf.addfile(info, fh)
            with open(tmp, "wb") as raw, gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, mtime=0
            ) as gz:
                gz.write(buf.getvalue())
        else:
            raise PackageError(f"{target}: archive name must end in one of {ARCHIVE_SUFFIXES}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _safe_name(archive: Path, name: str) -> PurePosixPath:
    """Check one member name; return it as a relative path or raise PackageError."""
    if "\0" in name:
        raise PackageError(f"{archive}: refusing member {name!r}: NUL character in its name")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PackageError(f"{archive}: refusing member '{name}': absolute path")
    if ".." in pure.parts:
        raise PackageError(f"{archive}: refusing member '{name}': '..' leads outside the package")
    return pure


def package_limits(max_bytes: int | None = None, max_files: int | None = None) -> tuple[int, int]:
    """The extraction limits in force: (bytes, files); ``None`` reads the environment/defaults.

    ``MODELPOD_MAX_PACKAGE_MB`` (default 65536, i.e. 64 GiB) caps the total uncompressed size an
    archive declares; ``MODELPOD_MAX_PACKAGE_FILES`` (default 100000) caps its number of files (and,
    separately, of folders).
    """
    if max_bytes is None:
        max_bytes = int(_env_limit(MAX_PACKAGE_MB_ENV, DEFAULT_MAX_PACKAGE_MB, float) * (1 << 20))
    if max_files is None:
        max_files = int(_env_limit(MAX_PACKAGE_FILES_ENV, DEFAULT_MAX_PACKAGE_FILES, int))
    if max_bytes < 0 or max_files < 0:
        raise PackageError(
            f"archive limits must not be negative (max_bytes={max_bytes}, max_files={max_files})"
        )
    return max_bytes, max_files


def _env_limit(name: str, default: float, kind: type) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise PackageError(f"{name}={text!r} is not a {'whole ' if kind is int else ''}number") from None
    if not math.isfinite(value) or value < 0:
        raise PackageError(f"{name}={text!r} must be a finite number >= 0")
    return value


def _mb(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MB"


@dataclass(frozen=True)
class _Member:
    name: str  #: as stored in the archive (for messages)
    rel: PurePosixPath  #: checked relative path below the extraction target
    is_dir: bool
    size: int  #: declared uncompressed size (0 for folders)
    info: Any  #: the TarInfo / ZipInfo


@dataclass(frozen=True)
class _Plan:
    """What an archive holds, checked before anything is written."""

    members: list[_Member]
    prefix: PurePosixPath  #: the package root inside the archive ('.' or its one top-level folder)
    manifest_member: _Member
    manifest_bytes: bytes
    manifest: Manifest
    total_bytes: int

    def package_files(self) -> frozenset[str]:
        """The file members as POSIX paths relative to the package root."""
        n = len(self.prefix.parts)
        return frozenset(PurePosixPath(*m.rel.parts[n:]).as_posix() for m in self.members if not m.is_dir)


class _Reader:
    """What both archive kinds share: ``with`` support and the checks every member passes."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self._counts = [0, 0]  # files, folders

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def _member(self, name: str, is_dir: bool, size: int, info: Any, max_files: int, *,
                link: str | None = None, special: bool = False) -> _Member:
        """One member, refused if its name, kind or the running count is not allowed."""
        archive = self.archive
        rel = _safe_name(archive, name)
        if link is not None:
            raise PackageError(
                f"{archive}: refusing member '{name}': links are not allowed in a package"
                + (f" (it points at '{link}')" if link else "")
            )
        if special:
            raise PackageError(
                f"{archive}: refusing member '{name}': device files, FIFOs and other "
                "special files are not allowed in a package"
            )
        member = _Member(name, rel, is_dir, 0 if is_dir else size, info)
        _count(archive, self._counts, is_dir, max_files)
        return member


class _TarReader(_Reader):
    def __init__(self, archive: Path) -> None:
        super().__init__(archive)
        self.tf = tarfile.open(archive, mode="r:*")

    def close(self) -> None:
        self.tf.close()

    def members(self, max_files: int) -> list[_Member]:
        return [  # lazily, so a stream of millions of headers stops at the cap
            self._member(m.name, m.isdir(), m.size, m, max_files,
                         link=m.linkname if m.issym() or m.islnk() else None,
                         special=not (m.isfile() or m.isdir()))
            for m in self.tf
        ]

    def open(self, member: _Member) -> IO[bytes]:
        src = self.tf.extractfile(member.info)
        assert src is not None
        return src


class _ZipReader(_Reader):
    def __init__(self, archive: Path) -> None:
        super().__init__(archive)
        self.zf = zipfile.ZipFile(archive)

    def close(self) -> None:
        self.zf.close()

    def members(self, max_files: int) -> list[_Member]:
        out = []
        for info in self.zf.infolist():
            # unix file type bits; many writers (Python's zipfile among them) leave them 0
            kind = stat.S_IFMT((info.external_attr >> 16) & 0xFFFF)
            out.append(self._member(info.filename, info.is_dir(), info.file_size, info, max_files,
                                    link="" if kind and stat.S_ISLNK(kind) else None,
                                    special=bool(kind) and not (stat.S_ISREG(kind) or stat.S_ISDIR(kind))))
        return out

    def open(self, member: _Member) -> IO[bytes]:
        return self.zf.open(member.info)


def _count(archive: Path, counts: list[int], is_dir: bool, max_files: int) -> None:
    counts[is_dir] += 1
    if counts[is_dir] > max_files:
        what = "folders" if is_dir else "files"
        raise PackageError(
            f"{archive}: refusing the archive: it holds more than {max_files} {what} (the limit; set "
            f"{MAX_PACKAGE_FILES_ENV} or max_files= to allow more)"
        )


def _reader(archive: Path) -> _Reader:
    name = str(archive).lower()
    if name.endswith(".zip"):
        return _ZipReader(archive)
    if name.endswith((".tar.gz", ".tgz")):
        return _TarReader(archive)
    raise PackageError(f"{archive}: unknown archive type; use .tar.gz, .tgz or .zip")


def _read_at_most(src: IO[bytes], limit: int) -> bytes:
    chunks, total = [], 0
    while total <= limit:
        chunk = src.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _plan(archive: Path, reader: _Reader, max_bytes: int, max_files: int) -> _Plan:
    """List and check every member, then read and check the manifest; write nothing."""
    members = reader.members(max_files)
    files: dict[str, _Member] = {}
    for m in members:
        if m.is_dir:
            continue
        key = m.rel.as_posix()
        if not m.rel.parts:
            raise PackageError(f"{archive}: refusing member '{m.name}': a file needs a name")
        if key in files:
            raise PackageError(f"{archive}: refusing member '{m.name}': it appears more than once")
        files[key] = m
    # the manifest sits at the top, or in the archive's one top-level folder
    prefix = PurePosixPath(".")
    if MANIFEST_NAME not in files:
        tops = {m.rel.parts[0] for m in members if m.rel.parts}
        top = next(iter(tops)) if len(tops) == 1 else None
        if top is None or top in files or f"{top}/{MANIFEST_NAME}" not in files:
            raise PackageError(
                f"{archive} is not a modelpod package: {MANIFEST_NAME} is missing (at the top or in "
                "its one top-level folder); refusing to extract it"
            )
        prefix = PurePosixPath(top)
    manifest_member = files[(prefix / MANIFEST_NAME).as_posix()]
    if manifest_member.size > MAX_MANIFEST_BYTES:
        raise PackageError(
            f"{archive}: refusing member '{manifest_member.name}': a manifest of "
            f"{_mb(manifest_member.size)} is more than the {_mb(MAX_MANIFEST_BYTES)} allowed"
        )
    with reader.open(manifest_member) as src:
        data = _read_at_most(src, manifest_member.size)
    if len(data) > manifest_member.size:
        raise PackageError(
            f"{archive}: refusing member '{manifest_member.name}': it holds more than the "
            f"{manifest_member.size} bytes its header declares"
        )
    manifest = parse_manifest(data, f"{archive} ({manifest_member.name})")
    n = len(prefix.parts)
    for key, m in files.items():
        rel = PurePosixPath(*m.rel.parts[n:]).as_posix()
        if m is not manifest_member and rel not in manifest.files:
            raise PackageError(
                f"{archive}: refusing member '{m.name}': it is not listed in the manifest's 'files' "
                "(an archive may hold only the manifest and the payload files it lists)"
            )
    total = sum(m.size for m in files.values())
    if total > max_bytes:
        raise PackageError(
            f"{archive}: refusing the archive: its files declare {_mb(total)} uncompressed, more than "
            f"the limit of {_mb(max_bytes)} (set {MAX_PACKAGE_MB_ENV} or max_bytes= to allow more)"
        )
    return _Plan(members, prefix, manifest_member, data, manifest, total)


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


_READ_ERRORS = (
    tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, zlib.error, OSError,
    RuntimeError, NotImplementedError,  # zip: encrypted member, unsupported compression
)


def read_archive_manifest(
    archive: Path, *, max_bytes: int | None = None, max_files: int | None = None
) -> tuple[Manifest, frozenset[str]]:
    """Check ``archive`` as :func:`extract_archive` would and return its manifest and the names of
    its files (relative to the package root), reading only the manifest member and writing nothing.

    Payload hashes are not checked (that needs the files); the limits apply as for extraction,
    except for the free disk space.
    """
    archive = Path(archive)
    max_bytes, max_files = package_limits(max_bytes, max_files)
    try:
        with _reader(archive) as reader:
            plan = _plan(archive, reader, max_bytes, max_files)
    except _READ_ERRORS as exc:
        raise PackageError(f"{archive}: not a readable archive ({exc})") from None
    return plan.manifest, plan.package_files()


def _check_ratio(archive: Path, declared: int) -> None:
    """Refuse a bomb that is honest about its sizes: past ``RATIO_FLOOR`` bytes, the declared size
    may be at most ``MODELPOD_MAX_PACKAGE_RATIO`` (default 100) times the archive's. Model weights
    compress little; 1 GiB of zeros in a 1 MB archive would otherwise be written in full before its
    hash is checked."""
    ratio = _env_limit(MAX_PACKAGE_RATIO_ENV, DEFAULT_MAX_PACKAGE_RATIO, float)
    size = max(archive.stat().st_size, 1)
    if declared > RATIO_FLOOR and declared > ratio * size:
        raise PackageError(
            f"{archive}: refusing the archive: its files declare {_mb(declared)} uncompressed, "
            f"{declared / size:.0f} times its size (the limit is {ratio:g} for packages over "
            f"{_mb(RATIO_FLOOR)}; set {MAX_PACKAGE_RATIO_ENV} to allow more)"
        )


def extract_archive(
    archive: Path, target: Path, *, max_bytes: int | None = None, max_files: int | None = None
) -> Path:
    """Safely extract ``archive`` into the empty folder ``target``; return the package root.

    If the archive holds a single top-level folder with the manifest in it, that folder is the root.
    Before anything is written the manifest is read from the archive and checked; every file must be
    the manifest or one it lists, and the declared sizes must fit ``max_bytes`` in all (default
    ``MODELPOD_MAX_PACKAGE_MB``, 64 GiB) and the free space of ``target``'s file system; the number
    of files (and of folders) must not exceed ``max_files`` (default ``MODELPOD_MAX_PACKAGE_FILES``,
    100000). While copying, no member may produce more bytes than it declared. On any refusal
    ``target`` is removed again.
    """
    archive, target = Path(archive), Path(target)
    max_bytes, max_files = package_limits(max_bytes, max_files)
    try:
        with _reader(archive) as reader:
            plan = _plan(archive, reader, max_bytes, max_files)
            free = shutil.disk_usage(_existing_parent(target)).free
            if plan.total_bytes > free:
                raise PackageError(
                    f"{archive}: refusing the archive: its files declare {_mb(plan.total_bytes)} "
                    f"uncompressed, more than the {_mb(free)} free where it would be extracted ({target})"
                )
            _check_ratio(archive, plan.total_bytes)
            if isinstance(reader, _TarReader):
                _check_gzip_stream(archive)
            target.mkdir(parents=True, exist_ok=True)
            _write(archive, reader, plan, target, max_bytes)
    except _READ_ERRORS as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise PackageError(f"{archive}: not a readable archive ({exc})") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target / plan.prefix


def _check_gzip_stream(archive: Path) -> None:
    """Read a gzip stream once so a damaged archive fails its CRC check before anything is written."""
    with open(archive, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if gzipped:
        with gzip.open(archive, "rb") as gz:
            while gz.read(_CHUNK):
                pass


def _write(archive: Path, reader: _Reader, plan: _Plan, target: Path, max_bytes: int) -> None:
    budget = max_bytes
    for m in plan.members:
        dest = target / m.rel
        if m.is_dir:
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if m is plan.manifest_member:  # write the very bytes that were checked
            dest.write_bytes(plan.manifest_bytes)
            budget -= len(plan.manifest_bytes)
            continue
        written = 0
        with reader.open(m) as src, open(dest, "wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > m.size:
                    raise PackageError(
                        f"{archive}: refusing member '{m.name}': it holds more than the {m.size} "
                        "bytes its header declares"
                    )
                if written > budget:
                    raise PackageError(
                        f"{archive}: refusing the archive: it holds more than the limit of {_mb(max_bytes)} "
                        f"(set {MAX_PACKAGE_MB_ENV} or max_bytes= to allow more)"
                    )
                out.write(chunk)
        budget -= written
