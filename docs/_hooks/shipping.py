"""MkDocs hook: what the built site ships besides its pages.

* Material's ``offline`` plugin (``KEXUE_OFFLINE=true``, used by ``make site-offline``) makes the
  site browsable from ``file://``: ``.html`` links instead of directory URLs and the search
  index inlined as a script. For search it also adds a polyfill that runs the search worker in
  an iframe, loaded from unpkg.com. We serve that polyfill from the pinned ``iframe-worker`` npm
  package instead, so the offline copy, too, makes zero requests outside itself.
* ``KEXUE_OFFLINE_ZIP=<path>`` (the Pages workflow passes the zip ``make site-offline`` made)
  adds the zip to the site as ``kexue-offline.zip`` and fills the home page's
  ``<div class="kx-offline"></div>`` with a download link; without it the marker is removed.
* The wheel of the ``kexue`` package as built from this source, under ``dist/`` (the notebooks
  of the pages install it from there). It is built with pip and the installed setuptools (no
  network) and reused from ``.cache/wheel/`` while the package source is unchanged.
* ``assets/kexue-card.png``: the logo (``docs/assets/favicon.svg``) as a 512-pixel PNG for the
  pages' ``og:image`` tag (link previews need a raster image), drawn with matplotlib from the
  same geometry, so no binary file is kept in the repository.
* Material's JavaScript source maps (``*.js.map``, about 2 MB, for debugging Material itself) are
  left out of the site, together with the ``sourceMappingURL`` comments that point at them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mkdocs.structure.files import File

_PROJECT = Path(__file__).resolve().parents[2]
SHIM = "assets/javascripts/iframe-worker-shim.js"
CARD = "assets/kexue-card.png"
ZIP = "kexue-offline.zip"
MARK = '<div class="kx-offline"></div>'


def _zip() -> Path | None:
    where = os.environ.get("KEXUE_OFFLINE_ZIP", "").strip()
    if not where:
        return None
    path = Path(where)
    if not path.is_absolute():
        path = _PROJECT / path
    if not path.is_file():
        raise FileNotFoundError(f"KEXUE_OFFLINE_ZIP names {path}, which does not exist; run `make site-offline` first")
    return path


def on_config(config):
    """Replace the offline plugin's unpkg polyfill by the local copy."""
    polyfills = [str(p) for p in config.extra.get("polyfills", [])]
    if any("iframe-worker" in p for p in polyfills):
        config.extra["polyfills"] = [p for p in polyfills if "iframe-worker" not in p] + [SHIM]
    return config


def on_files(files, config):
    """Add the polyfill (offline build) and the offline zip (hosted build) to the site."""
    if SHIM in config.extra.get("polyfills", []):
        shim = _PROJECT / "node_modules" / "iframe-worker" / "shim" / "index.js"
        if not shim.is_file():
            raise FileNotFoundError(f"{shim} is missing; run `npm ci` (the Makefile does this for you)")
        files.append(File.generated(config, SHIM, abs_src_path=str(shim)))
    archive = _zip()
    if archive is not None:
        files.append(File.generated(config, ZIP, abs_src_path=str(archive)))
    files.append(File.generated(config, CARD, content=card_png()))
    return files


def card_png(size: int = 512) -> bytes:
    """The logo of ``docs/assets/favicon.svg`` (24-unit grid) as a square PNG, byte-for-byte stable."""
    import io
    import math

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Arc, Circle, FancyBboxPatch

    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 24)
    ax.set_ylim(24, 0)
    ax.set_axis_off()
    width = 1.5 * size / 24 * 0.72  # points per grid unit at this size
    ax.add_patch(FancyBboxPatch((0, 0), 24, 24, boxstyle="round,pad=0,rounding_size=5", color="#3f51b5"))
    ax.add_patch(Circle((12, 12), 8, fill=False, edgecolor="white", linewidth=width))
    tip = (12 + 8 * math.cos(math.radians(50)), 12 - 8 * math.sin(math.radians(50)))
    ax.plot([12, tip[0]], [12, tip[1]], color="white", linewidth=width, solid_capstyle="round")
    ax.add_patch(Arc((12, 12), 8.4, 8.4, theta1=-50, theta2=0, edgecolor="white", linewidth=width * 0.78))
    ax.add_patch(Circle(tip, 1.8, color="white"))
    out = io.BytesIO()
    fig.savefig(out, format="png", transparent=True, metadata={"Software": None})
    return out.getvalue()


def on_post_page(output: str, page, config) -> str:
    """Fill or drop the home page's offline-copy marker."""
    if MARK not in output:
        return output
    link = ""
    if _zip() is not None:
        size = _zip().stat().st_size / 1e6
        link = (
            f'<p class="kx-offline"><a href="{ZIP}" download>Download the whole site for offline reading</a> '
            f"({size:.0f} MB zip: unpack it and open <code>kexue/index.html</code>; search and navigation "
            "work without a network).</p>"
        )
    return output.replace(MARK, link, 1)


def _wheel() -> Path:
    """The wheel of the current source: from ``.cache/wheel/<hash of the source>/`` or built now."""
    sources = [_PROJECT / "pyproject.toml", _PROJECT / "README.md", _PROJECT / "LICENSE",
               *sorted(p for p in (_PROJECT / "kexue").rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
    h = hashlib.sha256()
    for path in sources:
        h.update(path.relative_to(_PROJECT).as_posix().encode())
        h.update(path.read_bytes())
    cache = _PROJECT / ".cache" / "wheel" / h.hexdigest()[:16]
    built = sorted(cache.glob("kexue-*.whl"))
    if built:
        return built[0]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", tmp,
             str(_PROJECT)],
            capture_output=True, text=True, check=False,
        )
        wheels = sorted(Path(tmp).glob("kexue-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"building the kexue wheel failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        cache.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(wheels[0], cache / wheels[0].name))


def on_post_build(config) -> None:
    """Ship the wheel under ``dist/``; drop Material's source maps and the comments that reference them."""
    wheel = _wheel()
    dist = Path(config.site_dir) / "dist"
    dist.mkdir(exist_ok=True)
    shutil.copy2(wheel, dist / wheel.name)
    scripts = Path(config.site_dir) / "assets" / "javascripts"
    for source_map in scripts.rglob("*.js.map"):
        source_map.unlink()
    for script in scripts.rglob("*.js"):
        text = script.read_text(encoding="utf-8")
        stripped = re.sub(r"\n?//# sourceMappingURL=\S+\.map\s*$", "\n", text)
        if stripped != text:
            script.write_text(stripped, encoding="utf-8")
