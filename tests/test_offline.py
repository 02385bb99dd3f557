"""The offline copy (``make site-offline``): browsable and searchable from file://, nothing external.

Built from the fence outputs this test session recorded (no page code runs again), with
Material's offline plugin on; then opened from disk in headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from kexue._pytest_docs import RECORD_ENV
from tests.conftest import ROOT, mkdocs_build
from tests.test_browser import _chromium

pytestmark = pytest.mark.site


@pytest.fixture(scope="module")
def offline(tmp_path_factory, built_site) -> Path:
    tmp = tmp_path_factory.mktemp("offline")
    cache = Path(os.environ.get(RECORD_ENV) or built_site.site.parent / "fence-cache")
    build = mkdocs_build(ROOT / "mkdocs.yml", tmp / "kexue", fence_cache=cache, extra_env={"KEXUE_OFFLINE": "true"})
    assert build.returncode == 0, build.log[-3000:]
    return tmp / "kexue"


def test_offline_copy_links_files_and_inlines_the_search_index(offline: Path):
    home = (offline / "index.html").read_text(encoding="utf-8")
    assert 'href="articles/index.html"' in home
    assert (offline / "search" / "search_index.js").is_file()
    assert (offline / "assets" / "javascripts" / "iframe-worker-shim.js").is_file()
    external = []
    for page in offline.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        external += [f"{page.name}: {u}" for u in re.findall(r'<script[^>]+src="((?:https?:)?//[^"]+)"', text)]
        external += [f"{page.name}: {u}" for u in re.findall(r'<link[^>]+href="((?:https?:)?//[^"]+)"[^>]*stylesheet', text)]
    assert not external, external[:10]


def test_offline_copy_navigates_and_searches_from_file_urls(offline: Path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found and none could be installed (see scripts/ensure-chromium.sh)")
    proc = subprocess.run(["node", str(ROOT / "tests" / "browser" / "offline.mjs"), exe, str(offline / "index.html")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["external"] == [] and report["pageErrors"] == [], report
    assert report["navigatedTo"] == "articles/index.html", report
    assert any("articles/hsic.html" in h for h in report["search"]["hits"]), report["search"]
