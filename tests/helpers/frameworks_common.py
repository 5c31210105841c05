"""Shared pieces of the framework backend tests (torchscript, pytorch, onnx).

Not a conftest: the test modules import what they need from here explicitly.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from modelpod.package.vectors import load_npz, save_npz
from tests.helpers.addition import INPUT_SPEC

#: The seed model: out = x + y (inputs as in tests.helpers.addition; frameworks may not know the
#: output's length, so it is left open).
ADDITION_INPUT_SPEC = INPUT_SPEC
ADDITION_OUTPUT_SPEC = [{"name": "out", "dtype": "float32", "shape": (None,)}]
ADDITION_INPUTS = {
    "x": np.arange(5, dtype=np.float32),
    "y": np.arange(5, dtype=np.float32),
}
ADDITION_EXPECTED = {"out": np.array([0, 2, 4, 6, 8], dtype=np.float32)}

#: The detector: a [batch, H, W, 3] uint8 image in, boxes [num_det, 4] and scores [num_det] out.
DETECTOR_INPUT_SPEC = [{"name": "image", "dtype": "uint8", "shape": ("batch", None, None, 3)}]
DETECTOR_OUTPUT_SPEC = [
    {"name": "boxes", "dtype": "float32", "shape": ("num_det", 4)},
    {"name": "scores", "dtype": "float32", "shape": ("num_det",)},
]

#: Source of a small conv net detector, written to a file so both TorchScript (which needs the
#: source on disk) and a pytorch package (which ships it as code) can use the very same code.
DETECTOR_SOURCE = textwrap.dedent(
    '''
    """A toy detector: conv features, a per-pixel score, one box per pixel scoring above 0.5."""
    from typing import Dict

    import torch


    class Detector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1)
            self.head = torch.nn.Conv2d(4, 1, kernel_size=1)

        def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
            x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
            x = torch.relu(self.features(x))
            score_map = torch.sigmoid(self.head(x))[:, 0]
            keep = score_map > 0.5
            where = torch.nonzero(keep)
            scores = score_map[keep]
            yx = where[:, 1:].to(torch.float32)
            boxes = torch.cat([yx - 2.0, yx + 2.0], dim=1)
            return {"boxes": boxes, "scores": scores}


    def get_model(data_dir: str) -> Detector:
        model = Detector()
        model.load_state_dict(torch.load(data_dir + "/weights.pt", weights_only=True))
        return model
    '''
)


def import_source(folder: Path, module_name: str, source: str) -> ModuleType:
    """Write ``source`` to ``folder/module_name.py`` and import it from that file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module_name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"_modelpod_test_{module_name}_{id(folder)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_image(batch: int = 2, height: int = 12, width: int = 10, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 [batch, H, W, 3] image."""
    return np.random.default_rng(seed).integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)


_FRESH_SCRIPT = """
import sys
from pathlib import Path
import modelpod
from modelpod.package.vectors import load_npz, save_npz
from tests.helpers.addition import INPUT_SPEC
package, inputs, outputs = sys.argv[1:4]
with modelpod.load(package) as model:
    save_npz(Path(outputs), model.infer(load_npz(Path(inputs))))
print(model.platform)
"""


def infer_in_fresh_process(package: Path, inputs: dict[str, Any], work: Path) -> dict[str, np.ndarray]:
    """Load ``package`` in a new Python process (this venv's interpreter), infer, return the outputs."""
    work.mkdir(parents=True, exist_ok=True)
    save_npz(work / "in.npz", inputs)
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_SCRIPT, str(package), str(work / "in.npz"), str(work / "out.npz")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return load_npz(work / "out.npz")


def leftovers(folder: Path) -> list[str]:
    """Everything in ``folder`` (a failed pack must leave neither the package nor its temp folder)."""
    return sorted(p.name for p in folder.iterdir())
