"""Cost of categories (issue 3 targets): entering+leaving one, and the hot path inside one.

    python bench/categories.py [--rounds 15] [--json PATH]

1. ``with alloccount.category("orders"): pass`` per iteration, minus an empty loop, in ns
   (target <= 300 ns), with ``contextlib.nullcontext()`` for scale.
2. The small-object churn workload of bench/_workloads.py run inside a category vs outside any,
   both tracked in exact mode, alternated in one process (same heap, same table), median of
   rounds (target: <= 3% slower inside).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _workloads  # noqa: E402

import alloccount  # noqa: E402

ENTER_TARGET_NS = 300.0
HOT_PATH_TARGET = 1.03


def per_call_ns(body: Callable[[int], None], calls: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        body(calls)
        samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples)


def enter_leave_cost(repeats: int) -> Dict[str, float]:
    orders = alloccount.category("orders")
    null = contextlib.nullcontext()

    def empty(n: int) -> None:
        for _ in range(n):
            pass

    def with_category(n: int) -> None:
        for _ in range(n):
            with orders:
                pass

    def with_lookup(n: int) -> None:  # the usual spelling: looks the name up each time
        for _ in range(n):
            with alloccount.category("orders"):
                pass

    def with_null(n: int) -> None:
        for _ in range(n):
            with null:
                pass

    base = per_call_ns(empty, 200_000, repeats)
    return {
        "empty_loop_ns": base,
        "category_object_ns": per_call_ns(with_category, 200_000, repeats) - base,
        "category_by_name_ns": per_call_ns(with_lookup, 200_000, repeats) - base,
        "nullcontext_ns": per_call_ns(with_null, 200_000, repeats) - base,
    }


def hot_path_ratio(rounds: int) -> Dict[str, object]:
    run = _workloads.WORKLOADS["small_object_churn"].setup()
    iterations = 2_000
    outside: List[float] = []
    inside: List[float] = []
    category = alloccount.category("hot")
    run(iterations // 4)  # warm-up: size the table, fill free lists
    for _ in range(rounds):
        start = time.perf_counter_ns()
        run(iterations)
        outside.append(time.perf_counter_ns() - start)
        with category:
            start = time.perf_counter_ns()
            run(iterations)
            inside.append(time.perf_counter_ns() - start)
    ratios = [i / o for i, o in zip(inside, outside)]
    return {
        "outside_ms": statistics.median(outside) / 1e6,
        "inside_ms": statistics.median(inside) / 1e6,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    alloccount.start(mode="exact")
    enter = enter_leave_cost(max(5, args.rounds))
    hot = hot_path_ratio(args.rounds)
    alloccount.stop()
    verdict = lambda ok: "PASS" if ok else "MISS"  # noqa: E731
    print(f"Python {sys.version.split()[0]}, exact mode, medians of {args.rounds} rounds")
    print(f"enter+leave a category (object held)   {enter['category_object_ns']:7.1f} ns   target <= {ENTER_TARGET_NS:.0f} ns  {verdict(enter['category_object_ns'] <= ENTER_TARGET_NS)}")
    print(f"enter+leave category('orders') by name {enter['category_by_name_ns']:7.1f} ns   target <= {ENTER_TARGET_NS:.0f} ns  {verdict(enter['category_by_name_ns'] <= ENTER_TARGET_NS)}")
    print(f"  (contextlib.nullcontext() for scale   {enter['nullcontext_ns']:7.1f} ns)")
    print(
        f"small-object churn inside vs outside a category: {hot['ratio_median']:.3f}x "
        f"(min {hot['ratio_min']:.3f}, max {hot['ratio_max']:.3f}; {hot['outside_ms']:.0f} ms outside)   "
        f"target <= {HOT_PATH_TARGET:.2f}x  {verdict(hot['ratio_median'] <= HOT_PATH_TARGET)}"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"python": sys.version, "enter_leave": enter, "hot_path": hot}, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
