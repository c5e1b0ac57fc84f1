"""Leak detection: the statistics against independent oracles, then the verdicts on workloads.

The workloads are synthetic memory curves of a service sampled once a second: a bounded cache
that fills to 5 MB and is cleared (a sawtooth), garbage that piles up between collections (a
smaller, irregular sawtooth), jitter, and optionally a leak or a one-off step on top.
"""
from __future__ import annotations

import itertools
import json
import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alloccount.history import History, Sample
from alloccount.leaks import (
    CATEGORY_PREFIX,
    LeakVerdict,
    detect_leak,
    detect_leaks,
    mann_kendall,
    theil_sen,
)

# Found empirically (300 seeds, verdict checked every 300 samples): a 2 KB/s leak under the 5 MB
# cache sawtooth is reported from at most 3,900 samples on and stays reported; median 1,800,
# 90th percentile 2,400. Stated in the alloccount.leaks docstring.
SLOW_LEAK_SAMPLES_NEEDED = 4_000


def service_memory(
    n: int,
    seed: int,
    *,
    leak_bytes_per_s: float = 0.0,
    cache_bytes: float = 5_000_000,
    cache_fill_s: float = 300,
) -> tuple[list[float], list[float]]:
    """``n`` one-second samples of a service's memory: 20 MB base, a cache sawtooth filling to
    ``cache_bytes`` in about ``cache_fill_s`` (rate varying ±50 %), GC garbage (~20 KB/s,
    collected on average every 30 s), 20 KB jitter, plus ``leak_bytes_per_s``."""
    rng = random.Random(seed)
    times = [float(i) for i in range(n)]
    values = []
    cache = rng.uniform(0, cache_bytes)
    garbage = 0.0
    for t in times:
        cache += cache_bytes / cache_fill_s * rng.uniform(0.5, 1.5)
        if cache >= cache_bytes:
            cache = 0.0
        garbage += rng.expovariate(1 / 20e3)
        if rng.random() < 1 / 30:
            garbage = 0.0
        values.append(20e6 + leak_bytes_per_s * t + cache + garbage + rng.gauss(0, 20e3))
    return times, values


def with_step(values: list[float], at_fraction: float, height: float) -> list[float]:
    """``values`` with ``height`` added from ``at_fraction`` of the series on."""
    start = int(len(values) * at_fraction)
    return [value + (height if index >= start else 0.0) for index, value in enumerate(values)]


# --- the statistics ----------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=0, max_value=6), min_size=2, max_size=60))
def test_mann_kendall_s_and_tie_corrected_variance_match_their_definitions(values):
    # GIVEN a series with many ties (values drawn from 0..6)
    # WHEN the O(n log n) implementation computes S and Var(S)
    result = mann_kendall(values)
    # THEN they equal the O(n^2) definition and the textbook tie correction
    n = len(values)
    s = sum((b > a) - (b < a) for a, b in itertools.combinations(values, 2))
    ties = [values.count(v) for v in set(values)]
    variance = (n * (n - 1) * (2 * n + 5) - sum(t * (t - 1) * (2 * t + 5) for t in ties)) / 18
    assert result.s == s
    assert result.variance == pytest.approx(variance)


@given(st.lists(st.floats(min_value=-1e9, max_value=1e9), min_size=10, max_size=80))
def test_mann_kendall_p_value_is_the_upper_normal_tail_of_the_continuity_corrected_z(values):
    result = mann_kendall(values)
    if result.variance == 0:
        return  # a constant series: nothing to compare
    corrected = result.s - (result.s > 0) + (result.s < 0)
    z = corrected / math.sqrt(result.variance)
    # statistics.NormalDist is an independent implementation of the normal CDF.
    assert result.z == pytest.approx(z)
    assert result.p_value == pytest.approx(1 - statistics.NormalDist().cdf(z), abs=1e-12)


@pytest.mark.parametrize(
    "values, expected_s, expected_p",
    [
        # strictly increasing, n = 10: S = 45, Var = 125, z = 44 / sqrt(125) = 3.9355
        (list(range(10)), 45, 4.15e-5),
        (list(range(10, 0, -1)), -45, 1 - 4.15e-5),
    ],
)
def test_mann_kendall_on_monotonic_series(values, expected_s, expected_p):
    result = mann_kendall(values)
    assert result.s == expected_s
    assert result.p_value == pytest.approx(expected_p, rel=1e-2)


def test_mann_kendall_of_a_constant_series_finds_nothing():
    result = mann_kendall([7] * 50)
    assert (result.s, result.variance, result.p_value) == (0, 0.0, 1.0)


