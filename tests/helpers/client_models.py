"""Small python-platform packages for the client SDK, transport and bench tests.

* ``pack_echo(path, dtype)``: ``x`` (``("rows", "cols")``) -> ``y = x``, any dtype;
* ``pack_affine(path)``: ``x`` float32 (any 2-D) -> ``y = 2x + 1`` float32, ``k`` int32 -> ``k + 1``;
* ``pack_segment(path, transport)``: ``image`` float32 (h, w, 3) -> ``mask`` float32 (n, 8, 8, c),
  a deterministic function of the image (the shapes of the int8 seed, made small);
* ``pack_counter(path)``: ``x`` float32 (n,) -> ``y = x``; every call appends a byte to a
  log file next to the package so tests can count what the server ran (``calls(package)``);
* ``pack_raises(path)``: raises when ``x`` holds a negative number (a 500), counting calls too.

``build_repository(root)`` lays them all out once per session (``<model>/1/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


from tests.helpers.packages import ALL_DTYPES as DTYPES  # noqa: E402,F401 (re-exported for the client tests)
from tests.helpers.packages import pack_code as _pack  # noqa: E402
from tests.helpers.packages import pack_echo, sample  # noqa: E402,F401

def pack_affine(path: Path) -> Path:
    main = """
        import numpy as np

        def get_model(data_dir):
            def affine(x, k):
                return {"y": (x * 2 + 1).astype(np.float32), "k1": k + 1}
            return affine
    """
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    k = np.arange(3, dtype=np.int32)
    return _pack(
        path, "affine", main,
        [{"name": "x", "dtype": "float32", "shape": ("rows", "cols")}, {"name": "k", "dtype": "int32", "shape": (None,)}],
        [{"name": "y", "dtype": "float32", "shape": ("rows", "cols")}, {"name": "k1", "dtype": "int32", "shape": (None,)}],
        {"x": x, "k": k}, {"y": x * 2 + 1, "k1": k + 1},
    )


SEGMENT_MAIN = """
    import numpy as np

    def get_model(data_dir):
        def segment(image):
            # n boxes x (s x s) mask x c classes, each a smooth function of the image's statistics
            n, s, c = 6, 8, 5
            mean = image.mean(axis=(0, 1), dtype=np.float64)
            grid = np.linspace(0.0, 1.0, s, dtype=np.float32)
            base = np.add.outer(grid, grid)[None, :, :, None]
            box = (np.arange(n, dtype=np.float32) / n)[:, None, None, None]
            cls = (np.arange(c, dtype=np.float32) / c)[None, None, None, :]
            logits = base * 3 - 3 + box + cls * float(mean.sum() % 1.0)
            return {"mask": (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)}
        return segment
"""


def pack_segment(path: Path, transport: dict[str, str] | None = None) -> Path:
    return _pack(path, "segment", SEGMENT_MAIN, [{"name": "image", "dtype": "float32", "shape": ("h", "w", 3)}],
                 [{"name": "mask", "dtype": "float32", "shape": (6, 8, 8, 5)}], transport=transport)


COUNTER_MAIN = """
    import os

    def get_model(data_dir):
        with open(os.path.join(data_dir, "log_path.txt")) as f:
            log = f.read().strip()  # outside the package: its payload hashes must not change

        def counter(x):
            with open(log, "ab") as f:
                f.write(b".")
            if (x < 0).any():
                raise RuntimeError("negative input reached the model")
            return {"y": x}
        return counter
"""


def pack_counter(path: Path, name: str = "counter") -> Path:
    data = path.parent / f"{path.name}-data"
    data.mkdir(parents=True, exist_ok=True)
    log = path.parent / f"{path.name}-calls.log"
    log.write_bytes(b"")
    (data / "log_path.txt").write_text(str(log.resolve()))
    return _pack(path, name, COUNTER_MAIN, [{"name": "x", "dtype": "float32", "shape": ("n",)}],
                 [{"name": "y", "dtype": "float32", "shape": ("n",)}], data_paths=[str(data / "log_path.txt")])


def calls(package: Path) -> int:
    """How many times the counter model packed at ``package`` has run."""
    package = Path(package).resolve()
    return (package.parent / f"{package.name}-calls.log").stat().st_size


def build_repository(root: Path) -> Path:
    """A repository folder with every model above (built once per session)."""
    repo = root / "repo"
    if (root / "repo.done").exists():
        return repo
    work = root / "packages"
    packages = {f"echo_{d}": pack_echo(work / f"echo_{d}", d) for d in DTYPES}
    packages["affine"] = pack_affine(work / "affine")
    packages["segment"] = pack_segment(work / "segment", transport={"mask": "uint8"})
    packages["counter"] = pack_counter(work / "counter")
    for name, package in packages.items():
        dest = repo / name / "1"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.symlink_to(package.resolve(), target_is_directory=True)
    (root / "repo.done").write_text("ok")
    return repo
