"""Site tooling shared by the build hook, the pytest fence runner and the conventions test.

Not part of the public API. It reads Markdown the way the site build sees it:
which code fences exist, at which line, with which markdown-exec options, and it
expands ``pymdownx.snippets`` include lines (``--8<-- "path"``) the same way the
build does before a fence runs. Keeping one scanner means pytest and
``mkdocs build`` can never disagree about which fences run and in which session.

It also holds the one thing that *runs* fences, :class:`FenceExecutor`: the build hook
(``docs/_hooks/fences.py``) hands it to markdown-exec through markdown-exec's public
``base_format``, and the pytest runner (``kexue/_pytest_docs.py``) calls it directly, so a
fence runs with exactly the same namespace, ``print`` capture and random state in both, and
the pytest run can record outputs that the strict build then reuses instead of running the
page code a second time.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import os
import platform
import random
import re
import shlex
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Fence", "FenceError", "FenceExecutor", "exec_enabled", "expand_snippets", "scan_fences"]

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>`{3,}|~{3,})(?P<info>.*)$")
_SNIPPET = re.compile(r"^(?P<indent>[ \t]*)(?P<semi>;?)--8<--\s+(?P<q>['\"])(?P<spec>.+?)(?P=q)\s*$")
_SECTION = re.compile(r"--8<--\s*\[\s*(?P<kind>start|end)\s*:\s*(?P<name>[\w-]+)\s*\]")


def exec_enabled(value: str | None) -> bool:
    """Mirror markdown-exec's truthiness of the ``exec`` option (anything but no/off/false/0/empty)."""
    return value is not None and value.lower() not in {"", "no", "off", "false", "0"}


