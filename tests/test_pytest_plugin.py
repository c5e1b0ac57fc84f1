"""The pytest plugin (alloccount.pytest_plugin), driven through pytester.

Most sessions run in-process: fast, and safe because the plugin stops at session end the
tracking it started (asserted below) and conftest's autouse fixture stops the engine after
every test anyway. Sessions that need other processes (xdist) or another allocator hook
(pytest-memray), and the one that proves the plugin inert, run in a subprocess.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import alloccount
from alloccount.pytest_plugin import parse_memory_limit, parse_tolerance

PLUGIN = "alloccount.pytest_plugin"


def _loaded_by_entry_point() -> bool:
    """Whether pytest loads the plugin by itself (the ``pytest11`` entry point ``alloccount``)."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    if sys.version_info >= (3, 10):
        points = importlib.metadata.entry_points(group="pytest11")
    else:
        points = importlib.metadata.entry_points().get("pytest11", [])
    return any(point.value == PLUGIN for point in points)


# ``-p`` on top of the entry point would register the module twice (a pytest error).
PLUGIN_ARGS = [] if _loaded_by_entry_point() else ["-p", PLUGIN]
# Plugins this module does not exercise, off: hypothesis's re-imports hypothesis in every
# in-process session (2 s each); pytest-benchmark warns under xdist.
QUIET_ARGS = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark"]
QUIET_ARGS += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]  # this module imports the plugin first
# pytest-memray reads limit_memory too: it is blocked except where the test is about it.
NO_MEMRAY = ["-p", "no:memray"]
# range() past 256 would allocate an int per step: repeat() keeps the count to the bytearrays
# (an object and a buffer each) and the list.
ALLOCATES_1000_BYTEARRAYS = "keep = [bytearray(8) for _ in itertools.repeat(None, 1000)]"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A session in this process, with the plugin and without pytest-memray."""
    return pytester.runpytest(*PLUGIN_ARGS, *QUIET_ARGS, *NO_MEMRAY, *args)


def run_subprocess(pytester: pytest.Pytester, *args: str, memray: bool = False) -> pytest.RunResult:
    """A session in its own process, with the plugin, and pytest-memray only if asked for."""
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *QUIET_ARGS, *([] if memray else NO_MEMRAY), *args)


def failure_text(result: pytest.RunResult) -> str:
    """The whole output of a session, failure sections included."""
    return "\n".join(result.outlines)


def saved_counts(path: Path) -> Dict[str, int]:
    """{test name: allocations} from a file written by --alloccount-save."""
    data = json.loads(path.read_text())
    return {nodeid.split("::")[-1]: counts["allocations"] for nodeid, counts in data["tests"].items()}


# --------------------------------------------------------------------------------------------
# Activation
# --------------------------------------------------------------------------------------------


def test_plugin_is_inert_without_options_or_markers(pytester: pytest.Pytester) -> None:
    # GIVEN a session with no --alloccount option and no alloccount marker
    pytester.makepyfile(
        """
        import alloccount

        def test_nothing_installed(request):
            assert alloccount.tracking_mode() is None
            assert not request.config.pluginmanager.has_plugin("alloccount-per-test")
        """
    )
    # WHEN it runs (in its own process: nothing else may have started tracking)
    result = run_subprocess(pytester)
    # THEN tracking never started, no per-test hook was registered, nothing is printed
    result.assert_outcomes(passed=1)
    # (Only the section: the header lists "plugins: alloccount-..." once the entry point exists.)
    result.stdout.no_fnmatch_line("*= alloccount =*")


def test_plugin_stops_the_tracking_it_started_and_keeps_the_users(pytester: pytest.Pytester) -> None:
    # GIVEN a counting session, first with tracking off, then with tracking the user started
    pytester.makepyfile("def test_body(): pass")
    # WHEN each session ends
    run(pytester, "--alloccount").assert_outcomes(passed=1)
    stopped_after_own = alloccount.tracking_mode() is None
    alloccount.start(mode="counts")
    run(pytester, "--alloccount").assert_outcomes(passed=1)
    # THEN the plugin stopped only the tracking it started
    assert stopped_after_own
    assert alloccount.tracking_mode() == "counts"


# --------------------------------------------------------------------------------------------
# --alloccount
# --------------------------------------------------------------------------------------------


def test_summary_ranks_tests_by_what_their_bodies_allocate(pytester: pytest.Pytester) -> None:
    # GIVEN a test whose fixture allocates a lot in setup and teardown but whose body allocates
    # nothing, and a test whose body allocates 1000 bytearrays (an object and a buffer each)
    pytester.makepyfile(
        f"""
        import itertools
        import pytest

        @pytest.fixture
        def heavy():
            before = [object() for _ in range(5000)]
            yield before
            after = [object() for _ in range(5000)]

        def test_heavy_fixture_empty_body(heavy, tmp_path):
            pass

        def test_empty_body():
            pass

        def test_allocating_body():
            {ALLOCATES_1000_BYTEARRAYS}
        """
    )
    # WHEN the session runs with --alloccount
    result = run(pytester, "--alloccount", "--alloccount-save=counts.json")
    # THEN the summary lists the allocating body first, and setup/teardown are not counted
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*= alloccount =*",
            "3 test bodies measured (setup and teardown excluded*",
            "most allocations:",
            "*allocations*bytes allocated*peak*test",
            "*test_allocating_body",
            "*test_heavy_fixture_empty_body",
        ]
    )
    counts = saved_counts(pytester.path / "counts.json")
    assert 2000 <= counts["test_allocating_body"] <= 2010
    # An empty body counts the same however heavy its fixtures: setup and teardown are out.
    # (That is 0 on 3.11 and 3.12; before 3.11 the body's frame is a heap object, and 3.13
    # was seen to count one block for the call itself under pytester.)
    assert counts["test_heavy_fixture_empty_body"] == counts["test_empty_body"] <= 1


def test_documented_example_runs_as_shown(pytester: pytest.Pytester) -> None:
    # GIVEN the example test module of docs/pytest-plugin.md
    page = Path(__file__).resolve().parent.parent / "docs" / "pytest-plugin.md"
    example = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)[0]
    pytester.makepyfile(test_example=example)
    # WHEN it runs with --alloccount
    result = run(pytester, "--alloccount")
    # THEN every marker and the fixture pass as the page says, and the summary lists them
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["5 test bodies measured*", "*test_example.py::test_peak_stays_small"])


# --------------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------------

ORDERS_MODULE = """
    import alloccount
    import pytest

    @pytest.mark.limit_allocations({args})
    def test_orders():
        with alloccount.category("orders"):
            orders = [bytearray(8) for _ in range(100)]
        other = [bytearray(8) for _ in range(500)]
