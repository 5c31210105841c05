"""System shared memory against binary tensors: 1 MiB and 16 MiB float32 through an identity model.

The unmodified Triton clients call ``modelpod serve --shared-memory`` on loopback:

* ``http binary``: tritonclient.http, input and output as binary tensors in the body (its default);
* ``http shm``: the same client, input and output in POSIX regions registered once
  (tritonclient.utils.shared_memory); each call writes the input into its region, infers, and reads
  the output array from its region;
* ``grpc raw`` / ``grpc shm``: the same two over tritonclient.grpc.

Every mode's answer is checked first. Rounds are interleaved (each round runs every mode once, a
few calls each, in turn), and a mode's figure is the median over rounds of its per-round median
latency, so drift of the machine hits every mode alike. Server pinned to core 0, client to core 1.

    python benchmarks/shared_memory.py [--rounds 15] [--calls 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

import modelpod  # noqa: E402

SIZES_MIB = (1, 16)
IDENTITY = """
    def get_model(data_dir):
        def identity(x):
            return {"y": x}
        return identity
"""


def pack_identity(path: Path) -> Path:
    code = path.parent / "identity-code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "main.py").write_text(textwrap.dedent(IDENTITY))
    return modelpod.pack_python(
        path, name="identity", code_path_spec=[{"python_root": str(code), "dirs_to_package": [""]}],
        input_spec=[{"name": "x", "dtype": "float32", "shape": (None,)}],
        output_spec=[{"name": "y", "dtype": "float32", "shape": (None,)}], overwrite=True,
    )


class Modes:
    """One callable per mode for one tensor size; each returns the output array."""

    def __init__(self, http_url: str, grpc_url: str, x: np.ndarray) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient
        import tritonclient.utils.shared_memory as shm

        self.x = x
        self.shm = shm
        self.http = httpclient.InferenceServerClient(http_url)
        self.grpc = grpcclient.InferenceServerClient(grpc_url)
        tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.in_key, self.out_key = f"/mp_bench_in_{tag}", f"/mp_bench_out_{tag}"
        self.in_handle = shm.create_shared_memory_region("in", self.in_key, x.nbytes)
        self.out_handle = shm.create_shared_memory_region("out", self.out_key, x.nbytes)
        self.http.unregister_system_shared_memory()
        self.http.register_system_shared_memory("bench_in", self.in_key, x.nbytes)
        self.http.register_system_shared_memory("bench_out", self.out_key, x.nbytes)
        n = int(x.size)

        self.http_in = httpclient.InferInput("x", [n], "FP32")
        self.http_out = httpclient.InferRequestedOutput("y", binary_data=True)
        self.http_shm_in = httpclient.InferInput("x", [n], "FP32")
        self.http_shm_in.set_shared_memory("bench_in", x.nbytes)
        self.http_shm_out = httpclient.InferRequestedOutput("y", binary_data=True)
        self.http_shm_out.set_shared_memory("bench_out", x.nbytes)
        self.grpc_in = grpcclient.InferInput("x", [n], "FP32")
        self.grpc_out = grpcclient.InferRequestedOutput("y")
        self.grpc_shm_in = grpcclient.InferInput("x", [n], "FP32")
        self.grpc_shm_in.set_shared_memory("bench_in", x.nbytes)
        self.grpc_shm_out = grpcclient.InferRequestedOutput("y")
        self.grpc_shm_out.set_shared_memory("bench_out", x.nbytes)
        self.calls = {"http binary": self.http_binary, "http shm": self.http_shm,
                      "grpc raw": self.grpc_raw, "grpc shm": self.grpc_shm_call}

    def http_binary(self) -> np.ndarray:
        self.http_in.set_data_from_numpy(self.x, binary_data=True)
        return self.http.infer("identity", [self.http_in], outputs=[self.http_out]).as_numpy("y")

    def http_shm(self) -> np.ndarray:
        self.shm.set_shared_memory_region(self.in_handle, [self.x])
        self.http.infer("identity", [self.http_shm_in], outputs=[self.http_shm_out])
        return self.shm.get_contents_as_numpy(self.out_handle, np.float32, [self.x.size])

    def grpc_raw(self) -> np.ndarray:
        self.grpc_in.set_data_from_numpy(self.x)
        return self.grpc.infer("identity", [self.grpc_in], outputs=[self.grpc_out]).as_numpy("y")

    def grpc_shm_call(self) -> np.ndarray:
        self.shm.set_shared_memory_region(self.in_handle, [self.x])
        self.grpc.infer("identity", [self.grpc_shm_in], outputs=[self.grpc_shm_out])
        return self.shm.get_contents_as_numpy(self.out_handle, np.float32, [self.x.size])

    def close(self) -> None:
        self.http.unregister_system_shared_memory()
        self.shm.destroy_shared_memory_region(self.in_handle)
        self.shm.destroy_shared_memory_region(self.out_handle)
        self.http.close()
        self.grpc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5, help="calls per mode per round")
    args = parser.parse_args()
    try:
        os.sched_setaffinity(0, {int(loadgen.LOAD_CORE)})
    except (AttributeError, OSError):
        pass
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        package = pack_identity(Path(tmp) / "identity")
        port, grpc_port = loadgen.free_port(), loadgen.free_port()
        cmd = [str(Path(sys.executable).parent / "modelpod"), "serve", str(package), "--http-port", str(port),
               "--grpc-port", str(grpc_port), "--shared-memory", "--log-level", "warning"]
        with loadgen.pinned_server(cmd, port):
            for mib in SIZES_MIB:
                x = np.random.default_rng(mib).standard_normal((mib << 20) // 4).astype(np.float32)
                modes = Modes(f"127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", x)
                try:
                    for name, call in modes.calls.items():  # each mode's answer checked (and warmed) first
                        for _ in range(2):
                            got = call()
                        if not np.array_equal(got, x):
                            raise SystemExit(f"{name} at {mib} MiB returned the wrong tensor")
                    per_round: dict[str, list[float]] = {name: [] for name in modes.calls}
                    for _ in range(args.rounds):
                        for name, call in modes.calls.items():
                            times = []
                            for _ in range(args.calls):
                                start = time.perf_counter()
                                call()
                                times.append((time.perf_counter() - start) * 1000)
                            per_round[name].append(statistics.median(times))
                finally:
                    modes.close()
                medians = {name: statistics.median(values) for name, values in per_round.items()}
                for name, value in medians.items():
                    base = medians["http binary" if name.startswith("http") else "grpc raw"]
                    rows.append({"size_MiB": mib, "mode": name, "median_ms": value,
                                 "min_round_ms": min(per_round[name]), "max_round_ms": max(per_round[name]),
                                 "speedup_vs_body": base / value, "MB_per_s": 2 * (mib << 20) / value / 1e3})
    loadgen.print_table(rows, [("size_MiB", "MiB"), ("mode", "mode"), ("median_ms", "median ms"),
                               ("min_round_ms", "best round"), ("max_round_ms", "worst round"),
                               ("speedup_vs_body", "x vs body"), ("MB_per_s", "MB/s in+out")])
    note = (f"{loadgen.cpu_model()}, {os.cpu_count()} cores, kernel {platform.release()}; server pinned to core "
            f"{loadgen.SERVER_CORE}, client to core {loadgen.LOAD_CORE}; loopback; load average before the run "
            f"{load_before:.1f}; identity model (float32 in, same out); tritonclient 2.73 "
            f"http/grpc; median over {args.rounds} interleaved rounds of each round's median of {args.calls} "
            "sequential calls; shm modes include writing the input into its region and reading the output; "
            "x vs body: the binary-body (http) or raw-contents (grpc) median over this mode's median")
    path = loadgen.write_results("shared_memory", {"note": note, "rounds": args.rounds, "calls": args.calls,
                                                   "rows": rows})
    print(f"\n{note}\nwrote {path}")


if __name__ == "__main__":
    main()
