"""The package format: manifest checks, payload hashes, test vectors without pickle, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import modelpod
from tests.helpers.addition import pack_addition, write_addition_code
from modelpod.package import manifest as manifest_module
from modelpod.package.archive import write_archive
from modelpod.package.manifest import FORMAT_VERSION, Manifest, read_manifest, verify_payload
from modelpod.package.layout import MANIFEST_NAME
from modelpod.packers.flow import verify_package
from modelpod.package.vectors import load_npz, save_npz
from modelpod import PackageError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def package(tmp_path) -> Path:
    return pack_addition(tmp_path / "pkg")


def edit_manifest(root: Path, change) -> Path:
    path = root / MANIFEST_NAME
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))
    return path


# --------------------------------------------------------------------------------------------
# what a package holds


def test_package_layout_and_manifest(package):
    names = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
    assert names == [
        "code/helper.py", "code/main.py", MANIFEST_NAME, "test/expected.npz", "test/inputs.npz",
    ]
    manifest = read_manifest(package)
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.name == "addition" and manifest.platform == "python"
    assert manifest.input_spec[0] == {"name": "x", "dtype": "float32", "shape": ["num_inputs"]}
    assert manifest.platform_options == {"entrypoint_package": "main", "entrypoint": "get_model"}
    assert set(manifest.files) == {n for n in names if n != MANIFEST_NAME}
    assert all(len(h) == 64 for h in manifest.files.values())
    assert manifest.created_by.startswith("modelpod ")
    # the manifest is plain, sorted, indented JSON
    text = (package / MANIFEST_NAME).read_text()
    assert text.endswith("\n") and json.loads(text)["name"] == "addition"
    assert text == Manifest.model_validate(json.loads(text)).dumps().decode()


def test_requirements_tolerance_and_transport_are_recorded(tmp_path):
    path = pack_addition(
        tmp_path / "pkg", requirements=["numpy>=1.26"], tolerance={"atol": 0.5},
        transport={"x": "float16"},
    )
    manifest = read_manifest(path)
    assert manifest.requirements == ["numpy>=1.26"]
    assert manifest.tolerance == {"atol": 0.5}
    assert manifest.transport == {"x": "float16"}


def test_tolerance_is_used_by_verification(tmp_path):
    near = {"out": np.arange(5, dtype=np.float32) * 2 + 0.25}
    with pytest.raises(ValueError, match="max abs difference 0.25"):
        pack_addition(tmp_path / "strict", test_expected_out=near)
    pack_addition(tmp_path / "loose", test_expected_out=near, tolerance={"atol": 0.3})


# --------------------------------------------------------------------------------------------
# manifest problems: each names the file and the field


def test_missing_manifest(package):
    (package / MANIFEST_NAME).unlink()
    with pytest.raises(PackageError, match=f"{package}.*{MANIFEST_NAME} is missing"):
        modelpod.load(package)


def test_malformed_json(package):
    (package / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(PackageError, match=f"{package / MANIFEST_NAME}: not valid JSON"):
        modelpod.load(package)
    (package / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(PackageError, match="must be a JSON object"):
        modelpod.load(package)


@pytest.mark.parametrize("field", ["name", "platform", "input_spec", "output_spec"])
def test_missing_field(package, field):
    path = edit_manifest(package, lambda raw: raw.pop(field))
    with pytest.raises(PackageError) as info:
        modelpod.load(package)
    msg = str(info.value)
    assert str(path) in msg and f"field '{field}'" in msg and "required" in msg.lower()


def test_missing_or_bad_format_version(package):
    path = edit_manifest(package, lambda raw: raw.pop("format_version"))
    with pytest.raises(PackageError, match=f"{path}: field 'format_version' is missing or not an integer"):
        read_manifest(package)
    edit_manifest(package, lambda raw: raw.update(format_version="1"))
    with pytest.raises(PackageError, match="field 'format_version'"):
        read_manifest(package)


def test_newer_format_version(package):
    path = edit_manifest(package, lambda raw: raw.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(PackageError) as info:
        modelpod.load(package)
    msg = str(info.value)
    assert str(path) in msg and "field 'format_version'" in msg
    assert f"is {FORMAT_VERSION + 1}, newer than" in msg and "upgrade modelpod" in msg


def test_unknown_field_and_bad_types(package):
    path = edit_manifest(package, lambda raw: raw.update(surprise=True))
    with pytest.raises(PackageError, match=f"{path}: field 'surprise'"):
        read_manifest(package)
    edit_manifest(package, lambda raw: (raw.pop("surprise"), raw.update(name="")))
    with pytest.raises(PackageError, match="field 'name'"):
        read_manifest(package)


def test_bad_spec_in_manifest(package):
    def change(raw):
        raw["input_spec"][0]["dtype"] = "complex64"

    path = edit_manifest(package, change)
    with pytest.raises(PackageError) as info:
        read_manifest(package)
    msg = str(info.value)
    assert str(path) in msg and "field 'input_spec'" in msg and "unknown dtype 'complex64'" in msg


def test_unknown_platform(package):
    edit_manifest(package, lambda raw: raw.update(platform="caffe"))
    with pytest.raises(modelpod.BackendError, match="unknown platform 'caffe'"):
        modelpod.load(package, verify_hashes=False)


# --------------------------------------------------------------------------------------------
# payload hashes


def test_tampered_payload_is_detected(package):
    (package / "code" / "helper.py").write_text("def add(x, y):\n    return x * y\n")
    with pytest.raises(PackageError) as info:
        modelpod.load(package)
    msg = str(info.value)
    assert str(package) in msg and "field 'files'" in msg and "'code/helper.py'" in msg
    assert "modified or damaged" in msg
    # hashes can be skipped deliberately
    with modelpod.load(package, verify_hashes=False) as model:
        np.testing.assert_array_equal(model.infer({"x": [2.0], "y": [3.0]})["out"], [6.0])


def test_missing_payload_file_is_detected(package):
    (package / "test" / "expected.npz").unlink()
    with pytest.raises(PackageError, match="field 'files': payload file 'test/expected.npz' is missing"):
        modelpod.load(package)


def test_added_payload_file_is_detected(package):
    # a package folder next to helper.py would shadow it on import
    (package / "code" / "helper").mkdir()
    (package / "code" / "helper" / "__init__.py").write_text("def add(x, y):\n    return x - y\n")
    with pytest.raises(PackageError, match="payload file 'code/helper/__init__.py' is not listed in the manifest"):
        modelpod.load(package)


def test_python_caches_do_not_count_as_payload(package):
    (package / "code" / "__pycache__").mkdir()
    (package / "code" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (package / ".DS_Store").write_bytes(b"\0")
    with modelpod.load(package) as model:
        assert model.name == "addition"


def test_verify_package(package):
    verify_package(package)
    save_npz(package / "test" / "expected.npz", {"out": np.zeros(5, np.float32)})
    with pytest.raises(PackageError, match="test/expected.npz"):
        verify_package(package)  # the hash no longer matches


# --------------------------------------------------------------------------------------------
# manifest 'files' keys are confined to the package

UNSAFE_KEYS = {
    "dotdot": ("../../../../etc/passwd", "a '..' part leads outside the package"),
    "nested-dotdot": ("code/../../outside.txt", "a '..' part leads outside the package"),
    "absolute": ("/etc/passwd", "it is an absolute path"),
    "backslash": ("code\\..\\..\\outside.txt", "it holds a backslash"),
    "drive-letter": ("C:/Windows/win.ini", "it starts with a drive letter"),
    "nul": ("code/main.py\0.txt", "it holds a NUL character"),
    "empty-part": ("code//main.py", "it has an empty or '.' part"),
    "dot-part": ("./code/main.py", "it has an empty or '.' part"),
    "trailing-slash": ("code/", "it has an empty or '.' part"),
    "empty": ("", "it has an empty or '.' part"),
    "manifest": (MANIFEST_NAME, f"{MANIFEST_NAME} is the manifest itself, not a payload file"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_KEYS))
def test_manifest_files_keys_must_stay_inside_the_package(package, case):
    key, why = UNSAFE_KEYS[case]
    path = edit_manifest(package, lambda raw: raw["files"].update({key: "0" * 64}))
    for call in (read_manifest, lambda p: read_manifest(p, verify_hashes=False), modelpod.load):
        with pytest.raises(PackageError) as info:
            call(package)
        msg = str(info.value)
        assert str(path) in msg and "field 'files'" in msg
        assert f"refusing key {key!r}: {why}" in msg


def test_unsafe_files_key_is_refused_by_load_and_inspect(tmp_path):
    """A manifest listing '../secret.txt' must not get that file hashed and its digest printed."""
    package = pack_addition(tmp_path / "pkg")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    edit_manifest(package, lambda raw: raw["files"].update({"../secret.txt": "0" * 64}))
    archive = tmp_path / "pkg.zip"
    write_archive(package, archive)
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    script = Path(sys.executable).with_name("modelpod")
    env = dict(os.environ, TMPDIR=str(systmp), COLUMNS="200", NO_COLOR="1", TERM="dumb")
    for target, command in ((package, ["inspect"]), (archive, ["inspect", "--json"])):
        with pytest.raises(PackageError, match=re.escape("refusing key '../secret.txt'")):
            modelpod.load(target)
        # the command line, as a real subprocess
        result = subprocess.run([str(script), *command, str(target)], capture_output=True,
                                text=True, env=env, timeout=50)
        assert result.returncode == 1, (command, result.stdout)
        err = " ".join(result.stderr.split())  # the message may be wrapped
        assert "refusing key '../secret.txt': a '..' part leads outside the package" in err
        assert digest[:12] not in result.stdout + result.stderr
        assert list(systmp.iterdir()) == []


def test_verify_payload_never_opens_a_path_outside_the_root(tmp_path, monkeypatch):
    package = pack_addition(tmp_path / "pkg")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    manifest = read_manifest(package)
    opened = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: opened.append(Path(p).resolve()) or real(p))
    # a Manifest that skipped validation (model_copy does not validate)
    sneaky = manifest.model_copy(update={"files": {**manifest.files, "../secret.txt": digest}})
    with pytest.raises(PackageError, match=re.escape("payload file '../secret.txt' lies outside the package")):
        verify_payload(package, sneaky)
    # a symlink inside the package that points outside is refused the same way
    (package / "code" / "leak.py").symlink_to(secret)
    linked = manifest.model_copy(update={"files": {**manifest.files, "code/leak.py": digest}})
    with pytest.raises(PackageError, match=re.escape("payload file 'code/leak.py' lies outside the package")):
        verify_payload(package, linked)
    assert opened and secret.resolve() not in opened


# --------------------------------------------------------------------------------------------
# test vectors: .npz without pickle


STRING_MAIN = """\
import numpy as np


