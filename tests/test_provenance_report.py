"""The report's provenance page: rendering of a provenance record and the rule wiring."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
from html.parser import HTMLParser

import pytest
import yaml

from cartcohort.errors import CartCohortError
from cartcohort.report import (
    build_provenance,
    config_hash,
    render_provenance_html,
    software_table,
)
from conftest import REPO

STEPS = ["load", "qc", "report"]


def _record() -> dict:
    config = {"seed": 7, "samples": "a<b&c.tsv", "integrate": {"umap_random_state": 11},
              "qc": {"min_genes": 200}}
    return {
        "workflow": "cart-cohort",
        "git_commit": "0123456789abcdef0123456789abcdef01234567-dirty",
        "config": config,
        "config_sha256": config_hash(config),
        "seed": 7,
        "inputs": {
            "samples_sheet": {"path": "/data/a<b&c.tsv", "sha256": "a" * 64, "size_bytes": 1234},
            "P01.gex": {"path": "/data/P01/matrix.h5", "sha256": "b" * 64, "size_bytes": 10},
        },
        "software": {
            # unsorted on purpose: the page must put steps in workflow order
            "report": {"pandas": "2.3.3", "python": "3.11.7"},
            "load": {"pandas": "2.3.3", "scanpy": "1.11.5", "python": "3.11.7"},
            "qc": {"pandas": "2.2.0", "scanpy": "1.11.5", "scirpy": None, "python": "3.11.7"},
        },
    }


class _Tables(HTMLParser):
    """Rows of each <table> (cell texts, unescaped) and each row's class."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[tuple[str | None, list[str]]]] = []
        self.cell: list[str] | None = None
        self.pres: list[str] = []
        self.in_pre = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append((dict(attrs).get("class"), []))
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "pre":
            self.in_pre, self.pres = True, [*self.pres, ""]

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1][1].append("".join(self.cell))
            self.cell = None
        elif tag == "pre":
            self.in_pre = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
        if self.in_pre:
            self.pres[-1] += data


def _parse(page: str) -> _Tables:
    p = _Tables()
    p.feed(page)
    p.close()
    return p


def _table_with_header(parsed: _Tables, first: str) -> list[tuple[str | None, list[str]]]:
    return next(t for t in parsed.tables if t[0][1][0] == first)


