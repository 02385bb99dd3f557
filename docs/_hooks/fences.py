"""MkDocs hook: make executed fences report their page and line, and start every build fresh.

* Every ``exec="on"`` fence without an ``id`` gets ``id="<page>:<line>"`` before
  markdown-exec sees it, so a failing fence is reported as
  ``Execution of python code block 'articles/x.md:40' exited with errors`` and
  its traceback names ``<code block: id articles/x.md:40>``.
* markdown-exec keeps session namespaces for the life of the process; under
  ``mkdocs serve`` that would let a rebuilt page see names from the previous
  build. We clear them at the start of each build so serve behaves like a cold build.
"""

from __future__ import annotations

import os

from kexue._docs import scan_fences

os.environ.setdefault("MPLBACKEND", "Agg")


def on_pre_build(config) -> None:
    """Forget markdown-exec's session namespaces from any previous build in this process."""
    try:
        from markdown_exec._internal.formatters import python as mx_python
    except ImportError:  # pragma: no cover - layout of a future markdown-exec
        return
    mx_python._sessions_globals.clear()
    mx_python._sessions_counter.clear()
    mx_python._code_blocks.clear()


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Tag each executed fence of the page with an id naming the page and line."""
    raw = page.file.content_string
    # Front matter is stripped before this hook runs: count its lines so ids use file line numbers.
    offset = raw[: len(raw) - len(markdown)].count("\n") if raw.endswith(markdown) else 0
    lines = markdown.split("\n")
    for fence in scan_fences(markdown):
        if fence.executed and "id" not in fence.attrs:
            i = fence.line - 1
            lines[i] = f'{lines[i].rstrip()} id="{page.file.src_uri}:{fence.line + offset}"'
    return "\n".join(lines)
