"""Ids, libraries and response codes that would silently change the analysis (issue 17).

* Sample, patient and timepoint ids are text everywhere: ``001``, ``1e5``, ``TRUE``,
  ``nan`` and leading zeros come back unchanged from the sheets, the h5mu and every
  table; ids that cannot be file names are refused with the rule for valid ids.
* Two sample rows whose files have the same content (same checksum) are refused.
* Every patient has a response code of the config (``responders``, ``non_responders``,
  ``associate.exclude_responses``) or ``NA``: NA patients are kept out of the
  association and listed as a warning row; anything else is refused.
* The repertoire bootstrap is seeded from the data, not from the sample id, so the demo
  with its sample ids renamed gives the same tables (the e2e test at the end).

The refusals are checked on :func:`cartcohort.sheets.prepare_inputs` and through
Snakemake itself (exit status, the message naming the file, the place and the fix,
nothing written under results/).
"""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cartcohort import sheets, tables
from cartcohort.errors import Problem
from conftest import REPO, run_snakemake
from test_sheets import CLIN, _set_cell, make_cohort, problems_of

# --------------------------------------------------------------------------- helpers


def _config(c: dict, **overrides) -> dict:
    """The cohort's config without the CAR check (not the point here), plus overrides."""
    return dict(c["config"], car_features=[], **overrides)


def _rename_ids(c: dict, column: str, mapping: dict[str, str], table: str = "samples.tsv"):
    """Rename the ids of ``column`` in one of the cohort's sheets (every line)."""
    path = c["cfg"] / table
    lines = path.read_text().splitlines()
    col = lines[0].split("\t").index(column)
    for i in range(1, len(lines)):
        fields = lines[i].split("\t")
        fields[col] = mapping.get(fields[col], fields[col])
        lines[i] = "\t".join(fields)
    path.write_text("\n".join(lines) + "\n")


def _add_row(c: dict, fields: list[str]):
    with open(c["cfg"] / "samples.tsv", "a") as fh:
        fh.write("\t".join(fields) + "\n")


def _hits(probs: list[Problem], file: str, where: str, phrase: str) -> list[Problem]:
    return [p for p in probs if p.file.endswith(file) and p.where == where and phrase in p.what]


# --------------------------------------------------------------------------- ids are text

TRICKY = {"S1": "001", "S2": "1e5", "S3": "TRUE", "S4": "nan"}


def _tricky_cohort(tmp_path: Path) -> dict:
    c = make_cohort(tmp_path)
    _rename_ids(c, "sample", TRICKY)
    _rename_ids(c, "patient", {"P1": "007", "P2": "TRUE"})
    _rename_ids(c, "patient", {"P1": "007", "P2": "TRUE"}, table=CLIN)
    _rename_ids(c, "timepoint", {"IP": "00", "D7": "1e5"})
    return c


def test_tricky_ids_are_text_in_the_prepared_sheets(tmp_path):
    c = _tricky_cohort(tmp_path)
    samples, clinical, warnings = sheets.prepare_inputs(
        _config(c, primary_timepoint="00"), base_dir=tmp_path
    )
    assert list(samples.index) == ["001", "1e5", "TRUE", "nan"]
    assert samples["patient"].tolist() == ["007", "007", "TRUE", "TRUE"]
    assert samples["timepoint"].tolist() == ["00", "1e5", "00", "1e5"]
    assert list(clinical.index) == ["007", "TRUE"]
    assert warnings == []


