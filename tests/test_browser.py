"""Open the built site in headless Chromium: math typeset, figures drawn, console clean, nothing external.

Also, as a reader would meet them: search typed into the search box (Chinese, English and the two
mixed without a space, and the articles' Chinese titles pasted whole), claims tables on a 390 px
phone, figure zoom, literal Sphinx roles on API pages, and accessibility (axe-core, WCAG 2 A/AA,
both palettes, on the home page, the articles index, every article, one API page and Performance).

Uses Debian's ``chromium`` (installed by ``make test`` through scripts/ensure-chromium.sh)
driven by ``playwright-core`` from npm. The site is built for a hosted address with a sub-path
(``HOSTED_URL`` in ``tests/conftest.py``) and the browser loads it from exactly that address,
the files served from the build directory by request interception; every request to any other
host is aborted and recorded, so the "zero external requests" claim is observed.
Every page is visited in the light palette; the dark palette, which changes colours and nothing
else, is visited on the pages axe-core checks. With ``KEXUE_SCREENSHOTS=1`` (e.g.
``KEXUE_SCREENSHOTS=1 make test``), full-page screenshots of every page in both palettes go to
``artifacts/screenshots/``; they are off by default because they take most of the browser test's
time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
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
    # Mixed Latin and Chinese with no space: the article is among the first three (the API page's
    # section titles name the NTK functions, and a title match outweighs a text match).
    "NTK外推": "/articles/rope-beta-base/",
}


# What Su's readers type: Latin and Chinese with no space between them. The first hit must be the article.
MIXED_CASES = {
    "RoPE外推": "/articles/rope-beta-base/",
    "Lipschitz约束": "/articles/lipschitz-spectral-norm/",
    "HSIC瓶颈": "/articles/hsic/",
    "mixup正则": "/articles/samplepairing-mixup/",
    "Glow流模型": "/articles/realnvp-glow/",
    "Capsule盛宴": "/articles/capsule-feast/",
}
# A topic word: the article ranks above its API page.
TOPIC_CASES = {
    "spectral norm": "/articles/lipschitz-spectral-norm/",
    "RoPE": "/articles/rope-beta-base/",
    "HSIC": "/articles/hsic/",
    "VQ-VAE": "/articles/vq-vae/",
}


def _exists(root: Path, path: str) -> bool:
    return path == "/" or path == "/about/" or (root / "docs" / (path.strip("/") + ".md")).is_file()


def _search_cases(root: Path) -> dict[str, str]:
    return {q: p for q, p in SEARCH_CASES.items() if _exists(root, p)}


def _articles(root: Path) -> dict[str, dict]:
    """Front matter of every article page, by site path."""
    import yaml

    out = {}
    for page in sorted((root / "docs" / "articles").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        if page.name != "index.md" and text.startswith("---") and "\narticle:" in text:
            out[f"/articles/{page.stem}/"] = yaml.safe_load(text.split("---", 2)[1])
    return out


def _first_hit_cases(root: Path) -> dict[str, str]:
    """Queries whose first hit must be the given page: mixed queries, topic words, pasted Chinese titles.

    Titles are searched whole, digits and punctuation included ("Transformer升级之路：10、RoPE是一种β进制编码").
    """
    cases = {q: p for q, p in {**MIXED_CASES, **TOPIC_CASES}.items() if _exists(root, p)}
    cases.update({str(meta["zh_title"]): path for path, meta in _articles(root).items()})
    return cases


def _axe_pages(root: Path) -> list[str]:
    """The API pages share one mkdocstrings template: the experiment helpers' page (about 11 k elements,
    with signatures, math, tables and examples) stands for them. The largest, /api/hsic/ (22 k), cost
    30 s of axe-core in the light palette and 25 s in the dark one, the browser test's longest item."""
    return ["/", "/articles/", *_articles(root), "/api/experiments/", "/performance/"]


