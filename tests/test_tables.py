"""Tests of cartcohort.tables: the contract tables, their writer and their reader.

Ids are always text: ``001``, ``1e5``, ``TRUE``, ``nan`` ... come back exactly as
written. ``NA`` is the writer's missing value, so an id spelled ``NA`` reads back as
missing (the sheet validation refuses such ids: tests/test_sheets.py).
"""

from __future__ import annotations

import gzip
import logging
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cartcohort import tables
from cartcohort.errors import CartCohortError

REPO = Path(__file__).resolve().parents[1]

#: Ids that type inference would turn into numbers, booleans or missing values.
TRICKY_IDS = [
    "001",
    "1e5",
    "TRUE",
    "false",
    "nan",
    "NaN",
    "None",
    "null",
    "0x1F",
    "1.0",
    "-0",
    "inf",
]


@pytest.mark.parametrize("column", tables.ID_COLUMNS)
@pytest.mark.parametrize("suffix", [".tsv", ".tsv.gz"])
def test_ids_round_trip_unchanged(tmp_path, column, suffix):
    df = pd.DataFrame({column: TRICKY_IDS, "value": np.arange(len(TRICKY_IDS)) / 3})
    df.loc[2, "value"] = np.nan
    path = tmp_path / f"t{suffix}"
    tables.write_table(df, path)
    back = tables.read_table(path)
    assert back[column].tolist() == TRICKY_IDS
    assert back["value"].isna().tolist() == df["value"].isna().tolist()
    assert back["value"].dtype == np.float64


def test_na_is_missing_everywhere_ids_included(tmp_path):
    """The writer writes missing as NA; a literal id "NA" cannot be told apart from it,
    which is why prepare_inputs refuses sample and patient ids spelled NA."""
    df = pd.DataFrame(
        {"sample": ["NA", None, "S1"], "n": [1.0, np.nan, 2.0], "note": ["", "x", "NA"]}
    )
    path = tmp_path / "t.tsv"
    tables.write_table(df, path)
    assert path.read_text().splitlines() == ["sample\tn\tnote", "NA\t1\t", "NA\tNA\tx", "S1\t2\tNA"]
    back = tables.read_table(path)
    assert back["sample"].isna().tolist() == [True, True, False]
    assert back["n"].isna().tolist() == [False, True, False]
    # only NA is missing: an empty cell of a text column stays an empty string
    assert back["note"].tolist()[:2] == ["", "x"] and pd.isna(back.loc[2, "note"])


def test_non_id_columns_keep_inferred_types(tmp_path):
    df = pd.DataFrame(
        {"sample": ["1", "2"], "n_cells": [3, 4], "flag": [True, False], "x": [0.5, 1e-9]}
    )
    path = tmp_path / "t.tsv"
    tables.write_table(df, path)
    back = tables.read_table(path)
    assert back["sample"].tolist() == ["1", "2"]
    assert back["n_cells"].dtype == np.int64 and back["flag"].dtype == bool
    assert back["x"].tolist() == [0.5, 1e-9]


def test_write_table_bytes_are_fixed(tmp_path):
    """The writer's format is the contract: %.6g floats, NA, stable mergesort, no index,
    gzip with a zero mtime (same bytes on every run)."""
    df = pd.DataFrame(
        {
            "sample": ["b", "a", "b", "a"],
            "x": [1 / 3, 2.0, np.nan, 1234567.0],
            "n": [1, 2, 3, 4],
            "ok": [True, False, True, None],
        }
    )
    plain = tmp_path / "t.tsv"
    tables.write_table(df, plain, sort_by=["sample"])
    expected = (
        "sample\tx\tn\tok\n"
        "a\t2\t2\tFalse\n"
        "a\t1.23457e+06\t4\tNA\n"
        "b\t0.333333\t1\tTrue\n"
        "b\tNA\t3\tTrue\n"
    )
    assert plain.read_text() == expected
    gz1, gz2 = tmp_path / "a" / "t.tsv.gz", tmp_path / "b" / "t.tsv.gz"
    tables.write_table(df, gz1, sort_by=["sample"])
    tables.write_table(df, gz2, sort_by=["sample"])
    assert gz1.read_bytes() == gz2.read_bytes()
    assert gz1.read_bytes()[4:8] == b"\0\0\0\0"  # mtime
    assert gzip.decompress(gz1.read_bytes()).decode() == expected


def test_table_is_recognised_from_its_path(tmp_path):
    assert tables.table_for("results/tables/cells.tsv.gz").name == "cells"
    assert tables.table_for("/p/results/load/001.summary.tsv").name == "load_summary"
    assert tables.table_for("/p/results/qc/001.tsv").name == "qc_summary"
    assert tables.table_for("/p/results/scorecards/P01_IP.tsv").name == "scorecard"
    assert tables.table_for("cells.tsv.gz") is None
    # per-table text columns: comma-joined id lists of public_clonotypes
    df = pd.DataFrame(
        {
            "cdr3_aa_vj": ["CAF"],
            "cdr3_aa_vdj": ["CASS"],
            "n_patients": [1],
            "n_cells": [2],
            "patients": ["001"],
            "clone_ids": ["1"],
        }
    )
    path = tmp_path / "results" / "tables" / "public_clonotypes.tsv"
    tables.write_table(df, path)
    other = tmp_path / "renamed.tsv"
    other.write_bytes(path.read_bytes())
    for back in (tables.read_table(path), tables.read_table(other, table="public_clonotypes")):
        assert back.loc[0, "patients"] == "001" and back.loc[0, "clone_ids"] == "1"
    assert tables.read_table(other)["patients"].tolist() == [1]  # not a known table


def test_table_write_checks_leading_columns(tmp_path):
    spec = tables.TABLES["load_samples"]
    df = pd.DataFrame([["001", 5, 4, 3, 1, 0]], columns=list(spec.columns))
    spec.write(df, tmp_path / "load_samples.tsv", sort_by=["sample"])
    assert spec.read(tmp_path / "load_samples.tsv").loc[0, "sample"] == "001"
    with pytest.raises(CartCohortError, match="columns start with"):
        spec.write(df[list(spec.columns[::-1])], tmp_path / "x.tsv")


def test_load_summary_keeps_zero_padded_sample_ids(tmp_path):
    """Regression: a sample id 001 was read back as the integer 1 and crashed
    rule load_summary (pandas cannot sort 1 and 'P02' together)."""
    from cartcohort import io

    summaries = []
    for sample, n in (("P02", 10), ("001", 20), ("1e5", 30)):
        row = pd.DataFrame([[sample, n, n, n, 0, 0]], columns=list(io.SUMMARY_COLUMNS))
        path = tmp_path / "results" / "load" / f"{sample}.summary.tsv"
        tables.write_table(row, path)
        summaries.append(str(path))
    out = tmp_path / "results" / "tables" / "load_samples.tsv"
    smk = SimpleNamespace(
        input=SimpleNamespace(summaries=summaries),
        output=SimpleNamespace(table=str(out)),
        log=[str(tmp_path / "load_summary.log")],
        rule="load_summary",
    )
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        runpy.run_path(str(REPO / "workflow" / "scripts" / "load_summary.py"), {"snakemake": smk})
    finally:  # script_logging reconfigures the root logger to the (now closed) log file
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    assert out.read_text().splitlines() == [
        "\t".join(io.SUMMARY_COLUMNS),
        "001\t20\t20\t20\t0\t0",
        "1e5\t30\t30\t30\t0\t0",
        "P02\t10\t10\t10\t0\t0",
    ]
    assert "3 libraries loaded, 60 cells" in (tmp_path / "load_summary.log").read_text()
