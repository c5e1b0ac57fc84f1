"""One monitored run of a program: tracking, sampling, optional live view and exporter, report.

Used by ``alloccount run`` (and ``alloccount stress`` for each load level); kept apart from
the argument parsing so it can be driven from Python too.
"""
from __future__ import annotations

import os
import sys
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
        if live:
            from .live import LiveView

            self.monitor.on_sample = LiveView(self.monitor, title="alloccount run " + " ".join(command or []))
        if prometheus_port is not None:
            from .prometheus import start_http_server

            self._server = start_http_server(prometheus_port, monitor=self.monitor)
        self.monitor.start()

    def execute(self, body: Callable[[], int]) -> int:
        """Run ``body`` (the program); a Ctrl-C that escapes it still ends in a report."""
        try:
            return body()
        except KeyboardInterrupt:
            return 130

    def finish(self, report_dir: Optional[str] = None) -> Dict[str, LeakVerdict]:
        """Stop sampling, print the text report on stderr, write the files; return the verdicts."""
        from .report import render

        self.monitor.stop(final_sample=False)
        if self._server is not None:
            self._server.shutdown()
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
