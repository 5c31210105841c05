"""What killed servers leave behind, and removing it at the next start.

Every shared-memory segment and temporary folder modelpod creates is named
``modelpod-<pid>-<random>``, ``<pid>`` being the process that owns it: the server for its request
segments and an archive's extraction folder, and also the server (not the worker) for a worker
process's answer segments (``modelpod-<server pid>-w<id>-...``). A clean stop removes them all, and
the server unlinks a dead worker's; SIGKILL of the whole process group can't, so ``modelpod serve``
calls :func:`remove_stale`
once at start: it removes the entries whose pid is no longer running and never touches a live
pid's (nor anything not named that way).

Pids are per pid namespace: containers that share ``/dev/shm`` or the temp folder but not their
pids would see each other's servers as gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from modelpod.bridge.shm import owned_prefix

__all__ = ["owned_prefix", "pid_alive", "remove_stale"]

_OWNED = re.compile(r"^modelpod-(\d+)-")


def pid_alive(pid: int) -> bool:
    """False only when ``pid`` is surely not running (no such process, or a zombie)."""
    if pid <= 0:
        return True  # not a process id: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited: only its exit code is left


def remove_stale(tmpdir: str | os.PathLike[str] | None = None, shm_dir: str | os.PathLike[str] = "/dev/shm",
                 ) -> list[str]:
    """Remove ``modelpod-<pid>-*`` entries of dead pids from ``tmpdir`` (default: the temp folder) and
    ``shm_dir``; returns the paths removed. A folder that is missing or unreadable is skipped."""
    removed: list[str] = []
    alive: dict[int, bool] = {}
    folders = dict.fromkeys([Path(tmpdir if tmpdir is not None else tempfile.gettempdir()), Path(shm_dir)])
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _OWNED.match(entry.name)
            if match is None:
                continue
            pid = int(match.group(1))
            if pid not in alive:
                alive[pid] = pid_alive(pid)
            if alive[pid]:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                else:
                    continue
            except OSError:  # gone meanwhile, or not ours to remove (another user's)
                continue
            removed.append(entry.path)
    return removed