def get_model(data_dir):
    def upper(text, n):
        return {
            "upper": np.array([t.upper() for t in text], dtype=object),
            "count": n + np.int64(len(text)),
        }

    return upper
"""


def test_string_test_vectors_need_no_pickle(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text(STRING_MAIN)
    path = modelpod.pack_python(
        tmp_path / "strings", name="strings",
        input_spec=[{"name": "text", "dtype": "string", "shape": ("n",)},
                    {"name": "n", "dtype": "int64", "shape": ()}],
        output_spec=[{"name": "upper", "dtype": "string", "shape": ("n",)},
                     {"name": "count", "dtype": "int64", "shape": ()}],
        code_path_spec=[{"python_root": str(code), "dirs_to_package": [""]}],
        test_input_data={"text": ["héllo", "wörld"], "n": 1},
        test_expected_out={"upper": np.array(["HÉLLO", "WÖRLD"], dtype=object), "count": np.int64(3)},
    )
    for name in ["inputs", "expected"]:
        with np.load(path / "test" / f"{name}.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        assert all(a.dtype.kind != "O" for a in arrays.values())
    with np.load(path / "test" / "inputs.npz", allow_pickle=False) as data:
        assert data["text"].tolist() == ["héllo", "wörld"]
    inputs = load_npz(path / "test" / "inputs.npz")
    assert inputs["text"].dtype == object and inputs["text"].tolist() == ["héllo", "wörld"]
    with modelpod.load(path) as model:
        out = model.infer({"text": np.array(["a", "bc"]), "n": 0})
        assert out["upper"].tolist() == ["A", "BC"] and out["count"] == 2
        with pytest.raises(modelpod.SpecError, match="expected string values"):
            model.infer({"text": [1, 2], "n": 0})


def test_npz_round_trip_of_every_dtype(tmp_path):
    tensors = {
        "f32": np.arange(3, dtype=np.float32),
        "bf16": np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "b": np.array([True, False]),
        "s": np.array(["a", "bcd"], dtype=object),
        "bytes": np.array([b"\x00\xff", b"z"], dtype=object),
        "empty_s": np.array([], dtype=object),
        "scalar": np.float64(2.5),
    }
    save_npz(tmp_path / "t.npz", tensors)
    back = load_npz(tmp_path / "t.npz")
    assert sorted(back) == sorted(tensors)
    for name, array in tensors.items():
        array = np.asarray(array)
        assert back[name].dtype == array.dtype, name
        assert back[name].shape == array.shape, name
        assert back[name].tolist() == array.tolist(), name
    # deterministic bytes
    save_npz(tmp_path / "u.npz", tensors)
    assert (tmp_path / "t.npz").read_bytes() == (tmp_path / "u.npz").read_bytes()


def test_bfloat16_model_verifies(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("def get_model(d):\n    return lambda x: {'y': x * 2}\n")
    path = modelpod.pack_python(
        tmp_path / "bf16", name="bf16",
        input_spec=[{"name": "x", "dtype": "bfloat16", "shape": (None,)}],
        output_spec=[{"name": "y", "dtype": "bfloat16", "shape": (None,)}],
        code_path_spec=[{"python_root": str(code)}],
        test_input_data={"x": [1.0, 2.5]},
        test_expected_out={"y": np.array([2.0, 5.0], dtype=ml_dtypes.bfloat16)},
    )
    verify_package(path)


def test_object_arrays_of_other_things_cannot_be_stored(tmp_path):
    with pytest.raises(ValueError, match="object arrays may only hold str or bytes"):
        save_npz(tmp_path / "x.npz", {"o": np.array([{"a": 1}], dtype=object)})


def test_unreadable_npz_is_a_package_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PackageError, match="bad.npz: cannot read tensors"):
        load_npz(bad)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(PackageError, match="pickled.npz: cannot read tensors"):
        load_npz(pickled)


# --------------------------------------------------------------------------------------------
# determinism


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".zip"])
def test_packing_twice_gives_identical_archives(tmp_path, suffix):
    code = write_addition_code(tmp_path / "code")
    first = pack_addition(tmp_path / "a" / f"pkg{suffix}", code_dir=code)
    second = pack_addition(tmp_path / "b" / f"pkg{suffix}", code_dir=code)
    # touch the sources: mtimes must not leak into the archive
    for f in code.iterdir():
        os.utime(f, (1_000_000, 1_000_000))
    third = pack_addition(tmp_path / "c" / f"pkg{suffix}", code_dir=code)
    assert first.read_bytes() == second.read_bytes() == third.read_bytes()
    assert sorted(os.listdir(tmp_path / "a")) == [f"pkg{suffix}"]


def test_packing_twice_gives_identical_folders(tmp_path):
    code = write_addition_code(tmp_path / "code")
    a = pack_addition(tmp_path / "a", code_dir=code)
    b = pack_addition(tmp_path / "b", code_dir=code)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
