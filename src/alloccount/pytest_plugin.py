"""pytest plugin: allocation counts per test, allocation/memory/leak markers, a regression gate.

Registered through the ``pytest11`` entry point ``alloccount``; see docs/pytest-plugin.md.

Only the test *body* is measured (the ``pytest_pyfunc_call`` phase, fixtures' setup and
teardown excluded), on the test's own thread, with :func:`alloccount.measure`. The plugin is
inert unless asked for: in a session with no ``--alloccount*`` option and no alloccount
marker, the only hooks that run are the once-per-session ones below (options, markers,
collection, session end), which return at once; no per-test hook is registered and tracking
is never started.

Under pytest-xdist each worker measures its own tests and sends its figures to the
controller in ``config.workeroutput``; the controller merges them, prints the summary and
writes the baseline, report and history files.
"""
from __future__ import annotations

import datetime
import functools
import gc
import inspect
import json
import math
import platform
import re
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

import pytest

import alloccount
from alloccount._atomic import atomic_write
from alloccount._core import Stats
from alloccount._units import format_bytes, parse_bytes

__all__ = ["AllocCountFixture", "BodyCounts", "CategoryDelta", "parse_memory_limit", "parse_tolerance"]

_MARKER_LINES = (
    "limit_allocations(n, category=None): fail when the test body allocates more than n times "
    "(in that alloccount category, if given) [alloccount]",
    "limit_memory(limit): fail when the peak memory of the test body exceeds limit, "
    "e.g. '2 MiB' (B, KB, MB, GB, KiB, MiB, GiB) [alloccount]",
    "no_leaks(warmup=3, runs=5): run the test body warmup+runs times; fail when live blocks or "
    "bytes grow on every run after the warm-up [alloccount]",
)
_MARKER_NAMES = ("limit_allocations", "limit_memory", "no_leaks")
_DEFAULT_TOLERANCE_PERCENT = 5.0
_DEFAULT_TOP = 10
_TOP_CATEGORIES = 3
_BASELINE_FORMAT = "alloccount-pytest-counts"
_BASELINE_VERSION = 1
_WORKEROUTPUT_KEY = "alloccount"
_PER_TEST_PLUGIN_NAME = "alloccount-per-test"

# pytest-memray reads the same limit_memory marker with KB = 1024 bytes (its parser knows no
# KiB). One marker string must mean one limit whichever plugin reads it, so the decimal-looking
# units are binary here too, unlike alloccount._units.parse_bytes.
_MEMRAY_BINARY_UNITS = {"kb": "KiB", "mb": "MiB", "gb": "GiB", "tb": "TiB"}
_SIZE_UNIT = re.compile(r"^(?P<number>.*?)(?P<unit>[A-Za-z]*)\s*$")


# --------------------------------------------------------------------------------------------
# Marker arguments: parsed and validated once, at collection.
# --------------------------------------------------------------------------------------------


def _limit_allocations_signature(n: int, category: Optional[str] = None) -> None:
    """Signature of ``@pytest.mark.limit_allocations`` (bound to check the marker's arguments)."""


def _limit_memory_signature(limit: Any, *, current_thread_only: bool = False) -> None:
    """Signature of ``@pytest.mark.limit_memory``; ``current_thread_only`` is pytest-memray's."""


def _no_leaks_signature(warmup: int = 3, runs: int = 5) -> None:
    """Signature of ``@pytest.mark.no_leaks``."""


@dataclass(frozen=True)
class _Limits:
    """What the alloccount markers of one test ask for (``None``: that marker is absent)."""

    max_allocations: Optional[int] = None
    allocations_category: Optional[str] = None
    max_peak_bytes: Optional[int] = None
    memory_limit_text: str = ""
    leak_warmup_runs: Optional[int] = None
    leak_runs: int = 0


_LIMITS_KEY = pytest.StashKey[_Limits]()


