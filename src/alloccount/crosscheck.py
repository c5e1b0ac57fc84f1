"""Cross-check alloccount's figures against a memray capture of the same run.

memray, with ``trace_python_allocators=True``, writes one record per call of CPython's allocator
API (``PYMALLOC_MALLOC``/``CALLOC``/``REALLOC``/``FREE``). alloccount and memray are run together
on one workload and each row of a table compares what both saw: allocations, frees, reallocs,
bytes allocated, peak bytes, and bytes and blocks still live at the end.

How the two windows are made the same (see docs/crosscheck.md for the measurements):

- alloccount's hooks are installed first and memray wraps them: memray restores what it saved
  when it stops, so hooks installed inside its session would be dropped.
- The compared window is cut on both sides at the same two points *inside* memray's session: a
  marker block (a ``bytes`` of a distinctive size, found in the capture by address and size), then
  an allocation-free read of alloccount's counters; at the end the read, then a second marker. So
  memray's own start/stop code, which only alloccount sees, is outside the window by construction.
- What still only one side sees is calibrated per session: a warm-up window (first-call effects of
  this module's own code), then an empty window whose difference is subtracted as the baseline.

Use :func:`crosscheck` for a callable, :func:`crosscheck_script` for a script or module,
:func:`record` to make a capture and a stats file to compare elsewhere with
:func:`compare_files`, and :func:`save_stats` for a stats file from a run you set up yourself.
``python -m alloccount.crosscheck --help`` is the command line.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import runpy
import struct
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from . import _core
from ._tracking import start, stop, tracking_mode

__all__ = [
    "DEFAULT_TOLERANCE",
    "ROWS",
    "CrosscheckError",
    "CrosscheckResult",
    "Recording",
    "Row",
    "Tolerance",
    "compare_files",
    "crosscheck",
    "crosscheck_script",
    "main",
    "parse_tolerance",
    "record",
    "save_stats",
]

#: The compared rows, in table order.
ROWS: Tuple[str, ...] = (
    "allocations",
    "frees",
    "reallocs",
    "bytes_allocated",
    "peak_bytes",
    "leaked_bytes",
    "leaked_blocks",
)

# What each row measures on each side, printed under the table and kept in to_dict().
_ROW_DEFINITIONS: Dict[str, Tuple[str, str]] = {
    "allocations": ("allocations + reallocs", "MALLOC + CALLOC + REALLOC records"),
    "frees": ("frees + reallocs + untracked_frees", "FREE records"),
    "reallocs": ("reallocs", "upper bound: REALLOC records right after a FREE on the same thread"),
    "bytes_allocated": ("bytes_allocated", "sum of the sizes of MALLOC/CALLOC/REALLOC records"),
    "peak_bytes": ("peak_bytes above the level at the start", "high-water mark of the live bytes"),
    "leaked_bytes": ("change of current_bytes", "bytes allocated minus bytes freed"),
    "leaked_blocks": ("change of live_blocks", "allocation records minus frees of known blocks"),
}

# Rows checked as "alloccount <= memray": memray's records only give an upper bound.
_UPPER_BOUND_ROWS = frozenset({"reallocs"})

# Levels are compared relative to the flow they are the net of: every allocation and free can
# be accounted differently, so a level's error is bounded by a fraction of the flow, not of the
# level (a workload that frees what it allocates leaves a level near 0). Other rows: themselves.
_RELATIVE_TO = {
    "peak_bytes": "bytes_allocated",
    "leaked_bytes": "bytes_allocated",
    "leaked_blocks": "allocations",
}

_STATS_FORMAT = "alloccount-crosscheck-stats"
_WRITE_STATS = "with alloccount.crosscheck.save_stats() or record()"
_STATS_VERSION = 1

# Distinctive sizes for the window markers: about 900 KiB, odd, so that no workload is likely to
# allocate a block of that size at the marker's address. A bytes object adds its header (33 bytes
# on 64-bit CPython 3.9-3.13) to the requested size; _MARKER_SLACK allows for it.
_START_MARKER_SIZE = 917_503
_END_MARKER_SIZE = 917_519
_MARKER_SLACK = 128

# _core.read_into fills 8 native int64 without allocating (see its docstring).
_COUNTER_FIELDS = (
    "allocations",
    "frees",
    "reallocs",
    "bytes_allocated",
    "bytes_freed",
    "current_bytes",
    "peak_bytes",
    "untracked_frees",
)
_COUNTER_FORMAT = "8q"
_PYTHON = ".".join(map(str, sys.version_info[:3]))
_ALL_DOMAINS = -1


class CrosscheckError(Exception):
    """A cross-check could not be made: bad input or a setup that cannot give comparable figures.

    The message says what is wrong and what to do about it.
    """


# ------------------------------------------------------------------------------------ tolerance


class Tolerance(NamedTuple):
    """How far apart the two figures of a row may be: ``relative * scale + absolute``.

    ``relative`` is a fraction (0.001 is 0.1%) of the row's scale (see :class:`Row`);
    ``absolute`` is in the row's unit (calls, bytes, blocks). Written as text: ``"0.1%"``,
    ``"64"`` or ``"0.1%+64"``.
    """

    relative: float = 0.0
    absolute: float = 0.0

    def allowed(self, scale: int) -> float:
        """The largest difference this tolerance accepts for a row of that scale."""
        return self.relative * scale + self.absolute

    def __str__(self) -> str:
        parts = []
        if self.relative or not self.absolute:
            parts.append(f"{self.relative * 100:g}%")
        if self.absolute:
            parts.append(f"{self.absolute:g}")
        return "+".join(parts)


#: The default for every row: 0.1%. What differs after calibration is a few calls per Python
#: function first run under memray (see docs/crosscheck.md), some hundredths of a percent of the
#: flow of a real script, while a counting error that grows with the workload (a missed domain, a
#: double count, a lost free) fails it.
DEFAULT_TOLERANCE = Tolerance(relative=0.001)

ToleranceSpec = Union[None, str, float, Tolerance, Mapping[str, Union[str, float, Tolerance]]]


def parse_tolerance(text: str) -> Tolerance:
    """Parse ``"0.1%"`` (relative), ``"64"`` (absolute) or ``"0.1%+64"`` (both) into a Tolerance."""
    if not isinstance(text, str):
        raise TypeError(f"a tolerance is written as text such as '0.1%', not {type(text).__name__}")
    relative = absolute = 0.0
    parts = [part.strip() for part in text.split("+")]
    if not all(parts):
        raise ValueError(f"not a tolerance: {text!r} (expected e.g. '0.1%', '64' or '0.1%+64')")
    for part in parts:
        try:
            if part.endswith("%"):
                relative += float(part[:-1]) / 100
            else:
                absolute += float(part)
        except ValueError:
            raise ValueError(
                f"not a tolerance: {text!r} (expected e.g. '0.1%', '64' or '0.1%+64')"
            ) from None
    if relative < 0 or absolute < 0 or not (math.isfinite(relative) and math.isfinite(absolute)):
        raise ValueError(f"a tolerance must be finite and not negative: {text!r}")
    return Tolerance(relative, absolute)


def _as_tolerance(value: Union[str, float, Tolerance]) -> Tolerance:
    if isinstance(value, Tolerance):
        return value
    if isinstance(value, str):
        return parse_tolerance(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # A bare number is a relative fraction, as in pytest.approx(rel=...).
        return parse_tolerance(f"{value * 100!r}%")
    raise TypeError(f"a tolerance is a str, a float or a Tolerance, not {type(value).__name__}")


def _row_tolerances(spec: ToleranceSpec) -> Dict[str, Tolerance]:
    """One Tolerance per row from None, one tolerance for all rows, or a mapping by row name."""
    if spec is None:
        return dict.fromkeys(ROWS, DEFAULT_TOLERANCE)
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(ROWS))
        if unknown:
            raise ValueError(f"no such row(s) {unknown}; the rows are {', '.join(ROWS)}")
        return {row: _as_tolerance(spec[row]) if row in spec else DEFAULT_TOLERANCE for row in ROWS}
    return dict.fromkeys(ROWS, _as_tolerance(spec))


# ------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Row:
    """One compared figure: what each tool saw, the difference, and the verdict.

    ``scale`` is what the relative difference and tolerance are fractions of: the larger of the
    two figures of the row named ``relative_to`` (the row itself, or for a level such as
    ``leaked_bytes`` the flow it is the net of).
    """

    name: str
    alloccount: int
    memray: int
    tolerance: Tolerance
    scale: int
    relative_to: str
    upper_bound: bool = False  # memray's figure is an upper bound for alloccount's

    @property
    def difference(self) -> int:
        """alloccount minus memray."""
        return self.alloccount - self.memray

    @property
    def relative_difference(self) -> float:
        """The difference as a fraction of the scale (0.0 when the scale is 0)."""
        return self.difference / self.scale if self.scale else 0.0

    @property
    def ok(self) -> bool:
        """Within tolerance (for an upper-bound row: not above the bound by more than that)."""
        allowed = self.tolerance.allowed(self.scale)
        if self.upper_bound:
            return self.difference <= allowed
        return abs(self.difference) <= allowed

    def to_dict(self) -> Dict[str, Any]:
        """The row as JSON-ready values."""
        alloccount_side, memray_side = _ROW_DEFINITIONS[self.name]
        return {
            "row": self.name,
            "alloccount": self.alloccount,
            "memray": self.memray,
            "difference": self.difference,
            "relative_difference": self.relative_difference,
            "relative_to": self.relative_to,
            "tolerance": str(self.tolerance),
            "upper_bound": self.upper_bound,
            "ok": self.ok,
            "alloccount_measures": alloccount_side,
            "memray_measures": memray_side,
        }


@dataclass
class CrosscheckResult:
    """The comparison table and what it covers.

    ``rows`` follow :data:`ROWS`. ``threads`` is the number of threads with records in the
    window: both tools count every thread of the process. ``baseline`` is what was subtracted
    from alloccount's figures (the calibrated per-session difference); ``scope`` is ``"window"``
    (marked window, exact) or ``"session"`` (a capture and stats file made without markers).
    """

    rows: List[Row]
    threads: int
    scope: str
    baseline: Optional[Dict[str, int]]
    capture_path: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row is within its tolerance."""
        return all(row.ok for row in self.rows)

    @property
    def failed_rows(self) -> List[str]:
        """Names of the rows out of tolerance."""
        return [row.name for row in self.rows if not row.ok]

    def row(self, name: str) -> Row:
        """The row called ``name``."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r}; the rows are {', '.join(ROWS)}")

    def to_dict(self) -> Dict[str, Any]:
        """The result as JSON-ready values."""
        return {
            "ok": self.ok,
            "failed_rows": self.failed_rows,
            "scope": self.scope,
            "threads": {"covered": "all", "seen": self.threads},
            "baseline_subtracted": self.baseline,
            "capture": self.capture_path,
            "rows": [row.to_dict() for row in self.rows],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        """An aligned text table with the verdict and the notes."""
        header = ("row", "alloccount", "memray", "diff", "rel diff", "of", "tolerance", "verdict")
        lines = [header]
        for row in self.rows:
            memray_text = f"<= {row.memray}" if row.upper_bound else str(row.memray)
            lines.append((
                row.name,
                str(row.alloccount),
                memray_text,
                f"{row.difference:+d}",
                f"{row.relative_difference * 100:+.3f}%",
                row.relative_to,
                str(row.tolerance),
                "ok" if row.ok else "FAIL",
            ))
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        left_aligned = (0, 5, 7)  # names; numbers are right-aligned
        out = []
        for line in lines:
            cells = [cell.ljust(width) if i in left_aligned else cell.rjust(width)
                     for i, (cell, width) in enumerate(zip(line, widths))]
            out.append("  ".join(cells).rstrip())
        title = (f"alloccount vs memray ({self.scope} scope; threads: all, "
                 f"{self.threads} seen in the capture)")
        verdict = ("ok: every row within tolerance" if self.ok
                   else f"FAILED: out of tolerance: {', '.join(self.failed_rows)}")
        return "\n".join([title, *out, verdict, *(f"note: {note}" for note in self.notes)])


# ------------------------------------------------------------------------------ memray's side


class _MarkerSpec(NamedTuple):
    address: int
    min_size: int

    def matches(self, address: int, size: int) -> bool:
        return address == self.address and self.min_size <= size <= self.min_size + _MARKER_SLACK


class _MemrayFigures(NamedTuple):
    """What memray's Python-allocator records say about the window."""

    calls: int  # MALLOC + CALLOC + REALLOC records
    free_records: int  # FREE records, of any block
    known_frees: int  # FREE records of blocks allocated earlier in the capture
    realloc_pairs: int  # REALLOC records right after a FREE on the same thread
    bytes_allocated: int
    current_bytes: int  # bytes allocated minus bytes of known blocks freed
    peak_bytes: int  # high-water mark of current_bytes
    threads: int

    def rows(self) -> Dict[str, int]:
        return {
            "allocations": self.calls,
            "frees": self.free_records,
            "reallocs": self.realloc_pairs,
            "bytes_allocated": self.bytes_allocated,
            "peak_bytes": self.peak_bytes,
            "leaked_bytes": self.current_bytes,
            "leaked_blocks": self.calls - self.known_frees,
        }


