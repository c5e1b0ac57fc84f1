"""alloccount's figures against memray's, on real captures (alloccount.crosscheck).

memray records every Python-allocator call with ``trace_python_allocators=True``: on
deterministic workloads every row of the comparison must agree within the default tolerance,
a run skewed on one side must fail and name the rows, and unusable files must be refused with
a message that says what to do. See docs/crosscheck.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import alloccount
from alloccount import crosscheck as xc

memray = pytest.importorskip("memray", reason="the cross-check needs memray (alloccount[memray])")

pytestmark = pytest.mark.timeout(20)

# -------------------------------------------------------------------------------- workloads
# Each returns what it allocated, so that it stays live to the end of the compared window.

N_OBJECTS = 20_000
BUFFER_SIZE = 1_500  # above pymalloc's 512-byte limit: the block comes from PyMem_RawMalloc
N_BUFFERS = 3_000
N_APPENDS = 50_000
CHUNK = b"x" * 40
N_THREADS = 4
PER_THREAD = 5_000
# Scripts also run runpy's and importlib's functions for the first time under memray: on
# Python < 3.12 each costs alloccount one unrecorded 16-byte block (docs/crosscheck.md), so a
# script needs a flow of some 100k allocations to keep those well under 0.1%.
SCRIPT_BUFFERS = 100_000
SCRIPT_BUFFER_SIZE = 100


def small_objects() -> list:
    return [object() for _ in range(N_OBJECTS)]


def large_buffers() -> list:
    return [bytearray(BUFFER_SIZE) for _ in range(N_BUFFERS)]


def growing_list_and_bytearray() -> tuple:
    items: list = []
    buffer = bytearray()
    for i in range(N_APPENDS):
        items.append(i)
        buffer += CHUNK
    return items, buffer


def threaded_buffers() -> list:
    results: list = []

    def worker() -> None:
        results.append([bytearray(BUFFER_SIZE) for _ in range(PER_THREAD)])

    threads = [threading.Thread(target=worker) for _ in range(N_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


# -------------------------------------------------------------------------------- agreement


@pytest.mark.parametrize(
    ("workload", "min_blocks", "min_bytes"),
    [
        (small_objects, N_OBJECTS, 0),
        (large_buffers, N_BUFFERS, N_BUFFERS * BUFFER_SIZE),
        (growing_list_and_bytearray, 0, N_APPENDS * len(CHUNK)),
    ],
    ids=["small objects", "large buffers", "growing list and bytearray"],
)
def test_deterministic_workloads_agree_on_every_row(workload, min_blocks, min_bytes):
    # GIVEN a deterministic workload that keeps what it allocates
    # WHEN it runs under alloccount and memray together
    result = xc.crosscheck(workload)

    # THEN every row is within the default tolerance
    assert result.failed_rows == [], result.render()
    assert result.ok
    assert [row.name for row in result.rows] == list(xc.ROWS)
    # AND both tools saw the workload itself, not just noise around it
    for row_name, floor in (("leaked_blocks", min_blocks), ("leaked_bytes", min_bytes)):
        row = result.row(row_name)
        assert row.alloccount >= floor and row.memray >= floor, result.render()


def test_reallocs_of_growing_containers_stay_within_memrays_bound():
    # GIVEN containers grown one item at a time: CPython reallocs their buffers as they grow
    # WHEN cross-checked
    result = xc.crosscheck(growing_list_and_bytearray)

    # THEN alloccount counted reallocs, no more than memray's records allow
    reallocs = result.row("reallocs")
    assert reallocs.upper_bound
    assert 0 < reallocs.alloccount <= reallocs.memray, result.render()
    assert reallocs.ok


def test_threaded_workload_agrees_and_covers_every_thread():
    # GIVEN worker threads that allocate while the main thread waits
    # WHEN cross-checked
    result = xc.crosscheck(threaded_buffers)

    # THEN the rows agree, over all threads: the main thread and every worker have records
    assert result.failed_rows == [], result.render()
    assert result.threads == N_THREADS + 1
    assert result.to_dict()["threads"] == {"covered": "all", "seen": N_THREADS + 1}
    assert f"threads: all, {N_THREADS + 1} seen" in result.render()
    blocks = result.row("leaked_blocks")
    assert min(blocks.alloccount, blocks.memray) >= N_THREADS * PER_THREAD


def test_arguments_reach_the_callable_and_its_exception_propagates_with_both_tools_stopped():
    # GIVEN a callable taking arguments, then one that raises
    seen = []

    def record_call(*args, **kwargs):
        seen.append((args, kwargs))

    def broken():
        raise LookupError("workload failed")

    # WHEN each is cross-checked
    xc.crosscheck(record_call, 1, 2, key="value")
    with pytest.raises(LookupError, match="workload failed"):
        xc.crosscheck(broken)

    # THEN the arguments arrived, and the failure left alloccount stopped for the next run
    assert seen == [((1, 2), {"key": "value"})]
    assert alloccount.tracking_mode() is None
    assert xc.crosscheck(small_objects).ok


# ------------------------------------------------------------------- files made elsewhere


def test_files_written_by_record_compare_later(tmp_path):
    # GIVEN a capture and a stats file recorded together
    capture, stats = tmp_path / "capture.bin", tmp_path / "stats.json"
    with xc.record(capture, stats) as recording:
        kept = large_buffers()

    # WHEN the files are compared later
    result = xc.compare_files(capture, stats)

    # THEN the comparison agrees, over the marked window, with the calibrated baseline
    assert result.failed_rows == [], result.render()
    assert result.scope == "window"
    assert result.baseline == recording.baseline
    document = json.loads(stats.read_text())
    assert document["scope"] == "window" and document["markers"] is not None
    assert document["figures"] == recording.figures
    # AND the window holds the workload's buffers on both sides
    row = result.row("leaked_bytes")
    assert min(row.alloccount, row.memray) >= N_BUFFERS * BUFFER_SIZE
    del kept


def memray_has_run(tmp_path) -> None:
    """An empty memray session: the first start in a process allocates once, which the
    calibration in save_stats(), made afterwards, cannot see (docs/crosscheck.md)."""
    with memray.Tracker(tmp_path / "first.bin", trace_python_allocators=True):
        pass


def test_session_stats_saved_by_hand_agree(tmp_path):
    # GIVEN a run set up by hand as docs/crosscheck.md says: memray has run in the process, the
    # tracker is made first, alloccount started right before it, and the stats saved while
    # alloccount still tracks (to calibrate)
    memray_has_run(tmp_path)
    capture, stats = tmp_path / "capture.bin", tmp_path / "stats.json"
    tracker = memray.Tracker(capture, trace_python_allocators=True)
    alloccount.start()
    with tracker:
        kept = small_objects(), large_buffers()
    xc.save_stats(stats)
    alloccount.stop()

    # WHEN compared
    result = xc.compare_files(capture, stats)

    # THEN the session-scope comparison agrees too
    assert result.failed_rows == [], result.render()
    assert result.scope == "session"
    del kept


# ----------------------------------------------------------------------- the check can fail


# Buffers allocated while only alloccount runs. Fewer than 257, so that the loop's ints are
# CPython's cached small ints, and put in a list made at full size: the skew is allocations only
# (no frees, no reallocs), and 200 x 10 kB is far outside the tolerance of small_objects.
N_OUTSIDE = 200
OUTSIDE_SIZE = 10_000


def skewed_session(tmp_path):
    """A session where alloccount also counts buffers made before memray started.

    Returns the capture, the stats file and alloccount's own count of the skew.
    """
    memray_has_run(tmp_path)
    capture, stats = tmp_path / "capture.bin", tmp_path / "stats.json"
    tracker = memray.Tracker(capture, trace_python_allocators=True)
    alloccount.start()
    before = alloccount.stats()
    outside = [None] * N_OUTSIDE
    for i in range(N_OUTSIDE):
        outside[i] = bytearray(OUTSIDE_SIZE)
    after = alloccount.stats()
    with tracker:
        inside = small_objects()
    xc.save_stats(stats)
    alloccount.stop()
    skew = {
        "allocations": after.allocations - before.allocations,
        "bytes_allocated": after.bytes_allocated - before.bytes_allocated,
        "leaked_bytes": after.current_bytes - before.current_bytes,
    }
    del outside, inside
    return capture, stats, skew


def test_allocations_outside_memrays_window_fail_the_rows_they_change(tmp_path):
    # GIVEN alloccount counted buffers that memray never saw
    capture, stats, skew = skewed_session(tmp_path)

    # WHEN compared
    result = xc.compare_files(capture, stats)

    # THEN the rows those buffers change are out of tolerance; frees and reallocs are not
    assert not result.ok
    assert set(result.failed_rows) == {"allocations", "bytes_allocated", "peak_bytes",
                                       "leaked_bytes", "leaked_blocks"}, result.render()
    # AND each difference is the skew alloccount measured, within what the row tolerates anyway
    for name, amount in skew.items():
        row = result.row(name)
        assert abs(row.difference - amount) <= row.tolerance.allowed(row.scale), result.render()


def test_command_exits_nonzero_and_names_the_rows_out_of_tolerance(tmp_path):
    # GIVEN skewed files
    capture, stats, _ = skewed_session(tmp_path)
    command = [sys.executable, "-m", "alloccount.crosscheck", "--capture", str(capture),
               "--stats", str(stats)]

    # WHEN the command compares them, then again with a tolerance wide enough for the skew
    failing = subprocess.run(command, capture_output=True, text=True, timeout=15)
    widened = subprocess.run(command + ["--tolerance", "100%"], capture_output=True, text=True,
                             timeout=15)

    # THEN the first exits 1 naming the rows; the tolerance is what decides the verdict
    assert failing.returncode == 1, failing.stderr
    assert ("FAILED: out of tolerance: allocations, bytes_allocated, peak_bytes, leaked_bytes, "
            "leaked_blocks") in failing.stdout
    assert widened.returncode == 0, widened.stdout + widened.stderr


# ----------------------------------------------------------------------------- command line


def test_command_runs_a_script_with_its_arguments_and_writes_json_and_files(tmp_path):
    # GIVEN a script with a deterministic workload that records the arguments it gets
    script = tmp_path / "workload.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        open(sys.argv[1], "w").write(" ".join(sys.argv[2:]))
        kept = [bytearray({SCRIPT_BUFFER_SIZE}) for _ in range({SCRIPT_BUFFERS})]
    """))
    out, argv_file = tmp_path / "result.json", tmp_path / "argv.txt"
    capture, stats = tmp_path / "capture.bin", tmp_path / "stats.json"

    # WHEN the command runs it
    run = subprocess.run(
        [sys.executable, "-m", "alloccount.crosscheck", "--json", str(out), "--capture",
         str(capture), "--stats", str(stats), str(script), str(argv_file), "--flag", "x"],
        capture_output=True, text=True, timeout=15,
    )

    # THEN it exits 0 with the table, the script got its arguments, and the files compare alike
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok: every row within tolerance" in run.stdout
    for name in xc.ROWS:
        assert f"\n{name} " in run.stdout
    assert argv_file.read_text() == "--flag x"
    document = json.loads(out.read_text())
    assert document["ok"] is True
    assert [row["row"] for row in document["rows"]] == list(xc.ROWS)
    again = xc.compare_files(capture, stats)
    assert [row.to_dict() for row in again.rows] == document["rows"]


