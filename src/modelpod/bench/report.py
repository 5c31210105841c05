"""The ``modelpod bench`` HTML report: one self-contained page (inline SVG and CSS, nothing fetched)
for one run or several side by side.

A run is the document ``modelpod bench --save`` writes (``{"info": ..., "results": [...]}``, the
same as ``--json`` prints); :func:`write_report` renders runs, :func:`load_run` reads a saved one.
Charts: throughput against concurrency, p99 (and p50) latency against concurrency on a log axis,
and the latency percentiles of every level (p50 ... p99.9 evenly spaced, log milliseconds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from modelpod.bench.svg import DASHES, PALETTE, Axis, Series, line_chart

Run = tuple[str, dict[str, Any]]  # (label, {"info": ..., "results": [...]})


def human_bytes(count: float) -> str:
    """Bytes as the terminal table shows them: 512 B, 12.3 KB, 4.56 MB, 1.20 GB (powers of 1000)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(count) >= size:
            value = count / size
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{count:.0f} B"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def load_run(path: Path) -> dict[str, Any]:
    """A run saved by ``modelpod bench --save`` (or its ``--json`` output), checked enough to render."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or not isinstance(doc.get("info"), dict):
        raise ValueError(f"{path}: not a modelpod bench result (expected the JSON of modelpod bench --save or --json)")
    for row in doc["results"]:
        if not isinstance(row, dict) or not {"concurrency", "rps", "requests"} <= set(row):
            raise ValueError(f"{path}: a result row lacks concurrency/rps/requests")
    return doc


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Labels for saved runs: file names without .json, made unique."""
    labels: list[str] = []
    for path in paths:
        label = Path(path).name.removesuffix(".json") or str(path)
        while label in labels:
            label += "'"
        labels.append(label)
    return labels


def percentile_points(row: dict[str, Any]) -> list[tuple[float, float]]:
    """(percentile, ms) of one level: the stored curve, or p50/p90/p99 for older files."""
    curve = row.get("latency_percentiles")
    if curve:
        return [(float(p), float(ms)) for p, ms in curve if float(p) < 100]
    return [(p, row[k]) for p, k in ((50, "p50_ms"), (90, "p90_ms"), (99, "p99_ms")) if row.get(k) is not None]


# ---------------------------------------------------------------------------------------------
# charts


def _levels(runs: Sequence[Run]) -> list[int]:
    return sorted({int(r["concurrency"]) for _, doc in runs for r in doc["results"]})


def _concurrency_axis(runs: Sequence[Run]) -> Axis:
    return Axis("concurrency (log scale)", "log", ticks=[(c, str(c)) for c in _levels(runs)])


def throughput_chart(runs: Sequence[Run]) -> str:
    series = [
        Series(label, [(r["concurrency"], r["rps"]) for r in doc["results"]], PALETTE[i % len(PALETTE)],
               tips=[f"{label}, concurrency {r['concurrency']}: {r['rps']:.1f} rps" for r in doc["results"]])
        for i, (label, doc) in enumerate(runs)
    ]
    return line_chart("Throughput", series, _concurrency_axis(runs), Axis("requests / s (answered)"))


def latency_chart(runs: Sequence[Run]) -> str:
    series = []
    for i, (label, doc) in enumerate(runs):
        color = PALETTE[i % len(PALETTE)]
        for key, dash in (("p99_ms", ""), ("p50_ms", "6 4")):
            rows = [r for r in doc["results"] if r.get(key)]
            name = key.removesuffix("_ms")
            series.append(Series(f"{label} {name}" if len(runs) > 1 else name,
                                 [(r["concurrency"], r[key]) for r in rows], color, dash,
                                 tips=[f"{label}, concurrency {r['concurrency']}: {name} {r[key]:.2f} ms" for r in rows]))
    return line_chart("p99 latency (p50 dashed)", series, _concurrency_axis(runs), Axis("latency (ms, log scale)", "log"))


