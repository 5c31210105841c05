"""Running the ``modelpod`` command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(sys.executable).with_name("modelpod")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "modelpod.cli"]


def modelpod(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``modelpod ARGS`` with a wide, colourless terminal (and ``env`` on top of this process's
    environment); stdout and stderr captured."""
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb", **(env or {}))
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def without_module(folder: Path, module: str) -> dict[str, str]:
    """Environment variables under which ``import module`` fails in a subprocess as it does where the
    module is not installed: a package of that name that raises ModuleNotFoundError, first on PYTHONPATH."""
    fake = folder / f"without-{module}" / module
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))}
