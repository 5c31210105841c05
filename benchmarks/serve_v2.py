"""KServe v2 over HTTP: modelpod against the bare asyncio + orjson floor, in one run.

Scenarios: a tiny add (4 floats, JSON) at concurrency 1/16/64, and a 1 MiB tensor add (binary
inputs and outputs) at concurrency 1/4. The bare server runs twice: on uvloop (the loop modelpod
uses: the strict floor) and on asyncio's default loop. All three servers run at once, each pinned
to core 0 (an idle one costs nothing), wrk on core 1. Each scenario runs in ``--rounds`` rounds
that take the servers in turn, so drift of the machine hits them alike; the table gives each
server's median and the ratio of medians. Prints a table and writes benchmarks/results/serve_v2.json.

    python benchmarks/serve_v2.py [--duration 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import (  # noqa: E402
    free_port, machine_note, median_run, pinned_server, print_table, wrk_run, write_results,
)
from models import pack_add  # noqa: E402


def bodies() -> dict[str, tuple[bytes, dict[str, str]]]:
    tiny = orjson.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [4], "data": [1.0, 2.0, 3.0, 4.0]},
        {"name": "y", "datatype": "FP32", "shape": [4], "data": [1.0, 2.0, 3.0, 4.0]},
    ]})
    n = (1 << 20) // 4
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32).tobytes()
    header = orjson.dumps({
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [n], "parameters": {"binary_data_size": len(x)}},
            {"name": "y", "datatype": "FP32", "shape": [n], "parameters": {"binary_data_size": len(x)}},
        ],
        "parameters": {"binary_data_output": True},
    })
    return {
        "tiny-json": (tiny, {}),
        "1MiB-binary": (header + x + x, {"Inference-Header-Content-Length": str(len(header))}),
    }


SCENARIOS = [("tiny-json", 1), ("tiny-json", 16), ("tiny-json", 64), ("1MiB-binary", 1), ("1MiB-binary", 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and scenario (median reported)")
    args = parser.parse_args()
    payloads = bodies()
    results: dict[str, dict[tuple[str, int], dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as servers:
        package = pack_add(Path(tmp) / "add")
        commands = {
            "modelpod": lambda port: [sys.executable, "-m", "modelpod.cli", "serve", str(package),
                                      "--http-port", str(port), "--grpc-port", "-1", "--log-level", "warning"],
            "bare": lambda port: [sys.executable, str(Path(__file__).parent / "bare_v2_server.py"), str(port)],
            "bare-asyncio": lambda port: [sys.executable, str(Path(__file__).parent / "bare_v2_server.py"),
                                          str(port), "--loop", "asyncio"],
        }
        urls = {}
        for name, cmd in commands.items():
            port = free_port()
            servers.enter_context(pinned_server(cmd(port), port))
            urls[name] = f"http://127.0.0.1:{port}/v2/models/add/infer"
            wrk_run(urls[name], payloads["tiny-json"][0], {}, 4, 1.0)  # warm the path
            results[name] = {}
        for scenario, conc in SCENARIOS:
            body, headers = payloads[scenario]
            runs: dict[str, list[dict]] = {name: [] for name in urls}
            for _ in range(args.rounds):
                for name, url in urls.items():
                    runs[name].append(wrk_run(url, body, headers, conc, args.duration))
            for name, rounds in runs.items():
                results[name][(scenario, conc)] = median_run(rounds)
                print(f"  {name:12s} {scenario:12s} c={conc:<3d} " + " ".join(f"{r['rps']:.0f}" for r in rounds)
                      + " rps", file=sys.stderr)
    rows = []
    for scenario, conc in SCENARIOS:
        mp, bare = results["modelpod"][(scenario, conc)], results["bare"][(scenario, conc)]
        plain = results["bare-asyncio"][(scenario, conc)]
        rows.append({
            "scenario": scenario, "concurrency": conc,
            "modelpod_rps": mp["rps"], "modelpod_p50_ms": mp["p50_ms"], "modelpod_p99_ms": mp["p99_ms"],
            "bare_rps": bare["rps"], "bare_p50_ms": bare["p50_ms"], "bare_p99_ms": bare["p99_ms"],
            "ratio": mp["rps"] / bare["rps"], "asyncio_rps": plain["rps"],
            "ratio_asyncio": mp["rps"] / plain["rps"], "errors": mp["errors"] + bare["errors"] + plain["errors"],
        })
    print(f"\nKServe v2 REST, modelpod vs the bare asyncio+orjson server on uvloop (as modelpod) and on "
          f"asyncio's default loop; medians of {args.rounds} interleaved {args.duration:g} s runs ({machine_note()})\n")
    print_table(rows, [("scenario", "scenario"), ("concurrency", "conc"), ("modelpod_rps", "modelpod rps"),
                       ("modelpod_p50_ms", "p50 ms"), ("modelpod_p99_ms", "p99 ms"), ("bare_rps", "bare rps"),
                       ("bare_p50_ms", "p50 ms"), ("bare_p99_ms", "p99 ms"), ("ratio", "ratio"),
                       ("asyncio_rps", "bare asyncio rps"), ("ratio_asyncio", "ratio"), ("errors", "errors")])
    path = write_results("serve_v2", {"machine": machine_note(), "duration_s": args.duration,
                                      "rounds": args.rounds, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
