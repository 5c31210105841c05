"""Running the ``modelpod`` command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(sys.executable).with_name("modelpod")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "modelpod.cli"]


def modelpod(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``modelpod ARGS`` with a wide, colourless terminal; stdout and stderr captured."""
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)
