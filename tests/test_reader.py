"""What a reader gets around the articles: gallery, notebooks, citations, links, 404.

Two levels: a throw-away site with one small article page proves the hook's behaviour
(and that a page without a claims table fails the strict build); the real built site is
then checked page by page: every article has a notebook that validates and runs top to
bottom in a fresh kernel, a Cite section, a gallery card with a thumbnail, and every
internal link and anchor of the whole site resolves.
"""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
import yaml

from kexue._docs import scan_fences
from tests._notebooks import execute
from tests.conftest import ROOT, mini_site, mkdocs_build, mkdocs_yml

sys.path.insert(0, str(ROOT / "docs" / "_hooks"))
import reader

pytestmark = pytest.mark.site

ARTICLES = sorted(
    p for p in (ROOT / "docs" / "articles").glob("*.md") if p.name != "index.md" and "\narticle:" in p.read_text("utf-8")
)

DEMO = '''---
title: A demo article
zh_title: 演示文章
article: https://kexue.fm/archives/1234
sequels: [https://kexue.fm/archives/1235]
zh_keywords: [演示, 测试]
article_date: 2020-02-03
summary: A page that exists only to test the reader hook.
module: kexue.demo
---

# A demo article

Some prose with math $x^2$, a [link to the API](../api/demo.md#top) and [one in the page](#claims-vs-reproduction).

```python
not_executed = "shown as a code block in the notebook"
```

```python
--8<-- "kexue/data.py"
```

```python exec="on" source="above" session="demo" result="text"
total = sum(range(10))
print(total)
```

```python exec="on" html="on" source="above" session="demo"
from kexue.plot import figure, show
fig, ax = figure()
ax.plot([0, 1, 2], [total, 0, total])
show(fig, caption="A V shape drawn from the total.")
```

## Claims vs reproduction

```python exec="on" session="demo"
from kexue.experiments.claims import Claim, all_of, claims_table, close_to, exact, not_tested
print(claims_table([
    Claim("the sum is 45", "45", f"{total}", exact(abs(total - 45), 0, name="difference")),
    Claim("two parts", "1 and 2", "1 and 3", all_of(close_to(1, 1, 0.1, name="a"), close_to(3, 2, 0.1, name="b"))),
    Claim("untested", "3", "n/a", not_tested("not measured here")),
], page="demo"))
```
'''


def _demo_site(tmp: Path, article: str) -> Path:
    return mini_site(tmp, {
        "index.md": '# Home\n\n<div class="kx-gallery"></div>\n',
        "articles/demo.md": article,
        "api/demo.md": "# kexue.demo\n",
    })


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("demo")
    build = mkdocs_build(_demo_site(tmp, DEMO), tmp / "site")
    assert build.returncode == 0, build.log[-3000:]
    return tmp / "site"


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def _run(nb_path: Path, cwd: Path, timeout: int = 300) -> nbformat.NotebookNode:
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    return execute(nb, "python3", cwd, timeout)


def test_claims_tally_reads_the_json_not_the_table(caplog):
    page = (
        "<table><tr><td>partly</td></tr></table>"
        '<script type="application/json" class="kx-claims">'
        '{"page": "demo", "claims": [{"verdict": "reproduced"}, {"verdict": "inconclusive"}, {"verdict": "reproduced"}]}'
        "</script>"
    )
    tally = reader.claims_tally(page, "articles/demo.md")
    assert tally == {"reproduced": 2, "partly": 0, "not reproduced": 0, "inconclusive": 1, "not tested": 0}
    assert not caplog.records


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ("<table></table>", "expected one kx-claims data block"),
        ('<script type="application/json" class="kx-claims">{oops</script>', "not valid JSON"),
        ('<script type="application/json" class="kx-claims">{"page": "demo", "claims": [{"verdict": "mostly"}]}</script>',
         "'mostly' is not one of"),
        ('<script type="application/json" class="kx-claims">{"page": "other", "claims": [{"verdict": "partly"}]}</script>',
         "names page 'other'"),
    ],
)
def test_claims_tally_warns_on_missing_or_bad_data(caplog, page, message):
    reader.claims_tally(page, "articles/demo.md")
    assert message in caplog.text


