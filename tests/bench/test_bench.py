"""``modelpod bench`` against a real server: its request counts agree with the server's own
``modelpod_requests_total`` (Prometheus /metrics) and with the calls the model itself counted; the
results are printed and saved before the (self-contained) report is written; ``modelpod bench-report``
compares saved runs; the model is looked up before any load is sent."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers.cli import without_module
from tests.helpers.client_models import calls, pack_counter
from tests.helpers.servers import MODELPOD

FETCHES = re.compile(r"""(?:\bsrc|\bhref)\s*=|url\(|@import""", re.I)  # what would make a page load anything


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MODELPOD, "bench", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "160", **(env or {})})

pytestmark = pytest.mark.timeout(180)


def _served(url: str, model: str, protocol: str = "v2") -> dict[str, float]:
    """modelpod_requests_total for ``model`` over ``protocol``, per status."""
    text = httpx.get(url + "/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for labels, value in re.findall(r"^modelpod_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("model") == model and fields.get("protocol") == protocol:
            totals[fields["status"]] = totals.get(fields["status"], 0.0) + float(value)
    return totals


@pytest.mark.parametrize("protocol", ["v2-binary", "v2-json", "grpc"])
def test_bench_counts_match_the_server(tmp_path: Path, serve_factory, protocol: str) -> None:
    package = pack_counter(tmp_path / "counter")
    server = serve_factory(package)
    url = f"grpc://{server.grpc_target}" if protocol == "grpc" else server.url
    metric_protocol = "grpc" if protocol == "grpc" else "v2"
    before = _served(server.url, "counter", metric_protocol)
    report = tmp_path / "report.html"
    out = subprocess.run(
        [MODELPOD, "bench", url, "counter", "--concurrency", "1,4", "--duration", "1s",
         "--protocol", protocol, "--json", "--report", str(report)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    results = doc["results"]
    assert [r["concurrency"] for r in results] == [1, 4]
    sent = sum(r["requests"] for r in results)
    assert sent > 0 and all(r["errors"] == 0 for r in results)
    assert all(r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] for r in results)
    assert all(r["bytes_sent"] > 0 and r["bytes_received"] > 0 for r in results)
    # the server's own count of answered requests, and the model's count of its own runs
    page = report.read_text()
    assert page.count("<svg") == 3 and "Throughput" in page and not FETCHES.search(page)
    assert calls(package) == sent
    after = _served(server.url, "counter", metric_protocol)
    # every answered request is counted: the bench's infers plus its one metadata read
    assert after.get("200", 0) - before.get("200", 0) == sent + doc["info"]["setup_requests"]


def test_bench_table_and_inputs_from_the_command_line(tmp_path: Path, serve_factory) -> None:
    package = pack_counter(tmp_path / "counter")
    server = serve_factory(package)
    out = subprocess.run(
        [MODELPOD, "bench", server.url, "counter", "--concurrency", "2", "--duration", "500ms",
         "--input", "x=16/float32", "--transport", "int8"],
        capture_output=True, text=True, timeout=120,
        # a bare environment, but the same modelpod source as this run's (PYTHONPATH, when set)
        env={"COLUMNS": "160", "PATH": "", "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if re.match(r"\W*2\s*\W", line))
    numbers = re.findall(r"[\d.]+", row)
    requests, errors = int(numbers[1]), int(numbers[2])
    assert errors == 0 and requests == calls(package)
    assert _served(server.url, "counter").get("200") == requests + 1  # + the metadata read


def test_protocol_follows_the_url_scheme(tmp_path: Path, serve_factory) -> None:
    package = pack_counter(tmp_path / "counter")
    server = serve_factory(package)
    out = _bench(f"grpc://{server.grpc_target}", "counter", "--concurrency", "1", "--duration", "300ms", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["info"]["protocol"] == "grpc"
    assert _served(server.url, "counter", "grpc").get("200") == doc["results"][0]["requests"] + 1
    out = _bench(server.url, "counter", "--protocol", "grpc", "--duration", "300ms")
    assert out.returncode == 2 and "--protocol grpc needs a grpc://host:port URL" in out.stderr


def test_an_unknown_model_is_named_before_any_load(tmp_path: Path, serve_factory) -> None:
    package = pack_counter(tmp_path / "counter")
    server = serve_factory(package)
    for url in (server.url, f"grpc://{server.grpc_target}"):
        out = _bench(url, "nope", "--duration", "300ms", "--input", "x=4/float32")
        assert out.returncode == 1, out.stderr
        assert "model 'nope' is not served" in out.stderr and "counter" in out.stderr
        assert "concurrency" not in out.stdout and "Traceback" not in out.stderr, out.stdout + out.stderr
    out = _bench(server.url, "nope")
    assert out.stderr.strip().splitlines() == ["error: model 'nope' is not served here; served: counter"]
    assert calls(package) == 0


def test_usage_errors_exit_2_before_anything_is_sent(tmp_path: Path) -> None:
    for args, message in [(["--concurrency", "1,x"], "--concurrency '1,x'"), (["--duration", "soon"], "--duration"),
                          (["--input", "x=1,a/float32"], "--input 'x=1,a/float32'"),
                          (["--input", "x=4/float33"], "unknown dtype 'float33'"),
                          (["--input", "@missing.npz"], "no such file")]:
        out = _bench("http://127.0.0.1:9", "m", *args)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)


def test_results_are_printed_and_saved_even_when_the_report_cannot_be_written(tmp_path: Path, serve_factory) -> None:
    package = pack_counter(tmp_path / "counter")
    server = serve_factory(package)
    saved = tmp_path / "run.json"
    out = _bench(server.url, "counter", "--concurrency", "1", "--duration", "300ms", "--save", str(saved),
                 "--report", str(tmp_path / "no-such-folder" / "report.html"))
    assert out.returncode == 1
    assert "requests" in out.stdout and "received" in out.stdout  # the table came first
    assert "could not write" in out.stderr and "no-such-folder" in out.stderr and "Traceback" not in out.stderr
    doc = json.loads(saved.read_text())
    assert doc["results"][0]["requests"] == calls(package) > 0


def test_report_needs_no_plotting_library_and_bench_report_compares_runs(tmp_path: Path, serve_factory) -> None:
    package = pack_counter(tmp_path / "counter")
    server = serve_factory(package)
    no_mpl = without_module(tmp_path, "matplotlib")  # the report needs no plotting library at all
    runs = {"http": tmp_path / "http.json", "grpc": tmp_path / "grpc.json"}
    for label, url in (("http", server.url), ("grpc", f"grpc://{server.grpc_target}")):
        out = _bench(url, "counter", "--concurrency", "1,2", "--duration", "300ms", "--input", "x=256/float32",
                     "--save", str(runs[label]), "--report", str(tmp_path / f"{label}.html"), env=no_mpl)
        assert out.returncode == 0, out.stderr
        assert re.search(r"\d (B|KB|MB|GB)\b", out.stdout), out.stdout  # bytes in units, like the report
    single = (tmp_path / "http.html").read_text()
    assert single.count("<svg") == 3 and not FETCHES.search(single) and "<img" not in single
    for text in ("Run settings", "<th scope=\"row\">protocol</th><td>v2-binary</td>", "x: float32 [256]",
                 "Latency percentiles", "p99 latency", "log scale", "concurrency 1", "concurrency 2"):
        assert text in single, text
    assert re.search(r"<td>[\d.]+ KB</td>", single)  # a 1 KB request body shown as KB, not raw bytes
    doc = json.loads(runs["http"].read_text())
    curve = doc["results"][0]["latency_percentiles"]
    assert curve[0][0] == 0 and curve[-1][0] == 100 and [ms for _, ms in curve] == sorted(ms for _, ms in curve)
    out = subprocess.run([MODELPOD, "bench-report", str(runs["http"]), str(runs["grpc"]), "-o",
                          str(tmp_path / "both.html")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **no_mpl})
    assert out.returncode == 0, out.stderr
    both = (tmp_path / "both.html").read_text()
    assert both.count("<svg") == 3 and not FETCHES.search(both)
    for text in ("comparing http vs grpc", "Comparison", "rps ratio", "<th>http</th><th>grpc</th>",
                 "http c1", "grpc c2", "http p99", "grpc p50", "class=differs"):
        assert text in both, text
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    out = subprocess.run([MODELPOD, "bench-report", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not a modelpod bench result" in out.stderr  # what it works on is wrong: 1
