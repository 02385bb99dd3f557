"""MkDocs hook: make executed fences report their page and line, and start every build fresh.

* Every ``exec="on"`` fence without an ``id`` gets ``id="<page>:<line>"`` before
  markdown-exec sees it, so a failing fence is reported as
  ``Execution of python code block 'articles/x.md:40' exited with errors`` and
  its traceback names ``<code block: id articles/x.md:40>``.
* markdown-exec keeps session namespaces for the life of the process; under
  ``mkdocs serve`` that would let a rebuilt page see names from the previous
  build. We clear them at the start of each build so serve behaves like a cold build.
* Optional output cache (``KEXUE_FENCE_CACHE=<dir>``; ``make serve`` and ``make site`` set it,
  ``make test`` and CI do not). A fence's output is stored under a key hashing the package
  source of ``kexue``, ``benchmarks/results.json``, the versions of the libraries that compute or
  draw, the fence's session and **every fence of that session up to and including it**. On a hit the fence is not run;
  its code is remembered, and if a later fence of the same session misses, the skipped fences
  are replayed first (output discarded) so the miss runs in exactly the namespace a cold build
  would give it. Pages are therefore identical cold and warm (tested byte for byte).
* Every fence is timed. After the build, the wall time of each page's fences is logged
  (``INFO``), and written as JSON to ``$KEXUE_FENCE_TIMES`` when that is set (the test suite
  does, and prints the table at the end of the run). Times are reported, never asserted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

from kexue._docs import scan_fences

os.environ.setdefault("MPLBACKEND", "Agg")

log = logging.getLogger("mkdocs.hooks.fences")
CACHE_ENV = "KEXUE_FENCE_CACHE"
TIMES_ENV = "KEXUE_FENCE_TIMES"
ROOT = Path(__file__).resolve().parents[2]
# Libraries whose version can change what a fence prints or draws.
_VERSIONED = ("torch", "numpy", "scipy", "matplotlib", "scikit-learn", "markdown-exec")
# Files outside kexue/ that fences read (the Performance and DGCNN pages show benchmark results).
_READ_BY_FENCES = ("benchmarks/results.json",)


def _salt() -> str:
    """Hash of everything outside a fence that its output depends on."""
    h = hashlib.sha256()
    h.update(platform.python_version().encode())
    for name in _VERSIONED:
        try:
            h.update(f"{name}=={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name} absent".encode())
    for path in sorted((ROOT / "kexue").rglob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    for name in _READ_BY_FENCES:
        path = ROOT / name
        h.update(name.encode())
        h.update(path.read_bytes() if path.is_file() else b"absent")
    return h.hexdigest()


class FenceCache:
    """Content-addressed store of fence outputs with replay of skipped fences on a miss."""

    def __init__(self, directory: Path, run) -> None:
        self.dir = directory
        self.run = run  # markdown-exec's own runner
        self.salt = _salt()
        self.history: dict[str | None, list[str]] = {}
        self.skipped: dict[str | None, list[str]] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, code: str, returncode=None, session=None, id=None, **extra):
        if session is None:  # a private namespace: the fence alone determines its output
            history = [code]
        else:
            history = [*self.history.get(session, []), code]
        key = hashlib.sha256(json.dumps([self.salt, session, history]).encode()).hexdigest()
        path = self.dir / key[:2] / f"{key}.out"
        if session is not None:
            self.history[session] = history
        if path.is_file():
            self.hits += 1
            if session is not None:
                self.skipped.setdefault(session, []).append(code)
            return path.read_text(encoding="utf-8")
        self.misses += 1
        for earlier in self.skipped.pop(session, []):
            self.run(earlier, session=session, **extra)
        output = self.run(code, returncode=returncode, session=session, id=id, **extra)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False) as tmp:
            tmp.write(output)
        os.replace(tmp.name, path)
        return output


class FenceClock:
    """Wraps the fence runner and sums wall time per page (from the fence id ``<page>:<line>``)."""

    def __init__(self, run) -> None:
        self.run = run
        self.seconds: dict[str, float] = {}
        self.fences: dict[str, int] = {}

    def __call__(self, code: str, returncode=None, session=None, id=None, **extra):
        page = str(id).rpartition(":")[0] if id else f"session {session}"
        start = time.perf_counter()
        try:
            return self.run(code, returncode=returncode, session=session, id=id, **extra)
        finally:
            self.seconds[page] = self.seconds.get(page, 0.0) + time.perf_counter() - start
            self.fences[page] = self.fences.get(page, 0) + 1


def _python_formatter():
    try:
        from markdown_exec._internal.formatters import python as mx_python
    except ImportError:  # pragma: no cover - layout of a future markdown-exec
        return None
    return mx_python


def on_pre_build(config) -> None:
    """Forget session namespaces from any previous build; switch the output cache on or off."""
    mx_python = _python_formatter()
    if mx_python is None:
        return
    mx_python._sessions_globals.clear()
    mx_python._sessions_counter.clear()
    mx_python._code_blocks.clear()
    original = mx_python._run_python
    while isinstance(original, (FenceClock, FenceCache)):  # unwrap what a previous build installed
        original = original.run
    run = original
    where = os.environ.get(CACHE_ENV, "").strip()
    if where and where.lower() not in {"0", "off", "no", "false"}:
        directory = Path(where)
        if not directory.is_absolute():
            directory = Path(config.config_file_path).resolve().parent / directory
        run = FenceCache(directory, original)
    mx_python._run_python = FenceClock(run)


def on_post_build(config) -> None:
    """Report how the cache did (the test of cold vs warm builds reads this line) and page times."""
    mx_python = _python_formatter()
    clock = getattr(mx_python, "_run_python", None)
    if not isinstance(clock, FenceClock):
        return
    if isinstance(clock.run, FenceCache):
        cache = clock.run
        log.info(f"fence cache {cache.dir}: {cache.hits} hits, {cache.misses} misses")
    if clock.seconds:
        ranked = sorted(clock.seconds.items(), key=lambda kv: -kv[1])
        log.info("fence time per page: " + ", ".join(f"{page} {sec:.1f} s" for page, sec in ranked))
    target = os.environ.get(TIMES_ENV, "").strip()
    if target:
        table = {page: {"seconds": round(sec, 3), "fences": clock.fences[page]} for page, sec in clock.seconds.items()}
        Path(target).write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")


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