@pytest.mark.parametrize("slope, intercept", [(0.0, 5.0), (2.5, -3.0), (-1e3, 1e9)])
def test_theil_sen_recovers_a_line_despite_spikes(slope, intercept):
    # GIVEN a line where every fifth sample is a huge GC-like spike
    times = [float(t) for t in range(60)]
    values = [intercept + slope * t + (1e12 if i % 5 == 0 else 0.0) for i, t in enumerate(times)]
    # WHEN the Theil-Sen line is fitted
    fitted_slope, fitted_intercept = theil_sen(times, values)
    # THEN the spikes do not move it (least squares would be off by orders of magnitude)
    assert fitted_slope == pytest.approx(slope, abs=1e-9)
    assert fitted_intercept == pytest.approx(intercept, rel=1e-9, abs=1e-9)


def test_theil_sen_on_a_long_series_samples_pairs_close_to_the_exact_median():
    # GIVEN 800 noisy samples: 319,600 pairs, more than the sampling threshold
    rng = random.Random(7)
    times = [float(t) for t in range(800)]
    values = [1000.0 + 3.0 * t + rng.gauss(0, 400) for t in times]
    exact = statistics.median(
        (values[j] - values[i]) / (times[j] - times[i]) for i, j in itertools.combinations(range(800), 2)
    )
    # WHEN the slope is estimated from a sample of the pairs
    sampled, _ = theil_sen(times, values)
    # THEN it is within a few percent of the exact median, and the same on every call
    assert sampled == pytest.approx(exact, rel=0.03)
    assert theil_sen(times, values) == theil_sen(times, values)


def test_theil_sen_needs_two_points():
    with pytest.raises(ValueError, match="at least 2 points"):
        theil_sen([0.0], [1.0])


# --- verdicts --------------------------------------------------------------------------------


@pytest.mark.parametrize("bytes_per_s", [10.0, 1024.0, 1024.0**2])
def test_a_clean_linear_leak_is_found_as_soon_as_there_are_enough_samples(bytes_per_s):
    # GIVEN a steady leak with 1 % jitter, and just enough samples: 34 - 10 % warm-up = 31 >= 30
    rng = random.Random(1)
    times = [float(t) for t in range(34)]
    values = [5e6 + bytes_per_s * t + rng.gauss(0, bytes_per_s * 0.01) for t in times]
    # WHEN the series is tested
    verdict = detect_leak(times, values)
    # THEN it is a leak with the right slope and growth
    assert verdict.leaking, verdict.reason
    assert verdict.slope_bytes_per_s == pytest.approx(bytes_per_s, rel=0.01)
    assert verdict.growth_bytes == pytest.approx(bytes_per_s * verdict.window_s, rel=0.01)
    assert verdict.samples_used == 31
    assert verdict.confidence > 0.99
    assert verdict.reason.startswith("grows ")


@pytest.mark.parametrize("n", [0, 1, 2, 10, 32])
def test_short_series_get_not_enough_samples_never_a_verdict(n):
    # GIVEN a series that grows as fast as can be, but is short (32 - 3 warm-up = 29 < 30)
    times = [float(t) for t in range(n)]
    values = [1e6 * t for t in times]
    verdict = detect_leak(times, values)
    assert not verdict.leaking
    assert verdict.reason.startswith("not enough samples")
    assert (verdict.slope_bytes_per_s, verdict.p_value, verdict.confidence) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize("seed", range(20))
def test_a_slow_leak_under_a_cache_sawtooth_is_found_within_the_stated_samples(seed):
    # GIVEN a 2 KB/s leak: 0.6 MB per 5-minute cache cycle against the cache's 5 MB swing
    times, values = service_memory(int(SLOW_LEAK_SAMPLES_NEEDED * 1.5), seed, leak_bytes_per_s=2_000)
    # WHEN the detector runs after the stated number of samples, and later again
    for n in (SLOW_LEAK_SAMPLES_NEEDED, int(SLOW_LEAK_SAMPLES_NEEDED * 1.25), len(times)):
        verdict = detect_leak(times[:n], values[:n])
        # THEN the leak is reported each time, at roughly its true rate
        assert verdict.leaking, f"n={n}: {verdict.reason}"
        assert verdict.slope_bytes_per_s == pytest.approx(2_000, rel=0.25)


@pytest.mark.parametrize("seed", range(40))
def test_a_bounded_cache_sawtooth_with_gc_noise_gets_no_verdict_over_long_runs(seed):
    # GIVEN the same service without the leak, running two hours
    times, values = service_memory(7_200, seed)
    # WHEN the detector runs at any point after the first two cache cycles
    for n in (600, 1_200, 2_400, 3_600, 7_200):
        verdict = detect_leak(times[:n], values[:n])
        # THEN it never reports a leak
        assert not verdict.leaking, f"n={n}: {verdict.reason}"


