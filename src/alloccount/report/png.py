"""PNG report with matplotlib (the optional ``alloccount[plot]`` extra), imported only when used."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Mapping

from alloccount._units import format_bytes, format_rate
from alloccount.leaks import CATEGORY_PREFIX
from alloccount.report._svg import PALETTE
from alloccount.report.base import Renderer

if TYPE_CHECKING:
    from alloccount.history import History
    from alloccount.leaks import LeakVerdict

__all__ = ["PngRenderer"]


class PngRenderer(Renderer):
    """One figure: tracked bytes per category over time, and RSS in a panel below."""

    extension = "png"
    binary = True

    def render(self, history: History, verdicts: Mapping[str, LeakVerdict]) -> bytes:
        """Return the PNG image; ImportError names the extra to install when matplotlib is missing."""
        figure_class, canvas_class, ticker = _matplotlib()
        history = history.copy()
        figure = figure_class(figsize=(11, 7.5), dpi=100, layout="constrained")
        memory_axes, rss_axes = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
        _plot(memory_axes, "total", "#333333", history.series("current_bytes"), verdicts.get("total"))
        for index, category in enumerate(history.categories()):
            verdict = verdicts.get(CATEGORY_PREFIX + category)
            series = history.series("current_bytes", category)
            _plot(memory_axes, category, PALETTE[index % len(PALETTE)], series, verdict)
        _plot(rss_axes, "RSS", PALETTE[0], history.series("rss_bytes"), verdicts.get("rss"))
        byte_formatter = ticker.FuncFormatter(lambda value, _position: format_bytes(value))
        for axes, title in ((memory_axes, "Tracked memory in use"), (rss_axes, "Resident set size (RSS)")):
            axes.set_title(title, loc="left", fontsize=11)
            axes.yaxis.set_major_formatter(byte_formatter)
            axes.grid(True, color="#e6e6e6")
            if axes.lines:
                axes.legend(loc="upper left", fontsize=9, ncol=3)
        rss_axes.set_xlabel("time since start (s)")
        figure.suptitle(_title(history.meta), fontsize=12)
        buffer = io.BytesIO()
        canvas_class(figure).print_png(buffer)
        return buffer.getvalue()


def _matplotlib() -> tuple[Any, Any, Any]:
    """Import matplotlib's object-oriented API lazily: it costs ~0.3 s and is an optional extra.

    Figure + FigureCanvasAgg, not pyplot: pyplot keeps global state and may pick a GUI backend
    inside the monitored service.
    """
    try:
        from matplotlib import ticker
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "PNG reports need matplotlib, which is not installed; install it with: pip install 'alloccount[plot]'"
        ) from exc
    return Figure, FigureCanvasAgg, ticker


def _plot(axes: Any, label: str, color: str, series: tuple, verdict: LeakVerdict | None) -> None:
    """Draw one series; a leaking one thicker, its label carrying the growth rate."""
    times, values = series
    if not times:
        return
    leaking = verdict is not None and verdict.leaking
    if leaking:
        label += f" (leak: {format_rate(verdict.slope_bytes_per_s)})"
    axes.plot(times, values, label=label, color=color, linewidth=2.4 if leaking else 1.2)


def _title(meta: Mapping[str, Any]) -> str:
    """The monitored command, or a generic title."""
    command = meta.get("command")
    if isinstance(command, (list, tuple)):
        command = " ".join(map(str, command))
    return f"alloccount: {command}" if command else "alloccount report"
