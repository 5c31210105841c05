"""Packages with requirements of their own (built once per test session, in the session's MODELPOD_HOME).

* ``pack_numpy_reporter(path, name, numpy_pin)``: ``x`` -> ``y = numpy.cumsum(x)`` computed with the
  package's own numpy, ``numpy`` = its ``numpy.__version__``, ``sees_server`` = whether it can import
  ``orjson`` (a server dependency its environment does not have);
* ``write_modelarts_pillow(folder)``: a ModelArts folder whose ``config.json`` depends on an exact
  Pillow (not the server's) and ``inflection`` (which the server's venv lacks); its
  ``customize_service.py`` decodes an uploaded image with PIL.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from tests.helpers.packages import pack_code

NUMPY_1 = "1.26.4"
NUMPY_2 = "2.2.6"
PILLOW = "11.0.0"

_REPORTER = """
    import importlib.util

    import numpy


    def get_model(data_dir):
        def run(x):
            sees = importlib.util.find_spec("orjson") is not None
            return {"y": numpy.cumsum(x).astype(numpy.float32),
                    "numpy": numpy.array([numpy.__version__], dtype=object),
                    "sees_server": numpy.array([sees])}
        return run
"""
REPORTER_IN = [{"name": "x", "dtype": "float32", "shape": ("n",)}]
REPORTER_OUT = [{"name": "y", "dtype": "float32", "shape": ("n",)},
                {"name": "numpy", "dtype": "string", "shape": (1,)},
                {"name": "sees_server", "dtype": "bool", "shape": (1,)}]


def pack_numpy_reporter(path: Path, name: str, numpy_pin: str, **options: object) -> Path:
    x = np.arange(4, dtype=np.float32)
    return pack_code(path, name, _REPORTER, REPORTER_IN, REPORTER_OUT, {"x": x},
                     {"y": np.cumsum(x).astype(np.float32)}, requirements=[f"numpy=={numpy_pin}"],
                     **options)


REPORTER_SERVICE = """
import numpy

from modelpod import ModelService


class Reporter(ModelService):
    def preprocess(self, request):
        return {"x": numpy.asarray(request["x"], dtype=numpy.float32)}

    def postprocess(self, outputs):
        return {"total": float(outputs["y"][-1]), "numpy": numpy.__version__}
"""


def pack_numpy_reporter_with_hooks(path: Path, name: str, numpy_pin: str) -> Path:
    """The reporter with a ``service.py`` (ModelService) whose hooks use the package's numpy."""
    source = path.parent / f"{path.name}-service.py"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(REPORTER_SERVICE)
    return pack_numpy_reporter(path, name, numpy_pin, service_path=source)


_SERVICE = '''
    import io

    import inflection
    import PIL
    from PIL import Image
    from model_service.tfserving_model_service import TfServingBaseService


    class ImageInfo(TfServingBaseService):
        def _preprocess(self, data):
            files = data["images"]
            return [Image.open(io.BytesIO(f.read())) for f in files.values()]

        def _inference(self, images):
            return [{"size": list(im.size), "mode": im.mode} for im in images]

        def _postprocess(self, results):
            return {"results": results, "pillow": PIL.__version__,
                    "label": inflection.titleize("image_info_service")}
'''


def write_modelarts_pillow(folder: Path, extra_dependency: str | None = None) -> Path:
    """The folder (ModelArts' layout, served unchanged); ``extra_dependency`` adds a package name."""
    folder.mkdir(parents=True, exist_ok=True)
    packages = [{"package_name": "Pillow", "package_version": PILLOW, "restraint": "EXACT"},
                {"package_name": "inflection", "package_version": "0.5", "restraint": "ATLEAST"}]
    if extra_dependency:
        packages.append({"package_name": extra_dependency})
    config = {"model_type": "TensorFlow", "model_algorithm": "image_info", "runtime": "python3.11",
              "dependencies": [{"installer": "pip", "packages": packages}]}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "customize_service.py").write_text(textwrap.dedent(_SERVICE))
    return folder


def png_bytes(width: int = 5, height: int = 3) -> bytes:
    """A real PNG, written with the test process's own Pillow."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()