@pytest.mark.parametrize("cache_bytes", [0.0, 5_000_000])
@pytest.mark.parametrize("height", [300e3, 1e6, 10e6, 100e6])
@pytest.mark.parametrize("at_fraction", [0.3, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("n", [900, 3_600])
def test_a_one_off_step_is_not_a_leak(cache_bytes, height, at_fraction, n):
    # GIVEN memory that jumps once (a cache warmed, a batch loaded) and then stays flat
    times, values = service_memory(n, seed=3, cache_bytes=cache_bytes)
    values = with_step(values, at_fraction, height)
    # WHEN it is tested
    verdict = detect_leak(times, values)
    # THEN it is not a leak, although the jump makes the Mann-Kendall trend significant
    assert not verdict.leaking, verdict.reason


def test_a_noiseless_step_is_not_a_leak():
    times = [float(t) for t in range(600)]
    values = with_step([1e6] * 600, 0.5, 1e6)
    assert not detect_leak(times, values).leaking


def test_the_step_guard_names_the_step_when_it_is_what_failed():
    # GIVEN a clear 10 MB step in the middle, over small noise
    times, values = service_memory(1_800, seed=1, cache_bytes=0.0)
    verdict = detect_leak(times, with_step(values, 0.5, 10e6))
    assert "one-off step of 9." in verdict.reason or "one-off step of 10." in verdict.reason


@pytest.mark.parametrize("stopped_at", [0.5, 0.6])
def test_growth_that_has_stopped_is_not_a_leak(stopped_at):
    # GIVEN 2 KB/s growth that stops partway and stays flat for the rest of the hour
    times, values = service_memory(3_600, seed=5, cache_bytes=0.0)
    values = [v + 2_000 * min(t, stopped_at * 3_600) for t, v in zip(times, values)]
    assert not detect_leak(times, values).leaking


@pytest.mark.parametrize("seed", range(5))
def test_shrinking_memory_is_not_a_leak(seed):
    times, values = service_memory(1_800, seed, leak_bytes_per_s=-2_000)
    verdict = detect_leak(times, values)
    assert not verdict.leaking
    assert "no significant upward trend" in verdict.reason


def test_a_slope_below_the_minimum_is_not_a_leak():
    # GIVEN a perfectly clean leak of 0.5 B/s, below the 1 B/s default minimum
    times = [float(t) for t in range(200)]
    verdict = detect_leak(times, [1e6 + 0.5 * t for t in times])
    assert not verdict.leaking
    assert "below the 1.00 B/s minimum" in verdict.reason
    # AND with a lower minimum it is one
    assert detect_leak(times, [1e6 + 0.5 * t for t in times], min_slope_bytes_per_s=0.1).leaking


def test_time_to_limit_projects_the_fitted_line():
    # GIVEN a clean 1 KiB/s leak reaching 1,000,000 + 1024 * 99 bytes at t = 99 s
    times = [float(t) for t in range(100)]
    values = [1e6 + 1024 * t for t in times]
    limit = 2e6
    verdict = detect_leak(times, values, limit_bytes=limit)
    # THEN the time to the limit is what is left over the slope
    assert verdict.time_to_limit_s == pytest.approx((limit - values[-1]) / 1024)
    assert "reaches" in verdict.reason


def test_time_to_limit_is_zero_when_over_the_limit_and_none_without_a_leak():
    times = [float(t) for t in range(100)]
    leaking = detect_leak(times, [1e6 + 1024 * t for t in times], limit_bytes=1e5)
    assert leaking.time_to_limit_s == 0.0
    assert "already over" in leaking.reason
    flat = detect_leak(times, [1e6] * 100, limit_bytes=1e5)
    assert flat.time_to_limit_s is None


@pytest.mark.parametrize(
    "warmup, expected_used",
    [(0, 100), (25, 75), (0.0, 100), (0.1, 90), (0.5, 50), (100, 0), (500, 0)],
)
def test_warmup_is_a_count_when_int_and_a_fraction_when_float(warmup, expected_used):
    times = [float(t) for t in range(100)]
    verdict = detect_leak(times, [1e6 + 100 * t for t in times], warmup=warmup, min_samples=10)
    assert verdict.samples_used == expected_used


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"warmup": 1.0}, ValueError, "fraction in \\[0, 1\\)"),
        ({"warmup": -0.1}, ValueError, "fraction in \\[0, 1\\)"),
        ({"warmup": -1}, ValueError, "must not be negative"),
        ({"warmup": True}, TypeError, "warmup must be an int"),
        ({"warmup": "10"}, TypeError, "warmup must be an int"),
        ({"min_samples": 5}, ValueError, "min_samples must be at least 10"),
    ],
)
def test_bad_options_are_rejected(kwargs, error, message):
    times = [float(t) for t in range(50)]
    with pytest.raises(error, match=message):
        detect_leak(times, times, **kwargs)


