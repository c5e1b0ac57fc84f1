"""`alloccount run --live`, driven in a real terminal (tmux) and read back from its screen."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "examples" / "trading_bot.py"

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")


def screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True).stdout


def test_live_view_refreshes_with_categories_then_leaves_the_report(tmp_path):
    session = f"alloccount-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "done"
    command = (
        f"{sys.executable} -m alloccount run --live --interval 0.2 {BOT} --leaky --duration 4 > /dev/null; "
        f"touch {done}; sleep 30"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command], check=True)
    try:
        # WHEN the program is running: the view shows the categories, redrawn in place
        first = second = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "orders" not in first:
            time.sleep(0.3)
            first = screen(session)
        time.sleep(1.0)
        second = screen(session)
        assert "category" in first and "growth/s" in first and "orders" in first, first
        assert first.count("category") == 1, "the view must redraw in place, not scroll"
        assert first != second, "the view did not refresh"
        # THEN once it ends, the final report is on the screen
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.3)
        final = screen(session)
        assert "leak verdicts" in final or "LEAK" in final, final
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
