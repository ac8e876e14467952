"""Unit tests of the report step's library: overview page, provenance, stable tables."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from cartcohort.dictionary import read_dictionary
from cartcohort.report import (
    build_provenance,
    config_hash,
    env_packages,
    overview_html,
    overview_page,
    provenance_record,
    read_json,
    record_versions,
    sha256_path,
    skipped_analyses,
    write_json,
)
from cartcohort.report.findings import key_findings
from cartcohort.report.overview import library_cells, patients_by_timepoint
from cartcohort.tables import read_table, write_table
from cartcohort.vocab import ENTRY_CELL_RANGER

DICTIONARY = REPO / "resources" / "features.yaml"


def test_write_table_is_byte_stable_and_sorted(tmp_path):
    df = pd.DataFrame({"b": [2, 1, 3], "x": [1 / 3, np.nan, 2.0]})
    write_table(df, tmp_path / "a.tsv", sort_by=["b"])
    write_table(df.sample(frac=1, random_state=1), tmp_path / "b.tsv", sort_by=["b"])
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    assert (tmp_path / "a.tsv").read_text() == "b\tx\n1\tNA\n2\t0.333333\n3\t2\n"
    back = read_table(tmp_path / "a.tsv")
    assert back["x"].isna().tolist() == [True, False, False]


def test_write_table_gzip_has_no_timestamp(tmp_path):
    df = pd.DataFrame({"a": [1, 2]})
    write_table(df, tmp_path / "a.tsv.gz")
    first = (tmp_path / "a.tsv.gz").read_bytes()
    write_table(df, tmp_path / "a.tsv.gz")
    assert first == (tmp_path / "a.tsv.gz").read_bytes()
    assert gzip.decompress(first).decode() == "a\n1\n2\n"


def test_sha256_of_file_and_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_bytes(b"abc")
    assert sha256_path(tmp_path / "d" / "x.txt") == hashlib.sha256(b"abc").hexdigest()
    h1 = sha256_path(tmp_path / "d")
    (tmp_path / "d" / "x.txt").write_bytes(b"abd")
    assert sha256_path(tmp_path / "d") != h1


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_env_packages_reads_conda_and_pip_pins(tmp_path):
    env = tmp_path / "e.yaml"
    env.write_text("channels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n"
                   "  - python-igraph=1.0.0\n  - pip:\n      - scanpy==1.11.5\n")
    assert env_packages(env) == {"igraph": "1.0.0", "scanpy": "1.11.5"}
    env.write_text("dependencies:\n  - scanpy\n")
    with pytest.raises(ValueError, match="not pinned"):
        env_packages(env)


def test_build_provenance_records_inputs_and_versions(tmp_path):
    f = tmp_path / "s.tsv"
    f.write_text("x")
    rec = build_provenance(config={"seed": 3}, input_files={"sheet": str(f)},
                           step_versions={"qc": {"scanpy": "1.11.5"}}, workflow_dir=tmp_path)
    assert rec["seed"] == 3
    assert rec["inputs"]["sheet"]["sha256"] == hashlib.sha256(b"x").hexdigest()
    assert rec["software"]["qc"]["scanpy"] == "1.11.5"
    assert rec["git_commit"] is None  # not a git repository
    json.dumps(rec)


def test_overview_lists_skipped_samples_and_analyses():
    qc = pd.DataFrame({"sample": ["A", "B"], "compartment": ["product", "PB"],
                       "n_cells_in": [100, 50], "n_cells_out": [90, 0],
                       "sample_excluded": [False, True],
                       "exclusion_reason": ["", "0 cells passed QC (< 50)"]})
    assoc = pd.DataFrame({"feature": ["all"], "test": ["skipped"], "pvalue": [np.nan],
                          "note": ["only one response group"]})
    skipped = skipped_analyses(qc_samples=qc, association=assoc, excluded_by_config=["C"],
                               extra_notes={"CAR+ calls": "no CAR feature"})
    assert list(skipped["what"]) == ["sample C", "sample B", "association: all", "CAR+ calls"]
    clinical = pd.DataFrame({"patient": ["p1"], "response": ["CR"]})
    warnings = pd.DataFrame(columns=["sample", "step", "check", "count", "detail", "action"])
    page = overview_html(qc_samples=qc, clinical=clinical, skipped=skipped, warnings=warnings)
    assert "<b>150</b> cells loaded" in page and "<b>90</b> cells kept" in page
    assert "only one response group" in page
    # the step function of rule overview: the same page from the tables and config kwargs
    feats = pd.DataFrame({"sample": ["A"], "patient": ["p1"], "timepoint": ["IP"],
                          "timepoint_day": [0]})
    assert overview_page(qc, assoc, clinical, warnings, excluded_by_config=["C"],
                         extra_notes={"CAR+ calls": "no CAR feature"}, sample_features=feats,
                         dictionary=read_dictionary(DICTIONARY)) == overview_html(
        qc_samples=qc, clinical=clinical, skipped=skipped, warnings=warnings,
        entry_point=ENTRY_CELL_RANGER, by_timepoint=patients_by_timepoint(feats, clinical))


def _assoc_row(feature, family, p, q, qfam, effect, med_r, med_nr, twins=""):
    return {"feature": feature, "test": "mann_whitney", "effect": effect, "ci_low": effect - 0.3,
            "ci_high": min(effect + 0.3, 1.0), "pvalue": p, "qvalue": q, "qvalue_family": qfam,
            "n_responders": 6, "n_nonresponders": 5, "family": family,
            "direction": "higher_in_responders" if effect > 0 else "lower_in_responders",
            "median_responders": med_r, "median_nonresponders": med_nr, "twins": twins}


def test_landing_page_cohort_tables_findings_and_no_machine_paths():
    """Patients by response x timepoint, cells and QC pass rate per library, one sentence
    per finding generated from the association table (labels, units, both q-values,
    twins by label), and an absolute path in a warning printed without its folders."""
    dictionary = read_dictionary(DICTIONARY)
    clinical = pd.DataFrame({"patient": ["p1", "p2", "p3", "p4"],
                             "response": ["CR", "CR", "PD", None]})
    feats = pd.DataFrame({"sample": ["p1_IP", "p2_IP", "p3_IP", "p1_D14", "p3_D14"],
                          "patient": ["p1", "p2", "p3", "p1", "p3"],
                          "timepoint": ["IP", "IP", "IP", "D14", "D14"],
                          "timepoint_day": [0, 0, 0, 14, 14]})
    tab = patients_by_timepoint(feats, clinical).set_index("response")
    assert list(tab.columns) == ["IP", "D14", "all patients"]
    assert tab.loc["CR"].tolist() == [2, 1, 2] and tab.loc["PD"].tolist() == [1, 1, 1]
    assert tab.loc["not known"].tolist() == [0, 0, 1] and tab.loc["total"].tolist() == [3, 2, 4]
    qc = pd.DataFrame({"sample": ["p1_IP", "p2_IP"], "compartment": ["product"] * 2,
                       "n_cells_in": [200, 100], "n_cells_out": [150, 100],
                       "sample_excluded": [False, False]})
    assert library_cells(qc)["QC pass %"].tolist() == [75.0, 100.0]
    assoc = pd.DataFrame([
        _assoc_row("frac_tcm_cd8", "exploratory", 0.001, 0.04, 0.01, 0.8, 0.3, 0.1),
        _assoc_row("exhausted_fraction", "primary", 0.002, 0.02, 0.02, -0.9, 0.05, 0.25,
                   twins="frac_exhausted (rho=1); pd1_pos_fraction (rho=0.97)"),
        _assoc_row("rep_richness", "exploratory", 0.3, 0.6, 0.6, 0.2, 10, 9)])
    assoc["feature_family"] = [dictionary[f].family for f in assoc["feature"]]
    found = key_findings(assoc, dictionary=dictionary)
    assert len(found) == 2  # rep_richness is no finding; the primary panel comes first
    assert found[0].startswith("Exhausted (primary panel) is lower in responders: median "
                               "5.0 % in 6 responders vs 25.0 % in 5 non-responders")
    assert "q = 0.02 within the primary panel" in found[0]
    assert "near-copies (|Spearman rho| above the threshold): Exhausted cells, PD-1+ cells" \
        in found[0]
    assert found[1].startswith("Central memory (Tcm) of CD8+ cells (memory/exhaustion family)"
                               " is higher in responders")
    none = key_findings(assoc.iloc[[2]], dictionary=dictionary)
    assert none[0].startswith("No product feature differs") and "Rep" not in none[0]
    warnings = pd.DataFrame([{"sample": "p1_IP", "step": "load", "check": "x", "count": 1,
                              "detail": "read /home/someone/project/data/p1/matrix.h5",
                              "action": "none"}])
    page = overview_html(qc_samples=qc, clinical=clinical, skipped=pd.DataFrame(),
                         warnings=warnings, by_timepoint=patients_by_timepoint(feats, clinical),
                         findings=found)
    assert "/home/someone" not in page and ".../p1/matrix.h5" in page
    assert "Exhausted (primary panel) is lower in responders" in page
    assert "<b>250</b> cells kept after QC (83.3 % pass QC)" in page


def test_record_versions_and_json_round_trip(tmp_path):
    env = tmp_path / "e.yaml"
    env.write_text("dependencies:\n  - pandas==2.3.3\n  - not-a-real-package==1.0\n")
    versions = record_versions(env)
    assert versions["not-a-real-package"] is None and versions["python"].count(".") == 2
    assert versions["pandas"] == pd.__version__
    write_json(versions, tmp_path / "v.json")
    assert read_json(tmp_path / "v.json") == versions
    text = (tmp_path / "v.json").read_text()
    assert text == json.dumps(versions, indent=1, sort_keys=True)


def test_provenance_record_pairs_steps_with_version_files(tmp_path):
    for step, version in (("qc", "1"), ("load", "2")):
        write_json({"scanpy": version}, tmp_path / f"v_{step}.json")
    rec = provenance_record([tmp_path / "v_qc.json", tmp_path / "v_load.json"],
                            steps=["qc", "load"], config={"seed": 1}, input_files={},
                            workflow_dir=tmp_path)
    assert rec["software"] == {"load": {"scanpy": "2"}, "qc": {"scanpy": "1"}}
    assert list(rec["software"]) == ["load", "qc"] and rec["seed"] == 1
