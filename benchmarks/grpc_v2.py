"""KServe v2 gRPC: modelpod against grpcio's own floor (a bare server on the same proto), in one run.

The tiny add (4 float32 + 4 float32, ``raw_input_contents``) with 1, 16 and 64 streams in flight
against three servers, all pinned to core 0 (an idle one costs nothing): ``modelpod serve``
(grpcio's threaded server, every check, limit and metric on), the bare grpcio threaded server
(``bare_grpc_server.py --flavour sync``: decode, add, encode, nothing else) and the bare
``grpc.aio`` server. The load is h2load (Debian's ``nghttp2-client``; C, so the client is not
the wall) on core 1: one HTTP/2 connection, as one gRPC channel, sending the same pre-encoded
``ModelInferRequest``; each server's answer to that exact request is checked with a grpcio
client first (h2load counts HTTP statuses only), and a run with any failed stream is an error.
Rounds take the servers in turn; the table gives medians and the ratio of modelpod to each floor
(h2load reports mean and max latency, no percentiles). Prints a table and writes
benchmarks/results/grpc_v2.json with the CPU model and kernel.

    python benchmarks/grpc_v2.py [--duration 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LOAD_CORE, SERVER_CORE, cpu_model, free_port, pinned_server, print_table, write_results  # noqa: E402
from models import pack_add  # noqa: E402

from modelpod.protos import grpc_service_pb2 as pb  # noqa: E402

HERE = Path(__file__).resolve().parent
LEVELS = (1, 16, 64)
H2LOAD = shutil.which("h2load") or sys.exit("this benchmark drives gRPC load with h2load: apt-get install -y nghttp2-client")


def grpc_ready(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady",
                                        request_serializer=pb.ServerReadyRequest.SerializeToString,
                                        response_deserializer=pb.ServerReadyResponse.FromString)
            return ready(pb.ServerReadyRequest(), timeout=1).ready
    except grpc.RpcError:
        return False


def request_body() -> bytes:
    """The tiny add's ModelInferRequest in gRPC's length-prefixed framing (what h2load sends)."""
    request = pb.ModelInferRequest(model_name="add")
    for name in ("x", "y"):
        request.inputs.add(name=name, datatype="FP32", shape=[4])
        request.raw_input_contents.append(np.array([1, 2, 3, 4], np.float32).tobytes())
    message = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(message)) + message


def check_answer(port: int, body: bytes) -> None:
    """The server answers the benchmark's exact request with out = x + y (h2load checks only HTTP statuses)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=lambda b: b, response_deserializer=pb.ModelInferResponse.FromString)
        answer = infer(body[5:], timeout=10)
    out = np.frombuffer(answer.raw_output_contents[0], np.float32)
    if not np.array_equal(out, np.array([2, 4, 6, 8], np.float32)):
        raise RuntimeError(f"port {port} answered {out}")


def bench(port: int, body_path: Path, concurrency: int, duration_s: float) -> dict:
    """One h2load run on the load core: one HTTP/2 connection (a gRPC channel) with ``concurrency`` streams."""
    cmd = ["taskset", "-c", LOAD_CORE, H2LOAD, "-c", "1", "-m", str(concurrency), "-D", f"{duration_s:g}", "--warm-up-time", "1",
           "-d", str(body_path), "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60).stdout
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                     out)
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    latency = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if not (done and rate and latency):
        raise RuntimeError(f"h2load said:\n{out[-2000:]}")
    if int(done.group(4)) or int(done.group(5)):
        raise RuntimeError(f"h2load counted failures against port {port}:\n{out[-2000:]}")
    return {"rps": float(rate.group(1)), "mean_ms": _ms(latency.group(3)), "max_ms": _ms(latency.group(2))}


def _ms(text: str) -> float:
    value = float(re.match(r"[\d.]+", text).group(0))  # type: ignore[union-attr]
    return value / 1000 if text.endswith("us") else value * 1000 if text.endswith("s") and not text.endswith("ms") \
        else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and level (median reported)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as servers:
        package = pack_add(Path(tmp) / "add")
        body = request_body()
        body_path = Path(tmp) / "request.bin"
        body_path.write_bytes(body)
        ports: dict[str, int] = {}
        commands = {
            "modelpod": lambda port: [sys.executable, "-m", "modelpod.cli", "serve", str(package), "--http-port", "0",
                                      "--grpc-port", str(port), "--log-level", "warning"],
            "bare-grpcio": lambda port: [sys.executable, str(HERE / "bare_grpc_server.py"), str(port)],
            "bare-grpc-aio": lambda port: [sys.executable, str(HERE / "bare_grpc_server.py"), str(port),
                                           "--flavour", "aio"],
        }
        for name, command in commands.items():
            port = free_port()
            servers.enter_context(pinned_server(command(port), port, ready=lambda p=port: grpc_ready(p)))
            ports[name] = port
            check_answer(port, body)
            bench(port, body_path, 4, 1)  # warm the path
        for level in LEVELS:
            runs: dict[str, list[dict]] = {name: [] for name in ports}
            for _ in range(args.rounds):
                for name, port in ports.items():
                    runs[name].append(bench(port, body_path, level, args.duration))
            med = {name: {key: statistics.median(r[key] for r in rs) for key in ("rps", "mean_ms", "max_ms")}
                   for name, rs in runs.items()}
            for name, rs in runs.items():
                print(f"  {name:14} c={level:<3} " + " ".join(f"{r['rps']:.0f}" for r in rs) + " rps", flush=True)
            rows.append({"concurrency": level, **{f"{n}_{k}": round(v, 3 if k != "rps" else 0)
                                                 for n, m in med.items() for k, v in m.items()},
                         "vs_grpcio": round(med["modelpod"]["rps"] / med["bare-grpcio"]["rps"], 3),
                         "vs_grpc_aio": round(med["modelpod"]["rps"] / med["bare-grpc-aio"]["rps"], 3)})
    machine = {"cpu": cpu_model(), "kernel": platform.release(),
               "pinning": f"servers on core {SERVER_CORE}, h2load (one HTTP/2 connection) on core {LOAD_CORE}"}
    print(f"\nKServe v2 gRPC, tiny add, medians of {args.rounds} interleaved {args.duration:g} s runs "
          f"({machine['cpu']}, kernel {machine['kernel']}; {machine['pinning']})\n")
    print_table(rows, [("concurrency", "streams"), ("modelpod_rps", "modelpod rps"), ("modelpod_mean_ms", "mean ms"),
                       ("modelpod_max_ms", "max ms"), ("bare-grpcio_rps", "bare grpcio rps"),
                       ("bare-grpcio_mean_ms", "mean ms"), ("vs_grpcio", "ratio"),
                       ("bare-grpc-aio_rps", "bare grpc.aio rps"), ("vs_grpc_aio", "ratio")])
    print(f"\nwrote {write_results('grpc_v2', {'machine': machine, 'rounds': args.rounds, 'rows': rows})}")


if __name__ == "__main__":
    main()
