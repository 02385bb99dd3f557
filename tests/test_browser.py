"""Open the built site in headless Chromium: math typeset, figures drawn, console clean, nothing external.

Uses Debian's ``chromium`` (installed by ``make test`` through scripts/ensure-chromium.sh)
driven by ``playwright-core`` from npm. The site is built for a hosted address with a sub-path
(``HOSTED_URL`` in ``tests/conftest.py``) and the browser loads it from exactly that address,
the files served from the build directory by request interception; every request to any other
host is aborted and recorded, so the "zero external requests" claim is observed.
Screenshots of each page in the light and dark palette go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.site


def _chromium() -> str | None:
    for exe in (os.environ.get("KEXUE_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if exe and os.access(exe, os.X_OK):
            return exe
    return shutil.which("chromium")


def _pages(site: Path) -> list[str]:
    """Every HTML page of the site except the 404 page, as URL paths."""
    out = []
    for html in sorted(site.rglob("index.html")):
        rel = html.parent.relative_to(site).as_posix()
        out.append("/" if rel == "." else f"/{rel}/")
    return out


# Search queries a reader would type, in Chinese and English, and the page each must find.
# A case is used only when its page exists, plus two baselines that exist from day one.
SEARCH_CASES = {
    "科学空间": "/",
    "pytest-markdown-docs": "/about/",
    "进制": "/articles/rope-beta-base/",
    "NTK-aware": "/articles/rope-beta-base/",
    "胶囊": "/articles/capsule-feast/",
    "dynamic routing": "/articles/capsule-feast/",
    "阅读理解": "/articles/dgcnn-reading-comprehension/",
    "mixup": "/articles/samplepairing-mixup/",
    "流模型": "/articles/realnvp-glow/",
    "李普希茨": "/articles/lipschitz-spectral-norm/",
    "Lipschitz": "/articles/lipschitz-spectral-norm/",
    "量子化": "/articles/vq-vae/",
    "互信息": "/articles/hsic/",
    "HSIC": "/articles/hsic/",
}


def _search_cases(root: Path) -> dict[str, str]:
    def exists(path: str) -> bool:
        return path == "/" or path == "/about/" or (root / "docs" / (path.strip("/") + ".md")).is_file()

    return {q: p for q, p in SEARCH_CASES.items() if exists(p)}


@pytest.fixture(scope="module")
def served(built_site):
    """The site's public address (served by the browser script from the built files) and its pages."""
    assert built_site.returncode == 0, "the site did not build; see test_site.py"
    return built_site.site_url.rstrip("/"), _pages(built_site.site)


@pytest.fixture(scope="module")
def report(served, built_site, root: Path) -> dict:
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found and none could be installed (see scripts/ensure-chromium.sh)")
    base, pages = served
    shots = root / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KEXUE_SEARCH": json.dumps(list(_search_cases(root)), ensure_ascii=False)}
    proc = subprocess.run(
        ["node", str(root / "tests" / "browser" / "smoke.mjs"), exe, base, str(built_site.site), str(shots), *pages],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_every_page_loads_without_console_errors(report):
    assert report["pages"], "no pages were visited"
    for page in report["pages"]:
        where = f"{page['path']} ({page['colorScheme']})"
        assert page["status"] == 200, where
        assert page["consoleErrors"] == [], where
        assert page["pageErrors"] == [], where


def test_zero_requests_outside_the_site(report):
    assert report["external"] == []


def test_instant_navigation_works_at_the_hosted_address(report):
    """Served at its site_url (with a sub-path), a click on a tab swaps the page without a reload."""
    nav = report["navigation"]
    assert nav["from"] == "/" and nav["to"] == "/articles/", nav
    assert nav["titleChanged"] and nav["keptState"], nav


def test_math_is_typeset_everywhere(report):
    with_math = [p for p in report["pages"] if p["mathElements"]]
    assert with_math, "no page with math was visited"
    for page in report["pages"]:
        assert page["rawMath"] == [], f"{page['path']}: formulas left as TeX source"
        assert page["katex"] >= page["mathElements"], page["path"]


def test_figures_are_drawn(report):
    assert any(p["figures"] for p in report["pages"]), "no page with a figure was visited"
    for page in report["pages"]:
        assert page["brokenFigures"] == [], page["path"]


def test_dark_palette_is_applied(report):
    schemes = {(p["path"], p["colorScheme"]): p["scheme"] for p in report["pages"]}
    assert schemes[("/", "dark")] == "slate"
    assert schemes[("/", "light")] == "default"


def test_search_finds_pages_in_chinese_and_english(report, root: Path):
    cases = _search_cases(root)
    got = {s["query"]: s for s in report["search"]}
    assert set(got) == set(cases)
    for query, path in cases.items():
        assert "error" not in got[query], got[query]
        pages = list(dict.fromkeys(h if h.endswith("/") else h + "/" for h in got[query]["hits"]))
        assert path in pages[:3], f"searching {query!r} should find {path} among the top 3 pages, got {pages[:5]}"


def test_notebook_buttons_download_notebooks(report, root: Path):
    articles = {f"/articles/{p.stem}/" for p in (root / "docs" / "articles").glob("*.md")
                if p.name != "index.md" and "\narticle:" in p.read_text("utf-8")}
    seen = {p["path"] for p in report["pages"] if p.get("notebook")}
    assert seen == articles
    for page in report["pages"]:
        nb = page.get("notebook")
        if nb:
            assert nb["status"] == 200 and nb.get("nbformat") == 4, (page["path"], nb)
            assert nb["codeCells"] >= 3 and nb["download"].endswith(".ipynb"), (page["path"], nb)