def test_tricky_ids_round_trip_through_the_h5mu_and_the_cells_table(tmp_path):
    """One library loaded as the rule load_sample does, written to h5mu and read back, its
    obs written as a table and read back: every id unchanged."""
    import mudata

    from cartcohort import io as cio

    c = _tricky_cohort(tmp_path)
    samples, _, _ = sheets.prepare_inputs(_config(c, primary_timepoint="00"), base_dir=tmp_path)
    row = samples.loc["001"]
    meta = {k: row[k] for k in row.index if k not in ("gex", "vdj")}
    loaded = cio.load_sample(
        sample="001", gex_path=row["gex"], vdj_path=row["vdj"], meta=meta, car_features=["CAR"]
    )
    h5mu = tmp_path / "001.h5mu"
    loaded.mdata.write(h5mu)
    back = mudata.read_h5mu(h5mu)
    obs = back.mod["gex"].obs
    assert set(obs["sample"].astype(str)) == {"001"}
    assert set(obs["patient"].astype(str)) == {"007"}
    assert set(obs["timepoint"].astype(str)) == {"00"}
    assert all(name.startswith("001_") for name in obs.index)
    cells = obs.reset_index(names="cell")[["cell", "sample", "patient", "timepoint"]]
    path = tmp_path / "results" / "tables" / "cells.tsv.gz"
    tables.write_table(cells, path)
    again = tables.read_table(path)
    assert again["sample"].tolist() == ["001"] * len(cells)
    assert again["patient"].tolist() == ["007"] * len(cells)
    assert again["timepoint"].tolist() == ["00"] * len(cells)
    assert again["cell"].tolist() == cells["cell"].astype(str).tolist()
    summary = tmp_path / "results" / "load" / "001.summary.tsv"
    tables.write_table(loaded.summary, summary)
    assert tables.read_table(summary)["sample"].tolist() == ["001"]


@pytest.mark.parametrize("table", sorted(tables.TABLES))
def test_every_table_keeps_its_id_columns_as_text(tmp_path, table):
    """Each registered table, at its own path: every id column and text column of its
    contract comes back exactly as written, whatever the text looks like."""
    spec = tables.TABLES[table]
    ids = ["001", "1e5", "TRUE", "nan", "0007"]
    text_cols = [c for c in spec.columns if c in tables.ID_COLUMNS or c in spec.text]
    df = pd.DataFrame({c: ids for c in spec.columns})
    for c in spec.columns:
        if c not in text_cols:
            df[c] = np.arange(len(ids), dtype=float)
    path = tmp_path / spec.path.replace("{sample}", "001")
    tables.write_table(df, path)
    back = tables.read_table(path)
    for c in text_cols:
        assert back[c].tolist() == ids, (table, c)


# --------------------------------------------------------------------------- unsafe ids

UNSAFE = [
    ("..", "starts with '.'"),
    ("../S1", "starts with '.'"),
    ("P1/S1", "contains slash '/'"),
    ("S 1", "contains space"),
    ("S1;rm", "contains semicolon ';'"),
    ("$(id)", "starts with '$'"),
    ("S1`x`", "contains backtick '`'"),
    ("S1|x", "contains pipe '|'"),
    ("Sé", "contains non-ASCII character 'é'"),
    ("S" * 129, "is 129 characters long"),
]


@pytest.mark.parametrize("column", ["sample", "patient", "timepoint"])
@pytest.mark.parametrize("value, why", UNSAFE, ids=[u[1] for u in UNSAFE])
def test_unsafe_ids_are_refused_with_the_rule(tmp_path, column, value, why):
    c = make_cohort(tmp_path)
    _set_cell(c, 2, column, value)
    probs = problems_of(_config(c), tmp_path)
    hits = _hits(probs, "samples.tsv", f"line 2, column '{column}'", f"{column} id '{value}'")
    assert hits, probs
    assert why in hits[0].what
    assert hits[0].fix == sheets.ID_RULE
    assert "letters, digits, '_', '.' and '-'" in hits[0].fix


def test_unsafe_patient_id_of_the_clinical_table_is_refused(tmp_path):
    c = make_cohort(tmp_path)
    _rename_ids(c, "patient", {"P1": "P 1"})
    _rename_ids(c, "patient", {"P1": "P 1"}, table=CLIN)
    probs = problems_of(_config(c), tmp_path)
    assert _hits(probs, "clinical.tsv", "line 2, column 'patient'", "patient id 'P 1'")


