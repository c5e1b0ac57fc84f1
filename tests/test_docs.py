"""The code in the README and docs runs as written (each block in a fresh interpreter)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "docs/categories.md"]


def python_blocks(page: str):
    text = (ROOT / page).read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize(
    "page, index, code",
    [(page, i, code) for page in PAGES for i, code in enumerate(python_blocks(page))],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else None,
)
def test_documented_code_runs(page, index, code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, f"{page} block {index} failed:\n{result.stderr}"
