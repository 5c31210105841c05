"""The bench report's pieces on their own: SVG axes (log, nines), byte units, reading saved runs,
and a page rendered from a run saved by an older modelpod (p50/p90/p99 only)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modelpod.bench.report import human_bytes, load_run, percentile_points, render, run_labels
from modelpod.bench.svg import Axis, Series, line_chart, log_ticks, nice_ticks, nines, number

pytestmark = pytest.mark.timeout(30)


def test_nines_spaces_50_90_99_999_by_their_nines() -> None:
    assert nines(0) == 0 and nines(90) == pytest.approx(1) and nines(99) == pytest.approx(2)
    assert nines(99.9) == pytest.approx(3) and nines(50) == pytest.approx(math.log10(2))
    assert math.isfinite(nines(100))


def test_ticks_cover_the_data() -> None:
    assert log_ticks(0.3, 40) == [0.2, 0.5, 1, 2, 5, 10, 20, 50]
    assert log_ticks(0.01, 5000)[:2] == [0.01, 0.1]  # past four decades: powers of ten only
    ticks = nice_ticks(0, 3923)
    assert ticks[0] == 0 and ticks[-1] >= 3923 and len(ticks) <= 7
    assert [number(v) for v in (0, 0.05, 2, 150, 4000, 12000, 1.5e6)] == ["0", "0.05", "2", "150", "4000", "12k",
                                                                           "1.5M"]


def test_byte_units_match_the_terminal() -> None:
    assert [human_bytes(n) for n in (0, 343, 1350, 43_200, 781_000, 1_350_000, 2.5e9)] == \
        ["0 B", "343 B", "1.35 KB", "43.2 KB", "781 KB", "1.35 MB", "2.5 GB"]


def test_a_chart_has_its_title_axes_legend_and_a_tooltip_per_point() -> None:
    svg = line_chart("Throughput", [Series("run a", [(1, 100.0), (16, 900.0)], tips=["c1", "c16"])],
                     Axis("concurrency", "log", ticks=[(1, "1"), (16, "16")]), Axis("requests / s"))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    for text in (">Throughput</text>", ">concurrency</text>", ">requests / s</text>", ">run a</text>",
                 "<title>c1</title>", "<title>c16</title>", ">16</text>"):
        assert text in svg, text
    assert "no data" in line_chart("empty", [], Axis("x"), Axis("y"))


def test_an_older_saved_run_renders_from_its_three_percentiles(tmp_path: Path) -> None:
    doc = {"info": {"model": "m", "url": "http://h:1", "protocol": "v2-json", "duration_s": 2.0, "inputs": {}},
           "results": [{"concurrency": 1, "requests": 10, "errors": 0, "rps": 5.0, "p50_ms": 1.0, "p90_ms": 2.0,
                        "p99_ms": 3.0, "bytes_sent": 10_000, "bytes_received": 5_000}]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    run = load_run(path)
    assert percentile_points(run["results"][0]) == [(50, 1.0), (90, 2.0), (99, 3.0)]
    page = render([("old", run)])
    assert page.count("<svg") == 3 and "<td>1 KB</td>" in page and "v2-json" in page


def test_saved_runs_are_checked_and_labelled(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ValueError, match="not a modelpod bench result"):
        load_run(tmp_path / "list.json")
    with pytest.raises(ValueError, match="not JSON"):
        load_run(tmp_path / "text.json")
    with pytest.raises(ValueError, match="cannot read it"):
        load_run(tmp_path / "missing.json")
    assert run_labels([Path("a/run.json"), Path("b/run.json"), Path("base")]) == ["run", "run'", "base"]
