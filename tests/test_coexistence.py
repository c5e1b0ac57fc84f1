"""Stacking with the other users of PyMem_SetAllocator: tracemalloc and memray.

Both restore the allocator they saved when they stop, blindly. alloccount must keep them
working whatever the order, and never silently stop counting.
"""
from __future__ import annotations

import tracemalloc
import warnings

import pytest

import alloccount


def churn(n: int = 2000, size: int = 700) -> list:
    return [bytearray(size) for _ in range(n)]


def gil_domains() -> tuple:
    """(allocations, bytes allocated) of the MEM and OBJ domains together."""
    mem, obj = alloccount.stats("mem"), alloccount.stats("obj")
    return mem.allocations + obj.allocations, mem.bytes_allocated + obj.bytes_allocated


def test_tracemalloc_started_after_us_traces_and_we_keep_counting(exact):
    tracemalloc.start()
    try:
        before = alloccount.allocations()
        traced_before, _ = tracemalloc.get_traced_memory()
        keep = churn()
        traced_after, _ = tracemalloc.get_traced_memory()
        assert traced_after - traced_before >= 2000 * 700
        assert alloccount.allocations() - before >= 2000
    finally:
        tracemalloc.stop()
    # tracemalloc restored what it saved, which is us
    assert alloccount.is_tracking()
    before = alloccount.allocations()
    more = churn(500)
    assert alloccount.allocations() - before >= 500
    del keep, more


def test_stop_under_tracemalloc_stays_as_pass_through_and_warns():
    alloccount.start()
    tracemalloc.start()
    try:
        with pytest.warns(alloccount.AllocCountWarning, match="pass-through"):
            alloccount.stop()
        assert not alloccount.is_tracking()
        # tracemalloc still sees every allocation through our pass-through hooks
        traced_before, _ = tracemalloc.get_traced_memory()
        keep = churn()
        traced_after, _ = tracemalloc.get_traced_memory()
        assert traced_after - traced_before >= 2000 * 700
        # and starting again reuses the hooks still in the chain: no double counting
        # (MEM + OBJ only: tracemalloc, above us, stores its traces with the RAW allocator
        # it saved, which is ours, so its own bookkeeping is rightly counted in RAW.)
        alloccount.start()
        before = gil_domains()
        more = churn(1000, 600)
        after = gil_domains()
        # a bytearray is two blocks (object + buffer; the buffer is OBJ on 3.11, MEM on
        # 3.13); hooks linked twice would count everything twice
        assert 2000 <= after[0] - before[0] < 4000
        assert 600_000 <= after[1] - before[1] < 1_200_000
    finally:
        tracemalloc.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # now on top again: a clean unlink, no warning
        alloccount.stop()
    del keep, more


def test_tracemalloc_stopping_below_us_is_detected_by_is_tracking():
    tracemalloc.start()
    alloccount.start()
    assert alloccount.is_tracking()
    tracemalloc.stop()  # restores pymalloc: our hooks are no longer called
    with pytest.warns(alloccount.AllocCountWarning, match="no longer receive calls"):
        assert not alloccount.is_tracking()
    alloccount.stop()  # nothing to unlink, nothing to warn about beyond that
    alloccount.start()
    assert alloccount.is_tracking()
    before = alloccount.allocations()
    keep = churn(300)
    assert alloccount.allocations() - before >= 300
    del keep


memray = pytest.importorskip("memray")


def test_memray_wrapping_us_records_and_we_keep_counting(exact, tmp_path):
    capture = tmp_path / "capture.bin"
    before = alloccount.stats()
    with memray.Tracker(capture, trace_python_allocators=True, native_traces=False):
        keep = churn(1000, 1500)
    after = alloccount.stats()
    assert after.allocations - before.allocations >= 1000
    assert alloccount.is_tracking(), "memray restored what it saved: us"
    reader = memray.FileReader(capture)
    sizes = [r.size for r in reader.get_allocation_records() if r.size >= 1500]
    assert len(sizes) >= 1000, "memray saw the allocations that went through us"
    del keep


def test_stop_inside_memray_is_pass_through_and_memray_finishes(tmp_path):
    capture = tmp_path / "capture.bin"
    alloccount.start()
    with memray.Tracker(capture, trace_python_allocators=True):
        with pytest.warns(alloccount.AllocCountWarning):
            alloccount.stop()
        keep = churn(500, 2000)
    reader = memray.FileReader(capture)
    assert sum(1 for r in reader.get_allocation_records() if r.size >= 2000) >= 500
    alloccount.start()
    assert alloccount.is_tracking()
    del keep
