"""Tracking configurations compared by the overhead benchmark.

``activate(name)`` is a context manager that installs one configuration in the current process and
yields a dict that is filled, just before the tracker is stopped, with a few figures showing the
tracker really was active (blocks tracked, bytes written, ...). Trackers are imported lazily so the
untracked configuration loads nothing extra.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Dict, Iterator, List, Optional

CONFIG_NAMES: List[str] = ["untracked", "exact", "counts", "tracemalloc", "memray"]

CONFIG_SUMMARIES: Dict[str, str] = {
    "untracked": "no allocator hook (the baseline)",
    "exact": 'alloccount.start(mode="exact", domains="all"): counters + pointer table',
    "counts": 'alloccount.start(mode="counts", domains="all"): counters only',
    "tracemalloc": "tracemalloc.start(1): one frame per traced block",
    "memray": "memray.Tracker(tmpfile, trace_python_allocators=True), file deleted after",
}

_ALLOCCOUNT_CONFIGS = ("exact", "counts")


def unavailable_reason(name: str) -> Optional[str]:
    """Why configuration ``name`` cannot run with this interpreter, or None if it can."""
    if name in _ALLOCCOUNT_CONFIGS:
        try:
            import alloccount._core  # noqa: F401  (the compiled engine, not just the package)
        except Exception as error:  # any import failure means the same thing here: skip
            return f"alloccount core not importable ({type(error).__name__}: {error})"
    elif name == "memray":
        try:
            import memray  # noqa: F401
        except Exception as error:
            return f"memray not importable ({type(error).__name__}: {error})"
    elif name not in CONFIG_NAMES:
        return f"unknown configuration {name!r}"
    return None


@contextlib.contextmanager
def activate(name: str) -> Iterator[Dict[str, Any]]:
    """Install configuration ``name`` for the duration of the ``with`` block."""
    if name == "untracked":
        yield {}
    elif name in _ALLOCCOUNT_CONFIGS:
        with _alloccount(name) as info:
            yield info
    elif name == "tracemalloc":
        with _tracemalloc() as info:
            yield info
    elif name == "memray":
        with _memray() as info:
            yield info
    else:
        raise ValueError(f"unknown configuration {name!r}")


@contextlib.contextmanager
def _alloccount(mode: str) -> Iterator[Dict[str, Any]]:
    import alloccount

    info: Dict[str, Any] = {}
    alloccount.start(mode=mode, domains="all")
    try:
        yield info
        info["engine_info"] = _json_safe(alloccount.engine_info())
        info["stats"] = _json_safe(alloccount.stats())
    finally:
        alloccount.stop()


@contextlib.contextmanager
def _tracemalloc() -> Iterator[Dict[str, Any]]:
    import tracemalloc

    info: Dict[str, Any] = {}
    tracemalloc.start(1)
    try:
        yield info
        info["traced_current_bytes"], info["traced_peak_bytes"] = tracemalloc.get_traced_memory()
        info["tracemalloc_memory_bytes"] = tracemalloc.get_tracemalloc_memory()
    finally:
        tracemalloc.stop()


@contextlib.contextmanager
def _memray() -> Iterator[Dict[str, Any]]:
    import memray

    info: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="alloccount-bench-") as directory:
        path = os.path.join(directory, "capture.bin")
        with memray.Tracker(path, trace_python_allocators=True):
            yield info
        # memray streams every record to this file: its size shows how much it had to write.
        info["capture_file_bytes"] = os.path.getsize(path)


def _json_safe(value: Any) -> Any:
    """Turn a stats record / engine_info dict into JSON-serializable data, whatever its type."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if hasattr(value, "_asdict"):  # namedtuple / structseq-like records
        return _json_safe(value._asdict())
    if hasattr(value, "__dataclass_fields__"):
        return {field: _json_safe(getattr(value, field)) for field in value.__dataclass_fields__}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return repr(value)
