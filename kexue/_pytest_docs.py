"""pytest plugin: run the site's executed fences with the same semantics as ``mkdocs build``.

pytest-markdown-docs collects every Python fence of every Markdown file and, left
alone, runs each in a fresh namespace. markdown-exec (the build) instead runs only
``exec="on"`` fences, shares one namespace per ``session``, and captures ``print``.
This plugin registers a default runner that closes the gap:

* a fence without a true ``exec`` option is skipped (it is display-only on the site);
* fences with the same ``session`` on one page share a namespace and run in page
  order; if pytest selects a later fence alone (``-k``), the earlier fences of its
  session run first, so every fence sees what it would see in the build;
* a session name used on two pages is an error (markdown-exec would leak names
  between them);
* ``print`` inside a fence writes to a buffer, as markdown-exec does; on failure the
  captured text is attached to the error;
* ``--8<--`` snippet lines are expanded from the project root before running.

Activated by ``pytest_plugins = ["kexue._pytest_docs"]`` in the root ``conftest.py``
(or ``-p kexue._pytest_docs``).
"""

from __future__ import annotations

import ast
import io
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pytest_markdown_docs._runners import DefaultRunner, register_runner

from kexue._docs import Fence, expand_snippets, scan_fences

__all__ = ["SiteFenceRunner"]


@dataclass
class _Session:
    namespace: dict[str, Any]
    done: set[int] = field(default_factory=set)


def _buffer_print(buffer: io.StringIO):
    def _print(*values: Any, sep: str | None = " ", end: str | None = "\n", **_: Any) -> None:
        buffer.write((" " if sep is None else sep).join(str(v) for v in values))
        buffer.write("\n" if end is None else end)

    return _print


@register_runner(default=True)
class SiteFenceRunner(DefaultRunner):
    """Default runner giving pytest-markdown-docs markdown-exec's semantics (see module docstring)."""

    def __init__(self) -> None:
        self._fences: dict[Path, list[Fence]] = {}
        self._sessions: dict[tuple[Path, str | None], _Session] = {}
        self._session_pages: dict[str, Path] = {}

    def _page_fences(self, path: Path) -> list[Fence]:
        if path not in self._fences:
            self._fences[path] = scan_fences(path.read_text(encoding="utf-8"))
        return self._fences[path]

    def _session(self, path: Path, name: str | None) -> _Session:
        key = (path, name)
        if key not in self._sessions:
            if name is not None:
                other = self._session_pages.setdefault(name, path)
                if other != path:
                    raise RuntimeError(
                        f"session {name!r} is used on two pages ({other} and {path}); "
                        "markdown-exec shares sessions across pages, so names must be page-unique"
                    )
            slug = re.sub(r"\W+", "_", f"{path.stem}_{name or 'private'}")
            module = types.ModuleType(f"kexue_fence_{slug}")
            sys.modules[module.__name__] = module  # dataclasses and pickle look modules up here
            self._sessions[key] = _Session(module.__dict__)
        return self._sessions[key]

    def _run_fence(self, filename: str, fence: Fence, namespace: dict[str, Any]) -> None:
        root = Path.cwd()
        source = expand_snippets(fence.source, root)
        # Pad so that tracebacks show line numbers of the Markdown file.
        padded = "\n" * fence.line + source
        code = compile(padded, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        buffer = io.StringIO()
        namespace["print"] = _buffer_print(buffer)
        try:
            exec(code, namespace)  # noqa: S102 - running the documentation is the point
        except BaseException as error:
            printed = buffer.getvalue()
            if printed:
                error.add_note(f"the fence printed (last 2000 characters):\n{printed[-2000:]}")
            raise

    def runtest(self, test, args, **_: Any) -> None:
        path = Path(test.source_path).resolve()
        fences = self._page_fences(path)
        fence = next((f for f in fences if f.line == test.start_line), None)
        if fence is None:
            raise RuntimeError(f"{path}:{test.start_line}: pytest found a fence the site scanner did not")
        if not fence.executed:
            pytest.skip('display-only fence (no exec="on"): not executed on the site either')
        if fence.session is None:
            namespace = types.ModuleType("kexue_fence_private").__dict__
            namespace.update(args)
            self._run_fence(str(test.source_path), fence, namespace)
            return
        session = self._session(path, fence.session)
        for earlier in fences:
            if earlier.line >= fence.line:
                break
            if earlier.executed and earlier.session == fence.session and earlier.line not in session.done:
                session.done.add(earlier.line)
                self._run_fence(str(test.source_path), earlier, session.namespace)
        session.namespace.update(args)
        session.done.add(fence.line)
        self._run_fence(str(test.source_path), fence, session.namespace)
