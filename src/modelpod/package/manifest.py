"""The package manifest ``modelpod.json``: what it holds, how it is read, written and checked."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from modelpod._version import __version__
from modelpod.errors import PackageError
from modelpod.package.layout import IGNORED_NAMES, MANIFEST_NAME
from modelpod.spec import SpecError, TensorSpec, parse_spec

FORMAT_VERSION = 1
#: Files and folders that never count as payload (created by Python when packaged code runs).
_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_payload_key(key: str) -> str | None:
    """Why ``key`` (a manifest ``files`` key) could point outside the package, or None if it is a
    plain relative POSIX path inside it."""
    if "\0" in key:
        return "it holds a NUL character"
    if "\\" in key:
        return "it holds a backslash (use '/' between folders)"
    if key.startswith("/"):
        return "it is an absolute path"
    if _DRIVE.match(key):
        return "it starts with a drive letter"
    parts = key.split("/")
    if ".." in parts:
        return "a '..' part leads outside the package"
    if "" in parts or "." in parts:
        return "it has an empty or '.' part"
    if key == MANIFEST_NAME:
        return f"{MANIFEST_NAME} is the manifest itself, not a payload file"
    return None


class Manifest(BaseModel):
    """Everything ``modelpod.json`` says about a package."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    name: str = Field(min_length=1)
    platform: str = Field(min_length=1)
    input_spec: list[dict[str, Any]]
    output_spec: list[dict[str, Any]]
    platform_options: dict[str, Any] = Field(default_factory=dict)
    requirements: list[str] = Field(default_factory=list)
    #: Per-tensor transport defaults the client SDK honours (e.g. ``{"mask": "uint8"}``).
    transport: dict[str, str] = Field(default_factory=dict)
    #: Tolerance used when the stored test vectors are compared: ``{"rtol": .., "atol": ..}``.
    tolerance: dict[str, float] = Field(default_factory=dict)
    #: sha256 of every payload file, keyed by its POSIX path relative to the package root.
    files: dict[str, str] = Field(default_factory=dict)
    created_by: str = f"modelpod {__version__}"

    @field_validator("files")
    @classmethod
    def _confined_files(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            why = unsafe_payload_key(key)
            if why is not None:
                raise PydanticCustomError(
                    "unsafe_path", "refusing key {key}: {why}", {"key": repr(key), "why": why}
                )
        return value

    @field_validator("input_spec", "output_spec")
    @classmethod
    def _valid_spec(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [s.to_dict() for s in parse_spec(value)]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return parse_spec(self.input_spec)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return parse_spec(self.output_spec)

    def dumps(self) -> bytes:
        """Deterministic JSON bytes (sorted keys, fixed indentation, trailing newline)."""
        return (json.dumps(self.model_dump(), indent=2, sort_keys=True) + "\n").encode()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def payload_files(root: Path) -> list[Path]:
    """Every payload file under ``root`` (all files but the manifest), sorted, as relative paths."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part in IGNORED_NAMES for part in rel.parts) or path.suffix == ".pyc":
            continue
        if path.is_file() and rel.as_posix() != MANIFEST_NAME:
            found.append(rel)
    return sorted(found, key=lambda p: p.as_posix())


def hash_payload(root: Path) -> dict[str, str]:
    return {rel.as_posix(): sha256_file(root / rel) for rel in payload_files(root)}


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash the payload under ``root`` into the manifest and write ``modelpod.json``."""
    manifest = manifest.model_copy(update={"files": hash_payload(root)})
    (root / MANIFEST_NAME).write_bytes(manifest.dumps())
    return manifest


def read_manifest(root: Path, *, verify_hashes: bool = True) -> Manifest:
    """Read and validate ``root/modelpod.json``; with ``verify_hashes`` check every payload file."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise PackageError(
            f"{root} is not a modelpod package: {MANIFEST_NAME} is missing "
            "(pack a model with modelpod.pack_* or `modelpod pack`)"
        )
    manifest = parse_manifest(path.read_bytes(), path)
    if verify_hashes:
        verify_payload(root, manifest)
    return manifest


def parse_manifest(data: bytes, path: str | Path) -> Manifest:
    """Validate the bytes of a manifest; ``path`` names where they came from in messages."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise PackageError(f"{path}: the manifest must be a JSON object")
    version = raw.get("format_version")
    if not isinstance(version, int):
        raise PackageError(f"{path}: field 'format_version' is missing or not an integer")
    if version > FORMAT_VERSION:
        raise PackageError(
            f"{path}: field 'format_version' is {version}, newer than this modelpod "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade modelpod"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise PackageError(f"{path}: field '{field}': {err['msg']}") from None
    except SpecError as exc:
        raise PackageError(f"{path}: {exc}") from None
    return manifest


def verify_payload(root: Path, manifest: Manifest) -> None:
    """Raise PackageError naming the first file that is missing, added, or whose hash differs."""
    added = [rel.as_posix() for rel in payload_files(root) if rel.as_posix() not in manifest.files]
    if added:
        raise PackageError(
            f"{root}: field 'files': payload file '{added[0]}' is not listed in the manifest "
            "(a file was added to the package after it was packed)"
        )
    base = root.resolve()
    for rel, expected in manifest.files.items():
        file = root / rel
        # belt and braces (the Manifest already refuses such keys): never open anything outside
        if unsafe_payload_key(rel) is not None or not file.resolve().is_relative_to(base):
            raise PackageError(
                f"{root}: field 'files': payload file '{rel}' lies outside the package; refusing it"
            )
        if not file.is_file():
            raise PackageError(f"{root}: field 'files': payload file '{rel}' is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise PackageError(
                f"{root}: field 'files': payload file '{rel}' has sha256 {actual[:12]}..., "
                f"the manifest says {expected[:12]}... (the package was modified or damaged)"
            )
