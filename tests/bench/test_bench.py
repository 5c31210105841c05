"""``modelpod bench`` against a real server: its request counts agree with the server's own
``modelpod_requests_total`` (Prometheus /metrics) and with the calls the model itself counted."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers.client_models import calls, pack_counter
from tests.helpers.servers import MODELPOD

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
    assert page.count("data:image/png;base64,") == 2 and "throughput" in page
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
