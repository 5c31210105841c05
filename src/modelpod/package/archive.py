"""Package archives: deterministic ``.tar.gz`` / ``.zip`` writing and safe extraction.

Extraction refuses any member that could write outside the target folder or create something
other than a regular file or folder: absolute paths, ``..`` components, symlinks and hard links
(whatever they point at, since a package never needs them), device files and FIFOs.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from modelpod.package.manifest import IGNORED_NAMES, PackageError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
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
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PackageError(f"{archive}: refusing member '{name}': absolute path")
    if ".." in pure.parts:
        raise PackageError(f"{archive}: refusing member '{name}': '..' leads outside the package")
    return pure


def extract_archive(archive: Path, target: Path) -> Path:
    """Safely extract ``archive`` into the empty folder ``target``; return the package root.

    If the archive holds a single top-level folder with the manifest in it, that folder is the root.
    """
    target.mkdir(parents=True, exist_ok=True)
    name = str(archive).lower()
    try:
        if name.endswith(".zip"):
            _extract_zip(archive, target)
        elif name.endswith((".tar.gz", ".tgz")):
            _extract_tar(archive, target)
        else:
            raise PackageError(f"{archive}: unknown archive type; use .tar.gz, .tgz or .zip")
    except (
        tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, zlib.error, OSError
    ) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise PackageError(f"{archive}: not a readable archive ({exc})") from None
    except PackageError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    entries = [p for p in target.iterdir()]
    if len(entries) == 1 and entries[0].is_dir() and not (target / "modelpod.json").exists():
        return entries[0]
    return target


def _extract_tar(archive: Path, target: Path) -> None:
    with open(archive, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if gzipped:  # read the whole stream once so a damaged archive fails its CRC check up front
        with gzip.open(archive, "rb") as gz:
            while gz.read(1 << 20):
                pass
    with tarfile.open(archive, mode="r:*") as tf:
        members = tf.getmembers()
        for member in members:  # check everything before writing anything
            _safe_name(archive, member.name)
            if member.issym() or member.islnk():
                raise PackageError(
                    f"{archive}: refusing member '{member.name}': links are not allowed in a "
                    f"package (it points at '{member.linkname}')"
                )
            if not (member.isfile() or member.isdir()):
                raise PackageError(
                    f"{archive}: refusing member '{member.name}': device files, FIFOs and other "
                    "special files are not allowed in a package"
                )
        for member in members:
            dest = target / _safe_name(archive, member.name)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            assert src is not None
            with src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _safe_name(archive, info.filename)
            # unix file type bits; many writers (Python's zipfile among them) leave them 0
            kind = stat.S_IFMT((info.external_attr >> 16) & 0xFFFF)
            if kind and stat.S_ISLNK(kind):
                raise PackageError(
                    f"{archive}: refusing member '{info.filename}': links are not allowed in a package"
                )
            if kind and not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
                raise PackageError(
                    f"{archive}: refusing member '{info.filename}': device files, FIFOs and other "
                    "special files are not allowed in a package"
                )
        for info in infos:
            dest = target / _safe_name(archive, info.filename)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