def test_timepoint_spelled_na_is_refused(tmp_path):
    c = make_cohort(tmp_path)
    _set_cell(c, 3, "timepoint", "NA")
    probs = problems_of(_config(c), tmp_path)
    assert _hits(probs, "samples.tsv", "line 3, column 'timepoint'", "read back as missing")


# --------------------------------------------------------------------------- same library twice


def _copy_of_s1(c: dict, *, vdj: bool) -> None:
    """Row S5: a copy of S1's files under another folder (another path, same bytes)."""
    dst = c["data"] / "S5copy"
    shutil.copytree(c["data"] / "S1", dst)
    _add_s5(c, "../data/S5copy/filtered_feature_bc_matrix.h5",
            "../data/S5copy/filtered_contig_annotations.csv" if vdj else "")


def _add_s5(c: dict, gex: str, vdj: str) -> None:
    """Sheet row S5 (patient P2, day 14, blood) with the given file paths."""
    _add_row(c, ["S5", "P2", "D14", "14", "blood", "b2", "none", gex, vdj])


def test_two_samples_with_the_same_gex_file_are_refused(tmp_path):
    c = make_cohort(tmp_path)
    _copy_of_s1(c, vdj=True)
    probs = problems_of(_config(c), tmp_path)
    gex = _hits(probs, "samples.tsv", "line 6, column 'gex'", "sample 'S5' has the same GEX")
    vdj = _hits(probs, "samples.tsv", "line 6, column 'vdj'", "sample 'S5' has the same TCR")
    assert gex and vdj, probs
    assert "as sample 'S1' (line 2)" in gex[0].what and "same content" in gex[0].what
    assert "own files" in gex[0].fix


def test_a_symlinked_mtx_folder_of_another_sample_is_refused(tmp_path):
    c = make_cohort(tmp_path)
    (c["data"] / "S2link").symlink_to(c["data"] / "S2", target_is_directory=True)
    _add_s5(c, "../data/S2link/filtered_feature_bc_matrix", "")
    probs = problems_of(_config(c), tmp_path)
    assert _hits(probs, "samples.tsv", "line 6, column 'gex'", "same GEX data as sample 'S2'")


def test_an_excluded_copy_is_not_refused_and_a_repeated_path_is_reported_once(tmp_path):
    c = make_cohort(tmp_path)
    _copy_of_s1(c, vdj=False)
    samples, _, _ = sheets.prepare_inputs(_config(c, exclude_samples=["S5"]), base_dir=tmp_path)
    assert "S5" in samples.index
    c2 = make_cohort(tmp_path / "again")
    _set_cell(c2, 3, "gex", "../data/S1/filtered_feature_bc_matrix.h5")
    probs = problems_of(_config(c2), tmp_path / "again")
    line3 = [p for p in probs if p.where == "line 3, column 'gex'"]
    assert any("is also used by sample 'S1'" in p.what for p in line3)
    assert not any("same GEX data" in p.what for p in probs)


def test_checks_of_file_content_are_skipped_without_file_checks(tmp_path):
    c = make_cohort(tmp_path)
    _copy_of_s1(c, vdj=False)
    samples, _, _ = sheets.prepare_inputs(_config(c), base_dir=tmp_path, check_files=False)
    assert "S5" in samples.index


# --------------------------------------------------------------------------- response codes


def test_patient_without_response_label_is_refused(tmp_path):
    c = make_cohort(tmp_path)
    _set_cell(c, 2, "response", "", CLIN)
    probs = problems_of(_config(c), tmp_path)
    hit = _hits(probs, "clinical.tsv", "line 2, column 'response'", "no response label")
    assert hit and "patient 'P1'" in hit[0].what
    assert "write NA when the response is not known" in hit[0].fix


