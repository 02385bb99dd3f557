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
  running the page code again (``tests/conftest.py`` sets this up).

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

from kexue._docs import Fence, FenceError, FenceExecutor, expand_snippets, scan_fences

__all__ = ["RECORD_ENV", "SiteFenceRunner", "executor"]

RECORD_ENV = "KEXUE_FENCE_RECORD"


class _State:
    executor: FenceExecutor | None = None


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

    @staticmethod
    def _docs_relative(path: Path) -> str:
        parts = path.parts
        if "docs" in parts:
            i = len(parts) - 1 - parts[::-1].index("docs")
            return Path(*parts[i + 1 :]).as_posix()
        return path.name

    def _run_fence(self, path: Path, fence: Fence, args: dict[str, Any] | None = None) -> None:
        run = executor()
        source = expand_snippets(fence.source, Path.cwd())
        try:
            run.run(source, page=self._docs_relative(path), line=fence.line, session=fence.session, filename=str(path))
        except FenceError as error:
            cause = error.__cause__ or error
            if error.printed:
                cause.add_note(f"the fence printed (last 2000 characters):\n{error.printed[-2000:]}")
            raise cause from None

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
            done = self._done.setdefault((path, fence.session), set())
            for earlier in fences:
                if earlier.line >= fence.line:
                    break
                if earlier.executed and earlier.session == fence.session and earlier.line not in done:
                    done.add(earlier.line)
                    self._run_fence(path, earlier)
            done.add(fence.line)
        self._run_fence(path, fence)
