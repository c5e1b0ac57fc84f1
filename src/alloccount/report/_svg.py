"""A small SVG line chart (time on x, bytes on y), so the HTML report needs no JavaScript library.

The tick choices (:func:`byte_ticks`, :func:`time_step`, :func:`time_label`) are shared with the
PNG renderer so both formats label their axes alike.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BINARY_UNITS", "PALETTE", "Line", "byte_ticks", "line_chart", "time_label", "time_step"]

#: Tableau 10: distinct, colour-blind friendlier than the SVG named colours.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip

# Beyond this many points a polyline only adds bytes: a 1000 px wide plot cannot show them.
_MAX_POINTS_PER_LINE = 1200
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 84, 16, 34, 34
_LEGEND_ROW_HEIGHT = 20
_TIME_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
#: Axis units, one per power of 1024.
BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


@dataclass(frozen=True)
class Line:
    """One series to draw: a legend label, a CSS colour, and its points."""

    label: str
    color: str
    times_s: Sequence[float]
    values: Sequence[float]
    emphasized: bool = False


def line_chart(lines: Sequence[Line], *, title: str, width: int = 960, height: int = 300) -> str:
    """Return an ``<svg>`` element plotting ``lines`` with labelled axes and a legend below.

    ``height`` is the plot's; the legend adds rows as needed, wrapping to ``width``. Empty lines
    are skipped; a chart with no points says so instead of drawing empty axes.
    """
    drawn = [line for line in lines if line.times_s]
    legend, legend_height = _legend(drawn, width, top=height)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + legend_height}" '
        f'width="100%" role="img" aria-label="{_attr(title)}" class="chart">',
        f'<text x="{_MARGIN_LEFT}" y="20" class="chart-title">{html.escape(title)}</text>',
    ]
    if not drawn:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no samples</text></svg>')
        return "".join(parts)
    frame = _Frame.around(drawn, width, height)
    parts += frame.axes()
    parts += [frame.polyline(line) for line in drawn]
    parts += legend
    parts.append("</svg>")
    return "\n".join(parts)


@dataclass(frozen=True)
class _Frame:
    """Maps data coordinates (seconds, bytes) to pixels inside the plot area."""

    t_min: float
    t_max: float
    v_min: float
    v_max: float
    width: int
    height: int

    @classmethod
    def around(cls, lines: Sequence[Line], width: int, height: int) -> _Frame:
        """A frame holding every point, with 5 % headroom so lines do not touch the border."""
        t_min = min(line.times_s[0] for line in lines)
        t_max = max(line.times_s[-1] for line in lines)
        v_min = min(min(line.values) for line in lines)
        v_max = max(max(line.values) for line in lines)
        pad = (v_max - v_min) * 0.05 or max(abs(v_max) * 0.05, 1.0)
        # Memory is never negative: do not pad the axis below zero.
        return cls(t_min, max(t_max, t_min + 1.0), max(0.0, v_min - pad), v_max + pad, width, height)

    def x(self, t: float) -> float:
        """Pixel column of time ``t``."""
        span = self.width - _MARGIN_LEFT - _MARGIN_RIGHT
        return _MARGIN_LEFT + (t - self.t_min) / (self.t_max - self.t_min) * span

    def y(self, value: float) -> float:
        """Pixel row of ``value`` (SVG rows grow downwards)."""
        span = self.height - _MARGIN_TOP - _MARGIN_BOTTOM
        return self.height - _MARGIN_BOTTOM - (value - self.v_min) / (self.v_max - self.v_min) * span

    def axes(self) -> list[str]:
        """Grid lines and tick labels for both axes, inside a frame."""
        left, right = _MARGIN_LEFT, self.width - _MARGIN_RIGHT
        top, bottom = _MARGIN_TOP, self.height - _MARGIN_BOTTOM
        parts = self._value_ticks(left, right) + self._time_ticks(top, bottom)
        parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" class="frame"/>')
        return parts

    def _value_ticks(self, left: int, right: int) -> list[str]:
        """Horizontal grid lines labelled in one binary unit (``5 MiB``, ``10 MiB``)."""
        unit_index, step = byte_ticks(self.v_min, self.v_max)
        scale = 1024**unit_index
        parts = []
        # Index-based, not repeated addition: 0.1-style steps would drift and lose the last tick.
        for k in range(math.ceil(self.v_min / (step * scale)), math.floor(self.v_max / (step * scale)) + 1):
            value = k * step * scale
            y = self.y(value)
            parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" class="grid"/>')
            parts.append(
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
                f"{k * step:g} {BINARY_UNITS[unit_index]}</text>"
            )
        return parts

    def _time_ticks(self, top: int, bottom: int) -> list[str]:
        """Vertical grid lines at clock-friendly times (``10 min``, ``20 min``)."""
        step = time_step(self.t_max - self.t_min)
        parts = []
        for k in range(math.ceil(self.t_min / step), math.floor(self.t_max / step) + 1):
            x = self.x(k * step)
            parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="grid"/>')
            parts.append(
                f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" class="tick">'
                f"{time_label(k * step, step)}</text>"
            )
        return parts

    def polyline(self, line: Line) -> str:
        """The line's points as one ``<polyline>``, thinned for long series."""
        points = " ".join(f"{self.x(t):.1f},{self.y(v):.1f}" for t, v in _thin(line.times_s, line.values))
        stroke = 2.6 if line.emphasized else 1.4
        return (
            f'<polyline points="{points}" fill="none" stroke="{_attr(line.color)}" '
            f'stroke-width="{stroke}" stroke-linejoin="round"><title>{html.escape(line.label)}</title></polyline>'
        )


