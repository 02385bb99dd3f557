"""The fence scanner, snippet expansion and fence executor shared by the build hook and the pytest runner."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

from kexue._docs import (
    FenceError,
    FenceExecutor,
    defined_names,
    exec_enabled,
    expand_snippets,
    free_names,
    library_excerpt,
    scan_fences,
    shown_code,
    strip_docstrings,
)

PAGE = '''# Title

```python exec="on" session="s" result="text"
print(1)
```

````markdown
```python exec="on" session="inner"
this is an example, not a fence
```
````

=== "Tab"

    ```python exec="on" session="s"
    y = 2
    ```

~~~python notest
z = 3
~~~

``not a fence`` and ```inline``` code
'''


def test_scan_finds_top_level_indented_and_tilde_fences_but_not_nested_ones():
    fences = scan_fences(PAGE)
    assert [(f.line, f.lang, f.indent) for f in fences] == [(3, "python", 0), (7, "markdown", 0), (15, "python", 4), (19, "python", 0)]
    first, example, tabbed, tilde = fences
    assert first.executed and first.session == "s" and first.attrs["result"] == "text"
    assert first.source == "print(1)\n"
    assert "this is an example" in example.source and not example.executed
    assert tabbed.source == "y = 2\n" and tabbed.executed
    assert tilde.flags == ("notest",) and not tilde.executed


def test_unclosed_fence_runs_to_the_end():
    fences = scan_fences("```python exec=\"on\"\nx = 1\n")
    assert len(fences) == 1 and fences[0].source == "x = 1\n"


@pytest.mark.parametrize(("value", "expected"), [("on", True), ("1", True), ("true", True), ("off", False), ("no", False), ("", False), (None, False)])
def test_exec_truthiness_mirrors_markdown_exec(value, expected):
    assert exec_enabled(value) is expected


def test_expand_snippets_whole_file_line_range_section_and_escape(tmp_path: Path):
    (tmp_path / "m.py").write_text("a = 1\n# --8<-- [start:two]\nb = 2\n# --8<-- [end:two]\nc = 3\n", encoding="utf-8")
    src = '--8<-- "m.py"\n--8<-- "m.py:5:5"\n    --8<-- "m.py:two"\n;--8<-- "m.py"\n'
    out = expand_snippets(src, tmp_path)
    assert out == (
        "a = 1\n# --8<-- [start:two]\nb = 2\n# --8<-- [end:two]\nc = 3\n"
        "c = 3\n"
        "    b = 2\n"
        '--8<-- "m.py"\n'
    )


def test_expand_snippets_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        expand_snippets('--8<-- "nope.py"\n', tmp_path)
    (tmp_path / "m.py").write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'missing'"):
        expand_snippets('--8<-- "m.py:missing"\n', tmp_path)


def test_executor_shares_a_namespace_per_session_and_captures_print(tmp_path: Path):
    run = FenceExecutor(tmp_path)
    assert run.run("x = 2\nprint('a', 'b', sep='-')", page="p.md", line=3, session="s") == "a-b\n"
    assert run.run("print(x * 21)", page="p.md", line=9, session="s") == "42\n"
    with pytest.raises(FenceError) as info:
        run.run("print(x)", page="p.md", line=12, session=None)  # private namespace: x is unknown
    assert "NameError" in info.value.traceback
    assert run.fences == {"p.md": 3}


def test_executor_errors_name_the_page_and_its_line(tmp_path: Path):
    run = FenceExecutor(tmp_path)
    with pytest.raises(FenceError) as info:
        run.run("print('half')\n1 / 0", page="articles/x.md", line=40, session="s")
    assert 'File "docs/articles/x.md", line 42' in info.value.traceback
    assert info.value.printed == "half\n"


def test_executor_seeds_the_global_generators_before_a_page(tmp_path: Path):
    import torch

    run = FenceExecutor(tmp_path)
    torch.rand(5)  # whatever ran before in this process
    first = run.run("import torch\nprint(torch.rand(2).tolist())", page="a.md", line=1, session="a")
    torch.rand(7)
    second = run.run("import torch\nprint(torch.rand(2).tolist())", page="b.md", line=1, session="b")
    assert first == second


def test_executor_cache_hits_replay_and_record_mode(tmp_path: Path):
    cache = tmp_path / "cache"
    recorder = FenceExecutor(tmp_path, cache, read=False)
    fences = ["n = 1\nprint(n)", "n += 1\nprint(n)", "print(n * 10)"]
    outs = [recorder.run(c, page="p.md", line=i, session="s") for i, c in enumerate(fences)]
    assert outs == ["1\n", "2\n", "20\n"] and recorder.misses == 3 and recorder.hits == 0
    reader = FenceExecutor(tmp_path, cache, read=True)
    assert [reader.run(c, page="p.md", line=i, session="s") for i, c in enumerate(fences)] == outs
    assert (reader.hits, reader.misses) == (3, 0)
    # A changed last fence misses: the two skipped fences are replayed first, in order.
    again = FenceExecutor(tmp_path, cache, read=True)
    again.run(fences[0], page="p.md", line=0, session="s")
    again.run(fences[1], page="p.md", line=1, session="s")
    assert again.run("print(n * 100)", page="p.md", line=2, session="s") == "200\n"
    assert (again.hits, again.misses) == (2, 1)
    # Record mode never serves from the cache: every fence runs.
    assert FenceExecutor(tmp_path, cache, read=False).run("print('ran')", page="q.md", line=0, session=None) == "ran\n"


def test_cache_key_follows_the_files_a_session_names(tmp_path: Path):
    """A warm build must not show stale benchmark numbers, and fences that read no file keep their key."""
    (tmp_path / "kexue").mkdir()
    (tmp_path / "kexue" / "m.py").write_text("x = 1\n", encoding="utf-8")
    data = tmp_path / "benchmarks" / "results.json"
    data.parent.mkdir()
    reads = ['import json\nr = json.loads(open("benchmarks/results.json").read())']
    plain = ["print(1)"]
    data.write_text('{"ratio": 2.2}', encoding="utf-8")
    first = FenceExecutor(tmp_path)
    k_reads, k_plain = first.key("p.md", "s", reads), first.key("q.md", "t", plain)
    data.write_text('{"ratio": 5.6}', encoding="utf-8")
    second = FenceExecutor(tmp_path)
    assert second.key("p.md", "s", reads) != k_reads
    assert second.key("q.md", "t", plain) == k_plain
    assert second.key("p.md", "s", [*reads, "print(r)"]) != second.key("p.md", "s", ["print(r)"])
    (tmp_path / "kexue" / "m.py").write_text("x = 2\n", encoding="utf-8")
    assert FenceExecutor(tmp_path).key("q.md", "t", plain) == k_plain  # a module the session does not import


def test_cache_key_follows_the_kexue_modules_a_session_imports(tmp_path: Path):
    """Editing one module re-runs the pages that import it, directly or through another module."""
    pkg = tmp_path / "kexue"
    (pkg / "experiments").mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "a.py").write_text("from kexue._checks import check\n", encoding="utf-8")
    (pkg / "_checks.py").write_text("def check(): pass\n", encoding="utf-8")
    (pkg / "b.py").write_text("y = 1\n", encoding="utf-8")
    (pkg / "experiments" / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "experiments" / "a.py").write_text("import kexue.a\n", encoding="utf-8")
    uses_a = ["from kexue.experiments import a\nprint(1)"]
    uses_b = ["from kexue.b import y"]
    assert FenceExecutor(tmp_path).kexue_sources(uses_a) == [
        "kexue/__init__.py", "kexue/_checks.py", "kexue/a.py", "kexue/experiments/__init__.py", "kexue/experiments/a.py"]
    before = (FenceExecutor(tmp_path).key("p.md", "s", uses_a), FenceExecutor(tmp_path).key("q.md", "t", uses_b))
    (pkg / "_checks.py").write_text("def check(): return 1\n", encoding="utf-8")
    after = (FenceExecutor(tmp_path).key("p.md", "s", uses_a), FenceExecutor(tmp_path).key("q.md", "t", uses_b))
    assert after[0] != before[0] and after[1] == before[1]


# ----------------------------------------------------------------------------- code as readers see it


def test_free_names_are_what_a_block_takes_from_blocks_above():
    block = (
        "import torch\n"
        "from kexue.plot import figure\n"
        "fig, ax = figure()\n"
        "for i in range(3):\n"
        "    ax.plot(x[i], [f(v) for v in ys])\n"
        "def g(a):\n"
        "    return a + H.scale\n"
        "class C:\n"
        "    size = n\n"
        "print(__name__, len(ys))\n"
    )
    assert free_names(block) == {"x", "f", "ys", "H", "n"}
    assert {"torch", "figure", "fig", "ax", "i", "g", "C"} <= defined_names(block)
    assert free_names("import math\nprint(math.pi)\n") == set()
    assert free_names("def broken(:\n") == set()  # does not parse: nothing to say


def test_shown_code_drops_hidden_lines_like_markdown_exec():
    code = "x = 1\nprint(x)  # markdown-exec: hide\ny = 2\n"
    assert shown_code(code) == "x = 1\ny = 2\n"


def test_strip_docstrings_keeps_signature_body_and_a_raw_summary():
    code = (
        "@register('x')\n"
        "def f(x: float) -> float:\n"
        '    """Scale by $\\\\alpha$, the article\'s eq. (3).\n'
        "\n"
        "    $$y = \\\\alpha x$$\n"
        "\n"
        "    Args:\n"
        "        x: a number.\n"
        '    """\n'
        "    return 2 * x\n"
        "\n"
        "class K:\n"
        '    """A class."""\n'
        "\n"
        "    def m(self):\n"
        '        """A method,\n        on two lines.\n\n        More."""\n'
        "        return 1\n"
    )
    out = strip_docstrings(code)
    assert out.split("\n")[:4] == [
        "@register('x')",
        "def f(x: float) -> float:",
        '    r"""Scale by $\\alpha$, the article\'s eq. (3)."""',
        "    return 2 * x",
    ]
    assert '        """A method, on two lines."""' in out and "More" not in out and "Args" not in out
    assert '    """A class."""' in out
    assert strip_docstrings("def broken(:\n") == "def broken(:\n"


