"""Shared fixtures: every test leaves the engine stopped, whatever it did."""
from __future__ import annotations

import struct
import warnings
from typing import Callable, Iterator, NamedTuple

import pytest

import alloccount
from alloccount import _core

DOMAINS = ("raw", "mem", "obj")


@pytest.fixture(autouse=True)
def _engine_stopped() -> Iterator[None]:
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", alloccount.AllocCountWarning)
        alloccount.stop()


@pytest.fixture
def exact() -> Iterator[None]:
    """Tracking in exact mode, all domains, for the duration of the test."""
    alloccount.start(mode="exact", domains="all")
    yield
    alloccount.stop()


class Counters(NamedTuple):
    """Raw counters of one domain, read without allocating (see _core.read_into)."""

    allocations: int
    frees: int
    reallocs: int
    bytes_allocated: int
    bytes_freed: int
    current_bytes: int
    peak_bytes: int
    untracked_frees: int

    @classmethod
    def unpack(cls, buffer: bytearray) -> "Counters":
        return cls(*struct.unpack("8q", buffer))

    def __sub__(self, other: "Counters") -> "Counters":  # type: ignore[override]
        return Counters(*(a - b for a, b in zip(self, other)))


def read_buffers(n: int) -> list:
    """Preallocated buffers for _core.read_into (allocating them later would be counted)."""
    return [bytearray(64) for _ in range(n)]


@pytest.fixture
def counters() -> Callable[[bytearray], Counters]:
    return Counters.unpack
