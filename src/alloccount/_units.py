"""Human-readable byte sizes and durations, shared by the reports and the configuration parsers.

Sizes are printed with binary (IEC) units, ``KiB`` = 1024 bytes, because allocator and RSS figures
are powers-of-two quantities; parsing accepts both decimal (``KB`` = 1000) and binary units so a
limit can be written the way the user thinks of it.
"""
from __future__ import annotations

import math
import re

__all__ = ["format_bytes", "format_duration", "format_rate", "parse_bytes"]

_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")

# Lower-case unit name -> multiplier. A bare number means bytes.
_UNIT_MULTIPLIERS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

_SIZE_PATTERN = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-z]*)\s*$", re.IGNORECASE)


def format_bytes(n: float, *, precision: int = 1) -> str:
    """Format a byte count with binary units: ``512 B``, ``1.5 KiB``, ``-3.2 MiB``.

    Counts under 1 KiB are printed as whole bytes. Negative values (shrinking memory, a negative
    growth) keep their sign. ``precision`` is the number of decimals for KiB and larger.
    """
    if not math.isfinite(n):
        raise ValueError(f"cannot format a non-finite byte count: {n!r}")
    sign = "-" if n < 0 else ""
    magnitude = abs(n)
    if round(magnitude) < 1024:
        return f"{sign}{round(magnitude)} B"
    exponent = min(max(1, int(math.log(magnitude, 1024))), len(_BINARY_UNITS) - 1)
    scaled = magnitude / 1024**exponent
    # 1023.96 KiB would print as "1024.0 KiB": move up a unit when rounding reaches 1024.
    if round(scaled, precision) >= 1024 and exponent < len(_BINARY_UNITS) - 1:
        exponent += 1
        scaled /= 1024
    return f"{sign}{scaled:.{precision}f} {_BINARY_UNITS[exponent]}"


def format_rate(bytes_per_s: float) -> str:
    """Format a growth rate: ``2.0 KiB/s``; under 10 B/s with two decimals (``0.25 B/s``), since
    slow leaks live there and ``0 B/s`` would hide them."""
    if abs(bytes_per_s) < 10:
        return f"{bytes_per_s:.2f} B/s"
    return f"{format_bytes(bytes_per_s)}/s"


def parse_bytes(text: str) -> int:
    """Parse a size such as ``"2 MiB"``, ``"1.5GB"`` or ``"512"`` into a whole number of bytes.

    Units are case-insensitive and the space is optional: ``B``, ``KB``/``MB``/``GB``/``TB`` (powers
    of 1000) and ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024); a bare number is bytes. Fractions
    are rounded to the nearest byte. Raises ValueError for an empty string, a negative size or an
    unknown unit, naming the offending text.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_bytes() expects a string such as '2 MiB', got {type(text).__name__}")
    match = _SIZE_PATTERN.match(text)
    if match is None:
        if not text.strip():
            raise ValueError("empty size: expected a number with an optional unit, e.g. '2 MiB'")
        raise ValueError(f"not a size: {text!r} (expected a number with an optional unit, e.g. '2 MiB')")
    number_text, unit = match.groups()
    number = float(number_text)
    if number < 0:
        raise ValueError(f"negative size: {text!r}")
    multiplier = _UNIT_MULTIPLIERS.get(unit.lower())
    if multiplier is None:
        accepted = ", ".join(["B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"])
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (accepted: {accepted})")
    return round(number * multiplier)


def format_duration(seconds: float) -> str:
    """Format a duration compactly: ``45 s``, ``12 min 05 s``, ``3 h 20 min``, ``2 d 04 h``."""
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format a non-finite duration: {seconds!r}")
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 60:
        # Sub-second durations matter for sampling intervals ("0.5 s").
        return f"{seconds:.1f} s" if seconds < 10 and seconds != int(seconds) else f"{seconds:.0f} s"
    total = round(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"
