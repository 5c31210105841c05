"""Compact transport over loopback: the int8 seed's shapes through a real model and server.

A python-platform model takes a 1024x1024x3 float32 image and returns a [100, 28, 28, 81] float32
mask (a fixed pattern of soft discs in [0, 1] scaled by the image's mean, so it depends on the input). The
modelpod SDK calls it over v2 binary HTTP with:

* ``float32``: no compact transport;
* ``float16``: image and mask as float16;
* ``int8``: image and mask as int8 (affine, per tensor);
* ``int8+zstd``: the same, with zstd request and response bodies.

For each: body bytes each way, end-to-end latency (median of N calls, client to client), the max
abs error of the mask against the float32 answer, and the documented bound of the output scheme.
Server pinned to core 0, client to core 1 (``loadgen.pinned_server``).

    python benchmarks/transport.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

import modelpod  # noqa: E402
from modelpod.codecs import transport as tp  # noqa: E402

IMAGE_SHAPE = (1024, 1024, 3)
MASK_SHAPE = (100, 28, 28, 81)
MAIN = """
    import numpy as np

    def get_model(data_dir):
        # the masks' fixed pattern: per instance a soft disc, per class a shifted edge (mostly ~0 or ~1,
        # like a real mask head's sigmoid outputs)
        rng = np.random.default_rng(7)
        grid = np.arange(28, dtype=np.float32)
        cy, cx, radius = (rng.uniform(4, 24, (3, 100, 1, 1, 1))).astype(np.float32)
        dist = np.sqrt((grid[None, :, None, None] - cy) ** 2 + (grid[None, None, :, None] - cx) ** 2)
        shift = rng.uniform(-3, 3, 81).astype(np.float32)[None, None, None, :]
        base = (1 / (1 + np.exp(-(radius / 2 - dist + shift) * 2))).astype(np.float32)

        def segment(image):
            level = np.float32(0.5 + 0.5 * (float(image.mean(dtype=np.float64)) % 1.0))
            return {"mask": np.multiply(base, level)}
        return segment
"""
SCHEMES = {
    "float32": ("none", None),
    "float16": ("float16", None),
    "int8": ("int8", None),
    "int8+zstd": ("int8", "zstd"),
}


def pack_segment(path: Path) -> Path:
    code = path.parent / "segment-code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "main.py").write_text(textwrap.dedent(MAIN))
    return modelpod.pack_python(
        path, name="segment", code_path_spec=[{"python_root": str(code), "dirs_to_package": [""]}],
        input_spec=[{"name": "image", "dtype": "float32", "shape": ("h", "w", 3)}],
        output_spec=[{"name": "mask", "dtype": "float32", "shape": MASK_SHAPE}], overwrite=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    try:
        os.sched_setaffinity(0, {int(loadgen.LOAD_CORE)})
    except (AttributeError, OSError):
        pass
    image = (np.random.default_rng(0).random(IMAGE_SHAPE, dtype=np.float32) * 255 - 123.7).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        package = pack_segment(Path(tmp) / "segment")
        port = loadgen.free_port()
        cmd = [str(Path(sys.executable).parent / "modelpod"), "serve", str(package), "--http-port", str(port),
               "--grpc-port", "-1", "--log-level", "warning"]
        with loadgen.pinned_server(cmd, port):
            url = f"http://127.0.0.1:{port}"
            with modelpod.Client(url) as client:
                exact = client.infer("segment", {"image": image}, quantize="none")["mask"]
            for label, (scheme, compression) in SCHEMES.items():
                with modelpod.Client(url, compression=compression) as client:
                    client.infer("segment", {"image": image}, quantize=scheme)  # warm: metadata, pool
                    s0, r0 = client.stats.bytes_sent, client.stats.bytes_received
                    times = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        mask = client.infer("segment", {"image": image}, quantize=scheme)["mask"]
                        times.append((time.perf_counter() - start) * 1000)
                    sent = (client.stats.bytes_sent - s0) // args.repeats
                    received = (client.stats.bytes_received - r0) // args.repeats
                    parsed = tp.parse_scheme(scheme)
                    seen = tp.dequantize(*tp.quantize(image, *parsed)) if parsed else image  # what the model got
                    exact_seen = client.infer("segment", {"image": seen}, quantize="none")["mask"]
                bound = float(tp.error_bound(exact_seen, *parsed).max()) if parsed else 0.0
                err = float(np.abs(mask.astype(np.float64) - exact).max())
                out_err = float(np.abs(mask.astype(np.float64) - exact_seen).max())
                img_err = float(np.abs(seen.astype(np.float64) - image).max())
                rows.append({
                    "scheme": label, "bytes_sent": sent, "bytes_received": received,
                    "total_MB": (sent + received) / 1e6, "median_ms": statistics.median(times),
                    "min_ms": min(times), "mask_max_abs_err": err, "mask_output_err": out_err, "mask_bound": bound,
                    "image_max_abs_err": img_err,
                })
    base = rows[0]
    for row in rows:
        row["bytes_ratio_vs_f32"] = (base["bytes_sent"] + base["bytes_received"]) / (row["bytes_sent"] + row["bytes_received"])
        row["speedup_vs_f32"] = base["median_ms"] / row["median_ms"]
    loadgen.print_table(rows, [
        ("scheme", "scheme"), ("bytes_sent", "sent B"), ("bytes_received", "recv B"),
        ("bytes_ratio_vs_f32", "x fewer bytes"), ("median_ms", "median ms"), ("min_ms", "min ms"),
        ("speedup_vs_f32", "speed-up"), ("mask_max_abs_err", "mask err e2e"), ("mask_output_err", "mask err out"),
        ("mask_bound", "out bound"),
        ("image_max_abs_err", "image err"),
    ])
    note = (f"{loadgen.machine_note()}; v2 binary HTTP via modelpod.Client; image {IMAGE_SHAPE} float32 in, "
            f"mask {MASK_SHAPE} float32 out; latency median of {args.repeats} sequential calls. "
            "mask err e2e: against the float32 answer (includes the quantized image's effect on the model); "
            "mask err out: against the float32 mask of the image the model saw, i.e. the output scheme's own "
            "error, which the documented bound (out bound) covers.")
    path = loadgen.write_results("transport", {"note": note, "rows": rows})
    print(f"\n{note}\nwrote {path}")


if __name__ == "__main__":
    main()
