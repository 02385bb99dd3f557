"""The code base passes ruff with the rules and exceptions configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_ruff_check_is_clean(root: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=root, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
