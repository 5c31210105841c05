"""Run the unmodified ``eas-prediction`` SDK against a server, from its own virtual environment.

The SDK pins ``protobuf<=3.20.3``, which cannot share the main venv with TensorFlow, so it lives
in ``<repo>/.venv-eas`` (created once by :func:`ensure_eas_python`, reused while it imports).

This file has two roles:

* imported by the tests (main venv): :func:`ensure_eas_python` and :func:`run_sdk`, which pipes a
  JSON list of calls to this same file running under the EAS venv's python;
* run as a script (EAS venv): reads the calls from stdin, makes each with the SDK and prints one
  JSON list of results. Nothing here touches the SDK's code; it only calls its public API.

A call::

    {"endpoint": "127.0.0.1:PORT", "service": "addition", "token": None, "custom_url": None,
     "retry": 1, "repeat": 1, "request": {"type": "tf", "signature": "serving_default",
                             "feeds": [[name, shape, "DT_FLOAT", values]], "fetches": ["out"]}}
    request {"type": "string", "data": "text"}  or  {"type": "string", "hex": "ff00"}

A result: ``{"ok": True, "outputs": {name: {"dtype": "DT_FLOAT", "shape": [...], "values": [...]}}}``
(tf) or ``{"ok": True, "body": "..."}`` (string), with ``"calls"``: how many identical answers
``repeat`` predicts on one client (one urllib3 keep-alive pool) gave; or
``{"ok": False, "code": 400, "message": "..."}`` for a ``PredictException``. String values come
back decoded as UTF-8.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository (tests/helpers/eas_client.py)
EAS_VENV = ROOT / ".venv-eas"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _imports(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import eas_prediction"], capture_output=True, timeout=60)
    return probe.returncode == 0


def ensure_eas_python(venv: Path = EAS_VENV) -> Path:
    """The EAS venv's python: ``python3 -m venv`` + ``pip install eas-prediction`` the first time."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(str(venv).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"modelpod-eas-venv-{digest}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes must not build it at once
        python = _venv_python(venv)
        if _imports(python):
            return python
        base = getattr(sys, "_base_executable", None) or "python3"
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True, timeout=120)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "eas-prediction"],
            capture_output=True, text=True, timeout=300,
        )
        if install.returncode != 0 or not _imports(python):
            raise RuntimeError(f"could not install eas-prediction into {venv}:\n{install.stdout}\n{install.stderr}")
        return python


def run_sdk(python: Path, calls: list[dict[str, Any]], timeout: float = 120) -> list[dict[str, Any]]:
    """Make ``calls`` with the real SDK in a subprocess; one result per call, in order."""
    proc = subprocess.run(
        [str(python), str(Path(__file__).resolve())], input=json.dumps(calls), capture_output=True,
        text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": ""},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the EAS client script failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the script side (runs in the EAS venv) ---------------------------------------------------------
def _text(value: Any) -> Any:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _make_request(spec: dict[str, Any]) -> Any:
    from eas_prediction import StringRequest, TFRequest

    if spec["type"] == "string":
        data = bytes.fromhex(spec["hex"]) if "hex" in spec else spec.get("data", "")
        return StringRequest(data)
    req = TFRequest(spec.get("signature", "serving_default"))
    for name, shape, dtype, values in spec.get("feeds", []):
        if dtype == "DT_STRING":
            values = [v.encode() for v in values]
        req.add_feed(name, shape, getattr(TFRequest, dtype), values)
    for name in spec.get("fetches", []):
        req.add_fetch(name)
    return req


def _read_response(resp: Any) -> dict[str, Any]:
    from eas_prediction import TFResponse
    from eas_prediction.tf_request_pb2 import ArrayDataType

    if not isinstance(resp, TFResponse):
        return {"ok": True, "body": _text(resp.response_data)}
    outputs = {}
    for name in resp.response.outputs:
        values = resp.get_values(name)  # None when the SDK cannot read the dtype
        outputs[name] = {
            "dtype": ArrayDataType.Name(resp.response.outputs[name].dtype),
            "shape": resp.get_tensor_shape(name),
            "values": None if values is None else [_text(v) for v in values],
        }
    return {"ok": True, "outputs": outputs}


def _call(spec: dict[str, Any]) -> dict[str, Any]:
    from eas_prediction import PredictClient, PredictException

    if spec.get("custom_url"):
        client = PredictClient(custom_url=spec["custom_url"])
    else:
        client = PredictClient(spec["endpoint"], spec["service"])
    if spec.get("token"):
        client.set_token(spec["token"])
    client.set_retry_count(spec.get("retry", 1))
    client.set_timeout(spec.get("timeout_ms", 30000))
    client.init()
    try:
        request = _make_request(spec["request"])
        results = [_read_response(client.predict(request)) for _ in range(spec.get("repeat", 1))]
        if any(r != results[0] for r in results):
            return {"ok": False, "code": None, "message": f"repeated calls differ: {results}"}
        return {**results[0], "calls": len(results)}
    except PredictException as exc:
        return {"ok": False, "code": exc.code, "message": _text(exc.message)}
    finally:
        client.destroy()


def main() -> None:
    calls = json.loads(sys.stdin.read())
    results = [_call(spec) for spec in calls]
    sys.stdout.write("\n" + json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
