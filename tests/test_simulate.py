"""Tests of the demo-cohort simulator (cartcohort.datasets + simulate_demo.py)."""

from __future__ import annotations

import filecmp
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cartcohort.errors import CartCohortError
from cartcohort.datasets import (
    AIRR_COLUMNS,
    MITO_GENES,
    STATES,
    TENX_VDJ_COLUMNS,
    simulate_cohort,
    translate,
    write_cohort,
    write_demo_cohort,
)

SMALL = dict(n_patients=4, min_cells=150, max_cells=250, airr_every=4, frac_longitudinal=0.5)
SHEET_COLUMNS = [
    "sample", "patient", "timepoint", "timepoint_day", "compartment", "batch", "sort", "gex", "vdj",
]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["NA"])


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "resources" / "demo"
    cfg = out.parent.parent / "config"
    write_demo_cohort(out, seed=3, config_dir=cfg, **SMALL)
    return out


@pytest.fixture(scope="module")
def small_cohort():
    return simulate_cohort(seed=3, **SMALL)


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_streaming_and_in_memory_writes_are_byte_identical(small_dir, small_cohort, tmp_path):
    again = tmp_path / "again" / "resources" / "demo"
    write_cohort(small_cohort, again, config_dir=tmp_path / "again" / "config")
    files = _all_files(small_dir)
    assert files == _all_files(again)
    assert any(f.endswith(".h5") for f in files) and any(f.endswith(".mtx.gz") for f in files)
    _, mismatch, errors = filecmp.cmpfiles(small_dir, again, files, shallow=False)
    assert mismatch == [] and errors == []
    other = tmp_path / "seed4"
    write_demo_cohort(other, seed=4, **SMALL)
    assert (other / "truth_cells.tsv").read_bytes() != (small_dir / "truth_cells.tsv").read_bytes()


def test_sheets(small_dir):
    samples = _read(small_dir / "samples.tsv")
    assert list(samples.columns) == SHEET_COLUMNS
    assert samples["sample"].is_unique
    assert set(samples["timepoint"]) == {"IP", "D14", "M3"}
    ip = samples[samples["timepoint"] == "IP"]
    assert len(ip) == 4 and (ip["compartment"] == "product").all()
    assert (samples.loc[samples["timepoint"] != "IP", "compartment"] == "PB").all()
    assert (samples["sample"] == samples["patient"] + "_" + samples["timepoint"]).all()
    for col in ("gex", "vdj"):
        assert all((small_dir / p).exists() for p in samples[col])
    assert samples["vdj"].str.endswith("airr_rearrangement.tsv").sum() >= 1
    cfg = small_dir.parent.parent / "config"
    sheet = _read(cfg / "samples.tsv")
    assert all((cfg / p).resolve() == (small_dir / q).resolve()
               for p, q in zip(sheet["gex"], samples["gex"], strict=True))
    assert all(p.startswith("../resources/demo/") for p in sheet["vdj"])
    clinical = _read(small_dir / "clinical.tsv")
    assert list(clinical.columns) == [
        "patient", "response", "age", "sex", "product", "costim", "donor_source",
        "prior_lines", "pfs_days", "pfs_event",
    ]
    assert (clinical["response"] == "CR").sum() == 2
    assert set(clinical["response"]) - {"CR"} <= {"PD", "SD"}
    assert _read(cfg / "clinical.tsv").equals(clinical)


