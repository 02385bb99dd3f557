"""The API reference renders: links instead of Sphinx roles, one heading per module, linked URLs, examples.

mkdocstrings renders Google-style docstrings as Markdown; Sphinx roles (``:func:`x```) stay
literal text there and link nowhere, so docstrings use autorefs (``[`x`][kexue.mod.x]``), which
the strict build checks. Every public module is documented on an API page and listed on the API
index, and every module shows at least one example that runs as a doctest.
"""

from __future__ import annotations

import html
import pkgutil
import re
from pathlib import Path

import pytest

import kexue

pytestmark = pytest.mark.site

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|data|attr|mod|exc|obj|const):(?=`|\w)")


def _modules() -> list[str]:
    """Every public module of the package (no private modules, no package ``__init__``)."""
    out = []
    for info in pkgutil.walk_packages(kexue.__path__, "kexue."):
        if info.ispkg or any(part.startswith("_") for part in info.name.split(".")):
            continue
        out.append(info.name)
    return sorted(out)


def _article(page: str) -> str:
    m = re.search(r"<article[^>]*>(.*)</article>", page, re.DOTALL)
    return m[1] if m else page


def _text(fragment: str) -> str:
    fragment = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", "", fragment, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


@pytest.fixture(scope="module")
def api_pages(built_site) -> dict[str, str]:
    assert built_site.returncode == 0, "the site did not build; see test_site.py"
    pages = {p.parent.name: _article(p.read_text(encoding="utf-8")) for p in (built_site.site / "api").glob("*/index.html")}
    assert pages, "no API pages were built"
    return pages


def test_api_pages_show_no_sphinx_roles(api_pages):
    counts = {name: len(ROLE.findall(_text(page))) for name, page in sorted(api_pages.items())}
    assert not any(counts.values()), f"literal Sphinx roles per API page (write [`name`][kexue.mod.name]): {counts}"


def test_each_module_name_is_one_heading(api_pages):
    for name, page in api_pages.items():
        headings = [_text(h).strip().rstrip("¶").strip() for h in re.findall(r"<h[1-6][^>]*>(.*?)</h[1-6]>", page, re.DOTALL)]
        repeated = {h for h in headings if h.startswith("kexue") and headings.count(h) > 1}
        assert not repeated, f"api/{name}: headings shown twice: {sorted(repeated)}"


def test_urls_in_docstrings_are_links(api_pages):
    for name, page in api_pages.items():
        prose = re.sub(r"<(a|pre|code|details)\b[^>]*>.*?</\1>", "", page, flags=re.DOTALL)
        bare = re.findall(r"https?://[^\s<)\"',]+", _text(prose))
        assert not bare, f"api/{name}: URLs shown as plain text: {bare[:5]}"


def test_every_public_module_is_documented_and_indexed(root: Path):
    api = root / "docs" / "api"
    directives = {m for page in api.glob("*.md")
                  for m in re.findall(r"^:::\s*(kexue[\w.]*)", page.read_text(encoding="utf-8"), re.MULTILINE)}
    undocumented = [m for m in _modules() if m not in directives]
    assert not undocumented, f"modules on no API page (add '::: <module>' to one): {undocumented}"
    index = (api / "index.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in api.glob("*.md") if p.name != "index.md")
    unlisted = [p for p in pages if f"]({p})" not in index]
    assert not unlisted, f"API pages the API index does not link: {unlisted}"


@pytest.mark.parametrize("module", _modules())
def test_every_module_shows_a_runnable_example(module: str, root: Path):
    """At least one docstring of the module has a ``>>>`` example (doctests run under pytest)."""
    source = (root / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    assert re.search(r"^\s*>>> ", source, re.MULTILINE), f"{module}: no docstring example (an Examples: section with >>>)"
