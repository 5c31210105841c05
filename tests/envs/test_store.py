"""The environment store: built once under a lock, renamed into place, reused offline, pruned.

Real uv builds into a store of the test's own (the packages come from uv's cache after the first)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelpod.envs.requirements import compile_lock
from modelpod.envs.store import INFO_FILE, EnvSource, EnvStore, modelpod_home
from modelpod.errors import EnvBuildError


@pytest.fixture(scope="module")
def six_lock() -> str:
    return compile_lock(["six==1.16.0"])


def run_in_env(python: str, code: str) -> str:
    return subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_an_environment_is_built_once_and_reused_without_uv(tmp_path: Path, six_lock: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    store = EnvStore(tmp_path)
    lines: list[str] = []
    env = store.ensure(EnvSource(lock=six_lock, label="pkg"), used_by=str(tmp_path / "pkg"), progress=lines.append)
    assert any("installing" in line for line in lines) and any("built environment" in line for line in lines)
    assert run_in_env(env.python, "import six, sys; print(six.__version__)") == "1.16.0"
    # its own interpreter: the server's site-packages (httpx, orjson...) are not on its path
    assert run_in_env(env.python, "import importlib.util as u; print(u.find_spec('orjson') is None)") == "True"
    created = env.info["created"]
    env.release()
    monkeypatch.setenv("MODELPOD_UV", "/bin/false")  # any uv call would now fail
    again = store.ensure(EnvSource(lock=six_lock, label="pkg"))
    assert again.path == env.path and again.info["created"] == created
    again.release()
    assert not list(store.root.glob(".tmp-*"))


def test_the_key_covers_lock_python_and_platform(six_lock: str) -> None:
    base = EnvSource(lock=six_lock)
    assert base.key == EnvSource(lock=six_lock).key
    assert len({base.key, EnvSource(lock=six_lock + "\n").key, EnvSource(lock=six_lock, python="3.99").key,
                EnvSource(lock=six_lock, platform="plan9-mips").key, EnvSource(requirements=("six",)).key}) == 5


def test_concurrent_builders_build_it_once(tmp_path: Path, six_lock: str) -> None:
    lock_file = tmp_path / "lock.txt"
    lock_file.write_text(six_lock)
    code = ("import sys; from pathlib import Path; from modelpod.envs.store import EnvSource, EnvStore; "
            "env = EnvStore(sys.argv[1]).ensure(EnvSource(lock=Path(sys.argv[2]).read_text())); "
            "print(env.key, env.info['created'])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "home"), str(lock_file)],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1, outs  # the same environment, built by one of them
    envs = [p for p in (tmp_path / "home" / "envs").iterdir() if p.is_dir()]
    assert [p.name for p in envs] == [outs[0].split()[0]]


def test_a_half_built_environment_is_never_used(tmp_path: Path, six_lock: str) -> None:
    store = EnvStore(tmp_path)
    source = EnvSource(lock=six_lock)
    store.root.mkdir(parents=True)
    half = store.root / f".tmp-{source.key}-dead"
    (half / "bin").mkdir(parents=True)
    incomplete = store.root / source.key  # a folder without its info file is not an environment
    (incomplete / "bin").mkdir(parents=True)
    (incomplete / "junk").write_text("x")
    env = store.ensure(source, used_by=str(tmp_path))  # neither is taken for a built environment: both are cleared, then it is built
    assert not half.exists() and not (incomplete / "junk").exists()
    assert (env.path / INFO_FILE).is_file() and run_in_env(env.python, "import six; print(six.__version__)") == "1.16.0"
    env.release()
    (store.root / ".tmp-0123456789abcdef-dead").mkdir()  # a dead build of another environment
    assert store.prune() == [(".tmp-0123456789abcdef-dead", "half-built")]


def test_an_uninstallable_lock_fails_with_uvs_message_and_leaves_nothing(tmp_path: Path, six_lock: str) -> None:
    store = EnvStore(tmp_path)
    tampered = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, six_lock)  # no file matches its hash
    with pytest.raises(EnvBuildError) as caught:
        store.ensure(EnvSource(lock=tampered, label="tampered-package"))
    assert "tampered-package" in str(caught.value) and "uv exited with" in str(caught.value)
    assert [p.name for p in store.root.iterdir() if p.is_dir()] == []


def test_list_and_prune(tmp_path: Path, six_lock: str) -> None:
    store = EnvStore(tmp_path)
    user = tmp_path / "pkg"
    user.mkdir()
    env = store.ensure(EnvSource(lock=six_lock), used_by=str(user))
    (record,) = store.list()
    assert record.key == env.key and record.packages["six"] == "1.16.0" and record.used_by == [str(user)]
    assert record.in_use and 0 < record.unshared <= record.size
    assert store.prune(everything=True) == []  # in use: left alone, even with --all
    env.release()
    assert not store.list()[0].in_use
    assert store.prune() == []  # its package still exists
    user.rmdir()
    assert store.prune() == [(env.key, "no package that used it is left")]
    assert store.list() == []
    assert (store.root / f"{env.key}.lock").is_file()  # kept: a process may hold it open, waiting


def test_the_home_is_modelpod_home_else_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELPOD_HOME", str(tmp_path / "h"))
    assert modelpod_home() == tmp_path / "h"
    monkeypatch.delenv("MODELPOD_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    if sys.platform != "darwin":
        assert modelpod_home() == tmp_path / "c" / "modelpod"
    assert json.loads(json.dumps(str(modelpod_home())))
    os.environ.pop("XDG_CACHE_HOME")
