"""alloccount's overhead benchmark: workloads x tracking configurations, reads, table memory.

Usage::

    python bench/overhead.py                   # full run: 5 interleaved rounds (~4 min on 2 cores)
    python bench/overhead.py --quick           # smoke run for CI (< 60 s)
    python bench/overhead.py --json out.json   # also write raw timings, medians, ratios, machine info
    python bench/overhead.py --callgrind small_object_churn [--configs untracked,exact]

Every timed run is a fresh ``bench/_runner.py`` process (start-up excluded from the timing). Round r
runs every (workload, config) pair once, with the config order rotated by r so that each config
takes each position equally often and slow drift on a shared machine does not favour any of them.
Ratios are to the untracked median of the same workload. See bench/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import _configs
import _report
import _runner
import _workloads
import table_memory

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RUNNER_PATH = os.path.join(BENCH_DIR, "_runner.py")

DEFAULT_ROUNDS = 5
QUICK_ROUNDS = 3
QUICK_ITERATION_DIVISOR = 10  # a quick run times 1/10 of the calibrated iterations (~30-70 ms)
CALLGRIND_ITERATION_DIVISOR = 20  # callgrind runs ~50x slower; 1/20 keeps each run within seconds
TABLE_SIZES = [10_000, 100_000, 1_000_000]
QUICK_TABLE_SIZES = [10_000, 100_000]
READ_REPEATS, READ_CALLS = 51, 200_000
QUICK_READ_REPEATS, QUICK_READ_CALLS = 11, 20_000

# Targets (from the issue). Ratios are median time / untracked median time of the same workload.
EXACT_CHURN_TARGET_RATIO = 1.15  # small-object churn: every allocation is a table insert + delete
EXACT_TARGET_RATIO = 1.10
COUNTS_TARGET_RATIO = 1.05
READ_TARGET_RATIOS = {"alloccount.current_bytes()": 1.5, "alloccount.stats()": 8.0}
TABLE_BYTES_PER_BLOCK_TARGET = 32.0

# glibc trims a thread arena's heap as soon as its free top exceeds the trim threshold, and the next
# allocation faults the pages back in. Whether that happens depends on where long-lived blocks land,
# which any tracker's own allocations perturb: measured on threads_mixed, the untracked run spent
# 0.3 s of system time in 117k page faults that the exact run avoided by chance, so exact looked 2x
# *faster*. A fixed threshold, the same for every config, keeps that out of the comparison.
GLIBC_TRIM_TUNABLE = "glibc.malloc.trim_threshold=67108864"  # 64 MiB


def configure_child_environment(glibc_default_trim: bool) -> Dict[str, str]:
    """Set the environment every bench child inherits; return the settings for the report."""
    # Fixed hash seed: dict/set layouts, hence timings, are the same in every run.
    settings = {"PYTHONHASHSEED": "0"}
    if not glibc_default_trim:
        existing = os.environ.get("GLIBC_TUNABLES")
        settings["GLIBC_TUNABLES"] = f"{existing}:{GLIBC_TRIM_TUNABLE}" if existing else GLIBC_TRIM_TUNABLE
    os.environ.update(settings)
    return settings


def target_ratio(workload: str, config: str) -> Optional[float]:
    """The overhead target for (workload, config), or None when the config has no target."""
    if config == "exact":
        return EXACT_CHURN_TARGET_RATIO if workload == "small_object_churn" else EXACT_TARGET_RATIO
    if config == "counts":
        return COUNTS_TARGET_RATIO
    return None


def verdict(measured: Optional[float], target: Optional[float]) -> str:
    """PASS/MISS against an upper-bound target; empty when there is no target or no figure."""
    if target is None or measured is None:
        return ""
    return "PASS" if measured <= target else "MISS"


def _run_json(command: List[str]) -> dict:
    """Run a bench child process and parse the JSON object on its last stdout line."""
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {completed.returncode}:\n{completed.stderr.strip()}"
        )
    try:
        return json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as error:
        raise RuntimeError(f"{' '.join(command)} printed no JSON result ({error}):\n{completed.stderr.strip()}")


def machine_info() -> dict:
    """What the figures depend on: interpreter, CPU count, platform, load, tool versions."""
    info = {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "load_average_1_5_15": list(os.getloadavg()),
    }
    for module_name in ("alloccount", "memray"):
        try:
            module = __import__(module_name)
            info[f"{module_name}_version"] = getattr(module, "__version__", "unknown")
        except Exception:  # not installed: the report says which configs were skipped and why
            info[f"{module_name}_version"] = None
    try:
        import alloccount._core

        # The version string does not change while the engine is being worked on; the hash of the
        # compiled core tells which build a result file was measured with.
        with open(alloccount._core.__file__, "rb") as core_file:
            info["alloccount_core_sha256"] = hashlib.sha256(core_file.read()).hexdigest()[:16]
    except Exception:
        info["alloccount_core_sha256"] = None
    return info


# --- timing runs ---------------------------------------------------------------------------------------


def run_rounds(workloads: List[str], configs: List[str], rounds: int, iteration_divisor: int) -> List[dict]:
    """Run every (workload, config) once per round, config order rotated by round; return raw runs."""
    runs: List[dict] = []
    total = rounds * len(workloads) * len(configs)
    for round_index in range(rounds):
        offset = round_index % len(configs)
        config_order = configs[offset:] + configs[:offset]
        for workload in workloads:
            iterations = max(1, _workloads.WORKLOADS[workload].iterations // iteration_divisor)
            for config in config_order:
                command = [sys.executable, RUNNER_PATH, workload, config, str(iterations)]
                try:
                    run = _run_json(command)
                except RuntimeError as error:
                    run = {"workload": workload, "config": config, "iterations": iterations, "error": str(error)}
                run["round"] = round_index
                runs.append(run)
                _progress(f"[{len(runs)}/{total}] round {round_index + 1}: {workload} / {config}: "
                          + (f"{run['elapsed_ns'] / 1e6:.1f} ms" if "error" not in run else "FAILED"))
    return runs


def summarize_overhead(runs: List[dict], workloads: List[str], configs: List[str]) -> Dict[str, Dict[str, dict]]:
    """Median, min, max per (workload, config), ratios to the untracked median, targets, verdicts.

    Verdicts use wall time (``elapsed_ns``); the CPU-time ratio is reported beside it as a check.
    """
    summary: Dict[str, Dict[str, dict]] = {}
    for workload in workloads:
        good_runs = {
            config: [run for run in runs
                     if run["workload"] == workload and run["config"] == config and "error" not in run]
            for config in configs
        }
        untracked_runs = good_runs.get("untracked") or []
        baseline_ns = statistics.median(run["elapsed_ns"] for run in untracked_runs) if untracked_runs else None
        baseline_cpu_ns = statistics.median(run["cpu_ns"] for run in untracked_runs) if untracked_runs else None
        summary[workload] = {}
        for config in configs:
            elapsed_ns = [run["elapsed_ns"] for run in good_runs[config]]
            cpu_median_ns = statistics.median(run["cpu_ns"] for run in good_runs[config]) if elapsed_ns else None
            failures = sum(1 for run in runs if run["workload"] == workload
                           and run["config"] == config and "error" in run)
            if not elapsed_ns:
                summary[workload][config] = {"failures": failures}
                continue
            median_ns = statistics.median(elapsed_ns)
            ratio = median_ns / baseline_ns if baseline_ns else None
            target = target_ratio(workload, config)
            summary[workload][config] = {
                "median_ns": median_ns,
                "min_ns": min(elapsed_ns),
                "max_ns": max(elapsed_ns),
                "ratio": ratio,
                "ratio_min": min(elapsed_ns) / baseline_ns if baseline_ns else None,
                "ratio_max": max(elapsed_ns) / baseline_ns if baseline_ns else None,
                "cpu_median_ns": cpu_median_ns,
                "cpu_ratio": cpu_median_ns / baseline_cpu_ns if baseline_cpu_ns else None,
                "target_ratio": target,
                "verdict": verdict(ratio, target),
                "failures": failures,
            }
    return summary


def geometric_means(summary: Dict[str, Dict[str, dict]], configs: List[str]) -> Dict[str, Optional[float]]:
    """Geometric mean of each config's median ratios over the workloads."""
    means: Dict[str, Optional[float]] = {}
    for config in configs:
        ratios = [figures[config].get("ratio") for figures in summary.values()]
        means[config] = statistics.geometric_mean(ratios) if ratios and all(ratios) else None
    return means


