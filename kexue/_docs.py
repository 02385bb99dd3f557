"""Site tooling shared by the build hook, the pytest fence runner and the conventions test.

Not part of the public API. It reads Markdown the way the site build sees it:
which code fences exist, at which line, with which markdown-exec options, and it
expands ``pymdownx.snippets`` include lines (``--8<-- "path"``) the same way the
build does before a fence runs. Keeping one scanner means pytest and
``mkdocs build`` can never disagree about which fences run and in which session.

It also holds the one thing that *runs* fences, ``FenceExecutor``: the build hook
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
import textwrap
import time
import traceback
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "Excerpt", "Fence", "FenceError", "FenceExecutor", "defined_names", "exec_enabled", "expand_snippets",
    "free_names", "library_excerpt", "scan_fences", "shown_code", "strip_docstrings",
]

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
      the global random generators are seeded and torch is set to ``PAGE_THREADS`` threads.

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


# ----------------------------------------------------------------------------- pages in parallel

WORKERS_ENV = "KEXUE_FENCE_WORKERS"
"""Processes that run the pages of a cold build or a pytest session side by side (default 2;
``1`` runs them in the build or pytest process itself, one after another)."""


def fence_workers() -> int:
    """The number of page workers ``$KEXUE_FENCE_WORKERS`` asks for (a positive integer, else 2)."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 2


def _known_costs(root: Path) -> dict[str, float]:
    """Seconds per page from the last timed run (``artifacts/fence-times.json``), if there was one."""
    known = root / "artifacts" / "fence-times.json"
    if not known.is_file():
        return {}
    return {page: row["seconds"] for page, row in json.loads(known.read_text(encoding="utf-8")).items()}


def _page_fences(docs_dir: Path, page: str, root: Path) -> list[tuple[str, int, str | None]]:
    """``(code, line, session)`` of a page's executed fences, code as the build runs it."""
    text = (docs_dir / page).read_text(encoding="utf-8")
    return [(expand_snippets(f.source, root), f.line, f.session) for f in scan_fences(text) if f.executed]


def pages_to_run(root: Path, docs_dir: Path, pages: Iterable[str], cache_dir: Path) -> list[str]:
    """The pages with at least one executed fence whose output ``cache_dir`` does not hold yet."""
    probe = FenceExecutor(root, cache_dir, read=True)
    missing = []
    for page in pages:
        history: dict[str | None, list[str]] = {}
        for code, _, session in _page_fences(docs_dir, page, root):
            if session is None:  # a private namespace: its key holds only its own code
                key = probe.key(page, None, [code])
            else:
                history.setdefault(session, []).append(code)
                key = probe.key(page, session, history[session])
            if not probe._path(key).is_file():
                missing.append(page)
                break
    return missing


@dataclass(frozen=True)
class PageResult:
    """What a worker reports for one page: its fences' wall time and count, and the first failure.

    ``error`` is the traceback (and what the fence printed) of the first fence that raised, at
    ``failed_line``; the page's later fences did not run.
    """

    page: str
    seconds: float
    fences: int
    error: str | None = None
    failed_line: int | None = None


def _worker_init() -> None:
    # Before torch is imported in this process: its OpenMP threads sleep rather than spin while
    # they wait, since other processes share the cores. No result depends on it.
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _run_page(root: str, docs_dir: str, page: str, cache_dir: str) -> PageResult:
    """Worker: run one page's executed fences into the cache (hits are served, as in the build)."""
    executor = FenceExecutor(Path(root), Path(cache_dir), read=True)
    for code, line, session in _page_fences(Path(docs_dir), page, Path(root)):
        try:
            executor.run(code, page=page, line=line, session=session)
        except FenceError as error:
            printed = f"\n\nIt printed before failing:\n{error.printed[-2000:]}" if error.printed else ""
            return PageResult(page, executor.seconds.get(page, 0.0), executor.fences.get(page, 0),
                              error.traceback[-4000:] + printed, line)
    return PageResult(page, executor.seconds.get(page, 0.0), executor.fences.get(page, 0))


