"""Tests of cartcohort.io: GEX/TCR readers, load_sample, harmonise_genes.

Real data: scirpy's bundled test data (always present) and ../shared/data
(skipped with a reason when absent). Tiny Cell Ranger v3 h5 files are written
by the builders in tests/test_sheets.py.
"""

from __future__ import annotations

import gzip
import importlib.resources
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cartcohort import io
from cartcohort.errors import CartCohortError, InputError
from cartcohort.sheets import LocateError, locate_gex
from test_sheets import (
    contig_rows,
    make_barcodes,
    make_cohort,
    tiny_counts,
    tiny_features,
    write_10x_h5,
    write_airr_tsv,
    write_contigs_csv,
    write_mtx_folder,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SCIRPY_DATA = Path(str(importlib.resources.files("scirpy") / "tests" / "data"))
META = {
    "patient": "P1",
    "timepoint": "IP",
    "timepoint_day": 0,
    "compartment": "product",
    "batch": "b1",
    "sort": "CAR+",
}


def need_shared(sub: str) -> Path:
    p = SHARED / sub
    if not p.exists():
        pytest.skip(f"../shared/data/{sub} is absent (only in the development checkout)")
    return p


def chains_per_cell(adata: ad.AnnData) -> dict[str, set[tuple]]:
    """cell -> set of (locus, junction_aa, v_call, j_call, productive)."""
    out = {}
    for cell, chains in zip(adata.obs_names, adata.obsm["airr"].to_list()):
        out[cell] = {
            (c["locus"], c["junction_aa"], c["v_call"], c["j_call"], bool(c["productive"]))
            for c in chains
        }
    return out


# --------------------------------------------------------------------------- GEX: h5


@pytest.fixture
def h5_library(tmp_path):
    ids, names, types = tiny_features(6, adt=["CD4_TotalSeqC", "CD8_TotalSeqC"], car="CAR")
    bc = make_barcodes(10, seed=3)
    X = tiny_counts(len(ids), 10, seed=4)
    path = write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", X, bc, ids, names, types)
    return path, X, bc, ids, names, types


def test_read_gex_h5_splits_adt_and_keeps_car(h5_library):
    path, X, bc, ids, names, types = h5_library
    gex, prot = io.read_gex(path, sample="S1", car_features=["CAR"])
    # 6 genes + CAR (feature type Custom) in gex; the 2 ADTs in prot
    assert list(gex.var["gene_ids"]) == ids[:6] + ["CAR"]
    assert list(gex.var_names) == ["GENE0", "GENE1", "GENE1-1", "GENE3", "GENE4", "GENE5", "CAR"]
    assert list(gex.var["is_car"]) == [False] * 6 + [True]
    assert gex.var.loc["CAR", "feature_types"] == "Custom"
    assert list(prot.var_names) == ["CD4_TotalSeqC", "CD8_TotalSeqC"]
    assert not prot.var["is_car"].any()
    assert list(gex.obs_names) == [f"S1_{b}" for b in bc]
    assert list(gex.obs["barcode"]) == bc
    assert list(prot.obs_names) == list(gex.obs_names)
    assert isinstance(gex.X, sp.csr_matrix) and gex.X.dtype == np.float32
    np.testing.assert_array_equal(gex.X.toarray(), X[[0, 1, 2, 3, 4, 5, 8]].T)
    np.testing.assert_array_equal(prot.X.toarray(), X[[6, 7]].T)


def test_read_gex_h5_without_car_config_drops_custom_feature(h5_library):
    path, X, *_ = h5_library
    gex, _ = io.read_gex(path, sample="S1", car_features=())
    assert "CAR" not in gex.var_names and not gex.var["is_car"].any()
    assert gex.n_vars == 6


def test_tiny_h5_matches_scanpy_reader(h5_library):
    """Our v3 h5 builder and reader agree with scanpy's read_10x_h5."""
    import scanpy as sc

    path, *_ = h5_library
    ref = sc.read_10x_h5(path, gex_only=False)
    gex, prot = io.read_gex(path, sample="S1", car_features=["CAR"])
    both = np.hstack([gex.X.toarray(), prot.X.toarray()])
    order = list(gex.var["gene_ids"]) + list(prot.var["gene_ids"])
    ref_X = ref[:, [list(ref.var["gene_ids"]).index(i) for i in order]].X.toarray()
    np.testing.assert_array_equal(both, ref_X)
    assert [f"S1_{b}" for b in ref.obs_names] == list(gex.obs_names)


def test_read_gex_refuses_corrupt_h5(h5_library):
    path, *_ = h5_library
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(InputError) as exc:
        io.read_gex(path, sample="S1")
    (p,) = exc.value.problems
    assert p.file == str(path) and "cannot be opened as HDF5" in p.what


# --------------------------------------------------------------------------- GEX: mtx


@pytest.mark.realdata
def test_read_gex_mtx_djvdj_plain_text_named_gz():
    d = need_shared("djvdj_splen") / "BL6_GEX" / "filtered_feature_bc_matrix"
    gex, prot = io.read_gex(d, sample="BL6")
    assert prot is None
    assert gex.shape == (269, 1000)
    # truth from the file itself: header nnz and the sum of the value column
    lines = (d / "matrix.mtx.gz").read_text().splitlines()
    entries = np.array([ln.split() for ln in lines[2:]], dtype=np.int64)
    assert gex.X.nnz == 5835 == len(entries)
    assert gex.X.sum() == entries[:, 2].sum()
    # entry (gene 72, cell 1) = 2 in the file (1-based)
    assert gex.X[0, 71] == 2
    with gzip.open(d / "barcodes.tsv.gz", "rt") as fh:
        first = fh.readline().strip()
    assert gex.obs_names[0] == f"BL6_{first}" and gex.obs["barcode"].iloc[0] == first
    assert gex.var["gene_ids"].iloc[0] == "ENSMUSG00000085972"
    assert gex.var_names[0] == "1110028F11Rik"
    assert gex.var_names.is_unique


@pytest.mark.realdata
def test_h5_and_mtx_of_same_library_read_identically(tmp_path):
    """Convert the real djvdj mtx to a v3 h5: both readers must give the same object."""
    d = need_shared("djvdj_splen") / "MD4_GEX" / "filtered_feature_bc_matrix"
    from_mtx, _ = io.read_gex(d, sample="MD4")
    h5 = write_10x_h5(
        tmp_path / "md4.h5",
        from_mtx.X.toarray().T.astype(int),
        list(from_mtx.obs["barcode"]),
        list(from_mtx.var["gene_ids"]),
        [n for n in from_mtx.var_names],
        ["Gene Expression"] * from_mtx.n_vars,
    )
    from_h5, _ = io.read_gex(h5, sample="MD4")
    assert (from_h5.X != from_mtx.X).nnz == 0
    pd.testing.assert_frame_equal(from_h5.var, from_mtx.var)
    pd.testing.assert_frame_equal(from_h5.obs, from_mtx.obs)


def test_read_gex_legacy_genes_tsv_uncompressed(tmp_path):
    ids, names, _ = tiny_features(5)
    bc = make_barcodes(4, seed=1)
    X = tiny_counts(5, 4, seed=2)
    folder = write_mtx_folder(tmp_path / "hg19", X, bc, ids, names, None, gz=False)
    gex, prot = io.read_gex(folder, sample="old")
    assert prot is None
    assert set(gex.var["feature_types"]) == {"Gene Expression"}
    np.testing.assert_array_equal(gex.X.toarray(), X.T)


def test_read_gex_cellranger_count_outs_folder(tmp_path):
    ids, names, types = tiny_features(4)
    bc = make_barcodes(3, seed=5)
    X = tiny_counts(4, 3, seed=6)
    write_mtx_folder(
        tmp_path / "run" / "outs" / "filtered_feature_bc_matrix", X, bc, ids, names, types
    )
    gex, _ = io.read_gex(tmp_path / "run", sample="c")
    np.testing.assert_array_equal(gex.X.toarray(), X.T)


# --------------------------------------------------------------------------- GEX: multi


def test_cellranger_multi_single_and_several_samples(tmp_path):
    c = make_cohort(tmp_path)
    run = c["data"] / "S3run"
    src = locate_gex(run)
    assert src.kind == "h5"
    assert src.default_vdj.name == "filtered_contig_annotations.csv"
    gex, prot = io.read_gex(run, sample="S3", car_features=["CAR"])
    assert gex.n_obs == 8 and prot is not None and gex.var["is_car"].sum() == 1
    pso = run / "outs" / "per_sample_outs"
    shutil.copytree(pso / "S3", pso / "S3b")
    with pytest.raises(LocateError, match=r"holds 2 samples \(S3, S3b\)"):
        locate_gex(run)
    with pytest.raises(InputError, match="per_sample_outs/<id>"):
        io.read_gex(run, sample="S3")
    gex_b, _ = io.read_gex(pso / "S3b", sample="S3b")
    assert gex_b.n_obs == 8


# --------------------------------------------------------------------------- GEX: h5ad


@pytest.fixture(scope="module")
def wu_gex():
    import mudata as md

    mdata = md.read_h5mu(SCIRPY_DATA / "wu2020_200.h5mu")
    g = mdata.mod["gex"]
    return ad.AnnData(
        X=sp.csr_matrix(g.X),
        obs=pd.DataFrame(index=g.obs_names.copy()),
        var=pd.DataFrame(index=g.var_names.copy()),
    )


def test_read_gex_h5ad_raw_counts_from_scirpy_wu2020(tmp_path, wu_gex):
    """wu2020_200.h5mu (scirpy) holds real raw counts of 150 T cells."""
    p = tmp_path / "wu.h5ad"
    wu_gex.write_h5ad(p)
    gex, prot = io.read_gex(p, sample="wu")
    assert prot is None
    assert gex.shape == wu_gex.shape
    assert (gex.X != wu_gex.X).nnz == 0
    assert list(gex.obs["barcode"]) == list(wu_gex.obs_names)
    assert list(gex.var["gene_ids"]) == list(wu_gex.var_names)  # no ids: symbols


def test_read_gex_h5ad_refuses_lognormalised_but_uses_counts_layer_or_raw(tmp_path, wu_gex):
    import scanpy as sc

    norm = wu_gex.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    p = tmp_path / "norm.h5ad"
    norm.write_h5ad(p)
    with pytest.raises(InputError) as exc:
        io.read_gex(p, sample="wu")
    (prob,) = exc.value.problems
    assert prob.file == str(p) and prob.where == "X"
    assert "non-integer" in prob.what and "layers['counts']" in prob.fix

    with_layer = norm.copy()
    with_layer.layers["counts"] = wu_gex.X.copy()
    with_layer.write_h5ad(p)
    gex, _ = io.read_gex(p, sample="wu")
    assert (gex.X != wu_gex.X).nnz == 0

    with_raw = norm.copy()
    with_raw.raw = wu_gex.copy()
    with_raw.write_h5ad(p)
    gex, _ = io.read_gex(p, sample="wu")
    assert (gex.X != wu_gex.X).nnz == 0


def test_read_gex_h5ad_strips_existing_sample_prefix(tmp_path):
    X = tiny_counts(3, 4, seed=1)
    a = ad.AnnData(
        X=sp.csr_matrix(X.T, dtype=np.float32),
        obs=pd.DataFrame(index=[f"S9_AC{i}-1" for i in range(4)]),
        var=pd.DataFrame(index=["A", "B", "C"]),
    )
    a.write_h5ad(tmp_path / "x.h5ad")
    gex, _ = io.read_gex(tmp_path / "x.h5ad", sample="S9")
    assert list(gex.obs_names) == [f"S9_AC{i}-1" for i in range(4)]
    assert list(gex.obs["barcode"]) == [f"AC{i}-1" for i in range(4)]


# --------------------------------------------------------------------------- TCR


def test_read_tcr_10x_csv_and_json_same_chains_scirpy_data():
    """scirpy ships the same 5 contigs as 10x CSV and JSON."""
    stem = (
        SCIRPY_DATA / "10x" / "10k_BMMNC_5pv2_nextgem_Multiplex_vdj_t_all_contig_annotations_small"
    )
    csv = io.read_tcr(f"{stem}.csv", sample="b")
    js = io.read_tcr(f"{stem}.json", sample="b")
    # only is_cell & high_confidence contigs: 2 cells (AAACCTGCACAGGTTT-1 has TRA+TRB)
    assert list(csv.obs_names) == ["b_AAACCTGCACAGGTTT-1", "b_AAACCTGCACATCTTT-1"]
    assert chains_per_cell(csv) == chains_per_cell(js)
    assert {c[0] for c in chains_per_cell(csv)["b_AAACCTGCACAGGTTT-1"]} == {"TRA", "TRB"}


def test_read_tcr_gz_variants(tmp_path):
    """Gzipped JSON, gzipped CSV, and a plain CSV wrongly named .gz all read the same."""
    stem = (
        SCIRPY_DATA / "10x" / "10k_BMMNC_5pv2_nextgem_Multiplex_vdj_t_all_contig_annotations_small"
    )
    ref = chains_per_cell(io.read_tcr(f"{stem}.csv", sample="b"))
    with open(f"{stem}.json", "rb") as src, gzip.open(tmp_path / "a.json.gz", "wb") as dst:
        dst.write(src.read())
    with open(f"{stem}.csv", "rb") as src, gzip.open(tmp_path / "a.csv.gz", "wb") as dst:
        dst.write(src.read())
    shutil.copy(f"{stem}.csv", tmp_path / "plain.csv.gz")
    for name in ("a.json.gz", "a.csv.gz", "plain.csv.gz"):
        assert chains_per_cell(io.read_tcr(tmp_path / name, sample="b")) == ref, name


def test_read_tcr_airr_scirpy_data_drops_bcr():
    """scirpy's rearrangement_ig.tsv is BCR only: refused; TRA/TRB files read."""
    tra = io.read_tcr(SCIRPY_DATA / "airr" / "rearrangement_tra.tsv", sample="a")
    assert tra.n_obs > 0
    assert {c[0] for cell in chains_per_cell(tra).values() for c in cell} == {"TRA"}
    with pytest.raises(InputError, match="only BCR"):
        io.read_tcr(SCIRPY_DATA / "airr" / "rearrangement_ig.tsv", sample="a")


def test_read_tcr_drops_and_counts_bcr_contigs(tmp_path):
    bc = make_barcodes(6, seed=8)
    rows = contig_rows(bc[:4]) + contig_rows(bc[2:6], loci=("IGH",))
    p = write_contigs_csv(tmp_path / "mixed.csv", rows)
    a = io.read_tcr(p, sample="m")
    assert a.uns["cartcohort_load"]["n_bcr_contigs_dropped"] == 4
    assert a.uns["cartcohort_load"]["n_tcr_barcodes"] == 4
    assert list(a.obs_names) == sorted(f"m_{b}" for b in bc[:4])  # B-only cells gone
    loci = {c[0] for cell in chains_per_cell(a).values() for c in cell}
    assert loci == {"TRA", "TRB"}


def test_read_tcr_restricts_to_gex_barcodes_with_suffix_mismatch(tmp_path):
    bc = make_barcodes(6, seed=9)  # GEX barcodes with -1
    rows = contig_rows([b[:-2] for b in bc[:4]] + ["ACGTACGTACGTACGT"])  # TCR without -1
    p = write_airr_tsv(tmp_path / "airr.tsv.gz", rows, gz=True)
    a = io.read_tcr(p, sample="s", barcodes=pd.Index(bc[::-1]))
    assert a.uns["cartcohort_load"]["n_tcr_without_gex"] == 1
    # GEX spelling of the barcode and GEX order
    assert list(a.obs["barcode"]) == [b for b in bc[::-1] if b in bc[:4]]
    assert list(a.obs_names) == [f"s_{b}" for b in a.obs["barcode"]]


@pytest.mark.realdata
@pytest.mark.parametrize("mouse", ["BL6", "MD4"])
def test_airr_and_10x_csv_give_same_chains_djvdj(mouse):
    d = need_shared("djvdj_splen") / f"{mouse}_TCR"
    airr = io.read_tcr(d / "airr_rearrangement.tsv.gz", sample=mouse)
    csv = io.read_tcr(d / "filtered_contig_annotations.csv.gz", sample=mouse)
    truth = pd.read_csv(d / "filtered_contig_annotations.csv.gz")
    assert airr.n_obs == csv.n_obs == truth["barcode"].nunique()
    a, c = chains_per_cell(airr), chains_per_cell(csv)
    assert a == c
    # every contig of the file is there, under the right cell
    n_chains = sum(len(v) for v in c.values())
    assert n_chains == len(truth)


@pytest.mark.realdata
def test_read_tcr_screp_ards_eight_tables():
    root = need_shared("screp_ards")
    cells = {}
    for f in sorted(root.glob("*/filtered_contig_annotations.csv.gz")):
        truth = pd.read_csv(f)
        keep = truth[
            truth["is_cell"].astype(str).str.lower().eq("true")
            & truth["high_confidence"].astype(str).str.lower().eq("true")
        ]
        a = io.read_tcr(f, sample=f.parent.name)
        assert a.n_obs == keep["barcode"].nunique(), f
        assert a.uns["cartcohort_load"]["n_bcr_contigs_dropped"] == int(
            keep["chain"].isin(["IGH", "IGK", "IGL"]).sum()
        )
        cells[f.parent.name] = {
            x[1] for v in chains_per_cell(a).values() for x in v if x[0] == "TRB" and x[1]
        }
    assert len(cells) == 8
    # clones are shared between blood and lung of the same patient...
    for p in ("P17", "P18", "P19", "P20"):
        assert len(cells[f"{p}B"] & cells[f"{p}L"]) > 0, p
    # ...much more than between patients
    same = np.mean([len(cells[f"{p}B"] & cells[f"{p}L"]) for p in ("P17", "P18", "P19", "P20")])
    cross = np.mean([len(cells["P17B"] & cells[f"{q}L"]) for q in ("P18", "P19", "P20")])
    assert same > 5 * max(cross, 1)


@pytest.mark.realdata
def test_read_tcr_haradhvala_all_contigs_filters_to_cells():
    f = need_shared("haradhvala_d7") / "F1_TCR_tcr_all_contig_annotations.csv"
    truth = pd.read_csv(f)
    ok = truth["is_cell"].astype(str).str.lower().eq("true") & truth["high_confidence"].astype(
        str
    ).str.lower().eq("true")
    a = io.read_tcr(f, sample="F1")
    assert a.n_obs == truth.loc[ok, "barcode"].nunique()
    assert a.n_obs < truth["barcode"].nunique()  # non-cell barcodes are left out


def test_read_tcr_bad_file_message_names_file(tmp_path):
    p = write_contigs_csv(
        tmp_path / "c.csv",
        contig_rows(make_barcodes(2, seed=1)),
        columns=["barcode", "chain", "cdr3"],
    )
    with pytest.raises(InputError) as exc:
        io.read_tcr(p, sample="x")
    (prob,) = exc.value.problems
    assert prob.file == str(p) and prob.where == "line 1 (header)"
    assert "'is_cell'" in prob.what


# --------------------------------------------------------------------------- load_sample


def test_load_sample_tiny_cohort_h5_with_adt_and_tcr(tmp_path):
    c = make_cohort(tmp_path)
    bc = c["barcodes"]["S1"]
    extra = contig_rows(["TTTTTTTTTTTTTTTT-1"])  # a TCR cell without GEX
    rows = contig_rows(bc[:5]) + extra + contig_rows([bc[6]], loci=("IGH",))
    vdj = write_contigs_csv(c["data"] / "S1" / "filtered_contig_annotations.csv", rows)
    mdata, summary, _ = io.load_sample(
        sample="S1",
        gex_path=c["data"] / "S1" / "filtered_feature_bc_matrix.h5",
        vdj_path=vdj,
        meta=dict(META, timepoint_day=None),
        car_features=["CAR"],
    )
    assert set(mdata.mod) == {"gex", "airr", "prot"}
    gex, airr = mdata.mod["gex"], mdata.mod["airr"]
    assert list(gex.obs.columns[:7]) == list(io.OBS_META)
    assert (gex.obs["patient"] == "P1").all() and gex.obs["timepoint_day"].isna().all()
    assert list(airr.obs_names) == [f"S1_{b}" for b in bc[:5]]
    assert set(airr.obs_names) <= set(gex.obs_names)
    assert summary.to_dict("records") == [
        {
            "sample": "S1",
            "n_gex_cells": 8,
            "n_tcr_barcodes": 6,
            "n_gex_with_tcr": 5,
            "n_tcr_without_gex": 1,
            "n_bcr_contigs_dropped": 1,
        }
    ]


@pytest.mark.realdata
def test_load_sample_djvdj_roundtrip_h5mu(tmp_path):
    import mudata as md

    d = need_shared("djvdj_splen")
    mdata, summary, _ = io.load_sample(
        sample="BL6",
        gex_path=d / "BL6_GEX" / "filtered_feature_bc_matrix",
        vdj_path=d / "BL6_TCR" / "filtered_contig_annotations.csv.gz",
        meta=dict(META, patient="BL6", timepoint="day0"),
        car_features=[],
    )
    truth = pd.read_csv(d / "BL6_TCR" / "filtered_contig_annotations.csv.gz")
    with gzip.open(d / "BL6_GEX" / "filtered_feature_bc_matrix" / "barcodes.tsv.gz", "rt") as fh:
        gex_bc = {ln.strip() for ln in fh if ln.strip()}
    both = set(truth["barcode"]) & gex_bc
    s = summary.iloc[0]
    assert s["n_gex_cells"] == 269
    assert s["n_tcr_barcodes"] == truth["barcode"].nunique()
    assert s["n_gex_with_tcr"] == len(both)
    assert s["n_tcr_without_gex"] == truth["barcode"].nunique() - len(both)
    out = tmp_path / "BL6.h5mu"
    mdata.write(out)
    back = md.read_h5mu(out)
    assert back.mod["gex"].shape == (269, 1000)
    assert (back.mod["gex"].X != mdata.mod["gex"].X).nnz == 0
    assert chains_per_cell(back.mod["airr"]) == chains_per_cell(mdata.mod["airr"])
    assert list(back.mod["gex"].obs["sample"].astype(str).unique()) == ["BL6"]


def test_load_sample_without_vdj_and_bad_meta(tmp_path):
    c = make_cohort(tmp_path)
    mdata, summary, _ = io.load_sample(
        sample="S4",
        gex_path=c["data"] / "S4" / "S4.h5ad",
        vdj_path="",
        meta=META,
        car_features=["CAR"],
    )
    assert set(mdata.mod) == {"gex"}
    assert summary.loc[0, "n_tcr_barcodes"] == 0
    with pytest.raises(CartCohortError, match="has no 'batch'"):
        io.load_sample(
            sample="S4",
            gex_path=c["data"] / "S4" / "S4.h5ad",
            vdj_path=None,
            meta={k: v for k, v in META.items() if k != "batch"},
            car_features=[],
        )


def test_load_sample_takes_snakemake_list_of_vdj_paths(tmp_path):
    """Rule load_sample passes its named input `vdj`: a list of one path, or empty."""
    c = make_cohort(tmp_path)
    bc = c["barcodes"]["S1"]
    vdj = write_contigs_csv(c["data"] / "S1" / "filtered_contig_annotations.csv", contig_rows(bc[:5]))
    gex = c["data"] / "S1" / "filtered_feature_bc_matrix.h5"
    kw = dict(sample="S1", gex_path=gex, meta=META, car_features=["CAR"])
    _, as_str, _ = io.load_sample(vdj_path=str(vdj), **kw)
    _, as_list, _ = io.load_sample(vdj_path=[str(vdj)], **kw)
    pd.testing.assert_frame_equal(as_str, as_list)
    mdata, none, _ = io.load_sample(vdj_path=[], **kw)
    assert "airr" not in mdata.mod and none.loc[0, "n_tcr_barcodes"] == 0
    with pytest.raises(CartCohortError, match="one TCR contig file per library"):
        io.load_sample(vdj_path=[str(vdj), str(vdj)], **kw)


# --------------------------------------------------------------------------- harmonise_genes


def _ad(ids, names, X, car=()):
    return ad.AnnData(
        X=sp.csr_matrix(np.asarray(X, dtype=np.float32)),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(len(X))]),
        var=pd.DataFrame(
            {
                "gene_ids": ids,
                "feature_types": "Gene Expression",
                "is_car": [n in car for n in names],
            },
            index=names,
        ),
    )


