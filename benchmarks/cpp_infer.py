"""What one infer() call costs from C++, against Python in process and the Python client over loopback.

One identity package (out = x, float32 vectors of any length) is called three ways with 16 B, 4 KiB and
4 MiB tensors, and the median time per call is reported:

- **python in process**: ``modelpod.load(package).infer`` in this interpreter (the ceiling: no copy, no
  process boundary);
- **C++ (worker)**: the C++ library (cpp/, built here with CMake) calling the package's worker over the
  worker bridge: the tensor is copied into shared memory, a small JSON header crosses a Unix socket;
- **python client (loopback)**: ``modelpod.connect`` (v2 binary tensors over HTTP) against
  ``modelpod serve`` on 127.0.0.1.

Pinning, on the 2-core machine these figures come from: the serving side (the C++ library's worker, the
server) runs on core 0, the calling side (the C++ program, the Python client) on core 1; the in-process
case runs on core 1 alone. Every answer is checked against its input.

    python benchmarks/cpp_infer.py [--calls 300] [--build-dir DIR]

Prints a table and writes benchmarks/results/cpp_infer.json. Needs cmake and a C++17 compiler.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LOAD_CORE, SERVER_CORE, cpu_model, free_port, pinned_server, print_table, write_results  # noqa: E402
from models import pack_identity  # noqa: E402

import modelpod  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZES = {"16 B": 4, "4 KiB": 1024, "4 MiB": 1 << 20}


def build_cpp(build: Path) -> Path:
    """Configure and build cpp/ (Release) in ``build``; the benchmark program's path."""
    cmake = shutil.which("cmake", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if cmake is None:
        sys.exit("cmake is needed to build the C++ library: pip install cmake (in the dev extra)")
    for cmd in ([cmake, "-S", str(REPO / "cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 "-DMODELPOD_BUILD_TESTS=OFF", "-DMODELPOD_BUILD_EXAMPLES=ON"],
                [cmake, "--build", str(build), "-j2", "--target", "modelpod_bench"]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    found = list(build.rglob("modelpod_bench"))
    if not found:
        sys.exit(f"the build in {build} made no modelpod_bench program")
    return found[0]


class CppBench:
    """The C++ benchmark program (cpp/bench/bench.cpp), pinned to the calling core, its worker to the serving core."""

    def __init__(self, program: Path, package: Path) -> None:
        env = {**os.environ, "MODELPOD_PYTHON": sys.executable}
        self.proc = subprocess.Popen(["taskset", "-c", LOAD_CORE, str(program), str(package)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._expect("ready")
        pid = int(self._ask("pid", "pid").split()[1])
        subprocess.run(["taskset", "-p", "-c", SERVER_CORE, str(pid)], check=True, capture_output=True)

    def _expect(self, word: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith(word):
            raise RuntimeError(f"modelpod_bench said {line!r} (exit {self.proc.poll()})")
        return line

    def _ask(self, command: str, answer: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._expect(answer)

    def median_us(self, elements: int, calls: int) -> float:
        return float(self._ask(f"run {elements} {calls}", "us").split()[1])

    def close(self) -> None:
        try:
            self._ask_quit()
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def _ask_quit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()


def median_call_us(fn, calls: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(5):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def checked(call, x: np.ndarray):  # type: ignore[no-untyped-def]
    def run() -> None:
        out = call({"x": x})["out"]
        if out.shape != x.shape or not np.array_equal(out, x):
            raise AssertionError("wrong answer")
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls per case (median reported)")
    parser.add_argument("--build-dir", type=Path, help="where to build cpp/ (default: a temporary folder)")
    args = parser.parse_args(argv)

    os.sched_setaffinity(0, {int(LOAD_CORE)})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        program = build_cpp(args.build_dir or work / "build")
        package = pack_identity(work / "identity", elements=16)
        port = free_port()
        cpp = CppBench(program, package)
        try:
            with modelpod.load(package) as model, \
                    pinned_server([sys.executable, "-m", "modelpod.cli", "serve", str(package), "--http-port", str(port),
                                   "--grpc-port", "-1"], port), \
                    modelpod.connect(f"http://127.0.0.1:{port}") as client:
                for label, elements in SIZES.items():
                    x = np.arange(elements, dtype=np.float32) % 1000
                    local = median_call_us(checked(model.infer, x), args.calls)
                    native = cpp.median_us(elements, args.calls)
                    remote = median_call_us(checked(lambda i: client.infer("identity", i), x), args.calls)
                    rows.append({"tensor": label, "bytes": elements * 4, "python_in_process_us": round(local, 1),
                                 "cpp_worker_us": round(native, 1), "python_client_us": round(remote, 1),
                                 "cpp_vs_in_process": round(native / local, 2),
                                 "client_vs_cpp": round(remote / native, 2)})
        finally:
            cpp.close()
    machine = {"cpu": cpu_model(), "kernel": platform.release(), "cores": os.cpu_count(),
               "pinning": f"serving side on core {SERVER_CORE}, calling side on core {LOAD_CORE}"}
    print(f"\nPer-call cost of infer(), identity model, median of {args.calls} calls "
          f"({machine['cpu']}, {machine['pinning']})\n")
    print_table(rows, [("tensor", "tensor"), ("python_in_process_us", "python in-process µs"),
                       ("cpp_worker_us", "C++ (worker) µs"), ("python_client_us", "python client (loopback) µs"),
                       ("cpp_vs_in_process", "C++ / in-process"), ("client_vs_cpp", "client / C++")])
    print(f"\nwrote {write_results('cpp_infer', {'machine': machine, 'calls': args.calls, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