def test_library_excerpt_reads_only_pure_includes_of_the_library(tmp_path: Path):
    (tmp_path / "kexue").mkdir()
    (tmp_path / "kexue" / "demo.py").write_text(
        "# --8<-- [start:two]\n"
        "def public(x):\n"
        '    """Public.\n\n    Details.\n    """\n'
        "    return x\n\n\n"
        "def _private(x):\n"
        '    """Private."""\n'
        "    return x\n"
        "# --8<-- [end:two]\n",
        encoding="utf-8",
    )
    excerpt = library_excerpt('--8<-- "kexue/demo.py:two"\n', tmp_path)
    assert excerpt is not None
    assert (excerpt.path, excerpt.module, excerpt.names) == ("kexue/demo.py", "kexue.demo", ("public",))
    assert '    """Public."""' in excerpt.code and "Details" not in excerpt.code and "--8<--" not in excerpt.code
    assert library_excerpt('x = 1\n--8<-- "kexue/demo.py:two"\n', tmp_path) is None  # mixed with code
    assert library_excerpt(';--8<-- "kexue/demo.py:two"\n', tmp_path) is None  # escaped include
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.py").write_text("y = 1\n", encoding="utf-8")
    assert library_excerpt('--8<-- "docs/x.py"\n', tmp_path) is None  # not the library