# --- reads and table memory ------------------------------------------------------------------------------


def run_read_cost(repeats: int, calls: int) -> dict:
    """Run bench/read_cost.py in a fresh process; add targets and verdicts to its result."""
    command = [sys.executable, os.path.join(BENCH_DIR, "read_cost.py"), "--repeats", str(repeats), "--calls", str(calls)]
    result = _run_json(command)
    for name, figures in result["per_call"].items():
        target = READ_TARGET_RATIOS.get(name)
        figures["target_ratio"] = target
        figures["verdict"] = verdict(figures["ratio_to_noop"], target)
    return result


def run_table_memory(sizes: List[int], skipped: Dict[str, str]) -> List[dict]:
    """One fresh process per (size, config); adds the RSS growth per block over untracked."""
    configs = [config for config in table_memory.TABLE_MEMORY_CONFIGS if config not in skipped]
    rows: List[dict] = []
    for live_blocks in sizes:
        by_config: Dict[str, dict] = {}
        for config in configs:
            command = [sys.executable, os.path.join(BENCH_DIR, "table_memory.py"), config, str(live_blocks)]
            by_config[config] = _run_json(command)
            _progress(f"table memory: {live_blocks:,} live blocks / {config}")
        untracked_per_block = by_config.get("untracked", {}).get("rss_growth_per_block_bytes")
        for config, row in by_config.items():
            per_block = row["rss_growth_per_block_bytes"]
            row["rss_over_untracked_per_block_bytes"] = (
                per_block - untracked_per_block if per_block is not None and untracked_per_block is not None else None
            )
            if config == "exact":
                row["target_bytes_per_block"] = TABLE_BYTES_PER_BLOCK_TARGET
                row["verdict"] = verdict(row["table_bytes_per_tracked_block"], TABLE_BYTES_PER_BLOCK_TARGET)
            rows.append(row)
    return rows


