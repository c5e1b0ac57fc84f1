"""`alloccount stress`: load levels, per-load reports, the verdict in the exit status."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "examples" / "trading_bot.py"


def stress(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alloccount", "stress", *args], capture_output=True, text=True, timeout=120)


def test_leaky_program_grows_at_every_load_and_fails(tmp_path):
    result = stress("--loads", "1,2", "--duration", "5", "--interval", "0.1", "--out", str(tmp_path), str(BOT), "--leaky", "--duration", "60")
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("load ")]
    assert len(lines) == 2
    assert all("GROWS WITHOUT BOUND" in line and "category:orders" in line for line in lines)
    for load in ("1", "2"):
        assert (tmp_path / f"load-{load}" / "report.html").stat().st_size > 0
        assert (tmp_path / f"load-{load}" / "report.png").stat().st_size > 0
    # the load level reached the program (through ALLOCCOUNT_LOAD), and it did more work
    logs = [(tmp_path / f"load-{load}.log").read_text() for load in ("1", "2")]
    assert "bot at load 1:" in logs[0] and "bot at load 2:" in logs[1]
    ticks = [int(re.search(r"bot at load \d: ([\d,]+) ticks", log).group(1).replace(",", "")) for log in logs]
    assert ticks[1] > 1.1 * ticks[0], "twice the rate asked; on a loaded machine it gets less, never none"


def test_fixed_program_is_bounded_and_passes(tmp_path):
    result = stress("--loads", "1", "--duration", "4", "--interval", "0.1", "--out", str(tmp_path), str(BOT), "--fixed", "--duration", "60")
    assert result.returncode == 0, result.stderr
    assert "bounded" in result.stderr


def test_a_run_too_short_to_judge_says_so_instead_of_bounded(tmp_path):
    result = stress("--loads", "1", "--duration", "1", "--interval", "0.1", "--out", str(tmp_path), str(BOT), "--leaky", "--duration", "60")
    assert "TOO SHORT to judge" in result.stderr
    assert "bounded" not in result.stderr


def test_bad_loads_are_a_usage_error():
    result = stress("--loads", "1,x", str(BOT))
    assert result.returncode == 2
    assert "--loads takes numbers" in result.stderr
