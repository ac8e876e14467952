"""tools/check_layout.py on tiny synthetic files: long modules, long functions, duplicates."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("check_layout", REPO / "tools" / "check_layout.py")
check_layout = importlib.util.module_from_spec(_spec)
sys.modules["check_layout"] = check_layout  # dataclasses look their module up
_spec.loader.exec_module(check_layout)


def _body(n: int, tag: str = "x") -> str:
    """`n` distinct statement lines."""
    return "".join(f"    {tag}_{i} = {i}\n" for i in range(n))


def _run(capsys, *args) -> tuple[int, str]:
    rc = check_layout.main([str(a) for a in args])
    return rc, capsys.readouterr().out


def test_module_of_701_lines_listed_700_not(tmp_path, capsys):
    (tmp_path / "ok.py").write_text("a = 1\n" * 700)
    (tmp_path / "long.py").write_text("a = 1\n" * 701)
    rc, out = _run(capsys, "--library", tmp_path, "--functions", "--duplicates")
    assert rc == 1
    assert "module over 700 lines" in out and "long.py (701 lines)" in out
    assert "ok.py" not in out


def test_function_of_81_lines_listed_with_decorators_and_nested(tmp_path, capsys):
    # 1 decorator + def + 79 body lines = 81; the plain 80-line function passes
    (tmp_path / "f.py").write_text(
        "import functools\n\n\n@functools.cache\ndef long():\n" + _body(79, "a")
        + "\n\ndef fine():\n" + _body(79, "b")
        + "\n\nclass C:\n    def method(self):\n" + textwrap.indent(_body(80, "c"), "    ")
    )
    rc, out = _run(capsys, "--library", "--functions", tmp_path, "--duplicates")
    assert rc == 1
    assert "f.py:4-84 long (81 lines)" in out
    assert "C.method (81 lines)" in out
    assert " fine " not in out


def test_duplicate_block_of_10_lines_listed_9_not(tmp_path, capsys):
    lines = [f"total += values[{i}] * weight\n" for i in range(10)]
    (tmp_path / "a.py").write_text("def f(values, weight):\n    total = 0\n" + "".join(lines))
    # import lines, comments and blank lines in between do not count
    (tmp_path / "b.py").write_text("x = 1\n" + "".join(lines[:5]) + "import os\n# a comment\n\n"
                                   + "".join(lines[5:]) + "y = 2\n")
    nine = "".join(f"other += values[{i}]\n" for i in range(9))
    (tmp_path / "c.py").write_text(nine)
    (tmp_path / "d.py").write_text(nine)
    rc, out = _run(capsys, "--library", "--functions", "--duplicates", tmp_path)
    assert rc == 1
    rows = [ln for ln in out.splitlines() if ln.startswith("duplicated block")]
    assert len(rows) == 1, out
    assert "a.py:3-12 ~ " in rows[0] and "b.py:2-14" in rows[0] and "(10 lines)" in rows[0]
    assert "c.py" not in out


def test_clean_tree_exits_0(tmp_path, capsys):
    (tmp_path / "small.py").write_text("def f():\n    return 1\n")
    rc, out = _run(capsys, "--library", tmp_path, "--functions", tmp_path, "--duplicates", tmp_path)
    assert rc == 0 and out == ""


@pytest.mark.parametrize("n_same", [12, 25])
def test_one_row_per_repeated_run(tmp_path, capsys, n_same):
    block = "".join(f"value_{i} = compute({i})\n" for i in range(n_same))
    (tmp_path / "a.py").write_text(block)
    (tmp_path / "b.py").write_text("first = 0\n" + block)
    rc, out = _run(capsys, "--library", "--functions", "--duplicates", tmp_path)
    assert rc == 1
    assert out.count("duplicated block") == 1 and f"({n_same} lines)" in out
