"""Python-platform test models (and small helpers) for the scheduling / lifecycle / batching tests.

Every model that counts its calls appends one line ``"<pid> <tag> <first value>"`` to
``$MODELPOD_SCHED_DIR/<tag>.calls`` per call, so tests can tell which requests reached a model
(and which process ran them). While the file ``$MODELPOD_SCHED_DIR/<tag>.hold`` exists, a call
waits (at most 60 s) before it returns: tests hold a model busy deterministically instead of
racing a clock.

* ``pack_counter(path, tag, sleep_ms)``: ``x`` float32 ``(None,)`` -> ``y = x + 1`` after the sleep.
  Magic values in ``x[0]``: ``-11`` makes the process kill itself with SIGSEGV, ``-9`` with SIGKILL,
  ``-1`` makes the model raise ValueError.
* ``pack_batch_echo(path, tag, batched=True, sleep_ms=0)``: ``x`` float32 ``("batch", "k")`` ->
  ``y = x * 2``, ``z = x + 1`` and ``rows`` int64 ``("batch",)`` holding the number of rows the model
  was called with (so a caller sees the size of the batch it was part of). With ``batched=False`` the
  first dims are ``None`` (no shared batch symbol: never batched).
* ``pack_versioned(path, version, sleep_ms=0)``: ``x`` -> ``y = x + 1000 * version`` (tells versions apart).
* ``pack_broken(path)``: a package whose entrypoint raises when loaded.
* ``write_bad_manifest(path)``: a folder whose ``modelpod.json`` is not JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import modelpod


#: folder where counting models write ``<tag>.calls`` and look for ``<tag>.hold``
SCHED_DIR_ENV = "MODELPOD_SCHED_DIR"

_PRELUDE = f"""
import os
import signal
import time

def _sched_dir():
    return os.environ.get("{SCHED_DIR_ENV}")

def _record(tag, first):
    folder = _sched_dir()
    if folder:
        with open(os.path.join(folder, tag + ".calls"), "a") as f:
            f.write(f"{{os.getpid()}} {{tag}} {{first}}\\n")

def _hold(tag):
    folder = _sched_dir()
    if not folder:
        return
    gate = os.path.join(folder, tag + ".hold")
    for _ in range(6000):
        if not os.path.exists(gate):
            return
        time.sleep(0.01)
