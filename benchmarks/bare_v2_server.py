"""The per-request floor of Python HTTP on this machine: a bare asyncio + orjson KServe v2 server.

No framework, no validation beyond what the maths needs: it answers
``POST /v2/models/<any>/infer`` for an add model (``out = x + y``, or ``relu(x@W1)@W2`` with
``--mlp``), JSON or binary tensors, and ``GET /v2/health/ready``. Used by the benchmarks as the
ceiling a Python server can reach per request. Run: ``python benchmarks/bare_v2_server.py PORT
[--mlp] [--loop uvloop|asyncio]`` (uvloop by default, the loop ``modelpod serve`` uses).
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import orjson

MLP = None


def compute(x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    if MLP is not None:
        w1, w2 = MLP
        return np.maximum(x @ w1, 0) @ w2
    return x + y


def answer(body: bytes, header_len: int | None) -> tuple[bytes, int | None]:
    doc = orjson.loads(body[:header_len] if header_len else body)
    tensors, offset, blob = {}, header_len or 0, body
    for t in doc["inputs"]:
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arr = np.frombuffer(blob, np.float32, size // 4, offset).reshape(t["shape"])
            offset += size
        else:
            arr = np.asarray(t["data"], np.float32).reshape(t["shape"])
        tensors[t["name"]] = arr
    out = compute(tensors["x"], tensors.get("y"))
    binary = bool((doc.get("parameters") or {}).get("binary_data_output"))
    entry = {"name": "out", "datatype": "FP32", "shape": list(out.shape)}
    if binary:
        raw = out.tobytes()
        entry["parameters"] = {"binary_data_size": len(raw)}
        head = orjson.dumps({"model_name": "add", "outputs": [entry]})
        return head + raw, len(head)
    entry["data"] = out.reshape(-1)
    return orjson.dumps({"model_name": "add", "outputs": [entry]}, option=orjson.OPT_SERIALIZE_NUMPY), None


class Bare(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            length = int(headers.get("content-length", 0))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            method, path = head[0].split(" ")[:2]
            if method == "GET":
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                continue
            hl = headers.get("inference-header-content-length")
            out, out_hl = answer(body, int(hl) if hl else None)
            extra = f"inference-header-content-length: {out_hl}\r\n" if out_hl is not None else ""
            self.transport.write(
                f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {len(out)}\r\n\r\n".encode()
                + out
            )


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if "--mlp" in sys.argv:
        rng = np.random.default_rng(0)
        MLP = (rng.standard_normal((256, 1024), dtype=np.float32) * 0.05,
               rng.standard_normal((1024, 10), dtype=np.float32) * 0.05)
    if "--loop" not in sys.argv or sys.argv[sys.argv.index("--loop") + 1] == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(main(int(sys.argv[1])))
