"""The whole site builds strictly, contains what the nav promises, and references nothing external."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, mkdocs_build

pytestmark = pytest.mark.site

# Attributes through which a browser fetches something. Links (<a href>, <link rel=canonical>) are
# navigation or metadata, not requests.
_FETCHING = re.compile(
    r"<(?:script|img|iframe|source|audio|video|embed)\b[^>]*\bsrc=\"(?P<src>[^\"]+)\""
    r"|<link\b(?![^>]*\brel=\"(?:canonical|alternate)\")[^>]*\bhref=\"(?P<href>[^\"]+)\""
    r"|url\((?P<url>[^)]+)\)"
)


def _nav_pages(nav) -> list[str]:
    out: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            out.extend(_nav_pages(value))
        else:
            out.append(value)
    return out


def test_strict_build_passes(built_site):
    assert built_site.returncode == 0, built_site.log[-5000:]


def test_every_nav_page_is_built(built_site, root: Path):
    nav = yaml.safe_load((root / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    for src in _nav_pages(nav):
        stem = src.removesuffix(".md")
        html = stem + ".html" if stem == "index" or stem.endswith("/index") else stem + "/index.html"
        assert (built_site.site / html).is_file(), f"{src} was not built to {html}"

def test_katex_assets_are_served_locally(built_site):
    katex = built_site.site / "assets" / "katex"
    assert (katex / "katex.min.css").is_file()
    fonts = list((katex / "fonts").glob("*.woff2"))
    assert len(fonts) >= 10, "KaTeX fonts missing from the site"
    css = (katex / "katex.min.css").read_text(encoding="utf-8")
    for ref in re.findall(r"url\(([^)]+)\)", css):
        if ref.endswith(".woff2"):
            assert (katex / ref).is_file(), f"katex.min.css references missing {ref}"


def test_no_page_fetches_anything_outside_the_site(built_site):
    offenders: list[str] = []
    for page in built_site.site.rglob("*.html"):
        for m in _FETCHING.finditer(page.read_text(encoding="utf-8")):
            ref = (m["src"] or m["href"] or m["url"] or "").strip("'\" ")
            if re.match(r"(https?:)?//", ref):
                offenders.append(f"{page.relative_to(built_site.site)}: {ref}")
    assert not offenders, "\n".join(offenders[:20])


def test_executed_fence_output_is_in_the_page(built_site):
    about = (built_site.site / "about" / "index.html").read_text(encoding="utf-8")
    assert "images per class:" in about, "the About page's executed fence printed nothing into the page"
    assert '<figure class="kexue-figure"><svg' in about


def test_warm_build_from_the_fence_cache_is_byte_identical(built_site, tmp_path: Path):
    cache = built_site.site.parent / "fence-cache"
    assert re.search(r"fence cache .*: 0 hits, [1-9]\d* misses", built_site.log), "the cold build did not fill the cache"
    warm = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site", fence_cache=cache)
    assert warm.returncode == 0, warm.log[-3000:]
    m = re.search(r"fence cache .*: (\d+) hits, 0 misses", warm.log)
    assert m and int(m[1]) > 0, warm.log[-2000:]
    cold_files = {p.relative_to(built_site.site) for p in built_site.site.rglob("*") if p.is_file()}
    warm_files = {p.relative_to(warm.site) for p in warm.site.rglob("*") if p.is_file()}
    assert cold_files == warm_files
    differ = [str(f) for f in sorted(cold_files) if (built_site.site / f).read_bytes() != (warm.site / f).read_bytes()]
    assert not differ, f"warm build differs from the cold one in: {differ[:10]}"
    print(f"\ncold build {built_site.seconds:.1f} s, warm build {warm.seconds:.1f} s")


def test_fence_times_are_recorded_for_every_article(built_site, root: Path):
    """The build reports each page's fence time (a measurement for the log, not a speed assertion)."""
    assert re.search(r"fence time per page: \S+\.md \d+\.\d s", built_site.log), built_site.log[-2000:]
    table = yaml.safe_load((root / "artifacts" / "fence-times.json").read_text(encoding="utf-8"))
    articles = sorted(p.relative_to(root / "docs").as_posix() for p in (root / "docs" / "articles").glob("*.md"))
    articles.remove("articles/index.md")
    missing = [a for a in articles if a not in table]
    assert not missing, f"no fence time for {missing}"
    assert all(table[a]["fences"] > 0 and table[a]["seconds"] > 0 for a in articles)
