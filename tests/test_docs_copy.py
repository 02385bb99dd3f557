"""Copied code runs: what a page's copy buttons give, in page order, runs in a fresh interpreter.

The code is read from the built HTML, exactly the text the copy button of each executed block
copies (the ``<code>`` of the block; markdown-exec has already dropped hidden lines), not from
the Markdown. Three checks:

* every executed block says whether it runs on its own or continues from the blocks above, and
  which names it takes from them;
* statically, on every page: each copied block finds every name it uses in itself or in the
  copied blocks above it (a name defined only by a block whose code the page does not show, or
  by a hidden line, would break a reader's copy);
* statically, on every article: the copied blocks are, one for one, the code cells of the page's
  notebook (after its install cell), so running a notebook runs exactly what a reader copies;
* dynamically, in a fresh ``python`` process: the copied blocks of About, concatenated in page
  order, run top to bottom, and figures are shown (``kexue.plot.show``), not printed as HTML.
  The copied code of the article page whose code is cheapest runs in
  ``tests/test_release.py::test_a_site_notebook_runs_against_the_wheel_the_site_ships``, in a
  fresh kernel against the wheel, with the same check on figures (running it here as well cost
  about 19 s alone and 67-102 s in two runs of ``make test``, beside the browser test).
  ``KEXUE_COPY_ALL=1`` runs every page here (slow: each page's code again).
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kexue._docs import defined_names, free_names

pytestmark = pytest.mark.site

_BLOCK = re.compile(
    r'<div class="language-python kx-run highlight"><span class="filename">(?P<label>[^<]*)</span>'
    r"<pre>.*?<code>(?P<code>.*?)</code></pre>",
    re.DOTALL,
)


def copied_blocks(page_html: str) -> list[tuple[str, str]]:
    """``(title bar, copied code)`` of every executed block of a built page, in page order."""
    return [(html.unescape(m["label"]), html.unescape(re.sub(r"<[^>]+>", "", m["code"])))
            for m in _BLOCK.finditer(page_html)]


def prints_figure_html(text: str) -> bool:
    """Whether printed text holds a figure as HTML (an inline SVG or a PNG data URL): copied code
    must show figures with ``kexue.plot.show``, which prints HTML only inside the build."""
    return "<svg" in text or "data:image/png;base64" in text


def _pages(site: Path) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for path in sorted(site.rglob("index.html")):
        blocks = copied_blocks(path.read_text(encoding="utf-8"))
        if blocks:
            out[path.parent.relative_to(site).as_posix() or "."] = blocks
    return out


@pytest.fixture(scope="module")
def pages(built_site) -> dict[str, list[tuple[str, str]]]:
    assert built_site.returncode == 0, "the site did not build; see test_site.py"
    found = _pages(built_site.site)
    assert "about" in found, "the About page shows no executed block"
    return found


def test_every_executed_block_says_whether_it_continues_from_above(pages):
    wrong = []
    for page, blocks in pages.items():
        for n, (label, code) in enumerate(blocks, 1):
            needs = sorted(free_names(code))
            if needs:
                ok = "continues from above" in label and all(name in label for name in needs[:4])
            else:
                ok = "runs on its own" in label
            if not ok:
                wrong.append(f"{page} block {n}: says {label!r}, uses {needs} from above")
    assert not wrong, "\n".join(wrong[:20])


def test_copied_blocks_find_their_names_in_the_blocks_above(pages):
    missing = []
    for page, blocks in pages.items():
        defined: set[str] = set()
        for n, (_, code) in enumerate(blocks, 1):
            lacking = free_names(code) - defined
            if lacking:
                missing.append(f"{page} block {n} uses {sorted(lacking)}, which no block shown above it defines")
            defined |= defined_names(code)
    assert not missing, "\n".join(missing[:20])


def test_copied_blocks_are_the_notebook_cells(built_site, pages):
    """The notebook of every article holds the copied blocks, in order: the notebook run of
    tests/test_release.py runs a reader's copy of that page."""
    differ = []
    for page, blocks in pages.items():
        if not page.startswith("articles/"):
            continue
        slug = page.split("/", 1)[1]
        nb = json.loads((built_site.site / page / f"{slug}.ipynb").read_text(encoding="utf-8"))
        cells = ["".join(c["source"]).rstrip() for c in nb["cells"] if c["cell_type"] == "code"][1:]
        if [code.rstrip() for _, code in blocks] != cells:
            differ.append(page)
    assert not differ, f"copied blocks differ from the notebook's code cells on {differ}"


def test_copied_pages_run_top_to_bottom_in_a_fresh_interpreter(pages, root: Path, tmp_path: Path):
    chosen = sorted(pages) if os.environ.get("KEXUE_COPY_ALL") else ["about"]
    env = {k: v for k, v in os.environ.items() if k != "KEXUE_FIGURES"}
    env["MPLBACKEND"] = "Agg"
    failures = []
    for page in chosen:
        script = tmp_path / (page.replace("/", "_") + ".py")
        script.write_text("\n\n".join(code for _, code in pages[page]), encoding="utf-8")
        proc = subprocess.run([sys.executable, str(script)], cwd=root, env=env, capture_output=True, text=True,
                              timeout=900, check=False)
        if proc.returncode != 0:
            failures.append(f"{page}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
        elif prints_figure_html(proc.stdout):
            failures.append(f"{page}: a copied block prints a figure as HTML (use kexue.plot.show)")
    assert not failures, "\n\n".join(failures)