def _import_memray() -> Any:
    try:
        import memray
    except ImportError:
        raise CrosscheckError(
            "memray is not installed: install it with pip install 'alloccount[memray]'"
        ) from None
    return memray


def _tracker_options(memray: Any) -> Dict[str, Any]:
    # Every Python-allocator call as its own record (not arenas), all of them (not aggregated).
    return {
        "trace_python_allocators": True,
        "native_traces": False,
        "file_format": memray.FileFormat.ALL_ALLOCATIONS,
    }


def _open_capture(memray: Any, path: str) -> Any:
    """A FileReader on a capture usable for a cross-check, or a CrosscheckError saying why not."""
    if not os.path.exists(path):
        raise CrosscheckError(
            f"capture file {path} does not exist: record one with "
            f"'python -m alloccount.crosscheck --capture {path} --stats STATS script.py' or "
            f"alloccount.crosscheck.record()"
        )
    try:
        reader = memray.FileReader(path)
    except OSError as exc:
        raise CrosscheckError(
            f"capture file {path} cannot be read as a memray capture ({exc}): it is corrupt, "
            f"truncated or not a memray file; record it again"
        ) from None
    metadata = reader.metadata
    if metadata.file_format != memray.FileFormat.ALL_ALLOCATIONS:
        raise CrosscheckError(
            f"capture file {path} is in memray's aggregated format, which keeps no individual "
            f"allocation records: record it again with the default file format "
            f"(memray.FileFormat.ALL_ALLOCATIONS; 'memray run' without '--aggregate')"
        )
    if not metadata.trace_python_allocators:
        raise CrosscheckError(
            f"capture file {path} was recorded without trace_python_allocators: memray then "
            f"records pymalloc's arenas, not each Python allocator call, and nothing can be "
            f"compared; record it again with memray.Tracker(..., trace_python_allocators=True) "
            f"or 'memray run --trace-python-allocators'"
        )
    return reader


