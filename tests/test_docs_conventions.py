"""Fences the build and pytest would treat differently are errors, caught here before they mislead.

* An executed fence indented (inside a tab or admonition) runs in the build but is
  invisible to pytest-markdown-docs.
* A bare word in a fence's info string (``notest``, ``continuation``) makes
  pymdownx.superfences emit the fence as raw text, silently, even with --strict.
* A session name shared by two pages leaks variables between them in markdown-exec.
* Executed fences must be Python with ``exec="on"`` and name a session, so every page's
  state is explicit.
* Docstrings are rendered on API pages but never executed: no ``exec`` fences there.
* Every article names its module the same way under its title (``Module:``).
* Every article page ends with one table printed by ``kexue.experiments.claims.claims_table``:
  no page-local verdict helpers, no hand-printed claims tables, no hand-made outcomes.
"""

from __future__ import annotations

import re
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


ARTICLES = [p for p in PAGES if p.parent.name == "articles" and p.name != "index.md"]
_OWN_VERDICT = re.compile(r"^\s*def\s+\w*verdict\w*\s*\(", re.MULTILINE)
_HAND_TABLE = re.compile(r"""["'](?:\s*\|)?\s*\**Claim\**\s*\|""")


@pytest.mark.parametrize("page", ARTICLES, ids=_rel)
def test_claims_tables_come_from_the_claims_engine(page: Path):
    """Verdicts come from the shared rules; no page defines its own or prints the table by hand."""
    text = page.read_text(encoding="utf-8")
    problems: list[str] = []
    executed = [f for f in scan_fences(text) if f.executed]
    for fence in executed:
        where = f"{_rel(page)}:{fence.line}"
        if _OWN_VERDICT.search(fence.source):
            problems.append(f"{where}: defines its own verdict function; use the rules of kexue.experiments.claims")
        if _HAND_TABLE.search(fence.source):
            problems.append(f"{where}: prints a claims table by hand; use claims_table(...)")
        if re.search(r"\bOutcome\s*\(", fence.source):
            problems.append(f"{where}: builds an Outcome by hand; verdicts come from the rules")
    heading = re.search(r"^## Claims vs reproduction\s*$", text, re.MULTILINE)
    if heading is None:
        problems.append(f"{_rel(page)}: no '## Claims vs reproduction' section")
    else:
        after = [f for f in executed if f.line > text[: heading.start()].count("\n") + 1]
        calls = sum(f.source.count("claims_table(") for f in after)
        if calls != 1:
            problems.append(f"{_rel(page)}: the claims section must print exactly one claims_table(...), found {calls}")
        elif f'page="{page.stem}"' not in "".join(f.source for f in after):
            problems.append(f'{_rel(page)}: claims_table(..., page="{page.stem}") must name this page')
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", ARTICLES, ids=_rel)
def test_article_header_names_its_module_the_same_way(page: Path):
    """Under the title, every article says ``Module: [`kexue.x`](../api/x.md)``, not "Code:" on some."""
    head = page.read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert not re.search(r"\bCode: \[`kexue\.", head), f"{_rel(page)}: write 'Module: [`kexue.…`](…)' (not 'Code:')"
