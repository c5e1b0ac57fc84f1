"""Allocation-heavy workloads timed by the overhead benchmark.

Each workload is a :class:`Workload`: ``setup()`` builds the inputs and returns a ``run(iterations)``
callable; only ``run`` is timed. ``setup()`` is called *after* the configuration under test is
installed, so long-lived inputs (the JSON ticks, the order history) are live blocks the tracker knows
about, as they would be in a service that starts tracking at start-up.

``iterations`` is calibrated so that one untracked run takes roughly 0.3–1 s on the 2-core reference
machine (CPython 3.11); see bench/README.md for the figures.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import random
import threading
import zlib
from typing import Callable, Dict, List

RunFn = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Workload:
    """One timed workload: ``setup()`` returns the ``run(iterations)`` callable to time."""

    name: str
    summary: str
    iterations: int  # calibrated count for a full run (~0.3–1 s untracked)
    setup: Callable[[], RunFn]


# --- 1. small-object churn -------------------------------------------------------------------------

_ROWS_PER_ITERATION = 100


def _setup_small_object_churn() -> RunFn:
    def run(iterations: int) -> None:
        for iteration in range(iterations):
            # Ints above 256 are not cached, so every ``base + n`` is a fresh OBJ allocation.
            base = 1000 + (iteration % 1000) * _ROWS_PER_ITERATION
            rows = [(base + n, str(base + n), [n, base + n]) for n in range(_ROWS_PER_ITERATION)]
            by_key = {key: pair for key, _, pair in rows}
            labels = [label + "!" for _, label, _ in rows]
            del rows, by_key, labels

    return run


# --- 2. JSON ticks -> dataclass orders, bounded history ---------------------------------------------

_SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "NFLX")
_DISTINCT_TICKS = 1024
_HISTORY_LENGTH = 10_000


@dataclasses.dataclass
class Order:
    """A trading-bot order built from one market tick (a regular dataclass: one __dict__ each)."""

    symbol: str
    side: str
    price: float
    quantity: int
    timestamp_ns: int


def _setup_json_tick_orders() -> RunFn:
    ticks_json = [
        json.dumps(
            {
                "symbol": _SYMBOLS[i % len(_SYMBOLS)],
                "bid": round(100.0 + i * 0.01, 2),
                "ask": round(100.02 + i * 0.01, 2),
                "size": 1 + i % 100,
                "ts": 1_700_000_000_000_000_000 + i * 1_000,
            }
        )
        for i in range(_DISTINCT_TICKS)
    ]
    # Bounded on purpose: once full, every append frees the oldest order, so the live set is
    # steady and the pointer table sees one insert and one delete per order.
    history: collections.deque = collections.deque(maxlen=_HISTORY_LENGTH)

    def run(iterations: int) -> None:
        for iteration in range(iterations):
            tick = json.loads(ticks_json[iteration % _DISTINCT_TICKS])
            mid_price = (tick["bid"] + tick["ask"]) / 2
            side = "buy" if tick["size"] % 2 else "sell"
            history.append(Order(tick["symbol"], side, mid_price, tick["size"], tick["ts"]))

    return run


# --- 3. large buffers (> 512 bytes: pymalloc hands them to the RAW domain) ----------------------------

_BUFFER_SIZE_COUNT = 256
_GROWTH_CHUNK_BYTES = 1024
_GROWTH_CHUNKS = 8


def _setup_large_buffers() -> RunFn:
    # Log-uniform sizes in 1..64 KiB, seeded so every process sees the same sequence.
    rng = random.Random(1)
    sizes_bytes = [int(1024 * 2 ** rng.uniform(0, 6)) for _ in range(_BUFFER_SIZE_COUNT)]
    chunk = b"c" * _GROWTH_CHUNK_BYTES

    def run(iterations: int) -> None:
        for iteration in range(iterations):
            size_bytes = sizes_bytes[iteration % _BUFFER_SIZE_COUNT]
            zeroed = bytes(size_bytes)  # calloc path
            filled = b"x" * size_bytes  # malloc path
            copied = bytearray(filled)
            # Appending grows the buffer a little at a time: a realloc on most appends.
            grown = bytearray()
            for _ in range(_GROWTH_CHUNKS):
                grown += chunk
            del zeroed, filled, copied, grown

    return run


# --- 4. four threads, mixed work, GIL released in zlib/hashlib ----------------------------------------

_THREADS = 4
_PAYLOAD_ROWS = 2048


def _setup_threads_mixed() -> RunFn:
    # A compressible ~48 KiB payload: CSV-like rows.
    payload = "".join(f"{row:08d},ACME,{row * 0.25:.2f}\n" for row in range(_PAYLOAD_ROWS)).encode()
    compressed = zlib.compress(payload, 1)

    def worker(units: int) -> None:
        for unit in range(units):
            # GIL side: small objects (OBJ/MEM domains).
            rows = [(unit * 64 + n + 1000, str(n)) for n in range(64)]
            # GIL released: sha256 over > 2 KiB runs without the GIL (OpenSSL's own memory, not
            # counted, but it lets the other threads allocate in parallel).
            digest = hashlib.sha256(payload).digest()
            # zlib allocates through PyMem_RawMalloc; inflate() allocates its 32 KiB window on
            # first use *inside* the GIL-released section, so these RAW calls happen without the
            # GIL, concurrently with the other threads' allocations.
            restored = zlib.decompress(compressed)
            packed = zlib.compress(restored[: 8 * 1024], 1)
            del rows, digest, restored, packed

    def run(iterations: int) -> None:
        units_per_thread = max(1, iterations // _THREADS)
        errors: List[BaseException] = []

        def guarded_worker() -> None:
            try:
                worker(units_per_thread)
            except BaseException as error:  # re-raised below: a failed thread must not look fast
                errors.append(error)

        threads = [threading.Thread(target=guarded_worker) for _ in range(_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    return run


# --- 5. "float": ~100k small objects alive while churning (pyperformance bm_float's shape) -----------

_POINTS = 100_000


class _Point:
    """Three floats per point; normalize() replaces each float (a free and an allocation)."""

    __slots__ = ("x", "y", "z")

    def __init__(self, i: int) -> None:
        self.x = x = math.sin(i)
        self.y = math.cos(i) * 3
        self.z = (x * x) / 2

    def normalize(self) -> None:
        norm = math.sqrt(self.x * self.x + self.y * self.y + self.z * self.z)
        self.x /= norm
        self.y /= norm
        self.z /= norm

    def maximize(self, other: "_Point") -> "_Point":
        self.x = self.x if self.x > other.x else other.x
        self.y = self.y if self.y > other.y else other.y
        self.z = self.z if self.z > other.z else other.z
        return self


def _setup_float_live_set() -> RunFn:
    def run(iterations: int) -> None:
        for _ in range(iterations):
            # ~400k live blocks (100k points + 300k floats) at the peak of every iteration, all
            # freed at its end: the pointer table grows, churns at high occupancy, and shrinks.
            points = [_Point(i) for i in range(_POINTS)]
            for point in points:
                point.normalize()
            best = points[0]
            for point in points[1:]:
                best = best.maximize(point)
            del points, best

    return run


WORKLOADS: Dict[str, Workload] = {
    workload.name: workload
    for workload in (
        Workload(
            "small_object_churn",
            "build and drop lists/tuples/dicts of small ints and strs (100 rows per iteration)",
            iterations=20_000,
            setup=_setup_small_object_churn,
        ),
        Workload(
            "json_tick_orders",
            "json.loads a tick, build a dataclass Order, append to a deque(maxlen=10_000)",
            iterations=200_000,
            setup=_setup_json_tick_orders,
        ),
        Workload(
            "large_buffers",
            "bytes/bytearray of 1-64 KiB created and dropped, bytearray growth (reallocs)",
            iterations=400_000,
            setup=_setup_large_buffers,
        ),
        Workload(
            "threads_mixed",
            "4 threads: small objects + sha256 + zlib (RAW allocations without the GIL)",
            iterations=3_000,
            setup=_setup_threads_mixed,
        ),
        Workload(
            "float_live_set",
            "pyperformance float: 100k points (400k blocks) alive while their floats churn",
            iterations=8,
            setup=_setup_float_live_set,
        ),
    )
}


def workload_names() -> List[str]:
    """Workload names in report order."""
    return list(WORKLOADS)
