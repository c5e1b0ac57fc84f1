"""One monitored run of a program: tracking, sampling, optional live view and exporter, report.

Used by ``alloccount run`` (and ``alloccount stress`` for each load level); kept apart from
the argument parsing so it can be driven from Python too.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import _tracking
from .leaks import LeakVerdict
from .monitor import Monitor

__all__ = ["RunSession"]


class RunSession:
    """Starts tracking and a monitor; :meth:`finish` stops them and writes the report."""

    def __init__(
        self,
        *,
        interval: float = 1.0,
        mode: str = "exact",
        live: bool = False,
        prometheus_port: Optional[int] = None,
        command: Optional[List[str]] = None,
        report_stream=None,
    ) -> None:
        _tracking.start(mode=mode)
        self.report_stream = report_stream or sys.stderr
        self.monitor = Monitor(interval=interval, meta={"command": " ".join(command or []), "mode": mode})
        self._server = None
        self._exit_t = float("inf")
        if live:
            from .live import LiveView

            self.monitor.on_sample = LiveView(self.monitor, title="alloccount run " + " ".join(command or []))
        if prometheus_port is not None:
            from .prometheus import start_http_server

            self._server = start_http_server(prometheus_port, monitor=self.monitor)
            print(f"alloccount: serving Prometheus metrics on {self._server.url}", file=self.report_stream, flush=True)
        self.monitor.start()

    def execute(self, body: Callable[[], int]) -> int:
        """Run ``body`` (the program); a Ctrl-C that escapes it still ends in a report.

        Samples taken once the program started to exit (after a SIGINT arrived, or within the
        last interval before it returned, while its objects were being dropped) are removed
        before the verdicts: a program's teardown is not a "one-off step" of its memory.
        """
        previous = signal.getsignal(signal.SIGINT)
        installed = False
        if threading.current_thread() is threading.main_thread() and previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._on_sigint)
            installed = True
        try:
            return body()
        except KeyboardInterrupt:
            return 130
        finally:
            self._exit_t = min(self._exit_t, self.monitor.elapsed_s() - self.monitor.interval)
            if installed:
                signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum: int, frame: object) -> None:
        self._exit_t = min(self._exit_t, self.monitor.elapsed_s())
        signal.default_int_handler(signum, frame)

    def finish(self, report_dir: Optional[str] = None) -> Dict[str, LeakVerdict]:
        """Stop sampling, print the text report on stderr, write the files; return the verdicts."""
        from .report import render

        self.monitor.stop(final_sample=False, keep_until_s=self._exit_t)
        if self._server is not None:
            self._server.close()
        verdicts = self.monitor.verdicts()
        history = self.monitor.history
        text = render(history, verdicts, "text")
        print("\n" + str(text), file=self.report_stream, end="")
        if report_dir:
            self._write_files(Path(report_dir), history, verdicts)
        return verdicts

    def _write_files(self, directory: Path, history, verdicts) -> None:
        from .report import render

        directory.mkdir(parents=True, exist_ok=True)
        history.to_json(directory / "history.json")
        history.to_csv(directory / "history.csv")
        render(history, verdicts, "text", path=directory / "report.txt")
        render(history, verdicts, "html", path=directory / "report.html")
        written = ["history.json", "history.csv", "report.txt", "report.html"]
        try:
            render(history, verdicts, "png", path=directory / "report.png")
            written.append("report.png")
        except ImportError as error:  # matplotlib is an optional extra
            print(f"alloccount: no PNG report: {error}", file=self.report_stream)
        print(f"alloccount: wrote {', '.join(written)} to {os.fspath(directory)}", file=self.report_stream)
