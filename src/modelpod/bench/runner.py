"""``modelpod bench``: a closed-loop load generator for modelpod and any KServe v2 server.

For each concurrency level, that many workers send the same prepared request back to back for the
duration (asyncio over pooled keep-alive connections with pre-encoded requests, or grpc.aio). It reports requests,
errors, rps, latency percentiles and body bytes each way, with a live progress bar; ``--report``
writes an HTML page with a latency histogram per level and throughput against concurrency.

Only standard endpoints are used (v2 metadata + infer, TF Serving ``:predict``, EAS
``/api/predict``), so Triton or MLServer can be measured the same way. Inputs come from the model
metadata (variable dimensions become 1) unless ``--input`` gives shapes or an .npz file.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from modelpod.bench.rawhttp import PreparedPost
from modelpod.client.core import ClientBase, parse_url
from modelpod.codecs.datatypes import V2_TO_DTYPE
from modelpod.codecs.v2_grpc import encode_infer_request
from modelpod.errors import RawHttpError
from modelpod.spec import numpy_dtype

PROTOCOLS = ("v2-binary", "v2-json", "grpc", "tfserving", "eas")


@dataclass
class LevelResult:
    """What one concurrency level measured (latencies in milliseconds, bytes are bodies)."""

    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    first_error: str | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("latencies_ms")
        return doc


# ---------------------------------------------------------------------------------------------
# inputs


def parse_duration(text: str) -> float:
    """``10s``, ``500ms``, ``2m`` or a bare number of seconds."""
    text = text.strip().lower()
    for suffix, mult in (("ms", 1e-3), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * mult
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--duration {text!r}: use seconds (10, 10s), milliseconds (500ms) or minutes (1m)") from None


def sample_tensor(datatype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    dtype = V2_TO_DTYPE.get(datatype, "float32")
    shape = [d if d >= 0 else 1 for d in shape]
    if dtype == "string":
        return np.array([b"modelpod"] * int(np.prod(shape)), dtype=object).reshape(shape)
    np_dtype = numpy_dtype(dtype)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np_dtype.kind in "iu":
        return rng.integers(0, 100, size=shape).astype(np_dtype)
    return rng.random(shape, dtype=np.float32).astype(np_dtype)


def make_inputs(meta: dict[str, Any] | None, specs: list[str]) -> dict[str, np.ndarray]:
    """Inputs from ``--input`` values (``@file.npz``, ``[name=]shape/dtype``) or from metadata."""
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray] = {}
    meta_inputs = (meta or {}).get("inputs") or []
    for spec in specs:
        if spec.startswith("@"):
            from modelpod.package.vectors import load_npz

            inputs.update(load_npz(Path(spec[1:])))
            continue
        name, sep, rest = spec.rpartition("=")
        if not sep:
            if len(meta_inputs) != 1:
                raise ValueError(f"--input {spec!r}: name the input (NAME=shape/dtype); the model has "
                                 f"{len(meta_inputs)} inputs")
            name, rest = meta_inputs[0]["name"], spec
        shape_text, _, dtype = rest.partition("/")
        shape = [int(d) for d in shape_text.replace("x", ",").split(",") if d.strip()]
        datatype = next((k for k, v in V2_TO_DTYPE.items() if v == (dtype or "float32")), None)
        if datatype is None:
            raise ValueError(f"--input {spec!r}: unknown dtype {dtype!r}")
        inputs[name] = sample_tensor(datatype, shape, rng)
    for item in meta_inputs:
        if item["name"] not in inputs:
            inputs[item["name"]] = sample_tensor(item["datatype"], list(item["shape"]), rng)
    if not inputs:
        raise ValueError("no inputs: the model metadata lists none; give --input")
    return inputs


# ---------------------------------------------------------------------------------------------
# one prepared request per protocol


def _tfserving_body(inputs: dict[str, np.ndarray]) -> bytes:
    import orjson

    def value(a: np.ndarray) -> Any:
        if a.dtype == object:
            return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in a.ravel()]
        return a.astype(np.float64).tolist() if a.dtype.kind == "f" else a.tolist()

    return orjson.dumps({"inputs": {k: value(v) for k, v in inputs.items()}})


def _eas_body(inputs: dict[str, np.ndarray]) -> bytes:
    from modelpod.codecs.eas import encode_predict_request

    return encode_predict_request(inputs)


class Target:
    """Sends the one prepared request; returns (ok, bytes sent, bytes received, error text)."""

    def __init__(self, url: str, model: str, protocol: str, inputs: dict[str, np.ndarray],
                 token: str | None, quantize: str | None, compression: str | None,
                 meta: dict[str, Any] | None, concurrency: int) -> None:
        self.protocol = protocol
        scheme, target = parse_url(url)
        core = ClientBase(url, token, transport="json" if protocol == "v2-json" else "binary",
                          compression=compression if protocol != "grpc" else None, quantize=quantize or "none")
        request = core._plan(model, inputs, None, None, None, None, meta)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        if protocol == "grpc":
            import grpc

            from modelpod.client.grpc import _OPTIONS, _stubs

            if scheme != "grpc":
                raise ValueError(f"--protocol grpc needs a grpc://host:port URL, got {url!r}")
            host = target
            self.channel = grpc.aio.insecure_channel(host, options=_OPTIONS)
            self.stub = _stubs(self.channel)["ModelInfer"]
            self.message = encode_infer_request(request)
            self.sent = self.message.ByteSize()
            self.metadata = tuple(headers.items())
            return
        if scheme == "grpc":
            raise ValueError(f"--protocol {protocol} needs an http:// URL")
        if protocol in ("v2-binary", "v2-json"):
            from modelpod.client.sync import rest_request_parts

            self.path, self.body, extra = rest_request_parts(core, request)
            headers.update(extra)
        elif protocol == "tfserving":
            self.path, self.body = f"/v1/models/{model}:predict", _tfserving_body(inputs)
            headers["content-type"] = "application/json"
        elif protocol == "eas":
            self.path, self.body = f"/api/predict/{model}", _eas_body(inputs)
            if token:
                headers["authorization"] = token
        else:
            raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        headers.setdefault("accept-encoding", "identity")
        self.sent = len(self.body)
        if scheme != "http":
            raise ValueError(f"modelpod bench speaks plain http:// (and grpc://), not {scheme}://")
        parts = urlsplit(target)
        self.http = PreparedPost(parts.hostname or "127.0.0.1", parts.port or 80, parts.path + self.path,
                                 self.body, headers)

    async def send(self) -> tuple[bool, int, int, str | None]:
        if self.protocol == "grpc":
            import grpc

            try:
                response = await self.stub(self.message, metadata=self.metadata, timeout=60.0)
            except grpc.RpcError as err:
                return False, self.sent, 0, f"{err.code().name}: {err.details()}"
            return True, self.sent, response.ByteSize(), None
        try:
            status, body = await self.http.send()
        except RawHttpError as exc:
            return False, self.sent, 0, str(exc)
        if status != 200:
            return False, self.sent, len(body), f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
        return True, self.sent, len(body), None

    async def close(self) -> None:
        if self.protocol == "grpc":
            await self.channel.close()
        else:
            await self.http.close()


# ---------------------------------------------------------------------------------------------
# the run


async def run_level(target: Target, concurrency: int, duration_s: float, progress: Any = None) -> LevelResult:
    result = LevelResult(concurrency)
    deadline = time.perf_counter() + duration_s
    clock = time.perf_counter

    async def worker() -> None:
        while clock() < deadline:
            start = clock()
            ok, sent, received, error = await target.send()
            result.latencies_ms.append((clock() - start) * 1000)
            result.requests += 1
            result.bytes_sent += sent
            result.bytes_received += received
            if not ok:
                result.errors += 1
                result.first_error = result.first_error or error

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.2)
            if progress is not None:
                progress(result, min(duration_s, duration_s - (deadline - clock())))

    started = clock()
    tick = asyncio.ensure_future(ticker())
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        tick.cancel()
    result.seconds = clock() - started
    ok = result.requests - result.errors
    result.rps = ok / result.seconds if result.seconds else 0.0
    if result.latencies_ms:
        lat = np.asarray(result.latencies_ms)
        result.p50_ms, result.p90_ms, result.p99_ms = (float(v) for v in np.percentile(lat, [50, 90, 99]))
        result.mean_ms = float(lat.mean())
    if progress is not None:
        progress(result, duration_s)
    return result


async def fetch_metadata(url: str, model: str, token: str | None) -> dict[str, Any] | None:
    from modelpod.client import connect_async

    client = connect_async(url, token, retries=2, use_metadata=False)
    try:
        return await client.metadata(model)
    finally:
        await client.close()


async def bench(url: str, model: str, *, concurrency: list[int], duration_s: float, protocol: str,
                input_specs: list[str] | None = None, quantize: str | None = None,
                compression: str | None = None, token: str | None = None, progress: Any = None,
                metadata_url: str | None = None) -> tuple[list[LevelResult], dict[str, Any]]:
    """Run every level in turn; (results, run info)."""
    meta = None
    try:
        meta = await fetch_metadata(metadata_url or url, model, token)
    except Exception as exc:  # noqa: BLE001 - a server without metadata can still be benched with --input
        if not input_specs:
            raise ValueError(f"cannot read the metadata of '{model}' ({exc}); give --input") from None
    inputs = make_inputs(meta, input_specs or [])
    info = {
        "url": url, "model": model, "protocol": protocol, "duration_s": duration_s, "transport": quantize,
        "compression": compression,
        # requests made before the load (the metadata read), for checking against server counters
        "setup_requests": 1 if meta is not None or not input_specs else 0,
        "inputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in inputs.items()},
    }
    results = []
    for level in concurrency:
        target = Target(url, model, protocol, inputs, token, quantize, compression, meta, level)
        try:
            results.append(await run_level(target, level, duration_s,
                                           None if progress is None else (lambda r, t: progress(r, t))))
        finally:
            await target.close()
    return results, info


# ---------------------------------------------------------------------------------------------
# output


def results_table(results: list[LevelResult]) -> Any:
    from rich.table import Table

    table = Table(title="modelpod bench (latency in ms, body bytes in MB)", title_justify="left")
    for heading in ("conc", "requests", "errors", "rps", "p50", "p90", "p99", "sent MB", "recv MB"):
        table.add_column(heading, justify="right")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in results:
        table.add_row(str(r.concurrency), str(r.requests), str(r.errors), f"{r.rps:.1f}", ms(r.p50_ms),
                      ms(r.p90_ms), ms(r.p99_ms), f"{r.bytes_sent / 1e6:.2f}", f"{r.bytes_received / 1e6:.2f}")
    return table


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def write_report(path: Path, results: list[LevelResult], info: dict[str, Any]) -> Path:
    """An HTML page: summary table, latency histogram per level, throughput vs concurrency (PNG)."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        if r.latencies_ms:
            ax.hist(r.latencies_ms, bins=50, alpha=0.5, label=f"concurrency {r.concurrency}")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title("latency histogram")
    ax.legend()
    hist = _png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    levels = [r.concurrency for r in results]
    ax.plot(levels, [r.rps for r in results], marker="o", label="rps")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("requests / s")
    ax.set_title("throughput vs concurrency")
    ax2 = ax.twinx()
    ax2.plot(levels, [r.p99_ms or 0 for r in results], marker="s", color="tab:red", label="p99 ms")
    ax2.set_ylabel("p99 latency (ms)")
    throughput = _png(fig)
    plt.close(fig)
    columns = ["concurrency", "requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms", "bytes_sent", "bytes_received"]
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.summary()[c]))}</td>" for c in columns) + "</tr>" for r in results
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>modelpod bench: {html.escape(info['model'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>modelpod bench: {html.escape(info['model'])}</h1>
<p>{html.escape(json.dumps({k: v for k, v in info.items() if k != 'inputs'}))}</p>
<p>inputs: {html.escape(json.dumps(info['inputs']))}</p>
<table><tr>{''.join(f'<th>{c}</th>' for c in columns)}</tr>{rows}</table>
<h2>Latency</h2><img alt="latency histogram" src="data:image/png;base64,{hist}">
<h2>Throughput</h2><img alt="throughput vs concurrency" src="data:image/png;base64,{throughput}">
</body></html>
"""
    path.write_text(page)
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def run_cli(url: str, model: str, concurrency: str, duration: str, protocol: str, inputs: list[str],
            transport: str | None, compression: str | None, token: str | None, report: Path | None,
            as_json: bool, console: Any) -> list[LevelResult]:
    """What ``modelpod bench`` does: progress bar, run, then the table (or JSON) and the report."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    if not levels or min(levels) < 1:
        raise ValueError("--concurrency must list positive integers, e.g. 1,16,64")
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}")
    seconds = parse_duration(duration)
    metadata_url = None
    if protocol != "grpc" and url.startswith("grpc://"):
        raise ValueError(f"--protocol {protocol} needs an http:// URL")
    if protocol == "grpc" and not url.startswith("grpc://"):
        raise ValueError("--protocol grpc needs a grpc://host:port URL")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                  TimeRemainingColumn(), console=console, transient=as_json, disable=as_json) as bar:
        tasks = {lvl: bar.add_task(f"concurrency {lvl}", total=seconds, stats="") for lvl in levels}

        def progress(result: LevelResult, elapsed: float) -> None:
            rate = (result.requests - result.errors) / max(elapsed, 1e-9)
            bar.update(tasks[result.concurrency], completed=elapsed,
                       stats=f"{result.requests} req, {result.errors} err, {rate:.0f} rps")

        results, info = asyncio.run(bench(
            url, model, concurrency=levels, duration_s=seconds, protocol=protocol, input_specs=inputs,
            quantize=transport, compression=compression, token=token, progress=progress,
            metadata_url=metadata_url,
        ))
    if report is not None:
        write_report(report, results, info)
    if as_json:
        print(json.dumps({"info": info, "results": [r.summary() for r in results]}))
    else:
        console.print(results_table(results))
        if any(r.errors for r in results):
            first = next(r.first_error for r in results if r.first_error)
            console.print(f"[yellow]first error:[/] {first}", markup=True, highlight=False)
        if report is not None:
            console.print(f"wrote {report}")
    return results
