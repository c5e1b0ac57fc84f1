"""Cost of the background Monitor (issue 5: negligible at 1 s intervals).

    python bench/monitor_cost.py [--rounds 7] [--json PATH]

1. The time one ``Monitor.sample()`` takes with 10 categories in use (median of 200), and one
   leak check over a full default ring (7,200 samples, total + RSS + 6 categories).
2. The json_tick_orders workload of bench/_workloads.py, tracked in exact mode, with no monitor,
   a monitor at 1 s and one at 0.1 s, alternated in one process; ratios of medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _workloads  # noqa: E402

import alloccount  # noqa: E402


def sample_cost_ms(repeats: int = 200) -> float:
    keep = []
    for i in range(10):
        with alloccount.category(f"bench-{i}"):
            keep.append(bytearray(1000))
    monitor = alloccount.Monitor(interval=3600)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        monitor.sample()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e6


def check_cost_s(samples: int = 7_200, categories: int = 6) -> float:
    """One leak check over a full default ring (two hours at 1 s) with a few categories."""
    import random

    rng = random.Random(1)
    history = alloccount.History(maxlen=samples)
    for i in range(samples):
        cats = {
            f"c{k}": {"current_bytes": rng.randint(0, 10**6), "peak_bytes": 0, "allocations": i, "frees": i,
                      "bytes_allocated": i, "bytes_freed": i}
            for k in range(categories)
        }
        history.append(alloccount.Sample(float(i), float(i), rng.randint(0, 10**7), 0, i, i, 10**8, cats))
    start = time.perf_counter()
    alloccount.detect_leaks(history)
    return time.perf_counter() - start


def workload_ratios(rounds: int) -> Dict[str, object]:
    run = _workloads.WORKLOADS["json_tick_orders"].setup()
    iterations = 200_000
    run(iterations // 10)
    timings: Dict[str, List[float]] = {"none": [], "1s": [], "0.1s": []}
    for _ in range(rounds):
        for label, interval in (("none", None), ("1s", 1.0), ("0.1s", 0.1)):
            monitor: Optional[alloccount.Monitor] = alloccount.Monitor(interval=interval) if interval else None
            if monitor:
                monitor.start()
            start = time.perf_counter_ns()
            run(iterations)
            timings[label].append(time.perf_counter_ns() - start)
            if monitor:
                monitor.stop()
    base = statistics.median(timings["none"])
    return {
        "none_ms": base / 1e6,
        "ratio_1s": statistics.median(timings["1s"]) / base,
        "ratio_0.1s": statistics.median(timings["0.1s"]) / base,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    alloccount.start(mode="exact")
    per_sample = sample_cost_ms()
    per_check = check_cost_s()
    ratios = workload_ratios(args.rounds)
    alloccount.stop()
    print(f"Python {sys.version.split()[0]}, exact mode, medians of {args.rounds} rounds")
    print(f"one Monitor.sample() with 10 categories: {per_sample:.3f} ms ({per_sample / 10:.3f}% of a 1 s interval)")
    print(f"one leak check over 7,200 samples x 8 series: {per_check:.3f} s (every 60 samples by default: "
          f"{100 * per_check / 60:.2f}% of a core at 1 s)")
    print(f"json_tick_orders with a monitor at 1 s:   {ratios['ratio_1s']:.3f}x  (no monitor: {ratios['none_ms']:.0f} ms)")
    print(f"json_tick_orders with a monitor at 0.1 s: {ratios['ratio_0.1s']:.3f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"python": sys.version, "sample_ms": per_sample, "check_s": per_check, **ratios}, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
