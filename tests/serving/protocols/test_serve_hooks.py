"""Service hooks: a package carrying ``service.py`` (a ModelService) served on /api/predict/<name>.

The package is the addition model packed with ``pack_python(service_path=...)``. The service reads
JSON, multipart uploads ({field: {filename: file}}) and raw bytes, takes a deploy-time parameter
from the environment, and logs each ``setup()`` call to a file so the test can count them.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import modelpod
from tests.helpers.addition import pack_addition

pytestmark = pytest.mark.timeout(180)

SERVICE_PY = '''\
"""Addition behind hooks: JSON {"x": [...], "y": [...]}, two uploaded files, or b"1,2;3,4"."""

import os

import numpy as np

from modelpod import ModelService, SpecError


def _numbers(text):
    return [float(v) for v in text.replace(",", " ").split()]


class AdditionService(ModelService):
    def setup(self):
        with open(self.config["HOOK_SETUP_LOG"], "a") as log:
            log.write(f"setup {os.getpid()}\\n")
        self.scale = float(self.config.get("HOOK_SCALE", "1"))

    def preprocess(self, request):
        if isinstance(request, bytes):
            if b";" not in request:
                raise SpecError("raw bodies look like b'1,2;3,4' (x;y)")
            x, y = request.decode().split(";")
            return {"kind": "bytes", "x": _numbers(x), "y": _numbers(y)}
        if isinstance(request, dict) and "files" in request:
            files = request["files"]
            names = sorted(files)
            if len(names) != 2:
                raise SpecError(f"upload exactly two files as 'files', got {names}")
            x, y = (_numbers(files[n].read().decode()) for n in names)
            return {"kind": "multipart:" + ",".join(names) + ":" + request.get("note", ""),
                    "x": x, "y": y}
        if isinstance(request, dict):
            if "x" not in request or "y" not in request:
                raise SpecError(f"the JSON body needs 'x' and 'y', got {sorted(request)}")
            return {"kind": "json", "x": request["x"], "y": request["y"], "crash": request.get("crash")}
        raise SpecError(f"unsupported body {type(request).__name__}")

    def inference(self, tensors):
        tensors = dict(tensors)
        kind = tensors.pop("kind")
        crash = tensors.pop("crash", None)
        outputs = self.model.infer({"x": np.asarray(tensors["x"], np.float32),
                                    "y": np.asarray(tensors["y"], np.float32)})
        return {"kind": kind, "crash": crash, **outputs}

    def postprocess(self, outputs):
        if outputs["crash"] == "unserializable":
            return {"handle": object()}
        if outputs["crash"]:
            return {"ratio": 1 / 0}
        return {"out": (outputs["out"] * self.scale).tolist(), "kind": outputs["kind"],
                "model": self.name, "param": self.config.get("HOOK_PARAM")}
'''


@pytest.fixture(scope="module")
def hooks_package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hooks")
    (root / "service_src.py").write_text(SERVICE_PY)
    return pack_addition(root / "adder", name="adder", service_path=root / "service_src.py")


@pytest.fixture
def hooks_server(serve_factory, hooks_package, tmp_path):
    setup_log = tmp_path / "setup.log"
    env = {"HOOK_SETUP_LOG": str(setup_log), "HOOK_SCALE": "10", "HOOK_PARAM": "from-env"}
    server = serve_factory(hooks_package, "--grpc-port", "-1", env=env)
    server.setup_log = setup_log  # type: ignore[attr-defined]
    return server


def test_pack_python_service_path_is_hashed(hooks_package, tmp_path):
    assert (hooks_package / "service.py").read_text() == SERVICE_PY
    manifest = json.loads((hooks_package / "modelpod.json").read_text())
    assert "service.py" in manifest["files"]
    # the package still loads and infers as a plain model
    with modelpod.load(hooks_package) as model:
        assert model.infer({"x": [1.0], "y": [2.0]})["out"].tolist() == [3.0]
    # service.py is covered by the content hash: editing it makes the package fail to load
    (hooks_package / "service.py").write_text(SERVICE_PY + "\n# edited\n")
    try:
        with pytest.raises(modelpod.PackageError, match="service.py"):
            modelpod.load(hooks_package)
    finally:
        (hooks_package / "service.py").write_text(SERVICE_PY)
    with pytest.raises(ValueError, match="service_path"):
        pack_addition(tmp_path / "missing", service_path=tmp_path / "nope.py")


def test_json_multipart_and_raw_bytes(hooks_server):
    url = f"{hooks_server.url}/api/predict/adder"
    r = httpx.post(url, json={"x": [1, 2, 3], "y": [4, 5, 6]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    # HOOK_SCALE=10 and HOOK_PARAM came from the environment into self.config
    assert r.json() == {"out": [50.0, 70.0, 90.0], "kind": "json", "model": "adder", "param": "from-env"}

    files = [("files", ("a.txt", b"1 2", "text/plain")), ("files", ("b.txt", b"0.5 0.25", "text/plain"))]
    r = httpx.post(url, files=files, data={"note": "two-files"})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "multipart:a.txt,b.txt:two-files"
    assert r.json()["out"] == [15.0, 22.5]

    r = httpx.post(url, content=b"1,1;2,2", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "bytes" and r.json()["out"] == [30.0, 30.0]

    # a sub-path reaches the same service
    r = httpx.post(f"{url}/v1/extra", json={"x": [1], "y": [1]})
    assert r.status_code == 200 and r.json()["out"] == [20.0]

    # setup() ran exactly once, in the server process, for all of the above
    lines = hooks_server.setup_log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("setup ")
    assert lines[0].split()[1] == str(hooks_server.process.pid)


def test_hook_errors_are_400_for_input_and_500_for_bugs(hooks_server):
    url = f"{hooks_server.url}/api/predict/adder"
    # SpecError raised by preprocess -> 400 with the service's message
    r = httpx.post(url, json={"x": [1]})
    assert r.status_code == 400
    assert "needs 'x' and 'y'" in r.text
    r = httpx.post(url, files=[("files", ("only.txt", b"1", "text/plain"))])
    assert r.status_code == 400 and "exactly two files" in r.text
    r = httpx.post(url, content=b"no separator", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 400 and "raw bodies" in r.text
    # the model's spec check inside inference (x and y of different lengths) -> 400 naming it
    r = httpx.post(url, json={"x": [1, 2], "y": [1, 2, 3]})
    assert r.status_code == 400 and "num_inputs" in r.text
    # invalid JSON declared as JSON -> 400
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    # the service's own bug -> 500 naming the exception; the server keeps serving
    r = httpx.post(url, json={"x": [1], "y": [2], "crash": True})
    assert r.status_code == 500
    assert "ZeroDivisionError" in r.text
    # an answer that is not JSON is the service's bug too, and says so
    r = httpx.post(url, json={"x": [1], "y": [2], "crash": "unserializable"})
    assert r.status_code == 500
    assert "not JSON serializable" in r.text and "adder" in r.text
    r = httpx.post(url, json={"x": [1], "y": [2]})
    assert r.status_code == 200 and r.json()["out"] == [30.0]
    # a multipart field sent as a plain value and as a file, or one filename twice -> 400
    r = httpx.post(url, data={"files": "plain"}, files=[("files", ("a.txt", b"1", "text/plain"))])
    assert r.status_code == 400 and "'files'" in r.text
    r = httpx.post(url, files=[("files", ("a.txt", b"1", "text/plain")), ("files", ("a.txt", b"2", "text/plain"))])
    assert r.status_code == 400 and "more than once" in r.text
    # GET is not predict
    assert httpx.get(url).status_code == 405
