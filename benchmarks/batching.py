"""Dynamic batching on the MLP (x[batch,256] -> relu(x@W1)@W2), batch-1 requests over v2 JSON.

For concurrency 1/16/64 it measures modelpod with batching off and on, and the bare asyncio +
orjson server doing the same maths without batching, each pinned to core 0 with wrk on core 1.
Two ratios come from the same run: against the in-process ceiling (the maths alone in a loop at
its best batch size, on core 0) and against the bare server. Mean batch size is read from the
server's own /metrics. Prints a table; writes benchmarks/results/batching.json.

    python benchmarks/batching.py [--duration 5] [--max-batch 64] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import SERVER_CORE, free_port, machine_note, pinned_server, print_table, wrk_run, write_results  # noqa: E402
from models import pack_mlp  # noqa: E402

CONCURRENCY = (1, 16, 64)

_CEILING = """
import time, sys
sys.path.insert(0, {here!r})
import numpy as np
from models import mlp_weights
w1, w2 = mlp_weights()
best = 0.0
for b in (1, 8, 32, 64, 128, 256):
    x = np.random.default_rng(0).standard_normal((b, 256), dtype=np.float32)
    for _ in range(20):
        np.maximum(x @ w1, 0) @ w2
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        np.maximum(x @ w1, 0) @ w2
        n += b
    best = max(best, n / (time.perf_counter() - start))
print(best)
"""


def ceiling_rows_per_s() -> float:
    """The maths alone, in a loop at its best batch size, pinned to the server core."""
    out = subprocess.run(["taskset", "-c", SERVER_CORE, sys.executable, "-c",
                          _CEILING.format(here=str(Path(__file__).resolve().parent))],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip())


def batch_totals(port: int) -> tuple[float, float]:
    """(rows, model calls) so far, from the server's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    total = re.search(r'^modelpod_batch_size_sum\{[^}]*model="mlp"[^}]*\} (\S+)', text, re.M)
    count = re.search(r'^modelpod_batch_size_count\{[^}]*model="mlp"[^}]*\} (\S+)', text, re.M)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    x = np.random.default_rng(1).standard_normal((1, 256), dtype=np.float32)
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                                     "data": x.ravel().tolist()}]})
    rows = []
    ceiling = ceiling_rows_per_s()
    with tempfile.TemporaryDirectory() as tmp:
        package = pack_mlp(Path(tmp) / "mlp")
        configs = {
            "modelpod, batching off": {"execution": "inline"},
            "modelpod, batching on": {"max_batch_size": args.max_batch, "max_batch_delay_ms": args.delay_ms},
        }
        results: dict[str, dict[int, dict]] = {}
        for label, metadata in configs.items():
            cfg = Path(tmp) / f"{len(results)}.json"
            cfg.write_text(json.dumps({"name": "mlp", "model_path": str(package), "metadata": metadata}))
            port = free_port()
            cmd = [sys.executable, "-m", "modelpod.cli", "serve", str(cfg), "--http-port", str(port),
                   "--grpc-port", "-1", "--log-level", "warning"]
            results[label] = {}
            with pinned_server(cmd, port):
                url = f"http://127.0.0.1:{port}/v2/models/mlp/infer"
                wrk_run(url, body, {}, 4, 1)
                for conc in CONCURRENCY:
                    rows0, calls0 = batch_totals(port)
                    res = wrk_run(url, body, {}, conc, args.duration)
                    rows1, calls1 = batch_totals(port)
                    res["mean_batch"] = (rows1 - rows0) / (calls1 - calls0) if calls1 > calls0 else 1.0
                    results[label][conc] = res
                    print(f"  {label:24s} c={conc:<3d} {res['rps']:.0f} rps", file=sys.stderr)
        port = free_port()
        results["bare asyncio+orjson"] = {}
        with pinned_server([sys.executable, str(Path(__file__).parent / "bare_v2_server.py"), str(port), "--mlp"], port):
            url = f"http://127.0.0.1:{port}/v2/models/mlp/infer"
            wrk_run(url, body, {}, 4, 1)
            for conc in CONCURRENCY:
                res = wrk_run(url, body, {}, conc, args.duration)
                res["mean_batch"] = 1.0
                results["bare asyncio+orjson"][conc] = res
                print(f"  {'bare':24s} c={conc:<3d} {res['rps']:.0f} rps", file=sys.stderr)
    for label, by_conc in results.items():
        for conc, res in by_conc.items():
            rows.append({
                "server": label, "concurrency": conc, "rps": res["rps"], "p50_ms": res["p50_ms"],
                "p99_ms": res["p99_ms"], "mean_batch": res["mean_batch"], "errors": res["errors"],
                "vs_ceiling": res["rps"] / ceiling,
                "vs_bare": res["rps"] / results["bare asyncio+orjson"][conc]["rps"],
            })
    print(f"\nMLP 256->1024->10, batch-1 requests over KServe v2 JSON ({machine_note()})")
    print(f"in-process ceiling (maths alone, best batch size, core {SERVER_CORE}): {ceiling:.0f} rows/s\n")
    print_table(rows, [("server", "server"), ("concurrency", "conc"), ("rps", "rps"), ("p50_ms", "p50 ms"),
                       ("p99_ms", "p99 ms"), ("mean_batch", "mean batch"), ("errors", "errors"),
                       ("vs_ceiling", "x ceiling"), ("vs_bare", "x bare")])
    path = write_results("batching", {"machine": machine_note(), "ceiling_rows_per_s": ceiling,
                                      "max_batch": args.max_batch, "delay_ms": args.delay_ms, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
