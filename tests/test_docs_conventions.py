"""Fences the build and pytest would treat differently are errors, caught here before they mislead.

* An executed fence indented (inside a tab or admonition) runs in the build but is
  invisible to pytest-markdown-docs.
* A bare word in a fence's info string (``notest``, ``continuation``) makes
  pymdownx.superfences emit the fence as raw text, silently, even with --strict.
* A session name shared by two pages leaks variables between them in markdown-exec.
* Executed fences must be Python with ``exec="on"`` and name a session, so every page's
  state is explicit.
* Docstrings are rendered on API pages but never executed: no ``exec`` fences there.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from kexue._docs import scan_fences

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
MODULES = sorted((ROOT / "kexue").rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_there_are_pages_to_check():
    assert PAGES, "no Markdown pages found under docs/"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_fences_follow_the_site_conventions(page: Path):
    problems: list[str] = []
    for fence in scan_fences(page.read_text(encoding="utf-8")):
        where = f"{_rel(page)}:{fence.line}"
        if fence.flags:
            problems.append(f"{where}: bare option(s) {list(fence.flags)}; use key=\"value\" options only")
        if "exec" not in fence.attrs:
            continue
        if fence.indent:
            problems.append(f"{where}: executed fence is indented; pytest cannot collect it")
        if fence.lang != "python":
            problems.append(f"{where}: only python fences are executed on this site, got {fence.lang!r}")
        if fence.attrs["exec"] != "on":
            problems.append(f"{where}: write exec=\"on\" (got exec=\"{fence.attrs['exec']}\")")
        if not fence.session:
            problems.append(f"{where}: executed fence without a session")
    assert not problems, "\n".join(problems)


def test_session_names_are_page_unique():
    pages_of: dict[str, set[str]] = defaultdict(set)
    for page in PAGES:
        for fence in scan_fences(page.read_text(encoding="utf-8")):
            if fence.executed and fence.session:
                pages_of[fence.session].add(_rel(page))
    shared = {s: sorted(p) for s, p in pages_of.items() if len(p) > 1}
    assert not shared, f"sessions used on several pages: {shared}"


@pytest.mark.parametrize("module", MODULES, ids=_rel)
def test_docstrings_hold_no_executed_fences(module: Path):
    executed = [f.line for f in scan_fences(module.read_text(encoding="utf-8")) if "exec" in f.attrs]
    assert not executed, f"{_rel(module)}: exec fences at lines {executed} would run only on the API page"