def _read_capture(
    memray: Any,
    path: str,
    markers: Optional[Tuple[_MarkerSpec, _MarkerSpec]],
) -> _MemrayFigures:
    """Tally the Python-allocator records of a capture, between the markers when given.

    Blocks are followed by address from the first record of the capture, so that a block
    allocated before the window and freed inside it is freed with its size, as alloccount does.
    Native records (MALLOC, FREE, MMAP...) are skipped: alloccount sees only CPython's domains.
    """
    reader = _open_capture(memray, path)
    kinds = memray.AllocatorType
    free_kind = int(kinds.PYMALLOC_FREE)
    realloc_kind = int(kinds.PYMALLOC_REALLOC)
    alloc_kinds = frozenset(
        {int(kinds.PYMALLOC_MALLOC), int(kinds.PYMALLOC_CALLOC), realloc_kind}
    )
    start_marker, end_marker = markers if markers else (None, None)

    live: Dict[int, int] = {}  # address -> size of the blocks allocated in the capture
    after_free: Dict[int, bool] = {}  # thread -> its last Python-allocator record was a FREE
    counting = start_marker is None
    calls = free_records = known_frees = pairs = bytes_allocated = current = peak = 0
    threads: Set[int] = set()
    at_end: Optional[_MemrayFigures] = None

    with reader:
        for record in reader.get_allocation_records():
            kind = record.allocator
            if kind != free_kind and kind not in alloc_kinds:
                continue
            address = record.address
            tid = record.tid
            if kind == free_kind:
                size = live.pop(address, None)
                if counting:
                    free_records += 1
                    threads.add(tid)
                    if size is not None:
                        known_frees += 1
                        current -= size
                after_free[tid] = True
                continue
            size = record.size
            if end_marker is not None and end_marker.matches(address, size) and counting:
                # Kept, not returned: should an earlier block of the workload match the marker,
                # the last match (the real marker, alive until the capture ends) wins.
                at_end = _MemrayFigures(calls, free_records, known_frees, pairs,
                                        bytes_allocated, current, peak, len(threads))
            if start_marker is not None and start_marker.matches(address, size):
                # The marker stays alive through the window, so the last match is the real one.
                counting = True
                calls = free_records = known_frees = pairs = bytes_allocated = current = peak = 0
                threads = set()
                at_end = None
                live[address] = size
                after_free[tid] = False
                continue
            live[address] = size
            if counting:
                calls += 1
                threads.add(tid)
                bytes_allocated += size
                current += size
                if current > peak:
                    peak = current
                if kind == realloc_kind and after_free.get(tid):
                    pairs += 1
            after_free[tid] = False

    if markers is None:
        return _MemrayFigures(calls, free_records, known_frees, pairs, bytes_allocated, current,
                              peak, len(threads))
    if not counting or at_end is None:
        missing = "start" if not counting else "end"
        raise CrosscheckError(
            f"the {missing} marker of the compared window is not in capture file {path}: the "
            f"capture and the stats file come from different runs, or the capture is truncated; "
            f"compare the two files written together by one run"
        )
    return at_end


