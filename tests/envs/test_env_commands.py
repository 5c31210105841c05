"""``modelpod env build | list | prune`` as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.cli import modelpod
from tests.helpers.isolated import write_modelarts_pillow
from tests.helpers.packages import pack_code

ECHO = """
    def get_model(data_dir):
        return lambda x: {"y": x}
"""
SPEC = [{"name": "x", "dtype": "float32", "shape": ("n",)}]


def test_build_list_prune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPOD_HOME", str(tmp_path / "home"))
    package = pack_code(tmp_path / "pkg", "pkg", ECHO, SPEC, [{**SPEC[0], "name": "y"}], requirements=["six==1.16.0"])
    listed = json.loads(modelpod("env", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["packages"]["six"] == "1.16.0"  # packing built it
    assert listed[0]["used_by"] == [str(package.resolve())] and not listed[0]["in_use"]

    assert "1 environment folder(s) removed" in modelpod("env", "prune", "--all").stdout
    built = modelpod("env", "build", str(package))
    assert built.returncode == 0, built.stderr
    assert "installing" in built.stdout and f"environment {listed[0]['key']}" in built.stdout
    again = modelpod("env", "build", str(package))
    assert "installing" not in again.stdout and "ready" in again.stdout

    table = modelpod("env", "list")
    assert listed[0]["key"] in table.stdout and "six==1.16.0" in table.stdout
    assert "0 environment folder(s) removed" in modelpod("env", "prune").stdout  # its package is still there
    shutil.rmtree(package)
    pruned = modelpod("env", "prune")
    assert f"removed {listed[0]['key']}: no package that used it is left" in pruned.stdout
    assert json.loads(modelpod("env", "list", "--json").stdout) == []


def test_build_reports_what_cannot_be_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPOD_HOME", str(tmp_path / "home"))
    folder = write_modelarts_pillow(tmp_path / "ma", extra_dependency="modelpod-test-no-such-package-4f1e")
    done = modelpod("env", "build", str(folder))
    assert done.returncode == 1
    assert "modelpod-test-no-such-package-4f1e" in done.stderr and "uv exited with" in done.stderr
    assert not (tmp_path / "home" / "envs").exists() or not [
        p for p in (tmp_path / "home" / "envs").iterdir() if p.is_dir()]


def test_env_is_in_the_help() -> None:
    shown = modelpod("--help").stdout
    assert "env" in shown
    assert all(word in modelpod("env", "--help").stdout for word in ("build", "list", "prune"))
