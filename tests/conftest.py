"""Shared fixtures (defined beside the server helpers in tests/helpers/servers.py).

Every test session gets a modelpod home of its own (``MODELPOD_HOME``, inherited by the servers the
tests start): per-package environments are built there once and shared by the session's tests,
and the user's own home is never touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.servers import serve_factory  # noqa: F401 - the fixture


@pytest.fixture(scope="session", autouse=True)
def modelpod_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("modelpod-home")
    before = os.environ.get("MODELPOD_HOME")
    os.environ["MODELPOD_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("MODELPOD_HOME", None)
    else:
        os.environ["MODELPOD_HOME"] = before


@pytest.fixture(scope="session")
def numpy_packages(tmp_path_factory: pytest.TempPathFactory, modelpod_home: Path) -> dict[str, Path]:
    """Two packages, one locked to numpy 1.26.4 and one to a numpy 2 release (environments built)."""
    from tests.helpers.isolated import NUMPY_1, NUMPY_2, pack_numpy_reporter

    root = tmp_path_factory.mktemp("numpy-packages")
    return {"np1": pack_numpy_reporter(root / "np1", "np1", NUMPY_1),
            "np2": pack_numpy_reporter(root / "np2", "np2", NUMPY_2)}
