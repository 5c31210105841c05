"""Soak test: a real ``modelpod serve`` under flood, fuzz and worker kills at once, for minutes.

It starts ``modelpod serve`` itself on free 127.0.0.1 ports over a repository folder with two
copies of the tiny ``add`` model (benchmarks/models.py): ``add_inline`` (answered on the event
loop) and ``add_worker`` (``serving.json``: two worker processes). Then, all at the same time and
all stopping by themselves at ``--duration``:

* flood: ``--clients`` well-formed clients, each cycling through KServe v2 JSON, KServe v2 gRPC
  (tritonclient.grpc.aio), TF Serving predict and PAI-EAS protobuf bodies on both models (HTTP on
  one raw keep-alive socket per client: httpx would cost the load core more than the server's);
  every answer is checked (out == x + y);
* fuzz: ``--fuzzers`` clients sending malformed and hostile requests on fresh raw sockets
  (random bytes, truncated JSON, wrong dtypes and shapes, huge declared shapes with tiny data, bad
  binary header lengths, oversized bodies, bad chunking, half-sent requests that are abandoned,
  many or huge headers...) and garbage gRPC messages (raw bytes through ``unary_unary``);
* worker kills: every ``--kill-every`` seconds one worker process of the server gets SIGKILL and
  the server is left to restart it;
* a health thread: ``GET /v2/health/ready`` every 0.25 s with a 1 s budget, plus the server's
  RSS (``/proc/<pid>/status`` VmRSS, and its workers' sum) and open fds every second.

It prints what happened: requests and requests/s, well-formed failures by kind (a 503 on the
worker model while a killed worker is being replaced counts as expected, apart), the hostile
requests' answers per case (4xx / 5xx / connection errors / hangs), RSS and fds at start and end,
worker restarts and the slowest health check; and writes it all as JSON (``--json-out``).
The server runs on core 0 (``taskset -c 0``) and this load process on core 1 when the machine has
them; the table says so.

Exit status 0 when the server survived: still alive and healthy at the end, every health check
answered within 1 s, no well-formed request failed except the expected 503s around a kill, no
request hung. 1 otherwise.

    python benchmarks/soak.py [--duration 180] [--clients 16] [--fuzzers 4] [--kill-every 10]
    python benchmarks/soak.py --duration 20        # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc
import httpx
import numpy as np
import orjson
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LOAD_CORE, RESULTS, SERVER_CORE, free_port, print_table  # noqa: E402
from models import pack_add  # noqa: E402

from modelpod.codecs.eas import encode_predict_request  # noqa: E402
from modelpod.protos import eas_predict_pb2 as eas_pb  # noqa: E402
from modelpod.protos import grpc_service_pb2 as grpc_pb  # noqa: E402

HOST = "127.0.0.1"
INLINE, WORKER = "add_inline", "add_worker"
WORKER_INSTANCES = 2
GRPC_SERVICE = "/inference.GRPCInferenceService/"
HEALTH_BUDGET_S = 1.0
#: how long after a killed worker's successor appears a 503 on the worker model still counts as expected
KILL_GRACE_S = 1.0
#: well-formed failures kept with their details (the rest are only counted)
MAX_RECORDS = 20000


# -- the server -----------------------------------------------------------------------------------

def build_repository(root: Path) -> Path:
    """``root/add_inline/1`` (inline) and ``root/add_worker/1`` + serving.json (worker processes)."""
    pack_add(root / INLINE / "1")
    pack_add(root / WORKER / "1")
    # a generous deadline: requests queued while a killed worker is replaced must not expire
    settings = {"metadata": {"worker": "process", "instance": WORKER_INSTANCES, "rpc.keepalive": 20000}}
    (root / WORKER / "serving.json").write_text(json.dumps(settings))
    return root


def can_pin() -> bool:
    """taskset exists and both the server core and the load core are ours to use."""
    wanted = {int(SERVER_CORE), int(LOAD_CORE)}
    return shutil.which("taskset") is not None and wanted <= os.sched_getaffinity(0)


def start_server(repo: Path, http_port: int, grpc_port: int, max_body_mb: float, pin: bool,
                 log_file: Any) -> subprocess.Popen:
    """Start ``modelpod serve`` (pinned to the server core via taskset's exec: same pid)."""
    cmd = [sys.executable, "-m", "modelpod.cli", "serve", str(repo), "--host", HOST,
           "--http-port", str(http_port), "--grpc-port", str(grpc_port),
           "--max-body-mb", str(max_body_mb), "--log-level", "warning",
           # stalled requests (half-sent heads and bodies, a chunk that never arrives) are answered
           # 408 after these, within the hostile clients' --hostile-timeout
           "--header-timeout", "2", "--body-timeout", "2"]
    if pin:
        cmd = ["taskset", "-c", SERVER_CORE, *cmd]
    return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(proc: subprocess.Popen, port: int, log_file: Any, timeout: float = 180.0) -> None:
    """Block until ``/v2/health/ready`` answers 200 and both worker processes run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log_file.seek(0)
            raise RuntimeError(f"modelpod serve exited: {log_file.read().decode(errors='replace')[-2000:]}")
        try:
            ok = httpx.get(f"http://{HOST}:{port}/v2/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok and len(worker_pids(proc.pid)) == WORKER_INSTANCES:
            return
        time.sleep(0.2)
    raise RuntimeError("modelpod serve did not get ready")


def stop_server(proc: subprocess.Popen) -> int | None:
    """SIGTERM (graceful stop), SIGKILL after 40 s; the exit code, None if it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return None
    except ProcessLookupError:
        return proc.wait(10)


# -- /proc ----------------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                kids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
    except OSError:
        return []
    return kids


def worker_pids(server_pid: int) -> list[int]:
    """The server's model worker processes: children running the worker program (not multiprocessing's
    resource tracker)."""
    pids = []
    for pid in children(server_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"modelpod.runtime.worker" in cmdline:
            pids.append(pid)
    return pids


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open (-1 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def fd_kinds(pid: int) -> dict[str, int]:
    """The server's open fds by kind (socket, pipe, anon_inode:[eventpoll], /dev/shm, file...)."""
    kinds: Counter = Counter()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kind = target.split(":")[0] if ":[" in target else ("/dev/shm" if target.startswith("/dev/shm") else "file")
        kinds[kind if not target.startswith("anon_inode") else target] += 1
    return dict(kinds)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (from /proc/<pid>/stat), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(server_pid: int) -> dict[str, Any]:
    """Server RSS, workers' RSS sum, server fds (and how many map /dev/shm), worker count, CPU times."""
    workers = worker_pids(server_pid)
    return {"t": time.monotonic(), "server_rss_mib": rss_kib(server_pid) / 1024,
            "workers_rss_mib": sum(rss_kib(p) for p in workers) / 1024,
            "server_fds": open_fds(server_pid), "server_shm_fds": fd_kinds(server_pid).get("/dev/shm", 0),
            "workers": len(workers), "server_cpu_s": cpu_seconds(server_pid), "load_cpu_s": time.process_time()}


def full_snapshot(server_pid: int) -> dict[str, Any]:
    """A snapshot plus the server's fds by kind (start and end of the run)."""
    return {**snapshot(server_pid), "fd_kinds": fd_kinds(server_pid)}


def restarts_metric(http_port: int) -> float | None:
    """``modelpod_instance_restarts_total`` of the worker model, from /metrics."""
    try:
        text = httpx.get(f"http://{HOST}:{http_port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("modelpod_instance_restarts_total") and f'model="{WORKER}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


# -- what the load records ------------------------------------------------------------------------

@dataclass
class Results:
    """Everything the load tasks count; only touched from the event loop (plus the health thread's own)."""

    flood: Counter = field(default_factory=Counter)          # (protocol, model, kind) -> n
    failures: list = field(default_factory=list)             # (protocol, model, kind, start, end, detail)
    failure_overflow: int = 0
    hostile: Counter = field(default_factory=Counter)        # (case, outcome) -> n
    hostile_examples: dict = field(default_factory=dict)     # (case, outcome) -> first detail
    kills: list = field(default_factory=list)                # {"pid", "t", "back_t"}
    requests: int = 0

    def well_formed(self, protocol: str, model: str, kind: str, start: float, detail: str = "") -> None:
        """Count one well-formed request; keep the details of failures."""
        self.requests += 1
        self.flood[(protocol, model, kind)] += 1
        if kind != "ok":
            if len(self.failures) < MAX_RECORDS:
                self.failures.append((protocol, model, kind, start, time.monotonic(), detail[:300]))
            else:
                self.failure_overflow += 1

    def hostile_outcome(self, case: str, outcome: str, detail: str = "") -> None:
        """Count one hostile request's outcome (2xx/4xx/5xx/conn_error/hang/abandoned)."""
        self.requests += 1
        self.hostile[(case, outcome)] += 1
        self.hostile_examples.setdefault((case, outcome), detail[:300])


class Health(threading.Thread):
    """Health checks (0.25 s apart, 1 s budget) and /proc samples (1 s apart) until stopped."""

    def __init__(self, http_port: int, server_pid: int) -> None:
        super().__init__(name="soak-health", daemon=True)
        self.url = f"http://{HOST}:{http_port}/v2/health/ready"
        self.server_pid = server_pid
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.bad: Counter = Counter()
        self.samples: list[dict[str, Any]] = []

    def check(self) -> tuple[str, float]:
        """One health check on a fresh connection: (outcome, seconds)."""
        start = time.perf_counter()
        try:
            status = httpx.get(self.url, timeout=HEALTH_BUDGET_S).status_code
            outcome = "ok" if status == 200 else f"http_{status}"
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        elapsed = time.perf_counter() - start
        if outcome == "ok" and elapsed > HEALTH_BUDGET_S:
            outcome = "slow"
        return outcome, elapsed

    def run(self) -> None:
        next_sample = 0.0
        while not self.stop.wait(0.25):
            outcome, elapsed = self.check()
            self.latencies.append(elapsed)
            if outcome != "ok":
                self.bad[outcome] += 1
            if time.monotonic() >= next_sample:
                self.samples.append(snapshot(self.server_pid))
                next_sample = time.monotonic() + 1.0


# -- well-formed requests -------------------------------------------------------------------------

@dataclass
class Target:
    """Where the server listens, and the clients the flood shares."""

    http_port: int
    grpc_port: int
    triton: Any = None
    channel: Any = None  # grpc.aio channel for raw garbage


def add_inputs(rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """Two small float32 vectors of the same random length (1..16)."""
    n = rng.randint(1, 16)
    x = np.array([rng.uniform(-100, 100) for _ in range(n)], dtype=np.float32)
    y = np.array([rng.uniform(-100, 100) for _ in range(n)], dtype=np.float32)
    return x, y


def same(got: Any, x: np.ndarray, y: np.ndarray) -> bool:
    """Whether ``got`` (any nesting of numbers) is x + y."""
    try:
        arr = np.asarray(got, dtype=np.float32).ravel()
    except (TypeError, ValueError):
        return False
    return arr.shape == x.shape and np.allclose(arr, x + y, rtol=1e-6, atol=1e-4)


class RawResponse:
    """What :class:`KeepAlive` read back: status, headers (lower-case names), body."""

    def __init__(self, status: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class KeepAlive:
    """A minimal HTTP/1.1 keep-alive client on one raw socket (much cheaper than httpx per request).

    One request at a time; Content-Length framed answers. A reused connection that fails before
    any byte of the answer arrived is retried once on a fresh one, as HTTP clients do.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, content_type: str) -> RawResponse:
        for attempt in (0, 1):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            assert self.reader is not None and self.writer is not None
            self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            try:
                await self.writer.drain()
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self.close()
                if fresh or attempt or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                    raise
                continue
            return await self._answer(head)
        raise AssertionError("unreachable")

    async def _answer(self, head: bytes) -> RawResponse:
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        assert self.reader is not None
        content = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return RawResponse(status, headers, content)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


async def v2_json(target: Target, conn: KeepAlive, model: str, x: np.ndarray, y: np.ndarray,
                  timeout: float) -> tuple[str, str]:
    """KServe v2 JSON infer; (kind, detail)."""
    body = orjson.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [len(x)], "data": x.tolist()},
        {"name": "y", "datatype": "FP32", "shape": [len(y)], "data": y.tolist()},
    ]})
    r = await conn.post(f"/v2/models/{model}/infer", body, "application/json")
    if r.status_code != 200:
        return f"http_{r.status_code}", r.text
    return ("ok", "") if same(r.json()["outputs"][0]["data"], x, y) else ("wrong_answer", r.text)


async def tfserving(target: Target, conn: KeepAlive, model: str, x: np.ndarray, y: np.ndarray,
                    timeout: float) -> tuple[str, str]:
    """TF Serving columnar predict; (kind, detail)."""
    body = orjson.dumps({"inputs": {"x": x.tolist(), "y": y.tolist()}})
    r = await conn.post(f"/v1/models/{model}:predict", body, "application/json")
    if r.status_code != 200:
        return f"http_{r.status_code}", r.text
    out = r.json()["outputs"]
    out = out["out"] if isinstance(out, dict) else out
    return ("ok", "") if same(out, x, y) else ("wrong_answer", r.text)


async def eas(target: Target, conn: KeepAlive, model: str, x: np.ndarray, y: np.ndarray,
              timeout: float) -> tuple[str, str]:
    """PAI-EAS PredictRequest protobuf; (kind, detail)."""
    r = await conn.post(f"/api/predict/{model}", encode_predict_request({"x": x, "y": y}),
                        "application/octet-stream")
    if r.status_code != 200:
        return f"http_{r.status_code}", r.text
    reply = eas_pb.PredictResponse.FromString(r.content)
    return ("ok", "") if same(list(reply.outputs["out"].float_val), x, y) else ("wrong_answer", str(reply)[:300])


async def v2_grpc(target: Target, conn: KeepAlive, model: str, x: np.ndarray, y: np.ndarray,
                  timeout: float) -> tuple[str, str]:
    """KServe v2 gRPC ModelInfer via tritonclient; (kind, detail)."""
    inputs = [triton.InferInput("x", [len(x)], "FP32"), triton.InferInput("y", [len(y)], "FP32")]
    inputs[0].set_data_from_numpy(x)
    inputs[1].set_data_from_numpy(y)
    try:
        result = await target.triton.infer(model, inputs, client_timeout=timeout)
    except InferenceServerException as exc:
        code = str(exc.status() or "UNKNOWN").replace("StatusCode.", "")
        return f"grpc_{code}", str(exc)
    return ("ok", "") if same(result.as_numpy("out"), x, y) else ("wrong_answer", "")


PROTOCOLS: dict[str, Callable[..., Any]] = {"v2-json": v2_json, "v2-grpc": v2_grpc, "tfserving": tfserving, "eas": eas}


async def flood_client(index: int, target: Target, results: Results, deadline: float, timeout: float,
                       max_requests: int) -> None:
    """One well-formed client: cycle protocols x models until the deadline (or the request cap)."""
    rng = random.Random(index)
    combos = [(p, m) for p in PROTOCOLS for m in (INLINE, WORKER)]
    conn = KeepAlive(target.http_port)
    i = index
    while time.monotonic() < deadline and results.requests < max_requests:
        protocol, model = combos[i % len(combos)]
        i += 1
        x, y = add_inputs(rng)
        start = time.monotonic()
        try:
            call = PROTOCOLS[protocol](target, conn, model, x, y, timeout)
            kind, detail = await asyncio.wait_for(call, timeout)
        except asyncio.TimeoutError:
            kind, detail = "hang", f"no answer in {timeout:g} s"
            conn.close()
        except Exception as exc:  # noqa: BLE001 - every other failure is counted by its kind
            kind, detail = type(exc).__name__, str(exc)
            conn.close()
            await asyncio.sleep(0.01)  # a server that is gone must not turn this into a busy loop
        results.well_formed(protocol, model, kind, start, detail)
    conn.close()


def expected_failure(record: tuple, kills: list[dict[str, Any]], end_of_run: float) -> bool:
    """A 503 (UNAVAILABLE on gRPC) on the worker model that overlapped a kill and its replacement."""
    protocol, model, kind, start, end, _ = record
    if model != WORKER or kind not in ("http_503", "grpc_UNAVAILABLE"):
        return False
    for kill in kills:
        window_end = (kill["back_t"] or end_of_run) + KILL_GRACE_S
        if start <= window_end and end >= kill["t"] - 0.05:
            return True
    return False


# -- hostile requests -----------------------------------------------------------------------------

@dataclass
class Hostile:
    """A raw request: bytes to send; ``abandon_after`` s: close without reading (half-sent)."""

    data: bytes
    abandon_after: float | None = None


def http_bytes(method: str, path: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
               content_length: Any = "auto") -> bytes:
    """An HTTP/1.1 request as bytes (Content-Length of the body unless given; None: no header)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if content_length == "auto":
        content_length = len(body) if body or method == "POST" else None
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def v2_body(shape_x: Any = None, datatype: Any = "FP32", data: Any = None) -> dict[str, Any]:
    """A v2 JSON infer body for the add model, with fields open to tampering."""
    data = [1.0, 2.0, 3.0, 4.0] if data is None else data
    return {"inputs": [
        {"name": "x", "datatype": datatype, "shape": [4] if shape_x is None else shape_x, "data": data},
        {"name": "y", "datatype": "FP32", "shape": [4], "data": [1.0, 2.0, 3.0, 4.0]},
    ]}


def infer_path(rng: random.Random) -> str:
    return f"/v2/models/{rng.choice((INLINE, WORKER))}/infer"


def binary_request(rng: random.Random, header_length: Any = None, data_size: int = 16,
                   shape: list[int] | None = None, payload: int = 16) -> bytes:
    """A v2 binary-extension infer request, lengths open to tampering."""
    header = orjson.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": shape or [4], "parameters": {"binary_data_size": data_size}},
        {"name": "y", "datatype": "FP32", "shape": shape or [4], "parameters": {"binary_data_size": data_size}},
    ]})
    body = header + os.urandom(payload) + os.urandom(payload)
    hlen = len(header) if header_length is None else header_length
    return http_bytes("POST", infer_path(rng), body, [("Inference-Header-Content-Length", str(hlen))])


def eas_array(dtype: int, dims: list[int], floats: list[float]) -> Any:
    """An EAS ArrayProto."""
    return eas_pb.ArrayProto(dtype=dtype, array_shape=eas_pb.ArrayShape(dim=dims), float_val=floats)


def eas_hostile(rng: random.Random) -> bytes:
    """A PredictRequest protobuf that lies: huge shape, wrong dtype, or a missing input."""
    kind = rng.choice(("huge-shape", "wrong-dtype", "missing", "negative-dim"))
    good = eas_array(eas_pb.DT_FLOAT, [4], [1, 2, 3, 4])
    if kind == "huge-shape":
        bad = eas_array(eas_pb.DT_FLOAT, [1 << 40, 1 << 20], [1.0])
    elif kind == "wrong-dtype":
        bad = eas_array(rng.choice((eas_pb.DT_STRING, eas_pb.DT_VARIANT, 99)), [4], [1, 2, 3, 4])
    elif kind == "negative-dim":
        bad = eas_array(eas_pb.DT_FLOAT, [-4], [1, 2, 3, 4])
    else:
        bad = None
    inputs = {"x": good} if bad is None else {"x": bad, "y": good}
    body = eas_pb.PredictRequest(signature_name="serving_default", inputs=inputs).SerializeToString()
    return http_bytes("POST", f"/api/predict/{rng.choice((INLINE, WORKER))}", body)


def grpc_infer_bytes(shape: list[int], raw: bytes, datatype: str = "FP32", model: str = INLINE) -> bytes:
    """A ModelInferRequest, serialized, with any shape and raw contents."""
    request = grpc_pb.ModelInferRequest(model_name=model, inputs=[
        grpc_pb.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=shape),
        grpc_pb.ModelInferRequest.InferInputTensor(name="y", datatype="FP32", shape=[4]),
    ], raw_input_contents=[raw, b"\0" * 16])
    return request.SerializeToString()


def make_cases(max_body_mb: float) -> list[tuple[str, float, Callable[[random.Random], Any]]]:
    """(name, weight, builder): a builder returns a Hostile (HTTP) or ("grpc", method, bytes)."""
    oversize = int((max_body_mb + 1) * (1 << 20))
    rnd = os.urandom
    good_json = orjson.dumps(v2_body())
    return [
        ("random-bytes v2", 3, lambda r: Hostile(http_bytes("POST", infer_path(r), rnd(r.randint(1, 4096))))),
        ("random-bytes eas", 3, lambda r: Hostile(http_bytes("POST", f"/api/predict/{r.choice((INLINE, WORKER))}",
                                                            rnd(r.randint(1, 4096))))),
        ("random-bytes tfserving", 2, lambda r: Hostile(http_bytes("POST", f"/v1/models/{INLINE}:predict",
                                                                  rnd(r.randint(1, 4096))))),
        ("random-bytes no http", 2, lambda r: Hostile(rnd(r.randint(1, 2048)) + b"\r\n\r\n")),
        ("truncated json", 3, lambda r: Hostile(http_bytes("POST", infer_path(r),
                                                          good_json[:r.randint(1, len(good_json) - 1)]))),
        ("wrong dtype", 3, lambda r: Hostile(http_bytes("POST", infer_path(r), orjson.dumps(v2_body(
            datatype=r.choice(("FP64", "INT8", "BYTES", "BOOL", "NOPE", 7, None))))))),
        ("wrong shape", 3, lambda r: Hostile(http_bytes("POST", infer_path(r), orjson.dumps(v2_body(
            shape_x=r.choice(([3], [-1], [2, 2], [0], "x", [1.5], [[4]]))))))),
        ("huge shape json", 3, lambda r: Hostile(http_bytes("POST", infer_path(r), orjson.dumps(v2_body(
            shape_x=r.choice(([1 << 31, 1 << 31], [1 << 62], [1 << 40, 1 << 40, 1 << 40])), data=[1.0]))))),
        ("huge shape binary", 3, lambda r: Hostile(binary_request(r, shape=[1 << 40, 1 << 20]))),
        ("bad binary header length", 3, lambda r: Hostile(binary_request(
            r, header_length=r.choice((100000, -5, "abc", 0, 1 << 63, 3, ""))))),
        ("bad binary_data_size", 3, lambda r: Hostile(binary_request(
            r, data_size=r.choice((1 << 40, 1000, 0, 15)), payload=16))),
        ("deep json", 2, lambda r: Hostile(http_bytes("POST", infer_path(r), b'{"inputs":[{"name":"x","data":'
                                                     + b"[" * 100000 + b"1" + b"]" * 100000 + b"}]}"))),
        ("non-json numbers", 2, lambda r: Hostile(http_bytes("POST", infer_path(r), good_json.replace(
            b"1.0", r.choice((b"NaN", b"1e999", b"-Infinity", b"0x10", b'"1"')), 1)))),
        ("eas lying protobuf", 3, lambda r: Hostile(eas_hostile(r))),
        ("tfserving bad body", 2, lambda r: Hostile(http_bytes("POST", f"/v1/models/{WORKER}:predict", r.choice((
            b'{"instances": [[[[1]]]], "inputs": {"x": [1]}}', b'{"inputs": {"x": "str", "y": null}}',
            b'{"instances": [{"x": 1}]}', b'{"instances": 5}', b"[]"))))),
        ("oversized body", 0.5, lambda r: Hostile(http_bytes("POST", infer_path(r), b"[" * oversize))),
        ("oversized declared length", 2, lambda r: Hostile(http_bytes(
            "POST", infer_path(r), b"{" * 65536, content_length=r.choice((1 << 34, 1 << 62, oversize))))),
        ("bad content-length", 2, lambda r: Hostile(http_bytes("POST", infer_path(r), good_json,
                                                               content_length=r.choice(("-1", "abc", "1e3", ""))))),
        ("conflicting content-length", 2, lambda r: Hostile(http_bytes(
            "POST", infer_path(r), good_json, [("Content-Length", "3")]))),
        ("bad chunked", 2, lambda r: Hostile(http_bytes("POST", infer_path(r), r.choice((
            b"zzzz\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffff\r\nabc\r\n", b"5\r\nabc\r\n0\r\n\r\n")),
            [("Transfer-Encoding", "chunked")], content_length=None))),
        ("half-sent headers", 2, lambda r: Hostile(
            f"POST {infer_path(r)} HTTP/1.1\r\nHost: {HOST}\r\nContent-Le".encode(), r.uniform(0.2, 1.5))),
        ("half-sent body", 2, lambda r: Hostile(http_bytes("POST", infer_path(r), good_json)[:-20],
                                               r.uniform(0.2, 1.5))),
        ("many headers", 2, lambda r: Hostile(http_bytes("GET", "/v2/health/ready", headers=[
            (f"X-Soak-{i}", "v" * 8) for i in range(r.choice((200, 2000, 20000)))]))),
        ("huge header", 2, lambda r: Hostile(http_bytes("GET", "/v2/health/ready", headers=[
            ("X-Soak", "v" * r.choice((8192, 65536, 1 << 20)))]))),
        ("long url", 2, lambda r: Hostile(http_bytes("GET", "/v2/models/" + "a" * r.choice((4096, 100000)))),),
        ("odd method", 1, lambda r: Hostile(http_bytes(r.choice(("BREW", "DELETE", "PUT", "OPTIONS")), infer_path(r),
                                                      good_json))),
        ("unknown model", 1, lambda r: Hostile(http_bytes("POST", "/v2/models/%00%ff../../etc/infer", good_json))),
        ("grpc garbage infer", 3, lambda r: ("grpc", "ModelInfer", rnd(r.randint(0, 2048)))),
        ("grpc garbage metadata", 1, lambda r: ("grpc", "ModelMetadata", rnd(r.randint(0, 512)))),
        ("grpc unknown method", 1, lambda r: ("grpc", "NoSuchMethod", rnd(r.randint(0, 64)))),
        ("grpc huge shape", 2, lambda r: ("grpc", "ModelInfer", grpc_infer_bytes(
            r.choice(([1 << 40, 1 << 20], [-1], [1 << 62])), b"\0" * 16, model=r.choice((INLINE, WORKER))))),
        ("grpc wrong dtype", 1, lambda r: ("grpc", "ModelInfer", grpc_infer_bytes(
            [4], b"\0" * 16, datatype=r.choice(("FP64", "BYTES", "NOPE", ""))))),
    ]


def request_head(data: bytes) -> str:
    """A short, printable account of a raw request: first line, a few headers, sizes, body start."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return f"{data[:60]!r} ({len(data)} B, no end of headers)"
    headers = data[:end].split(b"\r\n")
    notable = [h[:50] for h in headers[1:] if not h.startswith((b"Host:", b"Connection:"))][:2]
    body = data[end + 4:]
    text = repr(b" | ".join([headers[0][:60], *notable]))[2:-1]
    return f"{text} [{len(headers) - 1} headers, {end} B head] body[{len(body)}]={body[:40]!r}"


def http_class(status: int) -> str:
    """2xx / 4xx / 5xx / other from a status code."""
    return {2: "2xx", 4: "4xx", 5: "5xx"}.get(status // 100, "other")


async def read_status(reader: asyncio.StreamReader) -> tuple[str, str]:
    """(status class, status line) of the first response line; conn_error when the server closes first."""
    line = await reader.readline()
    if not line:
        return "conn_error", "closed without an answer"
    parts = line.split(b" ", 2)
    text = line.decode("latin-1").strip()[:80]
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return "other", text
    return http_class(int(parts[1])), text


async def send_raw(port: int, hostile: Hostile, timeout: float) -> tuple[str, str]:
    """Send ``hostile`` on a fresh connection; (outcome, detail: the answer and the request's head).

    The status is read while the body is still being written, so a server that answers early
    (413 on a declared length) and closes is an answer, not a connection error.
    """
    head = request_head(hostile.data)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return "conn_error", f"connect: {type(exc).__name__}"
    try:
        if hostile.abandon_after is not None:
            writer.write(hostile.data)
            await writer.drain()
            await asyncio.sleep(hostile.abandon_after)
            return "abandoned", head
        status = asyncio.ensure_future(read_status(reader))

        async def write() -> None:
            writer.write(hostile.data)
            await writer.drain()

        sender = asyncio.ensure_future(write())
        try:
            outcome = await asyncio.wait_for(asyncio.shield(status), timeout)
        except asyncio.TimeoutError:
            status.cancel()
            written = "body still being written" if not sender.done() else "all sent"
            return "hang", f"no status line in {timeout:g} s ({written}) <- {head}"
        except (ConnectionError, OSError) as exc:
            return "conn_error", f"{type(exc).__name__} <- {head}"
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return outcome[0], f"{outcome[1]} <- {head}"
    finally:
        writer.transport.abort()  # RST: no lingering half-closed sockets on our side


GRPC_CLASSES = {
    "INVALID_ARGUMENT": "4xx", "NOT_FOUND": "4xx", "UNIMPLEMENTED": "4xx", "RESOURCE_EXHAUSTED": "4xx",
    "FAILED_PRECONDITION": "4xx", "OUT_OF_RANGE": "4xx", "UNAUTHENTICATED": "4xx", "PERMISSION_DENIED": "4xx",
    "INTERNAL": "5xx", "UNKNOWN": "5xx", "DATA_LOSS": "5xx", "UNAVAILABLE": "conn_error",
    "DEADLINE_EXCEEDED": "hang", "CANCELLED": "conn_error", "OK": "2xx",
}


async def send_grpc(target: Target, method: str, payload: bytes, timeout: float) -> tuple[str, str]:
    """Raw bytes as a gRPC message (identity serializers); (outcome, grpc code and detail)."""
    call = target.channel.unary_unary(GRPC_SERVICE + method)  # no serializers: bytes in, bytes out
    try:
        await call(payload, timeout=timeout)
        return "2xx", f"OK <- {method} {payload[:24]!r}"
    except grpc.aio.AioRpcError as exc:
        name = exc.code().name
        return GRPC_CLASSES.get(name, "other"), f"{name}: {(exc.details() or '')[:120]} <- {method} {payload[:24]!r}"


async def fuzz_client(index: int, target: Target, results: Results, deadline: float, timeout: float,
                      cases: list, max_requests: int, pause: float) -> None:
    """One hostile client: weighted random cases until the deadline, ``pause`` s apart."""
    rng = random.Random(1000 + index)
    names, weights = [c[0] for c in cases], [c[1] for c in cases]
    builders = {c[0]: c[2] for c in cases}
    while time.monotonic() < deadline and results.requests < max_requests:
        case = rng.choices(names, weights)[0]
        request = builders[case](rng)
        try:
            if isinstance(request, Hostile):
                outcome, detail = await asyncio.wait_for(send_raw(target.http_port, request, timeout), timeout + 5)
            else:
                outcome, detail = await asyncio.wait_for(send_grpc(target, request[1], request[2], timeout),
                                                         timeout + 5)
        except asyncio.TimeoutError:
            outcome, detail = "hang", "no outcome in time"
        except Exception as exc:  # noqa: BLE001 - the soak reports, it does not crash
            outcome, detail = "client_error", f"{type(exc).__name__}: {exc}"
        results.hostile_outcome(case, outcome, detail)
        await asyncio.sleep(pause)


# -- worker kills ---------------------------------------------------------------------------------

async def killer(server_pid: int, results: Results, deadline: float, every: float) -> None:
    """Every ``every`` s SIGKILL one worker (round-robin); note when its successor shows up."""
    turn = 0
    while True:
        await asyncio.sleep(every)
        if time.monotonic() >= deadline - 1:
            return
        workers = sorted(worker_pids(server_pid))
        if not workers:
            continue
        victim = workers[turn % len(workers)]
        turn += 1
        kill = {"pid": victim, "t": time.monotonic(), "back_t": None}
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
        results.kills.append(kill)
        while time.monotonic() < deadline + 30:
            now = set(worker_pids(server_pid))
            if victim not in now and len(now) >= WORKER_INSTANCES:
                kill["back_t"] = time.monotonic()
                break
            await asyncio.sleep(0.05)


# -- the run --------------------------------------------------------------------------------------

async def run_load(args: argparse.Namespace, target: Target, server_pid: int, results: Results) -> None:
    """Flood, fuzz and kills at once until ``--duration``; everything bounded and cancelled at the end."""
    deadline = time.monotonic() + args.duration
    target.triton = triton.InferenceServerClient(f"{HOST}:{target.grpc_port}")
    target.channel = grpc.aio.insecure_channel(f"{HOST}:{target.grpc_port}")
    cases = make_cases(args.max_body_mb)
    tasks = [asyncio.ensure_future(flood_client(i, target, results, deadline, args.timeout, args.max_requests))
             for i in range(args.clients)]
    tasks += [asyncio.ensure_future(fuzz_client(i, target, results, deadline, args.hostile_timeout, cases,
                                                args.max_requests, args.fuzz_pause))
              for i in range(args.fuzzers)]
    if args.kill_every > 0:
        tasks.append(asyncio.ensure_future(killer(server_pid, results, deadline, args.kill_every)))
    try:
        done, pending = await asyncio.wait(tasks, timeout=args.duration + args.timeout + args.hostile_timeout + 40)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                print(f"load task failed: {task.exception()!r}", file=sys.stderr)
    finally:
        await target.triton.close()
        await target.channel.close()


def summarize(results: Results, health: Health, start: dict, end: dict, elapsed: float,
              restarts: float | None, alive: bool, final_health: bool) -> dict[str, Any]:
    """Tally the run into the figures printed and written."""
    end_of_run = time.monotonic()
    flags = [expected_failure(r, results.kills, end_of_run) for r in results.failures]
    expected = [r for r, ok in zip(results.failures, flags) if ok]
    unexpected = [r for r, ok in zip(results.failures, flags) if not ok]
    by_kind = Counter(r[2] for r in unexpected)
    if results.failure_overflow:
        by_kind["(more, not classified)"] += results.failure_overflow
    well_formed = sum(results.flood.values())
    hostile_total = sum(results.hostile.values())
    outcomes = Counter()
    for (_, outcome), n in results.hostile.items():
        outcomes[outcome] += n
    hangs = by_kind.get("hang", 0) + outcomes.get("hang", 0)
    peak = max(health.samples, key=lambda s: s["server_rss_mib"], default=start)
    summary = {
        "duration_s": elapsed, "requests": results.requests, "rps": results.requests / elapsed,
        "well_formed": well_formed, "well_formed_ok": sum(n for (_, _, k), n in results.flood.items() if k == "ok"),
        "expected_503_during_kill": len(expected), "unexpected_failures": dict(by_kind),
        "unexpected_failure_examples": [
            {"protocol": r[0], "model": r[1], "kind": r[2], "detail": r[5]} for r in unexpected[:20]],
        "hostile": hostile_total, "hostile_outcomes": dict(outcomes), "hangs": hangs,
        "kills": len(results.kills),
        "kill_restart_s": [round(k["back_t"] - k["t"], 3) for k in results.kills if k["back_t"]],
        "worker_restarts_metric": restarts,
        "server_rss_mib": [start["server_rss_mib"], end["server_rss_mib"]],
        "server_rss_peak_mib": peak["server_rss_mib"],
        "workers_rss_mib": [start["workers_rss_mib"], end["workers_rss_mib"]],
        "server_fds": [start["server_fds"], end["server_fds"]],
        "server_fd_kinds": [start["fd_kinds"], end["fd_kinds"]],
        "server_cpu_pct": 100 * (end["server_cpu_s"] - start["server_cpu_s"]) / elapsed,
        "load_cpu_pct": 100 * (end["load_cpu_s"] - start["load_cpu_s"]) / elapsed,
        "server_fds_peak": max((s["server_fds"] for s in health.samples), default=start["server_fds"]),
        "health_checks": len(health.latencies), "health_bad": dict(health.bad),
        "health_max_ms": max(health.latencies, default=0.0) * 1000,
        "health_ok_at_end": final_health, "server_alive": alive,
    }
    problems = []
    if not alive:
        problems.append("server process died")
    if not final_health:
        problems.append("health check failed at the end")
    if health.bad:
        problems.append(f"health checks failed or took over {HEALTH_BUDGET_S:g} s: {dict(health.bad)}")
    if unexpected or results.failure_overflow:
        problems.append(f"well-formed requests failed: {dict(by_kind)}")
    if hangs:
        problems.append(f"{hangs} requests hung")
    summary["problems"] = problems
    summary["survived"] = not problems
    return summary


def print_report(summary: dict, results: Results, note: str) -> None:
    """The tables: well-formed by protocol x model, hostile by case, then the server's figures."""
    print(f"\nSoak test, {summary['duration_s']:.0f} s ({note})\n")
    flood_rows: dict[tuple[str, str], dict[str, Any]] = {}
    for (protocol, model, kind), n in sorted(results.flood.items()):
        row = flood_rows.setdefault((protocol, model), {"protocol": protocol, "model": model, "requests": 0,
                                                        "ok": 0, "failed": Counter()})
        row["requests"] += n
        if kind == "ok":
            row["ok"] += n
        else:
            row["failed"][kind] += n
    rows = [{**r, "failed": ", ".join(f"{k}={v}" for k, v in r["failed"].items()) or "-"}
            for r in flood_rows.values()]
    print("Well-formed requests")
    print_table(rows, [("protocol", "protocol"), ("model", "model"), ("requests", "requests"), ("ok", "200 ok"),
                       ("failed", "not ok (kind=count)")])
    cases: dict[str, dict[str, Any]] = {}
    for (case, outcome), n in results.hostile.items():
        row = cases.setdefault(case, {"case": case, "sent": 0})
        row["sent"] += n
        row[outcome] = row.get(outcome, 0) + n
    print("\nHostile requests (answers by class)")
    print_table(sorted(cases.values(), key=lambda r: r["case"]),
                [("case", "case"), ("sent", "sent"), ("2xx", "2xx"), ("4xx", "4xx"), ("5xx", "5xx"),
                 ("conn_error", "conn err"), ("hang", "hang"), ("abandoned", "abandoned"), ("other", "other"),
                 ("client_error", "client err")])
    for (case, outcome), detail in sorted(results.hostile_examples.items()):
        if outcome in ("5xx", "hang", "other", "client_error"):
            print(f"  {outcome:5s} {case}: {detail}")
    s = summary
    figures = [
        ("requests (all)", f"{s['requests']}  ({s['rps']:.0f}/s)"),
        ("well-formed ok", f"{s['well_formed_ok']} of {s['well_formed']}"),
        ("503 during a worker kill (expected)", s["expected_503_during_kill"]),
        ("well-formed failures (unexpected)", ", ".join(f"{k}={v}" for k, v in s["unexpected_failures"].items())
         or "none"),
        ("hostile requests", f"{s['hostile']}: " + ", ".join(f"{k}={v}" for k, v in
                                                             sorted(s["hostile_outcomes"].items()))),
        ("worker kills / restarts (metric)", f"{s['kills']} / {s['worker_restarts_metric']}"),
        ("worker successor spawned after (s)", (f"median {statistics.median(s['kill_restart_s']):.2f}, max "
                                                f"{max(s['kill_restart_s']):.2f}") if s["kill_restart_s"] else "-"),
        ("server RSS start -> end (peak) MiB", "{:.1f} -> {:.1f} ({:.1f})".format(*s["server_rss_mib"],
                                                                                  s["server_rss_peak_mib"])),
        ("CPU used: server / load generator", f"{s['server_cpu_pct']:.0f}% / {s['load_cpu_pct']:.0f}% of a core"),
        ("workers' RSS sum start -> end MiB", "{:.1f} -> {:.1f}".format(*s["workers_rss_mib"])),
        ("server open fds start -> end (peak)", "{} -> {} ({})".format(*s["server_fds"], s["server_fds_peak"])),
        ("  of them /dev/shm start -> end", "{} -> {}".format(*(k.get("/dev/shm", 0) for k in s["server_fd_kinds"]))),
        ("health checks, max latency", f"{s['health_checks']}, {s['health_max_ms']:.1f} ms, "
         f"bad: {s['health_bad'] or 'none'}"),
        ("health OK at end / server alive", f"{s['health_ok_at_end']} / {s['server_alive']}"),
    ]
    print()
    print_table([{"what": k, "value": str(v)} for k, v in figures], [("what", "figure"), ("value", "value")])
    for example in s["unexpected_failure_examples"][:5]:
        print(f"  failed: {example}")
    print("\nSURVIVED" if s["survived"] else "\nFAILED: " + "; ".join(s["problems"]))


def server_log_errors(log_file: Any) -> list[str]:
    """Distinct ERROR lines and tracebacks (as 'where: exception') from the server's log, first 20."""
    log_file.seek(0)
    lines = log_file.read().decode(errors="replace").splitlines()
    found: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Traceback"):
            j, where = i + 1, ""
            while j < len(lines) and lines[j].startswith((" ", "\t")):
                if lines[j].lstrip().startswith("File "):
                    where = lines[j].strip()
                j += 1
            text = f"{where} -> {lines[j] if j < len(lines) else '?'}"
            i = j
        elif " ERROR " in line or " CRITICAL " in line:
            text = line.split(" ", 2)[-1]
            i += 1
        else:
            i += 1
            continue
        text = text[:400]
        if text not in found:
            found.append(text)
    return found[:20]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    parser.add_argument("--clients", type=int, default=16, help="well-formed clients")
    parser.add_argument("--fuzzers", type=int, default=4, help="hostile clients")
    parser.add_argument("--fuzz-pause", type=float, default=0.01, help="s each hostile client waits between requests")
    parser.add_argument("--kill-every", type=float, default=10.0, help="s between worker kills (0: none)")
    parser.add_argument("--timeout", type=float, default=15.0, help="s a well-formed request may take")
    parser.add_argument("--hostile-timeout", type=float, default=5.0, help="s a hostile request may go unanswered")
    parser.add_argument("--max-body-mb", type=float, default=4.0, help="the server's --max-body-mb")
    parser.add_argument("--max-requests", type=int, default=5_000_000, help="stop after this many requests")
    parser.add_argument("--json-out", type=Path, default=RESULTS / "soak.json")
    parser.add_argument("--server-log", type=Path, default=None, help="also copy the server's log here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    pin = can_pin()
    if pin:
        os.sched_setaffinity(0, {int(LOAD_CORE)})  # what taskset -c LOAD_CORE does, before any thread starts
    note = (f"server pinned to core {SERVER_CORE} with taskset (workers inherit it), load generator "
            f"(one asyncio process) on core {LOAD_CORE}" if pin else "not pinned (taskset or cores 0-1 missing)")
    note += f"; {os.cpu_count()} cores; loopback {HOST}"
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as log_file:
        repo = build_repository(Path(tmp) / "repo")
        http_port, grpc_port = free_port(), free_port()
        while grpc_port == http_port:
            grpc_port = free_port()
        proc = start_server(repo, http_port, grpc_port, args.max_body_mb, pin, log_file)
        exit_code: int | None = None
        try:
            wait_ready(proc, http_port, log_file)
            time.sleep(1.0)
            start = full_snapshot(proc.pid)
            health = Health(http_port, proc.pid)
            health.start()
            results = Results()
            t0 = time.monotonic()
            asyncio.run(run_load(args, Target(http_port, grpc_port), proc.pid, results))
            elapsed = time.monotonic() - t0
            health.stop.set()
            health.join(5)
            time.sleep(2.0)  # let the server close what the clients closed
            end = full_snapshot(proc.pid)
            final_health = health.check()[0] == "ok"
            restarts = restarts_metric(http_port)
            alive = proc.poll() is None
            summary = summarize(results, health, start, end, elapsed, restarts, alive, final_health)
        finally:
            exit_code = stop_server(proc)
        summary["server_exit_on_sigterm"] = exit_code
        summary["server_log_errors"] = server_log_errors(log_file)
        if args.server_log is not None:
            log_file.seek(0)
            args.server_log.write_bytes(log_file.read())
    print_report(summary, results, note)
    print(f"server exit code after SIGTERM: {exit_code}; distinct errors in the server log: "
          f"{len(summary['server_log_errors'])}")
    for line in summary["server_log_errors"][:10]:
        print(f"  log: {line}")
    hostile = {f"{case} -> {outcome}": {"count": n, "example": results.hostile_examples.get((case, outcome), "")}
               for (case, outcome), n in sorted(results.hostile.items())}
    payload = {"machine": note, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               **summary,
               "well_formed_by_kind": {f"{p} {m} {k}": n for (p, m, k), n in sorted(results.flood.items())},
               "hostile_by_case": hostile, "samples": health.samples}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {args.json_out}")
    return 0 if summary["survived"] else 1


if __name__ == "__main__":
    sys.exit(main())
