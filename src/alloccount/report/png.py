"""PNG report with matplotlib (the optional ``alloccount[plot]`` extra), imported only when used."""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

from alloccount.leaks import CATEGORY_PREFIX
from alloccount.report._summary import legend_label, report_title
from alloccount.report._svg import BINARY_UNITS, PALETTE, byte_ticks, time_label, time_step
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
        # constrained_layout and gridspec_kw (not layout= / height_ratios=) work on matplotlib 3.5.
        figure = figure_class(figsize=(11, 7.5), dpi=100, constrained_layout=True)
        memory_axes, rss_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (2, 1)})
        _plot(memory_axes, "total", "#333333", history.series("current_bytes"), verdicts.get("total"))
        for index, category in enumerate(history.categories()):
            verdict = verdicts.get(CATEGORY_PREFIX + category)
            series = history.series("current_bytes", category)
            _plot(memory_axes, category, PALETTE[index % len(PALETTE)], series, verdict)
        _plot(rss_axes, "RSS", PALETTE[0], history.series("rss_bytes"), verdicts.get("rss"))
        for axes, title in ((memory_axes, "Tracked memory in use"), (rss_axes, "Resident set size (RSS)")):
            axes.set_title(title, loc="left", fontsize=11)
            axes.grid(True, color="#e6e6e6")
            if axes.lines:
                _label_axes(axes, ticker)
                axes.legend(loc="upper left", fontsize=9, ncol=3)
        rss_axes.set_xlabel("time since start")
        figure.suptitle(report_title(history.meta), fontsize=12)
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


def _label_axes(axes: Any, ticker: Any) -> None:
    """Ticks like the HTML chart's: 1-2-5 steps in one binary unit, clock-friendly time steps.

    Matplotlib's default locator would put byte ticks at decimal steps (2.4 MiB, 4.8 MiB).
    """
    low, high = axes.get_ylim()
    unit_index, step = byte_ticks(max(low, 0.0), high)
    scale = 1024**unit_index
    axes.yaxis.set_major_locator(ticker.MultipleLocator(step * scale))
    unit = BINARY_UNITS[unit_index]
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _pos: f"{value / scale:g} {unit}"))
    start, end = axes.get_xlim()
    seconds = time_step(end - start)
    axes.xaxis.set_major_locator(ticker.MultipleLocator(seconds))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _pos: time_label(value, seconds)))


def _plot(
    axes: Any, label: str, color: str, series: tuple[Sequence[float], Sequence[int]], verdict: Optional[LeakVerdict]
) -> None:
    """Draw one series; a leaking one thicker, its label carrying the growth rate."""
    times, values = series
    if not times:
        return
    leaking = verdict is not None and verdict.leaking
    axes.plot(times, values, label=legend_label(label, verdict), color=color, linewidth=2.4 if leaking else 1.2)