# -------------------------------------------------------------------------- alloccount's side


def _counters_delta(before: bytearray, after: bytearray) -> Dict[str, int]:
    """alloccount's figures over the window from two raw counter reads."""
    first = dict(zip(_COUNTER_FIELDS, struct.unpack(_COUNTER_FORMAT, before)))
    last = dict(zip(_COUNTER_FIELDS, struct.unpack(_COUNTER_FORMAT, after)))
    figures = {name: last[name] - first[name] for name in _COUNTER_FIELDS}
    # reset_peak() ran at the start of the window, so the peak is measured from that level.
    figures["peak_bytes"] = last["peak_bytes"] - first["current_bytes"]
    figures["live_blocks"] = figures["allocations"] - figures["frees"]
    return figures


def _alloccount_rows(figures: Mapping[str, int]) -> Dict[str, int]:
    """alloccount's figures in the rows' terms (memray's: a realloc is a free and an allocation)."""
    return {
        "allocations": figures["allocations"] + figures["reallocs"],
        "frees": figures["frees"] + figures["reallocs"] + figures["untracked_frees"],
        "reallocs": figures["reallocs"],
        "bytes_allocated": figures["bytes_allocated"],
        "peak_bytes": figures["peak_bytes"],
        "leaked_bytes": figures["current_bytes"],
        "leaked_blocks": figures["live_blocks"],
    }


# ----------------------------------------------------------------------------- the recording


