"""The engine's counting semantics, checked with exact scripted allocator calls.

The helpers in alloccount._testing call PyMem_RawMalloc / PyMem_Malloc / PyObject_Malloc
directly and read the counters through _core.read_into, which allocates nothing: each
figure below is exact, not "at least".
"""
from __future__ import annotations

import gc
import sys

import pytest

import alloccount
from alloccount import _core
from alloccount import _testing as T

from conftest import DOMAINS, Counters, read_buffers

HUGE = sys.maxsize // 2  # every allocator refuses this: a failed allocation


def run(domain: str, ops: list) -> tuple[list[Counters], list[int]]:
    """Run ops; return the counters read at each OP_READ and the indices of failed calls."""
    n_reads = sum(1 for op in ops if op[0] == T.OP_READ)
    buffers = read_buffers(n_reads)
    failed = T.run_ops(domain, ops, _core.read_into, buffers)
    return [Counters.unpack(b) for b in buffers], failed


def reads(n: int) -> list:
    return [(T.OP_READ, i) for i in range(n)]


@pytest.mark.parametrize("domain", DOMAINS)
def test_oracle_1000_blocks_of_984_bytes_are_counted_exactly(exact, domain):
    # GIVEN three snapshots around 1000 allocations of 984 bytes and their frees
    before, mid, after = read_buffers(3)
    # WHEN
    T.cycle(domain, 1000, 984, _core.read_into, before, mid, after)
    b, m, a = map(Counters.unpack, (before, mid, after))
    # THEN: exactly 1000 allocations of 984000 bytes, all live at mid, all gone after
    assert (m - b).allocations == 1000
    assert (m - b).bytes_allocated == 984_000
    assert (m - b).current_bytes == 984_000
    assert (a - b).frees == 1000
    assert (a - b).bytes_freed == 984_000
    assert a.current_bytes == b.current_bytes
    assert (a - b).untracked_frees == 0


@pytest.mark.parametrize("domain", DOMAINS)
def test_counts_mode_counts_the_same_calls(domain):
    alloccount.start(mode="counts")
    before, mid, after = read_buffers(3)
    T.cycle(domain, 1000, 984, _core.read_into, before, mid, after)
    b, a = Counters.unpack(before), Counters.unpack(after)
    assert (a - b).allocations == 1000
    assert (a - b).frees == 1000
    assert (a - b).bytes_allocated == 984_000


def test_only_the_outermost_call_is_counted(exact):
    # pymalloc serves > 512-byte requests with PyMem_RawMalloc: the RAW hook must not count
    # those blocks a second time (measured without a guard: one extra RAW malloc each).
    raw_before = alloccount.stats("raw")
    obj_before = alloccount.stats("obj")
    size = 1000  # a variable: b"x" * 1000 would be folded into one constant
    data = [b"x" * size for _ in range(10_000)]
    raw_after = alloccount.stats("raw")
    obj_after = alloccount.stats("obj")
    assert raw_after.allocations - raw_before.allocations == 0
    assert obj_after.allocations - obj_before.allocations >= 10_000
    assert obj_after.bytes_allocated - obj_before.bytes_allocated >= 10_000 * 1000
    del data


@pytest.mark.parametrize("domain", DOMAINS)
def test_calloc_counts_nelem_times_elsize(exact, domain):
    [b, m, a], failed = run(domain, [reads(1)[0], (T.OP_CALLOC, 0, 25, 40), (T.OP_READ, 1), (T.OP_FREE, 0), (T.OP_READ, 2)])
    assert not failed
    assert (m - b).allocations == 1 and (m - b).bytes_allocated == 1000 and (m - b).current_bytes == 1000
    assert (a - b).current_bytes == 0 and (a - b).frees == 1


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize(("old", "new"), [(100, 100_000), (100_000, 100), (600, 700), (64, 64)])
def test_realloc_moves_bytes_between_sizes(exact, domain, old, new):
    ops = [
        (T.OP_READ, 0),
        (T.OP_MALLOC, 0, old),
        (T.OP_REALLOC, 0, new),
        (T.OP_READ, 1),
        (T.OP_FREE, 0),
        (T.OP_READ, 2),
    ]
    [b, m, a], failed = run(domain, ops)
    assert not failed
    grown = m - b
    assert grown.allocations == 1 and grown.reallocs == 1 and grown.frees == 0
    assert grown.bytes_allocated == old + new
    assert grown.bytes_freed == old
    assert grown.current_bytes == new
    assert m.allocations - m.frees - (b.allocations - b.frees) == 1, "a realloc is no new block"
    assert (a - b).current_bytes == 0
    assert (a - b).bytes_freed == old + new


