"""The public API's contract: arguments, errors, idempotence, the Stats record."""
from __future__ import annotations

import pickle
import warnings

import pytest

import alloccount


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "fast"}, ValueError, "unknown mode"),
        ({"mode": 1}, TypeError, "mode"),
        ({"domains": "gpu"}, ValueError, "unknown domain 'gpu'"),
        ({"domains": ()}, ValueError, "empty"),
        ({"domains": 3}, TypeError, "domains"),
        ({"domains": ("raw", 2)}, TypeError, "domain names are str"),
    ],
)
def test_start_rejects_bad_arguments_and_does_not_start(kwargs, error, message):
    with pytest.raises(error, match=message):
        alloccount.start(**kwargs)
    assert not alloccount.is_tracking()


def test_start_is_keyword_only():
    with pytest.raises(TypeError):
        alloccount.start("exact")  # type: ignore[misc]


def test_start_twice_with_same_settings_is_a_noop_and_keeps_counting():
    alloccount.start(mode="exact", domains=("obj", "mem"))
    before = alloccount.allocations()
    data = [object() for _ in range(100)]
    alloccount.start(mode="exact", domains=("mem", "obj"))  # same set, other order
    assert alloccount.allocations() >= before + 100, "a no-op start must not reset counters"
    del data


def test_start_with_different_settings_while_tracking_names_both():
    alloccount.start(mode="exact")
    with pytest.raises(ValueError, match=r"already tracking with mode='exact'.*mode='counts'"):
        alloccount.start(mode="counts")
    assert alloccount.tracking_mode() == "exact"


def test_stop_when_not_tracking_is_a_noop():
    alloccount.stop()
    alloccount.stop()
    assert not alloccount.is_tracking()


def test_start_resets_counters():
    alloccount.start()
    keep = [bytearray(1000) for _ in range(10)]
    alloccount.stop()
    assert alloccount.stats().allocations >= 10, "figures stay readable after stop()"
    alloccount.start()
    assert alloccount.stats().allocations < 10
    del keep


@pytest.mark.parametrize(
    ("domain", "error", "message"),
    [("gpu", ValueError, "unknown domain"), (1, TypeError, "None or a str"), ("raw", ValueError, "not tracked")],
)
def test_stats_rejects_bad_or_untracked_domain(domain, error, message):
    alloccount.start(domains=("mem", "obj"))
    with pytest.raises(error, match=message):
        alloccount.stats(domain)


def test_is_tracking_and_introspection_follow_the_session():
    assert not alloccount.is_tracking()
    assert alloccount.tracking_mode() is None
    alloccount.start(mode="counts", domains="obj")
    assert alloccount.is_tracking()
    assert alloccount.tracking_mode() == "counts"
    assert alloccount.tracked_domains() == ("obj",)
    alloccount.stop()
    assert not alloccount.is_tracking()
    assert alloccount.tracked_domains() == ()


def test_counts_mode_reports_in_use_figures_as_none_not_zero():
    alloccount.start(mode="counts")
    junk = [str(i) * 3 for i in range(1000)]
    s = alloccount.stats()
    assert s.allocations >= 1000
    assert s.bytes_allocated > 0
    assert s.frees > 0
    for field in ("bytes_freed", "current_bytes", "peak_bytes", "live_blocks", "untracked_frees"):
        assert getattr(s, field) is None, field
    del junk


def test_stats_is_an_immutable_readable_record():
    alloccount.start()
    s = alloccount.stats()
    with pytest.raises(AttributeError):
        s.allocations = 0  # type: ignore[misc]
    assert set(s._fields) >= {
        "allocations", "frees", "reallocs", "bytes_allocated", "bytes_freed",
        "current_bytes", "peak_bytes", "live_blocks", "untracked_frees",
    }
    assert repr(s).startswith("Stats(allocations=")
    assert pickle.loads(pickle.dumps(s)) == s
    assert s._asdict()["allocations"] == s.allocations
    assert tuple(s) == tuple(s._asdict().values())
    assert s._replace(frees=-1).frees == -1 and s.frees != -1


def test_scalar_getters_agree_with_stats():
    alloccount.start()
    keep = [bytearray(2000) for _ in range(50)]
    s = alloccount.stats()
    # The getters are read after stats() built its record; their own reads allocate ints
    # only, and the 50 bytearrays dominate.
    assert abs(alloccount.current_bytes() - s.current_bytes) < 2000
    assert alloccount.peak_bytes() >= s.current_bytes
    assert alloccount.allocations() >= s.allocations
    assert alloccount.frees() >= s.frees
    del keep


def test_reset_peak_brings_peak_down_to_current():
    alloccount.start()
    big = bytearray(5_000_000)
    del big
    assert alloccount.peak_bytes() >= 5_000_000
    alloccount.reset_peak()
    assert alloccount.peak_bytes() < 1_000_000
    assert alloccount.stats("raw").peak_bytes < 1_000_000


def test_public_names_are_documented():
    for name in alloccount.__all__:
        obj = getattr(alloccount, name)
        if callable(obj):
            assert obj.__doc__, f"alloccount.{name} has no docstring"


def test_warning_class_is_a_runtime_warning():
    assert issubclass(alloccount.AllocCountWarning, RuntimeWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alloccount.stop()  # nothing to warn about


@pytest.mark.parametrize("getter", ["current_bytes", "peak_bytes"])
def test_polling_a_level_in_a_loop_does_not_allocate_each_time(exact, getter):
    # The returned int is reused while the figure is unchanged: a read that boxed a fresh int
    # every time would change the figure it polls (and cost an allocation per read).
    # (allocations() cannot do this: boxing its result is itself the next allocation.)
    read = getattr(alloccount, getter)
    with alloccount.measure() as m:
        i = 0
        while i < 200:
            read()
            i += 1
    assert m.allocations <= 2
    assert alloccount.peak_bytes() == alloccount.stats().peak_bytes
