"""What goes into a package's environment: its requirements, locked, plus what the worker needs.

A package's ``requirements`` (``pack_*(requirements=[...])``, ``modelpod pack --requirements``) are
resolved at pack time, for the packing interpreter's Python version and platform, into
``requirements.lock``: exact pins with hashes, as ``uv pip compile --generate-hashes`` writes them,
under a header that records the target. The worker program's own needs (numpy, pydantic,
ml_dtypes, with modelpod's own bounds) are resolved together with them, so a conflict shows at
pack time. A ModelArts folder's ``config.json`` ``dependencies`` become requirements too, installed the way
ModelArts installs them: on top of the serving image, which here is the server's own environment.
Those the server already satisfies are left out (pip's "already satisfied"); the rest are locked
when the folder's environment is first built, and that environment is *layered* over the
server's site-packages (its own packages first).
"""

from __future__ import annotations

import platform
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from modelpod.envs.uvtool import run_uv
from modelpod.errors import EnvBuildError

#: what the Python worker imports besides the standard library (bounds from modelpod's own metadata)
WORKER_PACKAGES = ("numpy", "pydantic", "ml-dtypes")
_HEADER = "# modelpod lock"
_TARGET = re.compile(r"^# target: python (\S+) on (\S+)$", re.M)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.M)
#: ModelArts restraint -> pip operator
_RESTRAINTS = {"EXACT": "==", "ATLEAST": ">=", "ATMOST": "<="}

Progress = Callable[[str], None]


def python_version() -> str:
    """``major.minor`` of this interpreter: what a lock and an environment are made for."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def platform_tag() -> str:
    """This machine's platform as locks name it, e.g. ``linux-x86_64``."""
    return f"{sys.platform}-{platform.machine().lower()}"


def requirement_name(requirement: str) -> str:
    """The normalized project name a requirement string starts with (``Pillow>=9`` -> ``pillow``)."""
    return re.split(r"[<>=!~;\[\s@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


def worker_requirements() -> list[str]:
    """The worker's own needs, with the bounds modelpod itself declares."""
    try:
        declared = metadata.requires("modelpod") or []
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        declared = []
    found = {}
    for requirement in declared:
        name = requirement_name(requirement)
        if name in WORKER_PACKAGES and "extra ==" not in requirement:
            found[name] = requirement.split(";")[0].strip()
    return [found.get(name, name) for name in WORKER_PACKAGES]


def satisfied_here(requirement: str) -> bool:
    """Whether this interpreter's installed packages already satisfy ``requirement`` (as ``pip
    install`` would say "Requirement already satisfied")."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return False
    if parsed.marker is not None and not parsed.marker.evaluate():
        return True  # not meant for this interpreter at all
    try:
        installed = metadata.version(parsed.name)
    except metadata.PackageNotFoundError:
        return False
    return parsed.specifier.contains(installed, prereleases=True)


def modelarts_requirements(config: Mapping[str, Any], where: str = "config.json") -> list[str]:
    """``config.json`` ``dependencies`` -> pip requirements (EnvBuildError for what is not pip)."""
    dependencies = config.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise EnvBuildError(f"{where}: 'dependencies' must be a list")
    requirements = []
    for i, group in enumerate(dependencies):
        if not isinstance(group, dict):
            raise EnvBuildError(f"{where}: dependencies[{i}] must be an object")
        installer = group.get("installer", "pip")
        if installer != "pip":
            raise EnvBuildError(f"{where}: dependencies[{i}]: installer {installer!r} is not supported (use pip)")
        for j, package in enumerate(group.get("packages") or []):
            name = package.get("package_name") if isinstance(package, dict) else None
            if not isinstance(name, str) or not name.strip():
                raise EnvBuildError(f"{where}: dependencies[{i}].packages[{j}] has no package_name")
            version = package.get("package_version")
            restraint = str(package.get("restraint") or ("EXACT" if version else "")).upper()
            if version:
                if restraint not in _RESTRAINTS:
                    raise EnvBuildError(f"{where}: dependencies[{i}].packages[{j}]: restraint {restraint!r} "
                                        f"must be one of {', '.join(_RESTRAINTS)}")
                requirements.append(f"{name.strip()}{_RESTRAINTS[restraint]}{str(version).strip()}")
            else:
                requirements.append(name.strip())
    return requirements


#: platform -> the distributions its backend imports (what an isolated worker needs besides numpy)
_FRAMEWORKS: dict[str, tuple[tuple[str, ...], ...]] = {
    "onnx": (("onnxruntime",), ("onnx",)),
    "tensorflow": (("tensorflow-cpu", "tensorflow"),),
    "keras": (("keras",), ("tensorflow-cpu", "tensorflow")),
    "pytorch": (("torch",),),
    "torchscript": (("torch",),),
}


def framework_requirements(platform: str, given: Sequence[str] = ()) -> list[str]:
    """The framework a ``platform``'s backend imports, pinned to the version this interpreter has
    (``onnxruntime==1.23.2``...), for each one ``given`` does not name already: a package with
    requirements runs isolated, and its environment needs its framework."""
    named = {requirement_name(r) for r in given}
    found = []
    for alternatives in _FRAMEWORKS.get(platform, ()):
        if any(name in named for name in alternatives):
            continue
        for name in alternatives:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
            found.append(f"{name}=={version.split('+')[0]}")
            break
    return found


@dataclass(frozen=True)
class LockInfo:
    """What a lock's header says it was made for, and what it pins."""

    python: str
    platform: str
    pins: dict[str, str]


def read_lock(text: str) -> LockInfo:
    """The target and the pins of a lock's text."""
    target = _TARGET.search(text)
    python, tag = (target.group(1), target.group(2)) if target else (python_version(), platform_tag())
    return LockInfo(python, tag, {m.group(1).lower(): m.group(2) for m in _PIN.finditer(text)})


def compile_lock(requirements: Sequence[str], progress: Progress | None = None, with_worker: bool = True) -> str:
    """Resolve ``requirements`` plus the worker's needs (``with_worker``) to a hashed lock for this
    interpreter.

    EnvBuildError carries the resolver's own message when they cannot be resolved."""
    wanted = [r.strip() for r in requirements if r and r.strip()]
    bad = [r for r in wanted if r.startswith("-") or "\n" in r]
    if bad:
        raise EnvBuildError(f"requirement {bad[0]!r}: give package requirements, not pip options")
    names = {requirement_name(r) for r in wanted}
    if with_worker:
        wanted += [r for r in worker_requirements() if requirement_name(r) not in names]
    if progress:
        progress(f"resolving {len(wanted)} requirement(s) for python {python_version()} on {platform_tag()}")
    if not wanted:
        body = ""
    else:
        body = _resolve(wanted)
    header = (f"{_HEADER}: exact pins for the package's environment (made by modelpod with uv)\n"
              f"# target: python {python_version()} on {platform_tag()}\n"
              "# requirements: " + "; ".join(wanted) + "\n")
    return header + body


def _resolve(wanted: list[str]) -> str:
    with tempfile.TemporaryDirectory(prefix="modelpod-lock-") as tmp:
        source = Path(tmp) / "requirements.in"
        source.write_text("".join(f"{r}\n" for r in wanted))
        out = Path(tmp) / "requirements.lock"
        run_uv(["pip", "compile", str(source), "-o", str(out), "--generate-hashes", "--no-header", "--no-annotate",
                "--python", sys.executable, "--quiet"], what="resolving the requirements " + ", ".join(wanted))
        return out.read_text()
