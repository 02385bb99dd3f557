"""Both gates fail loudly, with page and line, on a broken fence or formula.

A throw-away site is built with the project's own hooks, plugins and Markdown
extensions (read from mkdocs.yml), containing one page with a deliberately broken
fence and, separately, one with a malformed formula. This proves the promise of the
README: a broken example cannot pass ``mkdocs build --strict`` or pytest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import mini_site, mkdocs_build

pytestmark = pytest.mark.site

GOOD = """# Gate test

Some math: $a^2 + b^2 = c^2$.

```python exec="on" session="gate" result="text"
x = 21
print(x * 2)
```
"""

BROKEN_FENCE = GOOD + """
```python exec="on" session="gate"
assert x == 22, "deliberately broken fence"
```
"""

BROKEN_MATH = GOOD + "\nA broken formula: $\\fracc{1}{2}$.\n"


def _mini_site(tmp: Path, root: Path, page: str) -> Path:
    return mini_site(tmp, {"index.md": page})


def _pytest_page(tmp: Path, root: Path) -> subprocess.CompletedProcess:
    (tmp / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "kexue._pytest_docs", "-p", "no:cacheprovider",
         "--markdown-docs", "docs/index.md", "-q"],
        cwd=tmp,
        env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_good_page_passes_both_gates(tmp_path: Path, root: Path):
    build = mkdocs_build(_mini_site(tmp_path, root, GOOD), tmp_path / "site")
    assert build.returncode == 0, build.log[-3000:]
    html = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "42" in html and 'class="katex"' in html
    proc = _pytest_page(tmp_path, root)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed" in proc.stdout


def test_broken_fence_fails_build_and_pytest_with_page_and_line(tmp_path: Path, root: Path):
    line = BROKEN_FENCE.splitlines().index('```python exec="on" session="gate"') + 1
    build = mkdocs_build(_mini_site(tmp_path, root, BROKEN_FENCE), tmp_path / "site")
    assert build.returncode != 0
    assert f"'index.md:{line}'" in build.log, build.log[-3000:]
    assert "deliberately broken fence" in build.log
    assert re.search(rf'File "docs/index.md", line {line + 1}\b', build.log), build.log[-3000:]

    proc = _pytest_page(tmp_path, root)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert f'docs/index.md", line {line + 1}' in proc.stdout, proc.stdout[-3000:]
    assert "deliberately broken fence" in proc.stdout


def test_broken_formula_fails_the_build_naming_the_page(tmp_path: Path, root: Path):
    build = mkdocs_build(_mini_site(tmp_path, root, BROKEN_MATH), tmp_path / "site")
    assert build.returncode != 0
    assert "KaTeX could not render a formula on page index.md" in build.log, build.log[-3000:]
    assert "\\fracc" in build.log
