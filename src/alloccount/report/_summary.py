"""The figures every report shows, computed once from a history and its verdicts."""
from __future__ import annotations

import datetime
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from alloccount._units import format_duration, format_rate
from alloccount.history import History, Sample
from alloccount.leaks import CATEGORY_PREFIX, LeakVerdict


@dataclass(frozen=True)
class CategoryRow:
    """One category's latest counters and its fitted growth rate (None without a verdict)."""

    name: str
    current_bytes: int
    peak_bytes: int
    bytes_allocated: int
    allocations: int
    frees: int
    growth_bytes_per_s: Optional[float]
    leaking: bool


@dataclass(frozen=True)
class Summary:
    """What a report says about one run: where it came from, the latest totals, the categories
    and the verdicts (leaks first)."""

    title: str
    started: str
    sample_count: int
    interval_s: Optional[float]
    duration_s: float
    latest: Optional[Sample]
    categories: tuple[CategoryRow, ...]
    verdicts: tuple[LeakVerdict, ...]

    @property
    def run_description(self) -> str:
        """``started … · N samples every I s · over D``."""
        text = f"started {self.started} · {self.sample_count:,} samples"
        if self.interval_s:
            text += f" every {format_duration(self.interval_s)}"
        return text + f" · over {format_duration(self.duration_s)}"

    @property
    def leaking_names(self) -> list[str]:
        """The names of the series with a leak verdict."""
        return [verdict.name for verdict in self.verdicts if verdict.leaking]


def summarize(history: History, verdicts: Mapping[str, LeakVerdict]) -> Summary:
    """Collect the report figures from one consistent snapshot of ``history``."""
    samples = history.snapshot()
    latest = samples[-1] if samples else None
    meta = history.meta
    rows = []
    if latest is not None:
        for name in sorted(latest.categories):
            counters = latest.categories[name]
            verdict = verdicts.get(CATEGORY_PREFIX + name)
            rows.append(
                CategoryRow(
                    name=name,
                    current_bytes=counters["current_bytes"],
                    peak_bytes=counters["peak_bytes"],
                    bytes_allocated=counters["bytes_allocated"],
                    allocations=counters["allocations"],
                    frees=counters["frees"],
                    growth_bytes_per_s=_growth_rate(verdict),
                    leaking=verdict is not None and verdict.leaking,
                )
            )
    start_time = meta.get("start_time", samples[0].wall_time if samples else None)
    return Summary(
        title=report_title(meta),
        started=_utc(start_time) if isinstance(start_time, (int, float)) else "unknown",
        sample_count=len(samples),
        interval_s=meta.get("interval_s"),
        duration_s=samples[-1].t_s - samples[0].t_s if samples else 0.0,
        latest=latest,
        categories=tuple(rows),
        # Leaks first: they are what the reader came for.
        verdicts=tuple(sorted(verdicts.values(), key=lambda v: (not v.leaking, v.name))),
    )


def legend_label(label: str, verdict: Optional[LeakVerdict]) -> str:
    """A chart legend entry: ``label``, plus ``(leak: 2.0 KiB/s)`` when ``verdict`` is a leak."""
    if verdict is None or not verdict.leaking:
        return label
    return f"{label} (leak: {format_rate(verdict.slope_bytes_per_s)})"


def _growth_rate(verdict: Optional[LeakVerdict]) -> Optional[float]:
    """The verdict's Theil–Sen slope, or None when the series was too short to fit one."""
    if verdict is None or verdict.window_s == 0.0:
        return None
    return verdict.slope_bytes_per_s


def report_title(meta: Mapping[str, object]) -> str:
    """``alloccount report: <command> (pid N)`` with whatever the meta provides."""
    title = "alloccount report"
    command = meta.get("command")
    if command:
        # The monitor may record argv as a list; show it as a shell would.
        title += ": " + (shlex.join(command) if isinstance(command, (list, tuple)) else str(command))
    if meta.get("pid") is not None:
        title += f" (pid {meta['pid']})"
    return title


def _utc(epoch_s: float) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    moment = datetime.datetime.fromtimestamp(epoch_s, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
