"""History: a bounded ring of samples that a sampler thread fills while others read, and its files."""
from __future__ import annotations

import csv
import json
import os
import threading

import pytest

from alloccount.history import CATEGORY_FIELDS, TOTAL_ROW, History, Sample

META = {"command": "python bot.py", "start_time": 1_700_000_000.0, "interval_s": 1.0, "pid": 4242}


def make_sample(i: int, categories: tuple[str, ...] = ("orders", "prices")) -> Sample:
    """Sample number ``i``: every counter derived from ``i`` so each one is distinguishable."""
    return Sample(
        t_s=float(i),
        wall_time=1_700_000_000.0 + i,
        current_bytes=1_000 * i,
        peak_bytes=2_000 * i,
        allocations=10 * i,
        frees=9 * i,
        rss_bytes=50_000_000 + i,
        categories={
            name: {key: (index + 1) * (i + position) for position, key in enumerate(CATEGORY_FIELDS)}
            for index, name in enumerate(categories)
        },
    )


def filled(n: int, maxlen: int | None = None, **kwargs) -> History:
    """A history holding samples 0..n-1."""
    history = History(maxlen=maxlen, meta=META)
    for i in range(n):
        history.append(make_sample(i, **kwargs))
    return history


# --- the ring --------------------------------------------------------------------------------


def test_samples_are_kept_in_order():
    history = filled(5)
    assert len(history) == 5
    assert [sample.t_s for sample in history] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("maxlen, appended, kept", [(3, 2, [0, 1]), (3, 3, [0, 1, 2]), (3, 10, [7, 8, 9]), (1, 4, [3])])
def test_a_full_ring_drops_the_oldest_samples(maxlen, appended, kept):
    history = filled(appended, maxlen=maxlen)
    assert [int(sample.t_s) for sample in history] == kept
    assert history.maxlen == maxlen


def test_maxlen_none_keeps_everything():
    assert len(filled(1_000, maxlen=None)) == 1_000


@pytest.mark.parametrize("maxlen", [0, -5])
def test_a_ring_needs_room_for_one_sample(maxlen):
    with pytest.raises(ValueError, match="maxlen must be at least 1"):
        History(maxlen=maxlen)


def test_copy_is_independent_of_later_appends():
    history = filled(3)
    duplicate = history.copy()
    history.append(make_sample(3))
    assert len(duplicate) == 3
    assert duplicate.meta == history.meta and duplicate.meta is not history.meta
    assert duplicate.maxlen == history.maxlen


# --- series ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, expected", [("current_bytes", [0, 1000, 2000]), ("rss_bytes", [50_000_000, 50_000_001, 50_000_002])]
)
def test_series_of_a_whole_process_counter(field, expected):
    times, values = filled(3).series(field)
    assert times == [0.0, 1.0, 2.0]
    assert values == expected


def test_series_of_a_category_counter():
    times, values = filled(3).series("bytes_allocated", category="prices")
    # prices is category index 1, bytes_allocated is field position 4: 2 * (i + 4)
    assert values == [8, 10, 12]
    assert times == [0.0, 1.0, 2.0]


def test_a_category_that_appears_late_has_no_points_before_it_appeared():
    # GIVEN "orders" present from sample 2 on
    history = History()
    history.append(make_sample(0, categories=()))
    history.append(make_sample(1, categories=()))
    history.append(make_sample(2, categories=("orders",)))
    # THEN its series starts there, rather than with zeros that would look like sudden growth
    assert history.series("current_bytes", "orders")[0] == [2.0]
    assert history.categories() == ["orders"]


def test_categories_lists_every_name_seen_sorted():
    history = History()
    history.append(make_sample(0, categories=("prices",)))
    history.append(make_sample(1, categories=("orders", "indicators")))
    assert history.categories() == ["indicators", "orders", "prices"]


@pytest.mark.parametrize(
    "field, category",
    [("bytes_allocated", None), ("rss_bytes", "orders"), ("nonsense", None), ("nonsense", "orders")],
)
def test_series_rejects_a_field_that_does_not_exist_there(field, category):
    with pytest.raises(ValueError, match=f"unknown field '{field}'"):
        filled(2).series(field, category)


# --- thread safety -----------------------------------------------------------------------------


def test_readers_can_iterate_while_a_sampler_thread_appends():
    # GIVEN a small ring a sampler keeps overwriting
    history = History(maxlen=500)
    stop = threading.Event()
    errors: list[BaseException] = []

    def sampler() -> None:
        i = 0
        while not stop.is_set():
            history.append(make_sample(i))
            i += 1

    thread = threading.Thread(target=sampler)
    thread.start()
    try:
        # WHEN readers iterate and take series meanwhile
        for _ in range(300):
            try:
                samples = list(history)
                times, values = history.series("current_bytes", "orders")
            except RuntimeError as exc:  # "deque mutated during iteration"
                errors.append(exc)
                break
            # THEN each read is one consistent, ordered snapshot
            assert [s.t_s for s in samples] == sorted(s.t_s for s in samples)
            assert len(times) == len(values) and times == sorted(times)
    finally:
        stop.set()
        thread.join()
    assert errors == []


# --- JSON --------------------------------------------------------------------------------------


def test_json_round_trip_keeps_samples_meta_and_maxlen(tmp_path):
    history = filled(20, maxlen=50)
    path = tmp_path / "history.json"
    history.to_json(path)
    loaded = History.from_json(path)
    assert loaded.snapshot() == history.snapshot()
    assert loaded.meta == META
    assert loaded.maxlen == 50


def test_to_json_replaces_an_existing_file_and_leaves_no_temporary_behind(tmp_path):
    path = tmp_path / "history.json"
    path.write_text("old contents")
    filled(3).to_json(path)
    assert len(History.from_json(path)) == 3
    assert os.listdir(tmp_path) == ["history.json"]


