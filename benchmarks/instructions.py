"""Instructions per request: modelpod against the bare server, counted, not timed.

On a shared 2-core VM, requests per second move by 2x from minute to minute (the bare server's
too); the instructions a request executes do not. This feeds the same tiny v2 JSON request (the
one ``serve_v2.py`` sends) straight into each server's ``data_received`` in process, under
valgrind's callgrind, and counts user-space instructions per request: (count after N2 requests -
count after N1) / (N2 - N1), so start-up cancels out; only the main thread counts (the threads
that work by the clock would add more the slower valgrind runs). The socket, the kernel and the event loop
are the same for every server and are not counted: the ratio is that of the Python work.

* ``modelpod``: the whole path (HTTP parse, routing, auth, decode, spec checks, model, stats,
  metrics, encode), as ``modelpod serve`` runs it;
* ``modelpod-http``: the HTTP layer alone (a fixed answer instead of the app);
* ``bare``: ``bare_v2_server.py`` (no checks at all): the floor.

``--stages`` also counts the pieces of modelpod's path one by one, each called alone on the same
request: ``app.dispatch``, the v2 handler, ``orjson.loads``, ``plain_inputs`` (both tensors),
``served.infer`` and ``encode_response``.

Every answer is checked (status and sum) before counting. Needs valgrind (Debian's ``valgrind``).
Prints a table and writes benchmarks/results/instructions.json.

    python benchmarks/instructions.py [--n1 500] [--n2 2500] [--stages]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
KINDS = ["modelpod", "modelpod-http", "bare"]
STAGES = ["dispatch", "v2-handler", "orjson.loads", "plain_inputs", "served.infer", "encode_response"]
EXPECTED = b'"data":[2.0,4.0,6.0,8.0]'


def _inline() -> Any:
    """The add model runs inline, as ``modelpod serve`` runs it on real hardware (its warm-up under
    valgrind is slow enough for "auto" to queue it)."""
    from modelpod.serving.settings import ModelSettings

    return ModelSettings(execution="inline")


class _Transport:
    """Just enough of an asyncio transport for data_received: keeps the last answer."""

    last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def writelines(self, parts: list[bytes]) -> None:
        self.last = b"".join(parts)

    def get_extra_info(self, key: str) -> tuple[str, int]:
        return ("127.0.0.1", 50000)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


def _request() -> bytes:
    from serve_v2 import bodies

    body = bodies()["tiny-json"][0]
    return (b"POST /v2/models/add/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: %d\r\n\r\n"
            % len(body)) + body


async def _feed(kind: str, count: int) -> None:
    """Answer ``count`` requests in process with one server kind or run one stage ``count`` times
    (the child under valgrind)."""
    raw, transport = _request(), _Transport()
    with tempfile.TemporaryDirectory() as tmp:
        if kind in STAGES:
            stage = await _stage(kind, raw, Path(tmp))
            gc.collect()
            gc.freeze()
            for _ in range(count):
                stage()
            return
        if kind == "bare":
            import bare_v2_server

            conn = bare_v2_server.Bare()
        else:
            from models import pack_add

            from modelpod.serving.factory import open_server
            from modelpod.serving.http.messages import Response
            from modelpod.serving.http.server import HttpProtocol, HttpServer

            parts = await open_server(pack_add(Path(tmp) / "add"), model_defaults=_inline())
            parts.monitor.stop()  # its once-a-second sampler would run inside the count
            fixed = Response(200, b'{"model_name":"add","outputs":[{"name":"out","datatype":"FP32","shape":[4],'
                                  + EXPECTED + b'}]}')
            conn = HttpProtocol(HttpServer(parts.app.dispatch if kind == "modelpod" else (lambda request: fixed)))
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(raw)
        if not (transport.last.startswith(b"HTTP/1.1 200") and EXPECTED in transport.last):
            raise SystemExit(f"{kind}: unexpected answer {transport.last[:300]!r}")
        gc.collect()
        gc.freeze()
        for _ in range(count):
            conn.data_received(raw)
        if EXPECTED not in transport.last:
            raise SystemExit(f"{kind}: unexpected answer {transport.last[:300]!r}")


async def _stage(kind: str, raw: bytes, tmp: Path) -> Any:
    """One piece of modelpod's path as a call on the request ``raw`` (its result checked once)."""
    import orjson
    from models import pack_add

    from modelpod.codecs import v2
    from modelpod.serving.factory import open_server
    from modelpod.serving.http.messages import Request
    from modelpod.serving.protocols import v2_rest

    parts = await open_server(pack_add(tmp / "add"), model_defaults=_inline())
    parts.monitor.stop()
    body = raw.partition(b"\r\n\r\n")[2]
    request = Request("POST", "/v2/models/add/infer", "", {"host": "127.0.0.1:8000", "content-length": str(len(body))},
                      body, "127.0.0.1:50000")
    served = parts.repository.get("add")
    doc = orjson.loads(body)
    datatypes = {s.name: "FP32" for s in served.model.spec.inputs}
    inputs = v2.plain_inputs(doc, datatypes)
    outputs = served.infer(inputs)
    stage = {
        "dispatch": lambda: parts.app.dispatch(request),
        "v2-handler": lambda: v2_rest.infer(parts.ctx, request, "add", None),
        "orjson.loads": lambda: orjson.loads(body),
        "plain_inputs": lambda: v2.plain_inputs(doc, datatypes),
        "served.infer": lambda: served.infer(inputs, None, None, None),
        "encode_response": lambda: v2.encode_response("add", "1", outputs),
    }[kind]
    if EXPECTED not in parts.app.dispatch(request).body:
        raise SystemExit(f"{kind}: unexpected answer")
    return stage


