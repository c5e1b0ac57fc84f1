"""OpenTelemetry metrics: alloccount's counters per category, and the leak verdicts.

The same figures as :mod:`alloccount.prometheus`, named in OpenTelemetry's style and read by
asynchronous (observable) instruments whenever the SDK collects::

    from opentelemetry.sdk.metrics import MeterProvider
    import alloccount, alloccount.otel
    alloccount.start()
    alloccount.otel.register_metrics(provider)          # or the global provider by default

Needs only ``opentelemetry-api`` (``pip install 'alloccount[otel]'``); the application brings the
SDK and its exporter, as OpenTelemetry asks of libraries.

- Counters ``alloccount.memory.allocations`` (``{allocation}``), ``alloccount.memory.frees``
  (``{free}``), ``alloccount.memory.allocated`` and ``alloccount.memory.freed`` (``By``);
- UpDownCounter ``alloccount.memory.used`` and Gauge ``alloccount.memory.peak`` (``By``);
- Gauge ``alloccount.memory.global_peak`` (``By``): the high-water mark of all bytes in use;
- with a monitor, Gauges ``alloccount.leak.suspected`` (``1``: 1 for a leak verdict, else 0)
  and ``alloccount.leak.slope`` (``By/s``).

Every instrument but ``alloccount.memory.global_peak`` has the attribute
``alloccount.category``. Bytes in use are an UpDownCounter because they add up across
categories (OpenTelemetry's rule for "sum over attributes is meaningful"); a peak does not, so
it is a Gauge, and the process peak has its own instrument. The conventions (no total row, the
``"<total>"``/``"<rss>"`` verdict rows, figures absent rather than 0 in counts mode) are those
of the Prometheus exporter. Each instrument reads the counters in its own callback, so two
instruments of one collection may be microseconds apart.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Instrument, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "alloccount.otel needs the OpenTelemetry API; install it with: pip install 'alloccount[otel]'"
    ) from exc

from . import __version__
from ._export import VerdictSource, checked_verdict_source, read_figures, verdict_rows

__all__ = ["CATEGORY_ATTRIBUTE", "register_metrics"]

#: Attribute naming the category of a data point.
CATEGORY_ATTRIBUTE = "alloccount.category"

_Callback = Callable[[CallbackOptions], Iterable[Observation]]

# One row per per-category instrument: (name, Stats field, kind, unit, description).
_PER_CATEGORY: Tuple[Tuple[str, str, str, str, str], ...] = (
    (
        "alloccount.memory.allocations", "allocations", "counter", "{allocation}",
        "Blocks allocated since alloccount.start().",
    ),
    ("alloccount.memory.frees", "frees", "counter", "{free}", "Frees of blocks allocated since alloccount.start()."),
    (
        "alloccount.memory.allocated", "bytes_allocated", "counter", "By",
        "Bytes requested by allocations and reallocs since alloccount.start().",
    ),
    (
        "alloccount.memory.freed", "bytes_freed", "counter", "By",
        "Bytes of tracked blocks freed (a realloc frees the old size) since alloccount.start().",
    ),
    (
        "alloccount.memory.used", "current_bytes", "updowncounter", "By",
        "Bytes in live blocks allocated since alloccount.start().",
    ),
    (
        "alloccount.memory.peak", "peak_bytes", "gauge", "By",
        "High-water mark of alloccount.memory.used in the category.",
    ),
)  # fmt: skip


def register_metrics(
    meter_provider: Optional[MeterProvider] = None, *, monitor: Optional[VerdictSource] = None
) -> List[Instrument]:
    """Create alloccount's observable instruments on a meter of ``meter_provider``; return them.

    ``meter_provider`` defaults to the global one (:func:`opentelemetry.metrics.get_meter_provider`).
    With a ``monitor`` (any object with a ``verdicts()`` method, e.g. ``alloccount.Monitor``),
    ``alloccount.leak.suspected`` and ``alloccount.leak.slope`` are added; each collection calls
    ``monitor.verdicts()`` once per instrument. TypeError if ``monitor`` has no ``verdicts()``.
    OpenTelemetry has no way to remove an instrument: call this once per provider.
    """
    monitor = checked_verdict_source(monitor)
    meter = metrics.get_meter("alloccount", __version__, meter_provider=meter_provider)
    create = {
        "counter": meter.create_observable_counter,
        "updowncounter": meter.create_observable_up_down_counter,
        "gauge": meter.create_observable_gauge,
    }
    instruments: List[Instrument] = [
        create[kind](name, callbacks=[_per_category(field)], unit=unit, description=description)
        for name, field, kind, unit, description in _PER_CATEGORY
    ]
    instruments.append(
        meter.create_observable_gauge(
            "alloccount.memory.global_peak",
            callbacks=[_global_peak],
            unit="By",
            description="High-water mark of all tracked bytes in use (of their sum, not a sum of category peaks).",
        )
    )
    if monitor is not None:
        instruments.append(
            meter.create_observable_gauge(
                "alloccount.leak.suspected",
                callbacks=[_leak_suspected(monitor)],
                unit="1",
                description="1 if the monitor judges the series to grow without bound, else 0.",
            )
        )
        instruments.append(
            meter.create_observable_gauge(
                "alloccount.leak.slope",
                callbacks=[_leak_slope(monitor)],
                unit="By/s",
                description="Theil-Sen slope of the series over the monitor's window, whatever the verdict.",
            )
        )
    return instruments


def _per_category(field: str) -> _Callback:
    """A callback observing one Stats field of every category that has it (None: skipped)."""

    def observe(options: CallbackOptions) -> List[Observation]:
        _, per_category = read_figures()
        return [
            Observation(getattr(stats, field), {CATEGORY_ATTRIBUTE: name})
            for name, stats in per_category.items()
            if getattr(stats, field) is not None
        ]

    return observe


def _global_peak(options: CallbackOptions) -> List[Observation]:
    """The process peak, or nothing in counts mode."""
    total, _ = read_figures()
    return [] if total.peak_bytes is None else [Observation(total.peak_bytes)]


def _leak_suspected(monitor: VerdictSource) -> _Callback:
    """A callback observing 1 for each series the monitor calls a leak, 0 for the others."""

    def observe(options: CallbackOptions) -> List[Observation]:
        return [
            Observation(1 if verdict.leaking else 0, {CATEGORY_ATTRIBUTE: label})
            for label, verdict in verdict_rows(monitor)
        ]

    return observe


def _leak_slope(monitor: VerdictSource) -> _Callback:
    """A callback observing the slope of each series the monitor judges."""

    def observe(options: CallbackOptions) -> List[Observation]:
        return [
            Observation(verdict.slope_bytes_per_s, {CATEGORY_ATTRIBUTE: label})
            for label, verdict in verdict_rows(monitor)
        ]

    return observe
