"""pytest plugin: run the site's executed fences with the same semantics as ``mkdocs build``.

pytest-markdown-docs collects every Python fence of every Markdown file and, left
alone, runs each in a fresh namespace. The build instead runs only ``exec="on"`` fences,
shares one namespace per ``session`` and captures ``print``. This plugin registers a default
runner that closes the gap by running every fence through the build's own executor,
``kexue._docs.FenceExecutor``:

* a fence without a true ``exec`` option is skipped (it is display-only on the site);
* fences with the same ``session`` on one page share a namespace and run in page order; if
  pytest selects a later fence alone (``-k``), the earlier fences of its session run first,
  so every fence sees what it would see in the build;
* a session name used on two pages is an error (markdown-exec would leak names between them
  on the site);
* ``print`` inside a fence writes to a buffer, as in the build; on failure the captured text
  is attached to the error;
* ``--8<--`` snippet lines are expanded from the project root before running;
* when ``$KEXUE_FENCE_RECORD`` names a directory, every fence's output is recorded there under
  the build cache's key, so the strict build of the same test session reads it instead of
  running the page code again (``tests/conftest.py`` sets this up);
* when the session selects executed fences of two or more pages and records them, the pages run
  in worker processes in the background (``kexue._docs.PageRun``; ``$KEXUE_FENCE_WORKERS``,
  default 2, ``1`` runs them here, as does ``--pdb``), each page whole in one worker, exactly
  as the build runs it. The fences' items move after the other tests and before the tests of the
  built site (fixture ``built_site``), so the unit tests run while the pages do; each fence's item
  then waits for its page and passes if its fence ran, or fails with the fence's traceback (a
  later fence of a failed page fails as not run).

Activated by ``pytest_plugins = ["kexue._pytest_docs"]`` in the root ``conftest.py``
(or ``-p kexue._pytest_docs``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# The one private import of the plugin: pytest-markdown-docs documents custom runners only in its
# source. Checked against the pinned 0.9.2; if a later version moves it, this line fails loudly.
from pytest_markdown_docs._runners import DefaultRunner, register_runner  # kexue: pinned private API

from kexue._docs import Fence, FenceError, FenceExecutor, PageRun, expand_snippets, fence_workers, scan_fences

__all__ = ["RECORD_ENV", "SiteFenceRunner", "executor", "page_times", "wait_for_pages"]

RECORD_ENV = "KEXUE_FENCE_RECORD"


class _State:
    executor: FenceExecutor | None = None
    run: PageRun | None = None  # the pages running in worker processes, if any
    threads: int | None = None  # this process's torch threads while they run


def page_times() -> dict[str, dict[str, float]]:
    """``{page: {"seconds": s, "fences": n}}`` of the pages this session ran, here or in workers."""
    times = _State.executor.times() if _State.executor is not None else {}
    if _State.run is not None:
        for page, job in _State.run.jobs.items():
            if job.done() and job.exception() is None and job.result().error is None:
                result = job.result()
                times[page] = {"seconds": round(result.seconds, 3), "fences": result.fences}
    return times


def _docs_relative(path: Path) -> str:
    parts = path.parts
    if "docs" in parts:
        i = len(parts) - 1 - parts[::-1].index("docs")
        return Path(*parts[i + 1 :]).as_posix()
    return path.name


def _executed_fence(item: pytest.Item, scanned: dict[Path, dict[int, Fence]]) -> bool:
    """Whether ``item`` is a pytest-markdown-docs item of an executed fence of a page under ``docs/``
    (``scanned``: the fences of each page read so far, by line)."""
    line = getattr(item, "start_line", None)
    path = Path(str(item.path))
    if line is None or path.suffix != ".md" or "docs" not in path.parts:
        return False
    if path not in scanned:
        scanned[path] = {f.line: f for f in scan_fences(path.read_text(encoding="utf-8"))}
    fence = scanned[path].get(line)
    return fence is not None and fence.executed


def _needs_site(item: pytest.Item) -> bool:
    """Whether the test reads the site built from the recorded outputs (fixture ``built_site``)."""
    return "built_site" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the selected pages in worker processes and put their fences after the unit tests."""
    record = os.environ.get(RECORD_ENV, "").strip()
    if not record or config.option.collectonly or config.getoption("usepdb", False) or fence_workers() < 2:
        return
    scanned: dict[Path, dict[int, Fence]] = {}
    fences = [i for i in items if _executed_fence(i, scanned)]
    pages = sorted({_docs_relative(Path(str(i.path)).resolve()) for i in fences})
    if len(pages) < 2:
        return
    chosen = set(fences)
    others = [i for i in items if i not in chosen]
    items[:] = [i for i in others if not _needs_site(i)] + fences + [i for i in others if _needs_site(i)]
    root = Path(str(config.rootpath))
    _State.run = PageRun(root, root / "docs", pages, Path(record), fence_workers())
    import torch  # this process runs the unit tests meanwhile: one thread leaves the cores to the pages

    _State.threads = torch.get_num_threads()
    torch.set_num_threads(1)