@pytest.fixture(scope="module")
def served(built_site):
    """The site's public address (served by the browser script from the built files) and its pages."""
    assert built_site.returncode == 0, "the site did not build; see test_site.py"
    return built_site.site_url.rstrip("/"), _pages(built_site.site)


def start_smoke(built_site, root: Path) -> subprocess.Popen | None:
    """Start the browser script on the built site in the background (None without Chromium).

    ``tests/conftest.py`` calls this as soon as the site is built, so the browser works while the
    rest of the suite runs (the browser tests themselves are moved to the end of the session);
    the ``report`` fixture waits for it. Its output goes to temporary files, so no pipe can fill up.
    """
    exe = _chromium()
    if exe is None or built_site.returncode != 0:
        return None
    base, pages = built_site.site_url.rstrip("/"), _pages(built_site.site)
    shots = root / "artifacts" / "screenshots"
    if os.environ.get("KEXUE_SCREENSHOTS", "") not in {"", "0"}:
        shots.mkdir(parents=True, exist_ok=True)
    else:
        shots = "-"  # smoke.mjs: no screenshots
    queries = list(dict.fromkeys([*_search_cases(root), *_first_hit_cases(root)]))
    axe = _axe_pages(root)
    env = {
        **os.environ,
        "KEXUE_SEARCH": json.dumps(queries, ensure_ascii=False),
        "KEXUE_AXE": json.dumps(axe),
        # The dark palette changes colours only: it is visited on the pages axe-core checks, not
        # on every API page again (each about 1 MB of HTML), unless screenshots are wanted.
        "KEXUE_DARK": json.dumps(pages if shots != "-" else [p for p in pages if p in axe]),
        "KEXUE_MOBILE": json.dumps(["/articles/", *_articles(root)]),
        "KEXUE_ZOOM": next(iter(_articles(root)), "/about/"),
        "KEXUE_COPY": "/about/",
    }
    out = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by finish_smoke
    err = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by finish_smoke
    # At a lower priority (nice 10, where available): it starts while the last unit tests still run
    # and should take the time they leave free, not slow them down (it is CPU-bound on both cores).
    nice = [found, "-n", "10"] if (found := shutil.which("nice")) else []
    proc = subprocess.Popen(
        [*nice, "node", str(root / "tests" / "browser" / "smoke.mjs"), exe, base, str(built_site.site), str(shots), *pages],
        cwd=root, env=env, stdout=out, stderr=err, text=True,
    )
    proc.kexue_output = (out, err)  # read back by finish_smoke
    return proc


def finish_smoke(proc: subprocess.Popen, timeout: float = 600) -> dict:
    """Wait for the browser script and return its report."""
    out, err = proc.kexue_output
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
    out.close()
    err.close()
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout)


@pytest.fixture(scope="module")
def report(served, built_site, root: Path, pytestconfig: pytest.Config) -> dict:
    from tests.conftest import BROWSER_RUN

    proc = pytestconfig.stash.get(BROWSER_RUN, None) or start_smoke(built_site, root)
    if proc is None:
        pytest.skip("no Chromium found and none could be installed (see scripts/ensure-chromium.sh)")
    return finish_smoke(proc)


def test_every_page_loads_without_console_errors(report, served, root: Path):
    _, pages = served
    visited = {(p["path"], p["colorScheme"]) for p in report["pages"]}
    assert {(path, "light") for path in pages} <= visited, "a page was not visited in the light palette"
    assert {(path, "dark") for path in _axe_pages(root) if path in pages} <= visited
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


def _pages_of(hits: list[str]) -> list[str]:
    return list(dict.fromkeys(h if h.endswith("/") else h + "/" for h in hits))


def test_search_finds_pages_in_chinese_and_english(report, root: Path):
    cases = _search_cases(root)
    got = {s["query"]: s for s in report["search"]}
    assert set(cases) <= set(got)
    for query, path in cases.items():
        assert "error" not in got[query], got[query]
        pages = _pages_of(got[query]["hits"])
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