def percentile_chart(runs: Sequence[Run]) -> str:
    series = []
    levels = _levels(runs)
    for i, (label, doc) in enumerate(runs):
        for r in doc["results"]:
            points = percentile_points(r)
            level = int(r["concurrency"])
            name = f"{label} c{level}" if len(runs) > 1 else f"concurrency {level}"
            series.append(Series(name, points, PALETTE[levels.index(level) % len(PALETTE)], DASHES[i % len(DASHES)],
                                 tips=[f"{name}: p{p:g} {ms:.2f} ms" for p, ms in points]))
    return line_chart("Latency percentiles", series, Axis("percentile", "nines"), Axis("latency (ms, log scale)", "log"))


# ---------------------------------------------------------------------------------------------
# tables


def _settings_rows(info: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, str]:
    inputs = info.get("inputs") or {}
    first = next((r for r in results if r.get("requests")), None)
    rows = {
        "model": str(info.get("model", "-")),
        "server": str(info.get("url", "-")),
        "protocol": str(info.get("protocol", "-")),
        "concurrency": ", ".join(str(r["concurrency"]) for r in results) or "-",
        "time per level": f"{info['duration_s']:g} s" if isinstance(info.get("duration_s"), (int, float)) else "-",
        "inputs": "; ".join(f"{name}: {v.get('dtype')} {v.get('shape')}" for name, v in inputs.items()) or "-",
        "request body": human_bytes(first["bytes_sent"] / first["requests"]) if first and "bytes_sent" in first else "-",
        "response body": (human_bytes(first["bytes_received"] / first["requests"])
                          if first and "bytes_received" in first else "-"),
        "compact transport": str(info.get("transport") or "none"),
        "compression": str(info.get("compression") or "none"),
        "started": str(info.get("started", "-")),
        "modelpod": str(info.get("modelpod", "-")),
    }
    return rows


def settings_table(runs: Sequence[Run]) -> str:
    per_run = [_settings_rows(doc["info"], doc["results"]) for _, doc in runs]
    head = ("<tr><th></th>" + "".join(f"<th>{escape(label)}</th>" for label, _ in runs) + "</tr>"
            if len(runs) > 1 else "")
    body = []
    for key in per_run[0]:
        values = [rows[key] for rows in per_run]
        differs = len(runs) > 1 and len(set(values)) > 1 and key not in ("started",)
        cells = "".join(f"<td>{escape(v)}</td>" for v in values)
        body.append(f'<tr{" class=differs" if differs else ""}><th scope="row">{escape(key)}</th>{cells}</tr>')
    return f'<table class="settings">{head}{"".join(body)}</table>'


_RESULT_COLUMNS = ("concurrency", "requests", "errors", "rps", "p50 ms", "p90 ms", "p99 ms", "mean ms", "sent",
                   "received")


def _result_cells(r: dict[str, Any]) -> list[str]:
    return [str(r["concurrency"]), str(r.get("requests", "-")), str(r.get("errors", "-")), f"{r['rps']:.1f}",
            _ms(r.get("p50_ms")), _ms(r.get("p90_ms")), _ms(r.get("p99_ms")), _ms(r.get("mean_ms")),
            human_bytes(r.get("bytes_sent", 0)), human_bytes(r.get("bytes_received", 0))]


def results_table(runs: Sequence[Run]) -> str:
    many = len(runs) > 1
    head = ("<th>run</th>" if many else "") + "".join(f"<th>{c}</th>" for c in _RESULT_COLUMNS)
    rows = []
    for level in _levels(runs):
        for label, doc in runs:
            for r in doc["results"]:
                if int(r["concurrency"]) != level:
                    continue
                cells = "".join(f"<td>{escape(c)}</td>" for c in _result_cells(r))
                flag = ' class="errors"' if r.get("errors") else ""
                rows.append(f"<tr{flag}>" + (f"<td class=label>{escape(label)}</td>" if many else "") + cells + "</tr>")
    return f'<table class="results"><tr>{head}</tr>{"".join(rows)}</table>'


