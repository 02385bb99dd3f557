"""MkDocs hook: figures as separate files, zoomable, named by their caption; gallery thumbnails.

A fence prints a figure as self-contained HTML (``kexue.plot.figure_html``: an inline ``<svg>`` or
a base64 PNG ``<img>``), which is what a notebook or a test wants. On the site that HTML is
replaced, page by page, by

* a file under ``assets/figures/`` named by the hash of its bytes (``<hash>.svg`` or ``.png``):
  figures are downloaded only when scrolled to (``loading="lazy"``), cached across pages, and the
  page's HTML stays small (base64 barely compresses);
* an ``<img>`` whose accessible name is the figure's caption (``aria-labelledby`` pointing at the
  ``<figcaption>``; ``alt`` carries the same text for when the image cannot load);
* a link around it to the file: a click opens the figure enlarged in a dialog
  (``docs/assets/kexue.js``), or the file itself without JavaScript.

The first figure of an article page also gets a small thumbnail for the home-page gallery
(``page.kexue_thumbnail``): PNG figures are scaled down to ``THUMB_WIDTH`` pixels with a palette, SVG figures
(line plots, 3-12 KB gzipped) are used as they are. The figures of a page are listed on
``page.kexue_figures``.

This runs before the other hooks' ``on_page_content`` (priority 50), so the search index, the
gallery and the math renderer all see the page with its figures as files.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mkdocs.plugins import event_priority
from mkdocs.utils import get_relative_url

_FIGURE = re.compile(
    r'<figure class="kexue-figure">(?P<body>.*?)(?:<figcaption>(?P<cap>.*?)</figcaption>)?</figure>', re.DOTALL
)
_PNG = re.compile(r'<img class="kexue-png" alt="(?P<alt>[^"]*)" src="data:image/png;base64,(?P<data>[^"]+)">')
_SVG_SIZE = re.compile(r'<svg\b[^>]*?\bwidth="(?P<w>[\d.]+)(?P<wu>pt|px)?"[^>]*?\bheight="(?P<h>[\d.]+)(?P<hu>pt|px)?"')
FIGURE_DIR = "assets/figures"
THUMB_WIDTH = 480


@dataclass(frozen=True)
class Figure:
    """One figure of a page, as written to the site."""

    uri: str  # site-relative file path, e.g. assets/figures/1a2b3c4d5e6f.svg
    width: int  # intrinsic size in CSS pixels
    height: int
    caption: str  # plain text
    alt: str


class _Build:
    files: ClassVar[dict[str, bytes]] = {}


def on_pre_build(config) -> None:
    _Build.files = {}


def _store(data: bytes, suffix: str) -> str:
    uri = f"{FIGURE_DIR}/{hashlib.sha256(data).hexdigest()[:16]}.{suffix}"
    _Build.files[uri] = data
    return uri


def _png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk follows the 8-byte signature
    return width, height


def _svg_size(svg: str) -> tuple[int, int]:
    m = _SVG_SIZE.search(svg[:1000])
    if not m:
        return 640, 360
    scale_w = 4 / 3 if m["wu"] == "pt" else 1.0
    scale_h = 4 / 3 if m["hu"] == "pt" else 1.0
    return round(float(m["w"]) * scale_w), round(float(m["h"]) * scale_h)


def thumbnail(data: bytes, width: int = THUMB_WIDTH, colors: int = 128) -> bytes:
    """A PNG ``data`` scaled down to ``width`` pixels and reduced to a ``colors``-entry palette.

    A figure's transparent anti-aliased pixels make a full-colour PNG of 40-90 KB even at card
    size; a palette (alpha kept) brings it to 10-20 KB with no visible change at that size.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGBA")
        if small.width > width:
            small = small.resize((width, round(small.height * width / small.width)), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        small.quantize(colors=colors, method=Image.Quantize.FASTOCTREE).save(out, format="PNG", optimize=True)
        return out.getvalue()


def externalize(text: str, page_url: str, *, first_thumbnail: bool = False):
    """Replace the inline figures of a page's HTML by files; return ``(html, figures, thumbnail)``.

    ``thumbnail`` is ``(uri, width, height)`` of the first figure's gallery image when
    ``first_thumbnail`` is set, else None.
    """
    figures: list[Figure] = []
    thumb: tuple[str, int, int] | None = None

    def replace(m: re.Match) -> str:
        nonlocal thumb
        body, caption_html = m["body"].strip(), m["cap"] or ""
        caption = html.unescape(re.sub(r"<[^>]+>", "", caption_html)).strip()
        png = _PNG.fullmatch(body)
        if png:
            data = base64.b64decode(png["data"])
            uri, (width, height) = _store(data, "png"), _png_size(data)
            alt = html.unescape(png["alt"]) or caption
        elif body.startswith("<svg") and body.endswith("</svg>"):
            svg = body.replace(' role="img" class="kexue-svg"', "", 1)
            if "xmlns=" not in svg[:300]:
                svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
            data = svg.encode("utf-8")
            uri, (width, height) = _store(data, "svg"), _svg_size(svg)
            alt = caption
        else:
            return m.group(0)  # not a figure of kexue.plot: leave it alone
        n = len(figures) + 1
        figures.append(Figure(uri, width, height, caption, alt or "figure"))
        if first_thumbnail and thumb is None:
            if uri.endswith(".png"):
                small = thumbnail(data)
                thumb = (_store(small, "png"), *_png_size(small))
            else:
                thumb = (uri, width, height)
        src = html.escape(get_relative_url(uri, page_url), quote=True)
        cap_id = f"kx-fig-{n}-caption"
        label = f' aria-labelledby="{cap_id}"' if caption else ""
        img = (f'<img class="kx-figure-img" src="{src}" width="{width}" height="{height}" '
               f'alt="{html.escape(alt or "figure", quote=True)}"{label} loading="lazy" decoding="async">')
        cap = f'<figcaption id="{cap_id}">{caption_html}</figcaption>' if caption else ""
        return (f'<figure class="kexue-figure" id="kx-fig-{n}">'
                f'<a class="kx-zoom" href="{src}" title="Enlarge the figure">{img}</a>{cap}</figure>')

    return _FIGURE.sub(replace, text), figures, thumb


@event_priority(50)
def on_page_content(html_text: str, page, config, files) -> str:
    """Write the page's figures as files; keep them (and an article's thumbnail) on the page."""
    is_article = page.file.src_uri.startswith("articles/") and "article" in page.meta
    out, figures, thumb = externalize(html_text, page.url, first_thumbnail=is_article)
    page.kexue_figures = figures
    page.kexue_thumbnail = thumb
    return out


def on_post_build(config) -> None:
    """Write every figure and thumbnail of the build (content-addressed: identical ones once)."""
    site = Path(config.site_dir)
    for uri, data in _Build.files.items():
        path = site / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
