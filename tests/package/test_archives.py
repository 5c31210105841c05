"""Package archives: .tar.gz / .tgz / .zip load and infer; extraction refuses anything unsafe."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelpod
from tests.helpers.addition import INPUT_SPEC, OUTPUT_SPEC, pack_addition
from modelpod import PackageError
from modelpod.package import archive as archive_module
from modelpod.package.archive import extract_archive, is_archive, read_archive_manifest, write_archive
from modelpod.package.layout import MANIFEST_NAME
from modelpod.package.manifest import Manifest
from modelpod.packers.sources import describe

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


HOSTILE = {**{("tar.gz", case): v for case, v in HOSTILE_TAR.items()},
           **{("zip", case): v for case, v in HOSTILE_ZIP.items()}}


@pytest.mark.parametrize(("suffix", "case"), sorted(HOSTILE), ids=[f"{s}-{c}" for s, c in sorted(HOSTILE)])
def test_extraction_refuses_hostile_members(tmp_path, private_tmp, package_dir, suffix, case):
    extra, match = HOSTILE[(suffix, case)]
    work = tmp_path / "work"
    work.mkdir()
    write = write_tar if suffix == "tar.gz" else write_zip
    archive = write(work / f"hostile.{suffix}", package_dir, extra)
    with pytest.raises(PackageError) as info:
        modelpod.load(archive)
    msg = str(info.value)
    assert str(archive) in msg and "refusing member" in msg and match in msg
    assert tree(private_tmp) == []
    assert os.listdir(work) == [archive.name]
    assert not Path("/tmp/modelpod-evil-abs.txt").exists()
    # extracting directly: refused before anything (not even the target's parent) is created
    with pytest.raises(PackageError, match="refusing member"):
        extract_archive(archive, work / "out" / "pkg")
    assert sorted(os.listdir(work)) == [archive.name]


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


# --------------------------------------------------------------------------------------------
# archive bombs and members the manifest does not list: refused before anything is written

MB = 1 << 20
BOMB_SIZE = 200 * MB  # compresses to ~200 KB
LISTED_SIZE = 32 * MB  # the cap is set below it


class _Zeros(io.RawIOBase):
    """``n`` zero bytes as a stream, without holding them in memory."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        k = min(len(buf), self.left)
        buf[:k] = bytes(k)
        self.left -= k
        return k


def manifest_bytes(files: dict[str, str], name: str = "bomb") -> bytes:
    return Manifest(
        name=name, platform="python", input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC, files=files
    ).dumps()


