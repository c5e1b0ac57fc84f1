"""The Prometheus exporter, scraped for real: an HTTP server on 127.0.0.1, urllib over a socket,
and prometheus_client's own parsers reading what a Prometheus server would read."""
from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Set

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

import alloccount
from alloccount.history import History, Sample
from alloccount.leaks import CATEGORY_PREFIX, LeakVerdict, detect_leaks
from alloccount.monitor import MONITOR_CATEGORY, Monitor
from alloccount.prometheus import AllocCountCollector, MetricsServer, start_http_server

pytestmark = pytest.mark.timeout(60)

COUNTERS = (
    "alloccount_allocations_total",
    "alloccount_frees_total",
    "alloccount_allocated_bytes_total",
    "alloccount_freed_bytes_total",
)
GAUGES = ("alloccount_used_bytes", "alloccount_peak_bytes")
GLOBAL_PEAK = "alloccount_global_peak_bytes"
LEAK_FAMILIES = ("alloccount_leak_suspected", "alloccount_leak_slope_bytes_per_second")
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class Scrape(NamedTuple):
    """One parsed scrape: the family names, each sample name's family type, its values by category."""

    families: Set[str]
    types: Dict[str, str]
    values: Dict[str, Dict[Optional[str], float]]  # sample name -> {category label or None: value}

    def sum(self, name: str) -> float:
        return sum(self.values[name].values())


