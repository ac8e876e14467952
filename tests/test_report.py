"""Unit tests of the report step's library: overview page, provenance, stable tables."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

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
from cartcohort.tables import read_table, write_table
from cartcohort.vocab import ENTRY_CELL_RANGER


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
    assoc = pd.DataFrame({"feature": ["all"], "test": ["skipped"],
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
    assert overview_page(qc, assoc, clinical, warnings, excluded_by_config=["C"],
                         extra_notes={"CAR+ calls": "no CAR feature"}) == overview_html(
        qc_samples=qc, clinical=clinical, skipped=skipped, warnings=warnings,
        entry_point=ENTRY_CELL_RANGER)


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
