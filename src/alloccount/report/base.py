"""The one interface every report format implements."""
from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Union

if TYPE_CHECKING:
    from alloccount.history import History
    from alloccount.leaks import LeakVerdict

__all__ = ["Renderer"]


class Renderer(abc.ABC):
    """Turns a history and its leak verdicts into one output format.

    Adding a format means adding one module with one subclass and registering it in
    :data:`alloccount.report.RENDERERS`.
    """

    #: The output's usual file name extension, without the dot.
    extension: ClassVar[str]
    #: True when :meth:`render` returns bytes rather than text.
    binary: ClassVar[bool] = False

    @abc.abstractmethod
    def render(self, history: History, verdicts: Mapping[str, LeakVerdict]) -> Union[str, bytes]:
        """Return the complete report (``str``, or ``bytes`` when :attr:`binary`)."""
