"""The one pack-and-verify flow every ``pack_<platform>`` goes through.

1. Check the arguments (spec, test vectors) before anything is written.
2. Write the payload into a fresh temporary folder beside the target (the packer's job).
3. Store the test vectors, hash the payload, write ``modelpod.json``.
4. Load the written package afresh, run ``test_input_data``, compare with ``test_expected_out``.
5. Only then move it into place (or write the archive); on any failure nothing is left behind.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from modelpod.package.archive import is_archive, write_archive
from modelpod.package.layout import LOCK_FILE
from modelpod.package.manifest import Manifest, write_manifest
from modelpod.package.vectors import save_npz
from modelpod.package.verify import compare_outputs
from modelpod.spec import SpecChecker, SpecError, parse_spec

#: Writes the framework payload into the folder it is given and returns the platform options.
PayloadWriter = Callable[[Path], Mapping[str, Any]]


class PackOptions(TypedDict, total=False):
    """What every ``pack_<platform>`` takes besides its model and spec (passed on to :func:`pack`)."""

    #: inputs run through a fresh load of the written package before it is put in place
    test_input_data: Mapping[str, Any] | None
    #: the outputs they must give (within ``tolerance``); packing fails otherwise
    test_expected_out: Mapping[str, Any] | None
    #: pip requirements of the model's code: recorded in the manifest, locked into
    #: ``requirements.lock`` (exact pins and hashes for this Python and platform); the package then
    #: runs in an environment of its own, which packing builds and verifies the package in
    requirements: Sequence[str] | None
    #: per-output absolute tolerance for the comparison
    tolerance: Mapping[str, float] | None
    #: compact transport defaults, ``{tensor: "int8" | "uint8[:axis=N]" | "float16"}``
    transport: Mapping[str, str] | None
    #: replace what is at the target path
    overwrite: bool


def pack(
    package_path: str | Path,
    *,
    name: str,
    platform: str,
    write_payload: PayloadWriter,
    input_spec: Sequence[Mapping[str, Any]] | None,
    output_spec: Sequence[Mapping[str, Any]] | None,
    test_input_data: Mapping[str, Any] | None = None,
    test_expected_out: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    tolerance: Mapping[str, float] | None = None,
    transport: Mapping[str, str] | None = None,
    derive_spec: Callable[[Path, Mapping[str, Any]], tuple[list[Any], list[Any]]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a package at ``package_path`` (a folder, or a .tar.gz/.tgz/.zip) and verify it.

    ``derive_spec(root, options)`` supplies (input_spec, output_spec) from the written payload
    when the caller gave none (ONNX graphs and SavedModel signatures know their own spec).
    """
    target = Path(package_path)
    if test_expected_out is not None and test_input_data is None:
        raise ValueError("test_expected_out was given without test_input_data; give both or neither")
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; remove it or pass overwrite=True")
    if (input_spec is None or output_spec is None) and derive_spec is None:
        raise ValueError(f"input_spec and output_spec are required for the {platform} platform")
    if input_spec is not None:
        parse_spec(input_spec)
    if output_spec is not None:
        parse_spec(output_spec)

    lock = _lock(requirements, platform)  # before anything is written: an unresolvable requirement fails here
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    root = work / "pkg"
    try:
        root.mkdir()
        options = dict(write_payload(root) or {})
        if lock is not None:
            (root / LOCK_FILE).write_text(lock)
        if input_spec is None or output_spec is None:
            assert derive_spec is not None
            derived_in, derived_out = derive_spec(root, options)
            input_spec = input_spec if input_spec is not None else derived_in
            output_spec = output_spec if output_spec is not None else derived_out
        manifest = Manifest(
            name=name,
            platform=platform,
            input_spec=list(input_spec),
            output_spec=list(output_spec),
            platform_options=options,
            requirements=list(requirements or []),
            tolerance=dict(tolerance or {}),
            transport=dict(transport or {}),
        )
        if test_input_data is not None:
            _store_vectors(root, manifest, test_input_data, test_expected_out)
        manifest = write_manifest(root, manifest)
        if lock is not None:
            _build_environment(root, target)
        if test_input_data is not None:
            verify_package(root, isolated=lock is not None)
        if is_archive(target):
            write_archive(root, target)
        else:
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            root.rename(target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _lock(requirements: Sequence[str] | None, platform: str) -> str | None:
    """The lock text for the requirements (None without any) plus the platform's framework at the
    version packing runs with (unless the requirements name it); ValueError with the resolver's message."""
    if not requirements:
        return None
    if isinstance(requirements, str):
        raise ValueError("requirements must be a list of requirement strings, not one string")
    from modelpod.envs.requirements import compile_lock, framework_requirements
    from modelpod.errors import EnvBuildError

    try:
        return compile_lock([*requirements, *framework_requirements(platform, requirements)])
    except EnvBuildError as exc:
        raise ValueError(f"cannot lock the requirements: {exc}") from None


def _build_environment(root: Path, target: Path) -> None:
    """Build (or find) the package's environment now: a lock that cannot be installed fails packing,
    and the first serve finds it built."""
    from modelpod.envs.sources import package_source
    from modelpod.envs.store import EnvStore
    from modelpod.errors import EnvBuildError

    source = package_source(root)
    assert source is not None
    try:
        EnvStore().ensure(source, used_by=str(target.resolve())).release()
    except EnvBuildError as exc:
        raise ValueError(f"cannot install the requirements: {exc}") from None


def _store_vectors(
    root: Path, manifest: Manifest, inputs: Mapping[str, Any], expected: Mapping[str, Any] | None
) -> None:
    """Check the test vectors against the spec and write them as test/*.npz."""
    checked = SpecChecker(manifest.input_spec, "test_input_data").check(inputs)
    (root / "test").mkdir()
    save_npz(root / "test" / "inputs.npz", checked)
    if expected is not None:
        if not isinstance(expected, Mapping):
            raise ValueError("test_expected_out must be a dict of output name -> array")
        known = {s["name"] for s in manifest.output_spec}
        unknown = sorted(set(expected) - known)
        if unknown:
            raise ValueError(f"test_expected_out names unknown output(s) {unknown}; outputs are {sorted(known)}")
        save_npz(root / "test" / "expected.npz", {k: np.asarray(v) for k, v in expected.items()})


def verify_package(root: str | Path, isolated: bool = False) -> None:
    """Load the package afresh and run its stored test vectors; ValueError on any difference.

    ``isolated`` runs it in its own environment (what a package with requirements needs)."""
    from modelpod.runtime.model import (
        load,  # runtime depends on package, not the other way
    )

    with load(root, isolated=isolated) as model:
        vectors = model.test_vectors()
        if vectors is None:
            return
        inputs, expected = vectors
        try:
            if model.decoupled:  # every answer is checked against the spec; the last one is compared
                answers = list(model.infer_stream(inputs))
                if not answers:
                    raise ValueError(f"package '{model.name}' is decoupled and sent no answer to its test inputs; "
                                     "test_expected_out is compared with the last answer")
                actual = answers[-1]
            else:
                actual = model.infer(inputs)
        except SpecError as exc:
            raise ValueError(f"the test inputs do not fit the package's spec: {exc}") from None
        if expected is None:
            return
        problems = compare_outputs(actual, expected, model.spec.outputs, model.manifest.tolerance)
        if problems:
            raise ValueError(f"package '{model.name}' failed verification: " + "; ".join(problems))
