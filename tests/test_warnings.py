"""results/tables/warnings.tsv: every input carried through rather than refused.

Unit tests of the gatherer (report.collect_warnings, small files), of the rows derived
from qc_samples.tsv, of the overview page's warnings section and of the exclude hint of
a failed per-library job (logs.script_logging). One workflow test (e2e) runs a 3-library
cut of the demo plus two libraries cut to 30 and 70 cells, one patient's response `NA`:
the run does not crash, the 30-cell library is left out of the cohort with a
`too_few_cells` warning, the 70-cell one is kept with `doublets_not_called` (too few
cells for Scrublet), the parse-time `response_na` row comes through the rule's param, and
every row is in warnings.tsv and at the top of the overview page.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from cartcohort import report, sheets, tables
from cartcohort.dictionary import read_dictionary
from cartcohort.errors import CartCohortError, InputError, exclude_line
from cartcohort.logs import script_logging
from conftest import REPO, run_snakemake

COLUMNS = list(tables.WARNING_COLUMNS)
#: The overview page's patients-by-timepoint table and feature labels (none needed here).
_OVERVIEW_TABLES = {
    "sample_features": pd.DataFrame(columns=["sample", "patient", "timepoint"]),
    "dictionary": read_dictionary(REPO / "resources" / "features.yaml"),
}


def _qc_row(sample: str, **overrides) -> dict:
    row = {"sample": sample, "compartment": "product", "n_cells_in": 500, "n_cells_out": 450,
           "n_removed_total": 50, "n_mito_genes": 13, "doublet_method": "scrublet",
           "doublet_note": "", "sample_excluded": False, "exclusion_reason": ""}
    row.update(overrides)
    return row


def _warning(sample: str, step: str, check: str, count: int = 1) -> dict:
    return sheets.warning_row(sample=sample, step=step, check=check, count=count,
                              detail=f"{check} found", action="do something")


# --------------------------------------------------------------------------- the contract


def test_warnings_table_is_registered_with_the_sheets_columns():
    spec = tables.TABLES["warnings"]
    assert spec.columns == tables.WARNING_COLUMNS == tuple(sheets.WARNING_COLUMNS)
    assert (spec.path, spec.rule) == ("results/tables/warnings.tsv", "warnings")
    assert tables.table_for("/p/results/tables/warnings.tsv") is spec


def test_collect_warnings_gathers_sorts_and_keeps_ids(tmp_path):
    load_a = tmp_path / "results" / "load" / "001.warnings.tsv"
    load_b = tmp_path / "results" / "load" / "P02.warnings.tsv"
    merge = tmp_path / "results" / "integrate" / "merge_warnings.tsv"
    tables.write_table(pd.DataFrame([_warning("001", "load", "non_gex_features", 3)]), load_a)
    tables.write_table(pd.DataFrame(columns=COLUMNS), load_b)  # header only: nothing found
    tables.write_table(pd.DataFrame([_warning("", "merge", "genes_dropped_by_intersect", 7)]),
                       merge)
    qc = pd.DataFrame([
        _qc_row("001"),
        _qc_row("1e5", n_cells_in=30, n_cells_out=27, sample_excluded=True,
                exclusion_reason="27 of 30 cells pass QC (< qc.min_cells_per_sample=50)",
                doublet_method="none", doublet_note="Scrublet not run: 28 cells pass"),
    ])
    parse = [_warning("", "clinical", "response_na", 2), _warning("TRUE", "load", "car_absent")]

    out = report.collect_warnings([load_a, load_b, merge], qc, parse_warnings=parse)

    assert list(out.columns) == COLUMNS
    assert out[["step", "sample", "check"]].values.tolist() == [
        ["clinical", "", "response_na"],
        ["load", "001", "non_gex_features"],
        ["load", "TRUE", "car_absent"],
        ["merge", "", "genes_dropped_by_intersect"],
        ["qc", "1e5", "too_few_cells"],  # excluded: no doublet row besides
    ]
    assert out["count"].tolist() == [2, 3, 1, 7, 27] and out["count"].dtype == "int64"
    path = tmp_path / "results" / "tables" / "warnings.tsv"
    tables.TABLES["warnings"].write(out, path)
    back = tables.read_table(path)
    assert back["sample"].tolist() == ["", "001", "TRUE", "", "1e5"]
    pd.testing.assert_frame_equal(back, out)

    empty = report.collect_warnings([load_b], pd.DataFrame([_qc_row("a")]), parse_warnings=[])
    assert empty.empty and list(empty.columns) == COLUMNS


def test_collect_warnings_refuses_other_columns(tmp_path):
    bad = tmp_path / "x.warnings.tsv"
    tables.write_table(pd.DataFrame({"sample": ["a"], "what": ["b"]}), bad)
    qc = pd.DataFrame([_qc_row("a")])
    with pytest.raises(CartCohortError, match=rf"{bad}: columns \['sample', 'what'\]"):
        report.collect_warnings([bad], qc, parse_warnings=[])
    with pytest.raises(CartCohortError, match="parse-time warnings"):
        report.collect_warnings([], qc, parse_warnings=[{"sample": "a", "step": "sheets"}])


def test_qc_warnings_name_the_library_count_and_fix():
    from cartcohort.pp import score_doublets

    import anndata as ad

    # the note Scrublet leaves when too few cells pass the metric filters (the producer)
    few = ad.AnnData(np.ones((40, 5), dtype=np.float32))
    _, info = score_doublets(few, method="scrublet", min_cells=100, sample="S2")
    qc = pd.DataFrame([
        _qc_row("S1", n_cells_in=20, n_cells_out=18, sample_excluded=True,
                exclusion_reason="18 of 20 cells pass QC (< qc.min_cells_per_sample=50)"),
        _qc_row("S2", n_cells_out=40, doublet_method=info["doublet_method"],
                doublet_note=info["doublet_note"]),
        _qc_row("S3", n_mito_genes=0),
        _qc_row("S4", doublet_method="none",
                doublet_note="expression doublet calling disabled (qc.doublets.method: none)"),
        _qc_row("S5", doublet_note="3 cells with < 3 genes not scored by Scrublet"),
    ])
    rows = report.qc_warnings(qc)
    assert [(r["sample"], r["check"], r["count"]) for r in rows] == [
        ("S1", "too_few_cells", 18), ("S2", "doublets_not_called", 40),
        ("S3", "no_mito_genes", 500)]
    assert all(r["step"] == "qc" and list(r) == COLUMNS for r in rows)
    too_few = rows[0]
    assert "18 of 20 cells pass QC" in too_few["detail"] and "left out" in too_few["detail"]
    assert "qc.min_cells_per_sample" in too_few["action"]
    assert exclude_line("S1") == "exclude_samples: ['S1']" and exclude_line("S1") in too_few[
        "action"]
    assert "Scrublet not run: 40 cells" in rows[1]["detail"]
    # the config line reads back as the id, and needs no quoting in a TSV cell
    for sample in ("001", "TRUE", "1e5", "P01_IP"):
        assert yaml.safe_load(exclude_line(sample)) == {"exclude_samples": [sample]}
    assert not any('"' in str(v) for r in rows for v in r.values())
    assert "qc.mito_prefix" in rows[2]["action"]


def test_overview_page_starts_with_the_warnings():
    qc = pd.DataFrame([_qc_row("A"), _qc_row("B", sample_excluded=True, n_cells_out=3,
                                              exclusion_reason="3 of 9 cells pass QC")])
    clinical = pd.DataFrame({"patient": ["p1"], "response": ["CR"]})
    assoc = pd.DataFrame(columns=list(tables.TABLES["association"].columns))
    warnings = report.collect_warnings([], qc, parse_warnings=[])
    page = report.overview_page(qc, assoc, clinical, warnings, excluded_by_config=[],
                                extra_notes={}, **_OVERVIEW_TABLES)
    body = page.split("<body>", 1)[1]
    assert body.index("Warnings: 1") < body.index("Cohort overview")
    top = body[: body.index("Cohort overview")]
    assert "too_few_cells" in top and "3 of 9 cells pass QC" in top
    assert "results/tables/warnings.tsv" in top
    none = report.overview_page(qc.iloc[:1], assoc, clinical, warnings.iloc[:0],
                                excluded_by_config=[], extra_notes={}, **_OVERVIEW_TABLES)
    assert "Warnings: none" in none
    # annotation's own warnings (results/annotate/warnings.tsv) join them
    car = pd.DataFrame([{"sample": "B", "step": "annotate", "check": "car_sorted_without_umis",
                         "count": 0, "detail": "no CAR UMI in a CAR-sorted library",
                         "action": "check car_features"}])
    both = report.overview_page(qc, assoc, clinical, warnings, car, excluded_by_config=[],
                                extra_notes={}, **_OVERVIEW_TABLES)
    top = both.split("<body>", 1)[1].split("Cohort overview")[0]
    assert "Warnings: 2" in top and "car_sorted_without_umis" in top


# --------------------------------------------------------------------------- exclude hint


def _smk(tmp_path: Path, **wildcards) -> SimpleNamespace:
    return SimpleNamespace(log=[str(tmp_path / "job.log")], rule="load_sample",
                           wildcards=SimpleNamespace(**wildcards))


@pytest.mark.parametrize("error", [InputError(["x.mtx: line 9: garbled. Fix: re-export it"]),
                                   ValueError("unexpected")])
def test_failed_library_job_says_how_to_exclude_it(tmp_path, capsys, error):
    with pytest.raises((SystemExit, ValueError)):
        with script_logging(_smk(tmp_path, sample="001")):
            raise error
    hint = ("To go on without library 001, add it to the config's exclude_samples "
            "(exclude_samples: ['001']) and run again.")
    assert hint in (tmp_path / "job.log").read_text()
    assert hint in capsys.readouterr().err  # what snakemake shows beside "Error in rule"


def test_cohort_job_error_has_no_exclude_hint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        with script_logging(_smk(tmp_path)):
            raise CartCohortError("no samples left")
    assert "exclude_samples" not in (tmp_path / "job.log").read_text()
    assert "ERROR in rule load_sample: no samples left" in capsys.readouterr().err


# --------------------------------------------------------------------------- workflow

FULL = ["P02_IP", "P03_IP", "P05_IP"]  # an mtx and two h5 libraries
TINY = {"P06_IP": 30, "P08_IP": 70}  # mtx libraries cut to their first cells


def _cut_library(demo: Path, row: pd.Series, n_cells: int, out: Path) -> tuple[str, str]:
    """The first `n_cells` cells of an mtx library and their contigs, written to `out`."""
    import scipy.io
    import scipy.sparse as sp

    from cartcohort.datasets.write import write_10x_mtx

    src = demo / row["gex"]
    counts = scipy.io.mmread(str(src / "matrix.mtx.gz")).tocsc()[:, :n_cells]
    with gzip.open(src / "barcodes.tsv.gz", "rt") as fh:
        barcodes = np.array(fh.read().split()[:n_cells])
    features = pd.read_csv(src / "features.tsv.gz", sep="\t", header=None,
                           names=["id", "name", "feature_type"])
    gex = out / row["sample"] / "filtered_feature_bc_matrix"
    write_10x_mtx(sp.csr_matrix(counts.T), gex, barcodes=barcodes, features=features)
    contigs = pd.read_csv(demo / row["vdj"], dtype=str, keep_default_na=False)
    vdj = out / row["sample"] / "filtered_contig_annotations.csv"
    contigs[contigs["barcode"].isin(set(barcodes))].to_csv(vdj, index=False)
    return str(gex), str(vdj)


@pytest.fixture(scope="module")
def small_cut(tmp_path_factory, demo_dir) -> Path:
    """Three demo libraries as they are and two cut to 30 and 70 cells (sheets with
    absolute paths; the clinical table of their five patients, P05's response `NA`)."""
    out = tmp_path_factory.mktemp("small_cut")
    sheet = pd.read_csv(demo_dir / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    sheet = sheet.set_index("sample", drop=False).loc[[*FULL, *TINY]]
    for s in FULL:
        for col in ("gex", "vdj"):
            sheet.loc[s, col] = str((demo_dir / sheet.loc[s, col]).resolve())
    for s, n in TINY.items():
        sheet.loc[s, ["gex", "vdj"]] = _cut_library(demo_dir, sheet.loc[s], n, out)
    sheet.to_csv(out / "samples.tsv", sep="\t", index=False)
    clinical = pd.read_csv(demo_dir / "clinical.tsv", sep="\t", dtype=str,
                           keep_default_na=False)
    clinical.loc[clinical["patient"] == "P05", "response"] = "NA"
    clinical[clinical["patient"].isin(sheet["patient"])].to_csv(
        out / "clinical.tsv", sep="\t", index=False)
    return out


@pytest.mark.e2e
def test_tiny_library_is_dropped_with_a_warning(tmp_path, small_cut):
    work = tmp_path / "project"
    work.mkdir()
    run_snakemake(
        work, "--", "results/overview.html", "results/tables/warnings.tsv",
        "results/tables/repertoire_samples.tsv", "results/tables/sample_features.tsv",
        configfile=REPO / "config" / "config.yaml",
        config={"samples": str(small_cut / "samples.tsv"),
                "clinical": str(small_cut / "clinical.tsv")},
    )
    path = work / "results" / "tables" / "warnings.tsv"
    warnings = tables.read_table(path)
    assert '"' not in path.read_text()  # plain TSV cells, nothing quoted
    assert list(warnings.columns) == COLUMNS
    found = {(r.sample, r.step, r.check): r for r in warnings.itertuples()}
    too_few = found[("P06_IP", "qc", "too_few_cells")]
    assert too_few.count < 50 and "< qc.min_cells_per_sample=50" in too_few.detail
    assert "exclude_samples: ['P06_IP']" in too_few.action
    assert ("P08_IP", "qc", "doublets_not_called") in found
    response_na = found[("", "clinical", "response_na")]  # parse time, via the param
    assert response_na.count == 1 and "P05" in response_na.detail
    # the full libraries are kept (Scrublet may still find no threshold in one of them)
    assert not {k for k in found if k[0] in FULL and k[2] == "too_few_cells"}

    # dropped: no cell of it in the cohort tables; the 70-cell library is kept
    cells = pd.read_csv(work / "results" / "tables" / "cells.tsv.gz", sep="\t",
                        usecols=["sample"], dtype=str)
    assert set(cells["sample"]) == {*FULL, "P08_IP"}
    for name in ("repertoire_samples", "sample_features"):
        table = tables.read_table(work / "results" / "tables" / f"{name}.tsv")
        assert "P06_IP" not in set(table["sample"]), name

    page = (work / "results" / "overview.html").read_text()
    top = page[: page.index("Cohort overview")]
    assert f"Warnings: {len(warnings)}" in top
    for r in warnings.itertuples():
        assert r.check in top and r.sample in top
    assert top.index("response_na") < top.index("too_few_cells")  # sorted by step
