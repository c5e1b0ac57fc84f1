"""What the metric exporters (:mod:`alloccount.prometheus`, :mod:`alloccount.otel`) share.

Both read the same figures and follow the same conventions, so a dashboard built on one reads
the other the same way:

- **Per category, no total row.** Allocations, frees, bytes allocated and freed, and bytes in
  use of all categories sum to the process-wide figures (read at one instant, so exactly), so a
  total row would only make ``sum()`` count everything twice. The one figure that does not sum
  is the peak: the process peak is the high-water mark of the *sum*, which no per-category peak
  gives, so it is exported on its own, without a category.
- **Leak verdicts** are keyed like :func:`alloccount.leaks.detect_leaks`: the whole-process
  series ``"total"`` and ``"rss"`` become the category values :data:`TOTAL_SERIES` and
  :data:`RSS_SERIES` (angle brackets, like ``"<uncategorized>"``, keep them apart from the
  names code uses), ``"category:<name>"`` becomes ``<name>``.
- **A figure the engine does not have is left out** (counts mode has no frees per category and no
  bytes in use), never exported as a 0 that a graph would take for a real reading.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Protocol, Tuple

from ._core import Stats
from .categories import _category_totals
from .history import TOTAL_ROW
from .leaks import CATEGORY_PREFIX, LeakVerdict

__all__ = ["RSS_SERIES", "TOTAL_SERIES", "VerdictSource", "checked_verdict_source", "read_figures", "verdict_rows"]


class VerdictSource(Protocol):
    """Anything with a ``verdicts()`` method, e.g. ``alloccount.Monitor``."""

    def verdicts(self) -> Mapping[str, LeakVerdict]:
        """Leak verdicts keyed ``"total"``, ``"rss"`` and by category (see :func:`verdict_rows`)."""


#: Category value of the verdict on all tracked bytes in use (the history CSV's total row name).
TOTAL_SERIES = TOTAL_ROW
#: Category value of the verdict on the resident set size.
RSS_SERIES = "<rss>"
_WHOLE_PROCESS_SERIES = {"total": TOTAL_SERIES, "rss": RSS_SERIES}


def read_figures() -> Tuple[Stats, Dict[str, Stats]]:
    """Return the process-wide :class:`Stats` and each category's, read at one instant."""
    return _category_totals()


def checked_verdict_source(monitor: object) -> Optional[VerdictSource]:
    """Return ``monitor`` if it is ``None`` or has a callable ``verdicts``; TypeError otherwise.

    Checked when the exporter is built, so a wrong argument fails at start-up rather than at
    the first scrape, hours later.
    """
    if monitor is not None and not callable(getattr(monitor, "verdicts", None)):
        raise TypeError(
            f"monitor must have a verdicts() method returning {{name: LeakVerdict}} "
            f"(e.g. alloccount.Monitor), got {type(monitor).__name__}"
        )
    return monitor  # type: ignore[return-value]  # checked structurally above


def verdict_rows(monitor: VerdictSource) -> List[Tuple[str, LeakVerdict]]:
    """``(category value, verdict)`` for each of ``monitor.verdicts()``, in key order.

    Keys are mapped as the module documentation says; a key that is neither a whole-process
    series nor prefixed is taken as a category name as it stands.
    """
    rows = []
    for key, verdict in sorted(monitor.verdicts().items()):
        if key in _WHOLE_PROCESS_SERIES:
            label = _WHOLE_PROCESS_SERIES[key]
        elif key.startswith(CATEGORY_PREFIX):
            label = key[len(CATEGORY_PREFIX):]
        else:
            label = key
        rows.append((label, verdict))
    return rows