def test_pages_run_in_workers_fill_the_cache_the_build_reads(tmp_path: Path):
    """A cold build with a cache runs the pages it lacks in worker processes (docs/_hooks/fences.py):
    the outputs are the ones a one-process run prints, every fence is then a hit, and a page whose
    code fails comes back with its error (the build runs it again and reports it)."""
    from kexue._docs import PageRun, pages_to_run

    docs = tmp_path / "docs"
    (docs / "articles").mkdir(parents=True)
    exec_fence = '```python exec="on" session="{s}"\n{code}\n```\n'
    (docs / "a.md").write_text("# A\n\n" + exec_fence.format(s="a", code="x = 2") + "\ntext\n\n"
                               + exec_fence.format(s="a", code="import torch\nprint(x * 21, torch.rand(2).tolist())"),
                               encoding="utf-8")
    (docs / "articles" / "b.md").write_text("# B\n\n```python exec=\"on\"\nprint('b')\n```\n", encoding="utf-8")
    (docs / "c.md").write_text("# C\n\n" + exec_fence.format(s="c", code="1 / 0"), encoding="utf-8")
    (docs / "d.md").write_text("# D\n\n```python\nprint('display only')\n```\n", encoding="utf-8")
    pages = ["a.md", "articles/b.md", "c.md", "d.md"]
    cache = tmp_path / "cache"
    assert pages_to_run(tmp_path, docs, pages, cache) == ["a.md", "articles/b.md", "c.md"]  # d runs nothing

    run = PageRun(tmp_path, docs, pages[:3], cache, 2)
    try:
        results = {page: run.result(page) for page in run.jobs}
    finally:
        run.close()
    assert (results["a.md"].fences, results["a.md"].error) == (2, None)
    assert (results["articles/b.md"].fences, results["articles/b.md"].error) == (1, None)
    assert "ZeroDivisionError" in results["c.md"].error and results["c.md"].failed_line == 3
    assert pages_to_run(tmp_path, docs, pages, cache) == ["c.md"]

    one_process = FenceExecutor(tmp_path)  # no cache: what a build without workers prints
    reader = FenceExecutor(tmp_path, cache, read=True)
    for page in ("a.md", "articles/b.md"):
        for f in scan_fences((docs / page).read_text(encoding="utf-8")):
            if f.executed:
                expected = one_process.run(f.source, page=page, line=f.line, session=f.session)
                assert reader.run(f.source, page=page, line=f.line, session=f.session) == expected
    assert (reader.hits, reader.misses) == (3, 0)


