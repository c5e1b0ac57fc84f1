"""The ``alloccount`` command line: ``run``, ``report``, ``crosscheck``, ``stress``.

``alloccount run [options] script.py [args...]`` (or ``-m module``) runs a program the way
``python`` would — its own ``sys.argv``, ``sys.path[0]``, stdout/stderr and exit code —
tracking from its first line, sampling it with a :class:`~alloccount.monitor.Monitor`, and
printing a report on stderr when it ends (normally, on an exception or on Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

__all__ = ["main"]

EXIT_LEAK = 3  # --fail-on-leak and a leak was found (the program itself succeeded)
EXIT_USAGE = 2


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (seconds, intervals)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {value}")
    return value


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script (like python -m)")
    parser.add_argument("target", nargs="?", help="the script to run (omit with -m)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the program")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alloccount",
        description="Allocation counting for long-running Python programs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run a program under alloccount and report memory growth and leaks",
        description="Run a Python program (like `python script.py args` or `python -m module args`) "
        "tracking allocations from its first line; print a report when it exits.",
    )
    run.add_argument("--interval", type=positive_float, default=1.0, metavar="S", help="seconds between samples (default 1)")
    run.add_argument("--report", metavar="DIR", help="write history.json, history.csv, report.txt, report.html (and report.png with matplotlib) to DIR")
    run.add_argument("--fail-on-leak", action="store_true", help=f"exit with status {EXIT_LEAK} when a leak is found (if the program itself succeeded)")
    run.add_argument("--mode", choices=("exact", "counts"), default="exact", help="tracking mode (default exact)")
    run.add_argument("--live", action="store_true", help="show a refreshing view of the categories on stderr while the program runs")
    run.add_argument("--prometheus", type=_port, metavar="PORT", help="serve Prometheus metrics on 127.0.0.1:PORT while the program runs")
    _add_target(run)

    report = sub.add_parser("report", help="render a saved history (history.json) as text, HTML or PNG")
    report.add_argument("history", help="a history.json written by `alloccount run --report` or Monitor.to_json")
    report.add_argument("--format", choices=("text", "html", "png"), default="text")
    report.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout (required for png)")

    sub.add_parser("crosscheck", help="compare alloccount's counts with a memray capture (see `alloccount crosscheck -h`)", add_help=False)
    sub.add_parser("stress", help="run a program at several load levels and report unbounded growth (see `alloccount stress -h`)", add_help=False)
    return parser


# Subcommands implemented in their own modules, with their own argument parsers.
def _delegate(module: str) -> Callable[[List[str]], int]:
    def run(argv: List[str]) -> int:
        import importlib

        return int(importlib.import_module(module).main(argv) or 0)

    return run


_DELEGATED: Dict[str, Callable[[List[str]], int]] = {
    "crosscheck": _delegate("alloccount.crosscheck"),
    "stress": _delegate("alloccount.stress"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``alloccount`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return _DELEGATED[argv[0]](argv[1:])
    parser = _build_parser()
    options = parser.parse_args(argv)
    if options.command == "report":
        return _report(options, parser)
    return _run(options, parser)


def _report(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .history import History
    from .report import render

    if options.format == "png" and not options.output:
        parser.error("report --format png needs -o/--output PATH")
    try:
        history = History.from_json(options.history)
    except ValueError as error:
        print(f"alloccount report: {error}", file=sys.stderr)
        return EXIT_USAGE
    output = render(history, None, options.format, path=options.output)
    if not options.output:
        sys.stdout.write(output if isinstance(output, str) else output.decode())
    return 0


def _run(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if options.module is None and not options.target:
        parser.error("run needs a script (or -m module)")
    if options.module is not None and options.target:
        options.args = [options.target] + options.args  # `-m mod a b`: a and b belong to mod
    if options.module is None and not os.path.exists(options.target):
        print(f"alloccount run: {options.target}: no such file", file=sys.stderr)
        return EXIT_USAGE

    import alloccount

    from .session import RunSession

    session = RunSession(
        interval=options.interval,
        mode=options.mode,
        live=options.live,
        prometheus_port=options.prometheus,
        command=(["-m", options.module] if options.module else [options.target]) + options.args,
    )
    status = session.execute(lambda: _run_program(options))
    verdicts = session.finish(report_dir=options.report)
    if options.fail_on_leak and status == 0 and any(v.leaking for v in verdicts.values()):
        status = EXIT_LEAK
    alloccount.stop()
    return status


def _run_program(options: argparse.Namespace) -> int:
    """Run the target as __main__ with its own argv; return its exit status."""
    if options.module:
        sys.argv = [options.module] + options.args
        sys.path.insert(0, os.getcwd())
        runner = lambda: runpy.run_module(options.module, run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        script = str(Path(options.target))
        sys.argv = [script] + options.args
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runner = lambda: runpy.run_path(script, run_name="__main__")  # noqa: E731
    try:
        runner()
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("alloccount: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except BaseException:  # the program's own error: show it as python would, then report
        traceback.print_exc()
        return 1
    return 0
