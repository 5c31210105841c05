"""Stateful and decoupled python test models (Triton's sequence extension, gRPC ModelStreamInfer).

* ``build_examples(root)``: the bundled ``simple_sequence`` and ``repeat_int32`` examples
  (``examples/build_examples.py``), packed under ``root``.
* ``pack_accumulator(path, name)``: stateful; ``INPUT`` int32 ``(n,)`` -> ``OUTPUT`` int32 ``(n,)``,
  every element the running sum of the sequence (as Triton's custom sequence backend: the start
  sets it to the input's sum, each next request adds its sum). The state holds a marker whose
  finalizer appends the sequence id to ``$MODELPOD_SCHED_DIR/<name>.freed``, so a test sees the
  state freed; while ``$MODELPOD_SCHED_DIR/<name>.hold`` exists a call waits (at most 60 s).
* ``pack_ticker(path, name)``: decoupled (a generator); ``COUNT`` int32 ``(1,)`` -> ``COUNT``
  answers ``OUT`` int32 ``(1,)`` = 0, 1, ...; each answer appends a line to ``<name>.yields``;
  while ``<name>.hold`` exists it waits before every answer after the first; when the generator
  is closed (finished or stopped) it appends a line to ``<name>.closed``.
* ``write_settings(model_dir, metadata)``: ``<model_dir>/serving.json`` with that metadata.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.packages import pack_code
from tests.helpers.sched_models import SCHED_DIR_ENV

REPO = Path(__file__).resolve().parents[2]

_GATES = f"""
import os
import time

def _file(name, suffix):
    folder = os.environ.get("{SCHED_DIR_ENV}")
    return os.path.join(folder, name + suffix) if folder else None

def _note(name, suffix, line):
    path = _file(name, suffix)
    if path:
        with open(path, "a") as f:
            f.write(line + "\\n")

def _hold(name):
    gate = _file(name, ".hold")
    for _ in range(6000):
        if not gate or not os.path.exists(gate):
            return
        time.sleep(0.01)
"""

#: what Triton's sequence client examples send
VALUES = [11, 7, 5, 3, 2, 0, 1]


def build_examples(root: Path) -> dict[str, Path]:
    """The bundled Triton examples, packed at ``root/<name>/1`` (name -> package)."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from build_examples import build_repeat, build_simple_sequence
    finally:
        sys.path.remove(str(REPO / "examples"))
    return {"simple_sequence": build_simple_sequence(root / "simple_sequence" / "1"),
            "repeat_int32": build_repeat(root / "repeat_int32" / "1")}


def pack_accumulator(path: Path, name: str = "accumulator") -> Path:
    main = _GATES + f"""
import numpy as np

class _Marker:
    def __init__(self, sid):
        self.sid = sid

    def __del__(self):
        _note({name!r}, ".freed", str(self.sid))

class Accumulator:
    stateful = True

    def __call__(self, INPUT, sequence):
        _hold({name!r})
        state = sequence.state
        if sequence.start:
            state["marker"] = _Marker(sequence.id)
            state["sum"] = 0
        state["sum"] += int(INPUT.sum())
        return {{"OUTPUT": np.full(INPUT.shape, state["sum"], dtype=np.int32)}}

def get_model(data_dir):
    return Accumulator()
"""
    spec_in = [{"name": "INPUT", "dtype": "int32", "shape": ("n",)}]
    spec_out = [{"name": "OUTPUT", "dtype": "int32", "shape": ("n",)}]
    x = np.array([2, 3], np.int32)
    return pack_code(path, name, main, spec_in, spec_out, {"INPUT": x}, {"OUTPUT": np.array([5, 5], np.int32)})


def pack_ticker(path: Path, name: str = "ticker") -> Path:
    main = _GATES + f"""
import numpy as np

def get_model(data_dir):
    def ticker(COUNT):
        try:
            for i in range(int(COUNT[0])):
                if i:
                    _hold({name!r})
                _note({name!r}, ".yields", str(i))
                yield {{"OUT": np.array([i], dtype=np.int32)}}
        finally:
            _note({name!r}, ".closed", "closed")
    return ticker
"""
    spec_in = [{"name": "COUNT", "dtype": "int32", "shape": (1,)}]
    spec_out = [{"name": "OUT", "dtype": "int32", "shape": (1,)}]
    return pack_code(path, name, main, spec_in, spec_out, {"COUNT": np.array([2], np.int32)},
                     {"OUT": np.array([1], np.int32)})


def write_settings(model_dir: Path, metadata: dict[str, Any]) -> None:
    (model_dir / "serving.json").write_text(json.dumps({"metadata": metadata}))


def lines(folder: Path, name: str, suffix: str) -> list[str]:
    """The lines a test model wrote to ``<name><suffix>`` (none yet: [])."""
    file = folder / f"{name}{suffix}"
    return file.read_text().splitlines() if file.exists() else []
