"""Time one workload under one configuration, in this (fresh) process, and print one JSON line.

Usage::

    python bench/_runner.py WORKLOAD CONFIG ITERATIONS [--warmup-iterations N]

Sequence: install the configuration, set the workload up, run the warm-up iterations, collect
garbage, then time ``ITERATIONS`` iterations with ``time.perf_counter_ns``; only that loop is in
``elapsed_ns`` (interpreter start-up, imports, set-up and warm-up are not); ``cpu_ns`` is the
process CPU time of the same loop. ``ITERATIONS`` may be 0:
``overhead.py --callgrind`` subtracts such a run's instruction count to isolate the timed loop.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import List, Optional

import _configs
import _workloads


def default_warmup_iterations(iterations: int) -> int:
    """A tenth of the timed iterations (at least one), enough to fill caches and size tables."""
    return max(1, iterations // 10)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=_workloads.workload_names())
    parser.add_argument("config", choices=_configs.CONFIG_NAMES)
    parser.add_argument("iterations", type=int)
    parser.add_argument(
        "--warmup-iterations",
        type=int,
        default=None,
        help="default: a tenth of ITERATIONS, at least 1",
    )
    args = parser.parse_args(argv)
    warmup_iterations = (
        default_warmup_iterations(args.iterations)
        if args.warmup_iterations is None
        else args.warmup_iterations
    )

    workload = _workloads.WORKLOADS[args.workload]
    with _configs.activate(args.config) as config_info:
        run = workload.setup()
        run(warmup_iterations)
        # Start every timed loop from the same state: no garbage left over from the warm-up.
        gc.collect()
        start_ns, start_cpu_ns = time.perf_counter_ns(), time.process_time_ns()
        if args.iterations:
            run(args.iterations)
        elapsed_ns = time.perf_counter_ns() - start_ns
        # CPU time of the whole process (all threads): unlike wall time, it does not grow while
        # other jobs on a shared machine hold the CPUs, so it helps tell overhead from noise.
        cpu_ns = time.process_time_ns() - start_cpu_ns
        del run

    result = {
        "workload": args.workload,
        "config": args.config,
        "iterations": args.iterations,
        "warmup_iterations": warmup_iterations,
        "elapsed_ns": elapsed_ns,
        "cpu_ns": cpu_ns,
        "config_info": config_info,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
