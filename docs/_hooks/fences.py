"""MkDocs hook: run executed fences through kexue's own executor, name their page and line, time them.

* Every ``exec="on"`` fence without an ``id`` gets ``id="<page>:<line>"`` before markdown-exec
  sees it, so a failing fence is reported as
  ``Execution of python code block 'articles/x.md:40' exited with errors`` and its traceback
  names ``docs/articles/x.md`` with the page's own line numbers.
* markdown-exec's Python formatter is replaced, through its public API (the ``formatters``
  registry and ``base_format``), by one that runs the code with
  :class:`kexue._docs.FenceExecutor`, the same executor the pytest runner uses. A new executor
  is made for every build, so under ``mkdocs serve`` a rebuilt page never sees names from the
  previous build, and nothing of markdown-exec's private state is touched.
* Output cache (``KEXUE_FENCE_CACHE=<dir>``; ``make serve`` and ``make site`` set it, and the
  test suite points the strict build at the outputs its pytest run recorded). Keys and replay
  are described in ``FenceExecutor``; pages are identical cold and warm (tested). With a cache,
  a cold build starts the pages the cache lacks in worker processes, side by side
  (``kexue._docs.PageRun``, ``$KEXUE_FENCE_WORKERS``, default 2), builds the other pages
  meanwhile, and serves each of those pages from the cache once its worker is done.
* How a block looks says what it is. An executed block shows its code under a bar "ran in the
  build", and says "continues from above" with the names it takes from earlier blocks of the
  page (:func:`kexue._docs.free_names`), so a reader knows a copy of it alone will not run; what
  it printed follows in a ``kx-output`` box without a copy button. A display fence that only
  includes a section of the library (``--8<-- "kexue/x.py:name"``) becomes a *library excerpt*:
  the file name as its title, docstrings folded to their summary line (the full ones, with
  rendered math, are linked on the API page below it).
* Every fence is timed. After the build, the wall time of each page's fences is logged
  (``INFO``), and written as JSON to ``$KEXUE_FENCE_TIMES`` when that is set. Times are
  reported, never asserted.
"""

from __future__ import annotations

import html
import importlib
import json
import logging
import os
from pathlib import Path
from typing import ClassVar

import markdown_exec
from markupsafe import Markup

from kexue._docs import (
    FenceError,
    FenceExecutor,
    PageRun,
    fence_workers,
    free_names,
    library_excerpt,
    pages_to_run,
    scan_fences,
    shown_code,
)

os.environ.setdefault("MPLBACKEND", "Agg")

log = logging.getLogger("mkdocs.hooks.fences")
CACHE_ENV = "KEXUE_FENCE_CACHE"
TIMES_ENV = "KEXUE_FENCE_TIMES"
ROOT = Path(__file__).resolve().parents[2]


class _Build:
    """The executor of the build in progress (replaced in ``on_pre_build``), the worker run of the
    pages the cache lacks (``on_files``), the pages of it not yet collected, and the pages the
    workers ran (page -> (seconds, fences))."""

    executor = FenceExecutor(ROOT)
    page_run: ClassVar[PageRun | None] = None
    waiting: ClassVar[set[str]] = set()
    ran_apart: ClassVar[dict[str, tuple[float, int]]] = {}


def _collect(page: str) -> None:
    """Before a page's first fence: wait for its worker, or take the page back if none started it."""
    run = _Build.page_run
    if run is None or page not in _Build.waiting:
        return
    _Build.waiting.discard(page)
    if run.claim(page):
        return  # no worker had started it: the build runs it now, as it would without workers
    result = run.result(page)
    if result.error is None:
        _Build.ran_apart[page] = (result.seconds, result.fences)
    else:
        log.info(f"{page}: the fence at line {result.failed_line} failed in its worker; the build runs the page again")


def _stop_workers(cancel: bool) -> None:
    if _Build.page_run is not None:
        _Build.page_run.close(cancel=cancel)
        _Build.page_run, _Build.waiting = None, set()


