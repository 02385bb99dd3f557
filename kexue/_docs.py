"""Site tooling shared by the build hook, the pytest fence runner and the conventions test.

Not part of the public API. It reads Markdown the way the site build sees it:
which code fences exist, at which line, with which markdown-exec options, and it
expands ``pymdownx.snippets`` include lines (``--8<-- "path"``) the same way the
build does before a fence runs. Keeping one scanner means pytest and
``mkdocs build`` can never disagree about which fences run and in which session.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Fence", "exec_enabled", "expand_snippets", "scan_fences"]

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
