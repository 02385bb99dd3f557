"""Shared fixtures: the project root and one strict build of the whole site per test session."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from mkdocs.utils.yaml import get_yaml_loader

from kexue._pytest_docs import RECORD_ENV, _needs_site, page_times

ROOT = Path(__file__).resolve().parents[1]
# hyppo's helpers (the HSIC parity tests' peer) are numba functions compiled on first call: 22.6 s of
# one core in a fresh install, for statistics of 70 points. Here they run as the plain Python they
# are written in (same results; the parity tests compare to 1e-9). `make bench` still times them
# compiled. No page or library code uses numba.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")
# The cold build's fence times, kept for the terminal summary (also saved to artifacts/fence-times.json).
FENCE_TIMES = pytest.StashKey[dict]()
BROWSER_RUN = pytest.StashKey[object]()  # the browser script, started in the background (test_browser.py)


class _EarlyBuild:
    """The strict build started by ``pytest_runtestloop`` once the pages are recorded: its directory
    (removed at the end of the session), its result, and whether it started or was called off."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.result: concurrent.futures.Future = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._started = self._stopped = False

    def start(self) -> bool:
        """Called by the build thread: False if the session ended first (then nothing is built)."""
        with self._lock:
            self._started = not self._stopped
            return self._started

    def stop(self) -> bool:
        """Called at the end of the session: whether a build had started (and must be waited for)."""
        with self._lock:
            self._stopped = True
            return self._started and not self.result.done()


EARLY_BUILD = pytest.StashKey[_EarlyBuild]()  # the strict build started once the pages are recorded
# The real site is built for a hosted address with a sub-path, as on a GitHub project page; the
# browser test serves the files at exactly this address (see tests/browser/smoke.mjs).
HOSTED_URL = "https://example.org/kexue/"


@dataclass(frozen=True)
class Build:
    """Result of ``mkdocs build --strict`` run in a subprocess."""

    site: Path
    returncode: int
    log: str
    seconds: float
    site_url: str = "http://127.0.0.1:8000/"

    @property
    def base_path(self) -> str:
        """The path part of the site's address, e.g. ``/kexue/`` (root-absolute links start with it)."""
        return urlsplit(self.site_url).path or "/"


def mkdocs_build(
    config: Path,
    site_dir: Path,
    cwd: Path = ROOT,
    fence_cache: Path | None = None,
    fence_times: Path | None = None,
    site_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Build:
    """Run a strict build of ``config`` into ``site_dir`` and capture its log.

    Builds are cold unless ``fence_cache`` names a fence-output cache directory
    (see docs/_hooks/fences.py); a cache set in the caller's environment is ignored.
    ``fence_times`` names a JSON file for the wall time of each page's fences. ``site_url``
    sets ``SITE_URL`` (default: the local address of ``make serve``); ``extra_env`` adds variables
    (e.g. ``KEXUE_OFFLINE``).
    """
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "MPLBACKEND": "Agg"}
    for name in ("KEXUE_FENCE_CACHE", "KEXUE_FENCE_TIMES", "SITE_URL", "REPO_URL", "EDIT_URI", "KEXUE_OFFLINE",
                 "KEXUE_OFFLINE_ZIP"):
        env.pop(name, None)
    env.update(extra_env or {})
    if site_url is not None:
        env["SITE_URL"] = site_url
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
    return Build(site_dir, proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start,
                 site_url or "http://127.0.0.1:8000/")


def mkdocs_yml() -> dict:
    """The project's mkdocs.yml as data, ``!ENV`` tags resolved the way MkDocs resolves them."""
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=get_yaml_loader())


def mini_site(tmp: Path, pages: dict[str, str]) -> Path:
    """A throw-away site with the project's hooks, theme, plugins and extensions and the given pages.

    mkdocstrings and the nav are dropped (the pages are not the project's); ``pages`` maps paths
    under ``docs/`` to Markdown. Returns the path of the site's ``mkdocs.yml``.
    """
    config = mkdocs_yml()
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


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors (``pytestmark = pytest.mark.usefixtures("one_thread")``): one
    thread avoids thread-synchronisation stalls and keeps the shared machine free; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def _build_site(tmp: Path) -> tuple[Build, dict]:
    """The strict build of the real site into ``tmp``, reading this session's fence record; with
    the fence times of the pages the build itself ran."""
    record = os.environ.get(RECORD_ENV)
    cache = Path(record) if record else tmp / "fence-cache"
    build_times = tmp / "build-fence-times.json"
    build = mkdocs_build(ROOT / "mkdocs.yml", tmp / "site", fence_cache=cache, fence_times=build_times,
                         site_url=HOSTED_URL)
    table = json.loads(build_times.read_text(encoding="utf-8")) if build_times.is_file() else {}
    return build, table


