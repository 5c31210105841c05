"""Start a worker for a package given by path: what a program in another language runs.

    python -m modelpod.runtime.launch PATH --fd N

``PATH`` is a package folder or archive (an archive is extracted once, into
``$TMPDIR/modelpod-<pid>-*``, removed when the worker ends). A package with an environment of its
own (a lock, or requirements in its manifest: :func:`modelpod.runtime.isolated.package_environment`,
the same rule ``modelpod.load(..., isolated=True)`` uses) has it built or found first (progress on
stderr), then this process becomes that environment's worker (``os.execv``, same pid, the
environment's shared lock kept open across the exec so ``modelpod env prune`` sees it in use);
any other package is served by this interpreter's worker, in this process.

Either way the worker's hello names the resolved folder as ``package``: the program that started
it sends that folder as the ``root`` of its ``load`` (``docs/worker-protocol.md``). When the
package cannot be resolved, or its environment cannot be built, this program still speaks the
bridge: it greets, and answers the ``load`` with ``failed`` and the reason, so the caller tells a
broken package from an interpreter without modelpod (which exits before any hello).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path


def _progress(line: str) -> None:
    print(f"modelpod: {line}", file=sys.stderr, flush=True)


def _fail(fd: int, message: str) -> int:
    """Greet, then refuse the load with ``message`` (the caller shows it as the model's failure)."""
    from modelpod.bridge.protocol import Channel
    from modelpod.runtime.worker import hello_message

    channel = Channel(socket.socket(fileno=fd))
    try:
        channel.send(hello_message())
        channel.recv()  # the load
        channel.send({"kind": "failed", "message": message})
    except (EOFError, OSError):
        pass
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelpod-launch", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the package folder or archive")
    parser.add_argument("--fd", type=int, required=True, help="the inherited socket to speak the bridge on")
    args = parser.parse_args(argv)

    from modelpod.package.manifest import read_manifest
    from modelpod.runtime.isolated import package_environment
    from modelpod.runtime.model import resolve_package

    given = Path(args.path)
    tmp = None
    try:
        root, tmp = resolve_package(given)
        manifest = read_manifest(root, verify_hashes=True)  # the worker loads without checking again
        env = package_environment(root, manifest, str(given.resolve()), progress=_progress)
    except Exception as exc:  # noqa: BLE001 - reported over the bridge, as a worker's failed load
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        return _fail(args.fd, f"{type(exc).__name__}: {exc}")
    worker_args = ["--fd", str(args.fd), "--package", str(root)]
    if tmp is not None:
        worker_args += ["--cleanup", str(tmp)]
    if env is None:
        from modelpod.runtime.worker import main as worker_main

        return worker_main(worker_args)
    from modelpod.runtime.workerproc import worker_command

    lock_fd = env.lock_fd()
    if lock_fd is not None:
        os.set_inheritable(lock_fd, True)  # held by the worker until it exits
    command = worker_command(env.python) + worker_args
    sys.stderr.flush()
    os.execv(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