@dataclass
class Recording:
    """What :func:`record` made: the capture, alloccount's figures over the window, the baseline.

    ``figures`` (alloccount's counters over the window: allocations, frees, reallocs,
    bytes_allocated, bytes_freed, current_bytes, peak_bytes, live_blocks, untracked_frees) and
    ``markers`` are filled when the ``with`` block ends.
    """

    capture_path: str
    stats_path: Optional[str]
    baseline: Dict[str, int]
    figures: Dict[str, int] = field(default_factory=dict)
    markers: Optional[Tuple[_MarkerSpec, _MarkerSpec]] = None


@contextlib.contextmanager
def _window(memray: Any, capture_path: str, baseline: Optional[Dict[str, int]] = None
            ) -> Iterator[Recording]:
    """One alloccount session wrapped by one memray session, the compared window marked inside.

    The statements between the markers and the counter reads allocate nothing, so both tools
    see exactly the allocations of the body. Allocations made by other threads at the instant a
    boundary is crossed may land on one side only.
    """
    recording = Recording(capture_path, None, baseline or {})
    before = bytearray(struct.calcsize(_COUNTER_FORMAT))
    after = bytearray(struct.calcsize(_COUNTER_FORMAT))
    # Made before alloccount starts: the tracker's set-up is then seen by neither tool.
    try:
        tracker = memray.Tracker(capture_path, **_tracker_options(memray))
    except OSError as exc:
        raise CrosscheckError(f"cannot create capture file {capture_path} ({exc})") from None
    start(mode="exact", domains="all")
    try:
        try:
            tracker.__enter__()
        except RuntimeError as exc:
            raise CrosscheckError(
                f"memray could not start ({exc}): another memray Tracker is active in this "
                f"process (under 'memray run'?); run the cross-check without memray, it starts "
                f"its own tracker"
            ) from None
        try:
            start_marker = bytes(_START_MARKER_SIZE)
            _core.reset_peak()
            _core.read_into(_ALL_DOMAINS, before)
            try:
                yield recording
            finally:
                _core.read_into(_ALL_DOMAINS, after)
                end_marker = bytes(_END_MARKER_SIZE)
                recording.markers = (
                    _MarkerSpec(id(start_marker), _START_MARKER_SIZE),
                    _MarkerSpec(id(end_marker), _END_MARKER_SIZE),
                )
        finally:
            tracker.__exit__(None, None, None)
    finally:
        stop()
    recording.figures = _counters_delta(before, after)


def _calibrate_window(memray: Any, directory: str) -> Dict[str, int]:
    """The per-row difference of an empty window, after a warm-up window, to be subtracted."""
    with _window(memray, os.path.join(directory, "warm-up.bin")):
        pass
    calibration_path = os.path.join(directory, "calibration.bin")
    with _window(memray, calibration_path) as empty:
        pass
    measured = _read_capture(memray, calibration_path, empty.markers).rows()
    own = _alloccount_rows(empty.figures)
    return {row: own[row] - measured[row] for row in ROWS}


def _require_new_capture(path: str) -> None:
    if os.path.exists(path):
        raise CrosscheckError(
            f"capture file {path} already exists: remove it or choose another path "
            f"(a cross-check never overwrites a capture)"
        )


def _require_not_tracking() -> None:
    if tracking_mode() is not None:
        raise CrosscheckError(
            "alloccount is already tracking: call alloccount.stop() first. A cross-check runs "
            "its own alloccount session, started right before memray's, so that both tools "
            "know the same blocks (a block allocated earlier and freed in the window would be "
            "freed with its size on alloccount's side only)"
        )


@contextlib.contextmanager
def record(capture_path: Union[str, os.PathLike], stats_path: Union[str, os.PathLike, None] = None
           ) -> Iterator[Recording]:
    """Record the ``with`` block with alloccount and memray, for :func:`compare_files`.

    Writes the memray capture to ``capture_path`` (which must not exist) and, when the block
    ends without an exception, alloccount's figures over the same window with the calibrated
    baseline to ``stats_path`` (JSON). alloccount must not be tracking: this runs its own
    session (exact mode, all domains) and stops it at the end.
    """
    memray = _import_memray()
    capture = os.fspath(capture_path)
    _require_new_capture(capture)
    _require_not_tracking()
    with tempfile.TemporaryDirectory(prefix="alloccount-crosscheck-") as directory:
        baseline = _calibrate_window(memray, directory)
    with _window(memray, capture, baseline) as recording:
        yield recording
    if stats_path is not None:
        recording.stats_path = os.fspath(stats_path)
        _write_stats(recording.stats_path, "window", recording.figures, baseline,
                     recording.markers)


# ------------------------------------------------------------------------------- stats files


def _write_stats(
    path: str,
    scope: str,
    figures: Mapping[str, Optional[int]],
    baseline: Optional[Mapping[str, int]],
    markers: Optional[Tuple[_MarkerSpec, _MarkerSpec]],
) -> None:
    from . import __version__  # at call time: the package may import this module first

    document = {
        "format": _STATS_FORMAT,
        "version": _STATS_VERSION,
        "scope": scope,
        "figures": dict(figures),
        "baseline": dict(baseline) if baseline is not None else None,
        "markers": (
            {name: marker._asdict() for name, marker in zip(("start", "end"), markers)}
            if markers else None
        ),
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "pid": os.getpid(),
        "python": _PYTHON,
        "alloccount": __version__,
    }
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=2)
        stream.write("\n")


