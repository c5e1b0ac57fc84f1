"""Plain-text tables for overhead.py's results (the same data ``--json`` writes)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence


def _table(headers: Sequence[str], rows: List[Sequence[str]], left_columns: int = 2) -> str:
    """Align ``rows`` under ``headers``: the first ``left_columns`` left-aligned, the rest right."""
    widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if column < left_columns else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths])] + [line(row) for row in rows])


def _ratio(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}x"


def _number(value: Optional[float], digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _target(value: Optional[float], unit: str = "x") -> str:
    return "" if value is None else f"<={value:g}{unit}"


def _header(results: dict) -> List[str]:
    machine, settings = results["machine"], results["settings"]
    load_start = "/".join(f"{load:.2f}" for load in machine["load_average_1_5_15"])
    load_end = "/".join(f"{load:.2f}" for load in machine.get("load_average_at_end_1_5_15", []))
    lines = [
        f"alloccount overhead benchmark: Python {machine['python_version']} ({machine['python_implementation']}), "
        f"{machine['cpu_count']} CPUs, {machine['platform']}",
        f"alloccount {machine['alloccount_version']} (core sha256 {machine['alloccount_core_sha256']}), "
        f"memray {machine['memray_version']}; "
        f"load average {load_start} at start, {load_end} at end; wall time {results['wall_time_s']:.0f} s",
        f"{settings['rounds']} rounds{' (quick)' if settings['quick'] else ''}: every config once per round in "
        "rotated order, one fresh process per run, start-up excluded",
        "child environment: " + " ".join(f"{name}={value}" for name, value in settings["child_env"].items()),
    ]
    for name, reason in results["skipped_configs"].items():
        lines.append(f"skipped config {name}: {reason}")
    return lines


def _overhead_section(results: dict) -> List[str]:
    settings, summary = results["settings"], results["overhead"]
    headers = ["workload", "config", "iterations", "median ms", "ratio", "min-max ratio", "CPU ratio", "target",
               "verdict"]
    rows: List[List[str]] = []
    for workload, by_config in summary.items():
        for position, config in enumerate(settings["configs"]):
            figures = by_config[config]
            first = workload if position == 0 else ""
            iterations = f"{settings['iterations'][workload]:,}" if position == 0 else ""
            if "median_ns" not in figures:
                rows.append([first, config, iterations, "FAILED", "", "", "", "", ""])
                continue
            spread = f"{figures['ratio_min']:.2f}-{figures['ratio_max']:.2f}x" if figures["ratio"] else ""
            failures = f" ({figures['failures']} failed)" if figures["failures"] else ""
            rows.append([
                first, config, iterations, _number(figures["median_ns"] / 1e6) + failures, _ratio(figures["ratio"]),
                spread, _ratio(figures["cpu_ratio"]), _target(figures["target_ratio"]), figures["verdict"],
            ])
    for position, (config, mean) in enumerate(results["geometric_mean_ratio"].items()):
        rows.append(["geometric mean" if position == 0 else "", config, "", "", _ratio(mean), "", "", "", ""])
    return [
        "Overhead: wall time of the timed loop; ratio = median / untracked median of the same workload;",
        "min-max ratio = fastest and slowest run / untracked median; CPU ratio = the same median ratio for",
        "process CPU time (less sensitive to other jobs on the machine); verdicts use the wall-time ratio",
        _table(headers, rows),
    ]


def _read_cost_section(read_cost: dict) -> List[str]:
    if "error" in read_cost:
        return ["Read cost: FAILED", read_cost["error"]]
    noop = read_cost["noop_reference"]
    headers = ["call", "gross ns", "net ns", "net ratio", "gross ratio", "target", "verdict"]
    noop_gross_ns = read_cost["per_call"][noop]["median_gross_ns"]
    rows = [
        [
            name + (" (no-op)" if name == noop else ""),
            _number(figures["median_gross_ns"]), _number(figures["net_ns"]), _ratio(figures["ratio_to_noop"]),
            _ratio(figures["median_gross_ns"] / noop_gross_ns), _target(figures["target_ratio"]), figures["verdict"],
        ]
        for name, figures in read_cost["per_call"].items()
    ]
    lines = [
        f"Read cost, tracking: {read_cost['tracking']} (median of {read_cost['repeats']} loops x "
        f"{read_cost['calls_per_repeat']:,} calls; net = gross - empty loop {read_cost['empty_loop_ns']:.1f} ns; "
        f"verdict on the net ratio to {noop})",
        _table(headers, rows, left_columns=1),
    ]
    if read_cost["alloccount_unavailable"]:
        lines.append(f"alloccount reads not measured: {read_cost['alloccount_unavailable']}")
    return lines


def _table_memory_section(table_memory) -> List[str]:
    if isinstance(table_memory, dict) and "error" in table_memory:
        return ["Memory per live block: FAILED", table_memory["error"]]
    headers = ["live blocks", "config", "table B/block", "target", "verdict", "RSS B/block", "RSS over untracked"]
    rows = [
        [
            f"{row['live_blocks']:,}", row["config"], _number(row["table_bytes_per_tracked_block"]),
            _target(row.get("target_bytes_per_block"), " B"), row.get("verdict", ""),
            _number(row["rss_growth_per_block_bytes"]), _number(row["rss_over_untracked_per_block_bytes"]),
        ]
        for row in table_memory
    ]
    return [
        "Memory per live block: N floats kept alive, fresh process per row; table B/block = "
        "engine_info() table_bytes / tracked_blocks; RSS from /proc/self/statm",
        _table(headers, rows),
    ]


def _verdict_summary(results: dict) -> List[str]:
    misses: List[str] = []
    passes = 0
    checks = [
        (f"{workload}/{config}", figures.get("verdict", ""))
        for workload, by_config in results["overhead"].items()
        for config, figures in by_config.items()
    ]
    read_cost = results.get("read_cost") or {}
    checks += [(name, figures["verdict"]) for name, figures in read_cost.get("per_call", {}).items()]
    table_memory = results.get("table_memory")
    if isinstance(table_memory, list):
        checks += [(f"table bytes/block at {row['live_blocks']:,}", row.get("verdict", "")) for row in table_memory]
    for name, result in checks:
        if result == "PASS":
            passes += 1
        elif result == "MISS":
            misses.append(name)
    line = f"Targets: {passes} PASS, {len(misses)} MISS"
    return [line + (": " + ", ".join(misses) if misses else "")]


def format_results(results: dict) -> str:
    """The full report: header, overhead table, read cost, memory per block, verdict summary."""
    sections = [_header(results), _overhead_section(results)]
    if "read_cost" in results:
        sections.append(_read_cost_section(results["read_cost"]))
    if "table_memory" in results:
        sections.append(_table_memory_section(results["table_memory"]))
    sections.append(_verdict_summary(results))
    return "\n\n".join("\n".join(section) for section in sections)


def format_callgrind(result: dict, skipped: Dict[str, str]) -> str:
    """Instruction counts of the timed loop per config, with ratios to untracked."""
    headers = ["config", "loop instructions", "per iteration", "ratio"]
    rows = [
        [config, f"{figures['loop_ir']:,}", f"{figures['loop_ir'] / max(1, result['iterations']):,.0f}",
         _ratio(figures["ratio"])]
        for config, figures in result["configs"].items()
    ]
    lines = [
        f"callgrind: {result['workload']}, {result['iterations']:,} iterations after "
        f"{result['warmup_iterations']:,} warm-up; loop instructions = Ir(process) - Ir(same process, 0 iterations)",
        _table(headers, rows, left_columns=1),
    ]
    lines += [f"skipped config {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines)
