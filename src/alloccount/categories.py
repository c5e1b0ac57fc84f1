"""Per-category attribution: ``with alloccount.category("orders"): ...``.

The engine keeps, per thread, the id of the current category and charges every allocation to
it; the pointer table remembers each block's category, so a block freed elsewhere is still
subtracted from the category that allocated it. This module names the ids, keeps the current
category in a :class:`contextvars.ContextVar` (so threads and asyncio tasks each have their
own) and mirrors it into the engine.

asyncio: a task that enters a category and then awaits must not lend it to the tasks that run
while it is suspended. Coroutine functions decorated with ``@category(...)`` are exact with no
set-up. For ``with category(...)`` blocks that span an ``await`` inside undecorated coroutines,
call :func:`install_asyncio` once in the running loop: its task factory re-applies each task's
category whenever the task is resumed and restores the loop's own on suspension.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, Tuple, TypeVar, cast

if TYPE_CHECKING:
    import asyncio

from . import _core
from ._core import Stats

__all__ = [
    "UNCATEGORIZED",
    "MAX_CATEGORIES",
    "Category",
    "CategoryLimitError",
    "category",
    "category_stats",
    "current_category",
    "install_asyncio",
]

#: Name of the category that holds every allocation made outside any ``category()`` block.
UNCATEGORIZED = "<uncategorized>"
#: How many categories the engine holds, ``"<uncategorized>"`` included.
MAX_CATEGORIES: int = _core.MAX_CATEGORIES

F = TypeVar("F", bound=Callable[..., Any])

# The current category and the ones it was entered from, as an immutable chain
# (id, parent chain): a task copies its creator's context, so nothing in it may be mutated.
_State = Tuple[int, Any]
_ROOT: _State = (0, None)
_state: contextvars.ContextVar[_State] = contextvars.ContextVar("alloccount_category", default=_ROOT)
_core.bind_category_state(_state)  # CategoryScope (in C) switches through the same chain
_names: List[str] = [UNCATEGORIZED]  # id -> name
_ids: Dict[str, int] = {UNCATEGORIZED: 0}
_instances: Dict[str, "Category"] = {}
_registry_lock = threading.Lock()


class CategoryLimitError(RuntimeError):
    """More distinct category names than the engine holds (:data:`MAX_CATEGORIES`)."""


def _category_id(name: object) -> int:
    if not isinstance(name, str):
        raise TypeError(f"category name must be a str, not {type(name).__name__}")
    if not name.strip():
        raise ValueError("category name must be a non-empty str")
    found = _ids.get(name)
    if found is not None:
        return found
    with _registry_lock:
        found = _ids.get(name)
        if found is not None:
            return found
        if len(_names) >= MAX_CATEGORIES:
            raise CategoryLimitError(
                f"cannot create category {name!r}: the engine holds {MAX_CATEGORIES} categories "
                f"({UNCATEGORIZED!r} included) and all are in use; reuse names (e.g. 'orders' "
                f"rather than one per order id)"
            )
        new_id = len(_names)
        _names.append(name)
        _ids[name] = new_id
        _core.note_category(new_id)
        return new_id


class Category(_core.CategoryScope):
    """A named category: a re-entrant context manager and a decorator.

    Inside ``with category("orders"):`` every allocation of the current thread (or asyncio
    task) is charged to ``"orders"``; leaving restores the enclosing category. Nesting: the
    innermost wins. One object may be entered by several threads and tasks at once: the
    state lives in the entering context, not on the object. Use :func:`category` to get one.
    """

    def __init__(self, name: str) -> None:
        # __cinit__ (in C) took the id: _category_id validated and registered the name.
        self.name = name

    def __new__(cls, name: str) -> "Category":
        return super().__new__(cls, _category_id(name))  # type: ignore[call-arg]

    def __repr__(self) -> str:
        return f"category({self.name!r})"

    @property
    def _id(self) -> int:
        return self.id

    def __call__(self, func: F) -> F:
        """Decorate a function or coroutine function so its body runs in this category."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            def coroutine_wrapper(*args: Any, **kwargs: Any) -> Any:
                return _CategoryCoroutine(func(*args, **kwargs), self._id)

            return cast(F, coroutine_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return cast(F, wrapper)


def category(name: str) -> Category:
    """The category called ``name`` (created on first use), as a context manager/decorator.

    ``name`` must be a non-empty ``str`` (``TypeError``/``ValueError`` otherwise). At most
    :data:`MAX_CATEGORIES` names exist in a process; one more raises
    :class:`CategoryLimitError` rather than merging buckets. The same object is returned for
    the same name, so ``with category("orders"):`` in a hot loop costs a dict lookup.
    """
    found = _instances.get(name) if isinstance(name, str) else None
    if found is None:
        found = Category(name)
        _instances[name] = found
    return found


def current_category() -> str:
    """Name of the category the current thread/task allocates in."""
    return _names[_state.get()[0]]


def category_stats() -> Dict[str, Stats]:
    """Figures per category: ``{name: Stats}``, ``"<uncategorized>"`` included.

    Each block is charged to the category that allocated it until it is freed, wherever the
    free happens. ``live_blocks``, ``current_bytes`` and the event counts of all categories
    sum to :func:`alloccount.stats`'s. ``untracked_frees`` is ``None`` per category (a block from
    before ``start()`` has none); in counts mode ``frees`` is ``None`` too (no table says whose
    block a free releases).
    """
    count = len(_names)
    _, per_category = _core.category_snapshot(count)
    return dict(zip(_names[:count], per_category))


def _category_totals() -> "tuple[Stats, Dict[str, Stats]]":
    """(global Stats, category_stats()) read at one instant, for the sum invariant."""
    count = len(_names)
    total, per_category = _core.category_snapshot(count)
    return total, dict(zip(_names[:count], per_category))


class _CategoryCoroutine(Coroutine):  # type: ignore[type-arg]
    """Runs each step of a coroutine in a category and gives the category back at each await.

    ``send``/``throw`` are exactly the points where a coroutine is resumed, and their return
    is exactly where it is suspended: switching there makes attribution exact however tasks
    interleave.
    """

    __slots__ = ("_coro", "_id")

    def __init__(self, coro: Coroutine, category_id: int) -> None:  # type: ignore[type-arg]
        self._coro = coro
        self._id = category_id

    def _step(self, method: Callable[..., Any], *args: Any) -> Any:
        token = _state.set((self._id, _state.get()))
        outer = _core.set_category(self._id)
        try:
            return method(*args)
        finally:
            _core.set_category(outer)
            _state.reset(token)

    def send(self, value: Any) -> Any:
        return self._step(self._coro.send, value)

    def throw(self, *args: Any) -> Any:  # type: ignore[override]
        return self._step(self._coro.throw, *args)

    def close(self) -> None:
        self._step(self._coro.close)

    def __await__(self) -> Any:
        return self

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def __getattr__(self, name: str) -> Any:  # cr_frame, cr_running, __name__, ... for asyncio
        return getattr(self._coro, name)


class _ContextRestoringCoroutine(_CategoryCoroutine):
    """For install_asyncio's tasks: resume in the task's own current category (ContextVar)."""

    __slots__ = ()

    def __init__(self, coro: Coroutine) -> None:  # type: ignore[type-arg]
        super().__init__(coro, 0)

    def _step(self, method: Callable[..., Any], *args: Any) -> Any:
        # Runs inside the task's context: _state holds this task's category.
        outer = _core.set_category(_state.get()[0])
        try:
            return method(*args)
        finally:
            _core.set_category(outer)


def install_asyncio(loop: "Optional[asyncio.AbstractEventLoop]" = None) -> None:
    """Make ``with category(...)`` blocks exact across ``await`` in every task of ``loop``.

    Installs a task factory (chaining any factory already set) that wraps each task's
    coroutine so the engine's per-thread category follows the task being run. Call it once,
    inside the loop (default: the running loop), e.g. first thing in ``main()``.
    """
    import asyncio  # here, not at import: asyncio costs ~25 ms to import and most users never need it

    loop = loop or asyncio.get_running_loop()
    previous = loop.get_task_factory()
    if getattr(previous, "_alloccount", False):
        return

    def factory(loop: "asyncio.AbstractEventLoop", coro: Awaitable[Any], **kwargs: Any) -> "asyncio.Future[Any]":
        if inspect.iscoroutine(coro) and not isinstance(coro, _CategoryCoroutine):
            coro = _ContextRestoringCoroutine(cast(Coroutine, coro))  # type: ignore[type-arg]
        if previous is not None:
            return previous(loop, coro, **kwargs)  # type: ignore[call-arg]
        return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]

    factory._alloccount = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)  # type: ignore[arg-type]
