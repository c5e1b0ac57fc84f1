"""Scoped measurement and allocation limits; per-thread figures.

``with alloccount.measure() as m:`` reads the engine's counters at entry and exit without
allocating (into preallocated buffers), so the figures are those of the block alone:
the calling thread's by default (each thread has its own slot in the engine), all threads'
with ``all_threads=True``.
"""
from __future__ import annotations

import functools
import struct
import sys
import threading
from typing import Any, Callable, Dict, List, NamedTuple, Optional, TypeVar, cast

from . import _core
from ._core import Stats

__all__ = [
    "AllocationLimitError",
    "Measurement",
    "ThreadKey",
    "limit",
    "measure",
    "no_allocations",
    "thread_stats",
]

F = TypeVar("F", bound=Callable[..., Any])
_COUNTERS = struct.Struct("8q")  # the layout _core.read_into/self_read_into write
_ALL_DOMAINS = -1


class AllocationLimitError(AssertionError):
    """A block allocated more than its :func:`limit` (or anything under :func:`no_allocations`)."""


class _Scope(threading.local):
    """Per-thread stack of open measurements (for nesting: see Measurement.__exit__)."""

    def __init__(self) -> None:
        self.stack: List["Measurement"] = []


_scopes = _Scope()
_global_stack: List["Measurement"] = []  # measurements with all_threads=True
_global_lock = threading.Lock()


class Measurement:
    """What a ``with measure():`` block allocated. Figures are ``None`` until the block exits.

    Attributes: ``allocations``, ``frees``, ``reallocs``, ``bytes_allocated``, ``bytes_freed``,
    ``net_bytes`` (bytes still held by blocks allocated in the block, minus bytes of older
    blocks it freed) and ``peak_bytes`` (highest level reached inside the block above the level
    at entry). ``bytes_freed``, ``net_bytes`` and ``peak_bytes`` are ``None`` in counts mode.
    """

    def __init__(self, all_threads: bool = False) -> None:
        self.all_threads = all_threads
        self.allocations: Optional[int] = None
        self.frees: Optional[int] = None
        self.reallocs: Optional[int] = None
        self.bytes_allocated: Optional[int] = None
        self.bytes_freed: Optional[int] = None
        self.net_bytes: Optional[int] = None
        self.peak_bytes: Optional[int] = None
        # Preallocated so that reading at exit allocates nothing inside the window.
        self._entry = bytearray(_COUNTERS.size)
        self._exit = bytearray(_COUNTERS.size)
        self._outer_peak_seen = 0  # highest absolute peak seen by nested measurements
        # A plain function reference: calling self._read would create a bound method, whose
        # free would land inside the measured window.
        self._reader = _core.read_into if all_threads else _core.self_read_into

    def __repr__(self) -> str:
        fields = ("allocations", "frees", "reallocs", "bytes_allocated", "bytes_freed", "net_bytes", "peak_bytes")
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in fields)
        return f"Measurement({body})"

    def _read(self, buffer: bytearray) -> None:
        if self.all_threads:
            _core.read_into(_ALL_DOMAINS, buffer)
        else:
            _core.self_read_into(buffer)

    def _reset_peak(self) -> None:
        if self.all_threads:
            _core.reset_peak()
        else:
            _core.self_reset_peak()

    def __enter__(self) -> "Measurement":
        stack = _global_stack if self.all_threads else _scopes.stack
        if stack:
            # The engine has one peak per thread (and one global): resetting it for this
            # block would lose the enclosing block's peak so far, so hand that over first.
            probe = bytearray(_COUNTERS.size)
            self._read(probe)
            outer = stack[-1]
            outer._outer_peak_seen = max(outer._outer_peak_seen, _COUNTERS.unpack(probe)[6])
        stack.append(self)
        self._reset_peak()
        if self.all_threads:
            self._reader(_ALL_DOMAINS, self._entry)
        else:
            self._reader(self._entry)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.all_threads:
            self._reader(_ALL_DOMAINS, self._exit)
        else:
            self._reader(self._exit)
        stack = _global_stack if self.all_threads else _scopes.stack
        if stack and stack[-1] is self:
            stack.pop()
        entry, exit_ = _COUNTERS.unpack(self._entry), _COUNTERS.unpack(self._exit)
        exact = _core.session()[0] == _core.MODE_EXACT
        self.allocations = exit_[0] - entry[0]
        self.frees = exit_[1] - entry[1]
        self.reallocs = exit_[2] - entry[2]
        self.bytes_allocated = exit_[3] - entry[3]
        if exact:
            self.bytes_freed = exit_[4] - entry[4]
            self.net_bytes = exit_[5] - entry[5]
            self.peak_bytes = max(exit_[6], self._outer_peak_seen) - entry[5]
        if stack:
            outer = stack[-1]
            outer._outer_peak_seen = max(outer._outer_peak_seen, exit_[6], self._outer_peak_seen)


