"""Packing python code and data: ``pack_python`` (Neuropod's ``create_python_neuropod``)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

from modelpod.package.layout import CODE_DIR, DATA_DIR, IGNORED_NAMES, SERVICE_FILE
from modelpod.packers.flow import PackOptions, pack


def _ignore(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n in IGNORED_NAMES or n.endswith(".pyc")]


def write_code_and_data(
    root: Path,
    code_path_spec: Sequence[Mapping[str, Any]] | None,
    data_paths: Sequence[Any] | None,
) -> None:
    """Copy packaged code into ``root/code`` and data into ``root/data``.

    ``code_path_spec``: ``[{"python_root": dir, "dirs_to_package": ["", "sub"]}]`` ("" = all).
    ``data_paths``: paths (copied under their own name) or ``{"path": p, "packaged_name": n}``.
    """
    code = root / CODE_DIR
    data = root / DATA_DIR
    code.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    for entry in code_path_spec or []:
        if not isinstance(entry, Mapping) or "python_root" not in entry:
            raise ValueError(
                f"code_path_spec entries must be dicts with 'python_root' and 'dirs_to_package', got {entry!r}"
            )
        py_root = Path(entry["python_root"])
        if not py_root.is_dir():
            raise ValueError(f"code_path_spec: python_root {py_root} is not a folder")
        for sub in entry.get("dirs_to_package", [""]):
            src = (py_root / sub).resolve()
            if not src.is_dir() or not src.is_relative_to(py_root.resolve()):
                raise ValueError(f"code_path_spec: {sub!r} is not a folder inside {py_root}")
            shutil.copytree(src, code / sub, ignore=_ignore, dirs_exist_ok=True)
    for entry in data_paths or []:
        if isinstance(entry, Mapping):
            src, name = Path(entry["path"]), entry.get("packaged_name") or Path(entry["path"]).name
        else:
            src, name = Path(entry), Path(entry).name
        if not src.exists():
            raise ValueError(f"data_paths: {src} does not exist")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(
                f"data_paths: packaged_name {name!r} must be a relative path inside the data folder"
            )
        dest = data / name
        if src.is_dir():
            shutil.copytree(src, dest, ignore=_ignore, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)


def pack_python(
    package_path: str | Path,
    *,
    name: str,
    input_spec: Sequence[Mapping[str, Any]],
    output_spec: Sequence[Mapping[str, Any]],
    entrypoint_package: str = "main",
    entrypoint: str = "get_model",
    code_path_spec: Sequence[Mapping[str, Any]] | None = None,
    data_paths: Sequence[Any] | None = None,
    platform: str = "python",
    service_path: str | Path | None = None,
    **options: Unpack[PackOptions],
) -> Path:
    """Pack python code + data as a package (Neuropod's ``create_python_neuropod``).

    ``entrypoint_package.entrypoint(data_dir)`` must return a callable taking the inputs as keyword
    arguments and returning a dict of arrays. Packing runs ``test_input_data`` through a fresh
    load of the written package and raises ValueError when outputs differ from ``test_expected_out``.
    ``service_path`` names a python file defining one :class:`modelpod.ModelService` subclass; it
    becomes the package's ``service.py`` (the hooks ``/api/predict/<name>`` runs when served).
    """
    service_file = Path(service_path) if service_path is not None else None
    if service_file is not None and not service_file.is_file():
        raise ValueError(f"service_path: {service_file} is not a file")

    def write(root: Path) -> dict[str, Any]:
        write_code_and_data(root, code_path_spec, data_paths)
        if not any((root / CODE_DIR).iterdir()):
            raise ValueError("code_path_spec packages no code: give the folder holding the entrypoint")
        if service_file is not None:
            shutil.copyfile(service_file, root / SERVICE_FILE)
        return {"entrypoint_package": entrypoint_package, "entrypoint": entrypoint}

    return pack(
        package_path, name=name, platform=platform, write_payload=write,
        input_spec=input_spec, output_spec=output_spec, **options,
    )

