"""`alloccount run` / `report` as a user runs them: real subprocesses, real programs."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "examples" / "trading_bot.py"


def alloccount(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alloccount", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def verdicts(stderr: str) -> dict:
    """{series: 'LEAK' | 'ok'} from the report's verdict lines."""
    return dict((name, word) for word, name in re.findall(r"^\s+(LEAK|ok)\s+(\S+)", stderr, re.M))


@pytest.fixture
def program(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            print("argv:", sys.argv[1:])
            print("name:", __name__)
            data = [bytearray(1000) for _ in range(1000)]
            if "--fail" in sys.argv:
                raise RuntimeError("boom")
            sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
            """
        )
    )
    return script


def test_run_preserves_argv_stdout_and_exit_code(program):
    result = alloccount("run", "--interval", "0.05", str(program), "7", "--flag")
    assert result.returncode == 7
    assert "argv: ['7', '--flag']" in result.stdout
    assert "name: __main__" in result.stdout
    assert "alloccount report" in result.stderr, "the report goes to stderr, the program keeps stdout"
    assert "alloccount report" not in result.stdout


def test_an_exception_in_the_program_shows_its_traceback_and_still_reports(program):
    result = alloccount("run", "--interval", "0.05", str(program), "--fail")
    assert result.returncode == 1
    assert "RuntimeError: boom" in result.stderr
    assert "alloccount report" in result.stderr


def test_run_module_with_dash_m(tmp_path):
    (tmp_path / "mymod.py").write_text("import sys\nprint('module argv', sys.argv[1:])\n")
    result = alloccount("run", "-m", "mymod", "a", "b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "module argv ['a', 'b']" in result.stdout


def test_ctrl_c_ends_the_program_and_prints_the_report(tmp_path):
    script = tmp_path / "forever.py"
    script.write_text("import time\nprint('ready', flush=True)\nwhile True:\n    time.sleep(0.05)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "alloccount", "run", "--interval", "0.05", str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted" in err and "leak verdicts" in err


@pytest.mark.parametrize(("args", "message"), [(["run"], "needs a script"), (["run", "nope.py"], "no such file"), (["run", "--interval", "0", "x.py"], "must be > 0")])
def test_bad_usage_is_a_clear_error(args, message):
    result = alloccount(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_leaky_bot_names_its_leaking_categories_and_the_fixed_one_reports_none(tmp_path):
    # GIVEN the example bot run twice, with its four leaks and with their fixes
    leaky = alloccount("run", "--interval", "0.1", "--fail-on-leak", "--report", str(tmp_path / "leaky"), str(BOT), "--leaky", "--duration", "6")
    fixed = alloccount("run", "--interval", "0.1", "--fail-on-leak", str(BOT), "--fixed", "--duration", "6")
    # THEN the leaky run names each leaking component and fails the gate
    found = verdicts(leaky.stderr)
    for component in ("orders", "prices", "strategies", "subscribers"):
        assert found.get(f"category:{component}") == "LEAK", leaky.stderr
    assert leaky.returncode == 3
    # AND the fixed run has no leak verdict at all and exits 0
    found = verdicts(fixed.stderr)
    assert found and all(word == "ok" for word in found.values()), fixed.stderr
    assert fixed.returncode == 0
    # AND the report files are written, and `report` re-renders the saved history
    for name in ("history.json", "history.csv", "report.txt", "report.html"):
        assert (tmp_path / "leaky" / name).stat().st_size > 0
    again = alloccount("report", str(tmp_path / "leaky" / "history.json"))
    assert again.returncode == 0
    assert "LEAK  category:orders" in again.stdout


def test_report_on_a_corrupt_history_is_a_clear_error(tmp_path):
    bad = tmp_path / "history.json"
    bad.write_text("{not json")
    result = alloccount("report", str(bad))
    assert result.returncode == 2
    assert "history.json" in result.stderr and "Traceback" not in result.stderr


def test_run_serves_prometheus_metrics_for_the_run():
    from prometheus_client.parser import text_string_to_metric_families
    from urllib.request import urlopen

    proc = subprocess.Popen(
        [sys.executable, "-m", "alloccount", "run", "--interval", "0.1", "--prometheus", "0", str(BOT), "--leaky", "--duration", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stderr.readline()
        url = re.search(r"serving Prometheus metrics on (\S+)", line).group(1)
        assert url.startswith("http://127.0.0.1:")
        time.sleep(1.0)
        body = urlopen(url, timeout=10).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(body)}
        used = {s.labels["category"]: s.value for s in families["alloccount_used_bytes"].samples}
        assert used.get("orders", 0) > 0, used
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "leak verdicts" in err