def test_summary_shows_commit_dirty_hash_and_seeds():
    rec = _record()
    parsed = _parse(render_provenance_html(rec, step_order=STEPS))
    summary = dict(r[1] for r in _table_with_header(parsed, "field")[1:])
    assert summary["git commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert summary["uncommitted changes"].startswith("yes")
    assert summary["config SHA-256"] == rec["config_sha256"]
    assert summary["master seed"] == "7"
    assert "run date" not in summary  # the record has none and the page adds none
    seeds = dict(r[1] for r in _table_with_header(parsed, "config key")[1:])
    assert seeds == {"seed": "7", "integrate.umap_random_state": "11"}


def test_every_step_and_package_appears_and_differences_are_flagged():
    rec = _record()
    rows = _table_with_header(_parse(render_provenance_html(rec, step_order=STEPS)), "package")
    assert rows[0][1] == ["package", "load", "qc", "report", "note"]
    body = {r[1][0]: (r[0], r[1][1:]) for r in rows[1:]}
    assert set(body) == {"pandas", "python", "scanpy", "scirpy"}
    cls, cells = body["pandas"]
    assert cls == "differs" and cells[:3] == ["2.3.3", "2.2.0", "2.3.3"]
    assert "differs between steps: 2.2.0, 2.3.3" in cells[3]
    cls, cells = body["scirpy"]
    assert cls == "missing" and cells[:3] == ["—", "not installed", "—"]
    assert "not installed in: qc" in cells[3]
    for same in ("python", "scanpy"):
        assert body[same][0] is None and body[same][1][3] == ""
    assert body["scanpy"][1][2] == "—"  # report's env does not pin scanpy


def test_software_table_orders_unknown_steps_after_workflow_order():
    header, rows, classes = software_table({"zz": {"a": "1"}, "qc": {"a": "1"},
                                            "load": {"a": "2"}}, step_order=["load", "qc"])
    assert header == ["package", "load", "qc", "zz", "note"]
    assert rows == [["a", "2", "1", "1", "differs between steps: 1, 2"]] and classes == ["differs"]


def test_everything_is_escaped_and_inputs_are_full_length_monospace():
    rec = _record()
    rec["software"]["load"]["<script>evil"] = "1&2"
    page = render_provenance_html(rec, step_order=STEPS)
    assert "<script>" not in page and "a<b&c" not in page
    assert "/data/a&lt;b&amp;c.tsv" in page and "&lt;script&gt;evil" in page
    parsed = _parse(page)
    inputs = _table_with_header(parsed, "input")
    assert inputs[0][1] == ["input", "path", "size (bytes)", "sha256"]
    assert [r[1] for r in inputs[1:]] == [
        # an absolute path without its machine folders (issue #23; full in the record)
        ["P01.gex", ".../P01/matrix.h5", "10", "b" * 64],
        ["samples_sheet", "/data/a<b&c.tsv", "1,234", "a" * 64],
    ]
    assert re.search(r'<td class="mono">' + "a" * 64 + "</td>", page)
    # the full config, escaped, round-trips through the <pre>
    assert yaml.safe_load(parsed.pres[0]) == rec["config"]


def test_deterministic_and_independent_of_mapping_order():
    rec = _record()
    first = render_provenance_html(rec, step_order=STEPS)
    assert render_provenance_html(json.loads(json.dumps(rec)), step_order=STEPS) == first
    shuffled = {k: rec[k] for k in reversed(list(rec))}
    shuffled["inputs"] = dict(reversed(list(rec["inputs"].items())))
    shuffled["software"] = {s: dict(reversed(list(v.items())))
                            for s, v in reversed(list(rec["software"].items()))}
    assert render_provenance_html(shuffled, step_order=STEPS) == first
    assert render_provenance_html(rec, step_order=["report", "qc", "load"]) != first


def test_hash_mismatch_and_clean_tree_are_reported():
    rec = _record()
    rec["git_commit"] = "f" * 40
    page = render_provenance_html(rec, step_order=())
    assert "matches the resolved config" in page and "does NOT match" not in page
    summary = dict(r[1] for r in _table_with_header(_parse(page), "field")[1:])
    assert summary["uncommitted changes"] == "no"
    rec["config"] = {**rec["config"], "seed": 8}
    assert "does NOT match" in render_provenance_html(rec, step_order=())
    rec["git_commit"] = None
    rec["run_date"] = "2024-05-01"
    page = render_provenance_html(rec, step_order=())
    summary = dict(r[1] for r in _table_with_header(_parse(page), "field")[1:])
    assert "not recorded" in summary["git commit"] and summary["run date"] == "2024-05-01"


def test_incomplete_record_raises_with_fix():
    rec = _record()
    del rec["software"]
    with pytest.raises(CartCohortError, match="lacks software.*Fix"):
        render_provenance_html(rec, step_order=())
    rec = _record()
    rec["inputs"]["bad"] = {"path": "x"}
    with pytest.raises(CartCohortError, match=r"inputs\['bad'\] lacks path/sha256"):
        render_provenance_html(rec, step_order=())


def test_built_record_renders_with_sizes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"abc")
    (tmp_path / "s.tsv").write_bytes(b"12345")
    rec = build_provenance(config={"seed": 1}, input_files={"sheet": tmp_path / "s.tsv",
                                                            "folder": tmp_path / "d"},
                           step_versions={"qc": {"scanpy": "1.11.5"}}, workflow_dir=tmp_path)
    assert rec["inputs"]["sheet"]["size_bytes"] == 5
    assert rec["inputs"]["folder"]["size_bytes"] == 3
    rows = _table_with_header(_parse(render_provenance_html(rec, step_order=())), "input")[1:]
    # the page shows the last two components of an absolute path (no machine folders)
    assert [r[1][:3] for r in rows] == [["folder", f".../{tmp_path.name}/d", "3"],
                                        ["sheet", f".../{tmp_path.name}/s.tsv", "5"]]
    assert rows[1][1][3] == hashlib.sha256(b"12345").hexdigest()


# ------------------------------------------------------------------ wiring

def _path(rule: dict, relative: str) -> str:
    """A path of a rule's directive, relative to its rule file, made absolute."""
    return os.path.normpath(os.path.join(rule["basedir"], relative))


def _check_report_module():
    """tools/check_report.py as a module (as tests/test_check_report.py loads it)."""
    if "check_report" not in sys.modules:
        spec = importlib.util.spec_from_file_location("check_report",
                                                      REPO / "tools" / "check_report.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["check_report"] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["check_report"]


def test_provenance_page_rule_is_wired(workflow_dump):
    """Rule provenance_page as Snakemake parsed it: record in, the report page out (in the
    Provenance category that tools/check_report.py requires), a local rule, and a target
    of `all`."""
    rules = workflow_dump["rules"]
    assert "provenance_page" in rules, "rule provenance_page not found"
    rule = rules["provenance_page"]
    assert [(i["name"], i["pattern"]) for i in rule["input"]] == [
        ("record", "results/provenance.json")]
    assert "results/provenance.json" in [o["pattern"] for o in rules["provenance"]["output"]]
    [page] = rule["output"]
    assert page["pattern"] == "results/provenance.html"
    assert page["report"], "results/provenance.html is not a report() output"
    assert os.path.normpath(page["report"]["caption"]) == str(
        REPO / "workflow" / "report" / "provenance.rst")
    assert page["report"]["category"] == "Provenance"
    assert page["report"]["labels"] == {"page": "provenance"}
    assert _path(rule, rule["conda_env"]) == str(REPO / "envs" / "report.yaml")
    assert _path(rule, rule["script"]) == str(REPO / "workflow" / "scripts" / "provenance_page.py")
    assert rule["log"] and rule["benchmark"]
    assert (REPO / "workflow" / "report" / "provenance.rst").is_file()
    script = (REPO / "workflow" / "scripts" / "provenance_page.py").read_text()
    assert "render_provenance_html" in script and "snakemake.input.record" in script
    assert "provenance_page" in workflow_dump["localrules"]
    assert "results/provenance.html" in [i["pattern"] for i in rules["all"]["input"]]
    assert page["report"]["category"] in _check_report_module().REQUIRED

