"""modelpod on Ray Serve against plain ``modelpod serve``, on the same machine, in one run.

The tiny add (JSON, concurrency 16) and the 1 MiB binary add (concurrency 1) through Ray's HTTP
proxy with 1 and 2 replicas (``modelpod serve --ray``), with 1 replica behind the per-model router
(``--ray-layout models``: one more hop), and through plain ``modelpod serve``. Every
server and all of its processes (Ray's proxy, controller and replicas included) run pinned to core
0 (``taskset``), wrk to core 1. Also: how long ``serve --ray`` takes from start to ready, and the
resident memory of each replica process. Prints tables, writes benchmarks/results/ray_serve.json.

    python benchmarks/ray_serve.py [--duration 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import (  # noqa: E402
    free_port,
    machine_note,
    median_run,
    pinned_server,
    print_table,
    write_results,
    wrk_run,
)
from models import pack_add  # noqa: E402
from serve_v2 import bodies  # noqa: E402

SCENARIOS = [("tiny-json", 16), ("1MiB-binary", 1)]


def replica_rss_mb() -> list[float]:
    """RSS of every Ray Serve replica process on the machine, in MB."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if b"ServeReplica" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        found.append(rss / 1024)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per server and scenario (median reported)")
    args = parser.parse_args()
    payloads = bodies()
    rows, starts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        package = pack_add(Path(tmp) / "add")
        base = [sys.executable, "-m", "modelpod.cli", "serve", str(package), "--grpc-port", "-1",
                "--log-level", "warning"]
        setups = {"plain": [], "ray-1": ["--ray", "--replicas", "1"], "ray-2": ["--ray", "--replicas", "2"],
                  "ray-router": ["--ray", "--replicas", "1", "--ray-layout", "models"]}
        results = {}
        for name, extra in setups.items():
            port = free_port()
            started = time.monotonic()
            with pinned_server([*base, "--http-port", str(port), *extra], port, timeout=300):
                ready_s = time.monotonic() - started
                url = f"http://127.0.0.1:{port}/v2/models/add/infer"
                wrk_run(url, payloads["tiny-json"][0], {}, 4, 1.0)  # warm the path
                rss = replica_rss_mb()
                starts.append({"setup": name, "ready_s": ready_s, "replicas": len(rss),
                               "replica_rss_mb": sum(rss) / len(rss) if rss else None})
                for scenario, conc in SCENARIOS:
                    body, headers = payloads[scenario]
                    runs = [wrk_run(url, body, headers, conc, args.duration) for _ in range(args.rounds)]
                    results[(name, scenario, conc)] = median_run(runs)
                    print(f"  {name:6s} {scenario:12s} c={conc:<3d} " + " ".join(f"{r['rps']:.0f}" for r in runs)
                          + " rps", file=sys.stderr)
    for scenario, conc in SCENARIOS:
        plain = results[("plain", scenario, conc)]
        for name in setups:
            run = results[(name, scenario, conc)]
            rows.append({"scenario": scenario, "concurrency": conc, "setup": name, "rps": run["rps"],
                         "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "vs_plain": run["rps"] / plain["rps"],
                         "errors": run["errors"]})
    print(f"\nKServe v2 REST through Ray Serve's proxy against plain modelpod serve; medians of {args.rounds} "
          f"{args.duration:g} s runs; every server process on core 0, wrk on core 1 ({machine_note()})\n")
    print_table(rows, [("scenario", "scenario"), ("concurrency", "conc"), ("setup", "setup"), ("rps", "rps"),
                       ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("vs_plain", "x plain"), ("errors", "errors")])
    print("\nStart to ready, and memory per replica\n")
    print_table(starts, [("setup", "setup"), ("ready_s", "start to ready s"), ("replicas", "replica processes"),
                         ("replica_rss_mb", "RSS per replica MB")])
    path = write_results("ray_serve", {"machine": machine_note(), "duration_s": args.duration,
                                       "rounds": args.rounds, "rows": rows, "starts": starts})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
