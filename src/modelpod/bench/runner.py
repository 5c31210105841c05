"""``modelpod bench``: a closed-loop load generator for modelpod and any KServe v2 server.

For each concurrency level, that many workers send the same prepared request back to back for the
duration (asyncio over pooled keep-alive connections with pre-encoded requests, or grpc.aio). It reports requests,
errors, rps, latency percentiles and body bytes each way, with a live progress bar; ``--save`` writes
the results as JSON and ``--report`` an HTML page (:mod:`modelpod.bench.report`, which also compares
saved runs: ``modelpod bench-report``).

Only standard endpoints are used (v2 metadata + infer, TF Serving ``:predict``, EAS
``/api/predict``), so Triton or MLServer can be measured the same way. Inputs come from the model
metadata (variable dimensions become 1) unless ``--input`` gives shapes or an .npz file; the model
is looked up before any load is sent (an unknown one is an error naming the models served).
"""

from __future__ import annotations

import asyncio
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
from modelpod.errors import RawHttpError, ServerError
from modelpod.spec import numpy_dtype

PROTOCOLS = ("v2-binary", "v2-json", "grpc", "tfserving", "eas")
#: the percentiles each level keeps for the report's percentile plot (those its sample count supports)
CURVE_PERCENTILES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 98, 99, 99.5, 99.8, 99.9, 99.95, 99.99, 100)


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
    #: [percentile, ms] pairs from p0 (fastest) to p100 (slowest), for the report's percentile plot
    latency_percentiles: list[list[float]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("latencies_ms")
        return doc


def latency_curve(latencies_ms: np.ndarray) -> list[list[float]]:
    """[percentile, ms] for each of :data:`CURVE_PERCENTILES` that ``len(latencies_ms)`` samples can
    tell (p99.9 needs a thousand), and always p100 (the slowest request)."""
    count = len(latencies_ms)
    wanted = [p for p in CURVE_PERCENTILES if p == 100 or count * (1 - p / 100) >= 1]
    return [[p, float(v)] for p, v in zip(wanted, np.percentile(latencies_ms, wanted))]


def protocol_for(url: str, protocol: str | None) -> str:
    """``--protocol``, or the one the URL's scheme implies: grpc:// -> grpc, http:// -> v2-binary."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if protocol is None:
        return "grpc" if scheme == "grpc" else "v2-binary"
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    if protocol == "grpc" and scheme != "grpc":
        raise ValueError(f"--protocol grpc needs a grpc://host:port URL, got {url!r}")
    if protocol != "grpc" and scheme == "grpc":
        raise ValueError(f"--protocol {protocol} needs an http://host:port URL, got {url!r}")
    return protocol


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


def parse_input_spec(spec: str) -> tuple[str, list[int], str]:
    """One ``--input`` value ``[NAME=]shape/dtype`` -> (name or "", shape, v2 datatype; an empty
    shape is a scalar); ``@file.npz``
    -> (the file, [], "npz"), after checking the file can be opened."""
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise ValueError(f"--input {spec!r}: no such file {path}")
        return spec[1:], [], "npz"
    name, _, rest = spec.rpartition("=")
    shape_text, _, dtype = rest.partition("/")
    try:
        shape = [int(d) for d in shape_text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        shape = [-1]
    if shape and min(shape) < 0:
        raise ValueError(f"--input {spec!r}: give [NAME=]shape/dtype, e.g. x=1,224,224,3/float32 (or @inputs.npz)")
    datatype = next((k for k, v in V2_TO_DTYPE.items() if v == (dtype or "float32")), None)
    if datatype is None:
        raise ValueError(f"--input {spec!r}: unknown dtype {dtype!r}; use one of "
                         f"{', '.join(sorted(set(V2_TO_DTYPE.values())))}")
    return name, shape, datatype


def make_inputs(meta: dict[str, Any] | None, specs: list[str]) -> dict[str, np.ndarray]:
    """Inputs from ``--input`` values (``@file.npz``, ``[name=]shape/dtype``) or from metadata."""
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray] = {}
    meta_inputs = (meta or {}).get("inputs") or []
    for spec in specs:
        name, shape, datatype = parse_input_spec(spec)
        if datatype == "npz":
            from modelpod.package.vectors import load_npz

            try:
                inputs.update(load_npz(Path(name)))
            except (OSError, ValueError) as exc:
                raise ValueError(f"--input {spec!r}: {exc}") from None
            continue
        if not name:
            if len(meta_inputs) != 1:
                raise ValueError(f"--input {spec!r}: name the input (NAME=shape/dtype); the model has "
                                 f"{len(meta_inputs)} inputs")
            name = meta_inputs[0]["name"]
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
        result.latency_percentiles = latency_curve(lat)
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


async def served_models(url: str, token: str | None) -> list[str] | None:
    """The model names a v2 server lists in its repository index (``POST /v2/repository/index``),
    or None when it lists none this way (gRPC URL, no such endpoint, refused)."""
    if not url.startswith(("http://", "https://")):
        return None
    import httpx

    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
            response = await http.post("/v2/repository/index", json={}, headers=headers)
        rows = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(rows, list):
        return None
    return sorted({str(row["name"]) for row in rows if isinstance(row, dict) and "name" in row})


async def find_model(url: str, model: str, protocol: str, token: str | None,
                     have_inputs: bool) -> dict[str, Any] | None:
    """The model's v2 metadata, before any load is sent. A server that cannot be reached, or that
    does not serve ``model``, is an error (ValueError) that says so; a server without v2 metadata
    (TF Serving, EAS) is fine when ``--input`` gives the inputs (None)."""
    try:
        return await fetch_metadata(url, model, token)
    except ServerError as exc:
        if exc.status == 0:
            raise ValueError(f"cannot reach the server at {url}: {exc.message}") from None
        if exc.status in (401, 403):
            raise ValueError(f"the server at {url} refused the metadata of '{model}' ({exc}); give --token") from None
        if exc.status == 404:
            served = await served_models(url, token)
            if served is not None and model not in served:
                raise ValueError(f"model '{model}' is not served here; served: {', '.join(served) or 'none'}") from None
            if protocol in ("v2-binary", "v2-json", "grpc"):
                raise ValueError(f"model '{model}' is not served at {url} (the server says: {exc.message})") from None
        if not have_inputs:
            raise ValueError(f"cannot read the metadata of '{model}' ({exc}); give --input") from None
        return None


def run_info(url: str, model: str, protocol: str, duration_s: float, quantize: str | None,
             compression: str | None, meta: dict[str, Any] | None, have_inputs: bool,
             inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """What a run's JSON and report say about its settings."""
    from modelpod._version import __version__

    return {
        "url": url, "model": model, "protocol": protocol, "duration_s": duration_s, "transport": quantize,
        "compression": compression,
        # requests made before the load (the metadata read), for checking against server counters
        "setup_requests": 1 if meta is not None or not have_inputs else 0,
        "inputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in inputs.items()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "modelpod": __version__,
    }


async def run_levels(url: str, model: str, inputs: dict[str, np.ndarray], meta: dict[str, Any] | None, *,
                     concurrency: list[int], duration_s: float, protocol: str, quantize: str | None = None,
                     compression: str | None = None, token: str | None = None,
                     progress: Any = None) -> list[LevelResult]:
    """Every level in turn, each over connections of its own."""
    results = []
    for level in concurrency:
        target = Target(url, model, protocol, inputs, token, quantize, compression, meta, level)
        try:
            results.append(await run_level(target, level, duration_s, progress))
        finally:
            await target.close()
    return results


# ---------------------------------------------------------------------------------------------
# output


def results_table(results: list[LevelResult]) -> Any:
    from rich.table import Table

    from modelpod.bench.report import human_bytes

    table = Table(title="modelpod bench (latency in ms; bytes are request and response bodies)", title_justify="left")
    for heading in ("conc", "requests", "errors", "rps", "p50", "p90", "p99", "sent", "received"):
        table.add_column(heading, justify="right")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in results:
        table.add_row(str(r.concurrency), str(r.requests), str(r.errors), f"{r.rps:.1f}", ms(r.p50_ms),
                      ms(r.p90_ms), ms(r.p99_ms), human_bytes(r.bytes_sent), human_bytes(r.bytes_received))
    return table


def parse_levels(text: str) -> list[int]:
    """``--concurrency 1,16,64``."""
    try:
        levels = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ValueError(f"--concurrency {text!r}: list positive integers, e.g. 1,16,64")
    return levels


def run_cli(url: str, model: str, levels: list[int], seconds: float, protocol: str, inputs: list[str],
            transport: str | None, compression: str | None, token: str | None, report: Path | None,
            save: Path | None, as_json: bool, console: Any, err_console: Any) -> bool:
    """What ``modelpod bench`` does once its options are parsed (:func:`parse_levels`,
    :func:`parse_duration`, :func:`protocol_for`, :func:`parse_input_spec`): look the model up (a
    ValueError says why it cannot be benched), run each level under a progress bar, then print the
    table (or JSON) and write ``save``, and only then the report. False when writing a file failed
    (the results were printed before)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    meta = asyncio.run(find_model(url, model, protocol, token, bool(inputs)))
    tensors = make_inputs(meta, inputs)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                  TimeRemainingColumn(), console=console, transient=as_json, disable=as_json) as bar:
        tasks = {lvl: bar.add_task(f"concurrency {lvl}", total=seconds, stats="") for lvl in levels}

        def progress(result: LevelResult, elapsed: float) -> None:
            rate = (result.requests - result.errors) / max(elapsed, 1e-9)
            bar.update(tasks[result.concurrency], completed=elapsed,
                       stats=f"{result.requests} req, {result.errors} err, {rate:.0f} rps")

        results = asyncio.run(run_levels(
            url, model, tensors, meta, concurrency=levels, duration_s=seconds, protocol=protocol,
            quantize=transport, compression=compression, token=token, progress=progress,
        ))
    info = run_info(url, model, protocol, seconds, transport, compression, meta, bool(inputs), tensors)
    doc = {"info": info, "results": [r.summary() for r in results]}
    if as_json:
        print(json.dumps(doc), flush=True)
    else:
        console.print(results_table(results))
        if any(r.errors for r in results):
            first = next(r.first_error for r in results if r.first_error)
            console.print(f"[yellow]first error:[/] {first}", markup=True, highlight=False)
    ok = True
    for path, write in ((save, lambda p: p.write_text(json.dumps(doc, indent=1) + "\n")),
                        (report, lambda p: _write_report(p, doc))):
        if path is None:
            continue
        try:
            write(path)
        except Exception as exc:  # noqa: BLE001 - the results are printed; say why the file is not there
            from rich.markup import escape

            err_console.print(f"[bold red]error:[/] could not write {escape(str(path))}: {escape(str(exc))}",
                              highlight=False, soft_wrap=True)
            ok = False
        else:
            if not as_json:
                console.print(f"wrote {path}", highlight=False)
    return ok


def _write_report(path: Path, doc: dict[str, Any]) -> None:
    from modelpod.bench.report import write_report

    write_report(path, [(str(doc["info"]["model"]), doc)])
