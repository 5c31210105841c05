"""``modelpod env build | list | prune``: the per-package environments from the command line."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelpod.errors import EnvBuildError, ModelpodError

env_app = typer.Typer(help="Per-package Python environments, built from each package's locked requirements.",
                      no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _megabytes(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB"


@env_app.command("build")
def build(
    package: Annotated[Path, typer.Argument(help="A package (folder or archive) or a ModelArts model folder.")],
) -> None:
    """Build (or find) the environment PACKAGE runs in, from its lock (or its requirements)."""
    from modelpod.package.manifest import read_manifest
    from modelpod.runtime.isolated import env_source, open_environment
    from modelpod.runtime.model import resolve_package
    from modelpod.runtime.modelarts import is_modelarts_folder

    started = time.monotonic()
    try:
        modelarts = is_modelarts_folder(package)
        root, tmp = (package, None) if modelarts else resolve_package(package)
        try:
            manifest = None if modelarts else read_manifest(root)
            source = env_source(root, manifest.requirements if manifest else None, modelarts=modelarts,
                                force=True, platform=manifest.platform if manifest else "python")
            assert source is not None
            env = open_environment(source, used_by=str(package.resolve()),
                                   progress=lambda line: console.print(f"  {escape(line)}", highlight=False))
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    except (ModelpodError, ValueError, OSError) as exc:
        _fail(str(exc))
    packages = env.info.get("packages", {})
    console.print(f"[green]environment {env.key}[/] ready in {time.monotonic() - started:.1f} s: {env.path} "
                  f"(python {env.info.get('python')}, {len(packages)} packages)", highlight=False)
    env.release()


@env_app.command("list")
def list_envs(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every built environment: key, Python, size, packages, and which packages use it."""
    from modelpod.envs.store import EnvStore

    store = EnvStore()
    try:
        records = store.list()
    except EnvBuildError as exc:
        _fail(str(exc))
    if as_json:
        console.print_json(json.dumps([{
            "key": r.key, "path": str(r.path), "python": r.python, "platform": r.platform, "packages": r.packages,
            "used_by": r.used_by, "created": r.created, "size_bytes": r.size, "unshared_bytes": r.unshared,
            "in_use": r.in_use} for r in records]))
        return
    if not records:
        console.print(f"no environments under {store.root}")
        return
    table = Table(title=f"environments under {store.root}", title_justify="left", show_edge=False)
    table.add_column("key", no_wrap=True, min_width=16)
    for column in ("python", "size", "own disk", "packages", "used by", "in use"):
        table.add_column(column)
    for r in records:
        shown = "\n".join(f"{k}=={v}" for k, v in sorted(r.packages.items()))
        table.add_row(r.key, r.python, _megabytes(r.size), _megabytes(r.unshared), escape(shown),
                      escape("\n".join(r.used_by) or "-"), "yes" if r.in_use else "no")
    console.print(table)
    console.print("own disk: bytes not hard-linked with uv's cache or another environment")


@env_app.command("prune")
def prune(
    everything: Annotated[bool, typer.Option("--all", help="Remove every environment not in use.")] = False,
) -> None:
    """Remove half-built environments and those no recorded package exists for (in-use ones stay)."""
    from modelpod.envs.store import EnvStore

    removed = EnvStore().prune(everything=everything)
    for key, why in removed:
        console.print(f"removed {key}: {why}", highlight=False)
    console.print(f"{len(removed)} environment folder(s) removed")
