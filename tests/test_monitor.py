"""The background Monitor: sampling, the bounded ring, callbacks, leak warnings, exports."""
from __future__ import annotations

import json
import threading
import time
import warnings

import pytest

import alloccount
from alloccount.monitor import MONITOR_CATEGORY, LeakWarning, Monitor, read_rss_bytes


def test_rss_is_read_from_proc():
    assert read_rss_bytes() > 1_000_000


def test_samples_are_taken_into_a_bounded_ring(exact):
    seen = []
    with Monitor(interval=0.01, maxlen=20, on_sample=seen.append) as monitor:
        while len(seen) < 40:
            time.sleep(0.01)
    assert len(monitor.history) == 20, "the ring keeps only maxlen samples"
    times = [s.t_s for s in monitor.history]
    assert times == sorted(times)
    assert all(s.rss_bytes > 0 for s in monitor.history)


def test_a_leak_is_reported_through_callback_warning_and_log(exact, caplog):
    leaks = []
    kept = []
    monitor = Monitor(interval=0.01, on_leak=leaks.append, check_every=5, leak_options={"min_samples": 20, "warmup": 5})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with monitor:
            deadline = time.monotonic() + 20
            while not leaks and time.monotonic() < deadline:
                with alloccount.category("cache"):
                    kept.append(bytearray(20_000))  # grows steadily: a leak
                time.sleep(0.005)
    names = {v.name for v in leaks}
    assert "category:cache" in names
    assert any(issubclass(w.category, LeakWarning) for w in caught)
    assert "possible leak in category:cache" in caplog.text
    assert monitor.verdicts()["category:cache"].leaking
    del kept


def test_a_bounded_workload_gets_no_verdict(exact):
    leaks = []
    cache = []
    with Monitor(interval=0.01, on_leak=leaks.append, check_every=5, leak_options={"min_samples": 20, "warmup": 5}) as monitor:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            with alloccount.category("bounded"):
                cache.append(bytearray(5_000))
                if len(cache) > 50:
                    cache.clear()
            time.sleep(0.002)
    assert len(monitor.history) >= 40
    assert not [v for v in leaks if v.name == "category:bounded"]
    del cache


def test_the_monitor_itself_is_not_charged_to_user_categories(exact):
    with alloccount.category("user"):
        with Monitor(interval=0.005, maxlen=5000) as monitor:
            time.sleep(0.5)
    stats = alloccount.category_stats()
    assert stats[MONITOR_CATEGORY].current_bytes > 0, "the ring lives in the monitor's category"
    user = stats.get("user")
    assert user is None or user.current_bytes < 5_000
    assert all(MONITOR_CATEGORY not in s.categories for s in monitor.history)


def test_exports_are_written(exact, tmp_path):
    with Monitor(interval=0.01) as monitor:
        time.sleep(0.1)
    monitor.to_json(tmp_path / "h.json")
    monitor.to_csv(tmp_path / "h.csv")
    assert len(json.loads((tmp_path / "h.json").read_text())["samples"]) == len(monitor.history)
    assert (tmp_path / "h.csv").read_text().startswith("t_s,")


def test_periodic_report_is_logged(exact, caplog):
    caplog.set_level("INFO", logger="alloccount")
    with Monitor(interval=0.01, report_every_s=0.05):
        time.sleep(0.3)
    assert "alloccount: in use" in caplog.text


@pytest.mark.parametrize(("kwargs", "error"), [({"interval": 0}, ValueError), ({"interval": "1"}, TypeError), ({"check_every": 0}, ValueError), ({"report_every_s": -1}, ValueError)])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        Monitor(**kwargs)


def test_start_twice_is_an_error_and_stop_twice_is_not(exact):
    monitor = Monitor(interval=0.05).start()
    with pytest.raises(RuntimeError):
        monitor.start()
    monitor.stop()
    monitor.stop()
    assert not monitor.running