def save_stats(path: Union[str, os.PathLike], stats: Optional[_core.Stats] = None, *,
               calibrate: bool = True) -> None:
    """Save alloccount's figures as a stats file for :func:`compare_files` (session scope).

    For a run you set up yourself: build ``memray.Tracker(path, trace_python_allocators=True)``,
    call ``alloccount.start()`` right before its ``with`` block, and ``save_stats()`` right after
    it, while alloccount still tracks (docs/crosscheck.md). ``stats`` defaults to
    ``alloccount.stats()`` and must come from exact mode over all domains. With ``calibrate``
    (and alloccount still tracking), the figures of memray's own start and stop are measured on
    an empty tracker and saved as the baseline to subtract; the calibration's own calls then
    show in alloccount's counters.
    Prefer :func:`record`, which marks the window on both sides and needs no care.
    """
    figures = (stats if stats is not None else _core.stats())._asdict()
    if figures["current_bytes"] is None:
        raise CrosscheckError(
            "save_stats needs figures of an alloccount session in mode='exact' (counts mode "
            "keeps no sizes of freed blocks, so bytes in use and peak cannot be compared): "
            "call alloccount.start() before the recorded run"
        )
    if stats is None and set(_core.DOMAIN_NAMES) != set(_tracked_session_domains()):
        raise CrosscheckError(
            "save_stats needs a session over all domains (start(domains='all')): memray records "
            "the calls of every domain"
        )
    baseline = None
    if calibrate and tracking_mode() is not None:
        with tempfile.TemporaryDirectory(prefix="alloccount-crosscheck-") as directory:
            baseline = _calibrate_session(_import_memray(), directory)
    _write_stats(os.fspath(path), "session", figures, baseline, None)


def _tracked_session_domains() -> Tuple[str, ...]:
    _, mask = _core.session()
    return tuple(name for i, name in enumerate(_core.DOMAIN_NAMES) if mask & (1 << i))


def _calibrate_session(memray: Any, directory: str) -> Dict[str, int]:
    """What an empty memray session adds to a running alloccount session, per row."""
    before = bytearray(struct.calcsize(_COUNTER_FORMAT))
    after = bytearray(struct.calcsize(_COUNTER_FORMAT))
    for name in ("warm-up", "calibration"):  # the warm-up takes the first-call effects
        path = os.path.join(directory, f"{name}.bin")
        tracker = memray.Tracker(path, **_tracker_options(memray))
        _core.read_into(_ALL_DOMAINS, before)
        with tracker:
            pass
        _core.read_into(_ALL_DOMAINS, after)
    figures = _counters_delta(before, after)
    # A running session's peak is an absolute level: the bytes memray's start leaves live are
    # what they add to it.
    figures["peak_bytes"] = figures["current_bytes"]
    own = _alloccount_rows(figures)
    measured = _read_capture(memray, path, None).rows()
    return {row: own[row] - measured[row] for row in ROWS}


def _load_stats(path: str) -> Dict[str, Any]:
    if not os.path.exists(path):
        raise CrosscheckError(
            f"stats file {path} does not exist: write it in the recorded run {_WRITE_STATS} "
            f"(or --stats)"
        )
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CrosscheckError(
            f"stats file {path} is not valid JSON ({exc}): write it again {_WRITE_STATS}"
        ) from None
    if not isinstance(document, dict) or document.get("format") != _STATS_FORMAT:
        raise CrosscheckError(
            f"stats file {path} is not an alloccount stats file (no \"format\": "
            f"\"{_STATS_FORMAT}\"): write it {_WRITE_STATS}"
        )
    if document.get("version") != _STATS_VERSION:
        raise CrosscheckError(
            f"stats file {path} has version {document.get('version')!r}; this alloccount reads "
            f"version {_STATS_VERSION}: compare it with the alloccount that wrote it"
        )
    figures = document.get("figures")
    needed = set(_COUNTER_FIELDS) | {"live_blocks"}
    if (not isinstance(figures, dict) or not needed <= set(figures)
            or not all(isinstance(figures[name], int) for name in needed)
            or document.get("scope") not in ("window", "session")):
        raise CrosscheckError(
            f"stats file {path} is incomplete (needs the scope and the integer figures "
            f"{', '.join(sorted(needed))}): write it again {_WRITE_STATS}"
        )
    return document


# ----------------------------------------------------------------------------- comparison


