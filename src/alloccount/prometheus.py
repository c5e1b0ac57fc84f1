"""Prometheus exporter: alloccount's counters per category, and the leak verdicts, on ``/metrics``.

Serve them from a background thread::

    import alloccount, alloccount.prometheus
    alloccount.start()
    server = alloccount.prometheus.start_http_server(8000)   # 127.0.0.1 unless addr= says otherwise
    ...
    server.close()

or add :class:`AllocCountCollector` to a registry the service already exposes. Families (byte
figures in bytes; docs/prometheus.md has queries and alerts):

- counters ``alloccount_allocations_total``, ``alloccount_frees_total``,
  ``alloccount_allocated_bytes_total``, ``alloccount_freed_bytes_total`` and gauges
  ``alloccount_used_bytes``, ``alloccount_peak_bytes``, each with a ``category`` label;
- ``alloccount_global_peak_bytes``, no label: the high-water mark of all bytes in use;
- with a monitor, ``alloccount_leak_suspected`` (1/0) and
  ``alloccount_leak_slope_bytes_per_second`` with a ``category`` label, whose values include
  ``"<total>"`` and ``"<rss>"`` for the whole-process verdicts.

There is no total row: summing over ``category`` gives the process-wide figure exactly, except
for the peak, hence the separate global peak. In counts mode the figures that mode does not
keep (frees and freed bytes per category, bytes in use, peaks) are absent, not 0. Counters
restart from 0 at each :func:`alloccount.start`, which ``rate()`` treats as a counter reset.
The server's threads allocate in the ``"<alloccount>"`` category, as the Monitor's sampler
does, so the exporter's own work stays out of the service's categories.
"""
from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any, Iterator, List, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

try:
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "alloccount.prometheus needs prometheus_client; install it with: pip install 'alloccount[prometheus]'"
    ) from exc

from ._export import VerdictSource, checked_verdict_source, read_figures, verdict_rows
from .categories import category
from .monitor import MONITOR_CATEGORY

__all__ = ["AllocCountCollector", "MetricsServer", "start_http_server"]

# One row per per-category family: (exposed name, Stats field, type, OpenMetrics unit, help).
# CounterMetricFamily strips a trailing "_total" from the name it is given and appends it to the
# samples, so passing the full name exposes exactly this name in the text format and OpenMetrics.
_PER_CATEGORY: Tuple[Tuple[str, str, str, str, str], ...] = (
    ("alloccount_allocations_total", "allocations", "counter", "", "Blocks allocated since alloccount.start()."),
    ("alloccount_frees_total", "frees", "counter", "", "Frees of blocks allocated since alloccount.start()."),
    (
        "alloccount_allocated_bytes_total", "bytes_allocated", "counter", "bytes",
        "Bytes requested by allocations and reallocs since alloccount.start().",
    ),
    (
        "alloccount_freed_bytes_total", "bytes_freed", "counter", "bytes",
        "Bytes of tracked blocks freed (a realloc frees the old size) since alloccount.start().",
    ),
    (
        "alloccount_used_bytes", "current_bytes", "gauge", "bytes",
        "Bytes in live blocks allocated since alloccount.start().",
    ),
    (
        "alloccount_peak_bytes", "peak_bytes", "gauge", "bytes",
        "High-water mark of alloccount_used_bytes in the category.",
    ),
)  # fmt: skip
_LABELS = ("category",)


def _global_peak_family() -> GaugeMetricFamily:
    """An empty ``alloccount_global_peak_bytes`` family (no label: the process has one peak)."""
    return GaugeMetricFamily(
        "alloccount_global_peak_bytes",
        "High-water mark of all tracked bytes in use (of their sum, not a sum of category peaks).",
        labels=(),
        unit="bytes",
    )


def _leak_families() -> Tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """Empty ``alloccount_leak_suspected`` and ``alloccount_leak_slope_bytes_per_second`` families."""
    suspected = GaugeMetricFamily(
        "alloccount_leak_suspected",
        "1 if the monitor judges the series to grow without bound, else 0.",
        labels=_LABELS,
    )
    slope = GaugeMetricFamily(
        "alloccount_leak_slope_bytes_per_second",
        "Theil-Sen slope of the series over the monitor's window, whatever the verdict.",
        labels=_LABELS,
        unit="bytes_per_second",
    )
    return suspected, slope


class AllocCountCollector:
    """A ``prometheus_client`` collector reading alloccount's counters at each scrape.

    Register it on any registry (``registry.register(AllocCountCollector())``). With a
    ``monitor`` (any object with a ``verdicts()`` method, e.g. ``alloccount.Monitor``) it also
    exports ``alloccount_leak_suspected`` and ``alloccount_leak_slope_bytes_per_second``; each
    scrape calls ``monitor.verdicts()`` once, so the monitor should keep its latest verdicts
    rather than recompute them per call. An exception from ``verdicts()`` fails the scrape
    (HTTP 500, ``up == 0`` in Prometheus) rather than hiding a broken monitor.
    """

    def __init__(self, monitor: Optional[VerdictSource] = None) -> None:
        """Build the collector; TypeError if ``monitor`` has no ``verdicts()`` method."""
        self._monitor = checked_verdict_source(monitor)

    def describe(self) -> List[Metric]:
        """The families this collector can export, without samples.

        A registry calls this on registration to detect name clashes; defining it spares the
        registry a full collection there.
        """
        families: List[Metric] = [family for family, _ in _per_category_families()]
        families.append(_global_peak_family())
        if self._monitor is not None:
            families.extend(_leak_families())
        return families

    def collect(self) -> Iterator[Metric]:
        """Read the counters (and verdicts) now; yield each family that has a sample.

        A figure that is ``None`` (counts mode keeps no frees per category and no bytes in use)
        is skipped, and a family left without samples is not exported at all.
        """
        total, per_category = read_figures()
        families: List[Metric] = []
        for family, field in _per_category_families():
            for category_name, stats in per_category.items():
                value = getattr(stats, field)
                if value is not None:
                    family.add_metric([category_name], value)
            families.append(family)
        global_peak = _global_peak_family()
        if total.peak_bytes is not None:
            global_peak.add_metric([], total.peak_bytes)
        families.append(global_peak)
        if self._monitor is not None:
            suspected, slope = _leak_families()
            for label, verdict in verdict_rows(self._monitor):
                suspected.add_metric([label], 1.0 if verdict.leaking else 0.0)
                slope.add_metric([label], verdict.slope_bytes_per_s)
            families += [suspected, slope]
        return (family for family in families if family.samples)