def _cache_dir(config) -> Path | None:
    where = os.environ.get(CACHE_ENV, "").strip()
    if not where or where.lower() in {"0", "off", "no", "false"}:
        return None
    directory = Path(where)
    if not directory.is_absolute():
        directory = Path(config.config_file_path).resolve().parent / directory
    return directory


def _run(code: str, returncode=None, session=None, id=None, **extra) -> str:
    """markdown-exec's ``run`` callback: execute one fence with the build's executor."""
    page, _, line = (id or "").rpartition(":")
    _collect(page)
    try:
        return _Build.executor.run(code, page=page or "unknown", line=int(line or 0), session=session or None)
    except FenceError as error:
        printed = f"\n\nIt printed before failing:\n{error.printed[-2000:]}" if error.printed else ""
        raise markdown_exec.ExecutionError(markdown_exec.code_block("python", error.traceback + printed)) from error


def run_label(code: str) -> str:
    """The title bar of an executed block: it ran in the build, and what it needs from above."""
    needs = sorted(free_names(code))
    if not needs:
        return "ran in the build · runs on its own"
    shown = ", ".join(needs[:4]) + (f" and {len(needs) - 4} more" if len(needs) > 4 else "")
    return f"ran in the build · continues from above (uses {shown})"


def _format_python(**kwargs) -> str:
    """markdown-exec's formatter for Python fences, with the block and its output told apart.

    The output is produced by markdown-exec's public ``base_format`` (without the source) and put
    in ``<div class="kx-output ... no-copy">`` (Material shows no copy button inside ``.no-copy``).
    The source, as markdown-exec would show it (hidden lines removed), is rendered above it with
    the class ``kx-run`` and a title bar from :func:`run_label`. Placements other than ``above``
    and ``below`` (tabs, console) are left to markdown-exec unchanged.
    """
    where = kwargs.get("source") or ""
    if where not in ("", "above", "below"):
        return markdown_exec.base_format(language="python", run=_run, **kwargs)
    kwargs["source"] = ""
    output = markdown_exec.base_format(language="python", run=_run, **kwargs)
    kind = "html" if kwargs.get("html") else ("text" if kwargs.get("result") else "markdown")
    parts = [f'<div class="kx-output kx-output-{kind} no-copy">{output}</div>'] if str(output).strip() else []
    if where:
        code = shown_code(kwargs["code"])
        label = html.escape(run_label(code), quote=True)
        block = f'````````{{.python .kx-run title="{label}"}}\n{code}\n````````'
        prefix = f"{kwargs['id']}-src-" if kwargs.get("id") else None
        source_html = markdown_exec.MarkdownConverter(kwargs["md"], update_toc=False).convert(block, id_prefix=prefix)
        parts.insert(0 if where == "above" else len(parts), str(source_html))
    return Markup(f'<div class="kx-exec">{"".join(parts)}</div>')


def _excerpt_block(fence, indent: str) -> list[str] | None:
    """The lines replacing a library-excerpt fence: titled code without docstrings, then API links."""
    excerpt = library_excerpt(fence.source, ROOT)
    if excerpt is None:
        return None
    lines = [f'{indent}```{{.python .kx-source title="{excerpt.path}"}}']
    lines += [indent + line if line else line for line in excerpt.code.split("\n")]
    lines.append(f"{indent}```")
    module = importlib.import_module(excerpt.module)
    documented = [n for n in excerpt.names if getattr(getattr(module, n, None), "__doc__", None)
                  and getattr(getattr(module, n), "__module__", None) == excerpt.module]
    if documented:
        links = ", ".join(f"[`{n}`][{excerpt.module}.{n}]" for n in documented)
        lines += ["", f"{indent}Full docstring{'s' if len(documented) > 1 else ''} on the API page: {links}.",
                  f"{indent}{{ .kx-source-docs }}"]
    return lines