def measure(*, all_threads: bool = False) -> Measurement:
    """Measure what a block allocates: ``with alloccount.measure() as m: ...``.

    By default only the calling thread's allocations and frees count; ``all_threads=True``
    counts every thread's (and resets the global peak, see :func:`alloccount.reset_peak`).
    Nesting works. Requires tracking to be started.
    """
    if not isinstance(all_threads, bool):
        raise TypeError(f"measure(all_threads=...) takes a bool, not {type(all_threads).__name__}")
    if not _core.mode():
        raise RuntimeError("alloccount is not tracking: call alloccount.start() before measure()")
    return Measurement(all_threads=all_threads)


class _Limit:
    """Context manager and decorator behind :func:`limit` and :func:`no_allocations`."""

    def __init__(self, allocations: Optional[int], bytes_: Optional[int], all_threads: bool, what: str) -> None:
        self._allocations = allocations
        self._bytes = bytes_
        self._all_threads = all_threads
        self._what = what
        self._stack = threading.local()

    def __enter__(self) -> Measurement:
        m = measure(all_threads=self._all_threads)
        if not hasattr(self._stack, "items"):
            self._stack.items = []
        self._stack.items.append(m)
        return m.__enter__()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        m: Measurement = self._stack.items.pop()
        m.__exit__(exc_type, exc, tb)
        if exc_type is not None:
            return  # never mask the block's own exception
        over = []
        if self._allocations is not None and (m.allocations or 0) > self._allocations:
            over.append(f"{m.allocations} allocation(s) > limit {self._allocations}")
        if self._bytes is not None and m.bytes_allocated > self._bytes:
            over.append(f"{m.bytes_allocated} bytes allocated > limit {self._bytes} bytes")
        if over:
            scope = "all threads" if self._all_threads else "this thread"
            raise AllocationLimitError(
                f"{self._what} exceeded ({scope}): {'; '.join(over)} "
                f"[allocations={m.allocations}, bytes_allocated={m.bytes_allocated}, frees={m.frees}]"
            )

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kwargs:
                with self:
                    return func(*args, **kwargs)
            with self:
                return func(*args)  # f(*a, **{}) would allocate a dict inside the window

        return cast(F, wrapper)


def _check_limit(name: str, value: Optional[int]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"limit({name}=...) takes an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"limit({name}={value}): must be >= 0")


def limit(*, allocations: Optional[int] = None, bytes: Optional[int] = None, all_threads: bool = False) -> _Limit:
    """Fail a block that allocates more than a budget: a context manager and a decorator.

    ``with alloccount.limit(allocations=10, bytes=4096): ...`` raises
    :class:`AllocationLimitError` at exit, stating what was allocated and the limit, when the
    calling thread (or every thread, ``all_threads=True``) allocated more than ``allocations``
    times or more than ``bytes`` bytes inside the block. An exception from the block itself
    propagates unchanged.
    """
    _check_limit("allocations", allocations)
    _check_limit("bytes", bytes)
    if allocations is None and bytes is None:
        raise ValueError("limit() needs allocations=... and/or bytes=...")
    return _Limit(allocations, bytes, all_threads, "allocation limit")


def no_allocations(func: Optional[F] = None, *, all_threads: bool = False) -> Any:
    """Prove a block allocation-free: ``with alloccount.no_allocations(): ...`` or ``@no_allocations``.

    Raises :class:`AllocationLimitError` at exit if the block allocated anything (the calling
    thread's allocations by default).
    """
    guard = _Limit(0, None, all_threads, "no_allocations()")
    if func is not None:
        return guard(func)
    return guard


def _warm_frames() -> None:
    """Before 3.11, a Python function allocates its frame on its first call (and keeps it for
    reuse): run the exit paths once at import, so the first real gate does not count the
    frames of its own __exit__ methods inside its window."""
    guard = _Limit(0, None, False, "warm-up")
    guard._stack.items = [Measurement()]
    guard.__exit__(None, None, None)


if sys.version_info < (3, 11):
    _warm_frames()


class ThreadKey(NamedTuple):
    """A live thread: ``threading.get_ident()`` and its name (``None`` for a native thread)."""

    ident: int
    name: Optional[str]


def thread_stats() -> Dict[ThreadKey, Stats]:
    """Each live thread's own figures since ``start()``: allocations it made, frees it made.

    Per-thread in-use figures can be negative (a thread that frees what another allocated);
    only sums are meaningful. Threads that never allocated since ``start()`` are absent.
    """
    names = {t.ident: t.name for t in threading.enumerate()}
    return {ThreadKey(ident, names.get(ident)): stats for ident, stats in _core.threads()}