def _count(kind: str, requests: int) -> int:
    """Instructions of the main thread of one child run that answers ``requests`` requests (other
    threads, which do work by the clock, not by the request, are counted apart and left out)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={tmp}/cg",
             sys.executable, __file__, "--child", kind, str(requests)],
            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        main_thread = sorted(Path(tmp).glob("cg*-01"))
        if out.returncode != 0 or not main_thread:
            raise RuntimeError(f"{kind} under valgrind failed: {out.stderr[-2000:]}")
        match = re.search(r"^summary: (\d+)", main_thread[0].read_text(), re.M)
        if match is None:
            raise RuntimeError(f"{kind}: no summary in {main_thread[0].name}")
        return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n1", type=int, default=500, help="requests of the shorter run")
    parser.add_argument("--n2", type=int, default=2500, help="requests of the longer run")
    parser.add_argument("--stages", action="store_true", help="also count each stage of modelpod's path alone")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_feed(args.child[0], int(args.child[1])))
        return
    if shutil.which("valgrind") is None:
        sys.exit("this benchmark counts instructions with valgrind: apt-get install -y valgrind")
    from loadgen import host, print_table, write_results

    kinds = KINDS + (STAGES if args.stages else [])
    jobs = [(kind, n) for kind in kinds for n in (args.n1, args.n2)]
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _count(*job), jobs)))
    per_request = {kind: (counts[kind, args.n2] - counts[kind, args.n1]) / (args.n2 - args.n1) for kind in kinds}
    rows = [{"server": kind if kind in KINDS else f"  stage: {kind}", "instructions": round(per_request[kind]),
             "ratio": per_request["bare"] / per_request[kind] if kind in KINDS else None} for kind in kinds]
    info = host()
    print(f"\nUser-space instructions per tiny v2 JSON request, in process (callgrind; {info['cpu']}, "
          f"kernel {info['kernel']}); ratio = bare / server (what rps would be if instructions were time)\n")
    print_table(rows, [("server", "server"), ("instructions", "instructions / request"), ("ratio", "bare / it")])
    path = write_results("instructions", {"n1": args.n1, "n2": args.n2, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