def _per_category_families() -> List[Tuple[Metric, str]]:
    """A fresh, empty family for each row of ``_PER_CATEGORY``, with the Stats field it shows."""
    families: List[Tuple[Metric, str]] = []
    for name, field, kind, unit, help_text in _PER_CATEGORY:
        family_class = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        families.append((family_class(name, help_text, labels=_LABELS, unit=unit), field))
    return families


class MetricsServer:
    """A running metrics endpoint: its address, its thread, and :meth:`close` to stop it.

    Also a context manager (``with start_http_server(0) as server: ...`` closes on exit).
    """

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        """Wrap a server already serving in ``thread``; use :func:`start_http_server` to get one."""
        self.server = server
        self.thread = thread
        host, port = server.server_address[:2]
        #: The address actually bound, e.g. ``"127.0.0.1"`` or ``"::1"``.
        self.address: str = host
        #: The port actually bound (the free port the system picked when asked for 0).
        self.port: int = port

    @property
    def url(self) -> str:
        """``http://host:port/metrics``, with brackets around an IPv6 address."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving, release the port and wait for the thread; a no-op if already closed."""
        if self.thread.is_alive():
            self.server.shutdown()  # returns once serve_forever() has left its loop
            self.thread.join()
        self.server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "serving" if self.thread.is_alive() else "closed"
        return f"<MetricsServer {self.url} {state}>"


def start_http_server(
    port: int,
    addr: str = "127.0.0.1",
    registry: Optional[CollectorRegistry] = None,
    monitor: Optional[VerdictSource] = None,
) -> MetricsServer:
    """Serve alloccount's metrics over HTTP from a daemon thread; return the running server.

    ``port`` 0 lets the system pick a free port (read it from the result's ``port``).
    ``addr`` defaults to the loopback interface: memory figures of a service are not for the
    whole network; pass ``"0.0.0.0"`` (or ``"::"``) deliberately to expose them.

    An :class:`AllocCountCollector` (with ``monitor``, if given) is registered on ``registry``,
    by default a fresh :class:`~prometheus_client.CollectorRegistry` holding only it: the global
    ``prometheus_client.REGISTRY`` would refuse a second alloccount collector (duplicate names),
    e.g. a second server in the same process. Pass the service's own registry to serve its
    metrics and alloccount's from one endpoint; any path is served, ``/metrics`` by convention.

    Raises TypeError/ValueError for a bad ``port``, ``addr`` or ``monitor``, and OSError naming
    the address when it cannot be bound (e.g. the port is taken).
    """
    _check_port(port)
    family, host = _resolve(addr, port)
    collector = AllocCountCollector(monitor)
    if registry is None:
        registry = CollectorRegistry()
    try:
        server = _ThreadingWSGIServer((host, port), family)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on {addr} port {port}: {exc.strerror or exc}") from exc
    # Registered only once the port is bound, so a failed start leaves the caller's registry as it was.
    try:
        registry.register(collector)
    except ValueError:  # a name clash: the registry already holds an alloccount collector
        server.server_close()
        raise
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=server.serve, name=f"alloccount-prometheus:{server.server_port}", daemon=True)
    thread.start()
    return MetricsServer(server, thread)


def _check_port(port: object) -> None:
    """TypeError unless ``port`` is an int (bool excluded), ValueError outside 0..65535."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int in 0..65535 (0 picks a free port), got {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535 (0 picks a free port), got {port}")


def _resolve(addr: object, port: int) -> Tuple[int, str]:
    """``(address family, host)`` to bind for ``addr``: IPv4, IPv6 or a host name such as localhost."""
    if not isinstance(addr, str):
        raise TypeError(f"addr must be a str such as '127.0.0.1', got {type(addr).__name__}")
    if not addr:
        raise ValueError("addr must not be empty: give '127.0.0.1' (loopback) or '0.0.0.0' (all interfaces)")
    try:
        infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"addr {addr!r} does not resolve: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr[0]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape, so a slow scraper cannot hold up another."""

    # Daemon request threads: a scrape in progress must not keep the service from exiting, and
    # ThreadingMixIn then keeps no list of finished threads (which grows forever otherwise).
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], family: int) -> None:
        self.address_family = family  # TCPServer.__init__ creates the socket with it
        super().__init__(address, _QuietHandler)
        self._own_category = category(MONITOR_CATEGORY)

    def serve(self) -> None:
        """serve_forever() in alloccount's own category (the accept loop's allocations)."""
        with self._own_category:
            self.serve_forever()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle one scrape in alloccount's own category, from request parsing to the reply."""
        with self._own_category:
            super().process_request_thread(request, client_address)


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a scrape every 15 s would flood the service's output."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Log nothing."""
