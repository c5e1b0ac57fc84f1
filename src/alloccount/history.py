"""A bounded, thread-safe history of counter samples, and its JSON and CSV files.

A sampler thread (the Monitor) appends one :class:`Sample` per interval; reports and leak detection
read the :class:`History` from other threads. The history is a ring (``collections.deque`` with a
``maxlen``), so a service that runs for months keeps only its most recent samples.
"""
from __future__ import annotations

import collections
import csv
import io
import json
import marshal
import math
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from alloccount._atomic import PathLike, atomic_write

__all__ = [
    "CATEGORY_FIELDS",
    "DEFAULT_MAXLEN",
    "SAMPLE_FIELDS",
    "TOTAL_ROW",
    "History",
    "Sample",
]

#: Counters recorded per category in every sample.
CATEGORY_FIELDS = ("current_bytes", "peak_bytes", "allocations", "frees", "bytes_allocated", "bytes_freed")

#: Whole-process counters of a sample that :meth:`History.series` can return.
SAMPLE_FIELDS = ("current_bytes", "peak_bytes", "allocations", "frees", "rss_bytes")

#: One day at one sample a second.
DEFAULT_MAXLEN = 86_400

#: The ``category`` value of the whole-process row in :meth:`History.to_csv`. Angle brackets keep
#: it apart from any category a user can name in code.
TOTAL_ROW = "<total>"

_FORMAT_NAME = "alloccount.history"
_FORMAT_VERSION = 1
_CSV_COLUMNS = ("t_s", "wall_time", "category") + CATEGORY_FIELDS + ("rss_bytes",)


