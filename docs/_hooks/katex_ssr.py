r"""MkDocs hook: render math with KaTeX at build time, and serve KaTeX's CSS and fonts locally.

``pymdownx.arithmatex`` (generic mode) leaves ``\(...\)`` and ``\[...\]`` inside
``<span|div class="arithmatex">``. After each page is rendered (and after the search
plugin has indexed its text, so the index keeps the TeX source) we send every
formula of the page to one ``node`` process running KaTeX, and splice the HTML
back in. A formula KaTeX cannot parse is logged as a warning naming the page, so
``mkdocs build --strict`` fails. No math JavaScript reaches the browser; the CSS
and fonts come from the pinned ``katex`` npm package and are copied into the site.
"""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.katex")

_MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">(?P<body>.*?)</(?P=tag)>',
    re.DOTALL,
)
_DELIMS = {"span": (r"\(", r"\)"), "div": (r"\[", r"\]")}


# This file lives at <project>/docs/_hooks/; resolve everything from here, not from the
# working directory or the config path, so builds from other directories still work.
_HERE = Path(__file__).resolve().parent
_PROJECT = _HERE.parents[1]


def _katex_dist() -> Path:
    dist = _PROJECT / "node_modules" / "katex" / "dist"
    if not (dist / "katex.min.css").is_file():
        raise RuntimeError(
            f"KaTeX assets not found at {dist}; run `npm ci` (the Makefile does this for you)."
        )
    return dist


def on_files(files: Files, config) -> Files:
    """Add KaTeX's stylesheet and fonts to the site as generated files."""
    dist = _katex_dist()
    paths = [dist / "katex.min.css", *sorted((dist / "fonts").glob("*.woff2"))]
    for path in paths:
        uri = "assets/katex/" + path.relative_to(dist).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def _render(items: list[dict]) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is required to render math at build time")
    script = _HERE / "katex_render.cjs"
    proc = subprocess.run(
        [node, str(script)],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        cwd=_PROJECT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"KaTeX renderer failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def _strip(body: str, tag: str) -> str:
    text = html.unescape(body).strip()
    left, right = _DELIMS[tag]
    if text.startswith(left) and text.endswith(right):
        text = text[len(left) : -len(right)]
    return text.strip()


def on_post_page(output: str, page, config) -> str:
    """Replace every arithmatex element of the page with KaTeX HTML."""
    matches = list(_MATH.finditer(output))
    if not matches:
        return output
    items = [{"tex": _strip(m["body"], m["tag"]), "display": m["tag"] == "div"} for m in matches]
    rendered = _render(items)
    parts: list[str] = []
    last = 0
    for match, item, result in zip(matches, items, rendered, strict=True):
        parts.append(output[last : match.start()])
        if "error" in result:
            log.warning(
                "KaTeX could not render a formula on page %s: %s\n  formula: %s",
                page.file.src_uri,
                result["error"],
                item["tex"],
            )
            parts.append(match.group(0))
        else:
            tag = match["tag"]
            parts.append(f'<{tag} class="arithmatex">{result["html"]}</{tag}>')
        last = match.end()
    parts.append(output[last:])
    return "".join(parts)