@pytest.mark.parametrize(
    "code, fix",
    [
        ("MR", "add 'MR' to responders, non_responders or associate.exclude_responses"),
        ("cr", "write 'CR'"),
        ("n/a", "write NA when the response is not known"),
        ("nan", "write NA when the response is not known"),
    ],
)
def test_unknown_response_code_is_refused_with_the_codes_of_the_config(tmp_path, code, fix):
    c = make_cohort(tmp_path)
    _set_cell(c, 3, "response", code, CLIN)
    probs = problems_of(_config(c), tmp_path)
    hit = _hits(probs, "clinical.tsv", "line 3, column 'response'", f"response '{code}'")
    assert hit, probs
    assert "responders CR; non_responders PR, SD, PD; associate.exclude_responses NE" in hit[0].what
    assert fix in hit[0].fix


def test_configured_codes_are_accepted(tmp_path):
    c = make_cohort(tmp_path)
    _set_cell(c, 2, "response", "sCR", CLIN)
    _set_cell(c, 3, "response", "MR", CLIN)
    cfg = _config(c, responders=["CR", "sCR"], non_responders=["MR", "PR", "SD", "PD"])
    _, clinical, warnings = sheets.prepare_inputs(cfg, base_dir=tmp_path)
    assert clinical["response"].tolist() == ["sCR", "MR"] and warnings == []


def test_response_na_is_carried_through_as_a_warning_row(tmp_path):
    c = make_cohort(tmp_path)
    _set_cell(c, 2, "response", "NA", CLIN)
    _, clinical, warnings = sheets.prepare_inputs(_config(c), base_dir=tmp_path)
    assert clinical.loc["P1", "response"] == "NA"
    assert len(warnings) == 1
    row = warnings[0]
    assert tuple(row) == sheets.WARNING_COLUMNS
    assert (row["sample"], row["step"], row["check"], row["count"]) == (
        "",
        "clinical",
        "response_na",
        1,
    )
    assert "P1" in row["detail"] and "clinical.tsv" in row["detail"]
    assert "left out of the association" in row["detail"] and row["action"]


def test_response_na_of_a_patient_without_included_sample_is_not_listed(tmp_path):
    c = make_cohort(tmp_path)
    _set_cell(c, 2, "response", "NA", CLIN)
    _, _, warnings = sheets.prepare_inputs(
        _config(c, exclude_samples=["S1", "S2"]), base_dir=tmp_path
    )
    assert warnings == []


@pytest.mark.parametrize(
    "overrides, where, phrase",
    [
        (
            {"responders": ["CR", "PR"]},
            "keys 'responders' and 'non_responders'",
            "code(s) PR are listed in both",
        ),
        (
            {"associate": {"exclude_responses": ["NE", "NA"]}},
            "keys 'responders', 'non_responders', 'associate.exclude_responses'",
            "'NA' is listed as a response code",
        ),
    ],
)
def test_contradictory_response_codes_of_the_config_are_refused(tmp_path, overrides, where, phrase):
    c = make_cohort(tmp_path)
    probs = problems_of(_config(c, **overrides), tmp_path)
    assert _hits(probs, "config", where, phrase), probs


def test_response_na_is_left_out_of_the_association_and_noted():
    from cartcohort import stats

    features = pd.DataFrame(
        {
            "sample": ["S1", "S2", "S3"],
            "patient": ["001", "002", "003"],
            "timepoint": ["IP"] * 3,
            "n_cells": [100, 100, 100],
            "x": [1.0, 2.0, 3.0],
        }
    )
    clinical = pd.DataFrame({"patient": ["001", "002", "003"], "response": ["CR", np.nan, "PD"]})
    patients, notes = stats.labelled_patients(features, clinical=clinical, primary_timepoint="IP")
    assert patients["patient"].tolist() == ["001", "002", "003"]
    assert patients["responder"].tolist()[0] is True and pd.isna(patients["responder"][1])
    assert notes["note"].tolist() == ["response NA (not known): excluded"]
    assert notes["item"].tolist() == ["002"]


