"""``alloccount stress``: run a program at several load levels and report unbounded growth.

    alloccount stress --loads 1,2,4 --duration 60 [--interval S] [--out DIR] script.py [args...]

Each load level runs the program in its own ``alloccount run`` child for ``--duration``
seconds (then Ctrl-C, which the program sees as KeyboardInterrupt and ``alloccount run``
reports), with the load passed in the environment variable ``ALLOCCOUNT_LOAD``. For each level
the report directory holds the history, a text, HTML and PNG report (one plot per load); the
summary table says whether memory grows without bound at that load. Exit status: 0 when no
level leaks, 3 when one does, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, TextIO

from ._units import format_bytes, format_rate
from .cli import positive_float
from .history import History
from .leaks import LeakVerdict, detect_leaks

__all__ = ["LOAD_ENV", "LoadResult", "main", "run_stress"]

#: The environment variable that carries the load level to the program.
LOAD_ENV = "ALLOCCOUNT_LOAD"
EXIT_LEAK = 3


@dataclass(frozen=True)
class LoadResult:
    """What one load level showed."""

    load: float
    exit_code: int
    report_dir: Path
    verdicts: "dict[str, LeakVerdict]"
    peak_bytes: int
    rss_bytes: int

    @property
    def leaking(self) -> List[str]:
        """Names of the series that grow without bound at this load."""
        return sorted(name for name, v in self.verdicts.items() if v.leaking)


def _loads(text: str) -> List[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--loads takes numbers separated by commas, e.g. 1,2,4; got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--loads needs positive numbers, got {text!r}")
    return values


class _Progress:
    """A one-line progress bar on a terminal; a line per load level elsewhere."""

    def __init__(self, stream: TextIO, total_s: float) -> None:
        self.stream = stream
        self.total_s = total_s
        self.tty = stream.isatty()

    def update(self, done_s: float, label: str) -> None:
        if not self.tty:
            return
        width = 30
        filled = int(width * min(1.0, done_s / self.total_s))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done_s:5.0f}/{self.total_s:.0f} s  {label}   ")
        self.stream.flush()

    def line(self, text: str) -> None:
        self.stream.write(("\r" if self.tty else "") + text + "\n")
        self.stream.flush()


def run_stress(
    command: Sequence[str],
    loads: Sequence[float],
    duration_s: float,
    *,
    interval_s: float = 0.5,
    out_dir: Path = Path("alloccount-stress"),
    stream: TextIO = sys.stderr,
) -> List[LoadResult]:
    """Run ``command`` (script and args, or ``-m module ...``) once per load; see the module doc."""
    progress = _Progress(stream, duration_s * len(loads))
    results = []
    for index, load in enumerate(loads):
        report_dir = out_dir / f"load-{load:g}"
        argv = [sys.executable, "-m", "alloccount", "run", "--interval", str(interval_s), "--report", str(report_dir), *command]
        env = dict(os.environ, **{LOAD_ENV: f"{load:g}"})
        with open(out_dir / f"load-{load:g}.log", "w") as log:
            child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            start = time.monotonic()
            while child.poll() is None and time.monotonic() - start < duration_s:
                progress.update(index * duration_s + time.monotonic() - start, f"load {load:g} ({index + 1}/{len(loads)})")
                time.sleep(0.25)
            if child.poll() is None:
                child.send_signal(signal.SIGINT)  # the program sees Ctrl-C; alloccount run still reports
            try:
                code = child.wait(timeout=max(30.0, 10 * interval_s))
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
        results.append(_result(load, code, report_dir))
        progress.line(_summary_line(results[-1]))
    return results


def _result(load: float, code: int, report_dir: Path) -> LoadResult:
    history_file = report_dir / "history.json"
    if not history_file.exists():
        return LoadResult(load, code, report_dir, {}, 0, 0)
    history = History.from_json(history_file)
    samples = history.snapshot()
    last = samples[-1] if samples else None
    return LoadResult(
        load=load,
        exit_code=code,
        report_dir=report_dir,
        verdicts=detect_leaks(history),
        peak_bytes=last.peak_bytes if last else 0,
        rss_bytes=last.rss_bytes if last else 0,
    )


def _summary_line(result: LoadResult) -> str:
    total = result.verdicts.get("total")
    slope = format_rate(total.slope_bytes_per_s) if total is not None else "-"
    if not result.verdicts:
        verdict = f"NO DATA (exit {result.exit_code}; see {result.report_dir}.log)"
    elif total is not None and total.window_s == 0.0:
        verdict = f"TOO SHORT to judge ({total.reason}): raise --duration or lower --interval"
    elif result.leaking:
        verdict = "GROWS WITHOUT BOUND: " + ", ".join(result.leaking)
    else:
        verdict = "bounded"
    return f"load {result.load:<6g} peak {format_bytes(result.peak_bytes):>10}  RSS {format_bytes(result.rss_bytes):>10}  trend {slope:>12}  {verdict}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``alloccount stress`` entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="alloccount stress",
        description=f"Run a program at several load levels (passed as ${LOAD_ENV}) and report whether "
        "memory grows without bound at each.",
    )
    parser.add_argument("--loads", type=_loads, default=[1.0, 2.0, 4.0], help="comma-separated load levels (default 1,2,4)")
    parser.add_argument("--duration", type=positive_float, default=60.0, metavar="S", help="seconds per load level (default 60)")
    parser.add_argument("--interval", type=positive_float, default=0.5, metavar="S", help="seconds between samples (default 0.5)")
    parser.add_argument("--out", default="alloccount-stress", metavar="DIR", help="where reports go (default ./alloccount-stress)")
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a library module (like python -m)")
    parser.add_argument("target", nargs="?", help="the script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the program")
    options = parser.parse_args(argv)
    if options.module is None and not options.target:
        parser.error("stress needs a script (or -m module)")
    if options.module is None and not os.path.exists(options.target):
        parser.error(f"{options.target}: no such file")
    if options.module:
        command = ["-m", options.module] + ([options.target] if options.target else []) + options.args
    else:
        command = [options.target] + options.args
    out_dir = Path(options.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = run_stress(command, options.loads, options.duration, interval_s=options.interval, out_dir=out_dir)
    print(f"alloccount stress: reports in {out_dir}/load-*/ (report.html, report.png per load)", file=sys.stderr)
    return EXIT_LEAK if any(r.leaking for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