def wait_for_pages() -> bool:
    """Wait until every page running in the worker processes is done; False if none run there.

    Safe from another thread: ``tests/conftest.py`` starts the strict build as soon as the
    record is complete, while this process is still running unit tests.
    """
    import concurrent.futures

    run = _State.run
    if run is None:
        return False
    concurrent.futures.wait(list(run.jobs.values()))
    return True


def _page_done() -> None:
    """After the last page: give this process its threads back."""
    if _State.threads is not None and _State.run is not None and all(j.done() for j in _State.run.jobs.values()):
        import torch

        torch.set_num_threads(_State.threads)
        _State.threads = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the workers (pages not started yet are cancelled, e.g. after ``-x`` or Ctrl-C)."""
    if _State.run is not None:
        _State.run.close(cancel=True)


def executor(root: Path | None = None) -> FenceExecutor:
    """The executor of this pytest process (created on first use, recording if ``$KEXUE_FENCE_RECORD`` is set)."""
    if _State.executor is None:
        record = os.environ.get(RECORD_ENV, "").strip()
        _State.executor = FenceExecutor(root or Path.cwd(), Path(record) if record else None, read=False)
    return _State.executor


@register_runner(default=True)
class SiteFenceRunner(DefaultRunner):
    """Default runner giving pytest-markdown-docs the build's semantics (see module docstring)."""

    def __init__(self) -> None:
        self._fences: dict[Path, list[Fence]] = {}
        self._done: dict[tuple[Path, str], set[int]] = {}
        self._session_pages: dict[str, Path] = {}

    def _page_fences(self, path: Path) -> list[Fence]:
        if path not in self._fences:
            self._fences[path] = scan_fences(path.read_text(encoding="utf-8"))
        return self._fences[path]

    def _run_fence(self, path: Path, fence: Fence, args: dict[str, Any] | None = None) -> None:
        run = executor()
        source = expand_snippets(fence.source, Path.cwd())
        try:
            run.run(source, page=_docs_relative(path), line=fence.line, session=fence.session, filename=str(path))
        except FenceError as error:
            cause = error.__cause__ or error
            if error.printed:
                cause.add_note(f"the fence printed (last 2000 characters):\n{error.printed[-2000:]}")
            raise cause from None

    @staticmethod
    def _check_worker(path: Path, page: str, fence: Fence) -> None:
        """The fence ran with its page in a worker process: pass, or fail with what happened there."""
        assert _State.run is not None
        result = _State.run.result(page)
        _page_done()
        if result.failed_line is not None and fence.line == result.failed_line:
            pytest.fail(f"{path}:{fence.line}: the fence raised (run with its page in a worker process):\n"
                        + (result.error or ""), pytrace=False)
        if result.failed_line is not None and fence.line > result.failed_line:
            pytest.fail(f"{path}:{fence.line}: not run: the page's fence at line {result.failed_line} failed first",
                        pytrace=False)

    def runtest(self, test, args, **_: Any) -> None:
        path = Path(test.source_path).resolve()
        fences = self._page_fences(path)
        fence = next((f for f in fences if f.line == test.start_line), None)
        if fence is None:
            raise RuntimeError(f"{path}:{test.start_line}: pytest found a fence the site scanner did not")
        if not fence.executed:
            pytest.skip('display-only fence (no exec="on"): not executed on the site either')
        if fence.session is not None:
            other = self._session_pages.setdefault(fence.session, path)
            if other != path:
                raise RuntimeError(
                    f"session {fence.session!r} is used on two pages ({other} and {path}); "
                    "markdown-exec shares sessions across pages, so names must be page-unique"
                )
        page = _docs_relative(path)
        if _State.run is not None and page in _State.run.jobs:
            self._check_worker(path, page, fence)
            return
        if fence.session is not None:
            done = self._done.setdefault((path, fence.session), set())
            for earlier in fences:
                if earlier.line >= fence.line:
                    break
                if earlier.executed and earlier.session == fence.session and earlier.line not in done:
                    done.add(earlier.line)
                    self._run_fence(path, earlier)
            done.add(fence.line)
        self._run_fence(path, fence)
