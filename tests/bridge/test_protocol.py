"""The worker bridge protocol: framing, tensor layout, and the handshake, checked from both ends.

The fake workers here are plain Python programs that use only the standard library (no numpy, no
modelpod): what a worker in another language would do, following docs/worker-protocol.md.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from modelpod.bridge import protocol
from modelpod.bridge.protocol import BRIDGE_VERSION, Layout, read_tensors
from modelpod.bridge.shm import OwnedSegment, owned_prefix
from modelpod.errors import BridgeError, SpecError, WorkerDiedError, WorkerError
from modelpod.runtime.workerproc import WorkerProcess

ARRAYS = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
    "f16": np.array([1.5, -2], np.float16),
    "bf16": np.array([1, 2.5], dtype=ml_dtypes.bfloat16),
    "i64": np.array([-1, 2**40], np.int64),
    "u8": np.array([0, 255], np.uint8),
    "b": np.array([True, False]),
    "big_endian": np.array([1.0, 2.0], dtype=">f8"),
    "empty": np.zeros((0, 4), np.float32),
    "bytes": np.array([[b"", b"\x00\xff"], [b"abc", b"d"]], dtype=object),
    "text": np.array(["héllo", ""], dtype=object),
    "unicode": np.array(["ab", "c"]),
}


def roundtrip(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    segment = OwnedSegment(owned_prefix())
    try:
        layout = Layout(arrays)
        buf = segment.ensure(layout.size).buf
        layout.write(buf, arrays)
        entries = json.loads(json.dumps(layout.entries))  # what travels is JSON
        return read_tensors(buf, entries, copy=True)
    finally:
        segment.release()


def test_every_datatype_crosses_unchanged() -> None:
    got = roundtrip(ARRAYS)
    for name, want in ARRAYS.items():
        assert got[name].shape == want.shape, name
        if want.dtype.kind in "OU":
            assert got[name].tolist() == want.tolist(), name
        else:
            assert got[name].dtype == want.dtype.newbyteorder("="), name
            np.testing.assert_array_equal(got[name], want)


def test_layout_entries_name_datatypes_and_aligned_offsets() -> None:
    layout = Layout(ARRAYS)
    by_name = {e["name"]: e for e in layout.entries}
    assert by_name["f32"]["datatype"] == "FP32" and by_name["bf16"]["datatype"] == "BF16"
    assert by_name["bytes"]["datatype"] == "BYTES" and "text" not in by_name["bytes"]
    assert by_name["text"]["text"] is True and by_name["unicode"]["text"] is True
    assert all(e["offset"] % protocol.ALIGN == 0 for e in layout.entries)
    # BYTES: each element a 4-byte little-endian length, then its bytes
    assert by_name["bytes"]["nbytes"] == 4 * 4 + 0 + 2 + 3 + 1


def test_a_non_string_element_in_a_string_tensor_is_refused() -> None:
    with pytest.raises(BridgeError, match="int element"):
        Layout({"s": np.array([b"a", 3], dtype=object)})


@pytest.mark.parametrize("entry, match", [
    ({"name": "x", "datatype": "FP32", "shape": [4], "offset": 0, "nbytes": 8}, "do not make"),
    ({"name": "x", "datatype": "FP32", "shape": [2], "offset": 1 << 30, "nbytes": 8}, "outside the segment"),
    ({"name": "x", "datatype": "COMPLEX", "shape": [2], "offset": 0, "nbytes": 8}, "unknown datatype"),
    ({"name": "x", "datatype": "FP32", "shape": [-2], "offset": 0, "nbytes": 8}, "ints from 0"),
    ({"name": "x", "datatype": "FP32", "shape": [0, 2**62], "offset": 0, "nbytes": 0}, "ints from 0"),
    ({"name": "x", "datatype": "BYTES", "shape": [400_000_000], "offset": 0, "nbytes": 0}, "cannot hold"),
    ({"name": "x", "datatype": "FP32", "shape": [2], "offset": -8, "nbytes": 8}, "outside"),
    ({"name": "x", "datatype": "BYTES", "shape": [2], "offset": 0, "nbytes": 8}, "ends after"),
    ("not an object", "not an object"),
])
def test_entries_that_do_not_fit_the_segment_are_refused(entry: object, match: str) -> None:
    segment = OwnedSegment(owned_prefix())
    try:
        buf = segment.ensure(64).buf
        buf[:8] = struct.pack("<I", 1) + b"a" + b"\x00\x00\x00"
        with pytest.raises(BridgeError, match=match):
            read_tensors(buf, [entry], copy=True)
    finally:
        segment.release()


def test_framing_refuses_oversized_and_garbage_messages() -> None:
    a, b = socket.socketpair()
    with a, b:
        sender, receiver = protocol.Channel(a), protocol.Channel(b)
        sender.send({"kind": "x", "value": "é"})
        sender.send({"kind": "y"})  # two messages in one read are split apart
        assert receiver.recv() == {"kind": "x", "value": "é"} and receiver.recv() == {"kind": "y"}
        a.sendall(struct.pack("<I", protocol.MAX_MESSAGE_BYTES + 1))
        with pytest.raises(BridgeError, match="limit"):
            receiver.recv()
    a, b = socket.socketpair()
    with a, b:
        receiver = protocol.Channel(b)
        a.sendall(struct.pack("<I", 3) + b"{x]")
        with pytest.raises(BridgeError, match="not JSON"):
            receiver.recv()
        a.sendall(struct.pack("<I", 2) + b"[]")
        with pytest.raises(BridgeError, match="kind"):
            receiver.recv()
        a.sendall(struct.pack("<I", 10) + b"{")
        a.close()
        with pytest.raises(EOFError):
            receiver.recv()


# -- fake workers: stdlib only, as another language would write one ----------------------------------
FAKE_WORKER = """
import json, mmap, os, socket, struct, sys

