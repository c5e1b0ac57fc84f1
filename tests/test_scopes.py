"""Scoped measurement, allocation limits and per-thread figures."""
from __future__ import annotations

import threading

import pytest

import alloccount
from alloccount import _testing as T

# The with statement and the names it rebinds free a few small blocks from before the window
# (a bound method, the previous Measurement): byte levels inside a block are exact up to that.
SCOPE_NOISE_BYTES = 1024


def call_cost() -> int:
    """Allocations made by calling the test helper itself (its argument tuple), measured.

    The least of a few runs: the first call in a process may also create caches.
    """
    costs = []
    for _ in range(3):
        with alloccount.measure() as m:
            T.cycle("mem", 0, 8)
        costs.append(m.allocations)
    return min(costs)


def test_measure_counts_the_block_exactly(exact):
    overhead = call_cost()
    with alloccount.measure() as m:
        T.cycle("mem", 1000, 984)  # 1000 allocations of 984 bytes, all freed
    assert m.allocations - overhead == 1000
    assert 984_000 <= m.bytes_allocated < 984_000 + SCOPE_NOISE_BYTES
    assert m.frees >= 1000 and m.bytes_freed >= 984_000
    assert m.net_bytes <= SCOPE_NOISE_BYTES
    assert 984_000 - SCOPE_NOISE_BYTES <= m.peak_bytes < 984_000 + SCOPE_NOISE_BYTES


def test_measure_net_and_peak(exact):
    with alloccount.measure() as m:
        kept = bytearray(300_000)
        temp = bytearray(1_000_000)
        del temp
    assert abs(m.net_bytes - 300_000) < SCOPE_NOISE_BYTES
    assert abs(m.peak_bytes - 1_300_000) < SCOPE_NOISE_BYTES
    del kept


def test_nested_measurements_each_see_their_own_block(exact):
    with alloccount.measure() as outer:
        big = bytearray(2_000_000)
        del big
        with alloccount.measure() as inner:
            small = bytearray(100_000)
        del small
    assert abs(inner.peak_bytes - 100_000) < SCOPE_NOISE_BYTES
    assert abs(outer.peak_bytes - 2_000_000) < SCOPE_NOISE_BYTES, "the inner block must not erase the outer peak"
    assert outer.allocations >= inner.allocations + 2


def test_measure_is_per_thread_unless_asked(exact):
    started, done = threading.Event(), threading.Event()

    def other():
        started.wait()
        T.cycle("raw", 500, 100)
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with alloccount.measure() as mine, alloccount.measure(all_threads=True) as everyone:
        started.set()
        done.wait()
    t.join()
    assert mine.allocations < 50, "another thread's allocations counted as this thread's"
    assert everyone.allocations >= 500


def test_no_allocations_passes_an_allocation_free_block(exact):
    prices = [1.0, 2.0, 3.0]

    @alloccount.no_allocations
    def best(values):
        # (a for loop would allocate its iterator: that is exactly what this gate catches)
        top, i, n = values[0], 1, len(values)
        while i < n:
            if values[i] > top:
                top = values[i]
            i += 1
        return top

    with alloccount.no_allocations():
        pass
    # CPython 3.9/3.10 allocate a function's frame on its first call (later calls reuse it):
    # warm the function up once outside the gate, as a benchmark would.
    best.__wrapped__(prices)
    assert best(prices) == 3.0


def test_no_allocations_fails_a_block_that_allocates_and_says_what(exact):
    with pytest.raises(alloccount.AllocationLimitError, match=r"no_allocations\(\) exceeded.*allocation\(s\) > limit 0"):
        with alloccount.no_allocations():
            T.cycle("obj", 3, 64)


def test_limit_reports_the_measure_and_the_budget(exact):
    overhead = call_cost()
    with alloccount.limit(allocations=10 + overhead):
        T.cycle("mem", 10, 32)
    with pytest.raises(alloccount.AllocationLimitError, match=rf"{11 + overhead} allocation\(s\) > limit {10 + overhead}"):
        with alloccount.limit(allocations=10 + overhead):
            T.cycle("mem", 11, 32)
    with pytest.raises(alloccount.AllocationLimitError, match=r"\d{4} bytes allocated > limit 4096 bytes"):
        with alloccount.limit(bytes=4096):
            T.cycle("raw", 100, 64)  # 6400 bytes in RAW


def test_an_exception_in_a_limited_block_propagates_unchanged(exact):
    with pytest.raises(ZeroDivisionError):
        with alloccount.no_allocations():
            T.cycle("obj", 5, 64)
            1 / 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({}, ValueError), ({"allocations": -1}, ValueError), ({"bytes": "2 MB"}, TypeError), ({"allocations": True}, TypeError)],
)
def test_limit_rejects_bad_budgets(kwargs, error):
    with pytest.raises(error):
        alloccount.limit(**kwargs)


def test_measure_before_start_is_a_clear_error():
    with pytest.raises(RuntimeError, match="call alloccount.start"):
        alloccount.measure()


def test_thread_stats_name_each_live_thread(exact):
    go = threading.Event()
    stop = threading.Event()

    def worker():
        data = [bytearray(1000) for _ in range(100)]
        go.set()
        stop.wait()
        del data

    t = threading.Thread(target=worker, name="order-feed")
    t.start()
    go.wait()
    try:
        stats = alloccount.thread_stats()
        by_name = {key.name: s for key, s in stats.items()}
        assert by_name["order-feed"].allocations >= 200
        assert by_name["order-feed"].current_bytes >= 100_000
        assert threading.main_thread().name in by_name
        assert all(key.ident for key in stats)
    finally:
        stop.set()
        t.join()