def fetch(server: MetricsServer, accept: Optional[str] = None) -> "tuple[str, str]":
    """GET the endpoint over a real socket; return (content type, body)."""
    request = urllib.request.Request(server.url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode("utf-8")


def scrape(server: MetricsServer) -> Scrape:
    """Scrape in the Prometheus text format and parse it with prometheus_client's parser."""
    _, body = fetch(server)
    families: Set[str] = set()
    types: Dict[str, str] = {}
    values: Dict[str, Dict[Optional[str], float]] = {}
    for family in text_string_to_metric_families(body):
        families.add(family.name)
        for sample in family.samples:
            types[sample.name] = family.type
            values.setdefault(sample.name, {})[sample.labels.get("category")] = sample.value
    return Scrape(families, types, values)


@pytest.fixture
def serve() -> Iterator[Callable[..., MetricsServer]]:
    """start_http_server on 127.0.0.1, port 0; every server started is closed at the end."""
    servers: List[MetricsServer] = []

    def start(**kwargs: object) -> MetricsServer:
        server = start_http_server(0, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def hold(category_name: str, n: int = 200, size: int = 1000) -> list:
    """``n`` buffers of ``size`` bytes allocated in a category, kept alive by the caller."""
    with alloccount.category(category_name):
        return [bytearray(size) for _ in range(n)]


# --- what is exposed ------------------------------------------------------------------------


def test_without_a_monitor_the_endpoint_exposes_the_counters_per_category_and_no_verdicts(exact, serve):
    # GIVEN a server over a running engine and allocations in a category
    server = serve()
    kept = hold("prom-names")
    # WHEN it is scraped
    result = scrape(server)
    # THEN exactly the families are there, with their types, plus the global peak
    assert result.types == {
        **{name: "counter" for name in COUNTERS},
        **{name: "gauge" for name in GAUGES},
        GLOBAL_PEAK: "gauge",
    }
    # AND every per-category sample is labelled with its category, the global peak with none
    for name in COUNTERS + GAUGES:
        assert {"<uncategorized>", "prom-names"} <= set(result.values[name])
        assert None not in result.values[name]
    assert set(result.values[GLOBAL_PEAK]) == {None}
    del kept


def test_the_exposition_is_valid_openmetrics_with_units(exact, serve):
    # GIVEN a server; WHEN it is scraped as a Prometheus server does (OpenMetrics preferred)
    content_type, body = fetch(serve(), accept=OPENMETRICS)
    # THEN the OpenMetrics parser (which checks names, units and the closing # EOF) accepts it
    assert content_type.startswith("application/openmetrics-text")
    families = {family.name: family for family in parse_openmetrics(body)}
    # AND counters carry the _total sample suffix, byte families the bytes unit
    assert {sample.name for sample in families["alloccount_allocations"].samples} == {"alloccount_allocations_total"}
    assert families["alloccount_allocated_bytes"].unit == "bytes"
    assert families["alloccount_used_bytes"].unit == "bytes"
    assert families["alloccount_allocations"].unit == ""


def test_growth_in_a_category_is_visible_between_two_scrapes(exact, serve):
    # GIVEN a server and a first scrape
    server = serve()
    before = scrape(server)
    base = before.values["alloccount_used_bytes"].get("prom-orders", 0.0)
    # WHEN 200 buffers of 1000 bytes are allocated in "prom-orders" and kept
    orders = hold("prom-orders", 200, 1000)
    grown = scrape(server)
    # THEN the category's bytes in use, bytes allocated and allocations grew by that much
    used = grown.values["alloccount_used_bytes"]["prom-orders"]
    assert 200_000 <= used - base < 220_000
    allocated_before = before.values["alloccount_allocated_bytes_total"].get("prom-orders", 0.0)
    assert grown.values["alloccount_allocated_bytes_total"]["prom-orders"] - allocated_before >= 200_000
    assert grown.values["alloccount_allocations_total"]["prom-orders"] >= 200
    assert grown.values["alloccount_peak_bytes"]["prom-orders"] >= used
    # AND no counter went down between the scrapes, in any category
    for name in COUNTERS:
        for category_name, value in before.values[name].items():
            assert grown.values[name][category_name] >= value, (name, category_name)

    # WHEN the buffers are freed
    del orders
    freed = scrape(server)
    # THEN the frees show and the bytes in use fall back, while the peak keeps the high-water mark
    freed_bytes = freed.values["alloccount_freed_bytes_total"]["prom-orders"]
    assert freed_bytes - grown.values["alloccount_freed_bytes_total"]["prom-orders"] >= 200_000
    assert freed.values["alloccount_frees_total"]["prom-orders"] >= 200
    assert freed.values["alloccount_used_bytes"]["prom-orders"] - base < 10_000
    assert freed.values["alloccount_peak_bytes"]["prom-orders"] >= used


def test_sums_over_categories_are_the_process_totals_and_the_global_peak_is_the_engines(exact, serve):
    # GIVEN a server, and two categories that each held 1 MB, one after the other: the process
    # peak rose by about 1 MB, the sum of the two category peaks by about 2 MB
    server = serve()
    released = hold("prom-sum-a", 1000, 1000)
    del released
    kept = hold("prom-sum-b", 1000, 1000)
    # WHEN the engine's own totals are read just before and just after a scrape
    first = alloccount.stats()
    result = scrape(server)
    last = alloccount.stats()
    # THEN each summed counter lies between them (the scrape reads every category at one instant)
    assert first.allocations <= result.sum("alloccount_allocations_total") <= last.allocations
    assert first.frees <= result.sum("alloccount_frees_total") <= last.frees
    assert first.bytes_allocated <= result.sum("alloccount_allocated_bytes_total") <= last.bytes_allocated
    assert first.bytes_freed <= result.sum("alloccount_freed_bytes_total") <= last.bytes_freed
    # AND the global peak is the engine's, which the sum of category peaks is not
    assert first.peak_bytes <= result.values[GLOBAL_PEAK][None] <= last.peak_bytes
    assert result.values[GLOBAL_PEAK][None] >= result.sum("alloccount_used_bytes")
    del kept


def test_counts_mode_leaves_out_the_figures_it_does_not_keep(serve):
    # GIVEN the engine in counts mode (no pointer table: frees have no size and no category)
    alloccount.start(mode="counts")
    kept = hold("prom-counts", 100, 1000)
    # WHEN scraped
    result = scrape(serve())
    # THEN only the allocation counters are there: frees, bytes in use and peaks are absent, not 0
    # (not even as an empty family)
    assert result.families == {"alloccount_allocations", "alloccount_allocated_bytes"}
    assert set(result.types) == {"alloccount_allocations_total", "alloccount_allocated_bytes_total"}
    assert result.values["alloccount_allocated_bytes_total"]["prom-counts"] >= 100_000
    del kept


def test_the_servers_own_allocations_are_in_the_alloccount_category(exact, serve):
    # GIVEN a server scraped once
    server = serve()
    first = scrape(server)
    # WHEN scraped again
    second = scrape(server)
    # THEN the first scrape's work (request, collection, reply) was charged to "<alloccount>"
    allocations = "alloccount_allocations_total"
    assert second.values[allocations][MONITOR_CATEGORY] - first.values[allocations].get(MONITOR_CATEGORY, 0) >= 50


def test_category_names_are_escaped_in_label_values(exact, serve):
    # GIVEN a category whose name holds a quote, a backslash and a newline
    name = 'desk "A"\\north\nside'
    kept = hold(name, 10, 1000)
    # WHEN scraped; THEN the parser reads the name back unchanged
    assert scrape(serve()).values["alloccount_used_bytes"][name] >= 10_000
    del kept


# --- leak verdicts --------------------------------------------------------------------------


def service_history(samples: int = 400, seed: int = 7) -> History:
    """A run sampled every second: "orders" leaks 2 KB/s, "prices" swings in a bounded band,
    RSS stays flat within noise, and the total is their sum."""
    noise = random.Random(seed)
    history = History(maxlen=None)
    for i in range(samples):
        curves = {
            "orders": 1_000_000 + 2_000 * i + noise.randint(0, 20_000),
            "prices": 3_000_000 + (i % 60) * 10_000 + noise.randint(0, 20_000),
        }
        total = sum(curves.values())
        history.append(
            Sample(
                t_s=float(i),
                wall_time=1.7e9 + i,
                current_bytes=total,
                peak_bytes=total,
                allocations=10 * i,
                frees=9 * i,
                rss_bytes=60_000_000 + noise.randint(0, 500_000),
                categories={
                    name: {
                        "current_bytes": value, "peak_bytes": value, "allocations": i,
                        "frees": i, "bytes_allocated": value, "bytes_freed": 0,
                    }  # fmt: skip
                    for name, value in curves.items()
                },
            )
        )
    return history


class HistoryVerdicts:
    """A monitor's stand-in: real :func:`detect_leaks` verdicts over a real :class:`History`.

    ``plain_names`` keys categories by their bare name, as ``Monitor.verdicts()`` may, instead of
    detect_leaks' ``"category:<name>"``.
    """

    def __init__(self, history: History, plain_names: bool) -> None:
        self.history = history
        self.plain_names = plain_names

    def verdicts(self) -> Mapping[str, LeakVerdict]:
        verdicts = detect_leaks(self.history)
        if not self.plain_names:
            return verdicts
        prefix = len(CATEGORY_PREFIX)
        return {key[prefix:] if key.startswith(CATEGORY_PREFIX) else key: verdict for key, verdict in verdicts.items()}


@pytest.mark.parametrize("plain_names", [False, True], ids=["detect_leaks-keys", "plain-category-keys"])
def test_leak_verdicts_are_gauges_per_category_with_total_and_rss_rows(exact, serve, plain_names):
    # GIVEN a monitor whose history has a leaking category and a bounded one
    monitor = HistoryVerdicts(service_history(), plain_names)
    verdicts = detect_leaks(monitor.history)
    assert verdicts[CATEGORY_PREFIX + "orders"].leaking and not verdicts[CATEGORY_PREFIX + "prices"].leaking
    assert verdicts["total"].leaking and not verdicts["rss"].leaking
    # WHEN the endpoint is scraped
    result = scrape(serve(monitor=monitor))
    # THEN the verdicts are 1/0 gauges labelled by category, whole-process series in brackets
    assert result.types["alloccount_leak_suspected"] == "gauge"
    assert result.values["alloccount_leak_suspected"] == {"orders": 1.0, "prices": 0.0, "<total>": 1.0, "<rss>": 0.0}
    # AND the slopes are the verdicts' own, to the last bit (the exposition round-trips floats)
    assert result.values["alloccount_leak_slope_bytes_per_second"] == {
        "orders": verdicts[CATEGORY_PREFIX + "orders"].slope_bytes_per_s,
        "prices": verdicts[CATEGORY_PREFIX + "prices"].slope_bytes_per_s,
        "<total>": verdicts["total"].slope_bytes_per_s,
        "<rss>": verdicts["rss"].slope_bytes_per_s,
    }
    assert 1_800 < result.values["alloccount_leak_slope_bytes_per_second"]["orders"] < 2_200


def test_a_running_monitors_verdicts_are_served_as_it_holds_them(exact, serve):
    # GIVEN a real Monitor sampling a category that grows steadily, with its verdicts checked
    leaked = []
    with Monitor(interval=0.01, check_every=10, leak_options={"min_samples": 20, "warmup": 5}) as monitor:
        server = serve(monitor=monitor)
        for _ in range(60):
            leaked.append(hold("prom-monitored", 10, 1000))
            time.sleep(0.01)
    verdicts = monitor.verdicts()  # stop() ran a last check; the verdicts no longer change
    # WHEN the endpoint is scraped
    result = scrape(server)
    # THEN it serves exactly the monitor's verdicts, whole-process series and categories alike
    expected = {
        "<total>": verdicts["total"],
        "<rss>": verdicts["rss"],
        "prom-monitored": verdicts[CATEGORY_PREFIX + "prom-monitored"],
    }
    assert expected["prom-monitored"].leaking
    for label, verdict in expected.items():
        assert result.values["alloccount_leak_suspected"][label] == (1.0 if verdict.leaking else 0.0)
        assert result.values["alloccount_leak_slope_bytes_per_second"][label] == verdict.slope_bytes_per_s
    assert len(result.values["alloccount_leak_suspected"]) == len(verdicts)
    del leaked


def test_a_monitor_without_verdicts_is_refused_at_start():
    with pytest.raises(TypeError, match=r"verdicts\(\)"):
        start_http_server(0, monitor=object())  # type: ignore[arg-type]


# --- the server -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "error"),
    [
        (True, TypeError), ("8000", TypeError), (8000.0, TypeError), (None, TypeError),
        (-1, ValueError), (65_536, ValueError),
    ],  # fmt: skip
)
def test_a_bad_port_is_refused_with_a_clear_error(port, error):
    with pytest.raises(error, match=r"port must be .*0\.\.65535"):
        start_http_server(port)


@pytest.mark.parametrize(("addr", "error"), [("", ValueError), (127, TypeError), (None, TypeError)])
def test_a_bad_address_is_refused_with_a_clear_error(addr, error):
    with pytest.raises(error, match="addr"):
        start_http_server(0, addr=addr)


def test_port_0_binds_a_free_loopback_port_and_reports_it(serve):
    server = serve()
    assert server.address == "127.0.0.1"
    assert 0 < server.port < 65_536
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"


def test_a_taken_port_raises_oserror_naming_it_and_leaves_the_registry_alone(serve):
    # GIVEN a port already served, and a registry of the service's own
    taken = serve().port
    registry = CollectorRegistry()
    # WHEN a second server asks for that port
    with pytest.raises(OSError, match=f"127.0.0.1 port {taken}"):
        start_http_server(taken, registry=registry)
    # THEN the registry did not get a collector it would keep without a server
    assert list(registry.collect()) == []


def test_servers_get_a_fresh_registry_each_so_two_can_run(exact, serve):
    first, second = serve(), serve()
    assert "alloccount_used_bytes" in scrape(first).values
    assert "alloccount_used_bytes" in scrape(second).values


def test_a_given_registry_serves_the_services_metrics_and_alloccounts_once(exact, serve):
    # GIVEN a service registry with a metric of its own
    registry = CollectorRegistry()
    Counter("orders_filled", "Orders filled.", registry=registry).inc(3)
    # WHEN alloccount is served from it
    result = scrape(serve(registry=registry))
    # THEN both are on the one endpoint
    assert result.values["orders_filled_total"] == {None: 3.0}
    assert "alloccount_used_bytes" in result.values
    # AND registering alloccount a second time on it is refused (duplicate names)
    with pytest.raises(ValueError, match="Duplicated"):
        start_http_server(0, registry=registry)


def test_the_collector_registers_on_any_registry_and_describes_its_families():
    collector = AllocCountCollector(monitor=HistoryVerdicts(History(), plain_names=False))
    CollectorRegistry().register(collector)
    described = {family.name for family in collector.describe()}
    assert described == {
        "alloccount_allocations", "alloccount_frees", "alloccount_allocated_bytes", "alloccount_freed_bytes",
        "alloccount_used_bytes", "alloccount_peak_bytes", GLOBAL_PEAK, *LEAK_FAMILIES,
    }  # fmt: skip


def test_close_stops_serving_and_releases_the_port():
    # GIVEN a running server
    server = start_http_server(0)
    port = server.port
    assert server.thread.is_alive()
    # WHEN it is closed (twice: the CLI's finally and a context manager may both do it)
    server.close()
    server.close()
    # THEN its thread is gone, nothing answers on the port, and the port can be bound again
    assert not server.thread.is_alive()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=5)
    with start_http_server(port) as again:
        assert again.port == port
    assert not again.thread.is_alive()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_loopback_address_is_served_with_a_bracketed_url(exact, serve):
    server = serve(addr="::1")
    assert server.url == f"http://[::1]:{server.port}/metrics"
    assert "alloccount_used_bytes" in scrape(server).values