def _marker_call(name: str, marker: pytest.Mark) -> str:
    """The marker as written, for error messages: ``limit_memory('2 parsecs')``."""
    parts = [repr(arg) for arg in marker.args] + [f"{key}={value!r}" for key, value in marker.kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _bind(name: str, signature_of: Callable[..., None], marker: pytest.Mark) -> Dict[str, Any]:
    try:
        bound = inspect.signature(signature_of).bind(*marker.args, **marker.kwargs)
    except TypeError as exc:
        raise ValueError(f"@pytest.mark.{_marker_call(name, marker)}: {exc}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def _non_negative_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an int, not {type(value).__name__} ({value!r})")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


def parse_memory_limit(limit: object) -> int:
    """Bytes in a ``limit_memory`` argument: an int, or ``"2 MiB"``-style text.

    Units (case-insensitive, space optional): ``B``; ``KiB``/``MiB``/``GiB``/``TiB``; and
    ``KB``/``MB``/``GB``/``TB``, which mean powers of 1024 as in pytest-memray, which reads the
    same marker. Raises ValueError naming the offending text.
    """
    if isinstance(limit, bool) or not isinstance(limit, (int, str)):
        raise ValueError(f"the limit must be a str such as '2 MiB' or an int, not {type(limit).__name__}")
    if isinstance(limit, int):
        return _non_negative_int(limit, "the limit")
    parse_bytes(limit)  # validates, naming the user's own text in any error
    match = _SIZE_UNIT.match(limit)
    assert match is not None  # the pattern matches every string
    unit = match.group("unit")
    return parse_bytes(match.group("number") + _MEMRAY_BINARY_UNITS.get(unit.lower(), unit))


def _memray_parse_error(limit: object) -> Optional[str]:
    """Why pytest-memray cannot read ``limit``, or ``None`` if it can (or is not installed).

    pytest-memray acts on every ``limit_memory`` marker, ``--memray`` or not, and an argument it
    cannot parse ("2 MiB", an int) ends its session in an internal error. Its own parser is
    the only exact statement of what it accepts.
    """
    try:
        from pytest_memray.utils import parse_memory_string
    except ImportError:
        return None
    try:
        parse_memory_string(limit)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def _parse_limits(item: pytest.Item, memray_loaded: bool) -> Optional[_Limits]:
    """The alloccount markers closest to ``item``, validated; ``None`` if it has none.

    Raises ValueError (the caller turns it into a usage error) for malformed arguments.
    """
    found = {name: item.get_closest_marker(name) for name in _MARKER_NAMES}
    if not any(found.values()):
        return None
    values: Dict[str, Any] = {}
    marker = found["limit_allocations"]
    if marker is not None:
        args = _bind("limit_allocations", _limit_allocations_signature, marker)
        where = f"@pytest.mark.{_marker_call('limit_allocations', marker)}"
        values["max_allocations"] = _non_negative_int(args["n"], f"{where}: n")
        category = args["category"]
        if category is not None and (not isinstance(category, str) or not category.strip()):
            raise ValueError(f"{where}: category must be a non-empty str or None")
        values["allocations_category"] = category
    marker = found["limit_memory"]
    if marker is not None:
        args = _bind("limit_memory", _limit_memory_signature, marker)
        where = f"@pytest.mark.{_marker_call('limit_memory', marker)}"
        try:
            values["max_peak_bytes"] = parse_memory_limit(args["limit"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not isinstance(args["current_thread_only"], bool):
            raise ValueError(f"{where}: current_thread_only must be a bool")
        memray_error = _memray_parse_error(args["limit"]) if memray_loaded else None
        if memray_error is not None:
            raise ValueError(
                f"{where}: pytest-memray is loaded and reads this marker too, but cannot parse it "
                f"({memray_error}); write the limit as it does, e.g. '2 MB' (1024-based in both "
                f"plugins), or run with -p no:memray"
            )
        values["memory_limit_text"] = repr(args["limit"])
    marker = found["no_leaks"]
    if marker is not None:
        args = _bind("no_leaks", _no_leaks_signature, marker)
        where = f"@pytest.mark.{_marker_call('no_leaks', marker)}"
        values["leak_warmup_runs"] = _non_negative_int(args["warmup"], f"{where}: warmup")
        values["leak_runs"] = _non_negative_int(args["runs"], f"{where}: runs")
        if values["leak_warmup_runs"] < 1:
            # The first run is the measured one and pays every first-time cost (imports, caches).
            raise ValueError(f"{where}: warmup must be >= 1 (the first run warms up)")
        if values["leak_runs"] < 2:
            # One growing run is noise (a cache filled once); the rule needs a repeated growth.
            raise ValueError(f"{where}: runs must be >= 2")
    return _Limits(**values)


def parse_tolerance(text: str) -> float:
    """Percent in a ``--alloccount-tolerance`` value: ``"5%"`` or ``"5"`` (both 5 percent)."""
    number = text.strip()
    if number.endswith("%"):
        number = number[:-1]
    try:
        percent = float(number)
    except ValueError:
        raise ValueError(f"--alloccount-tolerance={text!r}: expected a percentage such as '5%'") from None
    if not math.isfinite(percent) or percent < 0:
        raise ValueError(f"--alloccount-tolerance={text!r}: must be a finite percentage >= 0")
    return percent


# --------------------------------------------------------------------------------------------
# Session state
# --------------------------------------------------------------------------------------------


class BodyCounts(NamedTuple):
    """What one test body allocated (its first run, for ``no_leaks`` tests).

    ``peak_bytes`` is ``None`` when tracking runs in counts mode.
    """

    allocations: int
    bytes_allocated: int
    peak_bytes: Optional[int]


@dataclass(frozen=True)
class _Baseline:
    path: Path
    commit: Optional[str]
    python: Optional[str]
    allocations: Dict[str, int]


@dataclass
class _Options:
    """The ``--alloccount*`` command line, validated."""

    summary: bool
    top: int
    save: Optional[Path]
    compare: Optional[Path]
    tolerance_percent: float
    report: Optional[Path]
    history: Optional[Path]

    @property
    def counting(self) -> bool:
        """Whether every test body is measured (not only those with a marker)."""
        return self.summary or self.save is not None or self.compare is not None


@dataclass
class _State:
    options: _Options
    baseline: Optional[_Baseline]
    is_worker: bool
    results: Dict[str, BodyCounts] = field(default_factory=dict)
    notes: Set[str] = field(default_factory=set)
    started_tracking: bool = False
    written: List[str] = field(default_factory=list)  # lines for the summary, e.g. "wrote ..."


_STATE_KEY = pytest.StashKey[_State]()

_NOTE_MEMRAY_ACTIVE = (
    "pytest-memray is active (--memray): memray's tracker wraps alloccount's measurement, so "
    "memray's figures include alloccount's per-test bookkeeping, and alloccount's counts include "
    "the allocations memray's tracing causes in the test body (about one per Python call: "
    "frame objects). Compare alloccount counts only between runs with the same --memray setting."
)
_NOTE_MEMRAY_MARKER = (
    "pytest-memray is installed and also acts on @pytest.mark.limit_memory: both plugins "
    "enforce the limit, each with its own measurement (memray counts every thread and, by "
    "default, pymalloc arenas rather than objects). Run with -p no:memray to leave the "
    "marker to alloccount."
)


def _memray_active(config: pytest.Config) -> bool:
    """pytest-memray's own test for "on": its ``--memray`` option or its ``memray`` ini flag."""
    if not config.pluginmanager.has_plugin("memray_manager"):
        return False
    if config.getoption("memray", default=False):
        return True
    try:
        return bool(config.getini("memray"))
    except ValueError:
        return False


def _git_commit(directory: Path) -> Optional[str]:
    """``git rev-parse HEAD`` in ``directory``, or ``None`` outside a repository or without git."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def _python_version() -> str:
    # Counts differ between interpreter versions; a baseline records which one produced it.
    return f"{platform.python_implementation()} {platform.python_version()}"


def _load_baseline(path: Path) -> _Baseline:
    """Read a file written by ``--alloccount-save``; UsageError when missing or malformed."""
    hint = f"(write one with --alloccount-save={path})"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise pytest.UsageError(f"alloccount: baseline file not found: {path} {hint}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise pytest.UsageError(f"alloccount: cannot read baseline file {path}: {exc}") from None
    tests = data.get("tests") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != _BASELINE_FORMAT or not isinstance(tests, dict):
        raise pytest.UsageError(f"alloccount: {path} is not an alloccount baseline file {hint}")
    allocations: Dict[str, int] = {}
    for nodeid, counts in tests.items():
        count = counts.get("allocations") if isinstance(counts, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise pytest.UsageError(f"alloccount: baseline file {path}: bad allocation count for {nodeid!r}")
        allocations[nodeid] = count
    return _Baseline(path, data.get("commit"), data.get("python"), allocations)


def _path_option(config: pytest.Config, name: str) -> Optional[Path]:
    """An output path option, resolved against the invocation directory; its directory must exist."""
    value = config.getoption(name)
    if value is None:
        return None
    path = Path(config.invocation_params.dir, value)
    if not path.parent.is_dir():
        option = "--" + name.replace("_", "-")
        raise pytest.UsageError(f"alloccount: {option}={value}: directory {path.parent} does not exist")
    return path


def _read_options(config: pytest.Config) -> _Options:
    """Validate the command line; every mistake is a UsageError naming the option."""
    compare = _path_option(config, "alloccount_compare")
    report = _path_option(config, "alloccount_report")
    history = _path_option(config, "alloccount_history")
    tolerance_text = config.getoption("alloccount_tolerance")
    for name, value in (("report", report), ("history", history), ("tolerance", tolerance_text)):
        if value is not None and compare is None:
            raise pytest.UsageError(f"alloccount: --alloccount-{name} needs --alloccount-compare=FILE")
    try:
        tolerance = _DEFAULT_TOLERANCE_PERCENT if tolerance_text is None else parse_tolerance(tolerance_text)
    except ValueError as exc:
        raise pytest.UsageError(f"alloccount: {exc}") from None
    top = config.getoption("alloccount_top")
    if top < 0:
        raise pytest.UsageError(f"alloccount: --alloccount-top={top}: must be >= 0")
    if compare is not None and history is None:
        history = compare.with_name(compare.stem + ".history.jsonl")
    return _Options(
        summary=bool(config.getoption("alloccount")),
        top=top,
        save=_path_option(config, "alloccount_save"),
        compare=compare,
        tolerance_percent=tolerance,
        report=report,
        history=history,
    )


# --------------------------------------------------------------------------------------------
# Measuring a test body
# --------------------------------------------------------------------------------------------


def _ensure_tracking(state: _State) -> None:
    """Start tracking on first need; a session the user started already is reused as is."""
    if alloccount.tracking_mode() is None:
        alloccount.start()
        state.started_tracking = True


def _positional(func: Callable[..., Any], kwargs: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """``kwargs`` (pytest passes fixtures by name) as positional arguments where possible.

    ``func(**kwargs)`` allocates two blocks in the call itself (the keyword names and an
    argument array); ``func(*args)`` none. Binding here, outside the measured window, keeps
    the count of an empty test body at zero. ``follow_wrapped=False``: a decorated test is
    called through its wrapper, so the wrapper's own signature decides.
    """
    if not kwargs:
        return (), kwargs
    try:
        bound = inspect.signature(func, follow_wrapped=False).bind(**kwargs)
    except (TypeError, ValueError):
        return (), kwargs
    return bound.args, bound.kwargs


def _call(func: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """``func(*args, **kwargs)``, without ``**`` when there are no keywords (that allocates)."""
    return func(*args, **kwargs) if kwargs else func(*args)


def _allocations_by_category(before: Dict[str, Stats], after: Dict[str, Stats]) -> List[Tuple[str, int, int]]:
    """(name, allocations, bytes allocated) per category that allocated between two snapshots."""
    rows = []
    for name, now in after.items():
        then = before.get(name)
        count = now.allocations - (then.allocations if then is not None else 0)
        nbytes = now.bytes_allocated - (then.bytes_allocated if then is not None else 0)
        if count or nbytes:
            rows.append((name, count, nbytes))
    return rows


def _top_categories(before: Dict[str, Stats], after: Dict[str, Stats], by_bytes: bool) -> str:
    rows = _allocations_by_category(before, after)
    if not rows:
        return "top categories: none allocated"
    rows.sort(key=lambda row: (row[2], row[1]) if by_bytes else (row[1], row[2]), reverse=True)
    shown = "; ".join(
        f"{name}: {count:,} allocations, {format_bytes(nbytes)}" for name, count, nbytes in rows[:_TOP_CATEGORIES]
    )
    return f"top categories (all threads): {shown}"


def _leak_reading() -> Tuple[int, int, Dict[str, int]]:
    """(live blocks, current bytes, {category: current bytes}) after a full collection."""
    gc.collect()
    totals = alloccount.stats()
    per_category = {name: stats.current_bytes for name, stats in alloccount.category_stats().items()}
    return totals.live_blocks, totals.current_bytes, per_category


def _check_leaks(run: Callable[[], Any], warmup: int, runs: int) -> Optional[str]:
    """Run the body until ``warmup + runs`` runs are done; a message if it leaks, else ``None``.

    The body has run once already (the measured run), which is the first warm-up run.

    The pytest-leaks rule: a leak is growth on *every* run after the warm-up, of live blocks
    or of current bytes. Only the last reading and a few flags are kept between readings:
    anything appended per run (a list of deltas) would itself grow on every run.
    """
    for _ in range(warmup - 1):
        run()
    first = previous = _leak_reading()
    blocks_grew = bytes_grew = True
    growing: Set[str] = set()  # created before the runs, filled once: a one-off, not per run
    for index in range(runs):
        run()
        current = _leak_reading()
        blocks_grew = blocks_grew and current[0] > previous[0]
        bytes_grew = bytes_grew and current[1] > previous[1]
        if index == 0:
            growing.update(name for name, nbytes in current[2].items() if nbytes > previous[2].get(name, 0))
        else:
            for name in [name for name in growing if current[2].get(name, 0) <= previous[2].get(name, 0)]:
                growing.discard(name)
        previous = current
    if not (blocks_grew or bytes_grew):
        return None
    what = " and ".join(
        label for label, grew in (("live blocks", blocks_grew), ("current bytes", bytes_grew)) if grew
    )
    blocks, nbytes = previous[0] - first[0], previous[1] - first[1]
    if growing:
        named = ", ".join(
            f"{name!r} (+{format_bytes(previous[2][name] - first[2].get(name, 0))})" for name in sorted(growing)
        )
        culprits = f"category grown on every run: {named}"
    else:
        culprits = "no single category grew on every run"
    return (
        f"no_leaks(warmup={warmup}, runs={runs}): {what} grew on every one of the {runs} runs "
        f"after {warmup} warm-up run(s): {blocks:+,} blocks, {'+' if nbytes >= 0 else ''}"
        f"{format_bytes(nbytes)} in total ({blocks / runs:+,.1f} blocks, "
        f"{format_bytes(nbytes / runs)} per run); {culprits}"
    )


def _regression(current: int, baseline: int, tolerance_percent: float) -> bool:
    """Whether ``current`` exceeds ``baseline`` by more than the tolerance (0 tolerates nothing)."""
    return current > baseline * (1 + tolerance_percent / 100)


def _change(current: int, baseline: int) -> str:
    if baseline == 0:
        return "+inf%" if current else "0.0%"
    return f"{(current - baseline) / baseline * 100:+.1f}%"


def _allocations_problem(
    limits: _Limits, counts: BodyCounts, before: Dict[str, Stats], after: Dict[str, Stats]
) -> Optional[str]:
    """``limit_allocations``: what is wrong, or ``None`` within the limit.

    A category never entered fails the test rather than passing it: a limit on a misspelled
    category would otherwise hold vacuously.
    """
    limit, name = limits.max_allocations, limits.allocations_category
    if limit is None:
        return None
    if name is None:
        call, count, what = f"limit_allocations({limit})", counts.allocations, "the test body allocated"
    else:
        call = f"limit_allocations({limit}, category={name!r})"
        if name not in after:
            known = ", ".join(repr(known) for known in sorted(after))
            return f"{call}: no category {name!r} has been entered in this process (known: {known})"
        then = before.get(name)
        count = after[name].allocations - (then.allocations if then is not None else 0)
        what = f"category {name!r} allocated (all threads)"
    if count <= limit:
        return None
    return f"{call} exceeded: {what} {count:,} times, limit {limit:,}"


def _memory_problem(limits: _Limits, counts: BodyCounts) -> Optional[str]:
    """``limit_memory``: what is wrong, or ``None`` within the limit."""
    limit, peak = limits.max_peak_bytes, counts.peak_bytes or 0
    if limit is None or peak <= limit:
        return None
    return (
        f"limit_memory({limits.memory_limit_text}) exceeded: the test body's peak was "
        f"{format_bytes(peak)} ({peak:,} bytes) above its level at entry, limit "
        f"{format_bytes(limit)} ({limit:,} bytes)"
    )


def _regression_problem(
    counts: BodyCounts, baseline: Optional[_Baseline], nodeid: str, tolerance: float
) -> Optional[str]:
    """``--alloccount-compare``: what is wrong, or ``None`` within the tolerance or not in the baseline."""
    before = baseline.allocations.get(nodeid) if baseline is not None else None
    if baseline is None or before is None or not _regression(counts.allocations, before, tolerance):
        return None
    return (
        f"allocation count regression: {counts.allocations:,} allocations, baseline {before:,} "
        f"({_change(counts.allocations, before)}, tolerance {tolerance:g}%, {baseline.path.name})"
    )


class _PerTestHooks:
    """The per-test hook, registered only in sessions that use the plugin."""

    def __init__(self, state: _State) -> None:
        self._state = state
        self._warmed_up = False

    def _start(self) -> None:
        """Start tracking if needed, and make one empty measurement the first time.

        Before Python 3.11 a function's first call allocates its frame: without the empty
        measurement, the frames of alloccount's own exit code would count in the first test.
        """
        _ensure_tracking(self._state)
        if not self._warmed_up:
            with alloccount.measure():
                pass
            self._warmed_up = True

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Iterator[None]:
        """Wrap the test function for the duration of its call.

        ``tryfirst`` makes this wrapper the first to replace ``pyfuncitem.obj``, so ours is
        the innermost wrapper: other plugins' wrappers (pytest-memray's tracker) run outside
        the measured window.
        """
        limits = pyfuncitem.stash.get(_LIMITS_KEY, None)
        original = pyfuncitem.obj
        if limits is None and not self._state.options.counting:
            yield
            return
        if inspect.iscoroutinefunction(original) or inspect.isasyncgenfunction(original):
            # The body of an async test runs inside an event loop that another plugin drives,
            # interleaved with other tasks: not measured (yet).
            if limits is not None:
                pytest.fail(
                    f"alloccount markers do not support async tests ({pyfuncitem.nodeid})", pytrace=False
                )
            yield
            return
        # Started here, before the wrappers of other plugins run: pytest-memray's tracker then
        # sits above alloccount's hooks, and does not charge the engine's start to the test.
        self._start()
        checks = limits or _Limits()

        @functools.wraps(original)
        def measured(**kwargs: Any) -> Any:
            return self._run(pyfuncitem, original, checks, kwargs)

        pyfuncitem.obj = measured
        try:
            yield
        finally:
            pyfuncitem.obj = original

    def _run(self, item: pytest.Function, func: Callable[..., Any], limits: _Limits, kwargs: Dict[str, Any]) -> Any:
        """Run the test body (repeatedly for ``no_leaks``), measure it, fail it if over a limit."""
        state = self._state
        if alloccount.tracking_mode() != "exact" and (
            limits.max_peak_bytes is not None or limits.leak_warmup_runs is not None
        ):
            pytest.fail(
                "alloccount: limit_memory and no_leaks need tracking in exact mode; this session "
                f"was started with mode={alloccount.tracking_mode()!r}",
                pytrace=False,
            )
        baseline = state.baseline
        checked = limits != _Limits() or (baseline is not None and item.nodeid in baseline.allocations)
        args, kwargs = _positional(func, kwargs)
        measurement = alloccount.measure()
        # Snapshots are taken outside the measured window: their allocations are not the test's.
        before = alloccount.category_stats() if checked else {}
        # Two call sites rather than _call(): a helper's frame is an allocation on Python < 3.11.
        if kwargs:
            with measurement:
                result = func(*args, **kwargs)
        else:
            with measurement:
                result = func(*args)
        after = alloccount.category_stats() if checked else {}
        counts = BodyCounts(measurement.allocations or 0, measurement.bytes_allocated or 0, measurement.peak_bytes)
        state.results[item.nodeid] = counts

        memory = _memory_problem(limits, counts)
        problems = [
            problem
            for problem in (
                _allocations_problem(limits, counts, before, after),
                memory,
                _regression_problem(counts, baseline, item.nodeid, state.options.tolerance_percent),
            )
            if problem is not None
        ]
        if limits.leak_warmup_runs is not None:
            leak = _check_leaks(lambda: _call(func, args, kwargs), limits.leak_warmup_runs, limits.leak_runs)
            if leak is not None:
                problems.append(leak)
        if problems:
            # The category breakdown is of the first (measured) run: that is where the
            # figures in the limit messages come from.
            problems.append(_top_categories(before, after, by_bytes=memory is not None))
            pytest.fail("alloccount: " + "\n".join(problems), pytrace=False)
        return result


class _InvalidMarkers:
    """xdist worker only: fails each test whose alloccount marker is malformed, at setup."""

    def __init__(self, errors: Dict[str, str]) -> None:
        self._errors = errors

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Error the test before its fixtures run, with the usage message and no traceback."""
        what = self._errors.get(item.nodeid)
        if what is not None:
            pytest.fail(f"alloccount: invalid marker arguments: {what}", pytrace=False)


def _activate(config: pytest.Config, state: _State) -> None:
    """Register the per-test hook (once) and note how this session shares hooks with memray."""
    if not config.pluginmanager.has_plugin(_PER_TEST_PLUGIN_NAME):
        config.pluginmanager.register(_PerTestHooks(state), _PER_TEST_PLUGIN_NAME)
    if _memray_active(config):
        state.notes.add(_NOTE_MEMRAY_ACTIVE)


# --------------------------------------------------------------------------------------------
# The fixture
# --------------------------------------------------------------------------------------------


class CategoryDelta(NamedTuple):
    """What one category allocated inside a ``category_deltas()`` block (all threads).

    ``net_bytes`` (bytes still held minus bytes of older blocks freed) is ``None`` in counts mode.
    """

    allocations: int
    bytes_allocated: int
    net_bytes: Optional[int]


class _CategoryDeltas:
    """Context manager behind :meth:`AllocCountFixture.category_deltas`."""

    def __init__(self) -> None:
        self.deltas: Dict[str, CategoryDelta] = {}
        self._before: Dict[str, Stats] = {}

    def __enter__(self) -> Dict[str, CategoryDelta]:
        self._before = alloccount.category_stats()
        return self.deltas

    def __exit__(self, *exc_info: object) -> None:
        after = alloccount.category_stats()
        for name, now in after.items():
            then = self._before.get(name)
            net: Optional[int] = None
            if now.current_bytes is not None:
                net = now.current_bytes - (then.current_bytes if then is not None else 0)
            self.deltas[name] = CategoryDelta(
                now.allocations - (then.allocations if then is not None else 0),
                now.bytes_allocated - (then.bytes_allocated if then is not None else 0),
                net,
            )


class AllocCountFixture:
    """What the ``alloccount`` fixture gives a test: scoped counts and categories.

    Tracking is on while the test runs (the plugin starts it if needed and stops it at the
    end of the session). The names mirror the ``alloccount`` package, which the fixture's
    name shadows inside the test.
    """

    @staticmethod
    def measure(*, all_threads: bool = False) -> alloccount.Measurement:
        """``with alloccount.measure() as m:`` — see :func:`alloccount.measure`."""
        return alloccount.measure(all_threads=all_threads)

    @staticmethod
    def limit(*, allocations: Optional[int] = None, bytes: Optional[int] = None, all_threads: bool = False) -> Any:
        """``with alloccount.limit(allocations=10):`` — see :func:`alloccount.limit`."""
        return alloccount.limit(allocations=allocations, bytes=bytes, all_threads=all_threads)

    @staticmethod
    def no_allocations(*, all_threads: bool = False) -> Any:
        """``with alloccount.no_allocations():`` — see :func:`alloccount.no_allocations`."""
        return alloccount.no_allocations(all_threads=all_threads)

    @staticmethod
    def category(name: str) -> alloccount.Category:
        """``with alloccount.category("orders"):`` — see :func:`alloccount.category`."""
        return alloccount.category(name)

    @staticmethod
    def category_deltas() -> _CategoryDeltas:
        """``with alloccount.category_deltas() as deltas:`` fills ``deltas`` at exit.

        ``deltas[name]`` is a :class:`CategoryDelta` for every category known at exit (all
        threads); a name never entered raises KeyError, so a typo cannot pass as zero.
        """
        return _CategoryDeltas()


@pytest.fixture(name="alloccount")
def alloccount_fixture(request: pytest.FixtureRequest) -> AllocCountFixture:
    """Scoped counts and categories inside a test: see :class:`AllocCountFixture`."""
    _ensure_tracking(request.config.stash[_STATE_KEY])
    return AllocCountFixture()


# --------------------------------------------------------------------------------------------
# Baseline, report and history files (single process, or the xdist controller)
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _save_baseline(path: Path, results: Dict[str, BodyCounts], commit: Optional[str]) -> None:
    tests = {
        nodeid: {"allocations": counts.allocations, "bytes_allocated": counts.bytes_allocated}
        for nodeid, counts in sorted(results.items())
    }
    data = {
        "format": _BASELINE_FORMAT,
        "version": _BASELINE_VERSION,
        "commit": commit,
        "created": _now(),
        "python": _python_version(),
        "tests": tests,
    }
    atomic_write(path, json.dumps(data, indent=1) + "\n")


class _Comparison(NamedTuple):
    """Every test of a compare, sorted into what happened to its count."""

    regressions: List[Tuple[str, int, int]]  # (nodeid, baseline, current)
    grew: List[Tuple[str, int, int]]  # grew within the tolerance
    improved: List[Tuple[str, int, int]]
    unchanged: int
    new: List[Tuple[str, int]]
    not_measured: int


def _compare(baseline: _Baseline, results: Dict[str, BodyCounts], tolerance_percent: float) -> _Comparison:
    regressions, grew, improved, new = [], [], [], []
    unchanged = 0
    for nodeid, counts in sorted(results.items()):
        before = baseline.allocations.get(nodeid)
        now = counts.allocations
        if before is None:
            new.append((nodeid, now))
        elif _regression(now, before, tolerance_percent):
            regressions.append((nodeid, before, now))
        elif now > before:
            grew.append((nodeid, before, now))
        elif now < before:
            improved.append((nodeid, before, now))
        else:
            unchanged += 1
    not_measured = sum(1 for nodeid in baseline.allocations if nodeid not in results)
    # Largest relative change first: that is what a reviewer reads.
    for rows in (regressions, grew, improved):
        rows.sort(key=lambda row: abs(row[2] - row[1]) / max(row[1], 1), reverse=True)
    return _Comparison(regressions, grew, improved, unchanged, new, not_measured)


def _md_code(text: str) -> str:
    """``text`` as a Markdown code span that is safe inside a table cell (GFM reads ``\\|``)."""
    escaped = text.replace("|", "\\|")
    return f"`` {escaped} ``" if "`" in text else f"`{escaped}`"


def _short_commit(commit: Optional[str]) -> str:
    return commit[:12] if commit else "unknown"


def _python_mismatch(baseline: _Baseline) -> Optional[str]:
    """A warning when the baseline comes from another interpreter (counts differ between them)."""
    if baseline.python is None or baseline.python == _python_version():
        return None
    return f"the baseline was made with {baseline.python}, this run uses {_python_version()}"


def _render_report(
    comparison: _Comparison, baseline: _Baseline, tolerance_percent: float, commit: Optional[str]
) -> str:
    """The Markdown table for code review: every test whose count changed, worst first."""
    lines = [
        "## alloccount: allocation counts against the baseline",
        "",
        f"Baseline `{baseline.path.name}` (commit {_short_commit(baseline.commit)}), this run commit "
        f"{_short_commit(commit)}, tolerance {tolerance_percent:g}%. Counts are allocations made by each "
        f"test body on its own thread.",
        "",
        f"**{len(comparison.regressions)} regression(s)**, {len(comparison.grew)} grew within the "
        f"tolerance, {len(comparison.improved)} improved, {comparison.unchanged} unchanged, "
        f"{len(comparison.new)} new, {comparison.not_measured} in the baseline but not measured.",
    ]
    mismatch = _python_mismatch(baseline)
    if mismatch is not None:
        lines += ["", f"Note: {mismatch}."]
    rows = (
        [(row, "**regression**") for row in comparison.regressions]
        + [(row, "within tolerance") for row in comparison.grew]
        + [(row, "improved") for row in comparison.improved]
    )
    if rows or comparison.new:
        lines += ["", "| test | baseline | now | change | |", "|---|---:|---:|---:|---|"]
        for (nodeid, before, now), verdict in rows:
            lines.append(f"| {_md_code(nodeid)} | {before:,} | {now:,} | {_change(now, before)} | {verdict} |")
        for nodeid, now in comparison.new:
            lines.append(f"| {_md_code(nodeid)} | | {now:,} | | new |")
    return "\n".join(lines) + "\n"


def _append_history(
    path: Path, comparison: _Comparison, baseline: _Baseline, state: _State, commit: Optional[str]
) -> None:
    """One JSON line per compare, so counts can be followed across commits."""
    entry = {
        "timestamp": _now(),
        "commit": commit,
        "baseline": str(baseline.path),
        "baseline_commit": baseline.commit,
        "python": _python_version(),
        "tolerance_percent": state.options.tolerance_percent,
        "regressions": [nodeid for nodeid, _, _ in comparison.regressions],
        "tests": {nodeid: counts.allocations for nodeid, counts in sorted(state.results.items())},
    }
    # Appending one line in one write: concurrent sessions interleave lines, not bytes.
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, separators=(",", ":")) + "\n")


