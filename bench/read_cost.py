"""Cost of alloccount's reads, as a ratio to a no-op builtin call, while tracking in exact mode.

Usage::

    python bench/read_cost.py [--repeats N] [--calls N]

Prints one JSON object (``overhead.py`` runs this in a fresh process and formats the result).

Method: timeit-style loops (``for _ in itertools.repeat(None, calls): fn()`` with ``fn`` a local)
of ``--calls`` calls, repeated ``--repeats`` times; the candidates are interleaved within each repeat
(rotated order) so drift on a noisy machine hits them alike. Per-call figures are medians over the
repeats. The *net* cost subtracts the median cost of the same loop running ``pass``, so the ratio
compares the calls themselves rather than calls plus loop overhead (which would flatter slow calls).

The no-op reference is ``gc.isenabled()``: a METH_NOARGS C function that reads one flag and returns
the ``True``/``False`` singleton, so it allocates nothing and parses no arguments; what it costs is
the bare price of calling a builtin from Python, the floor any C getter pays. (``int()`` is not a
no-op: it goes through the type's call slot and argument handling.) ``time.perf_counter()`` is given
for context: a cheap, familiar call that, like ``current_bytes()``, allocates its result.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import timeit
from typing import Callable, Dict, List, Optional, Tuple

NOOP_NAME = "gc.isenabled()"
EMPTY_LOOP_NAME = "<empty loop>"


def _time_per_call_ns(candidates: Dict[str, Callable[[], object]], calls: int, repeats: int) -> Dict[str, List[float]]:
    """Gross ns per call for each candidate (loop overhead included), one figure per repeat."""
    timers = {
        name: timeit.Timer("fn()", setup="fn = _fn", globals={"_fn": fn}) for name, fn in candidates.items()
    }
    timers[EMPTY_LOOP_NAME] = timeit.Timer("pass")
    names = list(timers)
    for timer in timers.values():  # warm-up: specialize the bytecode, fault in the code paths
        timer.timeit(min(calls, 10_000))
    samples_ns: Dict[str, List[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        offset = repeat % len(names)
        for name in names[offset:] + names[:offset]:
            samples_ns[name].append(timers[name].timeit(calls) * 1e9 / calls)
    return samples_ns


def _alloccount_reads() -> Tuple[Dict[str, Callable[[], object]], Optional[str]]:
    """(candidates, None) with tracking started in exact mode, or ({}, reason) if unavailable."""
    try:
        import alloccount

        alloccount.start(mode="exact", domains="all")
    except Exception as error:  # the harness must still run (and say why) without the core
        return {}, f"alloccount unavailable ({type(error).__name__}: {error})"
    return {
        "alloccount.current_bytes()": alloccount.current_bytes,
        "alloccount.stats()": alloccount.stats,
    }, None


def measure(calls: int, repeats: int) -> dict:
    """Measure the reference calls and (when available) alloccount's reads; return a JSON-able dict."""
    reads, unavailable = _alloccount_reads()
    candidates: Dict[str, Callable[[], object]] = {
        NOOP_NAME: gc.isenabled,
        "time.perf_counter()": time.perf_counter,
    }
    candidates.update(reads)
    try:
        samples_ns = _time_per_call_ns(candidates, calls, repeats)
    finally:
        if reads:
            import alloccount

            alloccount.stop()

    empty_loop_ns = statistics.median(samples_ns[EMPTY_LOOP_NAME])
    per_call: Dict[str, dict] = {}
    for name in candidates:
        gross_ns = statistics.median(samples_ns[name])
        per_call[name] = {
            "median_gross_ns": gross_ns,
            "min_gross_ns": min(samples_ns[name]),
            "max_gross_ns": max(samples_ns[name]),
            "net_ns": gross_ns - empty_loop_ns,
        }
    noop_net_ns = per_call[NOOP_NAME]["net_ns"]
    for figures in per_call.values():
        figures["ratio_to_noop"] = figures["net_ns"] / noop_net_ns if noop_net_ns > 0 else None
    return {
        "tracking": "exact" if reads else "none",
        "alloccount_unavailable": unavailable,
        "noop_reference": NOOP_NAME,
        "calls_per_repeat": calls,
        "repeats": repeats,
        "empty_loop_ns": empty_loop_ns,
        "per_call": per_call,
        "samples_gross_ns": samples_ns,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=51, help="timed loops per candidate (default 51)")
    parser.add_argument("--calls", type=int, default=200_000, help="calls per timed loop (default 200000)")
    args = parser.parse_args(argv)
    json.dump(measure(args.calls, args.repeats), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
