"""Running ``uv`` (PyPI ``uv``): which binary, and its failures as EnvBuildError with uv's own words."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from modelpod.errors import EnvBuildError

_TAIL = 3000


def uv_binary() -> str:
    """``$MODELPOD_UV``, else the binary of the installed ``uv`` package, else ``uv`` on PATH."""
    configured = os.environ.get("MODELPOD_UV")
    if configured:
        return configured
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvBuildError("uv is not installed: per-model environments need it (pip install uv)")


def run_uv(args: Sequence[str], what: str, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    """Run uv with ``args``; its stderr on success, EnvBuildError naming ``what`` and quoting uv otherwise."""
    command = [uv_binary(), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {}), "NO_COLOR": "1"})
    except OSError as exc:
        raise EnvBuildError(f"{what} failed: cannot run uv ({exc})") from None
    except subprocess.TimeoutExpired:
        raise EnvBuildError(f"{what} failed: uv did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout or "").strip()
        if len(said) > _TAIL:
            said = "..." + said[-_TAIL:]
        raise EnvBuildError(f"{what} failed (uv exited with {done.returncode}):\n{said}")
    return done.stderr
