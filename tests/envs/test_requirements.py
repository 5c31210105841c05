"""Requirements: ModelArts dependencies, the worker's own needs, and locking with uv (real PyPI)."""

from __future__ import annotations

import pytest

from modelpod.envs.requirements import (
    compile_lock,
    modelarts_requirements,
    platform_tag,
    python_version,
    read_lock,
    requirement_name,
    worker_requirements,
)
from modelpod.errors import EnvBuildError


def test_modelarts_dependencies_become_pip_requirements() -> None:
    config = {"dependencies": [{"installer": "pip", "packages": [
        {"restraint": "EXACT", "package_version": "1.26.4", "package_name": "numpy"},
        {"restraint": "ATLEAST", "package_version": "9.0", "package_name": "Pillow"},
        {"restraint": "ATMOST", "package_version": "3.0", "package_name": "h5py"},
        {"package_name": "inflection"},
        {"package_name": "six", "package_version": "1.16.0"},
    ]}]}
    assert modelarts_requirements(config) == ["numpy==1.26.4", "Pillow>=9.0", "h5py<=3.0", "inflection",
                                              "six==1.16.0"]
    assert modelarts_requirements({}) == []


@pytest.mark.parametrize("config, match", [
    ({"dependencies": [{"installer": "conda", "packages": []}]}, "installer 'conda'"),
    ({"dependencies": [{"packages": [{"package_version": "1"}]}]}, "no package_name"),
    ({"dependencies": [{"packages": [{"package_name": "x", "package_version": "1", "restraint": "ABOUT"}]}]},
     "restraint 'ABOUT'"),
    ({"dependencies": "numpy"}, "must be a list"),
])
def test_modelarts_dependencies_that_are_not_pip_are_refused(config: dict, match: str) -> None:
    with pytest.raises(EnvBuildError, match=match):
        modelarts_requirements(config)


def test_the_worker_needs_numpy_pydantic_and_ml_dtypes_with_modelpods_bounds() -> None:
    needs = worker_requirements()
    assert [requirement_name(r) for r in needs] == ["numpy", "pydantic", "ml-dtypes"]
    assert any(r.startswith("numpy>=") for r in needs)


def test_a_lock_pins_everything_for_this_python_and_platform() -> None:
    lock = compile_lock(["six==1.16.0"])
    info = read_lock(lock)
    assert (info.python, info.platform) == (python_version(), platform_tag())
    assert info.pins["six"] == "1.16.0"
    assert {"numpy", "pydantic", "ml-dtypes"} <= set(info.pins)  # the worker's needs, resolved with them
    assert "--hash=sha256:" in lock
    assert compile_lock(["six==1.16.0"]) == lock  # the same inputs give the same lock


def test_the_users_pin_of_a_worker_package_wins() -> None:
    assert read_lock(compile_lock(["numpy==1.26.4"])).pins["numpy"] == "1.26.4"


@pytest.mark.parametrize("requirement, said", [
    ("modelpod-test-no-such-package-4f1e==1.0", "modelpod-test-no-such-package-4f1e"),
    ("numpy==0.0.1", "numpy"),
])
def test_an_unresolvable_requirement_fails_with_the_resolvers_message(requirement: str, said: str) -> None:
    with pytest.raises(EnvBuildError) as caught:
        compile_lock([requirement])
    message = str(caught.value)
    assert "resolving the requirements" in message and said in message
    assert "uv exited with" in message


def test_pip_options_are_not_requirements() -> None:
    with pytest.raises(EnvBuildError, match="not pip options"):
        compile_lock(["--index-url=http://evil.example/simple"])