def test_module_mode_runs_a_module_as_python_m_does(tmp_path, monkeypatch):
    # GIVEN a module importable from the current directory
    (tmp_path / "workload_module.py").write_text(textwrap.dedent(f"""
        import sys
        assert __name__ == "__main__"
        count = int(sys.argv[1])
        kept = [bytearray({SCRIPT_BUFFER_SIZE}) for _ in range(count)]
    """))
    monkeypatch.chdir(tmp_path)

    # WHEN cross-checked as -m workload_module N
    result = xc.crosscheck_script("workload_module", [str(SCRIPT_BUFFERS)], is_module=True)

    # THEN it ran as __main__ with its argument (its globals are released when it ends), and
    # the rows agree
    assert result.failed_rows == [], result.render()
    allocated = result.row("bytes_allocated")
    assert min(allocated.alloccount, allocated.memray) >= SCRIPT_BUFFERS * SCRIPT_BUFFER_SIZE


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("raise ValueError('broken script')", "ValueError: broken script"),
        ("import sys; sys.exit(3)", "exited with status 3"),
    ],
    ids=["raises", "exits 3"],
)
def test_command_reports_a_failed_script_with_status_2(body, message, tmp_path, capsys):
    # GIVEN a script that fails
    script = tmp_path / "failing.py"
    script.write_text(body + "\n")

    # WHEN the command runs it
    status = xc.main([str(script)])

    # THEN status 2, the reason on stderr, no table, and both tools stopped
    assert status == 2
    streams = capsys.readouterr()
    assert message in streams.err and "nothing to compare" in streams.err
    assert streams.out == ""
    assert alloccount.tracking_mode() is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give a script"),
        (["--tolerance", "fast"], "not a tolerance: 'fast'"),
        (["--tolerance", "speed=1%", "x.py"], "no row 'speed'"),
        (["-m"], "-m needs a module name"),
    ],
)
def test_command_usage_errors_exit_2(arguments, message, capsys):
    # GIVEN/WHEN bad command lines
    with pytest.raises(SystemExit) as exit_info:
        xc.main(arguments)

    # THEN argparse's usage error, status 2, saying what is wrong
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1%", xc.Tolerance(0.001, 0)),
        ("64", xc.Tolerance(0, 64)),
        ("0.5%+1024", xc.Tolerance(0.005, 1024)),
        ("0", xc.Tolerance(0, 0)),
    ],
)
def test_tolerance_text(text, expected):
    assert xc.parse_tolerance(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "%", "fast", "-1%", "1%+", "nan"])
