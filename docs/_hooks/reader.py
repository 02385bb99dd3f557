"""MkDocs hook: what a reader gets around every article page, built from the page itself.

For each article page (a page under ``articles/`` whose front matter names its ``article``):

* a line under the title with the original Chinese title, links to the article and its
  sequels, and buttons for the **notebook**, the **page source** and the **API** page;
* a generated Jupyter notebook ``articles/<slug>/<slug>.ipynb``: the page's prose as Markdown
  cells and its executed fences, in order, as code cells (HTML / Markdown output is shown
  with ``IPython.display``), so it runs top to bottom in a fresh kernel with ``kexue`` installed;
* the Markdown source of the page as ``articles/<slug>/<slug>.md.txt``;
* a **Cite** section with BibTeX for the original article and for the page;
* a card in the home-page gallery (``<div class="kx-gallery"></div>`` in ``index.md``): a small
  thumbnail file of the page's first executed figure (made by the figures hook), both titles,
  the summary and the tally of the verdicts of its *Claims vs reproduction* table;
* search: the page ranks above its API page for the same words (a search boost), and its
  ``description`` meta tag (and Open Graph tags, ``overrides/main.html``) is its summary.

The tally is read from the machine-readable copy of the claims table that
``kexue.experiments.claims.claims_table`` prints into the page
(``<script type="application/json" class="kx-claims">``), never from the rendered table.
An article page without it, or with a verdict outside the five allowed words, logs a
warning, which fails the strict build.
"""

from __future__ import annotations

import html
import json
import logging
import posixpath
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import nbformat
from mkdocs.structure.files import File
from mkdocs.utils import get_relative_url
from mkdocs.utils.meta import get_data

from kexue._docs import expand_snippets, library_excerpt, scan_fences
from kexue.experiments.claims import VERDICTS

log = logging.getLogger("mkdocs.hooks.reader")

ROOT = Path(__file__).resolve().parents[2]
_CLAIMS_DATA = re.compile(r'<script type="application/json" class="kx-claims">(.*?)</script>', re.DOTALL)
GALLERY_MARK = '<div class="kx-gallery"></div>'
CLAIMS_MARK = '<div class="kx-claims"></div>'
REQUIRED_META = ("title", "zh_title", "article", "article_date", "summary", "module")
# Optional front matter: ``sequels`` (list of URLs) and ``zh_keywords`` (Chinese search terms
# shown in the header line, so a reader searching in Chinese finds the page).


@dataclass
class Card:
    """What the home-page gallery shows for one article page."""

    url: str
    title: str
    zh_title: str
    summary: str
    thumbnail: tuple[str, int, int] | None  # (site-relative file, width, height) or None
    verdicts: dict[str, int]


class _State:
    """Everything the hook remembers during one build (reset in ``on_pre_build``)."""

    def __init__(self) -> None:
        self.cards: dict[str, Card] = {}
        self.order: list[str] = []
        self.files = None
        self.articles: dict[str, tuple[str, str]] = {}  # src_uri -> (raw Markdown, page address)


_state = _State()


def _slug(src_uri: str) -> str:
    return Path(src_uri).stem


def _is_article(src_uri: str, meta: dict) -> bool:
    return src_uri.startswith("articles/") and src_uri != "articles/index.md" and "article" in meta


# ---------------------------------------------------------------- notebook