def _compare(
    memray: Any,
    capture_path: str,
    figures: Mapping[str, int],
    scope: str,
    baseline: Optional[Mapping[str, int]],
    markers: Optional[Tuple[_MarkerSpec, _MarkerSpec]],
    tolerance: ToleranceSpec,
    python: str,
) -> CrosscheckResult:
    """The table for alloccount's ``figures`` and the capture; ``python`` is the recorded run's."""
    tolerances = _row_tolerances(tolerance)
    measured = _read_capture(memray, capture_path, markers)
    own = _alloccount_rows(figures)
    if baseline:
        own = {name: value - baseline[name] for name, value in own.items()}
    memray_rows = measured.rows()
    rows = []
    for name in ROWS:
        relative_to = _RELATIVE_TO.get(name, name)
        scale = max(abs(own[relative_to]), abs(memray_rows[relative_to]))
        rows.append(Row(name, own[name], memray_rows[name], tolerances[name], scale,
                        relative_to, upper_bound=name in _UPPER_BOUND_ROWS))
    notes = [
        "allocations and frees are counted as memray counts them, a realloc being one of "
        "each (alloccount: allocations + reallocs; frees + reallocs + untracked_frees)",
        "reallocs: memray's records cannot tell realloc(p, n) from free(p) then "
        "realloc(NULL, n), so alloccount's count is checked against an upper bound",
    ]
    if baseline is None:
        notes.append("no baseline: memray's own start and stop are counted by alloccount")
    elif any(baseline.values()):
        changed = ", ".join(f"{name} {value:+d}" for name, value in baseline.items() if value)
        notes.append(f"baseline subtracted from alloccount: {changed}")
    version = _version_tuple(python)
    if version and version < (3, 12):
        notes.append(f"Python {python}: memray marks each code object it first runs with "
                     f"_PyCode_SetExtra, a 16-byte block it does not record; alloccount is ahead "
                     f"by one allocation and 16 B per Python function first run under memray")
    if scope == "session":
        notes.append("session scope: the windows are where the run started and stopped each "
                     "tool; blocks allocated while only one tool ran show as differences")
    return CrosscheckResult(rows, measured.threads, scope, dict(baseline) if baseline else None,
                            capture_path, notes)


def _version_tuple(version: str) -> Tuple[int, ...]:
    """(3, 11) from "3.11.7"; () when unknown."""
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return ()


def compare_files(capture_path: Union[str, os.PathLike], stats_json_path: Union[str, os.PathLike],
                  *, tolerance: ToleranceSpec = None) -> CrosscheckResult:
    """Compare a memray capture with an alloccount stats file written by the same run.

    The stats file comes from :func:`record` (a marked window) or :func:`save_stats` (the whole
    sessions). Raises :class:`CrosscheckError` for a missing, corrupt or unusable file.
    """
    memray = _import_memray()
    stats_path = os.fspath(stats_json_path)
    document = _load_stats(stats_path)
    markers: Optional[Tuple[_MarkerSpec, _MarkerSpec]] = None
    if document.get("markers"):
        try:
            found = document["markers"]
            markers = (_MarkerSpec(int(found["start"]["address"]), int(found["start"]["min_size"])),
                       _MarkerSpec(int(found["end"]["address"]), int(found["end"]["min_size"])))
        except (KeyError, TypeError, ValueError):
            raise CrosscheckError(
                f"stats file {stats_path} has unreadable window markers: write it again "
                f"{_WRITE_STATS}"
            ) from None
    return _compare(memray, os.fspath(capture_path), document["figures"], document["scope"],
                    document.get("baseline"), markers, tolerance, str(document.get("python", "")))


def _run_recorded(body: Callable[[], Any], capture_path: Union[str, os.PathLike, None],
                  stats_path: Union[str, os.PathLike, None], tolerance: ToleranceSpec
                  ) -> CrosscheckResult:
    """Record ``body`` into ``capture_path`` (a temporary file when None) and compare."""
    memray = _import_memray()
    tolerances = _row_tolerances(tolerance)  # bad tolerances fail before the run, not after
    if stats_path is not None and capture_path is None:
        raise CrosscheckError("a stats file is compared with its capture: give capture_path "
                              "(--capture) with stats_path (--stats)")
    with contextlib.ExitStack() as cleanup:
        if capture_path is None:
            directory = cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="alloccount-crosscheck-"))
            capture = os.path.join(directory, "capture.bin")
        else:
            capture = os.fspath(capture_path)
        with record(capture, stats_path) as recording:
            # Held until the window has closed: what the body returns is what it leaves live.
            value = body()
        del value
        result = _compare(memray, capture, recording.figures, "window", recording.baseline,
                          recording.markers, tolerances, _PYTHON)
        result.capture_path = None if capture_path is None else capture
        return result


def crosscheck(func: Callable[..., Any], *args: Any, tolerance: ToleranceSpec = None,
               capture_path: Union[str, os.PathLike, None] = None,
               stats_path: Union[str, os.PathLike, None] = None, **kwargs: Any
               ) -> CrosscheckResult:
    """Run ``func(*args, **kwargs)`` under alloccount and memray together and compare.

    ``tolerance``: one for every row (``"0.1%"``, ``"0.1%+64"``, a fraction, a
    :class:`Tolerance`) or a mapping from row name to tolerance (other rows keep
    :data:`DEFAULT_TOLERANCE`). ``capture_path`` keeps the capture (it must not exist);
    ``stats_path``, with it, also writes alloccount's stats file, for :func:`compare_files`.
    alloccount must not be tracking. An exception from ``func`` propagates after both tools
    have stopped. The return value of ``func`` is released after the window, so it counts as
    leaked.
    """
    return _run_recorded(lambda: func(*args, **kwargs), capture_path, stats_path, tolerance)


