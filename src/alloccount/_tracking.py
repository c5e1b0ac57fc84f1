"""Starting and stopping the engine: argument validation, chaining with other tools, warnings.

The hot getters (``current_bytes()`` and friends) are the compiled functions themselves,
re-exported by the package: a Python wrapper would double their cost.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Tuple, Union

from . import _core

__all__ = [
    "AllocCountWarning",
    "DOMAINS",
    "MODES",
    "start",
    "stop",
    "is_tracking",
    "reset_peak",
    "tracked_domains",
    "tracking_mode",
]

#: Allocator domains, in CPython's order (PYMEM_DOMAIN_RAW, _MEM, _OBJ).
DOMAINS: Tuple[str, ...] = _core.DOMAIN_NAMES
#: Counting modes accepted by :func:`start`.
MODES = {"exact": _core.MODE_EXACT, "counts": _core.MODE_COUNTS}
_MODE_NAMES = {value: name for name, value in MODES.items()}

DomainsArg = Union[str, Iterable[str]]


class AllocCountWarning(RuntimeWarning):
    """Something about tracking the user should know: e.g. hooks left in the chain."""


def _domain_mask(domains: DomainsArg) -> int:
    if isinstance(domains, str):
        names: Tuple[str, ...] = DOMAINS if domains == "all" else (domains,)
    elif isinstance(domains, (tuple, list, set, frozenset)):
        names = tuple(domains)
        if not names:
            raise ValueError("start(domains=...): empty; give 'all' or some of 'raw', 'mem', 'obj'")
    else:
        raise TypeError(
            f"start(domains=...) takes 'all', a domain name or a tuple of them, "
            f"not {type(domains).__name__}"
        )
    mask = 0
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"start(domains=...): domain names are str, not {type(name).__name__}")
        if name not in DOMAINS:
            raise ValueError(f"start(domains=...): unknown domain {name!r}; expected 'all' or one of {DOMAINS}")
        mask |= 1 << DOMAINS.index(name)
    return mask


def _mask_names(mask: int) -> Tuple[str, ...]:
    return tuple(name for i, name in enumerate(DOMAINS) if mask & (1 << i))


def start(*, mode: str = "exact", domains: DomainsArg = "all") -> None:
    """Start counting allocations.

    ``mode="exact"`` keeps each live block's size in a pointer table, so frees subtract the
    right bytes and ``current_bytes``, ``peak_bytes`` and ``live_blocks`` are exact for blocks
    allocated since this call. ``mode="counts"`` keeps no table: it counts allocations, frees,
    reallocs and bytes requested, and reports the in-use figures as ``None``.

    ``domains`` is ``"all"`` or any of ``"raw"``, ``"mem"``, ``"obj"`` (a str or a tuple).

    Starting again with the same settings is a no-op; with different settings it raises
    ``ValueError`` (call :func:`stop` first). Counters are reset at each start.
    """
    if not isinstance(mode, str):
        raise TypeError(f"start(mode=...) takes a str, not {type(mode).__name__}")
    if mode not in MODES:
        raise ValueError(f"start(mode={mode!r}): unknown mode; expected one of {tuple(MODES)}")
    mask = _domain_mask(domains)
    current_mode = _core.mode()
    if current_mode:
        current_mask = _core.counting_mask()
        if current_mode == MODES[mode] and current_mask == mask:
            return
        raise ValueError(
            f"alloccount is already tracking with mode={_MODE_NAMES[current_mode]!r}, "
            f"domains={_mask_names(current_mask)}; call alloccount.stop() before starting "
            f"with mode={mode!r}, domains={_mask_names(mask)}"
        )
    _core.start(MODES[mode], mask)


def stop() -> None:
    """Stop counting. A no-op when not tracking.

    The figures of the session stay readable until the next :func:`start`. If another tool
    (tracemalloc, memray) installed its hooks above ours after :func:`start`, unlinking ours
    would break it: they stay in the chain as a pass-through and an
    :class:`AllocCountWarning` says so.
    """
    if not _core.mode():
        return
    stuck = _core.stop()
    if stuck:
        warnings.warn(
            f"alloccount stopped counting, but another allocator hook sits above ours in "
            f"domain(s) {_mask_names(stuck)}; ours stay in the chain as a pass-through so "
            f"that tool keeps working",
            AllocCountWarning,
            stacklevel=2,
        )


def is_tracking() -> bool:
    """True while counting AND our hooks still receive calls in every tracked domain.

    A tool started before alloccount (tracemalloc, memray) restores the allocator it saved
    when it stops, silently dropping ours: this probes each domain with a tiny allocation and
    reports ``False`` (with an :class:`AllocCountWarning`) when that happened.
    """
    mask = _core.counting_mask()
    if not mask:
        return False
    reached = _core.probe(mask)
    if reached != mask:
        warnings.warn(
            f"alloccount's hooks no longer receive calls in domain(s) "
            f"{_mask_names(mask & ~reached)}: a tool installed before alloccount stopped "
            f"and restored the allocator it had saved. Call stop() and start() again.",
            AllocCountWarning,
            stacklevel=2,
        )
        return False
    return True


def reset_peak() -> None:
    """Set every peak (global, per domain, per category) to its current value."""
    _core.reset_peak()


def tracking_mode() -> Union[str, None]:
    """``"exact"`` or ``"counts"`` while tracking, else ``None``."""
    return _MODE_NAMES.get(_core.mode())


def tracked_domains() -> Tuple[str, ...]:
    """The domains counted now (empty when not tracking)."""
    return _mask_names(_core.counting_mask())
