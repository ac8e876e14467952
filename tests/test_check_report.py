"""tools/check_report.py: headless rendering of a real (tiny) Snakemake report.

A throw-away workflow with one report() figure per category is run and its report built
with this Snakemake; Chromium then renders it. Tests needing Chromium skip when
/usr/bin/chromium is absent (the tool itself installs it; the tests do not).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from conftest import REPO, SNAKEMAKE

spec = importlib.util.spec_from_file_location("check_report", REPO / "tools" / "check_report.py")
check_report = importlib.util.module_from_spec(spec)
sys.modules["check_report"] = check_report
spec.loader.exec_module(check_report)

needs_chromium = pytest.mark.skipif(
    not os.access(check_report.CHROMIUM, os.X_OK),
    reason=f"{check_report.CHROMIUM} is not installed (tools/check_report.py installs it)")

TINY_SNAKEFILE = """
CATEGORIES = {categories!r}
config.setdefault("seed", 3)


report: "workflow.rst"


rule all:
    input:
        [f"fig_{{c}}.png" for c in CATEGORIES],


rule fig:
    output:
        report("fig_{{cat}}.png", caption="caption.rst", category="{{cat}}"),
    shell:
        "exit 1  # the figures are written by the test; only --report is run"
"""


def _png(path: Path, rgb: tuple[int, int, int]) -> None:
    """A 4x4 PNG of one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + bytes(rgb) * 4 for _ in range(4))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _build_report(work: Path, categories: list[str]) -> Path:
    """A real Snakemake report with one figure per category (one `snakemake --report`)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "Snakefile").write_text(TINY_SNAKEFILE.format(categories=categories))
    # Jinja as in the workflow's own captions: rendered by `snakemake --report`
    (work / "caption.rst").write_text("A test figure of category {{ snakemake.wildcards.cat }}"
                                      "{% if snakemake.config['seed'] %}, seed "
                                      "{{ snakemake.config['seed'] }}{% endif %}.\n")
    (work / "workflow.rst").write_text('A tiny workflow (seed {{ snakemake.config["seed"] }}).\n')
    for i, cat in enumerate(categories):
        _png(work / f"fig_{cat}.png", (30 * i % 255, 120, 200))
    proc = subprocess.run([str(SNAKEMAKE), "-s", "Snakefile", "--report", "report.html"],
                          cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "report.html"


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> Path:
    return _build_report(tmp_path_factory.mktemp("tiny_report"), check_report.REQUIRED)


# ------------------------------------------------------------------ without Chromium

def test_parse_rendered_reads_results_section_only():
    dom = """<html><head><title>Snakemake Report</title></head><body>
    <div id="loading-screen" style="display: none;"><p>Loading Snakemake Report...</p></div>
    <div id="app"><nav><div><ul>
      <li class="uppercase font-bold p-1">General</li>
      <li><a href="#"><svg><path d="M1"></path></svg><span>Workflow</span></a></li>
      <li class="uppercase font-bold p-1">Results</li>
      <li><a href="#"><img src="x"><span>QC</span></a></li>
      <li><a href="#"><span>Clono</span><span>types</span></a></li>
    </ul><ul><li><span>Elsewhere</span></li></ul></div></nav>
    <script>var x = "<li>Scorecards</li>";</script>
    <p>%s</p></div></body></html>""" % ("text " * 60)
    page = check_report.parse_rendered(dom)
    assert page.has_app and page.error_page is None
    assert page.headings == ["General", "Results"]
    assert page.categories == ["QC", "Clonotypes"]
    assert page.text_chars >= 250
    problems = check_report.page_problems(page, required=["QC", "Scorecards"])
    assert any("Scorecards" in p and "rendered: QC, Clonotypes" in p for p in problems)


def test_page_problems_flags_unrendered_app_and_error_pages():
    blank = check_report.parse_rendered('<html><body><div id="app"></div></body></html>')
    problems = check_report.page_problems(blank, required=["QC"])
    assert any("rendered almost nothing" in p for p in problems)
    err = check_report.parse_rendered(
        "<html><head><title>file:///x.html is not available</title></head>"
        '<body><div id="main-frame-error" class="interstitial-wrapper"></div></body></html>')
    problems = check_report.page_problems(err, required=["QC"])
    assert any("error page" in p for p in problems) and any("no <div" in p for p in problems)


def test_data_problems_and_embedded_categories():
    html = ('<script id="categories">\n    var categories = {"QC": {"Other": ["a.png"]}, '
            '"Scorecards": {}};\n    </script>')
    cats = check_report.embedded_categories(html)
    assert cats == {"QC": {"Other": ["a.png"]}, "Scorecards": {}}
    problems = check_report.data_problems(cats, required=["QC", "Scorecards", "Overview"])
    assert len(problems) == 2 and "Scorecards" in problems[0] and "Overview" in problems[1]
    with pytest.raises(check_report.CheckError):
        check_report.embedded_categories("<html></html>")


def test_template_problems_flag_unrendered_jinja():
    html = ('<script id="workflow-desc">\n    var workflow_desc = "<p>seed {{ x }}</p>";\n'
            '    </script>\n<script id="results">\n    var results = {"a.png": {"caption": '
            '"<p>{% if y %}</p>"}, "b.png": {"caption": "<p>fine</p>"}, "c.png": {}};\n'
            '    </script>')
    texts = check_report.embedded_texts(html)
    assert texts == {"workflow description": "<p>seed {{ x }}</p>",
                     "caption of a.png": "<p>{% if y %}</p>", "caption of b.png": "<p>fine</p>",
                     "caption of c.png": ""}
    problems = check_report.template_problems(texts)
    assert len(problems) == 2
    assert "workflow description" in problems[0] and "'{{'" in problems[0]
    assert "caption of a.png" in problems[1] and "'{%'" in problems[1]
    with pytest.raises(check_report.CheckError):
        check_report.embedded_texts("<html></html>")


def test_real_report_has_no_unrendered_jinja(tiny_report):
    """The captions and workflow description of a real report are rendered: no `{{`/`{%`."""
    html = tiny_report.read_text()
    texts = check_report.embedded_texts(html)
    assert check_report.template_problems(texts) == []
    assert "{{" not in html and "{%" not in html
    assert "seed 3" in texts["workflow description"]
    for cat in check_report.REQUIRED:
        assert f"A test figure of category {cat}, seed 3." in texts[f"caption of fig_{cat}.png"]


def test_missing_report_exits_2(tmp_path, capsys):
    assert check_report.main([str(tmp_path / "nope.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ with Chromium

@needs_chromium
def test_real_report_renders_every_category(tiny_report, tmp_path, capsys):
    shot = tmp_path / "shot.png"
    assert check_report.main([str(tiny_report), "--screenshot", str(shot)]) == 0
    out = capsys.readouterr().out
    for cat in check_report.REQUIRED:
        assert f"{cat} (1 results)" in out
    assert check_report.png_size(shot) == (1400, 1000)
    assert check_report.screenshot_problems(shot) == []


@needs_chromium
def test_missing_category_fails_and_names_it(tiny_report, capsys):
    rc = check_report.main([str(tiny_report), *[f"--require={c}" for c in
                                                ["QC", "Scorecards", "Nonexistent"]]])
    assert rc == 1
    err = capsys.readouterr().err
    assert "missing from the rendered navigation: Nonexistent" in err
    assert "Scorecards" not in err.split("missing from the rendered navigation:")[1].split("(")[0]


@needs_chromium
def test_report_whose_javascript_fails_is_rejected(tiny_report, tmp_path, capsys):
    html = tiny_report.read_text()
    anchor = "class App extends React.Component"
    assert anchor in html, "the Snakemake report template changed; update this test"
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace(anchor, 'throw new Error("boom"); ' + anchor, 1))
    assert check_report.main([str(broken)]) == 1
    err = capsys.readouterr().err
    assert "rendered almost nothing" in err and "boom" in err


def test_install_refused_without_apt(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(check_report.CheckError, match="apt-get is not available"):
        check_report.ensure_chromium(str(tmp_path / "no-chromium"))
