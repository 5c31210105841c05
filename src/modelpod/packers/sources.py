"""Raw model files and folders on the command line: which platform packs them, and what they hold."""

from __future__ import annotations

import importlib
import shlex
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from modelpod.package.archive import is_archive
from modelpod.package.layout import LOCK_FILE, MANIFEST_NAME

# suffix -> packer module that provides pack_source / inspect_source
_BY_SUFFIX = {
    ".onnx": "modelpod.packers.onnx",
    ".pt": "modelpod.packers.torchscript",
    ".pth": "modelpod.packers.torchscript",
    ".torchscript": "modelpod.packers.torchscript",
    ".keras": "modelpod.packers.keras",
    ".h5": "modelpod.packers.keras",
}


# suffix -> what such a file is, in words
_KINDS = {
    ".onnx": "an ONNX model",
    ".pt": "a TorchScript file",
    ".pth": "a TorchScript file",
    ".torchscript": "a TorchScript file",
    ".keras": "a Keras model",
    ".h5": "a Keras model",
}


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file())


def pack_hint(path: Path, command: str) -> str | None:
    """For a raw model file or SavedModel folder given to ``modelpod COMMAND``, which wants a package:
    what it is and the ``modelpod pack`` command line that makes one of it; None for anything else."""
    path = Path(path)
    if path.is_dir() and not (path / MANIFEST_NAME).is_file() and is_saved_model(path):
        kind, extra = "a TensorFlow SavedModel folder", " [--signature NAME]"
    elif path.is_file() and path.suffix.lower() in _KINDS:
        kind, extra = _KINDS[path.suffix.lower()], ""
        if _BY_SUFFIX[path.suffix.lower()] == "modelpod.packers.torchscript":  # it records no spec: give both
            spec = '[{"name": "x", "dtype": "float32", "shape": [null, 3]}]'
            extra = f" --input-spec {shlex.quote(spec)} --output-spec '<the same for the outputs>'"
    else:
        return None
    package = path.with_name(path.name.split(".")[0] + ".modelpod")
    return (f"{path} is {kind}, not a package; pack it first: modelpod pack {shlex.quote(str(path))} -o "
            f"{shlex.quote(str(package))}{extra} (then: modelpod {command} {shlex.quote(str(package))})")


def raw_model_in(folder: Path) -> tuple[Path, str] | None:
    """The raw model file or SavedModel folder inside ``folder`` (a Triton version folder such as
    ``m/1`` holding ``model.onnx`` or ``model.savedmodel/``) and what it is in words; None when none."""
    if not folder.is_dir():
        return None
    for item in sorted(folder.iterdir()):
        if item.is_file() and item.suffix.lower() in _KINDS:
            return item, _KINDS[item.suffix.lower()]
        if is_saved_model(item):
            return item, "a TensorFlow SavedModel folder"
    return None


def repository_hint(root: Path) -> str:
    """For a folder with no packages: when it is laid out as a Triton model repository of raw model
    files (``<model>/<version>/model.onnx``), what one holds and the ``modelpod pack`` command line
    that makes a repository of packages of it; "" otherwise."""
    raw = [(model.name, version.name, found) for model in sorted(root.iterdir()) if model.is_dir()
           for version in sorted(model.iterdir()) if version.name.isdigit() and (found := raw_model_in(version))]
    if not raw:
        return ""
    model, version, (file, kind) = raw[0]
    packed = root.with_name(root.name + "-packed")
    source, target = shlex.quote(str(file)), shlex.quote(str(packed / model / version))
    more = f" ({len(raw)} such versions: the same for each)" if len(raw) > 1 else ""
    return (f"; it looks like a Triton model repository of raw model files ({file.relative_to(root)} is {kind}): "
            f"pack each version into a repository of packages, e.g. modelpod pack {source} -o {target}{more}, "
            f"then modelpod serve {shlex.quote(str(packed))}")


def source_module(source: Path) -> ModuleType:
    """The packer module that can pack ``source`` (a raw model file or SavedModel folder)."""
    if not source.exists():
        raise ValueError(f"{source}: no such file or folder")
    if source.is_dir():
        if is_saved_model(source):
            target = "modelpod.packers.tensorflow"
        else:
            raise ValueError(
                f"{source}: a folder must be a TensorFlow SavedModel (saved_model.pb is missing)"
            )
    else:
        target = _BY_SUFFIX.get(source.suffix.lower())
        if target is None:
            raise ValueError(
                f"{source}: unknown model format; modelpod pack takes a SavedModel folder, "
                f"or a file ending in {', '.join(_BY_SUFFIX)}"
            )
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        extra = target.rsplit(".", 1)[-1].replace("torchscript", "torch")
        raise ImportError(
            f"{source} needs {exc.name or 'its framework'}: pip install 'modelpod[{extra}]'"
        ) from exc


def pack_file(packer: Callable[..., Path], source_arg: str, source: Path, output: Path, *,
              platform: str, signature: str | None = None, **common: Any) -> Path:
    """What every backend's ``pack_source`` does for a single-signature format: call its packer
    with the file under ``source_arg``; ``common`` are the packer's spec / test-vector arguments."""
    if signature is not None:
        raise ValueError(f"{platform} models have no named signatures (one only); --signature applies to "
                         "SavedModels, leave it out")
    return packer(output, **{source_arg: Path(source)}, **common)


def describe(path: Path) -> dict[str, Any]:
    """Name, platform and signatures of a package (folder/archive) or a raw model source.

    A package folder's payload hashes are checked. An archive is not extracted: only its manifest
    member is read (after the member checks extraction makes), so its payload hashes are *not*
    checked here; ``modelpod verify`` or ``load`` check them.
    """
    from modelpod.package.archive import read_archive_manifest
    from modelpod.package.manifest import read_manifest

    path = Path(path)
    if path.is_file() and is_archive(path):
        manifest, members = read_archive_manifest(path)
        info = _describe_manifest(manifest, test_vectors="test/inputs.npz" in members)
        if LOCK_FILE in members:
            info["lock"] = {"file": LOCK_FILE}
        return info
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        manifest = read_manifest(path)
        info = _describe_manifest(manifest, test_vectors=(path / "test" / "inputs.npz").is_file())
        if (path / LOCK_FILE).is_file():
            from modelpod.envs.requirements import read_lock

            lock = read_lock((path / LOCK_FILE).read_text())
            info["lock"] = {"file": LOCK_FILE, "python": lock.python, "platform": lock.platform, "pins": lock.pins}
        return info
    module = source_module(path)
    platform = module.__name__.rsplit(".", 1)[-1]
    if hasattr(module, "inspect_signatures"):
        sigs = module.inspect_signatures(path)
    else:
        sigs = {"": module.inspect_source(path)}
    return {
        "name": path.name.split(".")[0],
        "platform": platform,
        "signatures": {k: {"inputs": v[0], "outputs": v[1]} for k, v in sigs.items()},
    }


def _describe_manifest(manifest: Any, *, test_vectors: bool) -> dict[str, Any]:
    signatures = {
        manifest.platform_options.get("signature", ""): {
            "inputs": manifest.input_spec, "outputs": manifest.output_spec,
        }
    }
    for sig, spec in manifest.platform_options.get("signatures", {}).items():
        signatures.setdefault(sig, {"inputs": spec["input_spec"], "outputs": spec["output_spec"]})
    return {
        "name": manifest.name,
        "platform": manifest.platform,
        "format_version": manifest.format_version,
        "created_by": manifest.created_by,
        "signatures": signatures,
        "requirements": manifest.requirements,
        "transport": manifest.transport,
        "files": manifest.files,
        "test_vectors": test_vectors,
    }