def _markdown_cell(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def _code_cell(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(text.strip("\n"))


_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
_FIGURE = re.compile(r'<figure class="kexue-figure">(?P<body>.*?)(?:<figcaption>(?P<cap>.*?)</figcaption>)?</figure>', re.DOTALL)


_CODE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)


def absolute_links(text: str, resolve) -> str:
    """Rewrite the Markdown links of ``text`` with ``resolve(target) -> str`` (absolute addresses).

    Fenced code blocks are left as they are: ``table[name](x)`` in an excerpt is an indexing, not a
    link. (Code spans are not: a link's text is often one, as in ``[`f`](../api/x.md#f)``.)"""

    def links(part: str) -> str:
        return _LINK.sub(lambda m: f"[{m['text']}]({resolve(m['target'])}{m['title'] or ''})", part)

    out, last = [], 0
    for code in _CODE.finditer(text):
        out += [links(text[last : code.start()]), code.group(0)]
        last = code.end()
    return "".join([*out, links(text[last:])])


def _outputs(printed: str, kind: str) -> list[nbformat.NotebookNode]:
    """What a fence printed on the page, as notebook outputs of the same kind.

    ``kind`` is ``text`` (shown as a code block on the page), ``markdown`` or ``html``. Figures in
    HTML output become images (SVG or PNG) with their caption, so GitHub and nbviewer show them.
    """
    if not printed.strip():
        return []
    if kind == "text":
        return [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    if kind == "markdown":
        return [nbformat.v4.new_output("display_data", data={"text/markdown": printed, "text/plain": printed})]
    out: list[nbformat.NotebookNode] = []
    rest, last = [], 0
    for m in _FIGURE.finditer(printed):
        rest.append(printed[last : m.start()])
        last = m.end()
        caption = html.unescape(m["cap"] or "")
        body = m["body"]
        png = re.search(r'src="data:image/png;base64,([^"]+)"', body)
        data = {"image/png": png[1]} if png else {"image/svg+xml": body}
        data["text/plain"] = caption or "figure"
        out.append(nbformat.v4.new_output("display_data", data=data))
        if caption:
            out.append(nbformat.v4.new_output("display_data", data={"text/markdown": f"*{caption}*",
                                                                     "text/plain": caption}))
    rest.append(printed[last:])
    other = "".join(rest).strip()
    if other:
        out.append(nbformat.v4.new_output("display_data", data={"text/html": other, "text/plain": other}))
    return out


def install_cell(wheel_url: str) -> str:
    """The notebook's first code cell: install kexue from the site's wheel unless it is importable."""
    return (
        "# Install kexue unless this environment already has it: the wheel this site ships.\n"
        "import importlib.util\nimport subprocess\nimport sys\n\n"
        'if importlib.util.find_spec("kexue") is None:\n'
        f'    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "{wheel_url}"])'
    )


def notebook_from_markdown(
    markdown: str,
    meta: dict,
    page_url: str,
    *,
    outputs: dict[int, str] | None = None,
    resolve=None,
    wheel_url: str | None = None,
) -> nbformat.NotebookNode:
    """Turn an article page's Markdown into an nbformat-4 notebook that stands on its own.

    * The first cell names the hosted page and the original article; when ``wheel_url`` is
      given, the first code cell installs kexue from it (skipped when kexue is importable).
    * Executed fences become code cells in page order, their code as the page shows and runs it
      (hidden-line markers removed, the lines kept: later cells may need what they define). Each
      carries what the fence printed in the build (``outputs``: body line of the fence -> text),
      as a stream, Markdown or HTML output, figures as images.
    * Other fences become Markdown code blocks (snippet includes expanded, library excerpts as the page
      shows them: file named, docstrings folded); prose becomes
      Markdown cells whose links are made absolute with ``resolve`` (site pages and anchors).
    """
    outputs = outputs or {}
    resolve = resolve or (lambda target: target)
    lines = markdown.split("\n")
    cells: list[nbformat.NotebookNode] = [
        _markdown_cell(
            f"# {meta.get('title', '')}\n\n"
            f"The runnable version of the kexue page [{meta.get('title', '')}]({page_url}), which explains "
            f"[《{meta.get('zh_title', '')}》]({meta.get('article', '')}) by Su Jianlin. The code cells are "
            "the page's executed blocks, in order, with the outputs they produced when the site was built; "
            "run them top to bottom to reproduce them"
            + (" (the first code cell installs `kexue` if needed)." if wheel_url else ".")
        )
    ]
    if wheel_url:
        cells.append(_code_cell(install_cell(wheel_url)))
    prose: list[str] = []
    i = 0
    fences = {f.line - 1: f for f in scan_fences(markdown)}
    title_dropped = False

    def flush() -> None:
        text = "\n".join(prose)
        if text.strip():
            cells.append(_markdown_cell(absolute_links(text, resolve)))
        prose.clear()

    count = 0
    while i < len(lines):
        fence = fences.get(i)
        if fence is None:
            if not title_dropped and lines[i].startswith("# "):
                title_dropped = True  # the first cell already carries the title
            else:
                prose.append(lines[i])
            i += 1
            continue
        end = i + 1 + fence.source.count("\n")  # the closing fence line
        if fence.executed:
            flush()
            code = re.sub(r"[ \t]*#\s*markdown-exec:\s*hide\s*$", "", fence.source, flags=re.MULTILINE).rstrip()
            html_out = fence.attrs.get("html", "").lower() in {"on", "true", "1", "yes"}
            kind = "html" if html_out else ("text" if fence.attrs.get("result") else "markdown")
            cell = _code_cell(code)
            count += 1
            cell.execution_count = count
            cell.outputs = _outputs(outputs.get(fence.line, ""), kind)
            cells.append(cell)
        else:
            excerpt = library_excerpt(fence.source, ROOT) if fence.lang in {"python", "py"} else None
            if excerpt is not None:  # as the page shows it: the file named, docstrings folded
                body = f"# {excerpt.path} (excerpt; the full docstrings are on the API page)\n{excerpt.code}"
            else:
                body = expand_snippets(fence.source, ROOT).rstrip("\n")
            prose.extend([f"```{fence.lang}", body, "```"])
        i = end + 1
    flush()
    nb = nbformat.v4.new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )
    return nb


def _with_cell_ids(nb: nbformat.NotebookNode, slug: str) -> nbformat.NotebookNode:
    """Give cells stable ids (nbformat's are random), so two builds write identical notebooks."""
    for n, cell in enumerate(nb.cells):
        cell["id"] = f"{slug}-{n}"
    nbformat.validate(nb)
    return nb


# ---------------------------------------------------------------- events


def on_pre_build(config) -> None:
    global _state
    _state = _State()


def on_files(files, config):
    """Add the Markdown source and the notebook of each article page to the site.

    The notebook is registered here (so that links to it are checked like any other) and written
    in ``on_post_build``, once the page's fences have run and their outputs are known.
    """
    _state.files = files
    for file in list(files.documentation_pages()):
        if not file.src_uri.startswith("articles/") or file.src_uri == "articles/index.md":
            continue
        raw = Path(file.abs_src_path).read_text(encoding="utf-8")
        _, meta = get_data(raw)
        if "article" not in meta:
            continue
        slug = _slug(file.src_uri)
        files.append(File.generated(config, f"articles/{slug}/{slug}.md.txt", content=raw))
        placeholder = nbformat.writes(nbformat.v4.new_notebook()) + "\n"
        files.append(File.generated(config, f"articles/{slug}/{slug}.ipynb", content=placeholder))
    return files


def _site_address(config, url: str) -> str:
    base = config.site_url or ""
    return base.rstrip("/") + "/" + url if base else url


def _resolver(config, files, src_uri: str, page_url: str):
    """Map a link target written in page ``src_uri`` to an absolute address on the hosted site."""

    def resolve(target: str) -> str:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            return target  # already absolute (https:, mailto:, ...)
        path, _, anchor = target.partition("#")
        if not path:
            return f"{page_url}#{anchor}"
        src = posixpath.normpath(posixpath.join(posixpath.dirname(src_uri), path))
        file = files.get_file_from_path(src) if files is not None else None
        url = _site_address(config, file.url if file is not None else src)
        return f"{url}#{anchor}" if anchor else url

    return resolve


def wheel_name(version: str) -> str:
    """The file name of the wheel the site ships under ``dist/``."""
    return f"kexue-{version}-py3-none-any.whl"


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def on_post_build(config) -> None:
    """Write each article's notebook, with the outputs its fences printed in this build."""
    executor = getattr(config, "kexue_executor", None)
    wheel_url = _site_address(config, "dist/" + wheel_name(_version()))
    for src_uri, (raw, page_url) in _state.articles.items():
        body, meta = get_data(raw)
        offset = raw[: len(raw) - len(body)].count("\n") if raw.endswith(body) else 0
        printed = executor.outputs if executor is not None else {}
        outputs = {line - offset: text for (page, line), text in printed.items() if page == src_uri}
        slug = _slug(src_uri)
        nb = notebook_from_markdown(body, meta, page_url, outputs=outputs, wheel_url=wheel_url,
                                    resolve=_resolver(config, _state.files, src_uri, page_url))
        target = Path(config.site_dir) / "articles" / slug / f"{slug}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(nbformat.writes(_with_cell_ids(nb, slug)) + "\n", encoding="utf-8")


def on_nav(nav, config, files):
    _state.order = [p.file.src_uri for p in nav.pages]
    return nav


def _bibtex(meta: dict, slug: str, page_url: str) -> str:
    day = meta["article_date"]
    if isinstance(day, str):
        day = date.fromisoformat(day)
    number = str(meta["article"]).rstrip("/").rsplit("/", 1)[-1]
    original = (
        f"@online{{su{day.year}_{number},\n"
        f"  author       = {{Su, Jianlin}},\n"
        f"  title        = {{{meta['zh_title']}}},\n"
        f"  organization = {{Scientific Spaces (kexue.fm)}},\n"
        f"  year         = {{{day.year}}},\n"
        f"  month        = {{{day.month}}},\n"
        f"  day          = {{{day.day}}},\n"
        f"  url          = {{{meta['article']}}},\n"
        f"  language     = {{chinese}},\n"
        f"}}"
    )
    ours = (
        f"@misc{{kexue_{slug.replace('-', '_')},\n"
        f"  author       = {{{{kexue contributors}}}},\n"
        f"  title        = {{{{{meta['title']}}}: an English explanation and CPU reproduction}},\n"
        f"  howpublished = {{kexue documentation site, module \\texttt{{{meta['module']}}}}},\n"
        f"  url          = {{{page_url}}},\n"
        f"  note         = {{Explains and reproduces \\cite{{su{day.year}_{number}}}}},\n"
        f"}}"
    )
    return original, ours


_TAG = re.compile(r"</?[A-Za-z][^>]*>|\{[^}]*\}")
ARTICLE_BOOST = 2.0
"""Search boost of article pages: a topic word finds the article before its API page."""


def _plain(markdown_text: str) -> str:
    """Markdown prose as plain text: links reduced to their text, code spans kept, markup dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", markdown_text)
    parts = text.split("`")
    parts = [p if i % 2 else re.sub(r"[*_]|\$+", "", _TAG.sub("", p)) for i, p in enumerate(parts)]
    return " ".join("".join(parts).split())


def describe(markdown: str, limit: int = 200) -> str:
    """A one-sentence description of a page for its ``description`` and ``og:description`` tags.

    The page's first paragraph of prose, or for an API page without prose (``::: kexue.x``) the
    module docstring's summary; cut at a word boundary to ``limit`` characters.
    """
    fences = {i for f in scan_fences(markdown) for i in range(f.line - 1, f.line + f.source.count("\n") + 1)}
    paragraph: list[str] = []
    for i, line in enumerate(markdown.split("\n")):
        text = line.strip()
        skip = i in fences or text.startswith(("#", "<", "|", "- ", "* ", ":::", "!!!", "???", "    "))
        if not text or (skip and not paragraph):
            if paragraph:
                break
            continue
        paragraph.append(text)
    text = _plain(" ".join(paragraph))
    module = re.search(r"^:::\s*(kexue[\w.]*)", markdown, re.MULTILINE)
    if not text and module:
        import importlib

        doc = (importlib.import_module(module[1]).__doc__ or "").strip()
        text = _plain(doc.split("\n\n", 1)[0])
    if len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0] + "…"
    return text


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Describe every page; add the header line, the download buttons and the Cite section to an article page."""
    meta = page.meta
    if not meta.get("description"):
        summary = meta.get("summary") if _is_article(page.file.src_uri, meta) else None
        text = str(summary) if summary else (describe(markdown) or config.site_description)
        meta["description"] = html.escape(text, quote=True)  # Material prints it into an attribute as it is
    if not _is_article(page.file.src_uri, meta):
        return markdown
    meta.setdefault("search", {}).setdefault("boost", ARTICLE_BOOST)
    missing = [k for k in REQUIRED_META if not meta.get(k)]
    if missing:
        log.warning(f"{page.file.src_uri}: front matter lacks {', '.join(missing)}")
        return markdown
    slug = _slug(page.file.src_uri)
    _state.articles[page.file.src_uri] = (page.file.content_string, _site_address(config, page.url))
    topic = str(meta["module"]).rsplit(".", 1)[-1]
    sequels = meta.get("sequels") or []
    links = [f"[kexue.fm/archives/{str(meta['article']).rstrip('/').rsplit('/', 1)[-1]}]({meta['article']})"]
    links += [f"sequel [kexue.fm/archives/{str(s).rstrip('/').rsplit('/', 1)[-1]}]({s})" for s in sequels]
    zh = meta.get("zh_keywords") or []
    keywords = f' · <span lang="zh">关键词：{"、".join(html.escape(str(k)) for k in zh)}</span>' if zh else ""
    # The original's title and links: written by the page itself right under its title (it can say
    # more, e.g. what a sequel adds), or generated here when the page does not mention it.
    joined = " · ".join(links)
    origin = "" if meta["zh_title"] in markdown else (
        f'<span lang="zh">《{meta["zh_title"]}》</span> — Su Jianlin, {meta["article_date"]}, {joined}'
    )
    first_line = " · ".join(x for x in (origin, keywords.removeprefix(" · ")) if x)
    header = (
        '<div class="kx-meta" markdown>\n'
        + (f"{first_line}\n\n" if first_line else "")
        + f'[Download notebook]({slug}/{slug}.ipynb){{ .md-button .kx-notebook download="{slug}.ipynb" }}'
        f" [Page source]({slug}/{slug}.md.txt){{ .md-button }}"
        f" [API: `{meta['module']}`](../api/{topic}.md){{ .md-button }}\n"
        "</div>\n"
    )
    lines = markdown.split("\n")
    fence_lines = {i for f in scan_fences(markdown) for i in range(f.line - 1, f.line + f.source.count("\n") + 1)}
    headings = [i for i, line in enumerate(lines) if line.startswith("#") and i not in fence_lines]
    title = next((i for i in headings if lines[i].startswith("# ")), -1)
    # Under the title and whatever the page writes before its first section.
    at = next((i for i in headings if i > title and lines[i].startswith("## ")), title + 1)
    lines.insert(at, header)
    original, ours = _bibtex(meta, slug, _site_address(config, page.url))
    cite = (
        "\n\n## Cite\n\n"
        "If you use the ideas, cite the original article; if you use this page's code or numbers, cite the page "
        f"as well. The notebook of this page is [{slug}.ipynb]({slug}/{slug}.ipynb).\n\n"
        f"```bibtex\n{original}\n```\n\n```bibtex\n{ours}\n```\n"
    )
    return "\n".join(lines) + cite


def claims_tally(html_text: str, where: str) -> dict[str, int]:
    """Count the verdicts of the page's ``kx-claims`` data; warn (strict: fail) when it is missing or wrong."""
    tally = dict.fromkeys(VERDICTS, 0)
    blocks = _CLAIMS_DATA.findall(html_text)
    if len(blocks) != 1:
        log.warning(
            f"{where}: expected one kx-claims data block (printed by kexue.experiments.claims.claims_table), "
            f"found {len(blocks)}"
        )
        return tally
    try:
        data = json.loads(blocks[0])
        claims = data["claims"]
    except (ValueError, KeyError, TypeError) as error:
        log.warning(f"{where}: kx-claims data is not valid JSON with a 'claims' list: {error}")
        return tally
    if data.get("page") != _slug(where):
        log.warning(f"{where}: kx-claims data names page {data.get('page')!r}, expected {_slug(where)!r}")
    for row in claims:
        word = row.get("verdict") if isinstance(row, dict) else None
        if word not in tally:
            log.warning(f"{where}: claims verdict {word!r} is not one of {VERDICTS}")
        else:
            tally[word] += 1
    if not claims:
        log.warning(f"{where}: the claims table has no rows")
    return tally


def on_page_content(html_text: str, page, config, files) -> str:
    """Collect the gallery card of an article page: thumbnail (from the figures hook) and verdict tally."""
    if not _is_article(page.file.src_uri, page.meta):
        return html_text
    where = page.file.src_uri
    thumb = getattr(page, "kexue_thumbnail", None)
    if thumb is None:
        log.warning(f"{where}: no figure printed by the page's code, so no gallery thumbnail")
    _state.cards[page.file.src_uri] = Card(
        url=page.url,
        title=str(page.meta["title"]),
        zh_title=str(page.meta["zh_title"]),
        summary=str(page.meta["summary"]),
        thumbnail=thumb,
        verdicts=claims_tally(html_text, where),
    )
    return html_text


def _card_html(card: Card, page_url: str) -> str:
    """One gallery card; the thumbnail is decorative (the card's text names the article)."""
    e = html.escape
    thumb = ""
    if card.thumbnail:
        uri, width, height = card.thumbnail
        src = e(get_relative_url(uri, page_url), quote=True)
        thumb = (f'<img class="kx-thumb" src="{src}" width="{width}" height="{height}" alt="" '
                 'loading="lazy" decoding="async">')
    tally = " · ".join(f"{n} {word}" for word, n in card.verdicts.items() if n)
    return (
        f'<a class="kx-card" href="{e(card.url)}">{thumb}'
        f'<span class="kx-card-title">{e(card.title)}</span>'
        f'<span class="kx-card-zh" lang="zh">{e(card.zh_title)}</span>'
        f'<span class="kx-card-summary">{e(card.summary)}</span>'
        f'<span class="kx-card-verdict">Claims: {e(tally) if tally else "none listed"}</span></a>'
    )


def _claims_table(cards: list[Card], base: str) -> str:
    """One row per article: how many of its claims got each verdict (links relative to ``base``)."""
    e = html.escape
    head = "".join(f"<th>{w}</th>" for w in VERDICTS)
    rows = "".join(
        f'<tr><td><a href="{e(base + c.url)}">{e(c.title)}</a></td>'
        + "".join(f"<td>{c.verdicts[w]}</td>" for w in VERDICTS)
        + "</tr>"
        for c in cards
    )
    totals = "".join(f"<td><strong>{sum(c.verdicts[w] for c in cards)}</strong></td>" for w in VERDICTS)
    # No class on the table itself: Material styles ``table:not([class])`` (borders, header band).
    return (
        f'<div class="kx-claims-summary"><table><thead><tr><th>article</th>{head}</tr></thead>'
        f"<tbody>{rows}<tr><td><strong>all pages</strong></td>{totals}</tr></tbody></table></div>"
    )


def on_post_page(output: str, page, config) -> str:
    """Fill the gallery (home) and the claims summary (article list) from the article pages, in nav order."""
    if GALLERY_MARK not in output and CLAIMS_MARK not in output:
        return output
    order = {uri: n for n, uri in enumerate(_state.order)}
    cards = [c for _, c in sorted(_state.cards.items(), key=lambda kv: order.get(kv[0], len(order)))]
    if GALLERY_MARK in output:
        gallery = (f'<div class="kx-gallery" data-cards="{len(cards)}">'
                   + "".join(_card_html(c, page.url) for c in cards) + "</div>")
        output = output.replace(GALLERY_MARK, gallery, 1)
    if CLAIMS_MARK in output:
        base = "../" * page.url.count("/")  # card URLs are relative to the site root
        output = output.replace(CLAIMS_MARK, _claims_table(cards, base), 1)
    return output