def test_page_run_gives_back_a_page_no_worker_has_started(tmp_path: Path):
    """The build collects pages from the workers as it reaches them: a page still waiting for a
    worker is taken back (the build then runs it itself, so it is not in the cache), a running or
    finished one is waited for."""
    from kexue._docs import PageRun, pages_to_run

    docs = tmp_path / "docs"
    docs.mkdir()
    fence = '```python exec="on" session="{s}"\n{code}\n```\n'
    # One worker: the longest page (by size, with no timings on record) runs first, the next one
    # is queued for the worker, the third waits in the pool until a worker is free.
    (docs / "first.md").write_text("# 1\n\n" + fence.format(s="1", code="import time\ntime.sleep(1.5)")
                                   + "\n" + "padding " * 400 + "\n", encoding="utf-8")
    (docs / "second.md").write_text("# 2\n\n" + fence.format(s="2", code="print(2)") + "\n" + "pad " * 100,
                                    encoding="utf-8")
    (docs / "third.md").write_text("# 3\n\n" + fence.format(s="3", code="print(3)"), encoding="utf-8")
    pages, cache = ["first.md", "second.md", "third.md"], tmp_path / "cache"
    run = PageRun(tmp_path, docs, pages, cache, 1)
    try:
        assert list(run.jobs) == pages
        assert run.claim("third.md") is True
        assert run.claim("first.md") is False  # running: the build waits for it instead
        assert (run.result("first.md").error, run.result("second.md").fences) == (None, 1)
    finally:
        run.close()
    assert pages_to_run(tmp_path, docs, pages, cache) == ["third.md"]


def test_pytest_runs_the_pages_in_workers_and_reports_each_fence(pytester: pytest.Pytester, tmp_path: Path):
    """With two pages selected and a record directory, pytest runs the pages in worker processes
    (kexue/_pytest_docs.py): a fence that ran passes, the fence that raised fails with its own
    traceback, and the later fences of that page fail as not run."""
    docs = pytester.path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text('# G\n\n```python exec="on" session="g"\nprint(6 * 7)\n```\n', encoding="utf-8")
    (docs / "bad.md").write_text(
        '# B\n\n```python exec="on" session="b"\nx = 1\n```\n\n```python exec="on" session="b"\n'
        'raise KeyError("the fence\'s own error")\n```\n\n```python exec="on" session="b"\nprint(x)\n```\n',
        encoding="utf-8")
    env = {"KEXUE_FENCE_RECORD": str(tmp_path / "record"), "KEXUE_FENCE_WORKERS": "2", "MPLBACKEND": "Agg"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        result = pytester.runpytest_subprocess("-p", "kexue._pytest_docs", "--markdown-docs", "-p", "no:cacheprovider",
                                               "-p", "no:randomly", "docs")
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    assert "KeyError: \"the fence's own error\"" in out and "worker process" in out
    assert "not run: the page's fence at line 7 failed first" in out
    assert any((tmp_path / "record").rglob("*.out"))  # the outputs are recorded for the strict build