def test_clonotype_figures_draw_na_and_excluded_patients_as_other():
    from cartcohort.pl.clonotypes import response_group

    patients = pd.Series(["P1", "P2", "P3", "P4", "P5"])
    response = {"P1": "CR", "P2": "NA", "P3": "PD", "P4": "NE"}
    got = response_group(patients, response=response, responders=["CR"]).tolist()
    assert got == ["responder", "other", "non-responder", "other", "other"]


# --------------------------------------------------------------------------- config maps of ids


def test_qc_per_sample_keys_must_be_sample_ids(tmp_path):
    c = make_cohort(tmp_path)
    _rename_ids(c, "sample", {"S1": "001"})
    cfg = _config(c, qc={"per_sample": {1: {"n_mads": 4}, "S9": {}}})
    probs = problems_of(cfg, tmp_path)
    hit = _hits(probs, "config", "key 'qc.per_sample'", "sample(s) not in the sample sheet")
    assert hit, probs
    assert "1, 'S9'" in hit[0].what and "would be ignored" in hit[0].what
    assert "write '001' in quotes" in hit[0].fix


# --------------------------------------------------------------------------- parse-time warnings


def test_row_warnings_are_cached_and_replayed(tmp_path, monkeypatch):
    """A warning row found while checking a library's files is returned again when the
    parse-time cache skips the unchanged library."""
    from cartcohort.sheets import samples as sample_checks

    c = make_cohort(tmp_path)
    original = sample_checks.check_row_files

    def with_warning(sheet, row, rec, lineno, **kwargs):
        out = original(sheet, row, rec, lineno, **kwargs)
        warnings = kwargs.get("warnings")
        if row["sample"] == "S1" and warnings is not None:
            warnings.append(
                sheets.warning_row(
                    sample="S1", step="sheets", check="test", count=3, detail="d", action="a"
                )
            )
        return out

    monkeypatch.setattr(sample_checks, "check_row_files", with_warning)
    cfg = _config(c)
    first = sheets.prepare_inputs(cfg, base_dir=tmp_path, cache_path="cache.json")
    assert [w["check"] for w in first.warnings] == ["test"]
    monkeypatch.setattr(sample_checks, "check_row_files", original)
    again = sheets.prepare_inputs(cfg, base_dir=tmp_path, cache_path="cache.json")
    assert again.warnings == first.warnings
    excluded = sheets.prepare_inputs(
        dict(cfg, exclude_samples=["S1"]), base_dir=tmp_path, cache_path="cache.json"
    )
    assert excluded.warnings == []


# --------------------------------------------------------------------------- repertoire seeds


def _cells(samples: dict[str, list[str | None]]) -> pd.DataFrame:
    rows = []
    for sample, clones in samples.items():
        for i, clone in enumerate(clones):
            rows.append(
                dict(
                    cell=f"{sample}_{i}",
                    sample=sample,
                    patient="P1",
                    timepoint="IP",
                    timepoint_day=0.0,
                    compartment="product",
                    clone_id=clone,
                )
            )
    return pd.DataFrame(rows)


def test_rarefied_diversity_does_not_depend_on_the_sample_ids():
    from cartcohort.tl import repertoire as rt

    rng = np.random.default_rng(5)
    repertoires = {
        f"S{k}": [f"c{k}_{int(c)}" for c in rng.geometric(0.2, size=60 + 10 * k)] for k in range(3)
    }
    rep = rt.repertoire_by_sample(_cells(repertoires), min_cells=20, n_bootstrap=30, seed=7)
    renamed = {"9zz": repertoires["S0"], "001": repertoires["S1"], "TRUE": repertoires["S2"]}
    again = rt.repertoire_by_sample(_cells(renamed), min_cells=20, n_bootstrap=30, seed=7)
    by_data = again.set_index("sample").loc[["9zz", "001", "TRUE"]].reset_index(drop=True)
    cols = [c for c in rep.columns if c.startswith("rarefied_")]
    assert rep[cols].notna().all().all()
    pd.testing.assert_frame_equal(rep[cols], by_data[cols])
    other_seed = rt.repertoire_by_sample(_cells(repertoires), min_cells=20, n_bootstrap=30, seed=8)
    assert not rep[cols].equals(other_seed[cols])