def test_bad_tolerance_text_is_refused(text):
    with pytest.raises(ValueError):
        xc.parse_tolerance(text)


# ------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    """A capture and stats file recorded together, for the tests that spoil one of them."""
    directory = tmp_path_factory.mktemp("good")
    capture, stats = directory / "capture.bin", directory / "stats.json"
    with xc.record(capture, stats):
        kept = [bytearray(100) for _ in range(100_000)]  # a capture of several lz4 blocks
    del kept
    return capture, stats


def capture_with(path, **options):
    with memray.Tracker(path, **options):
        kept = large_buffers()
    del kept
    return path


@pytest.mark.parametrize(
    ("spoil", "messages"),
    [
        (lambda d, good: d / "missing.bin", ["does not exist", "record one with"]),
        (lambda d, good: _write(d / "garbage.bin", b"not a capture" * 50),
         ["cannot be read as a memray capture", "record it again"]),
        (lambda d, good: _write(d / "empty.bin", b""),
         ["cannot be read as a memray capture", "record it again"]),
        (lambda d, good: _write(d / "truncated.bin", good.read_bytes()[: good.stat().st_size // 2]),
         ["end marker", "truncated", "two files written together"]),
        (lambda d, good: capture_with(d / "plain.bin"),
         ["without trace_python_allocators", "trace_python_allocators=True"]),
        (lambda d, good: capture_with(d / "aggregated.bin", trace_python_allocators=True,
                                      file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS),
         ["aggregated format", "ALL_ALLOCATIONS"]),
        (lambda d, good: capture_with(d / "other-run.bin", trace_python_allocators=True),
         ["start marker", "different runs"]),
    ],
    ids=["missing", "garbage", "empty", "truncated", "without trace_python_allocators",
         "aggregated", "from another run"],
)
def test_unusable_capture_is_refused_with_what_to_do(spoil, messages, good_files, tmp_path):
    # GIVEN a good stats file and a capture that cannot be compared with it
    good_capture, stats = good_files
    capture = spoil(tmp_path, good_capture)

    # WHEN compared
    with pytest.raises(xc.CrosscheckError) as error:
        xc.compare_files(capture, stats)

    # THEN the error says what is wrong and what to do
    for message in messages:
        assert message in str(error.value)


WRITE_IT_WITH = "with alloccount.crosscheck.save_stats() or record()"


@pytest.mark.parametrize(
    ("content", "problem", "advice"),
    [
        (None, "does not exist", WRITE_IT_WITH),
        ("{not json", "is not valid JSON", WRITE_IT_WITH),
        ('{"format": "something else"}', "is not an alloccount stats file", WRITE_IT_WITH),
        ('{"format": "alloccount-crosscheck-stats", "version": 99}', "has version 99",
         "compare it with the alloccount that wrote it"),
        ('{"format": "alloccount-crosscheck-stats", "version": 1, "scope": "window"}',
         "is incomplete", WRITE_IT_WITH),
    ],
    ids=["missing", "not json", "other format", "newer version", "incomplete"],
)
def test_unusable_stats_file_is_refused_with_what_to_do(content, problem, advice, good_files,
                                                         tmp_path):
    # GIVEN a good capture and a bad stats file
    capture, _ = good_files
    stats = tmp_path / "stats.json"
    if content is not None:
        stats.write_text(content)

    # WHEN compared
    with pytest.raises(xc.CrosscheckError) as error:
        xc.compare_files(capture, stats)

    # THEN refused, saying what is wrong and how to write a good one
    assert problem in str(error.value)
    assert advice in str(error.value)


def test_command_reports_bad_input_on_stderr_with_status_2(good_files, tmp_path):
    # GIVEN a good stats file and a capture recorded without trace_python_allocators
    _, stats = good_files
    capture = capture_with(tmp_path / "plain.bin")

    # WHEN the command compares them
    run = subprocess.run(
        [sys.executable, "-m", "alloccount.crosscheck", "--capture", str(capture), "--stats",
         str(stats)], capture_output=True, text=True, timeout=15,
    )

    # THEN status 2 and the reason, no table
    assert run.returncode == 2
    assert "error: capture file" in run.stderr
    assert "recorded without trace_python_allocators" in run.stderr
    assert run.stdout == ""


def test_a_running_alloccount_session_or_an_existing_capture_is_refused(tmp_path):
    # GIVEN alloccount already tracking
    alloccount.start()
    # WHEN/THEN a cross-check, which needs its own session, is refused
    with pytest.raises(xc.CrosscheckError, match="already tracking"):
        xc.crosscheck(small_objects)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alloccount.stop()

    # GIVEN a capture file that exists
    existing = _write(tmp_path / "capture.bin", b"keep me")
    # WHEN/THEN it is never overwritten
    with pytest.raises(xc.CrosscheckError, match="already exists"):
        xc.crosscheck(small_objects, capture_path=existing)
    assert existing.read_bytes() == b"keep me"