def test_notebook_cells_follow_the_page():
    body = DEMO.split("---\n", 2)[2]
    meta = yaml.safe_load(DEMO.split("---\n", 2)[1])
    lines = {f.line: f for f in scan_fences(body) if f.executed}
    text, fig, table = sorted(lines)
    figure_html = '<figure class="kexue-figure"><svg role="img"><path/></svg><figcaption>A V.</figcaption></figure>'
    outputs = {text: "45\n", fig: figure_html, table: "| Verdict |\n|---|\n"}
    nb = reader.notebook_from_markdown(
        body, meta, "https://x.org/s/articles/demo/", outputs=outputs, wheel_url="https://x.org/s/dist/k.whl",
        resolve=lambda t: "https://x.org/s/articles/demo/" + t if t.startswith("#") else "https://x.org/s/api/demo/#top",
    )
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert nb.cells[0].cell_type == "markdown" and "演示文章" in nb.cells[0].source
    assert "https://x.org/s/dist/k.whl" in code[0].source and 'find_spec("kexue") is None' in code[0].source
    assert [c.source for c in code[1:]] == [lines[n].source.rstrip() for n in (text, fig, table)]
    assert [o.output_type for o in code[1].outputs] == ["stream"] and code[1].outputs[0].text == "45\n"
    images = [o for o in code[2].outputs if "image/svg+xml" in o.get("data", {})]
    assert images and images[0].data["image/svg+xml"].startswith("<svg") and "*A V.*" in str(code[2].outputs)
    assert code[3].outputs[0].data["text/markdown"].startswith("| Verdict |")
    assert [c.execution_count for c in code] == [None, 1, 2, 3]
    prose = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "[link to the API](https://x.org/s/api/demo/#top)" in prose
    assert "[one in the page](https://x.org/s/articles/demo/#claims-vs-reproduction)" in prose
    assert "```python\nnot_executed" in prose and "exec=" not in prose and "%%capture" not in prose
    # A library excerpt reads as on the page: the file named, docstrings folded to their summary.
    assert "```python\n# kexue/data.py" in prose and "def load_digits(" in prose and "Args:" not in prose
    assert "# A demo article" not in prose.split("\n", 1)[1]  # title only once, in the first cell


def test_absolute_links_leave_code_alone():
    """Links become absolute; an indexing call in a code block or span is not a link."""
    text = "See [the API](../api/x.md) and [`f`](../api/x.md#f).\n\n```python\nPERM[name](c)\nx = [1](2)\n```\n[again](#top)"
    out = reader.absolute_links(text, lambda t: "https://h/" + t)
    assert "[the API](https://h/../api/x.md)" in out and "[again](https://h/#top)" in out
    assert "[`f`](https://h/../api/x.md#f)" in out and "PERM[name](c)\nx = [1](2)\n" in out


def test_demo_article_gets_header_cite_and_files(demo: Path):
    page = (demo / "articles" / "demo" / "index.html").read_text(encoding="utf-8")
    assert "《演示文章》" in page and "关键词：演示、测试" in page and "https://kexue.fm/archives/1235" in page
    assert 'href="demo.ipynb"' in page and 'download="demo.ipynb"' in page
    assert 'href="demo.md.txt"' in page and 'href="../../api/demo/"' in page
    assert 'id="cite"' in page and "@online{su2020_1234" in _text(page) and "@misc{kexue_demo" in _text(page)
    assert (demo / "articles" / "demo" / "demo.md.txt").read_text(encoding="utf-8") == DEMO


def test_demo_gallery_card(demo: Path):
    home = (demo / "index.html").read_text(encoding="utf-8")
    cards = re.findall(r'<a class="kx-card" href="([^"]+)">(.*?)</a>', home)
    assert [href for href, _ in cards] == ["articles/demo/"]
    card = cards[0][1]
    assert "Claims: 1 reproduced · 1 partly · 1 not tested" in card
    # The thumbnail is a small file loaded lazily; decorative (the card's text names the article).
    src = re.search(r'<img class="kx-thumb" src="(assets/figures/[0-9a-f]{16}\.svg)" width="\d+" height="\d+" alt="" '
                    r'loading="lazy"', card)
    assert src, card
    svg = (demo / src[1]).read_text(encoding="utf-8")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and 'xmlns="http://www.w3.org/2000/svg"' in svg


