"""Byte sizes and durations: what users type (parse_bytes) and what reports print (format_*)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alloccount._units import format_bytes, format_duration, format_rate, parse_bytes


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0),
        ("512", 512),
        ("512 B", 512),
        ("1 KB", 1_000),
        ("1 KiB", 1_024),
        ("2 MiB", 2 * 1024**2),
        ("2MiB", 2 * 1024**2),
        ("2 mib", 2 * 1024**2),
        ("2 MIB", 2 * 1024**2),
        ("1.5 MB", 1_500_000),
        ("1.5GB", 1_500_000_000),
        ("3 GiB", 3 * 1024**3),
        ("1 TiB", 1024**4),
        ("  7 kb  ", 7_000),
        (".5 KiB", 512),
    ],
)
def test_parse_bytes_accepts_decimal_and_binary_units_in_any_case(text, expected):
    assert parse_bytes(text) == expected


def test_parse_bytes_rounds_fractions_to_the_nearest_byte():
    # GIVEN a size that is not a whole number of bytes
    # WHEN it is parsed
    # THEN the result is an int, rounded
    assert parse_bytes("1.0006 KB") == 1001
    assert isinstance(parse_bytes("0.5 KiB"), int)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty size"),
        ("   ", "empty size"),
        ("2 parsecs", "unknown size unit 'parsecs'"),
        ("2 k", "unknown size unit 'k'"),
        ("-2 MiB", "negative size"),
        ("MiB", "not a size"),
        ("two MiB", "not a size"),
        ("2 M iB", "not a size"),
        ("1e6", "not a size"),
    ],
)
def test_parse_bytes_rejects_bad_sizes_with_a_message_naming_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_bytes(text)


def test_parse_bytes_lists_the_accepted_units_when_the_unit_is_unknown():
    with pytest.raises(ValueError) as excinfo:
        parse_bytes("2 parsecs")
    for unit in ("B", "KB", "MB", "GB", "KiB", "MiB", "GiB"):
        assert unit in str(excinfo.value)


def test_parse_bytes_rejects_non_strings():
    with pytest.raises(TypeError, match="expects a string"):
        parse_bytes(2048)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1023.6, "1.0 KiB"),  # rounds to 1024 B: show it in the next unit, never "1024 B"
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (2 * 1024**2, "2.0 MiB"),
        (1024**2 - 1, "1.0 MiB"),  # 1023.999 KiB would round to "1024.0 KiB"
        (5 * 1024**3, "5.0 GiB"),
        (3 * 1024**4, "3.0 TiB"),
        (-1536, "-1.5 KiB"),
        (-10, "-10 B"),
    ],
)
def test_format_bytes_uses_binary_units(n, expected):
    assert format_bytes(n) == expected


def test_format_bytes_precision_sets_the_decimals():
    assert format_bytes(1536, precision=3) == "1.500 KiB"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_format_bytes_rejects_non_finite_values(bad):
    with pytest.raises(ValueError, match="non-finite"):
        format_bytes(bad)


@given(st.integers(min_value=0, max_value=2**50))
def test_format_bytes_output_parses_back_to_within_its_rounding(n):
    # GIVEN any byte count
    # WHEN it is formatted (one decimal) and parsed back
    text = format_bytes(n)
    unit = text.split()[1]
    # THEN the error is at most half of the last printed decimal (0.05 of the printed unit)
    half_last_decimal = 0 if unit == "B" else 0.05 * parse_bytes(f"1 {unit}")
    assert abs(parse_bytes(text) - n) <= half_last_decimal + 0.5


@pytest.mark.parametrize(
    "rate, expected",
    [(0.25, "0.25 B/s"), (-3.5, "-3.50 B/s"), (512, "512 B/s"), (2048, "2.0 KiB/s")],
)
def test_format_rate_keeps_decimals_for_slow_rates(rate, expected):
    # A 0.25 B/s leak printed as "0 B/s" would hide it.
    assert format_rate(rate) == expected


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (0, "0 s"),
        (0.5, "0.5 s"),
        (1, "1 s"),
        (45, "45 s"),
        (59.4, "59 s"),
        (60, "1 min 00 s"),
        (725, "12 min 05 s"),
        (3600, "1 h 00 min"),
        (12_000, "3 h 20 min"),
        (2 * 86_400 + 4 * 3600, "2 d 04 h"),
        (-90, "-1 min 30 s"),
    ],
)
def test_format_duration_is_compact(seconds, expected):
    assert format_duration(seconds) == expected