# --------------------------------------------------------------------------- through Snakemake


def _same_gex_as_s1(c):
    _copy_of_s1(c, vdj=False)


SNAKEMAKE_REFUSED: list[tuple[str, Callable, dict, str, str, str, str]] = [
    # id, mutation, config overrides, file, where, what-phrase, fix-phrase
    (
        "unsafe-sample-id",
        lambda c: _set_cell(c, 2, "sample", "../S1"),
        {},
        "config/samples.tsv",
        "line 2, column 'sample'",
        "sample id '../S1' starts with '.'",
        "use only letters, digits",
    ),
    (
        "unsafe-patient-id",
        lambda c: (
            _rename_ids(c, "patient", {"P1": "P 1"}),
            _rename_ids(c, "patient", {"P1": "P 1"}, table=CLIN),
        ),
        {},
        "config/clinical.tsv",
        "line 2, column 'patient'",
        "patient id 'P 1' contains space",
        "use only letters, digits",
    ),
    (
        "unsafe-timepoint",
        lambda c: _set_cell(c, 3, "timepoint", "D7;rm"),
        {},
        "config/samples.tsv",
        "line 3, column 'timepoint'",
        "timepoint id 'D7;rm' contains semicolon ';'",
        "use only letters, digits",
    ),
    (
        "same-gex-content",
        _same_gex_as_s1,
        {},
        "config/samples.tsv",
        "line 6, column 'gex'",
        "sample 'S5' has the same GEX data as sample 'S1' (line 2)",
        "every library needs its own files",
    ),
    (
        "response-missing",
        lambda c: _set_cell(c, 2, "response", "", CLIN),
        {},
        "config/clinical.tsv",
        "line 2, column 'response'",
        "patient 'P1' has no response label",
        "write NA when the response is not known",
    ),
    (
        "response-unknown-code",
        lambda c: _set_cell(c, 3, "response", "MR", CLIN),
        {},
        "config/clinical.tsv",
        "line 3, column 'response'",
        "response 'MR' of patient 'P2' is none of the codes of the config",
        "add 'MR' to responders, non_responders or associate.exclude_responses",
    ),
    (
        "response-code-na-in-config",
        lambda c: None,
        {"non_responders": ["PR", "SD", "PD", "NA"]},
        "config",
        "keys 'responders', 'non_responders', 'associate.exclude_responses'",
        "'NA' is listed as a response code",
        "remove 'NA' from the code lists",
    ),
    (
        "per-sample-key-read-as-number",
        lambda c: _rename_ids(c, "sample", {"S1": "001"}),
        {"qc": {"per_sample": {1: {"n_mads": 4}}}},
        "config",
        "key 'qc.per_sample'",
        "has overrides for sample(s) not in the sample sheet: 1",
        "write '001' in quotes",
    ),
]


def _run_config(tmp_path: Path, c: dict, overrides: dict) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.update(_config(c))
    cfg.update(overrides)
    cfgfile = tmp_path / "run_config.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg))
    return cfgfile