def test_demo_figure_is_a_file_named_by_its_caption_and_zoomable(demo: Path):
    page = (demo / "articles" / "demo" / "index.html").read_text(encoding="utf-8")
    assert "data:image" not in page and "<svg role" not in page
    figure = re.search(r'<figure class="kexue-figure" id="kx-fig-1"><a class="kx-zoom" href="([^"]+)"[^>]*>'
                       r'<img class="kx-figure-img" src="([^"]+)" width="\d+" height="\d+" alt="([^"]*)" '
                       r'aria-labelledby="kx-fig-1-caption" loading="lazy" decoding="async"></a>'
                       r'<figcaption id="kx-fig-1-caption">([^<]*)</figcaption></figure>', page)
    assert figure, "the figure is not a zoomable file named by its caption"
    href, src, alt, caption = figure.groups()
    assert href == src and src.startswith("../../assets/figures/") and src.endswith(".svg")
    assert alt == caption == "A V shape drawn from the total."
    assert (demo / "articles" / "demo" / src).resolve().is_file()


def test_demo_blocks_say_what_they_are(demo: Path):
    page = (demo / "articles" / "demo" / "index.html").read_text(encoding="utf-8")
    titles = re.findall(r'<div class="language-python kx-run highlight"><span class="filename">([^<]*)</span>', page)
    assert titles == [
        "ran in the build · runs on its own",
        "ran in the build · continues from above (uses total)",
    ]
    # What the first block printed: in an output box without a copy button.
    assert re.search(r'<div class="kx-output kx-output-text no-copy"><div class="language-text highlight">', page)
    assert 'class="kx-output kx-output-html no-copy"><figure' in page
    # The display-only fence stays a plain code block; the library excerpt is titled with its file,
    # shows code without the docstrings' sections, and links the full docstrings.
    assert 'not_executed = ' in _text(page) and page.count("kx-run") == 2
    excerpt = re.search(r'<div class="language-python kx-source highlight"><span class="filename">kexue/data.py</span>'
                        r'(.*?)</div>', page, re.DOTALL)
    assert excerpt and "def load_digits" in _text(excerpt[1]) and "Args:" not in _text(excerpt[1])
    assert "Full docstrings on the API page" in page