def test_files_read_back_with_scanpy_and_scirpy(small_dir):
    import scanpy as sc
    import scirpy as ir

    samples = _read(small_dir / "samples.tsv")
    truth = _read(small_dir / "truth_cells.tsv")
    seen_formats = set()
    for _, row in samples.iterrows():
        gex, vdj = small_dir / row["gex"], small_dir / row["vdj"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if gex.suffix == ".h5":
                adata = sc.read_10x_h5(gex)
                seen_formats.add("h5")
            else:
                adata = sc.read_10x_mtx(gex, gex_only=False)
                adata = adata[:, adata.var["feature_types"] != "Antibody Capture"]
                seen_formats.add("mtx")
            if vdj.name == "airr_rearrangement.tsv":
                air = ir.io.read_airr(vdj)
                assert list(pd.read_csv(vdj, sep="\t", nrows=1).columns) == list(AIRR_COLUMNS)
                seen_formats.add("airr")
            else:
                air = ir.io.read_10x_vdj(vdj)
                assert list(pd.read_csv(vdj, nrows=1).columns) == list(TENX_VDJ_COLUMNS)
                seen_formats.add("csv")
        t = truth[truth["sample"] == row["sample"]]
        assert list(adata.obs_names) == list(t["barcode"])
        assert list(t["cell"]) == [f"{row['sample']}_{b}" for b in t["barcode"]]
        assert adata.var["gene_ids"].is_unique  # symbols repeat, as in GRCh38 references
        assert adata.var.loc["CAR", "gene_ids"] == "CAR"
        genes = adata.var["gene_ids"].drop("CAR")
        assert genes.str.fullmatch(r"ENSG\d{11}").all()
        assert adata.n_vars >= 30_000
        assert sum(g in adata.var_names for g in MITO_GENES) == 13
        car = adata[:, "CAR"].X.toarray().ravel()
        np.testing.assert_array_equal(car, t["car_umis"].to_numpy())
        tcr_cells = set(t.loc[t["has_tcr"], "barcode"])
        assert tcr_cells <= set(air.obs_names)
        assert not set(t.loc[~t["has_tcr"], "barcode"]) & set(air.obs_names)
        assert len(set(air.obs_names) - set(t["barcode"])) >= 1  # TCR-only barcodes
    assert seen_formats == {"h5", "mtx", "csv", "airr"}


def test_contigs_are_realistic(small_cohort):
    csvs = [lib.vdj for lib in small_cohort.libraries if lib.plan.vdj_format == "csv"]
    df = pd.concat(csvs)
    assert (df["cdr3_nt"].str.len() % 3 == 0).all()
    assert df["cdr3_nt"].str[:3].isin(["TGT", "TGC"]).all()
    assert (df["cdr3_nt"].map(translate) == df["cdr3"]).all()
    assert (df["fwr1_nt"].map(translate) == df["fwr1"]).all()
    assert set(df["chain"]) == {"TRA", "TRB"}
    assert df["v_gene"].str.match(r"^TR[AB]V").all() and df["j_gene"].str.match(r"^TR[AB]J").all()
    assert set(df["c_gene"]) == {"TRAC", "TRBC1", "TRBC2"}
    assert df["length"].between(350, 800).all()
    assert (df["umis"] >= 1).all() and (df["reads"] > df["umis"]).all()
    assert df["contig_id"].is_unique


def test_truth_proportions(small_cohort):
    t = small_cohort.truth_cells
    n = len(t)
    assert set(t["state"]) == set(STATES)
    # DN (double-negative alpha-beta) and gamma-delta cells besides CD4 and CD8
    assert set(t["cd4_cd8"]) == {"CD4", "CD8", "DN", "gd"}
    assert (t["is_gd"] == (t["cd4_cd8"] == "gd")).all()
    assert (t.loc[t["state"] == "treg", "cd4_cd8"] == "CD4").all()
    assert 0.035 <= t["is_doublet"].mean() <= 0.065
    assert 0.035 <= t["is_low_quality"].mean() <= 0.065
    assert not (t["is_doublet"] & t["is_low_quality"]).any()
    # gamma-delta cells have no contig by default (alpha-beta V(D)J mode): count the others
    ab = t[~t["is_gd"]]
    assert 0.01 <= (~ab["has_tcr"]).mean() <= 0.06
    assert (t.loc[t["has_tcr"] & (t["clone"] == ""), "is_doublet"]).all()
    single = ab[~ab["is_doublet"]]
    assert 0.65 <= (single["n_contigs"] >= 2).mean() <= 0.85
    assert (t.loc[t["is_doublet"], "n_contigs"] > 2).mean() > 0.3
    # library sizes, genes and mito: good cells vs low quality
    libs = small_cohort.libraries
    counts = np.concatenate([np.asarray(lib.counts.sum(axis=1)).ravel() for lib in libs])
    feats = small_cohort.libraries[0].features
    mito_cols = feats["name"].isin(MITO_GENES).to_numpy()
    mito = np.concatenate(
        [np.asarray(lib.counts[:, mito_cols].sum(axis=1)).ravel() for lib in small_cohort.libraries]
    ) / counts
    good = ~(t["is_doublet"] | t["is_low_quality"]).to_numpy()
    lq = t["is_low_quality"].to_numpy()
    assert 3000 <= np.median(counts[good]) <= 5000
    assert 0.03 <= np.median(mito[good]) <= 0.08 and mito[good].max() < 0.15
    # low quality: 25-60 % mito before ambient dilution and counting noise on ~500 UMIs
    # (measured lowest 0.18, 0.195, 0.20 since the gamma-delta genes joined the panel)
    assert np.quantile(mito[lq], 0.1) > 0.2 and mito[lq].min() > 0.15
    assert np.median(counts[lq]) < 0.3 * np.median(counts[good])
    # CAR: per patient product CAR+ fraction, detection in CAR+ vs ambient in CAR-
    ip = t[(t["timepoint"] == "IP") & good]
    frac = ip.groupby("patient")["car_positive"].mean()
    assert frac.between(0.1, 0.9).all()
    # 5' default: the CAR is detected in about 65 % of CAR+ cells; ambient reads in a few CAR-
    assert 0.5 <= (ip.loc[ip["car_positive"], "car_umis"] > 0).mean() <= 0.8
    assert (ip.loc[~ip["car_positive"], "car_umis"] > 0).mean() < 0.05
    assert len(small_cohort.truth_patients) == 4 and n == len(small_cohort.truth_cells)


def test_clones_unique_and_constant(small_cohort):
    clones = small_cohort.truth_clones
    assert clones["clone"].is_unique
    ab, gd = clones[clones["cd4_cd8"] != "gd"], clones[clones["cd4_cd8"] == "gd"]
    assert ab["trb_cdr3_nt"].is_unique and ab["tra_cdr3_nt"].is_unique
    assert not ab.duplicated(["tra_cdr3_nt", "trb_cdr3_nt"]).any()
    assert (ab[["trg_cdr3_nt", "trd_cdr3_nt"]] == "").all().all()
    assert gd["trg_cdr3_nt"].is_unique and gd["trd_cdr3_nt"].is_unique
    assert (gd[["tra_cdr3_nt", "trb_cdr3_nt"]] == "").all().all() and (gd["n_alpha"] == 0).all()
    assert clones["clone"].str.fullmatch(r"P\d\d_\d+").all()
    t = small_cohort.truth_cells
    single = t[~t["is_doublet"] & (t["clone"] != "")]
    per_clone = single.groupby("clone").agg(
        lin=("cd4_cd8", "nunique"), car=("car_positive", "nunique"), pat=("patient", "nunique")
    )
    assert (per_clone[["lin", "car", "pat"]] == 1).all().all()
    merged = single.merge(
        clones[["clone", "cd4_cd8", "car_positive"]], on="clone", suffixes=("", "_c")
    )
    assert (merged["cd4_cd8"] == merged["cd4_cd8_c"]).all()
    assert (merged["car_positive"] == merged["car_positive_c"]).all()
    # states mostly but not entirely per clone
    big = single.groupby("clone").filter(lambda d: len(d) >= 5)
    purity = big.groupby("clone")["state"].agg(lambda s: s.value_counts(normalize=True).iloc[0])
    assert 0.6 < purity.mean() < 0.99
    # every TCR chain seen in the files belongs to one planted clone
    contigs = pd.concat([lib.vdj for lib in small_cohort.libraries if lib.plan.vdj_format == "csv"])
    known = set(clones["trb_cdr3_nt"]) | set(clones["tra_cdr3_nt"]) | set(clones["tra2_cdr3_nt"])
    known |= set(clones["trg_cdr3_nt"]) | set(clones["trd_cdr3_nt"])
    assert set(contigs["cdr3_nt"]) <= known


def _detection(cohort, genes: list[str]) -> pd.DataFrame:
    """Share of good cells detecting each gene, per truth lineage (rows) and gene (columns)."""
    t = cohort.truth_cells
    names = cohort.libraries[0].features["name"].tolist()
    cols = [names.index(g) for g in genes]
    x = np.vstack([lib.counts[:, cols].toarray() for lib in cohort.libraries]) > 0
    good = (~t["is_doublet"] & ~t["is_low_quality"]).to_numpy()
    det = pd.DataFrame(x[good], columns=genes)
    return det.groupby(t.loc[good, "cd4_cd8"].to_numpy()).mean()


def test_dn_and_gd_fractions_and_states(small_cohort):
    t = small_cohort.truth_cells
    good = t[~t["is_doublet"] & ~t["is_low_quality"]]
    ip = good[good["timepoint"] == "IP"]
    share = ip["cd4_cd8"].value_counts(normalize=True)
    assert 0.08 <= share["DN"] <= 0.25, share  # measured 0.149 (design: 10-30 %, mean 0.15)
    assert 0.02 <= share["gd"] <= 0.15, share  # measured 0.061 (design: 1-20 %, mean 0.06)
    # blood of the followed patients: DN similar or lower than in their products (blood-only
    # clones are DN half as often; measured 0.065 vs 0.077)
    followed = good[good["patient"].isin(set(good.loc[good["timepoint"] != "IP", "patient"]))]
    dn = (followed["cd4_cd8"] == "DN").groupby(followed["timepoint"] == "IP").mean()
    assert dn[False] <= dn[True] + 0.02, dn
    # both lean to effector-memory / effector states (measured 0.60 and 0.60 vs 0.36 / 0.41)
    eff = good["state"].isin(["tem", "teff"]).groupby(good["cd4_cd8"]).mean()
    assert eff["DN"] > eff["CD4"] + 0.1 and eff["gd"] > eff["CD8"] + 0.1, eff
    # gamma-delta clones are CAR+ as often as alpha-beta clones of the product
    cl = small_cohort.truth_clones
    car = cl[cl["source"] == "product"].groupby(cl["cd4_cd8"] == "gd")["car_positive"].mean()
    assert abs(car[True] - car[False]) <= 0.15, car


def test_dn_cells_express_cd4_and_cd8_at_ambient_level(small_cohort):
    det = _detection(small_cohort, ["CD4", "CD8A", "CD8B", "TRAC"])
    # measured: CD4 0.36 in CD4 cells, 0.00 in DN; CD8A/CD8B 0.91/0.91 in CD8 cells,
    # 0.06/0.09 in DN and 0.07/0.06 (ambient) in CD4 cells
    assert det.loc["DN", "CD4"] <= 0.2 * det.loc["CD4", "CD4"]
    for g in ("CD8A", "CD8B"):
        assert det.loc["DN", g] <= 0.2 * det.loc["CD8", g]
        assert det.loc["DN", g] <= det.loc["CD4", g] + 0.05  # the ambient level of CD4 cells
    assert det.loc["DN", "TRAC"] >= 0.8 * det.loc["CD8", "TRAC"]  # alpha-beta T cells


def test_gd_cells_express_trd_trg_and_have_no_alpha_beta_contigs(small_cohort):
    genes = ["TRDC", "TRGC1", "TRGC2", "TRAC", "TRBC1", "CD4", "CD8A", "CD8B"]
    det = _detection(small_cohort, genes)
    ab = det.loc[["CD4", "CD8", "DN"]]
    # measured: TRDC 0.78 in gamma-delta vs 0.06-0.08 in alpha-beta cells, TRGC1/TRGC2
    # 0.59/0.51 vs <= 0.06
    assert det.loc["gd", "TRDC"] >= 0.6 and det.loc["gd", "TRDC"] >= 5 * ab["TRDC"].max()
    assert det.loc["gd", ["TRGC1", "TRGC2"]].max() >= 5 * ab[["TRGC1", "TRGC2"]].max().max()
    # little TRAC/TRBC (germline transcripts): measured TRAC 0.25 vs 0.87-0.88
    assert 0.05 <= det.loc["gd", "TRAC"] <= 0.5 * ab["TRAC"].min()
    assert det.loc["gd", "CD4"] <= 0.1
    t = small_cohort.truth_cells
    gd = t[t["is_gd"] & ~t["is_doublet"]]
    assert len(gd) >= 30 and (gd["clone"] != "").mean() > 0.9  # clonal, own clone ids
    assert not gd["has_tcr"].any() and (gd["n_contigs"] == 0).all()
    for lib in small_cohort.libraries:
        col = "barcode" if lib.plan.vdj_format == "csv" else "cell_id"
        bcs = set(lib.truth.loc[lib.truth["is_gd"] & ~lib.truth["is_doublet"], "barcode"])
        assert not lib.vdj[col].isin(bcs).any()
    # CD8 alpha-alpha gamma-delta clones (a third): CD8A without CD8B (measured: CD8A 0.56,
    # CD8B 0.10 in their cells; CD8A 0.07 in the other gamma-delta cells)
    cd8aa = small_cohort.truth_clones.set_index("clone")["cd8aa"].to_dict()
    names = small_cohort.libraries[0].features["name"].tolist()
    parts = []
    for lib in small_cohort.libraries:
        sel = (lib.truth["is_gd"] & ~lib.truth["is_doublet"] & (lib.truth["clone"] != ""))
        det = lib.counts[:, [names.index("CD8A"), names.index("CD8B")]].toarray() > 0
        parts.append(pd.DataFrame(det[sel.to_numpy()], columns=["CD8A", "CD8B"]).assign(
            aa=lib.truth.loc[sel, "clone"].map(cd8aa).eq(True).to_numpy()))
    x = pd.concat(parts).groupby("aa").mean()
    assert 0.1 <= pd.concat(parts)["aa"].mean() <= 0.6
    assert x.loc[True, "CD8A"] >= 0.4 and x.loc[True, "CD8B"] <= 0.2
    assert x.loc[False, "CD8A"] <= 0.2


def test_gd_contigs_option_adds_trg_and_trd_contigs_only():
    kw = dict(seed=2, n_patients=2, min_cells=200, max_cells=250, frac_longitudinal=0,
              n_background_genes=300, airr_every=2, frac_gd=0.15)
    off = simulate_cohort(**kw)
    on = simulate_cohort(**kw, gd_contigs=True)
    for a, b in zip(off.libraries, on.libraries, strict=True):
        assert (a.counts != b.counts).nnz == 0  # the counts do not depend on the option
    same = [c for c in off.truth_cells.columns if c not in ("has_tcr", "n_contigs")]
    pd.testing.assert_frame_equal(off.truth_cells[same], on.truth_cells[same])
    t = on.truth_cells
    gd = t[t["is_gd"] & ~t["is_doublet"]]
    assert gd["has_tcr"].mean() >= 0.9
    clones = on.truth_clones
    gd_nt = set(clones["trg_cdr3_nt"]) | set(clones["trd_cdr3_nt"])
    loci = {"csv": set(), "airr": set()}
    for lib in on.libraries:
        airr = lib.plan.vdj_format == "airr"
        bc_col, locus_col, nt_col, v_col = (("cell_id", "locus", "junction", "v_call") if airr
                                            else ("barcode", "chain", "cdr3_nt", "v_gene"))
        lt = lib.truth[lib.truth["is_gd"] & ~lib.truth["is_doublet"] & lib.truth["has_tcr"]]
        rows = lib.vdj[lib.vdj[bc_col].isin(set(lt["barcode"]))]
        loci[lib.plan.vdj_format] |= set(rows[locus_col])
        assert set(rows[locus_col]) <= {"TRG", "TRD"} and rows[nt_col].isin(gd_nt).all()
        assert rows[v_col].str.match(r"^TR[GD]V").all()
        assert rows[bc_col].nunique() == len(lt)  # every such cell has its contigs
    assert loci == {"csv": {"TRG", "TRD"}, "airr": {"TRG", "TRD"}}
    cl = on.truth_clones[on.truth_clones["cd4_cd8"] == "gd"]
    assert (cl["trg_v"] == "TRGV9").mean() >= 0.4 and (cl["trd_v"] == "TRDV2").mean() >= 0.4
    assert set(cl["trd_v"]) <= {"TRDV1", "TRDV2", "TRDV3"}
    assert set(cl["trg_c"]) <= {"TRGC1", "TRGC2"}


def test_persistent_clones_are_tracked(small_cohort):
    t = small_cohort.truth_cells
    clones = small_cohort.truth_clones
    pers = clones[clones["persistent"]]
    patients = small_cohort.truth_patients.set_index("patient")
    assert (pers.groupby("patient").size() == patients["n_persistent_clones"]).all()
    assert pers["car_positive"].all()
    clean = t[~t["is_doublet"] & ~t["is_low_quality"] & (t["n_contigs"] >= 2)]
    for sample, d in t.groupby("sample"):
        patient = d["patient"].iloc[0]
        counts = clean[clean["sample"] == sample]["clone"].value_counts()
        for clone in pers.loc[pers["patient"] == patient, "clone"]:
            assert counts.get(clone, 0) >= 2, (sample, clone)
    later = t[t["timepoint"] != "IP"]
    product_clones = set(t.loc[t["timepoint"] == "IP", "clone"]) - {""}
    assert later["clone"].isin(product_clones).mean() > 0.3
    assert (~later["clone"].isin(product_clones | {""})).mean() > 0.1  # new clones


def test_car_detection_option_changes_only_the_car_counts():
    kw = dict(seed=1, n_patients=2, min_cells=300, max_cells=300, frac_longitudinal=0,
              n_background_genes=500)
    base = simulate_cohort(**kw)
    low = simulate_cohort(**kw, car_detection=0.3)
    for c, lo, hi in ((base, 0.55, 0.75), (low, 0.22, 0.38)):
        t = c.truth_cells
        pos = t[t["car_positive"] & ~t["is_doublet"] & ~t["is_low_quality"]]
        assert lo <= (pos["car_umis"] > 0).mean() <= hi
    assert base.truth_cells["car_positive"].equals(low.truth_cells["car_positive"])


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_values_follow_the_effect_table(seed):
    """Observed product proportions track the planted ones; power is in test_design_power."""
    cohort = simulate_cohort(seed=seed, frac_longitudinal=0.0, n_background_genes=300)
    tp = cohort.truth_patients
    assert tp["responder"].sum() == 10 and (~tp["responder"]).sum() == 10
    assert (tp.loc[tp["responder"], "response"] == "CR").all()
    assert tp.loc[~tp["responder"], "response"].isin(["PD", "SD"]).all()
    for planted, observed in (("memory_like_fraction", "ip_memory_like_observed"),
                              ("exhausted_fraction", "ip_exhausted_observed"),
                              ("cd4_fraction", "ip_cd4_observed")):
        r = np.corrcoef(tp[planted], tp[observed])[0, 1]
        assert r > 0.8, (planted, r)
    assert (tp["null_feature"] == "cd4_cd8_ratio").all()
    # DN and gamma-delta shares of the products: per-patient draws, observed through clones
    # (measured r 0.89 / 0.95 for DN, 0.78 / 0.93 for gamma-delta at seeds 0 / 1)
    for planted, observed in (("dn_fraction", "ip_dn_observed"),
                              ("gd_fraction", "ip_gd_observed")):
        r = np.corrcoef(tp[planted], tp[observed])[0, 1]
        assert r > 0.7, (planted, r)
    # designed ranges: DN 10-30 % of product cells (mean 0.15), gamma-delta 1-20 % (0.06);
    # measured means 0.152 / 0.158 (DN) and 0.043 / 0.057 (gamma-delta)
    assert 0.10 <= tp["ip_dn_observed"].mean() <= 0.22
    assert tp["ip_dn_observed"].between(0.05, 0.32).mean() >= 0.8
    assert 0.025 <= tp["ip_gd_observed"].mean() <= 0.10
    assert tp["ip_gd_observed"].max() <= 0.25
    assert tp["dn_fraction"].between(0.03, 0.35).all() and tp["gd_fraction"].le(0.2).all()


def test_batches_balanced_and_formats_scale(small_cohort):
    tp = small_cohort.truth_patients
    assert set(tp["batch"]) <= {"b1", "b2", "b3"}
    c = simulate_cohort(seed=0, n_patients=6, min_cells=20, max_cells=30, n_background_genes=100)
    assert c.libraries[0].counts.shape[1] < small_cohort.libraries[0].counts.shape[1]
    assert c.truth_patients.groupby("responder")["batch"].nunique().min() == 3


def test_invalid_settings_raise():
    with pytest.raises(CartCohortError, match="min_cells"):
        simulate_cohort(seed=0, min_cells=500, max_cells=100)
    with pytest.raises(CartCohortError, match="Unknown simulator setting"):
        simulate_cohort(seed=0, n_patient=3)
    with pytest.raises(CartCohortError, match="car_detection"):
        simulate_cohort(seed=0, car_detection=1.5)
    with pytest.raises(CartCohortError, match="chemistry"):
        simulate_cohort(seed=0, chemistry="10x")
    with pytest.raises(CartCohortError, match="frac_dn"):
        simulate_cohort(seed=0, frac_dn=0.7)
    with pytest.raises(CartCohortError, match="gd_contigs"):
        simulate_cohort(seed=0, gd_contigs="yes")


def test_cli(tmp_path):
    scripts = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        import simulate_demo
    finally:
        sys.path.remove(str(scripts))
    rc = simulate_demo.main(
        ["--out", str(tmp_path / "d"), "--seed", "2", "--n-patients", "2", "--min-cells", "40",
         "--max-cells", "60", "--car-detection", "0.5", "--n-background-genes", "400", "--config-dir", str(tmp_path / "cfg"),
         "--gd-contigs", "true", "--frac-gd", "0.2"]
    )
    assert rc == 0
    t = _read(tmp_path / "d" / "truth_cells.tsv")
    assert t.loc[t["is_gd"], "has_tcr"].any()  # --gd-contigs true: TRG/TRD contigs
    assert simulate_demo.build_parser().parse_args(["--out", "x"]).gd_contigs is False
    assert len(_read(tmp_path / "d" / "samples.tsv")) >= 2
    assert (tmp_path / "cfg" / "samples.tsv").exists()
    assert simulate_demo.main(["--out", str(tmp_path / "x"), "--min-cells", "5"]) == 1
