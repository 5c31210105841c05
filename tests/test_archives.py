"""Package archives: .tar.gz / .tgz / .zip load and infer; extraction refuses anything unsafe."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelpod
from addition import pack_addition
from modelpod import PackageError
from modelpod.package.archive import extract_archive, is_archive, write_archive

pytestmark = pytest.mark.timeout(60)

X = np.arange(5, dtype=np.float32)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Point tempfile at a folder of our own so we can see what extraction leaves behind."""
    folder = tmp_path / "systmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory) -> Path:
    return pack_addition(tmp_path_factory.mktemp("pkgdir") / "addition")


def package_members(root: Path) -> list[tuple[str, bytes | None]]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out.append((rel, None if path.is_dir() else path.read_bytes()))
    return out


def file_info(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def write_tar(path: Path, root: Path | None, extra: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A .tar.gz of the package at ``root`` (if given) followed by the ``extra`` crafted members."""
    with tarfile.open(path, "w:gz") as tf:
        for rel, data in package_members(root) if root else []:
            if data is None:
                info = tarfile.TarInfo(rel)
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                tf.addfile(*file_info(rel, data)[:1], io.BytesIO(data))
        for info, data in extra:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def write_zip(path: Path, root: Path | None, extra: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in package_members(root) if root else []:
            if data is not None:
                zf.writestr(rel, data)
        for info, data in extra:
            zf.writestr(info, data)
    return path


def tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --------------------------------------------------------------------------------------------
# good archives


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".zip"])
def test_archives_load_and_infer(tmp_path, private_tmp, suffix):
    path = pack_addition(tmp_path / f"addition{suffix}")
    assert path.is_file() and is_archive(path)
    model = modelpod.load(path)
    try:
        assert model.root.is_relative_to(private_tmp)
        np.testing.assert_array_equal(model.infer({"x": X, "y": X})["out"], X * 2)
        assert tree(private_tmp) != []
    finally:
        model.close()
    assert tree(private_tmp) == []  # the extracted copy goes away with the model


def test_uppercase_suffix_is_an_archive(tmp_path, package_dir):
    target = tmp_path / "PKG.TAR.GZ"
    write_archive(package_dir, target)
    with modelpod.load(target) as model:
        np.testing.assert_array_equal(model.infer({"x": X, "y": X})["out"], X * 2)


def test_archive_with_one_top_level_folder(tmp_path, package_dir):
    """`tar czf pkg.tar.gz addition/` style archives: the folder inside is the package."""
    path = tmp_path / "wrapped.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(package_dir, arcname="addition")
    with modelpod.load(path) as model:
        assert model.root.name == "addition"
        np.testing.assert_array_equal(model.infer({"x": X, "y": X})["out"], X * 2)
    zpath = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for rel, data in package_members(package_dir):
            if data is not None:
                zf.writestr(f"addition/{rel}", data)
    with modelpod.load(zpath) as model:
        np.testing.assert_array_equal(model.infer({"x": X, "y": X})["out"], X * 2)


def test_failed_load_of_an_archive_cleans_up(tmp_path, private_tmp, package_dir):
    path = write_tar(tmp_path / "nomanifest.tar.gz", None, [file_info("code/main.py", b"x = 1\n")])
    with pytest.raises(PackageError, match="modelpod.json is missing"):
        modelpod.load(path)
    assert tree(private_tmp) == []


def test_write_archive_refuses_symlinks_and_unknown_suffix(tmp_path, package_dir):
    folder = tmp_path / "withlink"
    folder.mkdir()
    (folder / "real.txt").write_text("x")
    (folder / "link.txt").symlink_to(folder / "real.txt")
    with pytest.raises(PackageError, match="packages cannot hold symlinks"):
        write_archive(folder, tmp_path / "out.tar.gz")
    with pytest.raises(PackageError, match="archive name must end in one of"):
        write_archive(package_dir, tmp_path / "out.rar")
    assert sorted(os.listdir(tmp_path)) == ["withlink"]


def test_unknown_archive_type_is_refused(tmp_path):
    with pytest.raises(PackageError, match="unknown archive type"):
        extract_archive(tmp_path / "x.rar", tmp_path / "out")


# --------------------------------------------------------------------------------------------
# hostile tar members


def _sym(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name: str, kind) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


HOSTILE_TAR = {
    "absolute": ([file_info("/tmp/modelpod-evil-abs.txt", b"evil")], "absolute path"),
    "dotdot": ([file_info("../evil.txt", b"evil")], "'..' leads outside the package"),
    "nested-dotdot": ([file_info("code/../../evil.txt", b"evil")], "'..' leads outside"),
    "symlink-out": ([_sym("code/link", "/etc/passwd")], "links are not allowed in a package (it points at '/etc/passwd')"),
    "symlink-up": ([_sym("code/up", "../../..")], "links are not allowed"),
    "symlink-inside": ([_sym("code/alias.py", "main.py")], "links are not allowed"),
    "hardlink": ([_sym("code/hard", "/etc/passwd", tarfile.LNKTYPE)], "links are not allowed"),
    "chardev": ([_special("dev/null", tarfile.CHRTYPE)], "device files, FIFOs and other special files"),
    "blockdev": ([_special("dev/sda", tarfile.BLKTYPE)], "device files, FIFOs"),
    "fifo": ([_special("pipe", tarfile.FIFOTYPE)], "device files, FIFOs"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TAR))
def test_tar_extraction_refuses_hostile_members(tmp_path, private_tmp, package_dir, case):
    extra, match = HOSTILE_TAR[case]
    work = tmp_path / "work"
    work.mkdir()
    archive = write_tar(work / "hostile.tar.gz", package_dir, extra)
    with pytest.raises(PackageError) as info:
        modelpod.load(archive)
    msg = str(info.value)
    assert str(archive) in msg and "refusing member" in msg and match in msg
    assert tree(private_tmp) == []
    assert os.listdir(work) == ["hostile.tar.gz"]
    assert not Path("/tmp/modelpod-evil-abs.txt").exists()
    # extracting directly: the target is removed again and nothing appears beside it
    with pytest.raises(PackageError, match="refusing member"):
        extract_archive(archive, work / "out" / "pkg")
    assert tree(work / "out") == []
    assert sorted(os.listdir(work)) == ["hostile.tar.gz", "out"]


def test_tar_checks_every_member_before_writing_any(tmp_path, package_dir):
    """The hostile member comes last: the good ones before it must not be left on disk."""
    archive = write_tar(tmp_path / "late.tar.gz", package_dir, [file_info("../late.txt", b"x")])
    target = tmp_path / "out"
    with pytest.raises(PackageError, match="late.txt"):
        extract_archive(archive, target)
    assert not target.exists()
    assert sorted(os.listdir(tmp_path)) == ["late.tar.gz"]


# --------------------------------------------------------------------------------------------
# hostile zip entries


def _zip_entry(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.external_attr = (mode & 0xFFFF) << 16
        info.create_system = 3  # unix
    return info


HOSTILE_ZIP = {
    "absolute": ([(_zip_entry("/tmp/modelpod-evil-abs.txt"), b"evil")], "absolute path"),
    "windows-absolute": ([(_zip_entry("C:/evil.txt"), b"evil")], "absolute path"),
    "dotdot": ([(_zip_entry("../evil.txt"), b"evil")], "'..' leads outside"),
    "backslash-dotdot": ([(_zip_entry("code\\..\\..\\evil.txt"), b"evil")], "'..' leads outside"),
    "symlink": ([(_zip_entry("code/link", stat.S_IFLNK | 0o777), b"/etc/passwd")], "links are not allowed"),
    "fifo": ([(_zip_entry("pipe", stat.S_IFIFO | 0o644), b"")], "device files, FIFOs"),
    "chardev": ([(_zip_entry("dev/null", stat.S_IFCHR | 0o644), b"")], "device files, FIFOs"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ZIP))
def test_zip_extraction_refuses_hostile_entries(tmp_path, private_tmp, package_dir, case):
    extra, match = HOSTILE_ZIP[case]
    work = tmp_path / "work"
    work.mkdir()
    archive = write_zip(work / "hostile.zip", package_dir, extra)
    with pytest.raises(PackageError) as info:
        modelpod.load(archive)
    msg = str(info.value)
    assert str(archive) in msg and "refusing member" in msg and match in msg
    assert tree(private_tmp) == []
    assert os.listdir(work) == ["hostile.zip"]
    assert not Path("/tmp/modelpod-evil-abs.txt").exists()


# --------------------------------------------------------------------------------------------
# damaged archives


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
@pytest.mark.parametrize("damage", ["truncated-half", "truncated-tail", "flipped-bytes", "garbage", "empty"])
def test_damaged_archives_are_package_errors(tmp_path, private_tmp, package_dir, suffix, damage):
    good = tmp_path / f"good{suffix}"
    write_archive(package_dir, good)
    data = good.read_bytes()
    if damage == "truncated-half":
        data = data[: len(data) // 2]
    elif damage == "truncated-tail":
        data = data[:-12]
    elif damage == "flipped-bytes":
        buf = bytearray(data)
        for i in range(len(buf) // 3, len(buf) // 3 + 64):
            buf[i] ^= 0xFF
        data = bytes(buf)
    elif damage == "garbage":
        data = os.urandom(64) + b"\x00" * 512
    else:
        data = b""
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(data)
    with pytest.raises(PackageError) as info:
        modelpod.load(bad)
    assert str(bad) in str(info.value) or "modelpod.json" in str(info.value)
    assert tree(private_tmp) == []
    assert sorted(os.listdir(tmp_path)) == sorted([good.name, bad.name, "systmp"])
