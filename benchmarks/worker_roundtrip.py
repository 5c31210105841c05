"""What a worker process costs: a 4 MiB tensor through shared memory vs the same call in process.

Runs an identity model (out = x) on float32 tensors of several sizes, in process (``model.infer``)
and through a :class:`~modelpod.serving.execution.workers.ProcessInstance` (copy into shared memory, a
JSON header over the worker bridge's socket, the worker runs ``model.infer`` on a zero-copy view,
copy back). Prints the median of each and the difference; writes benchmarks/results/worker_roundtrip.json. Not pinned (the round trip needs
both processes); the machine has 2 cores.

    python benchmarks/worker_roundtrip.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import median_us, print_table, write_results  # noqa: E402
from models import pack_identity  # noqa: E402

import modelpod  # noqa: E402
from modelpod.serving.execution.workers import ProcessInstance  # noqa: E402


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        package = pack_identity(Path(tmp) / "identity", elements=16)
        instance = ProcessInstance(package, "identity", 0)
        instance.start()
        try:
            with modelpod.load(package) as model:
                for size in (4 << 10, 256 << 10, 4 << 20, 16 << 20):
                    x = {"x": np.random.default_rng(0).standard_normal(size // 4, dtype=np.float32)}
                    local = median_us(lambda: model.infer(x))
                    remote = median_us(lambda: instance._roundtrip(x, None, None))
                    got = instance._roundtrip(x, None, None)["out"]
                    assert np.array_equal(got, x["x"])
                    rows.append({"bytes": size, "in_process_us": local, "worker_us": remote,
                                 "added_us": remote - local})
        finally:
            instance.stop()
    print("\nTensor round trip through a worker process (shared memory), median of 200\n")
    print_table(rows, [("bytes", "tensor bytes"), ("in_process_us", "in-process µs"),
                       ("worker_us", "worker µs"), ("added_us", "added µs")])
    print(f"\nwrote {write_results('worker_roundtrip', {'rows': rows})}")


if __name__ == "__main__":
    main()