# --- callgrind ---------------------------------------------------------------------------------------------


def _callgrind_instructions(workload: str, config: str, iterations: int, warmup_iterations: int) -> int:
    """Total instructions (Ir) of one runner process under callgrind."""
    with tempfile.TemporaryDirectory(prefix="alloccount-callgrind-") as directory:
        out_path = os.path.join(directory, "callgrind.out")
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out_path}",
            sys.executable, RUNNER_PATH, workload, config, str(iterations),
            "--warmup-iterations", str(warmup_iterations),
        ]
        _run_json(command)
        with open(out_path) as out_file:
            for line in out_file:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise RuntimeError(f"no instruction total in callgrind output for {workload}/{config}")


def run_callgrind(workload: str, configs: List[str], iterations: Optional[int]) -> dict:
    """Instructions of the timed loop per config: Ir(iterations) - Ir(0 iterations), same warm-up.

    Subtracting a run that does everything but the timed loop removes start-up, imports, set-up and
    warm-up, which a whole-process instruction count would otherwise include.
    """
    if iterations is None:
        iterations = max(1, _workloads.WORKLOADS[workload].iterations // CALLGRIND_ITERATION_DIVISOR)
    warmup_iterations = _runner.default_warmup_iterations(iterations)
    result = {"workload": workload, "iterations": iterations, "warmup_iterations": warmup_iterations, "configs": {}}
    for config in configs:
        _progress(f"callgrind: {workload} / {config} ({iterations} iterations, then 0)")
        full_ir = _callgrind_instructions(workload, config, iterations, warmup_iterations)
        empty_ir = _callgrind_instructions(workload, config, 0, warmup_iterations)
        result["configs"][config] = {"process_ir": full_ir, "baseline_process_ir": empty_ir, "loop_ir": full_ir - empty_ir}
    untracked = result["configs"].get("untracked")
    for figures in result["configs"].values():
        figures["ratio"] = figures["loop_ir"] / untracked["loop_ir"] if untracked else None
    return result


# --- command line --------------------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _names(text: str, known: List[str], kind: str) -> List[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {kind}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"interleaved rounds (default {DEFAULT_ROUNDS}; {QUICK_ROUNDS} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: 1/{QUICK_ITERATION_DIVISOR} of the iterations, fewer read loops, "
                             "table sizes up to 100k")
    parser.add_argument("--json", metavar="PATH", help="write raw timings, summaries and machine info here")
    parser.add_argument("--workloads", default=",".join(_workloads.workload_names()),
                        help="comma-separated subset (default: all)")
    parser.add_argument("--configs", default=None,
                        help="comma-separated subset (default: all; with --callgrind: untracked,exact,counts); "
                             "untracked is always added")
    parser.add_argument("--skip-reads", action="store_true", help="do not measure stats()/current_bytes() cost")
    parser.add_argument("--skip-table-memory", action="store_true", help="do not measure bytes per live block")
    parser.add_argument("--callgrind", metavar="WORKLOAD", choices=_workloads.workload_names(),
                        help="instead of timing: count the timed loop's instructions under callgrind "
                             "for --configs (default here: untracked,exact,counts)")
    parser.add_argument("--glibc-default-trim", action="store_true",
                        help=f"run children with glibc's own heap trimming instead of {GLIBC_TRIM_TUNABLE}")
    parser.add_argument("--iterations", type=int, default=None,
                        help=f"with --callgrind: iterations to run (default: calibrated/{CALLGRIND_ITERATION_DIVISOR})")
    args = parser.parse_args(argv)

    workloads = _names(args.workloads, _workloads.workload_names(), "workload")
    if args.configs is not None:
        requested = _names(args.configs, _configs.CONFIG_NAMES, "config")
    elif args.callgrind:
        requested = ["untracked", "exact", "counts"]  # tracemalloc/memray under callgrind take minutes
    else:
        requested = list(_configs.CONFIG_NAMES)
    if "untracked" not in requested:
        requested.insert(0, "untracked")  # every ratio is relative to it
    child_env = configure_child_environment(args.glibc_default_trim)
    skipped = {name: reason for name in requested if (reason := _configs.unavailable_reason(name))}
    configs = [name for name in requested if name not in skipped]

    if args.callgrind:
        if shutil.which("valgrind") is None:
            raise SystemExit("--callgrind needs valgrind on PATH (Debian: apt-get install valgrind)")
        result = run_callgrind(args.callgrind, configs, args.iterations)
        print(_report.format_callgrind(result, skipped))
        if args.json:
            _write_json(args.json, {"machine": machine_info(), "child_env": child_env,
                                    "skipped_configs": skipped, "callgrind": result})
        return 0

    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    iteration_divisor = QUICK_ITERATION_DIVISOR if args.quick else 1
    started_s = time.monotonic()
    results = {"machine": machine_info(), "skipped_configs": skipped}
    results["settings"] = {
        "rounds": rounds, "quick": args.quick, "workloads": workloads, "configs": configs,
        "iterations": {name: max(1, _workloads.WORKLOADS[name].iterations // iteration_divisor) for name in workloads},
        "child_env": child_env,
    }
    runs = run_rounds(workloads, configs, rounds, iteration_divisor)
    summary = summarize_overhead(runs, workloads, configs)
    results.update(runs=runs, overhead=summary, geometric_mean_ratio=geometric_means(summary, configs))
    if not args.skip_reads:
        repeats, calls = (QUICK_READ_REPEATS, QUICK_READ_CALLS) if args.quick else (READ_REPEATS, READ_CALLS)
        _progress(f"read cost: {repeats} repeats x {calls:,} calls")
        results["read_cost"] = _or_error(run_read_cost, repeats, calls)
    if not args.skip_table_memory:
        results["table_memory"] = _or_error(run_table_memory, QUICK_TABLE_SIZES if args.quick else TABLE_SIZES, skipped)
    results["machine"]["load_average_at_end_1_5_15"] = list(os.getloadavg())
    results["wall_time_s"] = time.monotonic() - started_s

    print(_report.format_results(results))
    if args.json:
        _write_json(args.json, results)
    errors = [run["error"] for run in runs if "error" in run]
    errors += [section["error"] for section in (results.get("read_cost"), results.get("table_memory"))
               if isinstance(section, dict) and "error" in section]
    for error in errors:
        _progress(error)
    return 1 if errors else 0


def _or_error(measure: Callable[..., Any], *args: Any) -> Any:
    """Run one measurement section; a crash in it is reported, not allowed to lose the others."""
    try:
        return measure(*args)
    except RuntimeError as error:
        return {"error": str(error)}


def _write_json(path: str, data: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as out_file:
        json.dump(data, out_file, indent=2)
    _progress(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
