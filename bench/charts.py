"""Draw a :class:`~bench.core.Chart` to PNG. Benchmarks hand over numbers; the look lives here.

Kinds:

``latency_distribution``
    ``{"unit": "us", "series": [{"label": str, "dist": {"p1": .., "p25": .., "p50": .., "p75": ..,
    "p99": .., "p99.9": .., "max": ..}}]}``: one horizontal bar per series on a log axis -- box
    from p25 to p75, line at p50, whiskers p1 to p99, a dot at p99.9.
``bars``
    ``{"unit": str, "categories": [str], "series": [{"label": str, "values": [float],
    "low": [float], "high": [float]}], "log": bool}``: grouped bars, error bars from low to high.
``lines``
    ``{"x_label": str, "y_label": str, "log_y": bool, "series": [{"label": str, "x": [float],
    "y": [float]}]}``: for figures over time or over a parameter (lag, scale). Optional:
    ``"markers": False`` for dense series, ``"y_from_zero": True``, and ``"spans": [{"from": x0,
    "to": x1, "label": str, "color": str}]`` to shade intervals (an outage, say).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from .core import Chart  # noqa: E402

__all__ = ["draw"]


def draw(chart: Chart, directory: Path) -> Path:
    """Render ``chart`` into ``directory`` and return the file written."""
    renderer = _RENDERERS.get(chart.kind)
    if renderer is None:
        raise ValueError(f"no renderer for chart kind {chart.kind!r}")
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.55 * _height(chart)))
    try:
        renderer(ax, chart.data)
        ax.set_title(chart.title, fontsize=11)
        ax.grid(True, which="both", axis="x" if chart.kind == "latency_distribution" else "y", alpha=0.3)
        fig.tight_layout()
        out = directory / chart.filename
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out


def _height(chart: Chart) -> int:
    if chart.kind == "latency_distribution":
        return max(4, len(chart.data["series"]) + 2)
    return 8


def _latency(ax: Axes, data: dict[str, Any]) -> None:
    series = list(reversed(data["series"]))  # first series on top
    unit = data.get("unit", "us")
    for y, s in enumerate(series):
        d = s["dist"]
        ax.plot([d["p1"], d["p99"]], [y, y], color="0.35", linewidth=1, zorder=1)
        for end in ("p1", "p99"):
            ax.plot([d[end], d[end]], [y - 0.15, y + 0.15], color="0.35", linewidth=1, zorder=1)
        ax.barh(y, d["p75"] - d["p25"], left=d["p25"], height=0.5, color="C0", alpha=0.6, zorder=2)
        ax.plot([d["p50"], d["p50"]], [y - 0.25, y + 0.25], color="black", linewidth=2, zorder=3)
        ax.plot([d["p99.9"]], [y], marker="o", markersize=4, color="C3", zorder=3)
        ax.annotate(
            f"p50 {_fmt(d['p50'])}  p99 {_fmt(d['p99'])}",
            (d["p99.9"], y),
            xytext=(8, -3),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_yticks(range(len(series)), [s["label"] for s in series], fontsize=9)
    ax.set_xscale("log")
    lo = min(s["dist"]["p1"] for s in series)
    hi = max(s["dist"]["p99.9"] for s in series)
    ax.set_xlim(lo / 1.5, hi * 25)  # room on the right for the p50/p99 labels
    ax.set_xlabel(f"latency per event ({unit}, log scale): box p25-p75, line p50, whiskers p1-p99, dot p99.9")


def _fmt(us: float) -> str:
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.0f} us" if us >= 10 else f"{us:.1f} us"


def _bars(ax: Axes, data: dict[str, Any]) -> None:
    categories = data["categories"]
    series = data["series"]
    width = 0.8 / max(1, len(series))
    for i, s in enumerate(series):
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
        values = s["values"]
        err = None
        if "low" in s and "high" in s:
            err = [[v - lo for v, lo in zip(values, s["low"])], [hi - v for v, hi in zip(values, s["high"])]]
        ax.bar(xs, values, width=width, label=s["label"], yerr=err, capsize=3, color=f"C{i}")
        tops = s.get("high", values)
        for x, v, top in zip(xs, values, tops):
            ax.annotate(f"{v:,.0f}", (x, max(v, top)), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(range(len(categories)), [textwrap.fill(c, 18) for c in categories], fontsize=9)
    ax.set_ylabel(data.get("unit", ""))
    if data.get("log"):
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(fontsize=8)


def _lines(ax: Axes, data: dict[str, Any]) -> None:
    markers = data.get("markers", True)
    for s in data["series"]:
        ax.plot(s["x"], s["y"], marker="o" if markers else None, markersize=3, linewidth=1.2, label=s["label"])
    for i, span in enumerate(data.get("spans", [])):
        ax.axvspan(span["from"], span["to"], color=span.get("color", "C3"), alpha=0.12, label=span.get("label"))
    ax.set_xlabel(data.get("x_label", ""))
    ax.set_ylabel(data.get("y_label", ""))
    if data.get("log_y"):
        ax.set_yscale("log")
    elif data.get("y_from_zero"):
        ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)


_RENDERERS: dict[str, Callable[[Axes, dict[str, Any]], None]] = {
    "latency_distribution": _latency,
    "bars": _bars,
    "lines": _lines,
}