fd = int(sys.argv[sys.argv.index("--fd") + 1])
mode = sys.argv[sys.argv.index("--mode") + 1] if "--mode" in sys.argv else "echo"
sock = socket.socket(fileno=fd)

def send(msg):
    body = json.dumps(msg).encode()
    sock.sendall(struct.pack("<I", len(body)) + body)

def recv():
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data
    (n,) = struct.unpack("<I", exactly(4))
    return json.loads(exactly(n))

send({{"kind": "hello", "protocol": "modelpod-worker", "bridge": {version}, "language": "fake"}})
load = recv()
if load.get("kind") != "load":
    sys.exit(0)
prefix = load["segment_prefix"]
send({{"kind": "ready", "model": load["name"], "signatures": {{}}}})
out_name = prefix + "fake"
while True:
    try:
        msg = recv()
    except EOFError:
        break
    if msg["kind"] == "stop":
        break
    if mode == "silent":
        continue  # never answers
    if mode == "oversized":
        sock.sendall(struct.pack("<I", 1 << 30))
        continue
    if mode == "nosegment":
        send({{"kind": "result", "id": msg["id"], "segment": prefix + "nothing-here", "outputs": []}})
        continue
    if mode == "hugebytes":
        send({{"kind": "result", "id": msg["id"], "segment": msg["segment"],
              "outputs": [{{"name": "s", "datatype": "BYTES", "shape": [400000000], "offset": 0, "nbytes": 0}}]}})
        continue
    if mode == "double":
        send({{"kind": "error", "id": msg["id"], "error": "model_failed", "message": "first"}})
        send({{"kind": "error", "id": msg["id"], "error": "model_failed", "message": "stale"}})
        continue
    # an "echo" model: every input back, doubled bytes for FP32 computed by hand
    with open("/dev/shm/" + msg["segment"], "rb") as f:
        data = f.read()
    outputs, blob = [], b""
    for e in msg["inputs"]:
        raw = data[e["offset"]:e["offset"] + e["nbytes"]]
        if e["datatype"] == "FP32":
            values = struct.unpack("<%df" % (len(raw) // 4), raw)
            raw = struct.pack("<%df" % len(values), *(2 * v for v in values))
        outputs.append(dict(e, offset=len(blob)))
        blob += raw + b"\\0" * (-len(raw) % 64)
    with open("/dev/shm/" + out_name, "wb") as f:
        f.write(blob or b"\\0")
    send({{"kind": "result", "id": msg["id"], "segment": out_name, "outputs": outputs}})
try:
    os.unlink("/dev/shm/" + out_name)
except FileNotFoundError:
    pass
"""


def fake_worker(tmp_path: Path, version: int = BRIDGE_VERSION, mode: str = "echo") -> list[str]:
    script = tmp_path / f"fake_worker_{version}.py"
    script.write_text(textwrap.dedent(FAKE_WORKER.format(version=version)))
    return [sys.executable, "-I", str(script), "--mode", mode]


@pytest.mark.parametrize("mode, said", [
    ("nosegment", "FileNotFoundError"), ("hugebytes", "cannot hold"), ("oversized", "limit"),
    ("silent", "did not answer in 2 s"),
])
def test_a_worker_that_breaks_the_protocol_is_stopped_not_trusted(tmp_path: Path, mode: str, said: str) -> None:
    worker = WorkerProcess(tmp_path, "hostile", fake_worker(tmp_path, mode=mode), request_timeout_s=2)
    worker.start(timeout=30)
    try:
        with pytest.raises(WorkerDiedError, match=said):
            worker.infer({"x": np.ones(4, np.float32)})
        assert worker.process is not None and worker.process.poll() is not None  # killed: a restart follows
    finally:
        worker.stop()


def test_a_reply_to_an_earlier_request_is_never_taken_for_the_next(tmp_path: Path) -> None:
    worker = WorkerProcess(tmp_path, "double", fake_worker(tmp_path, mode="double"))
    worker.start(timeout=30)
    try:
        with pytest.raises(WorkerError, match="first"):
            worker.infer({"x": np.ones(1, np.float32)})
        with pytest.raises(WorkerDiedError, match="answered request 1 to request 2"):
            worker.infer({"x": np.ones(1, np.float32)})
    finally:
        worker.stop()


def test_a_worker_written_from_the_spec_alone_serves(tmp_path: Path) -> None:
    worker = WorkerProcess(tmp_path, "echo", fake_worker(tmp_path))
    worker.start(timeout=30)
    try:
        assert worker.hello["language"] == "fake"
        out = worker.infer({"x": np.array([1.5, -2.0], np.float32), "s": np.array([b"hi", b""], dtype=object)})
        np.testing.assert_array_equal(out["x"], [3.0, -4.0])
        assert out["s"].tolist() == [b"hi", b""]
    finally:
        worker.stop()
    assert worker.process is not None and worker.process.returncode == 0


def test_a_worker_of_another_bridge_version_is_refused_naming_both(tmp_path: Path) -> None:
    worker = WorkerProcess(tmp_path, "old", fake_worker(tmp_path, version=99))
    with pytest.raises(BridgeError) as caught:
        worker.start(timeout=30)
    assert f"version 99; this server speaks version {BRIDGE_VERSION}" in str(caught.value)
    assert worker.process is not None and worker.process.poll() is not None  # not left running


def test_a_program_that_is_not_a_worker_is_refused(tmp_path: Path) -> None:
    worker = WorkerProcess(tmp_path, "x", [sys.executable, "-c", "import sys"])
    with pytest.raises(BridgeError, match="exited"):
        worker.start(timeout=30)
    script = tmp_path / "chatty.py"
    script.write_text("import json, socket, struct, sys\n"
                      "s = socket.socket(fileno=int(sys.argv[-1]))\n"
                      "b = json.dumps({'kind': 'hello', 'protocol': 'something-else'}).encode()\n"
                      "s.sendall(struct.pack('<I', len(b)) + b)\ns.recv(1)\n")
    worker = WorkerProcess(tmp_path, "x", [sys.executable, str(script)])
    with pytest.raises(BridgeError, match="did not greet"):
        worker.start(timeout=30)


def test_worker_errors_come_back_as_their_kind(tmp_path: Path) -> None:
    from tests.helpers.packages import pack_raises

    package = pack_raises(tmp_path / "raises")
    worker = WorkerProcess(package, "raises")
    worker.start(timeout=120)
    try:
        with pytest.raises(SpecError):
            worker.infer({"nope": np.zeros(1, np.float32)})
        with pytest.raises(Exception, match="RuntimeError") as caught:
            worker.infer({"x": np.array([-1.0], np.float32)})
        assert caught.value.kind == "model_failed"
        np.testing.assert_array_equal(worker.infer({"x": np.array([1.0], np.float32)})["y"], [1.0])
    finally:
        worker.stop()