def _write_files(config: pytest.Config, state: _State) -> None:
    """Compare (report, history) and save, with the figures of every process merged."""
    options, baseline = state.options, state.baseline
    if options.save is None and baseline is None:
        return
    commit = _git_commit(config.rootpath)
    if baseline is not None:
        comparison = _compare(baseline, state.results, options.tolerance_percent)
        state.written.append(
            f"compared with {baseline.path}: {len(comparison.regressions)} regression(s) beyond "
            f"{options.tolerance_percent:g}%, {len(comparison.grew)} grew within it, "
            f"{len(comparison.improved)} improved, {comparison.unchanged} unchanged, {len(comparison.new)} new"
        )
        mismatch = _python_mismatch(baseline)
        if mismatch is not None:
            state.written.append(f"warning: {mismatch}: counts are not comparable")
        if options.report is not None:
            atomic_write(options.report, _render_report(comparison, baseline, options.tolerance_percent, commit))
            state.written.append(f"wrote report {options.report}")
        if options.history is not None:
            _append_history(options.history, comparison, baseline, state, commit)
            state.written.append(f"appended to history {options.history}")
    if options.save is not None and not state.results:
        # --collect-only, -k matching nothing, an early interruption: keep the last good file.
        state.written.append(f"no test body was measured: {options.save} left as it was")
    elif options.save is not None:
        _save_baseline(options.save, state.results, commit)
        state.written.append(f"wrote {len(state.results)} test count(s) to {options.save}")


