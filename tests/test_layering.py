"""The source tree's shape: top-level folders import each other without cycles, one error base."""

from __future__ import annotations

import ast
from pathlib import Path

import modelpod
import modelpod.errors as errors

SRC = Path(modelpod.__file__).parent


def folder_imports(package: Path = SRC) -> dict[str, set[str]]:
    """Child folder (or module) of ``package`` -> the other children it imports, lazy imports included."""
    dotted = "modelpod" + "".join(f".{p}" for p in package.relative_to(SRC).parts)
    depth = dotted.count(".") + 1
    graph: dict[str, set[str]] = {}
    for file in package.rglob("*.py"):
        rel = file.relative_to(package).parts
        if rel[0] == "protos" or rel == ("__init__.py",):
            continue
        here = rel[0].removesuffix(".py")
        for node in ast.walk(ast.parse(file.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if name.startswith(dotted + ".") and parts[depth] != here:
                    graph.setdefault(here, set()).add(parts[depth])
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between folders (as a path), or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycles_between_top_level_folders() -> None:
    graph = folder_imports()  # (the package root's __init__ re-exports the public API: left out)
    assert {"errors", "package", "backends", "runtime", "packers", "codecs", "client", "serving", "bridge",
            "envs"} <= {
        *graph, *(n for targets in graph.values() for n in targets)}
    assert cycle(graph) is None, f"import cycle: {' -> '.join(cycle(graph) or [])}"


def test_no_import_cycles_between_the_parts_of_serving() -> None:
    graph = folder_imports(SRC / "serving")
    assert {"http", "models", "execution", "protocols", "factory"} <= set(graph)
    assert cycle(graph) is None, f"import cycle in serving/: {' -> '.join(cycle(graph) or [])}"


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_every_error_shares_one_base() -> None:
    raised = [errors.SpecError, errors.PackageError, errors.BackendError, errors.ModelError, errors.CodecError,
              errors.TooLargeError, errors.WireError, errors.ServeError, errors.ServerError, errors.RawHttpError,
              errors.BridgeError, errors.WorkerDiedError, errors.WorkerError, errors.WorkerInputError,
              errors.EnvBuildError, errors.FrameworkMissingError, errors.ResponseCountError]
    assert all(issubclass(cls, modelpod.ModelpodError) for cls in raised)
    assert issubclass(modelpod.SpecError, ValueError) and issubclass(modelpod.ModelError, RuntimeError)
    assert issubclass(errors.FrameworkMissingError, errors.BackendError) and issubclass(errors.FrameworkMissingError,
                                                                                        ImportError)
    defined = {n.name for f in SRC.rglob("*.py") for n in ast.walk(ast.parse(f.read_text()))
               if isinstance(n, ast.ClassDef) and n.name.endswith("Error")}
    assert defined == {"ModelpodError", *(cls.__name__ for cls in raised)}, "every error class is in errors.py"
