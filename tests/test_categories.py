"""Per-category attribution: nesting, decorators, threads, asyncio, the sum invariant."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import alloccount
from alloccount.categories import _category_totals

SUMMED = ("allocations", "frees", "reallocs", "bytes_allocated", "bytes_freed", "current_bytes", "live_blocks")


def grow(category_name: str, n: int = 200, size: int = 1000) -> list:
    with alloccount.category(category_name):
        return [bytearray(size) for _ in range(n)]


def held(name: str) -> int:
    return alloccount.category_stats()[name].current_bytes


def test_allocations_inside_a_category_are_charged_to_it(exact):
    before = alloccount.category_stats().get("orders")
    orders = grow("orders", 200, 1000)
    after = alloccount.category_stats()["orders"]
    base = before.current_bytes if before else 0
    assert 200_000 <= after.current_bytes - base < 220_000
    assert after.allocations >= 400  # object + buffer per bytearray
    del orders


def test_a_block_freed_outside_its_category_is_subtracted_from_it(exact):
    orders = grow("book", 100, 2000)
    assert held("book") >= 200_000
    with alloccount.category("cleanup"):
        del orders  # freed while another category is current
    assert held("book") < 10_000
    assert alloccount.category_stats()["cleanup"].frees < 10


def test_innermost_category_wins_and_leaving_restores_the_outer(exact):
    with alloccount.category("outer"):
        a = [bytearray(5000) for _ in range(20)]
        with alloccount.category("inner"):
            assert alloccount.current_category() == "inner"
            b = [bytearray(7000) for _ in range(20)]
        assert alloccount.current_category() == "outer"
        c = [bytearray(3000) for _ in range(20)]
    assert alloccount.current_category() == alloccount.UNCATEGORIZED
    stats = alloccount.category_stats()
    assert 140_000 <= stats["inner"].current_bytes < 150_000
    assert 160_000 <= stats["outer"].current_bytes < 175_000
    del a, b, c


def test_an_exception_inside_a_category_restores_the_outer_one(exact):
    with pytest.raises(KeyError):
        with alloccount.category("failing"):
            raise KeyError("x")
    assert alloccount.current_category() == alloccount.UNCATEGORIZED


def test_decorator_on_a_function(exact):
    @alloccount.category("indicators")
    def compute(n):
        return [float(i) * 1.5 for i in range(n)]

    values = compute(10_000)
    assert held("indicators") >= 10_000 * 24
    assert alloccount.current_category() == alloccount.UNCATEGORIZED
    del values


def test_attribution_is_per_thread(exact):
    ready, release = threading.Event(), threading.Event()
    results = {}

    def other():
        ready.set()
        release.wait()
        results["data"] = [bytearray(4000) for _ in range(50)]  # no category in this thread

    t = threading.Thread(target=other)
    t.start()
    ready.wait()
    with alloccount.category("mine"):
        release.set()
        t.join()  # the other thread allocates while this thread is in "mine"
        mine = [bytearray(1000) for _ in range(10)]
    stats = alloccount.category_stats()
    assert stats["mine"].current_bytes < 40_000, "another thread's allocations leaked in"
    assert stats[alloccount.UNCATEGORIZED].current_bytes >= 200_000
    del mine, results


@pytest.mark.parametrize("install", [False, True], ids=["decorated", "install_asyncio"])
def test_asyncio_tasks_interleaving_are_attributed_exactly(exact, install):
    # GIVEN two tasks that alternate (each awaits between allocations) in different categories
    kept = {"a": [], "b": []}

    async def body(name, size):
        for _ in range(50):
            kept[name].append(bytearray(size))
            await asyncio.sleep(0)

    if install:
        async def worker(name, size):
            with alloccount.category(f"task-{name}"):
                await body(name, size)
    else:
        def worker(name, size):
            return alloccount.category(f"task-{name}")(body)(name, size)

    async def main():
        if install:
            alloccount.install_asyncio()
        await asyncio.gather(worker("a", 1000), worker("b", 3000))
        return alloccount.current_category()

    # WHEN
    outside = asyncio.run(main())
    stats = alloccount.category_stats()
    # THEN each task's bytes are in its own category, none leaked to the other or outside
    assert 50_000 <= stats["task-a"].current_bytes < 60_000
    assert 150_000 <= stats["task-b"].current_bytes < 160_000
    assert outside == alloccount.UNCATEGORIZED
    del kept


def test_decorated_coroutine_without_install_does_not_lend_its_category(exact):
    leaked = []

    @alloccount.category("slow")
    async def slow():
        await asyncio.sleep(0.01)

    async def bystander():
        await asyncio.sleep(0)  # runs while slow() is suspended
        leaked.extend(bytearray(2000) for _ in range(30))

    async def main():
        await asyncio.gather(slow(), bystander())

    asyncio.run(main())
    assert alloccount.category_stats()["slow"].current_bytes < 10_000
    del leaked


@pytest.mark.parametrize(("name", "error"), [("", ValueError), ("  ", ValueError), (None, TypeError), (3, TypeError)])
def test_bad_names_are_rejected(name, error):
    with pytest.raises(error, match="category name"):
        alloccount.category(name)


def test_more_categories_than_the_engine_holds_is_a_clear_error():
    # In a child process: category names are process-wide and permanent.
    script = textwrap.dedent("""
        import alloccount
        alloccount.start()
        names = [f"c{i}" for i in range(alloccount.MAX_CATEGORIES - 1)]
        for name in names:
            with alloccount.category(name):
                pass
        try:
            alloccount.category("one-too-many")
        except alloccount.CategoryLimitError as error:
            print("LIMIT", alloccount.MAX_CATEGORIES, error)
        stats = alloccount.category_stats()
        print("COUNT", len(stats), "one-too-many" in stats)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"LIMIT {alloccount.MAX_CATEGORIES} cannot create category 'one-too-many'" in out.stdout
    assert f"COUNT {alloccount.MAX_CATEGORIES} False" in out.stdout
    assert alloccount.MAX_CATEGORIES >= 256


def test_counts_mode_reports_what_it_can_attribute():
    alloccount.start(mode="counts")
    data = grow("counted", 100, 500)
    s = alloccount.category_stats()["counted"]
    assert s.allocations >= 200 and s.bytes_allocated >= 50_000
    assert s.frees is None and s.current_bytes is None
    del data


def assert_categories_sum_to_total():
    total, per_category = _category_totals()
    for field in SUMMED:
        assert sum(getattr(s, field) for s in per_category.values()) == getattr(total, field), field


def test_categories_sum_to_the_global_figures(exact):
    a = grow("sum-a", 100, 700)
    b = grow("sum-b", 50, 9000)
    del a[::2]
    with alloccount.category("sum-c"):
        b.extend(bytearray(100) for _ in range(300))
    assert_categories_sum_to_total()
    del a, b


ops = st.lists(
    st.tuples(st.sampled_from(["w", "x", "y", None]), st.integers(1, 5000), st.booleans()),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_sum_invariant_holds_for_random_workloads(exact, operations):
    pool = []
    for name, size, free_one in operations:
        if name is None:
            pool.append(bytearray(size))
        else:
            with alloccount.category(f"h-{name}"):
                pool.append(bytearray(size))
                pool.append(list(range(size % 300)))
        if free_one and pool:
            pool.pop(size % len(pool))
    assert_categories_sum_to_total()