@pytest.mark.parametrize("write", [History.to_json, History.to_csv])
def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, monkeypatch, write):
    # GIVEN a file from an earlier write
    path = tmp_path / "out"
    path.write_text("previous")

    # WHEN the final rename fails (disk full, killed: anything after the temporary was written)
    def failing_replace(src, dst):
        raise OSError("simulated failure")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated failure"):
        write(filled(3), path)
    # THEN readers still see the previous file, and no temporary is left behind
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("write", [History.to_json, History.to_csv])
def test_writes_are_fsynced_before_the_rename(tmp_path, monkeypatch, write):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write(filled(2), tmp_path / "out")
    # The data is on disk before the new name points at it.
    assert events.index("fsync") < events.index("replace")


def test_written_files_get_the_usual_permissions(tmp_path):
    # A temporary made with mkstemp would be 0600: the report would be unreadable to the team.
    path = tmp_path / "history.json"
    filled(1).to_json(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def _write(path, text: str | bytes) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def _document(**changes) -> str:
    """A valid history document with top-level keys replaced."""
    document = {"format": "alloccount.history", "version": 1, "maxlen": 10, "meta": {}, "samples": []}
    document.update(changes)
    return json.dumps(document)


def _document_with_sample(**changes) -> str:
    sample = make_sample(1).to_dict()
    sample.update(changes)
    return _document(samples=[make_sample(0).to_dict(), sample])


@pytest.mark.parametrize(
    "contents, problem",
    [
        (None, "no such file"),
        ("", "not valid JSON"),
        ("{\"format\": ", "not valid JSON .* line 1"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        ("[1, 2, 3]", "not an alloccount history"),
        (json.dumps({"samples": []}), "not an alloccount history"),
        (_document(version=2), "unsupported format version 2"),
        (_document(maxlen=0), "'maxlen' must be a positive integer"),
        (_document(meta=[]), "'meta' must be an object"),
        (_document(samples={}), "'samples' must be a list"),
        (_document(samples=[42]), "sample 0: a sample must be an object"),
        (_document_with_sample(rss_bytes=None), "sample 1: field 'rss_bytes' must be a non-negative integer"),
        (_document_with_sample(current_bytes="12"), "sample 1: field 'current_bytes' must be"),
        (_document_with_sample(frees=-1), "sample 1: field 'frees' must be a non-negative integer"),
        (_document_with_sample(allocations=True), "sample 1: field 'allocations' must be"),
        (_document_with_sample(t_s="now"), "sample 1: field 't_s' must be a finite number"),
        (_document_with_sample(categories=[]), "sample 1: field 'categories' must be an object"),
        (_document_with_sample(categories={"orders": 5}), "sample 1: category 'orders' must be an object"),
        (
            _document_with_sample(categories={"orders": {"current_bytes": 1}}),
            "sample 1: category 'orders': missing field 'peak_bytes'",
        ),
    ],
)
def test_from_json_names_the_file_and_the_problem(tmp_path, contents, problem):
    # GIVEN a missing, corrupt or malformed history file
    path = tmp_path / "broken.json"
    if contents is not None:
        _write(path, contents)
    # WHEN it is loaded
    with pytest.raises(ValueError, match=problem) as excinfo:
        History.from_json(path)
    # THEN the message names the file
    assert str(path) in str(excinfo.value)


def test_from_json_of_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read it"):
        History.from_json(tmp_path)


def test_from_json_keeps_the_newest_samples_when_the_file_exceeds_maxlen(tmp_path):
    path = tmp_path / "history.json"
    samples = [make_sample(i).to_dict() for i in range(5)]
    path.write_text(_document(maxlen=2, samples=samples))
    assert [s.t_s for s in History.from_json(path)] == [3.0, 4.0]


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_has_a_total_row_and_one_row_per_category_for_every_sample(tmp_path):
    path = tmp_path / "history.csv"
    filled(3).to_csv(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    # 3 samples x (total + orders + prices)
    assert len(rows) == 9
    assert [row["category"] for row in rows[:3]] == [TOTAL_ROW, "orders", "prices"]
    total, orders = rows[3], rows[4]  # sample 1
    assert (total["t_s"], total["current_bytes"], total["rss_bytes"]) == ("1.0", "1000", "50000001")
    # The process-wide counters keep no bytes allocated/freed; categories carry no RSS.
    assert total["bytes_allocated"] == total["bytes_freed"] == ""
    assert orders["rss_bytes"] == ""
    assert [int(orders[key]) for key in CATEGORY_FIELDS] == [1 * (1 + p) for p in range(6)]


def test_csv_of_an_empty_history_is_just_the_header(tmp_path):
    path = tmp_path / "empty.csv"
    History().to_csv(path)
    assert path.read_text().splitlines() == [
        "t_s,wall_time,category,current_bytes,peak_bytes,allocations,frees,bytes_allocated,bytes_freed,rss_bytes"
    ]


# --- Sample ------------------------------------------------------------------------------------


def test_a_sample_is_frozen_and_hashable():
    sample = make_sample(1)
    with pytest.raises(AttributeError):
        sample.current_bytes = 0  # type: ignore[misc]
    assert hash(sample) == hash(make_sample(1))


def test_sample_dict_round_trip():
    sample = make_sample(4)
    assert Sample.from_dict(sample.to_dict()) == sample


def test_to_dict_copies_the_categories():
    sample = make_sample(4)
    data = sample.to_dict()
    data["categories"]["orders"]["current_bytes"] = -1
    assert sample.categories["orders"]["current_bytes"] != -1