def test_harmonise_genes_by_id_intersect_and_union():
    a = _ad(
        ["E1", "E2", "E3", "CAR"],
        ["A", "B", "C", "CAR"],
        [[1, 2, 3, 9], [4, 5, 6, 0]],
        car=("CAR",),
    )
    # sample b: same genes (E2 renamed in a newer reference), no E3, extra E4, no CAR
    b = _ad(["E4", "E2", "E1"], ["D", "B2", "A"], [[7, 8, 9]])
    (a2, b2), rep = io.harmonise_genes([a, b], join="intersect")
    assert list(a2.var["gene_ids"]) == ["E1", "E2", "CAR"]
    assert list(a2.var_names) == ["A", "B", "CAR"] == list(b2.var_names)
    np.testing.assert_array_equal(b2.X.toarray(), [[9, 8, 0]])
    np.testing.assert_array_equal(a2.X.toarray(), [[1, 2, 9], [4, 5, 0]])
    assert a2.var["is_car"].tolist() == [False, False, True]
    got = rep.set_index("gene_id")["action"].to_dict()
    assert got == {"E3": "dropped", "CAR": "zero_filled", "E4": "dropped"}

    (a3, b3), rep = io.harmonise_genes([a, b], join="union")
    assert list(a3.var["gene_ids"]) == ["E1", "E2", "E3", "CAR", "E4"]
    np.testing.assert_array_equal(b3.X.toarray(), [[9, 8, 0, 0, 7]])
    np.testing.assert_array_equal(a3.X.toarray()[:, 4], [0, 0])
    assert set(rep["action"]) == {"zero_filled"}


def test_harmonise_genes_falls_back_to_symbols_without_ids():
    a = _ad(["A", "B"], ["A", "B"], [[1, 2]])  # h5ad without ids: ids == symbols
    b = _ad(["E2", "E1"], ["B", "A"], [[3, 4]])
    (a2, b2), rep = io.harmonise_genes([a, b], join="intersect")
    assert list(a2.var_names) == ["A", "B"] == list(b2.var_names)
    np.testing.assert_array_equal(b2.X.toarray(), [[4, 3]])
    assert rep.empty