def test_without_prometheus_client_the_import_error_names_the_extra():
    # GIVEN an interpreter where prometheus_client cannot be imported (None in sys.modules)
    script = "import sys; sys.modules['prometheus_client'] = None; import alloccount.prometheus"
    # WHEN alloccount.prometheus is imported
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    # THEN it fails with an ImportError that says how to install it
    assert out.returncode != 0
    assert "ImportError: alloccount.prometheus needs prometheus_client" in out.stderr
    assert "alloccount[prometheus]" in out.stderr


# --- the documentation's Prometheus configuration -------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "prometheus.md"

# promtool unit test of docs/prometheus.md's alerting rules on made-up series.
RULES_TEST = """
rule_files: [alloccount-rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'alloccount_leak_suspected{job="bot",instance="h:8000",category="orders"}'
        values: '0x10 1x30'
      - series: 'alloccount_leak_slope_bytes_per_second{job="bot",instance="h:8000",category="orders"}'
        values: '2048x40'
      - series: 'alloccount_leak_suspected{job="bot",instance="h:8000",category="<rss>"}'
        values: '0x40'
      - series: 'alloccount_leak_slope_bytes_per_second{job="bot",instance="h:8000",category="<rss>"}'
        values: '30x40'
    alert_rule_test:
      - {eval_time: 20m, alertname: AllocCountLeakSuspected, exp_alerts: []}
      - eval_time: 30m
        alertname: AllocCountLeakSuspected
        exp_alerts:
          - exp_labels: {severity: warning, job: bot, instance: "h:8000", category: orders}
            exp_annotations:
              summary: "bot: memory leak suspected in orders"
              description: "alloccount's monitor finds orders on h:8000 growing without bound at 2kiB/s."
  - interval: 1m
    input_series:
      # a leak of 2 KiB/s (120 KiB a minute) for 8 hours
      - series: 'alloccount_used_bytes{job="bot",instance="h:8000",category="orders"}'
        values: '0+122880x480'
      # a cache warmed once: +50 MB at 2 h, flat after
      - series: 'alloccount_used_bytes{job="bot",instance="h:8000",category="prices"}'
        values: '5000000x120 55000000x360'
    alert_rule_test:
      - {eval_time: 50m, alertname: AllocCountCategoryGrowing, exp_alerts: []}
      - eval_time: 2h45m
        alertname: AllocCountCategoryGrowing
        exp_alerts:
          - exp_labels: {severity: info, job: bot, instance: "h:8000", category: orders}
            exp_annotations:
              summary: "bot: orders keeps growing"
              description: "orders on h:8000 grew at 2kiB/s over the last 6 hours."
"""


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_the_documented_scrape_config_and_alerting_rules_pass_promtool(tmp_path):
    # GIVEN the two YAML files of docs/prometheus.md (scrape config, then rules)
    config, rules = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    (tmp_path / "prometheus.yml").write_text(config)
    (tmp_path / "alloccount-rules.yml").write_text(rules)
    (tmp_path / "rules_test.yml").write_text(RULES_TEST)
    # WHEN promtool checks the config and runs the rules' unit test
    checks = [["check", "config", "prometheus.yml"], ["test", "rules", "rules_test.yml"]]
    results = [
        subprocess.run(["promtool", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60) for args in checks
    ]
    # THEN both pass: the leak alert fires on the verdict only, with its slope; the fallback
    # fires on steady growth and not on a one-off step
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