class PageRun:
    """The executed fences of ``pages``, run in ``workers`` processes into ``cache_dir``, in the background.

    Each page runs whole in one worker, exactly as the build would run it (a fresh executor and
    sessions per page, the same cache keys, random state and thread count), so its outputs are
    those of a one-process build, which also runs page after page in one process (tested). The
    workers live for the whole run, so torch and matplotlib are imported once per worker, not
    once per page (about 2 s each). Pages start longest first (by their time in the last timed
    run, ``artifacts/fence-times.json``, else by the page's size). The workers' OpenMP threads
    sleep rather than spin while they wait (two 2-thread processes share the cores); the wait
    policy changes no result. ``result(page)`` waits for one page; ``claim(page)`` takes a page
    back if no worker has started it; ``close()`` waits for all and stops the workers.
    """

    def __init__(self, root: Path, docs_dir: Path, pages: Iterable[str], cache_dir: Path, workers: int) -> None:
        import concurrent.futures
        import multiprocessing

        cost = _known_costs(root)
        order = sorted(pages, key=lambda p: -cost.get(p, (docs_dir / p).stat().st_size / 1e4))
        self._pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
        )
        self.jobs = {page: self._pool.submit(_run_page, str(root), str(docs_dir), page, str(cache_dir)) for page in order}

    def result(self, page: str) -> PageResult:
        """The page's result, once its worker is done."""
        return self.jobs[page].result()

    def claim(self, page: str) -> bool:
        """Take ``page`` back from the workers if none has started it (the caller then runs it)."""
        return self.jobs[page].cancel()

    def close(self, cancel: bool = False) -> None:
        """Wait for the pages (``cancel``: only those already running) and stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)


# ----------------------------------------------------------------------------- code as readers see it

_HIDE = re.compile(r"markdown-exec:\s*hide")
_DUNDER = re.compile(r"^__\w+__$")


def shown_code(source: str) -> str:
    """The code of a fence as the page shows it (and its copy button copies it).

    markdown-exec drops every line containing ``markdown-exec: hide`` from the displayed source;
    the line still runs in the build.
    """
    return "\n".join(line for line in source.split("\n") if not _HIDE.search(line))


def _module_scope(code: str):
    import symtable

    try:
        return symtable.symtable(code, "<block>", "exec")
    except SyntaxError:
        return None


def _bound(table) -> set[str]:
    out = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}

    def walk(scope) -> None:  # ``global x`` in a function that assigns x also defines it
        for child in scope.get_children():
            out.update(s.get_name() for s in child.get_symbols() if s.is_declared_global() and s.is_assigned())
            walk(child)

    walk(table)
    return out


def _read(table) -> set[str]:
    used = {s.get_name() for s in table.get_symbols() if s.is_referenced()}

    def walk(scope) -> None:  # names read in functions, classes and comprehensions that are module globals
        for child in scope.get_children():
            used.update(s.get_name() for s in child.get_symbols() if s.is_referenced() and s.is_global())
            walk(child)

    walk(table)
    return used


def defined_names(code: str) -> set[str]:
    """Names a block of module-level code binds (assignments, imports, ``def``, ``class``, loops)."""
    table = _module_scope(code)
    return set() if table is None else _bound(table)


def free_names(code: str) -> set[str]:
    """Names a block of module-level code reads before (or without) defining them; builtins excluded.

    A block with free names only runs after earlier blocks of its page have defined them: on
    the site it is marked "continues from above", and a reader who copies it alone gets a
    ``NameError``. Statements are taken in order, so ``x = x + 1`` or ``total += 1`` read ``x``
    and ``total`` from above; names read inside functions, classes and comprehensions count when
    they resolve to module globals. Code that does not parse has no free names (it fails anyway).
    """
    import builtins

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    defined: set[str] = set()
    free: set[str] = set()
    for stmt in tree.body:
        source = ast.unparse(stmt)
        table = _module_scope(source)
        if table is None:
            continue
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and stmt.value is not None:
            value = _module_scope(ast.unparse(stmt.value))
            needs = _read(value) - _bound(value) if value is not None else set()
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:  # x[i] = ..., obj.attr = ... and x += ... read their base name
                if isinstance(stmt, ast.AugAssign) and isinstance(target, ast.Name):
                    needs.add(target.id)
                needs.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
        else:
            needs = _read(table) - _bound(table)
        free |= needs - defined
        defined |= _bound(table)
    return {n for n in free if not hasattr(builtins, n) and not _DUNDER.match(n)}


def strip_docstrings(code: str) -> str:
    """Replace every docstring of the functions and classes in ``code`` by its first paragraph.

    What a library excerpt on a page shows: the signature and the body, with a one-line
    docstring that says what the function is (the full docstring, with its rendered math, is on
    the API page). The summary is written back as a raw string when it contains a backslash, so
    a formula reads as it does on the API page, with single backslashes. Code that does not
    parse is returned unchanged.
    """
    body = textwrap.dedent(code)
    margin = code[: len(code) - len(code.lstrip())].rsplit("\n", 1)[-1] if code.strip() else ""
    try:
        tree = ast.parse(body)
    except SyntaxError:
        return code
    lines = body.split("\n")
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or not node.body:
            continue
        first = node.body[0]
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)) or first.lineno == node.lineno:
            continue
        doc = ast.get_docstring(node) or ""
        summary = " ".join(doc.split("\n\n", 1)[0].split())
        if not summary:
            continue
        prefix = "r" if "\\" in summary else ""
        summary = summary.replace('"""', '\\"\\"\\"') if not prefix else summary.replace('"""', "'''")
        indent = lines[first.lineno - 1][: first.col_offset]
        edits.append((first.lineno - 1, first.end_lineno or first.lineno, f'{indent}{prefix}"""{summary}"""'))
    for start, end, text in sorted(edits, reverse=True):
        lines[start:end] = [text]
    out = "\n".join(lines)
    return textwrap.indent(out, margin) if margin else out


@dataclass(frozen=True)
class Excerpt:
    """A display fence that shows a section of the library's source (``--8<-- "kexue/x.py:name"``).

    Attributes:
        code: The included code with docstrings folded to their summary line.
        path: The source file, relative to the project root (``kexue/hsic.py``).
        module: The module's dotted name (``kexue.hsic``).
        names: Public functions and classes the excerpt defines, in order (for links to the API page).
    """

    code: str
    path: str
    module: str
    names: tuple[str, ...]


def library_excerpt(source: str, root: Path) -> Excerpt | None:
    """Read a display fence's body as a library excerpt, or None if it is not one.

    A fence is a library excerpt when its non-blank lines are ``--8<--`` includes of one Python
    file under ``kexue/``. The sections are expanded as the build expands them, then their
    docstrings are folded with ``strip_docstrings``.
    """
    lines = [line for line in source.split("\n") if line.strip()]
    specs = [_SNIPPET.match(line) for line in lines]
    if not lines or not all(m and not m["semi"] for m in specs):
        return None
    paths = {m["spec"].partition(":")[0] for m in specs}
    if len(paths) != 1:
        return None
    path = paths.pop()
    if not (path.startswith("kexue/") and path.endswith(".py")):
        return None
    expanded = expand_snippets(source, root).strip("\n")
    names: list[str] = []
    try:
        for node in ast.parse(textwrap.dedent(expanded)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names.append(node.name)
    except SyntaxError:
        pass
    module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return Excerpt(strip_docstrings(expanded), path, module, tuple(names))

