"""alloccount: always-on allocation counting for long-running Python services.

A C hook installed with ``PyMem_SetAllocator`` counts every allocation, free and realloc in
CPython's allocator domains, with the bytes allocated and freed, the bytes in use and the
peak. See https://github.com/ (docs/) for the user guide.

Quick use::

    import alloccount
    alloccount.start()                 # mode="exact", domains="all"
    ...
    print(alloccount.stats())          # Stats(allocations=..., current_bytes=..., ...)
    alloccount.current_bytes()         # cheap scalar read for tight loops
"""
from ._core import Stats, allocations, current_bytes, engine_info, frees, peak_bytes, stats
from .categories import (
    MAX_CATEGORIES,
    UNCATEGORIZED,
    Category,
    CategoryLimitError,
    category,
    category_stats,
    current_category,
    install_asyncio,
)
from .scopes import AllocationLimitError, Measurement, ThreadKey, limit, measure, no_allocations, thread_stats
from ._tracking import (
    DOMAINS,
    MODES,
    AllocCountWarning,
    is_tracking,
    reset_peak,
    start,
    stop,
    tracked_domains,
    tracking_mode,
)

__version__ = "0.1.0"

# The monitoring layer (history, leak statistics, the sampler) is imported on first use: a
# service that only counts should not pay for it at start-up (PEP 562).
_LAZY = {
    "History": "history",
    "Sample": "history",
    "LeakVerdict": "leaks",
    "detect_leak": "leaks",
    "detect_leaks": "leaks",
    "LeakWarning": "monitor",
    "Monitor": "monitor",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'alloccount' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "History",
    "LeakVerdict",
    "LeakWarning",
    "Monitor",
    "Sample",
    "detect_leak",
    "detect_leaks",
    "MAX_CATEGORIES",
    "UNCATEGORIZED",
    "AllocationLimitError",
    "Category",
    "CategoryLimitError",
    "Measurement",
    "ThreadKey",
    "category",
    "category_stats",
    "current_category",
    "install_asyncio",
    "limit",
    "measure",
    "no_allocations",
    "thread_stats",
    "DOMAINS",
    "MODES",
    "AllocCountWarning",
    "Stats",
    "allocations",
    "current_bytes",
    "engine_info",
    "frees",
    "is_tracking",
    "peak_bytes",
    "reset_peak",
    "start",
    "stats",
    "stop",
    "tracked_domains",
    "tracking_mode",
]
