"""A refreshing terminal view of a running program's categories (``alloccount run --live``)."""
from __future__ import annotations

import shutil
import sys
import threading
from typing import Optional, TextIO

from ._units import format_bytes, format_rate
from .history import Sample
from .monitor import Monitor

__all__ = ["LiveView"]

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: redraw in place, like top(1)


class LiveView:
    """Redraws a table (category, current, peak, growth rate) after every monitor sample.

    It draws on ``stream`` (stderr by default) so the program's stdout stays its own; on a
    terminal shared by both, redirect a chatty program's stdout to a file.
    """

    def __init__(self, monitor: Monitor, stream: Optional[TextIO] = None, *, title: str = "alloccount") -> None:
        self.monitor = monitor
        self.stream = stream or sys.stderr
        self.title = title
        self._previous: Optional[Sample] = None
        self._lock = threading.Lock()

    def __call__(self, sample: Sample) -> None:
        """Monitor callback: draw the view for ``sample``."""
        with self._lock:
            text = self.render(sample, self._previous)
            self._previous = sample
            self.stream.write(_CLEAR + text)
            self.stream.flush()

    def render(self, sample: Sample, previous: Optional[Sample]) -> str:
        """The view for one sample as text (growth computed against the previous sample)."""
        width = shutil.get_terminal_size((100, 24)).columns
        dt = (sample.t_s - previous.t_s) if previous is not None else 0.0
        rows = [("category", "current", "peak", "growth/s")]

        def growth(now: int, before: Optional[int]) -> str:
            return format_rate((now - before) / dt) if before is not None and dt > 0 else "-"

        rows.append(
            (
                "TOTAL",
                format_bytes(sample.current_bytes),
                format_bytes(sample.peak_bytes),
                growth(sample.current_bytes, previous.current_bytes if previous else None),
            )
        )
        ordered = sorted(sample.categories.items(), key=lambda item: -item[1]["current_bytes"])
        for name, counters in ordered:
            before = previous.categories.get(name, {}).get("current_bytes") if previous else None
            rows.append((name, format_bytes(counters["current_bytes"]), format_bytes(counters["peak_bytes"]), growth(counters["current_bytes"], before)))
        leaking = sorted(v.name for v in self.monitor.verdicts().values() if v.leaking)
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            f"{self.title} — t={sample.t_s:.0f}s  RSS {format_bytes(sample.rss_bytes)}  samples {len(self.monitor.history)}",
            "",
        ]
        for row in rows:
            line = "  ".join([row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])])
            lines.append(line[:width])
        lines += ["", f"LEAK SUSPECTED: {', '.join(leaking)}" if leaking else "no leak suspected so far", ""]
        return "\n".join(lines)
