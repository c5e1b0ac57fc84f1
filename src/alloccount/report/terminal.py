"""Plain-text report: aligned tables for a terminal or a log file."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Optional

from alloccount._units import format_bytes, format_rate
from alloccount.report._summary import Summary, summarize
from alloccount.report.base import Renderer

if TYPE_CHECKING:
    from alloccount.history import History
    from alloccount.leaks import LeakVerdict

__all__ = ["TerminalRenderer"]


class TerminalRenderer(Renderer):
    """Totals, per-category counters with their growth rate, and the leak verdicts as text."""

    extension = "txt"

    def render(self, history: History, verdicts: Mapping[str, LeakVerdict]) -> str:
        """Return the report as lines of aligned text."""
        summary = summarize(history, verdicts)
        lines = [summary.title, summary.run_description, ""]
        if summary.latest is None:
            lines.append("no samples recorded")
            return "\n".join(lines) + "\n"
        lines += _totals_table(summary) + [""]
        if summary.categories:
            lines += _categories_table(summary) + [""]
        lines += _verdict_lines(summary)
        return "\n".join(lines) + "\n"


def _totals_table(summary: Summary) -> list[str]:
    """Whole-process figures of the latest sample."""
    latest = summary.latest
    assert latest is not None  # checked by the caller
    return _table(
        [
            ["", "current", "peak", "RSS", "allocs", "frees"],
            [
                "total",
                format_bytes(latest.current_bytes),
                format_bytes(latest.peak_bytes),
                format_bytes(latest.rss_bytes),
                f"{latest.allocations:,}",
                f"{latest.frees:,}",
            ],
        ]
    )


def _categories_table(summary: Summary) -> list[str]:
    """One row per category; a trailing ``!`` marks a category with a leak verdict."""
    rows = [["category", "current", "peak", "allocated", "allocs", "frees", "growth"]]
    for row in summary.categories:
        rows.append(
            [
                row.name + (" !" if row.leaking else ""),
                format_bytes(row.current_bytes),
                format_bytes(row.peak_bytes),
                format_bytes(row.bytes_allocated),
                f"{row.allocations:,}",
                f"{row.frees:,}",
                _rate(row.growth_bytes_per_s),
            ]
        )
    return _table(rows)


def _verdict_lines(summary: Summary) -> list[str]:
    """``LEAK`` or ``ok`` per series, then the verdict's reason."""
    if not summary.verdicts:
        return ["leak verdicts: none computed"]
    width = max(len(verdict.name) for verdict in summary.verdicts)
    lines = ["leak verdicts"]
    for verdict in summary.verdicts:
        status = "LEAK" if verdict.leaking else "ok"
        lines.append(f"  {status:<4}  {verdict.name:<{width}}  {verdict.reason}")
    return lines


def _rate(bytes_per_s: Optional[float]) -> str:
    """A signed growth rate, ``+2.0 KiB/s``; ``-`` when no slope was fitted."""
    if bytes_per_s is None:
        return "-"
    return ("+" if bytes_per_s >= 0 else "") + format_rate(bytes_per_s)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Align ``rows`` (the first is the header): first column left, the numbers right."""
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines
