"""Line charts as inline SVG for the bench report: linear, log or percentile ("nines") axes with
ticks and labels, a legend, and a tooltip on every point. Standard library only.

A chart is a string of ``<svg>`` markup sized in CSS pixels; the report page embeds it as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

#: distinct colours (the Tableau 10 palette), in the order series get them
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
#: line styles (SVG stroke-dasharray) that tell runs apart when colours tell levels apart
DASHES = ("", "7 4", "2 3", "9 3 2 3")


@dataclass
class Series:
    """One line: ``points`` are (x, y) in data units; ``tips`` one tooltip text per point (optional)."""

    label: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dash: str = ""
    tips: Sequence[str] | None = None


@dataclass
class Axis:
    """``scale``: "linear" (from zero), "log" (base 10), or "nines" (a percentile axis where 50, 90, 99,
    99.9 are evenly spaced). ``ticks`` replaces the computed ticks with (value, label) pairs."""

    label: str
    scale: str = "linear"
    ticks: Sequence[tuple[float, str]] | None = None
    unit: str = ""


@dataclass
class _Frame:
    left: float
    top: float
    width: float
    height: float
    lo: tuple[float, float] = field(default=(0.0, 0.0))
    hi: tuple[float, float] = field(default=(1.0, 1.0))


def nines(percentile: float) -> float:
    """Position of a percentile on a nines axis: 0 -> 0, 90 -> 1, 99 -> 2, 99.9 -> 3."""
    return -math.log10(max(1e-9, 1.0 - percentile / 100.0))


def _transform(scale: str, value: float) -> float:
    if scale == "log":
        return math.log10(value)
    if scale == "nines":
        return nines(value)
    return value


def number(value: float) -> str:
    """A tick label: as few digits as tell ticks apart (0.05, 2, 150, 4000, 12k, 1.5M)."""
    if value == 0:
        return "0"
    for threshold, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / scale:.3g}{suffix}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round ticks (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2 and 5 times each power of ten (only powers of ten past four decades)."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = (1,) if last - first > 4 else (1, 2, 5)
    ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in steps]
    inside = [t for t in ticks if lo <= t <= hi]
    below = [t for t in ticks if t < lo]
    above = [t for t in ticks if t > hi]
    return ([below[-1]] if below else []) + inside + ([above[0]] if above else [])


def _domain(axis: Axis, values: list[float]) -> tuple[float, float, list[tuple[float, str]]]:
    """(low, high) in transformed units and the ticks as (transformed position, label)."""
    if axis.scale == "log":
        values = [v for v in values if v > 0] or [1.0]
    if axis.ticks is not None:
        ticks = [(_transform(axis.scale, v), text) for v, text in axis.ticks]
        positions = [t[0] for t in ticks] + [_transform(axis.scale, v) for v in values]
        lo, hi = min(positions), max(positions)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.04 if axis.scale != "linear" else 0.0
        return lo - pad, hi + pad, ticks
    if axis.scale == "log":
        ticks_at = log_ticks(min(values), max(values))
        return (math.log10(ticks_at[0]), math.log10(ticks_at[-1]),
                [(math.log10(t), number(t)) for t in ticks_at])
    if axis.scale == "nines":
        top = max(2.0, math.ceil(max(nines(v) for v in values) - 1e-9))
        labels = [(0.0, "p0")] + [(float(k), "p" + f"{100 - 10.0 ** (2 - k):.6g}") for k in range(1, int(top) + 1)]
        labels.insert(1, (nines(50), "p50"))
        return 0.0, top, labels
    ticks_at = nice_ticks(min(0.0, min(values)), max(values))
    return ticks_at[0], ticks_at[-1], [(t, number(t)) for t in ticks_at]


def line_chart(title: str, series: Sequence[Series], x: Axis, y: Axis, *, width: int = 620,
               height: int = 340) -> str:
    """One chart: title, axes with ticks and labels, grid, one polyline per series and a legend."""
    legend_w = min(220, 34 + 7 * max((len(s.label) for s in series), default=4))
    frame = _Frame(left=64, top=34, width=width - 64 - legend_w - 24, height=height - 34 - 52)
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" class="title">{escape(title)}</text>']
    if not xs:
        parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    x_lo, x_hi, x_ticks = _domain(x, xs)
    y_lo, y_hi, y_ticks = _domain(y, ys)

    def px(value: float) -> float:
        return frame.left + (_transform(x.scale, value) - x_lo) / (x_hi - x_lo) * frame.width

    def py(value: float) -> float:
        return frame.top + frame.height - (_transform(y.scale, value) - y_lo) / (y_hi - y_lo) * frame.height

    bottom = frame.top + frame.height
    right = frame.left + frame.width
    parts.append(f'<rect x="{frame.left}" y="{frame.top}" width="{frame.width:.1f}" height="{frame.height:.1f}" '
                 'class="plot"/>')
    for pos, text in y_ticks:
        yy = frame.top + frame.height - (pos - y_lo) / (y_hi - y_lo) * frame.height
        parts.append(f'<line x1="{frame.left}" x2="{right:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
                     f'<text x="{frame.left - 6}" y="{yy + 4:.1f}" text-anchor="end" class="tick">{escape(text)}</text>')
    for pos, text in x_ticks:
        xx = frame.left + (pos - x_lo) / (x_hi - x_lo) * frame.width
        parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{frame.top}" y2="{bottom:.1f}" class="grid"/>'
                     f'<text x="{xx:.1f}" y="{bottom + 16:.1f}" text-anchor="middle" class="tick">{escape(text)}</text>')
    parts.append(f'<text x="{frame.left + frame.width / 2:.0f}" y="{height - 10}" text-anchor="middle" '
                 f'class="axis">{escape(x.label)}</text>'
                 f'<text transform="translate(16 {frame.top + frame.height / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle" class="axis">{escape(y.label)}</text>')
    for s in series:
        points = [(px(a), py(b)) for a, b in s.points if (y.scale != "log" or b > 0) and (x.scale != "log" or a > 0)]
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="2"{dash} points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in points) + '"/>')
        tips = list(s.tips) if s.tips is not None else [f"{s.label}: {number(a)}, {number(b)}" for a, b in s.points]
        for (a, b), tip in zip(points, tips):
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{s.color}"><title>{escape(tip)}</title>'
                         '</circle>')
    lx = right + 16
    for row, s in enumerate(series):
        ly = frame.top + 8 + row * 18
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(f'<line x1="{lx}" x2="{lx + 24}" y1="{ly}" y2="{ly}" stroke="{s.color}" stroke-width="2"{dash}/>'
                     f'<text x="{lx + 30}" y="{ly + 4}" class="legend">{escape(s.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