def test_search_puts_the_article_first_for_mixed_queries_titles_and_topic_words(report, root: Path):
    """``RoPE外推`` (no space), an original title pasted whole, or a topic word: the article is the first hit."""
    got = {s["query"]: s for s in report["search"]}
    wrong = {}
    for query, path in _first_hit_cases(root).items():
        assert "error" not in got[query], got[query]
        pages = _pages_of(got[query]["hits"])
        if not pages or pages[0] != path:
            wrong[query] = pages[:3]
    assert not wrong, f"first hits that are not the article: {wrong}"


def test_search_previews_show_no_tex_or_roles(report):
    raw = [(s["query"], p[:120]) for s in report["search"] for p in s.get("previews", [])
           if re.search(r"\\[()\[\]]|\\(?:frac|mathrm|theta|alpha)\b|:(?:func|class|meth|data):", p)]
    assert not raw, raw[:5]


def test_figures_are_files_named_by_their_caption_and_zoom(report):
    for page in report["pages"]:
        assert page["inlineFigures"] == 0, f"{page['path']}: figures inlined in the page"
        assert page["unnamedFigures"] == 0, f"{page['path']}: figures without an accessible name"
        assert page["zoomable"] == page["figures"], f"{page['path']}: figures that cannot be enlarged"
    zoom = report["zoom"]
    assert zoom and zoom["opened"], zoom
    assert zoom["opened"]["naturalWidth"] > 0 and zoom["opened"]["src"].endswith(zoom["href"].split("/")[-1]), zoom
    assert zoom["closed"], zoom


def test_api_pages_show_no_literal_sphinx_roles(report):
    roles = {p["path"]: p["roles"] for p in report["pages"] if p["path"].startswith("/api/") and p["roles"]}
    assert not roles, f"literal roles (write [`name`][kexue.module.name] instead): {roles}"


def test_claims_verdicts_are_readable_on_a_phone(report):
    """At 390 px the claims table's verdicts are on screen without sideways scrolling, and no page scrolls sideways."""
    assert report["mobile"], "no page was opened at phone width"
    for page in report["mobile"]:
        assert page["viewport"] == 390, page
        assert page["verdictsOffScreen"] == [], f"{page['path']}: verdicts off screen at 390 px"
        assert page["pageOverflow"] <= 0, f"{page['path']}: the page scrolls sideways by {page['pageOverflow']} px"


def test_display_equations_fit_a_phone(report):
    """At 390 px no display equation is more than 15% wider than its column (the rest scrolls inside its
    own box): long formulas are written as aligned or gathered lines."""
    wide = [f"{page['path']}: {m['width']} px in {m['column']} px: {m['tex'][:80]}"
            for page in report["mobile"] for m in page["wideMath"] if m["width"] > 1.15 * m["column"]]
    assert not wide, "\n".join(wide)


def test_no_serious_accessibility_violations(report, root: Path):
    """axe-core, WCAG 2.0/2.1 A and AA rules (in the dark palette the colour rules, the DOM being the same),
    both palettes: no serious or critical violation."""
    checked = {(p["path"], p["colorScheme"]) for p in report["pages"] if "axe" in p}
    assert {(path, scheme) for path in _axe_pages(root) for scheme in ("light", "dark")} <= checked
    found = [
        f"{p['path']} ({p['colorScheme']}): {v['id']} x{v['count']} [{v['impact']}] {v['help']}; e.g. "
        + "; ".join(f"{n['target']}: {n['summary'][:160]}" for n in v["nodes"][:2])
        for p in report["pages"] if "axe" in p for v in p["axe"] if v["impact"] in {"serious", "critical"}
    ]
    assert not found, "\n".join(found[:20])


def test_copy_buttons_copy_the_code_the_copy_test_runs(report, built_site):
    """What a copy button puts on the clipboard is the code tests/test_docs_copy.py reads from the HTML."""
    from tests.test_docs_copy import copied_blocks

    page = (built_site.site / "about" / "index.html").read_text(encoding="utf-8")
    expected = [code.rstrip() for _, code in copied_blocks(page)]
    assert expected and report["copied"] == expected