@pytest.mark.parametrize(
    "times, values, message",
    [
        ([0.0, 1.0], [1.0], "differ in length"),
        ([0.0, 1.0, 1.0], [1.0, 2.0, 3.0], "strictly increasing \\(index 2"),
        ([0.0, 2.0, 1.0], [1.0, 2.0, 3.0], "strictly increasing"),
        ([0.0, 1.0], [1.0, float("nan")], "finite"),
    ],
)
def test_malformed_series_are_rejected(times, values, message):
    with pytest.raises(ValueError, match=message):
        detect_leak(times, values)


def test_the_same_series_always_gets_the_same_verdict():
    times, values = service_memory(5_000, seed=11, leak_bytes_per_s=2_000)
    assert detect_leak(times, values) == detect_leak(times, values)


def test_a_verdict_is_frozen_and_serialises_to_json():
    times = [float(t) for t in range(100)]
    verdict = detect_leak(times, [1e6 + 1024 * t for t in times], name="orders", limit_bytes=2e6)
    with pytest.raises(AttributeError):
        verdict.leaking = False  # type: ignore[misc]
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data["name"] == "orders"
    assert data["leaking"] is True
    assert set(data) >= {
        "leaking", "slope_bytes_per_s", "confidence", "p_value", "samples_used",
        "growth_bytes", "time_to_limit_s", "reason", "name",
    }  # fmt: skip
    assert LeakVerdict(**data) == verdict


# --- over a History ---------------------------------------------------------------------------


def _history_with(categories: dict[str, list[float]], rss: list[float]) -> History:
    """A history whose categories' current bytes follow the given curves."""
    history = History(maxlen=None)
    for i, rss_bytes in enumerate(rss):
        current = {name: int(curve[i]) for name, curve in categories.items()}
        history.append(
            Sample(
                t_s=float(i),
                wall_time=1.7e9 + i,
                current_bytes=sum(current.values()),
                peak_bytes=sum(current.values()),
                allocations=i,
                frees=i,
                rss_bytes=int(rss_bytes),
                categories={
                    name: {
                        "current_bytes": value, "peak_bytes": value, "allocations": i,
                        "frees": 0, "bytes_allocated": value, "bytes_freed": 0,
                    }  # fmt: skip
                    for name, value in current.items()
                },
            )
        )
    return history


def test_detect_leaks_judges_total_rss_and_each_category():
    # GIVEN an "orders" category that leaks 2 KB/s and a "prices" cache that is bounded
    _, orders = service_memory(3_600, seed=1, leak_bytes_per_s=2_000, cache_bytes=0.0)
    _, prices = service_memory(3_600, seed=2)
    rss = [40e6 + a + b for a, b in zip(orders, prices)]
    history = _history_with({"orders": orders, "prices": prices}, rss)
    # WHEN every series is judged
    verdicts = detect_leaks(history, limits={"total": 200e6})
    # THEN the keys name each series, and only the leaking ones are leaks
    assert set(verdicts) == {"total", "rss", CATEGORY_PREFIX + "orders", CATEGORY_PREFIX + "prices"}
    assert verdicts[CATEGORY_PREFIX + "orders"].leaking
    assert not verdicts[CATEGORY_PREFIX + "prices"].leaking
    assert verdicts["total"].leaking and verdicts["rss"].leaking
    assert all(verdict.name == key for key, verdict in verdicts.items())
    # AND the limit applies to its own series only
    assert verdicts["total"].time_to_limit_s is not None
    assert verdicts[CATEGORY_PREFIX + "orders"].time_to_limit_s is None


def test_detect_leaks_passes_options_to_every_series():
    history = _history_with({"orders": [1e6 + 100 * t for t in range(40)]}, [5e7] * 40)
    verdicts = detect_leaks(history, min_samples=100)
    assert all(v.reason.startswith("not enough samples") for v in verdicts.values())


def test_detect_leaks_refuses_per_series_options():
    with pytest.raises(TypeError, match="limits="):
        detect_leaks(History(), limit_bytes=1e6)