def test_demo_page_description_and_open_graph(demo: Path):
    page = (demo / "articles" / "demo" / "index.html").read_text(encoding="utf-8")
    summary = "A page that exists only to test the reader hook."
    assert f'<meta name="description" content="{summary}">' in page
    assert f'<meta property="og:description" content="{summary}">' in page
    assert '<meta property="og:title" content="A demo article">' in page
    assert '<meta property="og:image" content="http://127.0.0.1:8000/assets/kexue-card.png">' in page
    assert (demo / "assets" / "kexue-card.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_notebook_carries_the_build_outputs_and_runs_in_a_fresh_kernel(demo: Path, tmp_path: Path):
    saved = nbformat.read(demo / "articles" / "demo" / "demo.ipynb", as_version=4)
    saved_outputs = [o for c in saved.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.get("text", "").strip() == "45" for o in saved_outputs)
    assert any("image/svg+xml" in o.get("data", {}) for o in saved_outputs)
    assert "http://127.0.0.1:8000/api/demo/#top" in "".join(c.source for c in saved.cells)
    nb = _run(demo / "articles" / "demo" / "demo.ipynb", tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.get("text", "").strip() == "45" for o in outputs)
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert html and "<svg" in html[0]  # kexue.plot.show displays the figure inline in Jupyter


def test_article_without_claims_table_fails_the_build(tmp_path: Path):
    broken = DEMO.split("## Claims vs reproduction")[0]
    build = mkdocs_build(_demo_site(tmp_path, broken), tmp_path / "site")
    assert build.returncode != 0
    assert "articles/demo.md: expected one kx-claims data block" in build.log


def test_article_with_a_hand_made_verdict_fails_the_build(tmp_path: Path):
    forged = DEMO.split("## Claims vs reproduction")[0] + (
        "## Claims vs reproduction\n\n"
        '<script type="application/json" class="kx-claims">'
        '{"page": "demo", "claims": [{"verdict": "mostly"}]}</script>\n'
    )
    build = mkdocs_build(_demo_site(tmp_path, forged), tmp_path / "site")
    assert build.returncode != 0
    assert "claims verdict 'mostly' is not one of" in build.log


# ------------------------------------------------------------------ the real site


def test_home_gallery_has_one_card_per_article(built_site):
    home = (built_site.site / "index.html").read_text(encoding="utf-8")
    hrefs = re.findall(r'<a class="kx-card" href="([^"]+)">', home)
    assert hrefs == [f"articles/{p.stem}/" for p in _nav_ordered(ARTICLES)]
    assert '<div class="kx-gallery"></div>' not in home


def _nav_ordered(pages: list[Path]) -> list[Path]:
    nav = mkdocs_yml()["nav"]
    text = json.dumps(nav)
    return sorted(pages, key=lambda p: text.find(f"articles/{p.name}"))


@pytest.mark.parametrize("page", ARTICLES, ids=lambda p: p.stem)
def test_article_has_thumbnail_cite_and_source(built_site, page: Path):
    html = (built_site.site / "articles" / page.stem / "index.html").read_text(encoding="utf-8")
    assert 'id="cite"' in html and "@online{su" in _text(html)
    assert f'href="{page.stem}.ipynb"' in html
    source = built_site.site / "articles" / page.stem / f"{page.stem}.md.txt"
    assert source.read_text(encoding="utf-8") == page.read_text(encoding="utf-8")
    home = (built_site.site / "index.html").read_text(encoding="utf-8")
    card = re.search(rf'<a class="kx-card" href="articles/{page.stem}/">(.*?)</a>', home)
    thumb = re.search(r'class="kx-thumb" src="(assets/figures/[^"]+)"[^>]*loading="lazy"', card[1]) if card else None
    assert thumb, "no thumbnail on the home page"
    size = (built_site.site / thumb[1]).stat().st_size
    assert size < 120_000, f"thumbnail {thumb[1]} is {size} bytes"


@pytest.mark.parametrize("page", ARTICLES, ids=lambda p: p.stem)
def test_article_notebook_stands_on_its_own(built_site, page: Path):
    """Each notebook: the page's executed fences in order with the outputs the build printed,
    links to the hosted site, an install cell for the wheel the site ships, no build plumbing.
    (The page code itself ran under pytest; test_release runs one notebook against the wheel.)"""
    nb = nbformat.read(built_site.site / "articles" / page.stem / f"{page.stem}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    wheel = re.search(r'"(https://[^"]+/dist/(kexue-[^"]+\.whl))"', code[0].source)
    assert wheel and wheel[1].startswith(built_site.site_url), code[0].source
    assert (built_site.site / "dist" / wheel[2]).is_file()
    fences = [f for f in scan_fences(page.read_text(encoding="utf-8")) if f.executed]
    expected = [re.sub(r"[ \t]*#\s*markdown-exec:\s*hide\s*$", "", f.source, flags=re.MULTILINE).rstrip() for f in fences]
    assert [c.source for c in code[1:]] == expected
    assert all(c.execution_count for c in code[1:])
    assert sum(bool(c.outputs) for c in code[1:]) >= len(code[1:]) // 2, "most fences print something"
    images = [o for c in code for o in c.outputs if {"image/svg+xml", "image/png"} & set(o.get("data", {}))]
    assert images, "the page's figures are in the notebook"
    text = nbformat.writes(nb)
    assert "%%capture" not in text and "set_num_threads(2)" not in text and "markdown-exec" not in text
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    # links live in prose, not in the library excerpts (`PERMUTATIONS[name](channels, generator)`)
    prose = re.sub(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", "", prose, flags=re.MULTILINE | re.DOTALL)
    relative = re.findall(r"\]\((?!https?://|mailto:)([^)]+)\)", prose)
    assert not relative, f"links that only work on the site: {relative[:5]}"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) and tag in {"a", "link", "img", "script", "source", "iframe"}:
                self.refs.append(a[key])


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_every_internal_link_and_anchor_resolves(built_site):
    site = built_site.site
    parsed = {path: _parse(path) for path in site.rglob("*.html")}
    assert len(parsed) >= 5
    broken: list[str] = []
    for path, links in parsed.items():
        if path.name == "404.html":
            base_dir = site  # served at any depth; its links are root-relative
        else:
            base_dir = path.parent
        for ref in links.refs:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith(("//", "data:")):
                continue
            where = f"{path.relative_to(site)} -> {ref}"
            if parts.path.startswith("/"):
                assert parts.path.startswith(built_site.base_path), f"{where}: outside the site's path"
                target = site / unquote(parts.path).removeprefix(built_site.base_path)
            elif parts.path:
                target = (base_dir / unquote(parts.path)).resolve()
            else:
                target = path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(where)
                continue
            if parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(where + " (missing anchor)")
    assert not broken, "\n".join(broken[:30])


def test_404_page_and_sitemap_stay_on_the_site(built_site):
    page = (built_site.site / "404.html").read_text(encoding="utf-8")
    assert "Page not found" in page
    fetched = re.findall(r'<(?:script|img|link)\b[^>]*(?:src|href)="([^"]+)"', page)
    assert fetched and not [u for u in fetched if re.match(r"(https?:)?//", u)]
    # Served at any depth, the 404 page can only use root-absolute links, so they carry the site's path.
    assert all(u.startswith(built_site.base_path) for u in fetched if not u.startswith("data:")), fetched
    locs = re.findall(r"<loc>([^<]+)</loc>", (built_site.site / "sitemap.xml").read_text())
    assert locs and all(u.startswith(built_site.site_url) for u in locs), locs[:5]


def test_every_generated_address_follows_site_url(built_site):
    """Built for a hosted address, the site names no local address anywhere: canonical links,
    sitemap, search index, Cite entries and notebooks all use SITE_URL."""
    assert built_site.site_url.startswith("https://")
    local = [p.relative_to(built_site.site).as_posix() for p in built_site.site.rglob("*")
             if p.is_file() and p.suffix in {".html", ".xml", ".json", ".ipynb", ".txt", ".js"}
             and re.search(r"127\.0\.0\.1|localhost", p.read_text(encoding="utf-8", errors="replace"))]
    assert not local, local[:10]
    page = (built_site.site / "articles" / "hsic" / "index.html").read_text(encoding="utf-8")
    assert f'<link rel="canonical" href="{built_site.site_url}articles/hsic/">' in page
    assert f"url          = {{{built_site.site_url}articles/hsic/}}" in _text(page)


def test_article_list_sums_up_every_claims_table(built_site):
    page = (built_site.site / "articles" / "index.html").read_text(encoding="utf-8")
    table = re.search(r'<div class="kx-claims-summary"><table>(.*?)</table>', page, re.DOTALL)
    assert table, "the claims summary was not filled in"
    rows = re.findall(r'<tr><td><a href="([^"]+)">', table[1])
    assert rows == [f"../articles/{p.stem}/" for p in _nav_ordered(ARTICLES)]
    home = (built_site.site / "index.html").read_text(encoding="utf-8")
    for href in rows:  # the tally per article matches its gallery card
        cells = re.search(rf'<a href="{re.escape(href)}">[^<]*</a></td>((?:<td>\d+</td>)+)', table[1])
        counts = [int(n) for n in re.findall(r"<td>(\d+)</td>", cells[1])]
        card = re.search(rf'<a class="kx-card" href="{re.escape(href[3:])}">.*?Claims: ([^<]*)</span>', home)
        expected = {w: 0 for w in reader.VERDICTS}
        for part in card[1].split(" · "):
            n, word = part.split(" ", 1)
            expected[word] = int(n)
        assert counts == list(expected.values())