@dataclass(frozen=True)
class Sample:
    """One reading of the counters.

    ``t_s`` is seconds since the monitor started (monotonic, what trends are computed on);
    ``wall_time`` is the epoch time of the same reading (for display). ``categories`` maps a
    category name to its counters, keyed by :data:`CATEGORY_FIELDS`.
    """

    t_s: float
    wall_time: float
    current_bytes: int
    peak_bytes: int
    allocations: int
    frees: int
    rss_bytes: int
    # Excluded from hashing: a dict is unhashable, and equality still compares it.
    categories: dict[str, dict[str, int]] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the sample as plain JSON-ready data (the categories are copied)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in ("t_s", "wall_time") + SAMPLE_FIELDS}
        data["categories"] = {name: dict(counters) for name, counters in self.categories.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        """Build a sample from :meth:`to_dict` output; ValueError names the first bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a sample must be an object, got {type(data).__name__}")
        categories = data.get("categories", {})
        if not isinstance(categories, Mapping):
            raise ValueError(f"field 'categories' must be an object, got {type(categories).__name__}")
        return cls(
            t_s=_number(data, "t_s"),
            wall_time=_number(data, "wall_time"),
            **{name: _count(data, name) for name in SAMPLE_FIELDS},
            categories={str(name): _category_counters(name, counters) for name, counters in categories.items()},
        )


class History:
    """The most recent ``maxlen`` samples plus ``meta`` about the monitored run.

    ``meta`` is a plain dict, filled in before sampling starts; conventional keys are ``command``
    (the monitored command line), ``start_time`` (epoch seconds), ``interval_s`` and ``pid``.

    Thread safety: :meth:`append` may run in a sampler thread while other threads read. Every read
    (iteration, :meth:`series`, the writers) works on a copy taken under a lock, so a reader never
    sees the deque change under it ("deque mutated during iteration").
    """

    def __init__(self, maxlen: Optional[int] = DEFAULT_MAXLEN, meta: Optional[Mapping[str, Any]] = None) -> None:
        """Create an empty history keeping at most ``maxlen`` samples (``None``: unbounded)."""
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be at least 1 (or None for unbounded), got {maxlen}")
        self._samples: collections.deque[bytes] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._decoded: Optional[List[Sample]] = None  # set on copies only, see copy()
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def maxlen(self) -> Optional[int]:
        """The ring's capacity; the oldest sample is dropped when a new one would exceed it."""
        return self._samples.maxlen

    def append(self, sample: Sample) -> None:
        """Add a sample, dropping the oldest when the ring is full.

        The ring holds each sample packed into one ``bytes`` object (marshal), not the sample's
        dicts and floats: CPython hands those out from free lists, reusing objects that other
        categories freed without an allocator call, so a ring of live dicts would keep blocks
        charged to the user's categories and make them look like they grow (found in the
        example bot: "strategies" grew 3 KiB/s under a monitor, flat without one). A fresh
        ``bytes`` is always a new allocation, charged to the monitor's own category.
        """
        packed = marshal.dumps(sample.to_dict())
        with self._lock:
            self._samples.append(packed)
            self._decoded = None

    def drop_after(self, t_s: float) -> int:
        """Remove the samples taken after ``t_s`` (newest first), never the first; return how many went.

        ``alloccount run`` uses it for the samples taken while the program was exiting.
        """
        dropped = 0
        with self._lock:
            while len(self._samples) > 1 and marshal.loads(self._samples[-1])["t_s"] > t_s:
                self._samples.pop()
                dropped += 1
            if dropped:
                self._decoded = None
        return dropped

    def snapshot(self) -> list[Sample]:
        """Return a copy of the samples, oldest first, consistent at one instant."""
        with self._lock:
            if self._decoded is not None:
                return list(self._decoded)
            packed = list(self._samples)
        return [Sample.from_dict(marshal.loads(record)) for record in packed]

    def copy(self) -> History:
        """Return an independent history with the same capacity, meta and samples (a snapshot).

        The copy decodes its samples once and keeps them until something is appended to it:
        readers such as :func:`alloccount.leaks.detect_leaks` take a copy and read many series
        from it. (Copies are short-lived; the ring itself never holds decoded samples.)
        """
        duplicate = History(maxlen=self.maxlen, meta=self.meta)
        with self._lock:
            duplicate._samples.extend(self._samples)
        duplicate._decoded = duplicate.snapshot()
        return duplicate

    def __len__(self) -> int:
        """Return the number of samples held."""
        return len(self._samples)

    def __iter__(self) -> Iterator[Sample]:
        """Iterate over a snapshot, so a concurrent :meth:`append` cannot disturb the reader."""
        return iter(self.snapshot())

    def categories(self) -> list[str]:
        """Return the sorted names of every category seen in any held sample."""
        names = {name for sample in self.snapshot() for name in sample.categories}
        return sorted(names)

    def series(self, field: str, category: Optional[str] = None) -> tuple[list[float], list[int]]:
        """Return ``(times_s, values)`` for one counter, oldest first.

        Without ``category``, ``field`` is one of :data:`SAMPLE_FIELDS` (whole process); with it,
        one of :data:`CATEGORY_FIELDS`. Samples taken before a category first appeared are
        skipped rather than read as zero, so a late category does not look like sudden growth.
        """
        allowed = SAMPLE_FIELDS if category is None else CATEGORY_FIELDS
        if field not in allowed:
            scope = "a sample" if category is None else "a category"
            raise ValueError(f"unknown field {field!r} for {scope}; expected one of {', '.join(allowed)}")
        samples = self.snapshot()
        if category is None:
            return [s.t_s for s in samples], [getattr(s, field) for s in samples]
        present = [s for s in samples if category in s.categories]
        return [s.t_s for s in present], [s.categories[category][field] for s in present]

    def to_json(self, path: PathLike) -> None:
        """Write the history (format marker, version, maxlen, meta, samples) to ``path`` atomically."""
        document = {
            "format": _FORMAT_NAME,
            "version": _FORMAT_VERSION,
            "maxlen": self.maxlen,
            "meta": self.meta,
            "samples": [sample.to_dict() for sample in self.snapshot()],
        }
        atomic_write(path, json.dumps(document, indent=1) + "\n")

    def to_csv(self, path: PathLike) -> None:
        """Write one row per sample and category plus a :data:`TOTAL_ROW` row, atomically.

        Columns are ``t_s, wall_time, category``, the :data:`CATEGORY_FIELDS` and ``rss_bytes``.
        Cells that do not apply are empty: the total row has no ``bytes_allocated``/``bytes_freed``
        (the process-wide counters do not keep them), category rows have no ``rss_bytes``.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for sample in self.snapshot():
            writer.writerow(_total_csv_row(sample))
            for name in sorted(sample.categories):
                counters = sample.categories[name]
                writer.writerow([sample.t_s, sample.wall_time, name, *(counters[key] for key in CATEGORY_FIELDS), ""])
        atomic_write(path, buffer.getvalue())

    @classmethod
    def from_json(cls, path: PathLike) -> History:
        """Load a history written by :meth:`to_json`.

        Raises ValueError naming the file and the problem when it is missing, unreadable, not
        JSON, not an alloccount history, of a newer format version, or holds a malformed sample.
        """
        name = os.fspath(path)
        document = _read_json(name)
        if not isinstance(document, dict) or document.get("format") != _FORMAT_NAME:
            raise ValueError(f"history file {name}: not an alloccount history (no \"format\": \"{_FORMAT_NAME}\")")
        version = document.get("version")
        if version != _FORMAT_VERSION:
            raise ValueError(
                f"history file {name}: unsupported format version {version!r} (this alloccount reads {_FORMAT_VERSION})"
            )
        maxlen, meta, raw_samples = document.get("maxlen"), document.get("meta", {}), document.get("samples")
        if maxlen is not None and (not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1):
            raise ValueError(f"history file {name}: 'maxlen' must be a positive integer or null, got {maxlen!r}")
        if not isinstance(meta, dict):
            raise ValueError(f"history file {name}: 'meta' must be an object, got {type(meta).__name__}")
        if not isinstance(raw_samples, list):
            raise ValueError(f"history file {name}: 'samples' must be a list")
        history = cls(maxlen=maxlen, meta=meta)
        for index, raw in enumerate(raw_samples):
            try:
                history.append(Sample.from_dict(raw))
            except ValueError as exc:
                raise ValueError(f"history file {name}: sample {index}: {exc}") from None
        return history


def _total_csv_row(sample: Sample) -> list[object]:
    """The whole-process CSV row of one sample."""
    return [
        sample.t_s,
        sample.wall_time,
        TOTAL_ROW,
        sample.current_bytes,
        sample.peak_bytes,
        sample.allocations,
        sample.frees,
        "",
        "",
        sample.rss_bytes,
    ]


def _read_json(name: str) -> Any:
    """Parse a JSON file, turning every failure into a ValueError that names the file."""
    try:
        with open(name, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"history file {name}: no such file") from None
    except OSError as exc:
        raise ValueError(f"history file {name}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"history file {name}: not UTF-8 text (is it a history file?)") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ValueError(f"history file {name}: not valid JSON ({exc.msg} at {where})") from None


def _category_counters(name: object, counters: Any) -> dict[str, int]:
    """Validate one category's counters (all of :data:`CATEGORY_FIELDS`)."""
    if not isinstance(counters, Mapping):
        raise ValueError(f"category {name!r} must be an object, got {type(counters).__name__}")
    return {key: _count(counters, key, where=f"category {name!r}: ") for key in CATEGORY_FIELDS}


def _count(data: Mapping[str, Any], key: str, where: str = "") -> int:
    """Read a non-negative integer counter; ``where`` prefixes the error (e.g. the category)."""
    if key not in data:
        raise ValueError(f"{where}missing field {key!r}")
    value = data[key]
    # bool is an int subclass; True as a byte count is a corrupt file, not 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}field {key!r} must be a non-negative integer, got {value!r}")
    return value


def _number(data: Mapping[str, Any], key: str) -> float:
    """Read a finite number (a time) as a float."""
    if key not in data:
        raise ValueError(f"missing field {key!r}")
    value = data[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"field {key!r} must be a finite number, got {value!r}")
    return float(value)
