"""Reports of a monitored run: text for a terminal, one self-contained HTML file, or a PNG plot.

>>> from alloccount.report import render
>>> print(render(history, verdicts, "text"))          # doctest: +SKIP
>>> render(history, verdicts, "html", path="report.html")  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional, Union

from alloccount._atomic import PathLike, atomic_write
from alloccount.leaks import detect_leaks
from alloccount.report.base import Renderer
from alloccount.report.html import HtmlRenderer
from alloccount.report.png import PngRenderer
from alloccount.report.terminal import TerminalRenderer

if TYPE_CHECKING:
    from alloccount.history import History
    from alloccount.leaks import LeakVerdict

__all__ = ["RENDERERS", "Renderer", "render"]

#: Format name -> renderer class.
RENDERERS: dict[str, type[Renderer]] = {
    "text": TerminalRenderer,
    "html": HtmlRenderer,
    "png": PngRenderer,
}


def render(
    history: History,
    verdicts: Optional[Mapping[str, LeakVerdict]] = None,
    fmt: str = "text",
    path: Optional[PathLike] = None,
) -> Union[str, bytes]:
    """Render ``history`` in format ``fmt`` (``"text"``, ``"html"`` or ``"png"``).

    ``verdicts`` defaults to :func:`alloccount.leaks.detect_leaks` with its defaults. With
    ``path``, the report is also written there atomically. Returns the report: ``str``, or
    ``bytes`` for PNG.
    """
    try:
        renderer = RENDERERS[fmt]()
    except KeyError:
        raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(RENDERERS)}") from None
    if verdicts is None:
        verdicts = detect_leaks(history)
    output = renderer.render(history, verdicts)
    if path is not None:
        atomic_write(path, output)
    return output