"""


@pytest.mark.parametrize(
    ("args", "failure"),
    [
        ("2000", None),
        ("10", r"limit_allocations\(10\) exceeded: the test body allocated (?P<count>[\d,]+) times, limit 10"),
        ("300, category='orders'", None),
        (
            "150, category='orders'",
            r"limit_allocations\(150, category='orders'\) exceeded: category 'orders' allocated "
            r"\(all threads\) (?P<count>[\d,]+) times, limit 150",
        ),
        ("10, category='ordres'", r"no category 'ordres' has been entered in this process \(known: .*'orders'"),
    ],
    ids=["total-pass", "total-fail", "category-pass", "category-fail", "category-misspelled"],
)
def test_limit_allocations(pytester: pytest.Pytester, args: str, failure: Optional[str]) -> None:
    # GIVEN a body making ~200 allocations in category "orders" and over 1000 outside it
    pytester.makepyfile(ORDERS_MODULE.format(args=args))
    # WHEN it runs under limit_allocations (no --alloccount: the marker alone activates)
    result = run(pytester)
    # THEN it passes within the limit, or fails stating the figure, the limit, the top categories
    if failure is None:
        result.assert_outcomes(passed=1)
        return
    result.assert_outcomes(failed=1)
    text = failure_text(result)
    match = re.search(failure, text)
    assert match, text
    if "count" in match.groupdict():  # at least the 100 bytearrays of "orders"
        assert int(match["count"].replace(",", "")) >= 200
    assert re.search(r"top categories \(all threads\): (orders|<uncategorized>): [\d,]+ allocations", text), text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("limit", "limit_text"),
    [
        ("'1 MiB'", None),
        ("1_000_000", None),
        ("'100 KiB'", "100.0 KiB (102,400 bytes)"),
        ("'100 KB'", "100.0 KiB (102,400 bytes)"),
        ("100_000", "97.7 KiB (100,000 bytes)"),
    ],
)
def test_limit_memory(pytester: pytest.Pytester, limit: str, limit_text: Optional[str]) -> None:
    # GIVEN a body that holds 300,000 bytes at once, then frees them
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.limit_memory({limit})
        def test_peak():
            block = bytearray(300_000)
            del block
        """
    )
    # WHEN it runs under limit_memory
    result = run(pytester)
    # THEN the peak (not what is left at the end) is held against the limit
    if limit_text is None:
        result.assert_outcomes(passed=1)
        return
    result.assert_outcomes(failed=1)
    text = failure_text(result)
    match = re.search(r"the test body's peak was \S+ KiB \((?P<peak>[\d,]+) bytes\) above its level at entry", text)
    assert match, text
    # A few bytes freed before the bytearray lower the level the peak is counted from.
    assert 299_000 <= int(match["peak"].replace(",", "")) < 310_000
    assert f"limit {limit_text}" in text
    assert "top categories (all threads): <uncategorized>:" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("512 B", 512),
        ("1.5 KiB", 1536),
        ("2 MiB", 2 * 1024**2),
        ("2MB", 2 * 1024**2),  # pytest-memray's reading of the same marker: KB = 1024
        ("1 gb", 1024**3),
        (".5 KB", 512),
        (4096, 4096),
    ],
)
def test_memory_limits_read_like_pytest_memray(text: Any, expected: int) -> None:
    assert parse_memory_limit(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2 parsecs", "unknown size unit 'parsecs' in '2 parsecs'"),
        ("-1 MB", "negative size: '-1 MB'"),
        ("", "empty size"),
        (-1, "the limit must be >= 0"),
        (1.5, "not float"),
        (True, "not bool"),
    ],
)
def test_malformed_memory_limits_are_named(text: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_memory_limit(text)


LEAKY_MODULE = """
    import alloccount
    import pytest

    runs = []
    _cache = []

    @pytest.mark.no_leaks
    def test_leaks():
        runs.append("leaks")
        with alloccount.category("cache"):
            _cache.append(bytearray(1000))

    @pytest.mark.no_leaks(warmup=2, runs=3)
    def test_clean():
        runs.append("clean")
        scratch = [bytearray(1000) for _ in range(10)]

    def test_zz_runs():
        assert runs.count("leaks") == 3 + 5
        assert runs.count("clean") == 2 + 3
"""


def test_no_leaks(pytester: pytest.Pytester) -> None:
    # GIVEN a body that keeps 1000 bytes in a module-level list on every run, and one that
    # allocates as much but keeps nothing
    pytester.makepyfile(LEAKY_MODULE)
    # WHEN both run under no_leaks
    result = run(pytester)
    # THEN each body ran warmup + runs times; the leaking one fails naming the category
    result.assert_outcomes(passed=2, failed=1)
    text = failure_text(result)
    assert "_ test_leaks _" in text and "_ test_clean _" not in text
    match = re.search(
        r"no_leaks\(warmup=3, runs=5\): live blocks and current bytes grew on every one of the 5 runs "
        r"after 3 warm-up run\(s\): \+(?P<blocks>[\d,]+) blocks, \+(?P<kib>[\d.]+) KiB in total",
        text,
    )
    assert match, text
    assert int(match["blocks"]) >= 5 and float(match["kib"]) >= 5 * 1000 / 1024
    assert re.search(r"category grown on every run: .*'cache' \(\+[\d.]+ KiB\)", text), text


def test_markers_reject_async_tests(pytester: pytest.Pytester) -> None:
    # GIVEN an async test with an alloccount marker (its body would run in someone's event loop)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.limit_allocations(10)
        async def test_async():
            pass
        """
    )
    # WHEN it runs
    result = run(pytester)
    # THEN it fails saying so
    result.assert_outcomes(failed=1)
    assert "alloccount markers do not support async tests" in failure_text(result)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('limit_memory("2 parsecs")', "limit_memory('2 parsecs'): unknown size unit 'parsecs'"),
        ("limit_memory()", "limit_memory(): missing a required argument: 'limit'"),
        ("limit_allocations(-1)", "limit_allocations(-1): n must be >= 0, got -1"),
        ("limit_allocations('ten')", "limit_allocations('ten'): n must be an int, not str"),
        ("limit_allocations(1, category='')", "limit_allocations(1, category=''): category must be a non-empty str"),
        ("no_leaks(runs=1)", "no_leaks(runs=1): runs must be >= 2"),
        ("no_leaks(warmup=0)", "no_leaks(warmup=0): warmup must be >= 1"),
    ],
)
def test_malformed_markers_are_usage_errors(pytester: pytest.Pytester, marker: str, message: str) -> None:
    # GIVEN a test with a malformed alloccount marker
    pytester.makepyfile(f"import pytest\n\n@pytest.mark.{marker}\ndef test_marked(): pass\n")
    # WHEN the session starts
    result = run(pytester)
    # THEN it stops with a usage error naming the test and the problem, not a traceback
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = result.stderr.str()
    assert "alloccount: invalid marker arguments:" in errors
    assert f"test_malformed_markers_are_usage_errors.py::test_marked: @pytest.mark.{message}" in errors
    assert "Traceback" not in errors + result.stdout.str()


# --------------------------------------------------------------------------------------------
# The fixture
# --------------------------------------------------------------------------------------------


def test_fixture_gives_scoped_counts_and_categories(pytester: pytest.Pytester) -> None:
    # GIVEN tests asserting with the alloccount fixture, in a session without --alloccount
    pytester.makepyfile(
        """
        import pytest

        def test_scoped(alloccount):
            with alloccount.measure() as m:
                keep = [bytearray(8) for _ in range(50)]
            assert 100 <= m.allocations <= 110
            with pytest.raises(AssertionError, match="no_allocations"):
                with alloccount.no_allocations():
                    keep = bytearray(8)
            with alloccount.category_deltas() as deltas:
                with alloccount.category("parsing"):
                    parsed = [bytearray(8) for _ in range(20)]
            assert 40 <= deltas["parsing"].allocations <= 45
            assert deltas["parsing"].net_bytes > 0
            with pytest.raises(KeyError):
                deltas["parsnig"]

        def test_limit_fails(alloccount):
            with alloccount.limit(allocations=5):
                keep = [bytearray(8) for _ in range(50)]
        """
    )
    # WHEN they run
    result = run(pytester)
    # THEN the fixture's figures are those of each block; its limit fails like alloccount.limit
    result.assert_outcomes(passed=1, failed=1)
    limit_error = r"AllocationLimitError: allocation limit exceeded \(this thread\): \d+ allocation"
    assert re.search(limit_error, failure_text(result))


# --------------------------------------------------------------------------------------------
# Regression gate
# --------------------------------------------------------------------------------------------

GATED_MODULE = """
    import itertools

    def test_gated():
        keep = [bytearray(8) for _ in itertools.repeat(None, {n})]

    def test_steady():
        keep = [bytearray(8) for _ in range(100)]
"""


def test_compare_fails_a_real_regression_and_reports_it(pytester: pytest.Pytester) -> None:
    # GIVEN a baseline saved from a test making ~200 allocations
    pytester.makepyfile(GATED_MODULE.format(n=100))
    run(pytester, "--alloccount-save=baseline.json").assert_outcomes(passed=2)
    compare = ["--alloccount-compare=baseline.json", "--alloccount-report=report.md"]
    # WHEN the unchanged code is compared, then code changed to allocate twice as much, with a
    # tolerance of 150% and then the default 5%
    unchanged = run(pytester, *compare)
    pytester.makepyfile(GATED_MODULE.format(n=200))
    within_tolerance = run(pytester, *compare, "--alloccount-tolerance=150%")
    regressed = run(pytester, *compare)
    # THEN only the regression beyond the tolerance fails, with the figures and the baseline
    unchanged.assert_outcomes(passed=2)
    within_tolerance.assert_outcomes(passed=2)
    regressed.assert_outcomes(passed=1, failed=1)
    text = failure_text(regressed)
    match = re.search(
        r"allocation count regression: (?P<now>[\d,]+) allocations, baseline (?P<before>[\d,]+) "
        r"\(\+(?P<percent>[\d.]+)%, tolerance 5%, baseline.json\)",
        text,
    )
    assert match, text
    assert 90 <= float(match["percent"]) <= 110
    regressed.stdout.fnmatch_lines(
        ["compared with *baseline.json: 1 regression(s) beyond 5%*", "wrote report *report.md"]
    )
    # AND the Markdown report of the last compare, and the history of all three
    report = (pytester.path / "report.md").read_text()
    assert "**1 regression(s)**, 0 grew within the tolerance, 0 improved, 1 unchanged, 0 new" in report
    row = (
        r"\| `test_compare_fails_a_real_regression_and_reports_it.py::test_gated` \| (?P<before>[\d,]+) \| "
        r"(?P<now>[\d,]+) \| \+[\d.]+% \| \*\*regression\*\* \|"
    )
    found = re.search(row, report)
    assert found, report
    assert (found["before"], found["now"]) == (match["before"], match["now"])
    history = [json.loads(line) for line in (pytester.path / "baseline.history.jsonl").read_text().splitlines()]
    assert [len(entry["regressions"]) for entry in history] == [0, 0, 1]
    assert all({"commit", "timestamp", "tests"} <= entry.keys() for entry in history)
    assert {nodeid.split("::")[-1] for nodeid in history[2]["tests"]} == {"test_gated", "test_steady"}


def test_save_keeps_the_last_file_when_nothing_was_measured(pytester: pytest.Pytester) -> None:
    # GIVEN a saved baseline
    pytester.makepyfile(GATED_MODULE.format(n=100))
    run(pytester, "--alloccount-save=baseline.json").assert_outcomes(passed=2)
    saved = (pytester.path / "baseline.json").read_text()
    # WHEN a session that measures nothing (-k matching no test) saves again
    result = run(pytester, "--alloccount-save=baseline.json", "-k", "no_such_test")
    # THEN the file is left as it was, and the summary says so
    result.stdout.fnmatch_lines(["no test body was measured: *baseline.json left as it was"])
    assert (pytester.path / "baseline.json").read_text() == saved


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--alloccount-compare=missing.json"],
            "alloccount: baseline file not found: *missing.json (write one with --alloccount-save=*",
        ),
        (["--alloccount-compare=not_json.json"], "alloccount: cannot read baseline file *not_json.json: *"),
        (["--alloccount-compare=other.json"], "alloccount: *other.json is not an alloccount baseline file*"),
        (["--alloccount-compare=other.json", "--alloccount-tolerance=lots"], "*--alloccount-tolerance='lots'*"),
        (["--alloccount-report=r.md"], "alloccount: --alloccount-report needs --alloccount-compare=FILE"),
        (["--alloccount-save=no/such/dir/b.json"], "alloccount: --alloccount-save=no/such/dir/b.json: directory *"),
        (["--alloccount", "--alloccount-top=-1"], "alloccount: --alloccount-top=-1: must be >= 0"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: List[str], message: str) -> None:
    # GIVEN a bad option or a missing or foreign baseline file
    pytester.makepyfile("def test_body(): pass")
    (pytester.path / "not_json.json").write_text("{")
    (pytester.path / "other.json").write_text('{"tests": {}}')
    # WHEN the session starts
    result = run(pytester, *args)
    # THEN it stops with a usage error saying what is wrong
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(("text", "percent"), [("5%", 5.0), ("5", 5.0), (" 0.5 % ", 0.5), ("0", 0.0)])
def test_tolerance_is_a_percentage(text: str, percent: float) -> None:
    assert parse_tolerance(text) == percent


@pytest.mark.parametrize("text", ["-1%", "nan", "inf%", "five"])
def test_malformed_tolerances_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="--alloccount-tolerance"):
        parse_tolerance(text)


# --------------------------------------------------------------------------------------------
# Other plugins: pytest-xdist, pytest-memray
# --------------------------------------------------------------------------------------------


def test_xdist_workers_count_their_tests_and_the_controller_merges(pytester: pytest.Pytester) -> None:
    # GIVEN four tests allocating 100..400 bytearrays, one over its limit, one with a bad marker,
    # and a baseline in which the largest test made half the allocations it makes
    module = pytester.makepyfile(
        """
        import itertools
        import pytest

        @pytest.mark.parametrize("n", [100, 200, 300, 400])
        def test_sized(n):
            keep = [bytearray(8) for _ in itertools.repeat(None, n)]

        @pytest.mark.limit_allocations(10)
        def test_over_limit():
            keep = [bytearray(8) for _ in range(100)]

        @pytest.mark.limit_memory("2 parsecs")
        def test_bad_marker():
            pass
        """
    )
    largest = f"{module.name}::test_sized[400]"
    baseline = {"format": "alloccount-pytest-counts", "tests": {largest: {"allocations": 400}}}
    (pytester.path / "baseline.json").write_text(json.dumps(baseline))
    # WHEN they run on two workers
    result = run_subprocess(
        pytester,
        *("-n", "2", "--alloccount", "--alloccount-save=counts.json"),
        *("--alloccount-compare=baseline.json", "--alloccount-report=report.md"),
    )
    # THEN every test's count reaches the controller's summary and files, and failures read as
    # without xdist (but a bad marker errors its test: a worker cannot raise a usage error)
    result.assert_outcomes(passed=3, failed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "5 test bodies measured*",
            "*test_sized?400?",
            "*test_sized?100?",
            "compared with *baseline.json: 1 regression(s) beyond 5%, 0 grew within it, 0 improved, 0 unchanged, 4 new",
        ]
    )
    counts = saved_counts(pytester.path / "counts.json")
    assert sorted(counts) == ["test_over_limit"] + [f"test_sized[{n}]" for n in (100, 200, 300, 400)]
    for n in (100, 200, 300, 400):
        assert 2 * n <= counts[f"test_sized[{n}]"] <= 2 * n + 50
    assert re.search(r"\| `\S+::test_sized\[400\]` \| 400 \| [\d,]+ \| \+\d", (pytester.path / "report.md").read_text())
    text = failure_text(result)
    assert re.search(r"limit_allocations\(10\) exceeded: the test body allocated [\d,]+ times, limit 10", text)
    assert re.search(r"allocation count regression: [\d,]+ allocations, baseline 400 \(\+\d", text)
    assert "alloccount: invalid marker arguments: @pytest.mark.limit_memory('2 parsecs'): unknown size unit" in text


def test_memray_together_says_so(pytester: pytest.Pytester) -> None:
    # GIVEN a test under limit_memory, in a session with pytest-memray loaded and --memray on
    pytest.importorskip("pytest_memray")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.limit_memory("1 MB")
        def test_peak():
            block = bytearray(100_000)
        """
    )
    # WHEN it runs with both plugins
    result = run_subprocess(pytester, "--memray", "--alloccount", memray=True)
    # THEN both notes say how the two plugins interact, and the test passes under both
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "note: pytest-memray is active (--memray): memray's tracker wraps alloccount's measurement*",
            "note: pytest-memray is installed and also acts on @pytest.mark.limit_memory*",
        ]
    )


def test_limit_memory_in_units_memray_cannot_read_is_a_usage_error_with_memray(pytester: pytest.Pytester) -> None:
    # GIVEN pytest-memray loaded (not even active) and a limit in a unit only alloccount reads
    pytest.importorskip("pytest_memray")
    pytester.makepyfile("import pytest\n\n@pytest.mark.limit_memory('1 MiB')\ndef test_peak(): pass\n")
    # WHEN the session starts
    result = run_subprocess(pytester, memray=True)
    # THEN a usage error explains, instead of pytest-memray's internal error later
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*limit_memory('1 MiB'): pytest-memray is loaded and reads this marker too, but cannot parse it*-p no:memray"]
    )
