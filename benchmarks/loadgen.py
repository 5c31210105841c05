"""Shared benchmark plumbing: pinned server processes, wrk load runs, tables and JSON results.

Every server runs pinned to core 0 (``taskset -c 0``) and the load generator (wrk, one thread) to
core 1, so the figures say what one core of serving does. wrk is Debian's ``wrk`` package.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SERVER_CORE = "0"
LOAD_CORE = "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("these benchmarks drive load with wrk: apt-get install -y wrk")
    return wrk


@contextmanager
def pinned_server(cmd: Sequence[str], port: int, ready_path: str = "/v2/health/ready",
                  timeout: float = 120.0, ready: Callable[[], bool] | None = None) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` pinned to the server core until the block ends; wait for ``ready_path`` (or until
    ``ready()`` is true, for a server that speaks no HTTP)."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *cmd], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{cmd[0]} exited: {log.read().decode(errors='replace')[-2000:]}")
            if ready is not None:
                if ready():
                    break
            else:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} did not get ready")
            time.sleep(0.2)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


_LUA = """
wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
{headers}
"""


def wrk_run(url: str, body: bytes, headers: dict[str, str], concurrency: int, duration_s: float) -> dict[str, Any]:
    """POST ``body`` to ``url`` at ``concurrency`` for ``duration_s``; rps and latency percentiles (ms)."""
    wrk = require_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.bin"
        body_path.write_bytes(body)
        script = Path(tmp) / "post.lua"
        header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script.write_text(_LUA.format(body=body_path, headers=header_lines))
        out = subprocess.run(
            ["taskset", "-c", LOAD_CORE, wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s", "--latency",
             "-s", str(script), url],
            capture_output=True, text=True, check=True,
        ).stdout
    return parse_wrk(out)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rps (its latencies come with it); errors summed over all runs."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    return {**ordered[len(ordered) // 2], "errors": sum(r["errors"] for r in runs)}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50_ms": pct.get(50), "p90_ms": pct.get(90), "p99_ms": pct.get(99),
            "errors": errors, "requests": requests}


def print_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Print ``rows`` as an aligned text table with (key, heading) columns."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else str(v)

    cells = [[h for _, h in columns]] + [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def median_us(fn: Any, repeats: int = 200) -> float:
    """Median wall time of ``fn()`` in µs over ``repeats`` calls, after 10 warm-up calls."""
    import statistics

    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def cpu_model() -> str:
    """The processor's model name (figures are never compared across processors)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host() -> dict[str, Any]:
    return {"cpu": cpu_model(), "kernel": platform.release(), "cores": os.cpu_count()}


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (with the ``host``: CPU model, kernel, cores) to benchmarks/results/NAME.json."""
    payload = {"host": host(), **payload}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def machine_note() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores, kernel {platform.release()}; server pinned to core {SERVER_CORE}, wrk (1 thread) pinned to "
            f"core {LOAD_CORE}; loopback")