def _start_browser(config: pytest.Config, build: Build) -> None:
    """Start the browser script on ``build`` unless it has started or the session has no browser tests."""
    if BROWSER_RUN in config.stash and config.stash[BROWSER_RUN] is None:
        from tests.test_browser import start_smoke

        config.stash[BROWSER_RUN] = start_smoke(build, ROOT) or False


def pytest_runtestloop(session: pytest.Session) -> None:
    """Start the strict build (and then the browser script) as soon as the pages have run.

    When the pages run in worker processes (``kexue._pytest_docs``), their record is complete
    before the unit tests of this process are; a thread waits for the workers, builds the site and
    starts the browser script, so both overlap the last unit tests instead of following them. The
    ``built_site`` fixture waits for that build. Sessions that run the pages here build in the
    fixture, as before.
    """
    config = session.config
    if not os.environ.get(RECORD_ENV) or not any(_needs_site(i) for i in session.items):
        return
    early = _EarlyBuild(Path(tempfile.mkdtemp(prefix="kexue-site-")))
    config.stash[EARLY_BUILD] = early
    done = early.result

    def build_when_recorded() -> None:
        from kexue._pytest_docs import wait_for_pages

        try:
            if not wait_for_pages() or not early.start():
                done.set_result(None)  # the pages ran in this process (the fixture builds), or the session ended
                return
            result = _build_site(early.tmp)
            _start_browser(config, result[0])
            done.set_result(result)
        except BaseException as error:  # noqa: BLE001 - handed to the fixture, which raises it
            done.set_exception(error)

    threading.Thread(target=build_when_recorded, name="kexue-early-build", daemon=True).start()


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Build:
    """The real site, built once per session with ``--strict``.

    The build reads the fence outputs that this session's pytest run of ``docs/`` recorded
    (``$KEXUE_FENCE_RECORD``, see the root ``conftest.py``), so page code runs once per
    ``make test``; fences pytest did not run (a partial session) run in the build. When the pages
    ran in worker processes the build started as soon as they were done (``pytest_runtestloop``
    above) and this waits for it. The wall time of each page's fences, from the pytest run where
    it ran there and from the build otherwise, goes to ``artifacts/fence-times.json`` and the end
    of the terminal report.
    """
    early = pytestconfig.stash.get(EARLY_BUILD, None)
    result = early.result.result() if early is not None else None
    if result is None:
        result = _build_site(tmp_path_factory.mktemp("site"))
    build, table = result
    times = ROOT / "artifacts" / "fence-times.json"
    times.parent.mkdir(exist_ok=True)
    times.unlink(missing_ok=True)
    table.update(page_times())  # pages pytest ran: their time there (the build served them cached)
    table["(whole build)"] = {"seconds": round(build.seconds, 1), "fences": sum(v["fences"] for v in table.values())}
    times.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    pytestconfig.stash[FENCE_TIMES] = table
    return build


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Print each page's fence time and the strict build's time, if this run built the site.

    These are measurements for the log (budgets: 45 s per page, 3 min per cold build), not assertions.
    """
    table = config.stash.get(FENCE_TIMES, None)
    if table is None:
        return
    terminalreporter.section("wall time of executed fences per page (pytest run), and of the strict build")
    for page, row in sorted(table.items(), key=lambda kv: -kv[1]["seconds"]):
        terminalreporter.write_line(f"{row['seconds']:7.1f} s  {row['fences']:3d} fences  {page}")


def pytest_collection_modifyitems(session, config, items) -> None:
    """The browser tests go last: their script starts in the background as soon as the site is
    built (``pytest_fixture_setup`` below) and runs beside the other tests."""
    browser = [i for i in items if i.nodeid.startswith("tests/test_browser.py")]
    if browser:
        items[:] = [i for i in items if not i.nodeid.startswith("tests/test_browser.py")] + browser
        config.stash[BROWSER_RUN] = None  # the session has browser tests: start the script early


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Right after the site is built, start the browser script on it in the background, if the
    session has browser tests; the ``report`` fixture of ``tests/test_browser.py`` waits for it."""
    result = yield
    if fixturedef.argname == "built_site":
        _start_browser(request.config, result)
    return result


def pytest_sessionfinish(session, exitstatus) -> None:
    """A browser script nobody waited for (the session stopped early) is stopped with it; the
    early build's directory is removed once its build is over."""
    early = session.config.stash.get(EARLY_BUILD, None)
    if early is not None and early.stop():
        concurrent.futures.wait([early.result], timeout=300)  # a build under way (e.g. after -x): let it end
    proc = session.config.stash.get(BROWSER_RUN, None)
    if proc and proc.poll() is None:
        proc.kill()
        proc.wait()
    if early is not None:
        shutil.rmtree(early.tmp, ignore_errors=True)
