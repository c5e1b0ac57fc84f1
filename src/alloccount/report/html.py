"""A single self-contained HTML file: inline CSS, inline SVG charts, no scripts or external assets.

Self-contained so the report can be attached to a ticket or opened from CI artifacts offline.
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence, Set
from typing import TYPE_CHECKING, Optional

from alloccount._units import format_bytes, format_duration, format_rate
from alloccount.leaks import CATEGORY_PREFIX
from alloccount.report._summary import Summary, legend_label, summarize
from alloccount.report._svg import PALETTE, Line, line_chart
from alloccount.report.base import Renderer

if TYPE_CHECKING:
    from alloccount.history import History
    from alloccount.leaks import LeakVerdict

__all__ = ["HtmlRenderer"]

_TOTAL_COLOR = "#333333"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1100px; padding: 0 16px; color: #222; background: #fff; }
h1 { font-size: 1.35em; margin-bottom: 4px; word-break: break-all; }
h2 { font-size: 1.1em; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.run { color: #666; margin-top: 0; }
.banner { padding: 10px 14px; border-radius: 6px; font-weight: 600; }
.banner.leak { background: #fde2e1; color: #8a1c17; border: 1px solid #f0a9a5; }
.banner.ok { background: #e3f4e1; color: #22571b; border: 1px solid #a8d8a0; }
table { border-collapse: collapse; margin-top: 8px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 12px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th.reason, td.reason { text-align: left; white-space: normal; }
th { background: #f5f5f5; font-weight: 600; }
tr.leak td { background: #fde2e1; color: #8a1c17; font-weight: 600; }
.chart { display: block; margin-top: 12px; }
.chart .grid { stroke: #e6e6e6; stroke-width: 1; }
.chart .frame { fill: none; stroke: #bbb; }
.chart .tick { font-size: 11px; fill: #666; }
.chart .legend { font-size: 12px; fill: #333; }
.chart .chart-title { font-size: 14px; font-weight: 600; fill: #222; }
"""


class HtmlRenderer(Renderer):
    """Charts of memory over time (tracked bytes per category, RSS), tables and verdicts."""

    extension = "html"

    def render(self, history: History, verdicts: Mapping[str, LeakVerdict]) -> str:
        """Return the complete HTML document."""
        # One snapshot for the tables and both charts, while a sampler may still be appending.
        history = history.copy()
        summary = summarize(history, verdicts)
        body = [
            f"<h1>{_esc(summary.title)}</h1>",
            f'<p class="run">{_esc(summary.run_description)}</p>',
            _banner(summary),
            _memory_chart(history, verdicts),
            _rss_chart(history, verdicts),
        ]
        if summary.latest is not None:
            body += _totals_section(summary) + _categories_section(summary)
        body += _verdicts_section(summary)
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{_esc(summary.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )


def _banner(summary: Summary) -> str:
    """A red line naming the leaking series, or a green one when there are none."""
    leaking = summary.leaking_names
    if leaking:
        noun = "leak" if len(leaking) == 1 else "leaks"
        return f'<p class="banner leak">{len(leaking)} {noun} detected: {_esc(", ".join(leaking))}</p>'
    if not summary.verdicts:
        return '<p class="banner ok">No leak verdicts were computed.</p>'
    return '<p class="banner ok">No leak detected.</p>'


def _memory_chart(history: History, verdicts: Mapping[str, LeakVerdict]) -> str:
    """Tracked bytes in use over time: the total and each category."""
    lines = [_line("total", _TOTAL_COLOR, history.series("current_bytes"), verdicts.get("total"))]
    for index, category in enumerate(history.categories()):
        color = PALETTE[index % len(PALETTE)]
        verdict = verdicts.get(CATEGORY_PREFIX + category)
        lines.append(_line(category, color, history.series("current_bytes", category), verdict))
    return line_chart(lines, title="Tracked memory in use")


def _rss_chart(history: History, verdicts: Mapping[str, LeakVerdict]) -> str:
    """Resident set size over time, in its own panel: it is often 10× the tracked bytes."""
    line = _line("RSS", PALETTE[0], history.series("rss_bytes"), verdicts.get("rss"))
    return line_chart([line], title="Resident set size (RSS)", height=220)


def _line(
    label: str, color: str, series: tuple[Sequence[float], Sequence[int]], verdict: Optional[LeakVerdict]
) -> Line:
    """A chart line; a leaking series is drawn thicker and labelled with its growth rate."""
    times, values = series
    leaking = verdict is not None and verdict.leaking
    return Line(legend_label(label, verdict), color, times_s=times, values=values, emphasized=leaking)


def _totals_section(summary: Summary) -> list[str]:
    """The latest whole-process counters."""
    latest = summary.latest
    assert latest is not None  # checked by the caller
    return [
        "<h2>Totals</h2>",
        _table(
            ["", "current", "peak", "RSS", "allocations", "frees"],
            [
                [
                    "total",
                    format_bytes(latest.current_bytes),
                    format_bytes(latest.peak_bytes),
                    format_bytes(latest.rss_bytes),
                    f"{latest.allocations:,}",
                    f"{latest.frees:,}",
                ]
            ],
            leaking_rows={0} if "total" in summary.leaking_names else set(),
        ),
    ]


def _categories_section(summary: Summary) -> list[str]:
    """One row per category; leaking categories highlighted."""
    if not summary.categories:
        return []
    rows = [
        [
            row.name,
            format_bytes(row.current_bytes),
            format_bytes(row.peak_bytes),
            format_bytes(row.bytes_allocated),
            f"{row.allocations:,}",
            f"{row.frees:,}",
            "-" if row.growth_bytes_per_s is None else format_rate(row.growth_bytes_per_s),
        ]
        for row in summary.categories
    ]
    leaking = {index for index, row in enumerate(summary.categories) if row.leaking}
    header = ["category", "current", "peak", "allocated", "allocations", "frees", "growth"]
    return ["<h2>Categories</h2>", _table(header, rows, leaking_rows=leaking)]


def _verdicts_section(summary: Summary) -> list[str]:
    """Every verdict with its reason; leaks first and highlighted."""
    if not summary.verdicts:
        return []
    rows = [
        [
            verdict.name,
            "LEAK" if verdict.leaking else "ok",
            format_rate(verdict.slope_bytes_per_s),
            f"{verdict.confidence:.4f}",
            "-" if verdict.time_to_limit_s is None else format_duration(verdict.time_to_limit_s),
            verdict.reason,
        ]
        for verdict in summary.verdicts
    ]
    leaking = {index for index, verdict in enumerate(summary.verdicts) if verdict.leaking}
    header = ["series", "verdict", "slope", "confidence", "time to limit", "reason"]
    return ["<h2>Leak verdicts</h2>", _table(header, rows, leaking_rows=leaking, reason_column=5)]


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, leaking_rows: Set[int], reason_column: int = -1
) -> str:
    """An HTML table; rows whose index is in ``leaking_rows`` get the ``leak`` class, and the
    ``reason_column`` (free text) is left-aligned and may wrap."""
    def cells(tag: str, row: Sequence[str]) -> str:
        return "".join(
            f'<{tag} class="reason">{_esc(cell)}</{tag}>' if col == reason_column else f"<{tag}>{_esc(cell)}</{tag}>"
            for col, cell in enumerate(row)
        )

    out = ["<table>", f"<tr>{cells('th', header)}</tr>"]
    for index, row in enumerate(rows):
        css = ' class="leak"' if index in leaking_rows else ""
        out.append(f"<tr{css}>{cells('td', row)}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _esc(text: str) -> str:
    """Escape text for HTML content."""
    return html.escape(text, quote=False)
