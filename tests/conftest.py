"""Shared fixtures: the project root and one strict build of the whole site per test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The cold build's fence times, kept for the terminal summary (also saved to artifacts/fence-times.json).
FENCE_TIMES = pytest.StashKey[dict]()


@dataclass(frozen=True)
class Build:
    """Result of ``mkdocs build --strict`` run in a subprocess."""

    site: Path
    returncode: int
    log: str
    seconds: float


def mkdocs_build(
    config: Path,
    site_dir: Path,
    cwd: Path = ROOT,
    fence_cache: Path | None = None,
    fence_times: Path | None = None,
) -> Build:
    """Run a strict build of ``config`` into ``site_dir`` and capture its log.

    Builds are cold unless ``fence_cache`` names a fence-output cache directory
    (see docs/_hooks/fences.py); a cache set in the caller's environment is ignored.
    ``fence_times`` names a JSON file for the wall time of each page's fences.
    """
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "MPLBACKEND": "Agg"}
    env.pop("KEXUE_FENCE_CACHE", None)
    env.pop("KEXUE_FENCE_TIMES", None)
    if fence_cache is not None:
        env["KEXUE_FENCE_CACHE"] = str(fence_cache)
    if fence_times is not None:
        env["KEXUE_FENCE_TIMES"] = str(fence_times)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site_dir)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return Build(site_dir, proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start)


def mini_site(tmp: Path, pages: dict[str, str]) -> Path:
    """A throw-away site with the project's hooks, theme, plugins and extensions and the given pages.

    mkdocstrings and the nav are dropped (the pages are not the project's); ``pages`` maps paths
    under ``docs/`` to Markdown. Returns the path of the site's ``mkdocs.yml``.
    """
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    config["docs_dir"] = str(tmp / "docs")
    config["hooks"] = [str(ROOT / h) for h in config["hooks"]]
    config["theme"]["custom_dir"] = str(ROOT / config["theme"]["custom_dir"])
    config["plugins"] = [p for p in config["plugins"] if not (isinstance(p, dict) and "mkdocstrings" in p)]
    config["extra_css"] = [c for c in config["extra_css"] if "katex" in c]
    config.pop("nav", None)
    for rel, text in pages.items():
        (tmp / "docs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "docs" / rel).write_text(text, encoding="utf-8")
    path = tmp / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Build:
    """The real site, built once per session with ``--strict`` (every fence runs again here).

    The build is cold: it starts with an empty fence-output cache, which it fills so that
    ``test_site.py`` can check that a warm rebuild from that cache is byte-identical.
    """
    tmp = tmp_path_factory.mktemp("site")
    times = ROOT / "artifacts" / "fence-times.json"
    times.parent.mkdir(exist_ok=True)
    times.unlink(missing_ok=True)
    build = mkdocs_build(ROOT / "mkdocs.yml", tmp / "site", fence_cache=tmp / "fence-cache", fence_times=times)
    if times.is_file():
        table = json.loads(times.read_text(encoding="utf-8"))
        table["(whole build)"] = {"seconds": round(build.seconds, 1), "fences": sum(v["fences"] for v in table.values())}
        times.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        pytestconfig.stash[FENCE_TIMES] = table
    return build


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Print the cold build's time and each page's fence time, if this run built the site.

    These are measurements for the log (budgets: 30 s per page, 4 min per build), not assertions.
    """
    table = config.stash.get(FENCE_TIMES, None)
    if table is None:
        return
    terminalreporter.section("cold strict build: wall time of executed fences per page")
    for page, row in sorted(table.items(), key=lambda kv: -kv[1]["seconds"]):
        terminalreporter.write_line(f"{row['seconds']:7.1f} s  {row['fences']:3d} fences  {page}")
