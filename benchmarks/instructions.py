"""Instructions per request: modelpod against the bare server, counted, not timed.

On a shared 2-core VM, requests per second move by 2x from minute to minute (the bare server's
too); the instructions a request executes do not. This feeds the same tiny v2 JSON request (the
one ``serve_v2.py`` sends) straight into each server's ``data_received`` in process, under
valgrind's callgrind, and counts user-space instructions per request: (count after N2 requests -
count after N1) / (N2 - N1), so start-up cancels out. The socket, the kernel and the event loop
are the same for every server and are not counted: the ratio is that of the Python work.

* ``modelpod``: the whole path (HTTP parse, routing, auth, decode, spec checks, model, stats,
  metrics, encode), as ``modelpod serve`` runs it;
* ``modelpod-http``: the HTTP layer alone (a fixed answer instead of the app);
* ``bare``: ``bare_v2_server.py`` (no checks at all): the floor.

Every answer is checked (status and sum) before counting. Needs valgrind (Debian's ``valgrind``).
Prints a table and writes benchmarks/results/instructions.json.

    python benchmarks/instructions.py [--n1 500] [--n2 2500]
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
KINDS = ["modelpod", "modelpod-http", "bare"]
EXPECTED = b'"data":[2.0,4.0,6.0,8.0]'


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
    """Answer ``count`` requests in process with one server kind (the child under valgrind)."""
    raw, transport = _request(), _Transport()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "bare":
            import bare_v2_server

            conn = bare_v2_server.Bare()
        else:
            from models import pack_add

            from modelpod.serving.factory import open_server
            from modelpod.serving.http.messages import Response
            from modelpod.serving.http.server import HttpProtocol, HttpServer

            parts = await open_server(pack_add(Path(tmp) / "add"))
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


def _count(kind: str, requests: int) -> int:
    """Instructions of one child run that answers ``requests`` requests."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--child", kind, str(requests)], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    match = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"{kind} under valgrind failed: {out.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n1", type=int, default=500, help="requests of the shorter run")
    parser.add_argument("--n2", type=int, default=2500, help="requests of the longer run")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_feed(args.child[0], int(args.child[1])))
        return
    if shutil.which("valgrind") is None:
        sys.exit("this benchmark counts instructions with valgrind: apt-get install -y valgrind")
    from loadgen import host, print_table, write_results

    jobs = [(kind, n) for kind in KINDS for n in (args.n1, args.n2)]
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _count(*job), jobs)))
    per_request = {kind: (counts[kind, args.n2] - counts[kind, args.n1]) / (args.n2 - args.n1) for kind in KINDS}
    rows = [{"server": kind, "instructions": round(per_request[kind]),
             "ratio": per_request["bare"] / per_request[kind]} for kind in KINDS]
    info = host()
    print(f"\nUser-space instructions per tiny v2 JSON request, in process (callgrind; {info['cpu']}, "
          f"kernel {info['kernel']}); ratio = bare / server (what rps would be if instructions were time)\n")
    print_table(rows, [("server", "server"), ("instructions", "instructions / request"), ("ratio", "bare / it")])
    path = write_results("instructions", {"n1": args.n1, "n2": args.n2, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