def crosscheck_script(path_or_module: str, argv: Sequence[str] = (), is_module: bool = False, *,
                      tolerance: ToleranceSpec = None,
                      capture_path: Union[str, os.PathLike, None] = None,
                      stats_path: Union[str, os.PathLike, None] = None) -> CrosscheckResult:
    """Run a script (or, with ``is_module``, a module as ``python -m`` does) and compare.

    The script runs as ``__main__`` with ``sys.argv`` set to it and ``argv``; ``sys.exit(0)``
    ends it normally, any other exit or exception propagates. Options as :func:`crosscheck`.
    """
    if not is_module and not os.path.isfile(path_or_module):
        raise CrosscheckError(f"script {path_or_module} does not exist")
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = [path_or_module, *argv]
    if sys.path:
        # What the interpreter puts first: the script's folder, or the current one for -m.
        sys.path[0] = os.getcwd() if is_module else os.path.dirname(os.path.abspath(path_or_module))

    def run() -> None:
        try:
            if is_module:
                runpy.run_module(path_or_module, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(path_or_module, run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise

    try:
        return _run_recorded(run, capture_path, stats_path, tolerance)
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0


# ---------------------------------------------------------------------------- command line


def _parse_tolerance_option(text: str) -> Tuple[Optional[str], Tolerance]:
    """``SPEC`` for every row or ``ROW=SPEC`` for one, for argparse."""
    row, _, spec = text.rpartition("=")
    if row and row not in ROWS:
        raise argparse.ArgumentTypeError(f"no row {row!r}; the rows are {', '.join(ROWS)}")
    try:
        return (row or None), parse_tolerance(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alloccount crosscheck",
        description=(
            "Run a script (or -m module) under alloccount and memray together and compare "
            "their figures; or, with --capture and --stats alone, compare files written by "
            "an earlier run. Exit status: 0 every row within tolerance, 1 some row out of "
            "tolerance, 2 bad usage or input."
        ),
        epilog=f"rows: {', '.join(ROWS)}. Default tolerance {DEFAULT_TOLERANCE} for each row.",
    )
    parser.add_argument(
        "--tolerance", action="append", default=[], type=_parse_tolerance_option,
        metavar="[ROW=]SPEC",
        help="'0.1%%' (relative), '64' (absolute) or '0.1%%+64', for every row or for ROW; "
             "repeatable",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    parser.add_argument("--capture", metavar="FILE",
                        help="the memray capture: kept there (must not exist) when running a "
                             "script, read from there when comparing files")
    parser.add_argument("--stats", metavar="FILE",
                        help="alloccount's stats file (JSON): written there when running a "
                             "script, read from there when comparing files")
    parser.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE",
                        help="run a library module as a script (the rest are its arguments)")
    parser.add_argument("script", nargs=argparse.REMAINDER,
                        help="the script and its arguments")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``crosscheck`` command: print the table; the exit status is the verdict.

    0: every row within tolerance; 1: some row out of tolerance; 2: bad usage or input, or the
    script failed (then there is nothing to compare).
    """
    parser = _argument_parser()
    options = parser.parse_args(argv)
    tolerance: Dict[str, Tolerance] = {}
    for row, value in options.tolerance:
        tolerance.update({row: value} if row else dict.fromkeys(ROWS, value))
    if options.module is not None and not options.module:
        parser.error("-m needs a module name")
    target = options.module or options.script
    if not target and not (options.capture and options.stats):
        parser.error("give a script (or -m module) to run, or --capture and --stats to compare "
                     "files from an earlier run")
    try:
        if target:
            result = crosscheck_script(target[0], target[1:], is_module=options.module is not None,
                                       tolerance=tolerance or None,
                                       capture_path=options.capture, stats_path=options.stats)
        else:
            result = compare_files(options.capture, options.stats, tolerance=tolerance or None)
    except CrosscheckError as exc:
        print(f"alloccount crosscheck: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # the script's own sys.exit() with a failure status
        print(f"alloccount crosscheck: error: {target[0]} exited with status {exc.code!r}; "
              f"nothing to compare", file=sys.stderr)
        return 2
    except Exception:  # the script raised: show its traceback as python would
        traceback.print_exc()
        print(f"alloccount crosscheck: error: the run of {target[0]} failed (traceback above); "
              f"nothing to compare", file=sys.stderr)
        return 2
    print(result.render())
    if options.json:
        with open(options.json, "w", encoding="utf-8") as stream:
            json.dump(result.to_dict(), stream, indent=2)
            stream.write("\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