@dataclass(frozen=True)
class Fence:
    """One fenced code block of a Markdown file.

    Attributes:
        line: 1-based line number of the opening fence line.
        indent: Number of leading whitespace characters before the fence marker.
        lang: First word of the info string (``""`` when absent).
        attrs: ``key="value"`` options of the info string.
        flags: Bare words of the info string after the language (superfences rejects these).
        source: The fence body, without the fence lines and without the common indent.
    """

    line: int
    indent: int
    lang: str
    attrs: dict[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    source: str = ""

    @property
    def executed(self) -> bool:
        """Whether markdown-exec runs this fence (a Python fence with a true ``exec`` option)."""
        return self.lang in {"python", "py"} and exec_enabled(self.attrs.get("exec"))

    @property
    def session(self) -> str | None:
        """The markdown-exec session name, or ``None`` for a fence with a private namespace."""
        return self.attrs.get("session") or None


def _parse_info(info: str) -> tuple[str, dict[str, str], tuple[str, ...]]:
    info = info.strip()
    if not info:
        return "", {}, ()
    try:
        tokens = shlex.split(info, posix=True)
    except ValueError:  # unbalanced quotes: keep the raw words so the conventions test can flag them
        tokens = info.split()
    lang, rest = tokens[0], tokens[1:]
    attrs: dict[str, str] = {}
    flags: list[str] = []
    for token in rest:
        key, eq, value = token.partition("=")
        if eq:
            attrs[key] = value
        else:
            flags.append(token)
    return lang, attrs, tuple(flags)


def scan_fences(text: str) -> list[Fence]:
    """List the fenced code blocks of a Markdown text, in order.

    Fences nested inside another fence (e.g. an example of Markdown shown in a
    ```` ```markdown ```` block) are content, not fences, and are not reported.

    Args:
        text: Markdown source.

    Returns:
        The fences with their line numbers, options and bodies.
    """
    lines = text.splitlines()
    fences: list[Fence] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m or (m["marker"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        indent, marker = m["indent"], m["marker"]
        closing = re.compile(rf"^[ \t]*{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            body.append(lines[j])
            j += 1
        lang, attrs, flags = _parse_info(m["info"])
        width = len(indent)
        source = "\n".join(b[width:] if b[:width].strip() == "" else b.lstrip() for b in body)
        fences.append(Fence(i + 1, width, lang, attrs, flags, source + ("\n" if body else "")))
        i = j + 1
    return fences


def _section(text: str, name: str, path: Path) -> str:
    out: list[str] = []
    inside = False
    found = False
    for line in text.splitlines(keepends=True):
        m = _SECTION.search(line)
        if m and m["name"] == name:
            if m["kind"] == "start":
                inside, found = True, True
            else:
                inside = False
            continue
        if inside and not _SECTION.search(line):
            out.append(line)
    if not found:
        raise ValueError(f"snippet section {name!r} not found in {path}")
    return "".join(out)


def expand_snippets(source: str, base: Path) -> str:
    """Expand ``--8<-- "file"`` lines as ``pymdownx.snippets`` does before a fence runs.

    Supported forms: ``"path"`` (whole file), ``"path:START:END"`` (1-based inclusive
    line range, either bound may be empty) and ``"path:name"`` (a section delimited by
    ``--8<-- [start:name]`` / ``--8<-- [end:name]`` marker comments). A line starting
    with ``;--8<--`` is an escaped include and is kept literally, minus the ``;``.

    Args:
        source: The fence body.
        base: Directory that snippet paths are relative to (the project root).

    Returns:
        The body with every include line replaced by the included text.

    Raises:
        FileNotFoundError: If an included file does not exist.
        ValueError: If a named section does not exist.
    """
    out: list[str] = []
    for line in source.splitlines(keepends=True):
        m = _SNIPPET.match(line.rstrip("\n"))
        if not m:
            out.append(line)
            continue
        if m["semi"]:
            out.append(line.replace(";--8<--", "--8<--", 1))
            continue
        spec = m["spec"]
        path_part, _, selector = spec.partition(":")
        path = base / path_part
        if not path.is_file():
            raise FileNotFoundError(f"snippet file not found: {path}")
        text = path.read_text(encoding="utf-8")
        if selector and re.fullmatch(r"\d*(:\d*)?", selector):
            start_s, _, end_s = selector.partition(":")
            all_lines = text.splitlines(keepends=True)
            start = int(start_s) if start_s else 1
            end = int(end_s) if end_s else len(all_lines)
            text = "".join(all_lines[start - 1 : end])
        elif selector:
            text = _section(text, selector, path)
        if text and not text.endswith("\n"):
            text += "\n"
        out.append("".join(m["indent"] + t for t in text.splitlines(keepends=True)))
    return "".join(out)


# ----------------------------------------------------------------------------- running fences

# Libraries whose version can change what a fence prints or draws.
_VERSIONED = ("torch", "numpy", "scipy", "matplotlib", "scikit-learn", "markdown-exec")
# A string literal in a fence that names a file of the repository (outside kexue/, which is
# always part of the key): the file's content joins the key of that fence and of the later
# fences of its session.
_PATH_LITERAL = re.compile(r"""["']((?:[\w.-]+/)*[\w.-]+\.(?:json|csv|txt|toml|yaml|yml|npz|npy|pt))["']""")


_IMPORT = re.compile(r"^\s*(?:from\s+(kexue(?:\.\w+)*)\s+import\s+([\w\s,()]+)|import\s+(kexue(?:\.\w+)*))", re.MULTILINE)


def _imported_kexue_modules(text: str) -> list[str]:
    """Names of ``kexue`` modules a source text imports (``from kexue.x import y`` may name module y)."""
    out = []
    for m in _IMPORT.finditer(text):
        if m[3]:
            out.append(m[3])
        else:
            out.append(m[1])
            out += [f"{m[1]}.{name}" for name in re.findall(r"\w+", m[2])]
    return out


class FenceError(Exception):
    """A fence raised. ``traceback`` is the formatted traceback (page file and line numbers),
    ``printed`` what the fence printed before it failed."""

    def __init__(self, traceback_text: str, printed: str) -> None:
        super().__init__(traceback_text)
        self.traceback = traceback_text
        self.printed = printed


def _buffer_print(buffer: io.StringIO):
    def _print(*values: Any, sep: str | None = " ", end: str | None = "\n", **_: Any) -> None:
        buffer.write((" " if sep is None else sep).join(str(v) for v in values))
        buffer.write("\n" if end is None else end)

    return _print


PAGE_THREADS = 2
"""Threads torch uses while a page's code runs on the site (the budgets assume two cores)."""

FIGURES_ENV = "KEXUE_FIGURES"
"""Set to ``html`` while a fence runs: ``kexue.plot.show`` then prints the figure as HTML for
the page, where a reader's own session would display it."""


def _reset_page_state() -> None:
    """Seed the global generators and set torch's thread count before a page's first fence.

    A page starts from the same state whether it runs in a fresh ``mkdocs build`` or in the
    middle of a pytest session, so their outputs agree byte for byte; and the pages need no
    ``torch.set_num_threads`` line of their own (which a reader's copy would inherit).
    """
    random.seed(0)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(0)
    import torch  # every page uses it; importing here keeps the order of imports irrelevant

    torch.manual_seed(0)
    torch.set_num_threads(PAGE_THREADS)


@dataclass
class _Session:
    namespace: dict[str, Any]
    history: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, int]] = field(default_factory=list)  # (code, page, line) not run yet
    started: bool = False


class FenceExecutor:
    """Runs executed fences: one namespace per (page, session), ``print`` captured, optional cache.

    * A session's namespace is a fresh module (registered in ``sys.modules``, which
      dataclasses and pickle need); a fence without a session gets a private one.
    * ``print`` writes to a buffer; the fence's output is what it printed.
    * Tracebacks name the page and its line numbers (the code is compiled with the page's
      path as file name, padded to the fence's line).
    * Cache (``cache_dir``): a fence's output is stored under a key hashing the Python and
      library versions, the source of the ``kexue`` modules the session's code imports (with
      everything they import from ``kexue`` in turn, and this runner itself), the files the
      session's code names as string literals (e.g. ``"benchmarks/results.json"``), the page, the
      session, and **every fence of the session up to and including this one**. Editing one
      topic module therefore re-runs only the pages that use it. With ``read=True`` a hit is
      not run; its code is remembered, and when a later fence of the session misses, the skipped
      fences are replayed first (output discarded), so the miss runs in exactly the namespace a
      cold run gives it. With ``read=False`` (the pytest run) every fence runs and its output is
      recorded for a later build.
    * Time per page is summed in ``seconds`` and ``fences`` (measurements, never assertions), and
      each fence's output is kept in ``outputs`` (the notebooks of the pages carry them).
    * While a fence runs, ``sys.stdout`` goes to its buffer too and ``$KEXUE_FIGURES`` is
      ``html``, so ``kexue.plot.show`` prints figures for the page; before a page's first fence
      the global random generators are seeded and torch is set to :data:`PAGE_THREADS` threads.

    Args:
        root: The repository root (``kexue/`` and the files fences read live under it).
        cache_dir: Directory of the output cache, or None for no cache.
        read: Serve hits from the cache (the build) or only record (pytest).
    """

    def __init__(self, root: Path, cache_dir: Path | None = None, *, read: bool = True) -> None:
        self.root = Path(root)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.read = read
        self.sessions: dict[tuple[str, str], _Session] = {}
        self.hits = 0
        self.misses = 0
        self.seconds: dict[str, float] = {}
        self.fences: dict[str, int] = {}
        self.outputs: dict[tuple[str, int], str] = {}  # (page, line) -> what the fence printed
        self._salt: str | None = None
        self._file_hashes: dict[str, str] = {}

    # -- keys

    def salt(self) -> str:
        """Hash of the Python and library versions and of this runner's source (computed once)."""
        if self._salt is None:
            h = hashlib.sha256(platform.python_version().encode())
            for name in _VERSIONED:
                try:
                    h.update(f"{name}=={metadata.version(name)}".encode())
                except metadata.PackageNotFoundError:
                    h.update(f"{name} absent".encode())
            for rel in ("kexue/__init__.py", "kexue/_docs.py"):
                path = self.root / rel
                h.update(rel.encode())
                h.update(path.read_bytes() if path.is_file() else b"absent")
            self._salt = h.hexdigest()
        return self._salt

    def _module_file(self, module: str) -> Path | None:
        base = self.root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    def kexue_sources(self, code: Iterable[str]) -> list[str]:
        """The ``kexue`` source files that ``code`` imports, directly or through other kexue modules."""
        todo = [m for text in code for m in _imported_kexue_modules(text)]
        seen: dict[str, Path] = {}
        while todo:
            module = todo.pop()
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # the packages on the way are imported too
                name = ".".join(parts[:i])
                if name in seen:
                    continue
                path = self._module_file(name)
                if path is None:
                    continue
                seen[name] = path
                todo.extend(_imported_kexue_modules(path.read_text(encoding="utf-8")))
        return sorted(p.relative_to(self.root).as_posix() for p in seen.values())

    def _file_hash(self, name: str) -> str | None:
        if name not in self._file_hashes:
            path = self.root / name
            if not path.is_file():
                return None
            self._file_hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        return self._file_hashes[name]

    def key(self, page: str, session: str | None, history: list[str]) -> str:
        """The cache key of the last fence of ``history`` (see the class docstring)."""
        read = sorted({m for code in history for m in _PATH_LITERAL.findall(code) if self._file_hash(m)})
        read += self.kexue_sources(history)
        files = [(name, self._file_hash(name)) for name in read]
        payload = json.dumps([self.salt(), files, page, session, [c.rstrip("\n") for c in history]])
        return hashlib.sha256(payload.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.out"

    def _store(self, key: str, output: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False) as tmp:
            tmp.write(output)
        os.replace(tmp.name, path)

    # -- running

    def _session(self, page: str, session: str | None) -> _Session:
        if session is None:
            module = types.ModuleType("kexue_fence_private")
            return _Session(module.__dict__)
        key = (page, session)
        if key not in self.sessions:
            slug = re.sub(r"\W+", "_", f"{page}_{session}")
            module = types.ModuleType(f"kexue_fence_{slug}")
            sys.modules[module.__name__] = module
            self.sessions[key] = _Session(module.__dict__)
        return self.sessions[key]

    def _exec(self, code: str, state: _Session, filename: str, line: int) -> str:
        if not state.started:
            state.started = True
            _reset_page_state()
        padded = "\n" * max(0, line) + code
        buffer = io.StringIO()
        state.namespace["print"] = _buffer_print(buffer)
        previous = os.environ.get(FIGURES_ENV)
        os.environ[FIGURES_ENV] = "html"
        try:
            compiled = compile(padded, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
            with contextlib.redirect_stdout(buffer):  # library helpers (kexue.plot.show) print too
                exec(compiled, state.namespace)  # noqa: S102 - running the documentation is the point
        except Exception as error:
            tb = traceback.TracebackException.from_exception(error)
            raise FenceError("".join(tb.format()), buffer.getvalue()) from error
        finally:
            if previous is None:
                os.environ.pop(FIGURES_ENV, None)
            else:
                os.environ[FIGURES_ENV] = previous
        return buffer.getvalue()

    def run(self, code: str, *, page: str, line: int, session: str | None, filename: str | None = None) -> str:
        """Run one fence (or serve it from the cache) and return what it printed.

        Args:
            code: The fence's code, as the page has it.
            page: The page's path relative to the docs directory, e.g. ``articles/hsic.md``.
            line: Line number of the fence's opening line in the page file.
            session: The markdown-exec session name, or None for a private namespace.
            filename: File name shown in tracebacks (default: ``docs/<page>``).

        Raises:
            FenceError: If the fence raised.
        """
        state = self._session(page, session)
        filename = filename or f"docs/{page}"
        start = time.perf_counter()
        try:
            if self.cache_dir is None:
                output = self._exec(code, state, filename, line)
            else:
                state.history.append(code)
                key = self.key(page, session, state.history)
                if self.read and self._path(key).is_file():
                    self.hits += 1
                    state.skipped.append((code, filename, line))
                    output = self._path(key).read_text(encoding="utf-8")
                else:
                    self.misses += 1
                    for earlier, earlier_file, earlier_line in state.skipped:
                        self._exec(earlier, state, earlier_file, earlier_line)
                    state.skipped.clear()
                    output = self._exec(code, state, filename, line)
                    self._store(key, output)
            self.outputs[page, line] = output
            return output
        finally:
            self.seconds[page] = self.seconds.get(page, 0.0) + time.perf_counter() - start
            self.fences[page] = self.fences.get(page, 0) + 1

    def times(self) -> dict[str, dict[str, float]]:
        """``{page: {"seconds": s, "fences": n}}`` of everything run so far."""
        return {p: {"seconds": round(s, 3), "fences": self.fences[p]} for p, s in self.seconds.items()}