@pytest.mark.parametrize("domain", DOMAINS)
def test_realloc_of_null_is_an_allocation(exact, domain):
    [b, m, _], failed = run(domain, [(T.OP_READ, 0), (T.OP_REALLOC, 0, 300), (T.OP_READ, 1), (T.OP_FREE, 0), (T.OP_READ, 2)])
    assert not failed
    assert (m - b).allocations == 1 and (m - b).reallocs == 0 and (m - b).current_bytes == 300


@pytest.mark.parametrize("domain", DOMAINS)
def test_failed_allocations_count_nothing_and_keep_the_old_block(exact, domain):
    ops = [
        (T.OP_READ, 0),
        (T.OP_MALLOC, 1, HUGE),  # fails
        (T.OP_CALLOC, 2, HUGE, 1),  # fails
        (T.OP_READ, 1),
        (T.OP_MALLOC, 0, 200),
        (T.OP_REALLOC, 0, HUGE),  # fails: the 200-byte block stays live and tracked
        (T.OP_READ, 2),
        (T.OP_FREE, 0),
        (T.OP_READ, 3),
    ]
    [b, f, kept, a], failed = run(domain, ops)
    assert failed == [1, 2, 5]
    assert f == b, "failed malloc/calloc changed a counter"
    assert (kept - b).allocations == 1 and (kept - b).reallocs == 0 and (kept - b).current_bytes == 200
    assert (a - b).frees == 1 and (a - b).bytes_freed == 200 and (a - b).untracked_frees == 0


@pytest.mark.parametrize("domain", DOMAINS)
def test_free_of_null_counts_nothing(exact, domain):
    [b, a], _ = run(domain, [(T.OP_READ, 0), (T.OP_FREE, 0), (T.OP_READ, 1)])
    assert a == b


def test_blocks_from_before_start_are_untracked_frees_and_change_no_byte_figure():
    # GIVEN 100k objects created before start()
    old = [object() for _ in range(100_000)]
    alloccount.start()
    before = alloccount.stats()
    # WHEN they are freed after start()
    del old
    gc.collect()
    after = alloccount.stats()
    # THEN they are counted apart and no in-use figure goes negative
    assert after.untracked_frees - before.untracked_frees >= 100_000
    assert after.frees - before.frees < 1000
    assert after.current_bytes >= 0
    assert after.live_blocks >= 0


def test_realloc_of_a_block_from_before_start_is_adopted():
    address = T.malloc("mem", 100)  # before start: unknown to the table
    alloccount.start()
    b, a = read_buffers(2)
    _core.read_into(1, b)
    address = T.realloc("mem", address, 5000)
    _core.read_into(1, a)
    delta = Counters.unpack(a) - Counters.unpack(b)
    assert delta.reallocs == 1
    assert delta.untracked_frees == 1, "the old address is a free of an untracked block"
    assert delta.allocations == 1 and delta.bytes_allocated == 5000 and delta.current_bytes == 5000
    T.free("mem", address)
    s = alloccount.stats("mem")
    assert s.live_blocks == s.allocations - s.frees


def test_invariant_allocations_minus_frees_is_the_live_table(exact):
    keep = [bytearray(i % 2000) for i in range(20_000)]
    del keep[::3]
    total = bytearray(64)
    _core.read_into(-1, total)
    info = alloccount.engine_info()  # reads the table count before building its dict
    c = Counters.unpack(total)
    assert c.allocations - c.frees == info["tracked_blocks"]
    assert info["stale_entries"] == 0 and info["table_insert_failures"] == 0
    s = alloccount.stats()
    assert s.live_blocks == s.allocations - s.frees


def test_peak_follows_the_high_water_mark(exact):
    alloccount.reset_peak()
    base = alloccount.current_bytes()
    blob = bytearray(3_000_000)
    del blob
    small = bytearray(1_000_000)
    peak = alloccount.peak_bytes()
    assert 3_000_000 <= peak - base < 3_100_000
    assert alloccount.current_bytes() - base < 1_100_000
    del small


@pytest.mark.parametrize("nthreads", [2, 4])
def test_raw_counters_are_exact_under_concurrent_nogil_threads(exact, nthreads):
    # GIVEN native threads hammering PyMem_RawMalloc/Free without the GIL, concurrently
    count, size, keep = 50_000, 48, 100
    before, mid, after = read_buffers(3)
    # WHEN
    T.raw_threads(nthreads, count, size, keep, _core.read_into, before, mid, after)
    b, m, a = map(Counters.unpack, (before, mid, after))
    # THEN not one update is lost
    n_blocks = nthreads * (count + keep)
    assert (m - b).allocations == n_blocks
    assert (m - b).bytes_allocated == n_blocks * size
    assert (m - b).frees == nthreads * count
    assert (m - b).current_bytes == nthreads * keep * size
    assert (a - b).frees == n_blocks and a.current_bytes == b.current_bytes