def on_config(config):
    """Route markdown-exec's Python fences (``python`` and ``py``) through our executor."""
    markdown_exec.formatters["python"] = _format_python
    markdown_exec.formatters["py"] = _format_python
    return config


def on_pre_build(config) -> None:
    """Start every build with fresh session namespaces and the cache switched on or off.

    The executor is also put on ``config.kexue_executor``: the reader hook writes each fence's
    output into the page's notebook after the build.
    """
    _Build.executor = FenceExecutor(ROOT, _cache_dir(config), read=True)
    _Build.ran_apart = {}
    config.kexue_executor = _Build.executor


def on_files(files, config):
    """With a cache, start the pages it lacks in worker processes, side by side.

    The build goes on meanwhile (the pages without code, the API pages); when it reaches a page
    the workers have, it waits for that page and serves its fences from the cache, or runs the
    page itself if no worker has started it yet. A cold ``make site`` then costs about the longest
    chain of pages per worker instead of their sum, and the site is the same as one built in a
    single process. A page whose code fails in a worker is run again by the build, which reports
    it in full. ``$KEXUE_FENCE_WORKERS=1`` (or no cache) runs every page in the build.
    """
    executor, workers = _Build.executor, fence_workers()
    _stop_workers(cancel=True)  # a previous build of this process (mkdocs serve) that failed
    if executor.cache_dir is None or workers < 2:
        return files
    docs_dir = Path(config.docs_dir)
    pages = [f.src_uri for f in files.documentation_pages()]
    todo = pages_to_run(ROOT, docs_dir, pages, executor.cache_dir)
    if len(todo) < 2:
        return files
    log.info(f"running the code of {len(todo)} pages in {workers} worker processes")
    _Build.page_run, _Build.waiting = PageRun(ROOT, docs_dir, todo, executor.cache_dir, workers), set(todo)
    return files


def on_build_error(error) -> None:
    """Stop the page workers of a failed build (the pages already running finish first)."""
    _stop_workers(cancel=True)


def on_post_build(config) -> None:
    """Report how the cache did (tests read this line) and each page's fence time."""
    for page in sorted(_Build.waiting):  # pages no fence of the build reached: still wait for them
        _collect(page)
    _stop_workers(cancel=False)
    executor = _Build.executor
    if executor.cache_dir is not None:
        log.info(f"fence cache {executor.cache_dir}: {executor.hits} hits, {executor.misses} misses")
    times = executor.times()
    for page, (seconds, fences) in _Build.ran_apart.items():  # their cost in the worker, not the cache read
        times[page] = {"seconds": round(seconds, 3), "fences": fences}
    if times:
        ranked = sorted(times.items(), key=lambda kv: -kv[1]["seconds"])
        log.info("fence time per page" + (" (pages run in workers: under parallel load)" if _Build.ran_apart else "")
                 + ": " + ", ".join(f"{page} {row['seconds']:.1f} s" for page, row in ranked))
    target = os.environ.get(TIMES_ENV, "").strip()
    if target:
        Path(target).write_text(json.dumps(times, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Tag each executed fence of the page with an id naming the page and line."""
    raw = page.file.content_string
    # Front matter is stripped before this hook runs: count its lines so ids use file line numbers.
    offset = raw[: len(raw) - len(markdown)].count("\n") if raw.endswith(markdown) else 0
    lines = markdown.split("\n")
    fences = scan_fences(markdown)
    for fence in fences:
        if fence.executed and "id" not in fence.attrs:
            i = fence.line - 1
            lines[i] = f'{lines[i].rstrip()} id="{page.file.src_uri}:{fence.line + offset}"'
    # Library excerpts last and bottom-up: they change the line count, the ids above do not.
    for fence in reversed(fences):
        if fence.executed or fence.lang not in {"python", "py"}:
            continue
        i = fence.line - 1
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        block = _excerpt_block(fence, indent)
        if block is not None:
            lines[i : i + fence.source.count("\n") + 2] = block
    return "\n".join(lines)
