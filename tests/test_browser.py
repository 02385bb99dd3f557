"""Open the built site in headless Chromium: math typeset, figures drawn, console clean, nothing external.

Uses Debian's ``chromium`` (installed by ``make test`` through scripts/ensure-chromium.sh)
driven by ``playwright-core`` from npm. Every request to a host other than 127.0.0.1 is
intercepted, aborted and recorded, so the "zero external requests" claim is observed.
Screenshots of each page in the light and dark palette go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
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


@pytest.fixture(scope="module")
def served(built_site):
    assert built_site.returncode == 0, "the site did not build; see test_site.py"
    handler = functools.partial(_QuietHandler, directory=str(built_site.site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _pages(built_site.site)
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output readable
        pass


@pytest.fixture(scope="module")
def report(served, root: Path) -> dict:
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found and none could be installed (see scripts/ensure-chromium.sh)")
    base, pages = served
    shots = root / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["node", str(root / "tests" / "browser" / "smoke.mjs"), exe, base, str(shots), *pages],
        cwd=root,
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


def test_zero_requests_outside_127_0_0_1(report):
    assert report["external"] == []


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
