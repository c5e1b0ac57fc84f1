"""The OpenTelemetry instruments, collected by the SDK's InMemoryMetricReader."""
from __future__ import annotations

import logging
import subprocess
import sys
from typing import Dict, Mapping, NamedTuple, Optional

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the OpenTelemetry SDK is in the test extra")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum  # noqa: E402

import alloccount  # noqa: E402
from alloccount.history import History, Sample  # noqa: E402
from alloccount.leaks import LeakVerdict, detect_leaks  # noqa: E402
from alloccount.otel import CATEGORY_ATTRIBUTE, register_metrics  # noqa: E402

pytestmark = pytest.mark.timeout(60)

# instrument -> (data type, monotonic for sums, unit)
PER_CATEGORY = {
    "alloccount.memory.allocations": (Sum, True, "{allocation}"),
    "alloccount.memory.frees": (Sum, True, "{free}"),
    "alloccount.memory.allocated": (Sum, True, "By"),
    "alloccount.memory.freed": (Sum, True, "By"),
    "alloccount.memory.used": (Sum, False, "By"),
    "alloccount.memory.peak": (Gauge, None, "By"),
}


class Collection(NamedTuple):
    """One collection: each instrument's data and unit, and its values by category."""

    data: Dict[str, object]
    units: Dict[str, str]
    values: Dict[str, Dict[Optional[str], float]]  # instrument -> {category or None: value}


def collect(reader: InMemoryMetricReader) -> Collection:
    data: Dict[str, object] = {}
    units: Dict[str, str] = {}
    values: Dict[str, Dict[Optional[str], float]] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        # Only alloccount's scope: some SDK versions add their own self-monitoring metrics.
        for scope in (scope for scope in resource.scope_metrics if scope.scope.name == "alloccount"):
            for metric in scope.metrics:
                data[metric.name], units[metric.name] = metric.data, metric.unit
                values[metric.name] = {
                    (point.attributes or {}).get(CATEGORY_ATTRIBUTE): point.value for point in metric.data.data_points
                }
    return Collection(data, units, values)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """A reader on a fresh provider with alloccount's instruments (no monitor)."""
    reader = InMemoryMetricReader()
    register_metrics(MeterProvider(metric_readers=[reader]))
    return reader


def hold(category_name: str, n: int = 200, size: int = 1000) -> list:
    with alloccount.category(category_name):
        return [bytearray(size) for _ in range(n)]


def test_instruments_have_their_kinds_units_and_a_category_attribute(exact, reader):
    # GIVEN allocations in a category; WHEN the SDK collects
    kept = hold("otel-kinds")
    result = collect(reader)
    # THEN every instrument is there with its kind and unit, per category, plus the global peak
    assert set(result.data) == set(PER_CATEGORY) | {"alloccount.memory.global_peak"}
    for name, (data_type, monotonic, unit) in PER_CATEGORY.items():
        assert isinstance(result.data[name], data_type), name
        if monotonic is not None:
            assert result.data[name].is_monotonic is monotonic, name
        assert result.units[name] == unit
        assert {"<uncategorized>", "otel-kinds"} <= set(result.values[name]), name
    assert set(result.values["alloccount.memory.global_peak"]) == {None}
    del kept


def test_growth_in_a_category_is_visible_between_two_collections(exact, reader):
    # GIVEN a first collection
    base = collect(reader).values["alloccount.memory.used"].get("otel-orders", 0)
    # WHEN 200 buffers of 1000 bytes are allocated in "otel-orders" and kept
    orders = hold("otel-orders")
    grown = collect(reader)
    # THEN its bytes in use grew by that much, and the counters show the allocations
    assert 200_000 <= grown.values["alloccount.memory.used"]["otel-orders"] - base < 220_000
    assert grown.values["alloccount.memory.allocated"]["otel-orders"] >= 200_000
    assert grown.values["alloccount.memory.allocations"]["otel-orders"] >= 200
    # WHEN they are freed; THEN the frees show and the bytes in use fall back
    del orders
    freed = collect(reader)
    assert freed.values["alloccount.memory.freed"]["otel-orders"] >= 200_000
    assert freed.values["alloccount.memory.used"]["otel-orders"] - base < 10_000
    assert freed.values["alloccount.memory.global_peak"][None] >= base + 200_000


def test_counts_mode_leaves_out_the_figures_it_does_not_keep(reader, caplog):
    # GIVEN the engine in counts mode (no frees per category, no bytes in use, no peaks)
    alloccount.start(mode="counts")
    kept = hold("otel-counts", 100, 1000)
    # WHEN collected
    with caplog.at_level(logging.WARNING):
        result = collect(reader)
    # THEN only the allocation counters are there, and no callback failed on a missing figure
    assert set(result.data) == {"alloccount.memory.allocations", "alloccount.memory.allocated"}
    assert caplog.records == []
    assert result.values["alloccount.memory.allocated"]["otel-counts"] >= 100_000
    del kept


def leaking_orders_history(samples: int = 200) -> History:
    """A run sampled every second: "orders" leaks 1 KB/s, "prices" alternates in a band, RSS is flat."""
    history = History(maxlen=None)
    for i in range(samples):
        curves = {"orders": 1_000_000 + 1_000 * i, "prices": 2_000_000 + (i % 2) * 50_000}
        total = sum(curves.values())
        categories = {
            name: {
                "current_bytes": value, "peak_bytes": value, "allocations": i,
                "frees": i, "bytes_allocated": value, "bytes_freed": 0,
            }  # fmt: skip
            for name, value in curves.items()
        }
        history.append(
            Sample(
                t_s=float(i), wall_time=1.7e9 + i, current_bytes=total, peak_bytes=total,
                allocations=i, frees=i, rss_bytes=50_000_000, categories=categories,
            )  # fmt: skip
        )
    return history


class HistoryVerdicts:
    """A monitor's stand-in: real detect_leaks verdicts over a real History."""

    def __init__(self, history: History) -> None:
        self.history = history

    def verdicts(self) -> Mapping[str, LeakVerdict]:
        return detect_leaks(self.history)


def test_leak_verdicts_are_gauges_per_category_with_total_and_rss_rows():
    # GIVEN instruments registered with a monitor
    monitor = HistoryVerdicts(leaking_orders_history())
    reader = InMemoryMetricReader()
    register_metrics(MeterProvider(metric_readers=[reader]), monitor=monitor)
    # WHEN collected
    result = collect(reader)
    # THEN the verdicts and slopes are there, labelled like the Prometheus exporter's
    assert result.values["alloccount.leak.suspected"] == {"orders": 1, "prices": 0, "<total>": 1, "<rss>": 0}
    assert result.values["alloccount.leak.slope"]["orders"] == pytest.approx(1_000)
    assert result.units["alloccount.leak.slope"] == "By/s"
    assert isinstance(result.data["alloccount.leak.suspected"], Gauge)


def test_a_monitor_without_verdicts_is_refused():
    with pytest.raises(TypeError, match=r"verdicts\(\)"):
        register_metrics(MeterProvider(), monitor=object())  # type: ignore[arg-type]


def test_without_opentelemetry_the_import_error_names_the_extra():
    script = "import sys; sys.modules['opentelemetry'] = None; import alloccount.otel"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "ImportError: alloccount.otel needs the OpenTelemetry API" in out.stderr
    assert "alloccount[otel]" in out.stderr