def _legend(lines: Sequence[Line], width: int, top: int) -> tuple[list[str], int]:
    """Legend entries left to right from ``top``, wrapped to ``width``; returns them and their height."""
    parts = []
    x, y = _MARGIN_LEFT, top + 4
    for line in lines:
        # SVG has no layout engine to ask for a text's width; 7 px a character fits 12 px sans-serif.
        entry_width = 7 * len(line.label) + 34
        if x + entry_width > width and x > _MARGIN_LEFT:
            x, y = _MARGIN_LEFT, y + _LEGEND_ROW_HEIGHT
        weight = ' font-weight="bold"' if line.emphasized else ""
        parts.append(f'<rect x="{x}" y="{y + 5}" width="16" height="4" fill="{_attr(line.color)}"/>')
        parts.append(f'<text x="{x + 20}" y="{y + 11}" class="legend"{weight}>{html.escape(line.label)}</text>')
        x += entry_width
    return parts, (y - top + _LEGEND_ROW_HEIGHT if lines else 0)


def _thin(times: Sequence[float], values: Sequence[float]) -> list[tuple[float, float]]:
    """At most ~_MAX_POINTS_PER_LINE points, keeping each bucket's minimum and maximum.

    Keeping both extremes (rather than every k-th point) preserves the sawtooth envelope and the
    spikes a reader looks for.
    """
    n = len(times)
    if n <= _MAX_POINTS_PER_LINE:
        return list(zip(times, values))
    bucket = math.ceil(n / (_MAX_POINTS_PER_LINE // 2))
    points = []
    for start in range(0, n, bucket):
        indices = range(start, min(start + bucket, n))
        low = min(indices, key=values.__getitem__)
        high = max(indices, key=values.__getitem__)
        points += [(times[i], values[i]) for i in sorted({low, high})]
    return points


def byte_ticks(v_min: float, v_max: float) -> tuple[int, float]:
    """The binary unit for the axis and a 1-2-5 tick step in that unit giving 4–8 ticks."""
    unit_index = 0
    while unit_index < len(BINARY_UNITS) - 1 and v_max >= 1024 ** (unit_index + 1):
        unit_index += 1
    span = (v_max - v_min) / 1024**unit_index
    return unit_index, _nice_step(span / 5)


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is at least ``raw``."""
    magnitude = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if multiple * magnitude >= raw:
            return multiple * magnitude
    return 10 * magnitude


def time_step(span_s: float) -> float:
    """A clock-friendly tick step (seconds, minutes, hours, days) giving at most ~8 ticks."""
    for step in _TIME_STEPS_S:
        if span_s / step <= 8:
            return float(step)
    return 86400.0 * math.ceil(span_s / 86400 / 8)


def time_label(t: float, step: float) -> str:
    """Tick label in the unit of the step: ``30 s``, ``10 min``, ``2 h``, ``3 d``."""
    if step < 60:
        return f"{t:g} s"
    if step < 3600:
        return f"{t / 60:g} min"
    if step < 86400:
        return f"{t / 3600:g} h"
    return f"{t / 86400:g} d"


def _attr(text: str) -> str:
    """Escape text for an attribute value."""
    return html.escape(text, quote=True)
