"""The whole site builds strictly, contains what the nav promises, and references nothing external."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kexue._docs import scan_fences
from kexue._pytest_docs import RECORD_ENV, page_times
from tests.conftest import mkdocs_yml

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
    nav = mkdocs_yml()["nav"]
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
    figure = re.search(r'<figure class="kexue-figure" id="kx-fig-1"><a class="kx-zoom" href="\.\./(assets/figures/\w+\.svg)"',
                       about)
    assert figure and (built_site.site / figure[1]).is_file()


def test_home_page_is_light(built_site):
    """The gallery's thumbnails are separate files: the home page itself stays small (gzip, as hosts serve it)."""
    import gzip

    home = (built_site.site / "index.html").read_bytes()
    assert b"data:image" not in home
    assert len(gzip.compress(home, 9)) < 150_000


def _executed_pages(root: Path) -> set[str]:
    docs = root / "docs"
    return {
        p.relative_to(docs).as_posix()
        for p in docs.rglob("*.md")
        if "_hooks" not in p.parts and any(f.executed for f in scan_fences(p.read_text(encoding="utf-8")))
    }


def test_strict_build_reuses_the_outputs_pytest_recorded(built_site, root: Path):
    """Page code runs once per test session: the build serves every fence pytest already ran."""
    ran = set(page_times())
    m = re.search(r"fence cache .*: (\d+) hits, (\d+) misses", built_site.log)
    assert m, built_site.log[-2000:]
    hits, misses = int(m[1]), int(m[2])
    if not _executed_pages(root) <= ran:
        pytest.skip(f"this session ran the fences of {len(ran)} pages only; the build ran the rest ({misses} misses)")
    assert misses == 0 and hits == sum(row["fences"] for row in page_times().values()), built_site.log[-2000:]


def test_recorded_outputs_equal_a_cold_run_in_a_fresh_process(built_site, root: Path, tmp_path: Path):
    """What the build shows (recorded by this pytest session, in its page workers or, with
    ``KEXUE_FENCE_WORKERS=1``, in its own process after other tests) is byte for byte what a
    fresh process computes: checked on About, Performance and the cheapest article page."""
    times = page_times()
    articles = sorted((p for p in times if p.startswith("articles/")), key=lambda p: times[p]["seconds"])
    pages = ["about.md", "performance.md", *articles[:1]]
    cache = Path(os.environ.get(RECORD_ENV) or built_site.site.parent / "fence-cache")
    fresh = tmp_path / "fresh"
    script = (
        "import sys; from pathlib import Path\n"
        "from kexue._docs import FenceExecutor, scan_fences\n"
        "root = Path(sys.argv[1]); run = FenceExecutor(root, Path(sys.argv[2]), read=False)\n"
        "for page in sys.argv[3:]:\n"
        "    for f in scan_fences((root / 'docs' / page).read_text(encoding='utf-8')):\n"
        "        if f.executed:\n"
        "            run.run(f.source, page=page, line=f.line, session=f.session)\n"
    )
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", script, str(root), str(fresh), *pages], cwd=root, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = sorted(fresh.rglob("*.out"))
    assert len(outputs) >= 5
    differ = [p.name for p in outputs if not (cache / p.parent.name / p.name).is_file()
              or (cache / p.parent.name / p.name).read_bytes() != p.read_bytes()]
    assert not differ, f"{len(differ)} of {len(outputs)} fence outputs of {pages} differ from a fresh process"


def test_fence_times_are_recorded_for_every_article(built_site, root: Path):
    """The build reports each page's fence time (a measurement for the log, not a speed assertion)."""
    assert re.search(r"fence time per page: \S+\.md \d+\.\d s", built_site.log), built_site.log[-2000:]
    table = yaml.safe_load((root / "artifacts" / "fence-times.json").read_text(encoding="utf-8"))
    articles = sorted(p.relative_to(root / "docs").as_posix() for p in (root / "docs" / "articles").glob("*.md"))
    articles.remove("articles/index.md")
    missing = [a for a in articles if a not in table]
    assert not missing, f"no fence time for {missing}"
    assert all(table[a]["fences"] > 0 and table[a]["seconds"] > 0 for a in articles)
