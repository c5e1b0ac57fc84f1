"""Oracle: tracemalloc's traced current/peak against alloccount's exact figures.

Both count the bytes *requested* by blocks allocated since start, in all three domains,
and both forget blocks from before start. The same deterministic workload is run once to
warm caches and free lists, then under each tool alone (stacked, tracemalloc's own trace
storage would be counted by alloccount in RAW). The tolerance is 0.1% of the figure plus
1 KiB: what remains is the tools' own reads (an int for alloccount, a tuple for
tracemalloc), measured at 56 bytes on CPython 3.11 (docs/engine.md).
"""
from __future__ import annotations

import gc
import tracemalloc

import pytest

import alloccount


def small_objects():
    return [(i, str(i), [i]) for i in range(20_000)]


def large_buffers():
    return [bytearray(10_000 + 7 * i) for i in range(300)]


def growth_then_release():
    history = []
    for i in range(100_000):
        history.append(i * 3)
    kept = history[:1000]
    del history  # released: peak stays, current drops
    return kept


def bytes_churn():
    out = []
    for i in range(5_000):
        chunk = b"t" * (600 + i % 900)
        if i % 5 == 0:
            out.append(chunk)
    return out


WORKLOADS = [small_objects, large_buffers, growth_then_release, bytes_churn]


def under_tracemalloc(workload):
    gc.collect()
    tracemalloc.start(1)
    try:
        base, _ = tracemalloc.get_traced_memory()
        kept = workload()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return current - base, peak - base


def under_alloccount(workload):
    gc.collect()
    alloccount.start(mode="exact", domains="all")
    try:
        base = alloccount.current_bytes()
        kept = workload()
        current, peak = alloccount.current_bytes(), alloccount.peak_bytes()
    finally:
        alloccount.stop()
    del kept
    return current - base, peak - base


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.__name__)
def test_current_and_peak_agree_with_tracemalloc(workload):
    workload()  # warm-up: interned strings, free lists, code caches
    tm_current, tm_peak = under_tracemalloc(workload)
    ac_current, ac_peak = under_alloccount(workload)
    assert tm_current > 10_000, "the workload must allocate enough to compare"
    tolerance = lambda figure: 0.001 * figure + 1024  # noqa: E731
    assert abs(ac_current - tm_current) <= tolerance(tm_current), (ac_current, tm_current)
    assert abs(ac_peak - tm_peak) <= tolerance(tm_peak), (ac_peak, tm_peak)
