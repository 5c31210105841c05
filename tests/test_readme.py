"""Every snippet of README.md runs as written against what ``make serve`` serves.

The rule (what this test runs, in README order, in one temporary folder):

* ```` ```python ```` blocks run one after another in one namespace. A block whose first line is a
  comment naming a file (``# my_code/main.py``) is that file's text: it is written there, not run.
* In ```` ```bash ```` blocks the lines that start with ``curl`` or ``modelpod`` run in bash and must
  succeed (exit 0; a curl answer must not be an ``{"error": ...}``). Every other line (``make``, ``pip``,
  ``cmake``, a program built by them) is set-up this test does not redo.
* A block right after the line ``<!-- readme-test: not run (why) -->`` is left out; blocks in other
  languages (the C++ section, tested by tests/cpp) never run.
* The server is ``modelpod serve`` of the repository ``examples/build_examples.py`` writes (what
  ``make serve`` serves), on free ports: the README's ``8080`` (HTTP) and ``8081`` (gRPC) stand for them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.servers import ROOT, running_server

pytestmark = pytest.mark.timeout(300)
README = ROOT.parent / "README.md"
NOT_RUN = re.compile(r"^<!-- readme-test: not run \(.+\) -->$")
FILE_LINE = re.compile(r"^# ([\w./-]+\.\w+)\s*$")
COMMANDS = ("curl ", "modelpod ")


@dataclass
class Block:
    language: str
    line: int  # where its text starts in README.md (1-based)
    text: str
    skipped: bool


def blocks(text: str) -> list[Block]:
    """The README's fenced blocks, each marked skipped when a not-run line comes right before it."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)", lines[i])
        if fence is None:
            i += 1
            continue
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        found.append(Block(fence.group(1), i + 2, "\n".join(lines[i + 1:end]), bool(NOT_RUN.match(previous))))
        i = end + 1
    return found


def test_the_not_run_marks_and_file_blocks_are_few_and_explained() -> None:
    found = blocks(README.read_text())
    runnable = [b for b in found if b.language in ("python", "bash") and not b.skipped]
    assert len(runnable) >= 8, "most of the README's snippets run"
    assert sum(b.skipped for b in found) <= 5
    assert any(FILE_LINE.match(b.text.splitlines()[0]) for b in runnable if b.language == "python")


def _build_examples(outdir: Path) -> Path:
    spec = importlib.util.spec_from_file_location("build_examples", ROOT.parent / "examples" / "build_examples.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    module.build(outdir)
    return outdir / "repository"


def test_every_snippet_runs_against_make_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repository = _build_examples(tmp_path / "examples")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with running_server(repository, tmp_path) as server:
        ports = {"8080": str(server.http_port), "8081": str(server.grpc_port)}

        def on_our_ports(text: str) -> str:
            return re.sub(r"\b(8080|8081)\b", lambda m: ports[m.group(1)], text)

        namespace: dict = {"__name__": "__readme__"}
        ran = 0
        for block in blocks(README.read_text()):
            if block.skipped or block.language not in ("python", "bash"):
                continue
            where = f"README.md line {block.line}"
            if block.language == "python":
                first = block.text.splitlines()[0]
                named = FILE_LINE.match(first)
                if named:
                    (work / named.group(1)).parent.mkdir(parents=True, exist_ok=True)
                    (work / named.group(1)).write_text(block.text + "\n")
                    continue
                try:
                    exec(compile(on_our_ports(block.text), where, "exec"), namespace)  # noqa: S102 - the README's
                except Exception as exc:  # noqa: BLE001 - say which snippet
                    raise AssertionError(f"the python snippet at {where} failed: {type(exc).__name__}: {exc}") from exc
                ran += 1
                continue
            for offset, line in enumerate(block.text.splitlines()):
                if not line.startswith(COMMANDS):
                    continue
                result = subprocess.run(["bash", "-c", on_our_ports(line)], capture_output=True, text=True,
                                        env=env, timeout=120)
                at = f"README.md line {block.line + offset}: {line}"
                assert result.returncode == 0, f"{at}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
                if line.startswith("curl "):
                    assert '"error"' not in result.stdout, f"{at}\n{result.stdout}"
                ran += 1
    assert ran >= 10