@pytest.mark.e2e
@pytest.mark.parametrize("case", SNAKEMAKE_REFUSED, ids=[m[0] for m in SNAKEMAKE_REFUSED])
def test_snakemake_refuses_before_any_job(tmp_path, case):
    _, mutate, overrides, file, where, what, fix = case
    c = make_cohort(tmp_path)
    mutate(c)
    proc = run_snakemake(
        tmp_path, configfile=_run_config(tmp_path, c, overrides), cores=1, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    named = file if file == "config" else str((tmp_path / file).resolve())
    lines = [ln for ln in out.splitlines() if f"{named}: {where}: " in ln and what in ln]
    assert lines, out[-3000:]
    assert "Fix: " in lines[0] and fix in lines[0].split("Fix: ", 1)[1], lines[0]
    assert "Traceback" not in out, "the user sees our message, not a stack trace"
    assert not (tmp_path / "results").exists()


@pytest.mark.e2e
def test_snakemake_accepts_tricky_ids_and_response_na(tmp_path):
    """A dry run with ids 001/1e5/TRUE/nan and a patient of response NA: accepted, and
    the jobs of every library are planned under its own id."""
    c = _tricky_cohort(tmp_path)
    _set_cell(c, 2, "response", "NA", CLIN)
    cfgfile = _run_config(tmp_path, c, {"primary_timepoint": "00"})
    proc = run_snakemake(
        tmp_path,
        "-n",
        "results/load/001.h5mu",
        "results/load/nan.h5mu",
        "results/load/TRUE.h5mu",
        "results/load/1e5.h5mu",
        configfile=cfgfile,
        cores=1,
    )
    out = proc.stdout + proc.stderr
    for sample in TRICKY.values():
        assert f"sample={sample}" in out, out[-3000:]
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- the demo, renamed


# an id may end a path's stem (``results/load/002.h5mu``), never a decimal (``002.5``)
_NEW_ID = re.compile(r"(?<![A-Za-z0-9_.-])(0\d\d)(?![A-Za-z0-9-])(?!\.\d)")


def _back_to_old_ids(text: str, old: dict[str, str]) -> str:
    """A renamed run's table with the original sample ids put back: whole-word ids
    (``001``, ``001;002``, cell ids ``001_<barcode>``, in notes) and ``size_<id>``
    column names. Numbers are never written with leading zeros, so a word ``0NN`` is
    an id."""
    header, _, body = text.partition("\n")
    names = []
    for name in header.split("\t"):
        m = re.fullmatch(r"(size_)(0\d\d)", name)
        names.append(f"{m.group(1)}{old[m.group(2)]}" if m and m.group(2) in old else name)
    body = _NEW_ID.sub(lambda m: old.get(m.group(1), m.group(1)), body)
    return "\t".join(names) + "\n" + body


def _first_difference(got: str, want: str) -> str:
    a, b = got.splitlines(), want.splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}: renamed run {x[:300]!r} vs original {y[:300]!r}"
    return f"{len(a)} lines vs {len(b)} lines"


def _table_text(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode()


@pytest.mark.e2e
def test_demo_with_renamed_sample_ids_gives_the_same_tables(small_clean_runs):
    """A cohort run again with its sample ids renamed to 001..0NN (at the same time as
    the original, in another project folder): every table of results/tables/ and every
    scorecard equals the original run's, apart from the ids. (The small cohort of
    test_faults, 10 libraries: the ids, not the size, are the point.)"""
    demo_run, tmp_path, old = small_clean_runs
    pairs = [
        (demo_run / "results" / "tables" / p.name, p)
        for p in sorted((tmp_path / "results" / "tables").iterdir())
    ]
    pairs += [
        (demo_run / "results" / "scorecards" / f"{old[p.stem]}.tsv", p)
        for p in sorted((tmp_path / "results" / "scorecards").glob("*.tsv"))
    ]
    assert len(pairs) > 20
    differ = []
    for original, renamed in pairs:
        assert original.exists(), f"{renamed.name}: no such table in the original run"
        want = _table_text(original)
        got = _back_to_old_ids(_table_text(renamed), old)
        if got != want:
            differ.append(f"{renamed.relative_to(tmp_path)}: {_first_difference(got, want)}")
    assert not differ, "\n".join(differ)
    # the ids are really the new ones in the renamed run
    cells = tables.read_table(tmp_path / "results" / "tables" / "cells.tsv.gz")
    assert set(cells["sample"]) <= set(old) and cells["cell"].str.match(r"^0\d\d_").all()
