"""The fence scanner and snippet expansion shared by the build hook and the pytest runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from kexue._docs import exec_enabled, expand_snippets, scan_fences

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


def _fences_hook():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "_hooks" / "fences.py"
    spec = importlib.util.spec_from_file_location("kexue_fences_hook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fence_cache_key_changes_with_the_files_fences_read(tmp_path: Path, monkeypatch):
    """A warm build must not show stale benchmark numbers: results.json is part of every cache key."""
    hook = _fences_hook()
    assert "benchmarks/results.json" in hook._READ_BY_FENCES
    data = tmp_path / "results.json"
    monkeypatch.setattr(hook, "_READ_BY_FENCES", (str(data),))
    absent = hook._salt()
    data.write_text('{"ratio": 2.2}', encoding="utf-8")
    first = hook._salt()
    data.write_text('{"ratio": 5.6}', encoding="utf-8")
    assert len({absent, first, hook._salt()}) == 3
    data.write_text('{"ratio": 2.2}', encoding="utf-8")
    assert hook._salt() == first


def test_fence_clock_sums_time_per_page_and_passes_results_through():
    hook = _fences_hook()
    calls = []

    def run(code, returncode=None, session=None, id=None, **extra):
        calls.append((code, session, id))
        return f"out:{code}"

    clock = hook.FenceClock(run)
    assert clock("a", session="s", id="articles/x.md:10") == "out:a"
    assert clock("b", session="s", id="articles/x.md:20") == "out:b"
    assert clock("c", session=None, id="about.md:5") == "out:c"
    assert calls == [("a", "s", "articles/x.md:10"), ("b", "s", "articles/x.md:20"), ("c", None, "about.md:5")]
    assert clock.fences == {"articles/x.md": 2, "about.md": 1}
    assert set(clock.seconds) == {"articles/x.md", "about.md"} and all(v >= 0 for v in clock.seconds.values())
