"""A background sampler: counters and RSS into a bounded history, with leak verdicts.

>>> with alloccount.Monitor(interval=1.0, on_leak=print) as monitor:   # doctest: +SKIP
...     run_service()
>>> monitor.history.to_json("history.json")                           # doctest: +SKIP

The sampler thread runs in its own category, ``"<alloccount>"``: its allocations (the history
itself) are kept out of the user's categories and out of the sampled total, so a monitor that
fills its ring is never mistaken for a leak.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from typing import Any, Callable, Dict, Mapping, Optional

from . import _core
from ._units import format_bytes
from .categories import category, category_stats
from .history import History, Sample
from .leaks import LeakVerdict, detect_leaks

__all__ = ["MONITOR_CATEGORY", "LeakWarning", "Monitor", "read_rss_bytes"]

#: The category the sampler thread allocates in; excluded from samples.
MONITOR_CATEGORY = "<alloccount>"
#: Two hours at one sample a second: a slow leak (2 KB/s under a 5 MB sawtooth) needs about
#: an hour of samples to be called; each sample costs ~1-3 KB with a handful of categories.
DEFAULT_MONITOR_MAXLEN = 7_200

logger = logging.getLogger("alloccount")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class LeakWarning(ResourceWarning):
    """Issued (through :mod:`warnings`) when a monitored series starts to look like a leak."""


def read_rss_bytes() -> int:
    """Resident set size of this process from ``/proc/self/statm`` (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


class Monitor:
    """Samples ``stats()``, ``category_stats()`` and RSS every ``interval`` seconds.

    Parameters:
        interval: seconds between samples (> 0).
        maxlen: samples kept (a ring: memory stays flat however long the service runs).
        on_sample: called with each :class:`Sample` (in the sampler thread).
        on_leak: called with a :class:`LeakVerdict` when a series starts leaking (once, until it
            stops); a :class:`LeakWarning` and a log record are issued as well.
        report_every_s: log a one-line summary at INFO level every so many seconds.
        check_every: run leak detection every so many samples (default 60: once a minute at
            1 s; a check over a full two-hour ring with a few categories holds the GIL for
            ~0.3 s, see bench/monitor_cost.py).
        limits: ``{series key: limit_bytes}`` for the projected time to a limit (keys as in
            :func:`alloccount.leaks.detect_leaks`: ``"total"``, ``"rss"``, ``"category:NAME"``).
        leak_options: passed to :func:`alloccount.leaks.detect_leaks` (``warmup``,
            ``min_samples``, ``alpha``, ``min_slope_bytes_per_s``).
        meta: stored in ``history.meta`` (e.g. the command line).

    Use as a context manager or with :meth:`start`/:meth:`stop`. Tracking must be started
    (``alloccount.start()``) before samples mean anything; the monitor does not start it.
    """

    def __init__(
        self,
        interval: float = 1.0,
        *,
        maxlen: Optional[int] = DEFAULT_MONITOR_MAXLEN,
        on_sample: Optional[Callable[[Sample], Any]] = None,
        on_leak: Optional[Callable[[LeakVerdict], Any]] = None,
        report_every_s: Optional[float] = None,
        check_every: int = 60,
        limits: Optional[Mapping[str, float]] = None,
        leak_options: Optional[Mapping[str, Any]] = None,
        meta: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"Monitor(interval=...) takes seconds as a number, not {type(interval).__name__}")
        if not interval > 0:
            raise ValueError(f"Monitor(interval={interval!r}): must be > 0 seconds")
        if not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"Monitor(check_every={check_every!r}): must be an int >= 1")
        if report_every_s is not None and not report_every_s > 0:
            raise ValueError(f"Monitor(report_every_s={report_every_s!r}): must be > 0 seconds or None")
        self.interval = float(interval)
        self.on_sample = on_sample
        self.on_leak = on_leak
        self.report_every_s = report_every_s
        self.check_every = check_every
        self.limits = dict(limits or {})
        self.leak_options = dict(leak_options or {})
        self.history = History(maxlen=maxlen, meta={"interval_s": self.interval, "pid": os.getpid(), **(meta or {})})
        self._verdicts: Dict[str, LeakVerdict] = {}
        self._leaking: set = set()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._t0 = 0.0
        self._last_report = 0.0
        self._lock = threading.Lock()
        self._own = category(MONITOR_CATEGORY)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> "Monitor":
        """Start the sampler thread (takes a first sample at once)."""
        if self._thread is not None:
            raise RuntimeError("Monitor already started")
        self._stop.clear()
        self._t0 = time.monotonic()
        self._last_report = self._t0
        self.history.meta.setdefault("start_time", time.time())
        self._thread = threading.Thread(target=self._run, name="alloccount-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, final_sample: bool = True, keep_until_s: Optional[float] = None) -> None:
        """Stop sampling and run leak detection once more over the whole history.

        ``final_sample=False`` skips the last sample and ``keep_until_s`` drops the samples
        taken after that time: ``alloccount run`` stops after the program has returned and
        dropped its objects, which is not the state worth judging.
        """
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._thread = None
        with self._own:
            if final_sample:
                self.sample()
            if keep_until_s is not None:
                self.history.meta["exit_samples_dropped"] = self.history.drop_after(keep_until_s)
            self.check()

    def elapsed_s(self) -> float:
        """Seconds since :meth:`start`, on the clock of the samples' ``t_s``."""
        return time.monotonic() - self._t0

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the sampler thread runs."""
        return self._thread is not None

    def _run(self) -> None:
        with self._own:
            self.sample()
            while not self._stop.wait(self.interval):
                try:
                    self._tick()
                except Exception:  # a callback or a report failing must not kill the sampler
                    logger.exception("alloccount monitor: sampling failed")

    def _tick(self) -> None:
        self.sample()
        if len(self.history) % self.check_every == 0:
            self.check()
        now = time.monotonic()
        if self.report_every_s is not None and now - self._last_report >= self.report_every_s:
            self._last_report = now
            logger.info("alloccount: %s", self.summary_line())

    # -------------------------------------------------------------- sampling

    def sample(self) -> Sample:
        """Take one sample now, append it to the history and return it."""
        per_category = category_stats()
        own = per_category.pop(MONITOR_CATEGORY, None)
        total = _core.stats()
        own_bytes = (own.current_bytes or 0) if own is not None else 0
        current = total.current_bytes
        sample = Sample(
            t_s=time.monotonic() - self._t0,
            wall_time=time.time(),
            current_bytes=(current - own_bytes) if current is not None else 0,
            peak_bytes=total.peak_bytes or 0,
            allocations=total.allocations - (own.allocations if own is not None else 0),
            frees=(total.frees or 0) - ((own.frees or 0) if own is not None else 0),
            rss_bytes=read_rss_bytes(),
            categories={
                name: {
                    "current_bytes": s.current_bytes or 0,
                    "peak_bytes": s.peak_bytes or 0,
                    "allocations": s.allocations,
                    "frees": s.frees or 0,
                    "bytes_allocated": s.bytes_allocated,
                    "bytes_freed": s.bytes_freed or 0,
                }
                for name, s in per_category.items()
                if s.allocations
            },
        )
        self.history.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)
        return sample

    # -------------------------------------------------------------- leaks

    def check(self) -> Dict[str, LeakVerdict]:
        """Run leak detection over the history now; warn and call ``on_leak`` for new leaks."""
        verdicts = detect_leaks(self.history, limits=self.limits, **self.leak_options)
        with self._lock:
            self._verdicts = verdicts
            newly = [v for key, v in verdicts.items() if v.leaking and key not in self._leaking]
            self._leaking = {key for key, v in verdicts.items() if v.leaking}
        for verdict in newly:
            message = f"alloccount: possible leak in {verdict.name}: {verdict.reason}"
            logger.warning(message)
            warnings.warn(message, LeakWarning, stacklevel=2)
            if self.on_leak is not None:
                self.on_leak(verdict)
        return verdicts

    def verdicts(self) -> Dict[str, LeakVerdict]:
        """The latest leak verdicts (computed every ``check_every`` samples and at stop)."""
        with self._lock:
            return dict(self._verdicts)

    def summary_line(self) -> str:
        """One line: bytes in use, peak, RSS and the biggest categories of the last sample."""
        samples = self.history.snapshot()
        if not samples:
            return "no samples yet"
        last = samples[-1]
        top = sorted(last.categories.items(), key=lambda item: -item[1]["current_bytes"])[:3]
        cats = ", ".join(f"{name} {format_bytes(c['current_bytes'])}" for name, c in top)
        leaking = sorted(self._leaking)
        return (
            f"in use {format_bytes(last.current_bytes)}, peak {format_bytes(last.peak_bytes)}, "
            f"RSS {format_bytes(last.rss_bytes)}; top: {cats or '-'}"
            + (f"; LEAKING: {', '.join(leaking)}" if leaking else "")
        )

    # -------------------------------------------------------------- export

    def to_json(self, path: "os.PathLike[str] | str") -> None:
        """Write the history as JSON (atomically)."""
        self.history.to_json(path)

    def to_csv(self, path: "os.PathLike[str] | str") -> None:
        """Write the history as CSV (atomically)."""
        self.history.to_csv(path)
