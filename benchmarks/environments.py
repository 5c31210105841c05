"""What per-package environments cost: building one, the disk and memory they take, and a call.

1. Build time of one environment (an identity package locked to this server's numpy):
   **cold** (empty modelpod home and an empty uv cache: everything downloaded), **warm** (empty
   home, uv's cache holds the wheels: hard-linked), **reused** (the environment exists: found by
   its key, uv not run).
2. Disk: an environment's files, and the part only it holds (files not hard-linked with uv's cache).
3. Memory of one worker process once loaded (RSS and PSS, from /proc): a worker of the server's
   interpreter, and an isolated one.
4. Per-call cost of the identity model for 4 KiB, 4 MiB and 16 MiB float32 tensors: in process,
   through a worker of the server's interpreter, through an isolated worker (each the median of 5
   interleaved rounds of 200 calls).

Prints tables, writes benchmarks/results/environments.json. Needs the network for the cold build.
The round trips use both processes, so nothing is pinned (the machine has 2 cores).

    python benchmarks/environments.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import median_us, print_table, write_results  # noqa: E402
from models import pack_identity  # noqa: E402

import modelpod  # noqa: E402
from modelpod.envs.sources import package_source  # noqa: E402
from modelpod.envs.store import EnvStore  # noqa: E402
from modelpod.runtime.workerproc import worker_command  # noqa: E402
from modelpod.serving.execution.workers import ProcessInstance  # noqa: E402

SIZES = (4 << 10, 4 << 20, 16 << 20)
ROUNDS = 5




def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Rss:", "Pss:"):
            values[parts[0]] = int(parts[1])
    return values["Rss:"], values["Pss:"]


def build_times(package: Path, tmp: Path) -> list[dict]:
    source = package_source(package)
    assert source is not None
    rows = []
    saved = os.environ.get("UV_CACHE_DIR")
    try:
        os.environ["UV_CACHE_DIR"] = str(tmp / "uv-cache-cold")
        for label, home in (("cold (empty uv cache, downloads)", tmp / "home-cold"),
                            ("warm (wheels in uv's cache)", tmp / "home-warm"),
                            ("reused (already built)", tmp / "home-warm")):
            store = EnvStore(home)
            start = time.perf_counter()
            store.ensure(source).release()
            seconds = time.perf_counter() - start
            (record,) = store.list()
            rows.append({"build": label, "seconds": seconds, "size_mb": record.size / (1 << 20),
                         "own_disk_mb": record.unshared / (1 << 20), "packages": len(record.packages)})
    finally:
        if saved is None:
            os.environ.pop("UV_CACHE_DIR", None)
        else:
            os.environ["UV_CACHE_DIR"] = saved
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MODELPOD_HOME"] = str(tmp / "home")
        plain = pack_identity(tmp / "plain", elements=16)
        isolated = pack_identity(tmp / "isolated", elements=16, requirements=[f"numpy=={np.__version__}"])
        builds = build_times(isolated, tmp)

        env = EnvStore().ensure(package_source(isolated))
        workers = {"server interpreter": ProcessInstance(plain, "identity", 0),
                   "isolated": ProcessInstance(isolated, "identity", 1, command=worker_command(env.python))}
        calls, memory = [], []
        try:
            for worker in workers.values():
                worker.start()
            for label, worker in workers.items():
                rss, pss = memory_kib(worker.pid)
                memory.append({"worker": label, "rss_mb": rss / 1024, "pss_mb": pss / 1024})
            with modelpod.load(plain) as model:
                for size in SIZES:
                    x = {"x": np.random.default_rng(0).standard_normal(size // 4, dtype=np.float32)}
                    row = {"bytes": size, "in_process_us": median_us(lambda: model.infer(x))}
                    rounds: dict[str, list[float]] = {"worker_us": [], "isolated_us": []}
                    for _ in range(ROUNDS):  # interleaved, so a slow moment of the machine hits both
                        for key, worker in (("worker_us", workers["server interpreter"]),
                                            ("isolated_us", workers["isolated"])):
                            rounds[key].append(median_us(lambda: worker._roundtrip(x, None, None)))
                            assert np.array_equal(worker._roundtrip(x, None, None)["out"], x["x"])
                    row.update({key: statistics.median(values) for key, values in rounds.items()})
                    row["isolated_added_us"] = row["isolated_us"] - row["in_process_us"]
                    row["isolated_vs_worker"] = row["isolated_us"] / row["worker_us"]
                    calls.append(row)
        finally:
            for worker in workers.values():
                worker.stop()
            env.release()

    print("\nBuilding one environment (identity package, numpy pinned to the server's)\n")
    print_table(builds, [("build", "build"), ("seconds", "seconds"), ("size_mb", "files MB"),
                         ("own_disk_mb", "own disk MB"), ("packages", "packages")])
    print("\nMemory of one loaded worker process\n")
    print_table(memory, [("worker", "worker"), ("rss_mb", "RSS MB"), ("pss_mb", "PSS MB")])
    print(f"\nPer call, identity model, median of {ROUNDS} interleaved rounds of 200 (2 cores, not pinned)\n")
    print_table(calls, [("bytes", "tensor bytes"), ("in_process_us", "in-process µs"),
                        ("worker_us", "worker µs"), ("isolated_us", "isolated µs"),
                        ("isolated_added_us", "isolated added µs"), ("isolated_vs_worker", "isolated/worker")])
    print(f"\nwrote {write_results('environments', {'builds': builds, 'memory': memory, 'calls': calls})}")


if __name__ == "__main__":
    main()
