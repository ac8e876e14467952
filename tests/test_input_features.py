"""The features of the libraries (issue 17): no feature silently changes the analysis.

- every entry of config ``car_features`` is in every library that should hold it; if
  not, the run is refused at parse time naming the library, its file and the closest
  feature names, unless the sheet's ``car_expected`` column says the library lacks
  the CAR, when it is loaded and reported in ``results/load/{sample}.warnings.tsv``;
- feature types other than Gene Expression are kept out of the RNA matrix and
  reported there too;
- libraries mapped to different references are joined (``load.gene_join``) and the
  genes dropped or zero-filled are reported in ``results/integrate/merge_warnings.tsv``.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from cartcohort import io, pp, sheets, tables
from cartcohort.errors import CartCohortError, InputError
from conftest import REPO, run_snakemake
from test_sheets import (
    make_barcodes,
    make_cohort,
    problems_of,
    tiny_counts,
    tiny_features,
    write_10x_h5,
    write_mtx_folder,
)

META = {
    "patient": "P1",
    "timepoint": "IP",
    "timepoint_day": 0.0,
    "compartment": "product",
    "batch": "b1",
    "sort": "CAR+",
}


def _s2_mtx(c: dict) -> Path:
    return c["data"] / "S2" / "filtered_feature_bc_matrix"


def _drop_car_from_s2(c: dict) -> None:
    """S2 (mtx folder) rewritten without the CAR feature, same cells."""
    ids, names, types = tiny_features(6)
    write_mtx_folder(_s2_mtx(c), tiny_counts(6, 8, seed=11), c["barcodes"]["S2"], ids, names, types)


def _car_expected_column(c: dict, values: dict[str, str]) -> None:
    """Add a ``car_expected`` column to the sheet (``values``: sample -> cell text)."""
    path = c["cfg"] / "samples.tsv"
    lines = path.read_text().splitlines()
    out = [lines[0] + "\tcar_expected"]
    out += [ln + "\t" + values.get(ln.split("\t")[0], "") for ln in lines[1:]]
    path.write_text("\n".join(out) + "\n")


# --------------------------------------------------------------------------- parse time


def test_misspelled_car_feature_is_refused_in_every_library_with_closest_names(tmp_path):
    c = make_cohort(tmp_path)
    probs = problems_of(dict(c["config"], car_features=["CARR"]), tmp_path)
    assert len(probs) == 4, probs  # one per library, each naming its own file
    data = c["data"].resolve()
    got = {(Path(p.file).relative_to(data).as_posix(), p.where) for p in probs}
    assert got == {
        ("S1/filtered_feature_bc_matrix.h5", "dataset 'matrix/features/name'"),
        ("S2/filtered_feature_bc_matrix", "features.tsv.gz"),
        (
            "S3run/outs/per_sample_outs/S3/count/sample_filtered_feature_bc_matrix.h5",
            "dataset 'matrix/features/name'",
        ),
        ("S4/S4.h5ad", "var"),
    }
    for p, sample in zip(probs, ["S1", "S2", "S3", "S4"]):
        assert "has no feature 'CARR' of config car_features" in p.what
        assert "closest feature names: 'CAR'" in p.what
        assert f"sample '{sample}', samples.tsv line" in p.what
        assert "car_features" in p.fix and "'car_expected' to false" in p.fix


def test_library_without_the_car_is_refused_naming_it(tmp_path):
    c = make_cohort(tmp_path)
    _drop_car_from_s2(c)
    (p,) = problems_of(c["config"], tmp_path)
    assert p.file == str(_s2_mtx(c).resolve()) and p.where == "features.tsv.gz"
    assert "has no feature 'CAR' of config car_features among its 6 features" in p.what
    assert "sample 'S2', samples.tsv line 3, column 'gex'" in p.what
    # no close name in this library: said so rather than a list of random genes
    assert "no feature name is close to it" in p.what


def test_car_expected_false_lets_a_library_without_the_car_through(tmp_path):
    c = make_cohort(tmp_path)
    _drop_car_from_s2(c)
    _car_expected_column(c, {"S2": "false", "S1": "yes"})
    samples, _, _ = sheets.prepare_inputs(c["config"], base_dir=tmp_path)
    assert samples["car_expected"].dtype == bool
    assert samples["car_expected"].to_dict() == {"S1": True, "S2": False, "S3": True, "S4": True}
    # without the column every library must hold the CAR (default true)
    c2 = make_cohort(tmp_path / "b")
    samples, _, _ = sheets.prepare_inputs(c2["config"], base_dir=tmp_path / "b")
    assert samples["car_expected"].all()


def test_car_expected_must_be_true_or_false(tmp_path):
    c = make_cohort(tmp_path)
    _car_expected_column(c, {"S3": "maybe"})
    (p,) = problems_of(c["config"], tmp_path)
    assert p.where == "line 4, column 'car_expected'" and "'maybe' is not true/false" in p.what


def test_no_car_features_checks_nothing(tmp_path):
    c = make_cohort(tmp_path)
    _drop_car_from_s2(c)
    sheets.prepare_inputs(dict(c["config"], car_features=[]), base_dir=tmp_path)


def test_cache_does_not_hide_a_changed_car_features(tmp_path, monkeypatch):
    c = make_cohort(tmp_path)
    cache = ".snakemake/cartcohort_input_checks.json"
    sheets.prepare_inputs(c["config"], base_dir=tmp_path, cache_path=cache)
    probs = problems_of(dict(c["config"], car_features=["CARR"]), tmp_path, cache_path=cache)
    assert len(probs) == 4 and all("'CARR'" in p.what for p in probs)

    def boom(*a, **k):
        raise AssertionError("a library whose CAR the cache verified was read again")

    # the libraries a warm cache verified for CAR are not read again
    monkeypatch.setattr(sheets.samples, "inspect_gex", boom)
    sheets.prepare_inputs(c["config"], base_dir=tmp_path, cache_path=cache)


# --------------------------------------------------------------------------- load


def test_load_refuses_a_missing_car_unless_the_sheet_says_it_may_lack_it(tmp_path):
    c = make_cohort(tmp_path)
    _drop_car_from_s2(c)
    kw = dict(sample="S2", gex_path=_s2_mtx(c), vdj_path=None, meta=META, car_features=["CAR"])
    with pytest.raises(InputError) as exc:  # check_input_files: false reaches the job
        io.load_sample(**kw)
    (p,) = exc.value.problems
    assert p.file == str(_s2_mtx(c)) and "has no feature 'CAR'" in p.what
    assert "(sample 'S2')" in p.what and "car_expected" in p.fix

    loaded = io.load_sample(**kw, car_expected=False)
    assert loaded.mdata.mod["gex"].var["is_car"].sum() == 0
    w = loaded.warnings
    assert list(w.columns) == list(tables.WARNING_COLUMNS)
    assert w.to_dict("records")[0] | {"detail": "", "action": ""} == {
        "sample": "S2",
        "step": "load",
        "check": "car_feature_absent",
        "count": 8,
        "detail": "",
        "action": "",
    }
    assert "lacks the CAR feature(s) 'CAR'" in w.loc[0, "detail"]
    assert "car_expected" in w.loc[0, "detail"]


def test_non_gene_expression_features_are_kept_out_and_reported(tmp_path):
    ids, names, types = tiny_features(5, adt=["CD4_TotalSeqC", "CD8_TotalSeqC"], car="CAR")
    ids.append("sgCTRL")
    names.append("sgCTRL")
    types.append("CRISPR Guide Capture")
    bc = make_barcodes(7, seed=3)
    h5 = write_10x_h5(
        tmp_path / "filtered_feature_bc_matrix.h5",
        tiny_counts(len(ids), 7, seed=4),
        bc,
        ids,
        names,
        types,
    )
    loaded = io.load_sample(
        sample="L1", gex_path=h5, vdj_path=None, meta=META, car_features=["CAR"]
    )
    gex, prot = loaded.mdata.mod["gex"], loaded.mdata.mod["prot"]
    assert set(gex.var["feature_types"]) == {"Gene Expression", "Custom"}  # CAR kept
    assert gex.var["is_car"].sum() == 1 and gex.n_vars == 6
    assert list(prot.var_names) == ["CD4_TotalSeqC", "CD8_TotalSeqC"]
    (row,) = loaded.warnings.to_dict("records")
    assert (row["sample"], row["step"], row["check"], row["count"]) == (
        "L1",
        "load",
        "non_gex_features",
        3,
    )
    assert "Antibody Capture (2, kept as modality 'prot')" in row["detail"]
    assert "CRISPR Guide Capture (1, not loaded)" in row["detail"]
    assert "results/load/L1.h5mu" in row["action"]


def test_gene_expression_only_library_has_no_warning(tmp_path):
    ids, names, types = tiny_features(5, car="CAR")
    types[-1] = "Gene Expression"
    h5 = write_10x_h5(
        tmp_path / "m.h5", tiny_counts(len(ids), 5, seed=1), make_barcodes(5, seed=1), ids, names,
        types,
    )
    loaded = io.load_sample(sample="L", gex_path=h5, vdj_path="", meta=META, car_features=["CAR"])
    assert loaded.warnings.empty and list(loaded.warnings.columns) == list(tables.WARNING_COLUMNS)
    out = tmp_path / "L.warnings.tsv"
    tables.write_table(loaded.warnings, out)
    assert out.read_text() == "\t".join(tables.WARNING_COLUMNS) + "\n"
    assert tables.table_for(Path("results/load/L.warnings.tsv")).name == "load_warnings"


# --------------------------------------------------------------------------- merge


def _lib(sample: str, ids: list[str], *, car: bool = True, n: int = 3) -> ad.AnnData:
    genes = list(ids) + (["CAR"] if car else [])
    rng = np.random.default_rng(len(genes))
    return ad.AnnData(
        X=sp.csr_matrix(rng.poisson(2, (n, len(genes))).astype(np.float32)),
        obs=pd.DataFrame({"sample": sample}, index=[f"{sample}_c{i}" for i in range(n)]),
        var=pd.DataFrame(
            {
                "gene_ids": genes,
                "feature_types": "Gene Expression",
                "is_car": [g == "CAR" for g in genes],
            },
            index=[f"SYM_{g}" if g != "CAR" else g for g in genes],
        ),
    )


def test_different_references_are_intersected_with_a_warning():
    a = _lib("A", ["E1", "E2", "E3", "E4", "E5"])
    b = _lib("B", ["E1", "E2", "E3", "E6"], car=False)  # lacks the CAR: not counted here
    (row,) = io.gene_join_warnings([a, b], join="intersect", libraries=["A", "B"])
    assert (row["sample"], row["step"], row["check"], row["count"]) == (
        "",
        "merge",
        "genes_dropped_by_intersect",
        3,
    )
    assert "3 of 6 genes (matched by gene id)" in row["detail"]
    assert "dropped (load.gene_join: intersect), 3 genes are analysed" in row["detail"]
    assert "libraries lacking genes: A (1), B (2)" in row["detail"]
    assert "e.g. SYM_E4 (E4)" in row["detail"]
    assert "same reference" in row["action"] and "load.gene_join: union" in row["action"]

    (row,) = io.gene_join_warnings([a, b], join="union", libraries=["A", "B"])
    assert row["check"] == "genes_zero_filled_by_union" and row["count"] == 3
    assert "load.gene_join: intersect" in row["action"]

    assert io.gene_join_warnings([a, a.copy()], join="intersect", libraries=["A", "A2"]) == []


def test_gene_ids_of_another_ensembl_release_are_named():
    a = _lib("A", ["ENSG1.16", "ENSG2.3", "ENSG3.1"])
    b = _lib("B", ["ENSG1.17", "ENSG2.3", "ENSG3.1"])
    (row,) = io.gene_join_warnings([a, b], join="intersect", libraries=["A", "B"])
    assert row["count"] == 2 and "differ only in their version suffix" in row["detail"]


def test_concat_samples_carries_the_warning_and_refuses_a_car_only_overlap():
    merged = pp.concat_samples([_lib("A", ["E1", "E2"]), _lib("B", ["E2", "E3"])], join="intersect")
    assert list(merged.var["gene_ids"]) == ["E2", "CAR"]
    w = merged.uns["merge_warnings"]
    assert w["check"].tolist() == ["genes_dropped_by_intersect"] and w["count"].tolist() == [2]
    same = pp.concat_samples([_lib("A", ["E1"]), _lib("B", ["E1"])], join="intersect")
    assert same.uns["merge_warnings"].empty
    with pytest.raises(CartCohortError, match="share no gene"):
        pp.concat_samples([_lib("A", ["E1"]), _lib("B", ["E2"])], join="intersect")


# --------------------------------------------------------------------------- through snakemake


def _config_file(tmp_path: Path, cfg: dict) -> Path:
    full = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    full.update(cfg)
    path = tmp_path / "run_config.yaml"
    path.write_text(yaml.safe_dump(full))
    return path


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["typo", "one_library_lacks_car"])
def test_snakemake_refuses_a_missing_car_before_any_job(tmp_path, case):
    c = make_cohort(tmp_path)
    cfg = dict(c["config"])
    if case == "typo":
        cfg["car_features"] = ["CARR"]
    else:
        _drop_car_from_s2(c)
    proc = run_snakemake(tmp_path, configfile=_config_file(tmp_path, cfg), cores=1, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    feature = "CARR" if case == "typo" else "CAR"
    assert f"{_s2_mtx(c).resolve()}: features.tsv.gz: has no feature '{feature}'" in out, out
    assert "sample 'S2', samples.tsv line 3, column 'gex'" in out
    closest = "closest feature names: 'CAR'" if case == "typo" else "no feature name is close"
    assert closest in out
    assert "Fix: set config car_features" in out and "'car_expected' to false" in out
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def odd_cohort(tmp_path_factory) -> Path:
    """Two simulated libraries made unlike the reference: P01_IP gains two antibody and
    one CRISPR feature; P02_IP loses 20 genes (another reference) and its CAR, which
    the sheet says it may lack (car_expected false)."""
    from cartcohort.datasets import write_demo_cohort

    root = tmp_path_factory.mktemp("odd_cohort")
    cohort = root / "cohort"
    write_demo_cohort(cohort, seed=0, n_patients=2, min_cells=160, max_cells=160,
                      frac_longitudinal=0.0, gex_format="h5")
    sheet = pd.read_csv(cohort / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    first, second = sheet["sample"].tolist()[:2]
    for sample, edit in ((first, "extra_types"), (second, "other_reference")):
        h5 = cohort / sheet.set_index("sample").loc[sample, "gex"]
        _rewrite_h5(h5, edit)
    sheet["car_expected"] = ["" if s != second else "false" for s in sheet["sample"]]
    # two batches whatever the simulator drew, so that harmony has something to integrate
    sheet["batch"] = ["b1", "b2"][: len(sheet)] + ["b1"] * (len(sheet) - 2)
    sheet.to_csv(cohort / "samples.tsv", sep="\t", index=False)
    return cohort


def _rewrite_h5(path: Path, edit: str) -> None:
    with h5py.File(path, "r") as f:
        m = f["matrix"]
        n_feat, n_cells = (int(x) for x in m["shape"][()])
        X = sp.csc_matrix(
            (m["data"][()], m["indices"][()], m["indptr"][()]), shape=(n_feat, n_cells)
        )
        barcodes = [b.decode() for b in m["barcodes"][()]]
        ids = [x.decode() for x in m["features/id"][()]]
        names = [x.decode() for x in m["features/name"][()]]
        types = [x.decode() for x in m["features/feature_type"][()]]
    dense = X.toarray()
    # the library's own ADT panel, if the simulator gave it one, is dropped first: the
    # edits below make the feature types (or genes) unlike the reference
    gene = [i for i, t in enumerate(types) if t != "Antibody Capture"]
    dense, ids, names, types = (
        dense[gene], [ids[i] for i in gene], [names[i] for i in gene], [types[i] for i in gene]
    )
    if edit == "extra_types":
        rng = np.random.default_rng(1)
        dense = np.vstack([dense, rng.poisson(5, (3, n_cells))])
        ids += ["CD4_TotalSeqC", "CD8_TotalSeqC", "sgCTRL"]
        names += ["CD4_TotalSeqC", "CD8_TotalSeqC", "sgCTRL"]
        types += ["Antibody Capture", "Antibody Capture", "CRISPR Guide Capture"]
    else:
        keep = [i for i, n in enumerate(names) if n != "CAR"][20:]
        dense, ids, names, types = (
            dense[keep], [ids[i] for i in keep], [names[i] for i in keep], [types[i] for i in keep]
        )
    write_10x_h5(path, dense, barcodes, ids, names, types)


@pytest.mark.e2e
def test_snakemake_carries_odd_libraries_through_with_warnings(tmp_path, odd_cohort):
    sheet = pd.read_csv(odd_cohort / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    first, second = sheet["sample"].tolist()[:2]
    cfg = {
        "samples": str(odd_cohort / "samples.tsv"),
        "clinical": str(odd_cohort / "clinical.tsv"),
        "qc": {"min_cells_per_sample": 20},
    }
    targets = [
        f"results/load/{first}.warnings.tsv",
        f"results/load/{second}.warnings.tsv",
        "results/integrate/merge_warnings.tsv",
        "results/tables/warnings.tsv",
    ]
    run_snakemake(tmp_path, "--", *targets, configfile=_config_file(tmp_path, cfg), cores=2)
    one = tables.read_table(tmp_path / targets[0])
    assert one[["sample", "step", "check", "count"]].values.tolist() == [
        [first, "load", "non_gex_features", 3]
    ]
    two = tables.read_table(tmp_path / targets[1])
    assert two[["sample", "check"]].values.tolist() == [[second, "car_feature_absent"]]
    merge = tables.read_table(tmp_path / targets[2])
    assert merge[["sample", "step", "check", "count"]].values.tolist() == [
        ["", "merge", "genes_dropped_by_intersect", 20]
    ]
    assert f"libraries lacking genes: {second} (20)" in merge.loc[0, "detail"]
    # gathered into the cohort's warnings table (shown on the report's landing page)
    gathered = tables.read_table(tmp_path / targets[3])
    got = set(zip(gathered["sample"], gathered["step"], gathered["check"]))
    assert {
        (first, "load", "non_gex_features"),
        (second, "load", "car_feature_absent"),
        ("", "merge", "genes_dropped_by_intersect"),
    } <= got
    # ... and on the landing page (rule overview's step function, without the association
    # step this test does not run)
    from cartcohort import report
    from cartcohort.dictionary import read_dictionary

    page = report.overview_page(
        tables.read_table(tmp_path / "results" / "tables" / "qc_samples.tsv"),
        pd.DataFrame(columns=list(tables.TABLES["association"].columns)),
        tables.read_table(odd_cohort / "clinical.tsv"),
        gathered,
        excluded_by_config=[],
        extra_notes={},
        sample_features=pd.DataFrame(columns=["sample", "patient", "timepoint"]),
        dictionary=read_dictionary(REPO / "resources" / "features.yaml"),
    )
    for check in ("non_gex_features", "car_feature_absent", "genes_dropped_by_intersect"):
        assert check in page
    assert "CRISPR Guide Capture (1, not loaded)" in page