def write_crafted(path: Path, members: list[tuple[str, bytes | int | None]]) -> Path:
    """A .zip or .tar.gz of ``(name, data)``: bytes, an int (that many zeros, streamed), None (a folder)."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for name, data in members:
                if data is None:
                    zf.writestr(name.rstrip("/") + "/", b"")
                    continue
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=isinstance(data, int) and data > 1 << 31) as out:
                    if isinstance(data, int):
                        shutil.copyfileobj(io.BufferedReader(_Zeros(data)), out, MB)
                    else:
                        out.write(data)
    else:
        with tarfile.open(path, "w:gz", compresslevel=9) as tf:
            for name, data in members:
                info = tarfile.TarInfo(name)
                if data is None:
                    info.type = tarfile.DIRTYPE
                    tf.addfile(info)
                elif isinstance(data, int):
                    info.size = data
                    tf.addfile(info, io.BufferedReader(_Zeros(data)))
                else:
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return path


@contextlib.contextmanager
def no_writes():
    """Fail if extraction creates a folder or opens a file for writing inside the block."""

    def refuse(what):
        def fail(self, *args, **kwargs):
            raise AssertionError(f"{what} {self} before the archive was checked")
        return fail

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            raise AssertionError(f"opened {file} for writing before the archive was checked")
        return builtins.open(file, mode, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "mkdir", refuse("created"))
        mp.setattr(Path, "write_bytes", refuse("wrote"))
        mp.setattr(archive_module, "open", guarded_open, raising=False)
        mp.setattr(tempfile, "mkdtemp", refuse("made a temp folder for"))
        yield


@pytest.fixture(scope="module", params=[".zip", ".tar.gz"])
def bombs(request, tmp_path_factory, package_dir):
    """(unlisted, listed): a real package plus a 200 MB member of zeros the manifest does not list;
    and a package whose manifest lists its 32 MB member (tests set the cap lower)."""
    suffix = request.param
    folder = tmp_path_factory.mktemp("bombs")
    members = [(rel, data) for rel, data in package_members(package_dir)]
    unlisted = write_crafted(folder / f"unlisted{suffix}", [*members, ("weights.bin", BOMB_SIZE)])
    listed = write_crafted(folder / f"listed{suffix}", [
        (MANIFEST_NAME, manifest_bytes({"weights.bin": "0" * 64})), ("weights.bin", LISTED_SIZE),
    ])
    assert unlisted.stat().st_size < 2 * MB and listed.stat().st_size < 2 * MB
    return unlisted, listed


def test_archive_bomb_not_in_the_manifest_is_refused(tmp_path, private_tmp, bombs):
    unlisted, _ = bombs
    with pytest.raises(PackageError) as info:
        modelpod.load(unlisted)
    msg = str(info.value)
    assert str(unlisted) in msg and "refusing member 'weights.bin'" in msg
    assert "not listed in the manifest" in msg
    assert tree(private_tmp) == []
    with no_writes(), pytest.raises(PackageError, match="refusing member 'weights.bin'"):
        extract_archive(unlisted, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_bomb_in_the_manifest_is_refused_by_the_size_cap(tmp_path, private_tmp, bombs, monkeypatch):
    _, listed = bombs
    monkeypatch.setenv("MODELPOD_MAX_PACKAGE_MB", "16")
    with pytest.raises(PackageError) as info:
        modelpod.load(listed)
    msg = str(info.value)
    assert str(listed) in msg and "declare 32.0 MB uncompressed" in msg
    assert "more than the limit of 16.0 MB" in msg and "MODELPOD_MAX_PACKAGE_MB" in msg
    assert tree(private_tmp) == []
    monkeypatch.delenv("MODELPOD_MAX_PACKAGE_MB")
    with no_writes(), pytest.raises(PackageError, match="more than the limit of 1.0 MB"):
        extract_archive(listed, tmp_path / "out", max_bytes=MB)
    # within the cap but over the free disk space
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * MB, 0, 10 * MB))
    with no_writes(), pytest.raises(PackageError, match=r"more than the 10.0 MB free where it would be extracted"):
        extract_archive(listed, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["systmp"]


def test_limits_from_the_environment_are_checked(tmp_path, package_dir, monkeypatch):
    archive = tmp_path / "pkg.zip"
    write_archive(package_dir, archive)
    for name, value in [("MODELPOD_MAX_PACKAGE_MB", "lots"), ("MODELPOD_MAX_PACKAGE_FILES", "-1"),
                        ("MODELPOD_MAX_PACKAGE_FILES", "2.5")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(PackageError, match=f"{name}='{value}'"):
            extract_archive(archive, tmp_path / "out")
        monkeypatch.delenv(name)
    assert not (tmp_path / "out").exists()
    # a fractional MB limit is fine, and defaults apply again without the variables
    monkeypatch.setenv("MODELPOD_MAX_PACKAGE_MB", "0.5")
    assert (extract_archive(archive, tmp_path / "out") / MANIFEST_NAME).is_file()


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_too_many_files_are_refused(tmp_path, private_tmp, suffix, monkeypatch):
    files = {f"data/{i:03d}.txt": b"x" for i in range(20)}
    manifest = manifest_bytes({k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    archive = write_crafted(tmp_path / f"many{suffix}", [(MANIFEST_NAME, manifest), *files.items()])
    monkeypatch.setenv("MODELPOD_MAX_PACKAGE_FILES", "10")
    with pytest.raises(PackageError) as info:
        modelpod.load(archive)
    msg = str(info.value)
    assert str(archive) in msg and "more than 10 files" in msg and "MODELPOD_MAX_PACKAGE_FILES" in msg
    assert tree(private_tmp) == []
    with no_writes(), pytest.raises(PackageError, match="more than 5 files"):
        extract_archive(archive, tmp_path / "out", max_files=5)
    # folders are capped too, and 21 files are fine under a cap of 21
    folders = write_crafted(tmp_path / f"folders{suffix}", [(MANIFEST_NAME, manifest_bytes({}))] + [
        (f"d{i}", None) for i in range(8)
    ])
    with no_writes(), pytest.raises(PackageError, match="more than 5 folders"):
        extract_archive(folders, tmp_path / "out", max_files=5)
    assert not (tmp_path / "out").exists()
    root = extract_archive(archive, tmp_path / "out", max_files=21)
    assert len(list((root / "data").iterdir())) == 20


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_member_not_in_the_manifest_is_refused(tmp_path, private_tmp, package_dir, suffix):
    members = package_members(package_dir)
    cases = {
        "extra": [*members, ("code/extra.py", b"import os\n")],
        "wrapped": [("addition", None)] + [(f"addition/{rel}", d) for rel, d in members]
        + [("addition/code/extra.py", b"import os\n")],
        "pycache": [*members, ("code/__pycache__/main.cpython-311.pyc", b"\0")],
    }
    for case, content in cases.items():
        archive = write_crafted(tmp_path / f"{case}{suffix}", content)
        bad = [n for n, _ in content][-1]
        with pytest.raises(PackageError) as info:
            modelpod.load(archive)
        msg = str(info.value)
        assert str(archive) in msg and f"refusing member '{bad}'" in msg, case
        assert "not listed in the manifest's 'files'" in msg
        with no_writes(), pytest.raises(PackageError, match=f"refusing member '{bad}'"):
            extract_archive(archive, tmp_path / "out")
        with pytest.raises(PackageError, match=f"refusing member '{bad}'"):
            describe(archive)
    assert tree(private_tmp) == [] and not (tmp_path / "out").exists()
    # the same members without the extra file load fine, wrapped or not
    for case, content in cases.items():
        good = write_crafted(tmp_path / f"good-{case}{suffix}", content[:-1])
        with modelpod.load(good) as model:
            np.testing.assert_array_equal(model.infer({"x": X, "y": X})["out"], X * 2)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_without_a_valid_manifest_is_refused_before_writing(tmp_path, private_tmp, suffix):
    code = ("code/main.py", b"x = 1\n")
    cases = {
        "no manifest": ([code], "modelpod.json is missing"),
        "two top-level folders": ([("a/modelpod.json", manifest_bytes({})), ("b/x.txt", b"x")],
                                  "modelpod.json is missing"),
        "nested too deep": ([("a/b/modelpod.json", manifest_bytes({}))], "modelpod.json is missing"),
        "not json": ([(MANIFEST_NAME, b"{not json"), code], "modelpod.json): not valid JSON"),
        "bad field": ([(MANIFEST_NAME, b'{"format_version": 1, "name": "x"}'), code], "field 'platform'"),
        "duplicate": ([(MANIFEST_NAME, manifest_bytes({})), (MANIFEST_NAME, manifest_bytes({}))],
                      "refusing member 'modelpod.json': it appears more than once"),
    }
    for case, (content, match) in cases.items():
        archive = write_crafted(tmp_path / f"bad{suffix}", content)
        with pytest.raises(PackageError) as info:
            modelpod.load(archive)
        assert str(archive) in str(info.value) and match in str(info.value), case
        assert tree(private_tmp) == []
        with no_writes(), pytest.raises(PackageError, match=re.escape(match)):
            extract_archive(archive, tmp_path / "out" / "pkg")
        assert sorted(os.listdir(tmp_path)) == [f"bad{suffix}", "systmp"]


def test_member_producing_more_than_it_declared_is_refused(tmp_path, private_tmp, package_dir, monkeypatch):
    """Belt and braces: should a reader ever hand out more bytes than a header declared, copying stops."""
    archive = tmp_path / "pkg.tar.gz"
    write_archive(package_dir, archive)
    real = tarfile.TarFile.extractfile

    def lying(self, member):
        if getattr(member, "name", member) == "code/helper.py":
            return io.BytesIO(b"#" * (member.size + 3 * MB))
        return real(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", lying)
    with pytest.raises(PackageError) as info:
        modelpod.load(archive)
    msg = str(info.value)
    assert "refusing member 'code/helper.py': it holds more than the" in msg and "bytes its header declares" in msg
    assert tree(private_tmp) == []


def _understate_zip_size(path: Path, name: str, size: int) -> None:
    """Rewrite the uncompressed size of ``name`` in both its local header and the central directory."""
    with zipfile.ZipFile(path) as zf:
        info, start_dir = zf.getinfo(name), zf.start_dir
    data = bytearray(path.read_bytes())
    assert data[info.header_offset:info.header_offset + 4] == b"PK\x03\x04"
    data[info.header_offset + 22:info.header_offset + 26] = size.to_bytes(4, "little")
    pos = start_dir
    while data[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = (int.from_bytes(data[pos + o:pos + o + 2], "little") for o in (28, 30, 32))
        if bytes(data[pos + 46:pos + 46 + n]) == name.encode():
            data[pos + 24:pos + 28] = size.to_bytes(4, "little")
        pos += 46 + n + m + k
    path.write_bytes(bytes(data))


def test_zip_entry_whose_header_understates_its_size_is_refused(tmp_path, private_tmp):
    archive = write_crafted(tmp_path / "liar.zip", [
        (MANIFEST_NAME, manifest_bytes({"weights.bin": hashlib.sha256(bytes(10)).hexdigest()})),
        ("weights.bin", 50 * MB),
    ])
    _understate_zip_size(archive, "weights.bin", 10)
    assert read_archive_manifest(archive)[1] == {"weights.bin", MANIFEST_NAME}
    with pytest.raises(PackageError) as info:
        modelpod.load(archive)
    msg = str(info.value)
    assert str(archive) in msg and "not a readable archive" in msg and "weights.bin" in msg
    assert tree(private_tmp) == []


# --------------------------------------------------------------------------------------------
# inspect reads the manifest member only


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", ".tgz"])
def test_inspect_of_an_archive_extracts_nothing(tmp_path, private_tmp, suffix):
    archive = pack_addition(tmp_path / f"addition{suffix}")
    bare = pack_addition(tmp_path / f"bare{suffix}", test_input_data=None, test_expected_out=None)
    with no_writes():
        info = describe(archive)
        assert describe(bare)["test_vectors"] is False
    assert info["name"] == "addition" and info["platform"] == "python" and info["test_vectors"] is True
    assert [s["name"] for s in info["signatures"][""]["inputs"]] == ["x", "y"]
    assert {"code/main.py", "code/helper.py", "test/inputs.npz"} <= set(info["files"])
    assert tree(private_tmp) == []
    # the command line too: nothing appears in its TMPDIR
    env = dict(os.environ, TMPDIR=str(private_tmp), COLUMNS="200", NO_COLOR="1", TERM="dumb")
    script = Path(sys.executable).with_name("modelpod")
    result = subprocess.run([str(script), "inspect", str(archive)], capture_output=True, text=True,
                            env=env, timeout=50)
    assert result.returncode == 0, result.stderr
    assert "addition" in result.stdout and "test vectors: True" in result.stdout
    assert tree(private_tmp) == []


def test_inspect_of_an_archive_bomb_is_refused(private_tmp, bombs):
    unlisted, listed = bombs
    with no_writes(), pytest.raises(PackageError, match="refusing member 'weights.bin'"):
        describe(unlisted)
    with no_writes(), pytest.raises(PackageError, match="more than the limit of 1.0 MB"):
        read_archive_manifest(listed, max_bytes=MB)
    assert tree(private_tmp) == []


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_bomb_honest_about_its_sizes_is_refused_by_the_ratio(tmp_path, private_tmp, suffix):
    """A manifest that lists its 300 MB member of zeros: within the size cap, but 300 MB from a
    ~1 MB archive is a bomb, refused before anything is written."""
    bomb = write_crafted(tmp_path / f"honest{suffix}", [
        (MANIFEST_NAME, manifest_bytes({"weights.bin": "0" * 64})), ("weights.bin", 300 * MB),
    ])
    with no_writes(), pytest.raises(PackageError) as info:
        extract_archive(bomb, tmp_path / "out")
    msg = str(info.value)
    assert "times its size" in msg and "MODELPOD_MAX_PACKAGE_RATIO" in msg
    with pytest.raises(PackageError, match="times its size"):
        modelpod.load(bomb)
    assert tree(private_tmp) == [] and not (tmp_path / "out").exists()