"""


def _pack(path: Path, name: str, body: str, input_spec: list[dict], output_spec: list[dict],
          test_inputs: dict[str, np.ndarray] | None = None,
          expected: dict[str, np.ndarray] | None = None) -> Path:
    code = path.parent / f"{path.name}-code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "main.py").write_text(_PRELUDE + textwrap.dedent(body))
    return modelpod.pack_python(
        path, name=name, input_spec=input_spec, output_spec=output_spec,
        code_path_spec=[{"python_root": str(code), "dirs_to_package": [""]}],
        test_input_data=test_inputs, test_expected_out=expected, overwrite=True,
    )


def pack_counter(path: Path, tag: str, sleep_ms: float = 0.0) -> Path:
    """``y = x + 1`` after ``sleep_ms``; logs each call; -11 / -9 in x[0] kill the process."""
    body = f"""
        def get_model(data_dir):
            def counter(x):
                first = float(x.ravel()[0]) if x.size else None
                _record({tag!r}, first)
                if first == -11:
                    os.kill(os.getpid(), signal.SIGSEGV)
                if first == -9:
                    os.kill(os.getpid(), signal.SIGKILL)
                if first == -1:
                    raise ValueError("counter model refuses -1")
                _hold({tag!r})
                time.sleep({sleep_ms / 1000.0})
                return {{"y": x + 1}}
            return counter
    """
    spec_in = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    spec_out = [{"name": "y", "dtype": "float32", "shape": (None,)}]
    return _pack(path, tag, body, spec_in, spec_out)


def pack_batch_echo(path: Path, tag: str, batched: bool = True, sleep_ms: float = 0.0) -> Path:
    """``x (batch, k)`` -> ``y = 2x``, ``z = x + 1``, ``rows`` = the row count the model saw."""
    body = f"""
        import numpy as np

        def get_model(data_dir):
            def echo(x):
                _record({tag!r}, x.shape[0])
                _hold({tag!r})
                time.sleep({sleep_ms / 1000.0})
                n = x.shape[0]
                return {{"y": x * 2, "z": x + 1, "rows": np.full((n,), n, dtype=np.int64)}}
            return echo
    """
    first: Any = "batch" if batched else None
    spec_in = [{"name": "x", "dtype": "float32", "shape": (first, "k")}]
    spec_out = [
        {"name": "y", "dtype": "float32", "shape": (first, "k")},
        {"name": "z", "dtype": "float32", "shape": (first, "k")},
        {"name": "rows", "dtype": "int64", "shape": (first,)},
    ]
    return _pack(path, tag, body, spec_in, spec_out)


def pack_versioned(path: Path, version: int, sleep_ms: float = 0.0, name: str = "swapped") -> Path:
    """``y = x + 1000 * version``; test vectors included (so warm-up runs them)."""
    body = f"""
        def get_model(data_dir):
            def versioned(x):
                time.sleep({sleep_ms / 1000.0})
                return {{"y": x + {1000.0 * version}}}
            return versioned
    """
    x = np.arange(3, dtype=np.float32)
    spec_in = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    spec_out = [{"name": "y", "dtype": "float32", "shape": (None,)}]
    return _pack(path, name, body, spec_in, spec_out, {"x": x}, {"y": x + 1000.0 * version})


def pack_broken(path: Path, name: str = "swapped") -> Path:
    """A well-formed package whose ``get_model`` raises (no test vectors, so packing never loads it)."""
    body = """
        def get_model(data_dir):
            raise RuntimeError("this version is broken on purpose")
    """
    spec_in = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    spec_out = [{"name": "y", "dtype": "float32", "shape": (None,)}]
    return _pack(path, name, body, spec_in, spec_out)


def write_bad_manifest(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "modelpod.json").write_text("{ this is not a manifest")
    return path


# -- helpers for talking to / looking at a running server -------------------------------------------

def calls(folder: Path, tag: str) -> list[tuple[int, str]]:
    """(pid, first value) for every call the model ``tag`` logged."""
    file = folder / f"{tag}.calls"
    if not file.exists():
        return []
    out = []
    for line in file.read_text().splitlines():
        pid, _, first = line.split(" ", 2)
        out.append((int(pid), first))
    return out


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``condition`` until truthy (a readiness wait, never an assertion about time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def scrape(url: str, token: str | None = None) -> list[tuple[str, dict[str, str], float]]:
    """(metric name, labels, value) for every sample of ``GET /metrics`` (sent with ``token``)."""
    text = httpx.get(f"{url}/metrics", timeout=10, headers={"Authorization": token} if token else None).text
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def metric(url: str, name: str, token: str | None = None, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in scrape(url, token) if n == name and all(lab.get(k) == w for k, w in labels.items()))


def v2_body(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
            **extra}


def eas_request(x: np.ndarray, outputs: list[str] | None = None) -> bytes:
    """A serialized PAI-EAS PredictRequest carrying float32 ``x``."""
    from modelpod.protos import eas_predict_pb2 as pb

    req = pb.PredictRequest()
    tensor = req.inputs["x"]
    tensor.dtype = pb.DT_FLOAT
    tensor.array_shape.dim.extend(x.shape)
    tensor.float_val.extend(x.ravel().tolist())
    if outputs:
        req.output_filter.extend(outputs)
    return req.SerializeToString()


def eas_outputs(body: bytes) -> dict[str, np.ndarray]:
    from modelpod.protos import eas_predict_pb2 as pb

    resp = pb.PredictResponse.FromString(body)
    out = {}
    for name, arr in resp.outputs.items():
        shape = list(arr.array_shape.dim)
        values = arr.float_val or arr.int64_val or arr.int_val or arr.double_val
        out[name] = np.array(list(values)).reshape(shape)
    return out


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``ps``: no psutil needed)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def write_config(path: Path, services: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(services))
    return path