# --------------------------------------------------------------------------------------------
# Hooks. Each runs once per session and returns at once when the plugin is not used.
# --------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--alloccount*`` options."""
    group = parser.getgroup("alloccount", "allocation counts per test (alloccount)")
    group.addoption(
        "--alloccount",
        action="store_true",
        default=False,
        help="count allocations of each test body (setup and teardown excluded) and print the "
        "tests that allocate most",
    )
    group.addoption(
        "--alloccount-top",
        type=int,
        default=_DEFAULT_TOP,
        metavar="N",
        help=f"how many tests the --alloccount summary lists (default {_DEFAULT_TOP}; 0 for all)",
    )
    group.addoption(
        "--alloccount-save", metavar="FILE", default=None, help="write each test's allocation count to FILE (JSON)"
    )
    group.addoption(
        "--alloccount-compare",
        metavar="FILE",
        default=None,
        help="fail tests whose allocation count grew beyond the tolerance over FILE (from --alloccount-save)",
    )
    group.addoption(
        "--alloccount-tolerance",
        metavar="PCT",
        default=None,
        help=f"growth allowed by --alloccount-compare, e.g. 5%% (default {_DEFAULT_TOLERANCE_PERCENT:g}%%)",
    )
    group.addoption(
        "--alloccount-report",
        metavar="FILE.md",
        default=None,
        help="with --alloccount-compare: write a Markdown table of the changed counts for code review",
    )
    group.addoption(
        "--alloccount-history",
        metavar="FILE",
        default=None,
        help="with --alloccount-compare: append this run's counts as a JSON line to FILE "
        "(default: the baseline's name with .history.jsonl)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, validate the options, and switch counting on if asked."""
    for line in _MARKER_LINES:
        config.addinivalue_line("markers", line)
    options = _read_options(config)
    baseline = _load_baseline(options.compare) if options.compare is not None else None
    state = _State(options, baseline, is_worker=hasattr(config, "workerinput"))
    config.stash[_STATE_KEY] = state
    if options.counting:
        _activate(config, state)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Validate the alloccount markers (a usage error names each bad one) and activate if used.

    ``trylast``: the items left after deselection decide whether the plugin is needed.
    """
    state = config.stash[_STATE_KEY]
    errors: List[Tuple[str, str]] = []  # (nodeid, what is wrong)
    used = memory_marker = False
    memray_loaded = config.pluginmanager.has_plugin("memray_manager")
    for item in items:
        try:
            limits = _parse_limits(item, memray_loaded)
        except ValueError as exc:
            errors.append((item.nodeid, str(exc)))
            continue
        if limits is not None:
            item.stash[_LIMITS_KEY] = limits
            used = True
            memory_marker = memory_marker or limits.max_peak_bytes is not None
    if errors and not state.is_worker:
        raise pytest.UsageError(
            "alloccount: invalid marker arguments:\n" + "\n".join(f"  {nodeid}: {what}" for nodeid, what in errors)
        )
    if errors:
        # A usage error raised in an xdist worker reaches the controller as an internal error
        # with a traceback: there, each test with a bad marker errors at setup instead.
        config.pluginmanager.register(_InvalidMarkers(dict(errors)), "alloccount-invalid-markers")
    if used:
        _activate(config, state)
    if memory_marker and memray_loaded:
        state.notes.add(_NOTE_MEMRAY_MARKER)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: merge a finished worker's figures and notes."""
    state = node.config.stash.get(_STATE_KEY, None)
    sent = getattr(node, "workeroutput", {}).get(_WORKEROUTPUT_KEY)
    if state is None or sent is None:
        return
    for nodeid, counts in sent["results"].items():
        state.results[nodeid] = BodyCounts(*counts)
    state.notes.update(sent["notes"])


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Send a worker's figures to the controller, or write the files in the controller."""
    config = session.config
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    if state.is_worker:
        # Plain lists, strings and ints: what execnet can carry.
        config.workeroutput[_WORKEROUTPUT_KEY] = {  # type: ignore[attr-defined]
            "results": {nodeid: list(counts) for nodeid, counts in state.results.items()},
            "notes": sorted(state.notes),
        }
        return
    _write_files(config, state)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The tests that allocate most, what was written, and the notes (memray)."""
    state = config.stash.get(_STATE_KEY, None)
    if state is None or state.is_worker or not (state.options.counting or state.notes):
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("=", "alloccount")
    if state.options.summary:
        _write_top(write, state.results, state.options.top)
    for line in state.written:
        write(line)
    for note in sorted(state.notes):
        write(f"note: {note}")


def _write_top(write: Callable[[str], None], results: Dict[str, BodyCounts], top: int) -> None:
    if not results:
        write("no test body was measured")
        return
    write(f"{len(results)} test bodies measured (setup and teardown excluded; the test's own thread)")
    rankings = [("allocations", lambda row: (row[1].allocations, row[1].bytes_allocated))]
    if top and len(results) > top:
        # With every test listed one table says it all; otherwise rank by bytes as well.
        rankings.append(("bytes allocated", lambda row: (row[1].bytes_allocated, row[1].allocations)))
    for title, key in rankings:
        rows = sorted(results.items(), key=key, reverse=True)[: top or None]
        write(f"most {title}:")
        write(f"  {'allocations':>12}  {'bytes allocated':>15}  {'peak':>10}  test")
        for nodeid, counts in rows:
            peak = "-" if counts.peak_bytes is None else format_bytes(counts.peak_bytes)
            write(f"  {counts.allocations:>12,}  {format_bytes(counts.bytes_allocated):>15}  {peak:>10}  {nodeid}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop tracking if this plugin started it (never a session the user started)."""
    state = config.stash.get(_STATE_KEY, None)
    if state is not None and state.started_tracking:
        with warnings.catch_warnings():
            # Hooks left as a pass-through under another tool are harmless at exit.
            warnings.simplefilter("ignore", alloccount.AllocCountWarning)
            alloccount.stop()