def comparison_table(runs: Sequence[Run]) -> str:
    """Each later run against the first, per concurrency: rps and p99 as ratios."""
    base_label, base = runs[0]
    by_level = {int(r["concurrency"]): r for r in base["results"]}
    rows = []
    for label, doc in runs[1:]:
        for r in doc["results"]:
            ref = by_level.get(int(r["concurrency"]))
            if ref is None:
                continue
            rps = f"{r['rps'] / ref['rps']:.2f}x" if ref.get("rps") else "-"
            p99 = f"{r['p99_ms'] / ref['p99_ms']:.2f}x" if ref.get("p99_ms") and r.get("p99_ms") else "-"
            rows.append(f"<tr><td class=label>{escape(label)}</td><td>{r['concurrency']}</td>"
                        f"<td>{ref['rps']:.1f} &rarr; {r['rps']:.1f}</td><td>{rps}</td>"
                        f"<td>{_ms(ref.get('p99_ms'))} &rarr; {_ms(r.get('p99_ms'))}</td><td>{p99}</td></tr>")
    if not rows:
        return "<p>No concurrency level in common with the first run.</p>"
    return (f'<p>Against <b>{escape(base_label)}</b> (throughput higher is better, p99 lower is better).</p>'
            '<table class="results"><tr><th>run</th><th>concurrency</th><th>rps</th><th>rps ratio</th>'
            f'<th>p99 ms</th><th>p99 ratio</th></tr>{"".join(rows)}</table>')


def _errors(runs: Sequence[Run]) -> str:
    items = [f"<li>{escape(label)}, concurrency {r['concurrency']}: {r['errors']} failed; first: "
             f"<code>{escape(str(r.get('first_error') or '?'))}</code></li>"
             for label, doc in runs for r in doc["results"] if r.get("errors")]
    return f"<h2>Errors</h2><ul>{''.join(items)}</ul>" if items else ""


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1320px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:4px 10px}
table.results td{text-align:right} table.results td.label{text-align:left} th{background:#f5f5f5;font-weight:600}
table.settings th[scope=row]{text-align:left} tr.differs td{background:#fff4d6} tr.errors td{color:#b00}
.charts{display:flex;flex-wrap:wrap;gap:1em} svg.chart{background:#fff;border:1px solid #eee}
svg .title{font-size:14px;font-weight:600} svg .tick{font-size:11px;fill:#555} svg .axis{font-size:12px;fill:#333}
svg .legend{font-size:12px} svg .grid{stroke:#eee} svg .plot{fill:none;stroke:#ccc}
footer{color:#888;margin-top:2em;font-size:.9em}
"""


def render(runs: Sequence[Run]) -> str:
    """The whole page for one run or several (compared against the first)."""
    if not runs:
        raise ValueError("no runs to report")
    models = sorted({str(doc["info"].get("model", "?")) for _, doc in runs})
    title = f"modelpod bench: {', '.join(models)}"
    if len(runs) > 1:
        subtitle = "comparing " + " vs ".join(escape(label) for label, _ in runs)
    else:
        info = runs[0][1]["info"]
        subtitle = escape(f"{info.get('protocol', '?')} to {info.get('url', '?')}")
    compare = f"<h2>Comparison</h2>{comparison_table(runs)}" if len(runs) > 1 else ""
    from modelpod._version import __version__

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{escape(title)}</h1><p class="sub">{subtitle}</p>
<h2>Run settings</h2>{settings_table(runs)}
<h2>Results</h2><p>Latency in milliseconds from request sent to answer read; rps counts answered requests;
bytes are request and response bodies.</p>{results_table(runs)}
{compare}{_errors(runs)}
<h2>Charts</h2><div class="charts">{throughput_chart(runs)}{latency_chart(runs)}{percentile_chart(runs)}</div>
<footer>modelpod {escape(__version__)} bench report, written {time.strftime('%Y-%m-%d %H:%M:%S %z')}</footer>
</body></html>
"""


def write_report(path: Path, runs: Sequence[Run]) -> Path:
    """Render ``runs`` and write the page to ``path``."""
    page = render(runs)
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
