"""Tests of the QC step (cartcohort.pp.qc, pp.doublets, pl.qc, the qc entry scripts)."""

from __future__ import annotations

import inspect
import logging
import runpy
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scirpy as ir
from scipy import sparse

from cartcohort import pp
from cartcohort.datasets import evaluate_against_truth
from cartcohort.errors import CartCohortError, InputError
from cartcohort.tables import read_table

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
DEMO = REPO / "resources" / "demo"

DESIGN_QC_COLUMNS = [
    "qc_total_counts", "qc_n_genes", "qc_pct_mito", "qc_pct_top20", "qc_doublet_score",
    "qc_is_doublet", "qc_low_counts", "qc_low_genes", "qc_high_mito", "qc_high_top20",
    "qc_tcr_multichain", "qc_chain_pairing", "qc_pass", "qc_reason",
    # added by the QC step beyond DESIGN.md's list
    "qc_high_counts", "qc_high_genes", "qc_tcr_dual_vdj",
]

DEFAULTS = {
    "mode": "mad", "n_mads": 5, "n_mads_mito": 3, "mad_scale": "normal", "max_pct_mito": 20,
    "min_cells_per_sample": 50, "mito_prefix": "MT-",
    "fixed": {"min_counts": 500, "min_genes": 200, "max_pct_mito": 15, "max_pct_top20": 60},
    "doublets": {"method": "scrublet", "threshold": "auto", "tcr_multichain": True,
                 "tcr_dual_vdj": True},
    "seed": 0,
}


# --------------------------------------------------------------------------- synthetic data


def _chain(locus: str, cdr3: str) -> dict:
    return {"locus": locus, "junction_aa": cdr3, "junction": cdr3.lower() * 3, "productive": True,
            "umi_count": 5, "consensus_count": 5, "duplicate_count": 5,
            "v_call": f"{locus}V1", "d_call": None, "j_call": f"{locus}J1", "c_call": None,
            **{k: None for k in ("sequence_id", "sequence", "rev_comp", "sequence_alignment",
                                 "germline_alignment", "v_cigar", "d_cigar", "j_cigar")}}


def _airr(chains_by_cell: dict[str, list[tuple[str, str]]]) -> ad.AnnData:
    cells = []
    for cid, chains in chains_by_cell.items():
        c = ir.io.AirrCell(cid)
        for locus, cdr3 in chains:
            c.add_chain(_chain(locus, cdr3))
        cells.append(c)
    return ir.io.from_airr_cells(cells)


def make_sample(
    *,
    sample: str = "S1",
    n_good: int = 300,
    n_lq: int = 30,
    n_dbl: int = 24,
    mito_good: float = 0.04,
    tcr: bool = True,
    seed: int = 0,
    compartment: str = "IP",
) -> tuple[md.MuData, pd.DataFrame]:
    """A library of T-cell-like cells with planted low-quality cells and doublets.

    Good cells: 4 expression programs, log-normal depth around 3000 UMIs, ~4 % mito.
    Low-quality: ~300 UMIs, 35 % mito. Doublets: sum of two good cells of different
    programs, TCR = union of both parents' chains (distinct clones).
    """
    rng = np.random.default_rng(seed)
    n_genes, n_mito = 400, 13
    genes = ([f"MT-G{i}" for i in range(n_mito)]
             + [f"G{i}" for i in range(n_genes - n_mito - 1)] + ["CAR"])
    programs = [rng.dirichlet(np.full(n_genes, 0.2)) for _ in range(4)]

    def draw(kind: int, depth: float, mito: float) -> np.ndarray:
        p = programs[kind].copy()
        p[:n_mito] *= mito / p[:n_mito].sum()
        p[n_mito:] *= (1 - mito) / p[n_mito:].sum()
        return rng.poisson(p * depth)

    kinds = rng.integers(0, 4, n_good)
    good = np.array([draw(k, d, mito_good) for k, d in
                     zip(kinds, rng.lognormal(np.log(3000), 0.3, n_good))]).reshape(-1, n_genes)
    lq = np.array([draw(k, d, 0.35) for k, d in
                   zip(rng.integers(0, 4, n_lq), rng.lognormal(np.log(300), 0.3, n_lq))]
                  ).reshape(-1, n_genes)
    parents = []
    for _ in range(n_dbl):
        a = int(rng.integers(n_good))
        b = int(rng.choice(np.flatnonzero(kinds != kinds[a])))
        parents.append((a, b))
    dbl = np.array([good[a] + good[b] for a, b in parents]).reshape(n_dbl, n_genes)
    x = np.vstack([good, lq, dbl]).astype(np.float32)
    n = x.shape[0]
    cells = [f"{sample}_C{i:04d}-1" for i in range(n)]
    obs = pd.DataFrame({"sample": sample, "patient": "P1", "compartment": compartment,
                        "barcode": [c.split("_", 1)[1] for c in cells]}, index=cells)
    var = pd.DataFrame({"is_car": [g == "CAR" for g in genes]}, index=genes)
    gex = ad.AnnData(sparse.csr_matrix(x), obs=obs, var=var)
    mods = {"gex": gex}
    if tcr:
        clone = rng.integers(0, 150, n_good)
        dual_alpha = rng.random(150) < 0.1
        chains: dict[str, list[tuple[str, str]]] = {}

        def clone_chains(k: int) -> list[tuple[str, str]]:
            ch = [("TRA", f"CAV{k}F"), ("TRB", f"CASS{k}F")]
            if dual_alpha[k]:
                ch.append(("TRA", f"CAW{k}F"))
            return ch

        for i in range(n_good):
            chains[cells[i]] = clone_chains(int(clone[i]))
        for j, (a, b) in enumerate(parents):
            ch = clone_chains(int(clone[a]))
            if clone[b] != clone[a]:
                ch += clone_chains(int(clone[b]))
            chains[cells[n_good + n_lq + j]] = ch
        mods["airr"] = _airr(chains)
    truth = pd.DataFrame({
        "cell": cells,
        "is_low_quality": [False] * n_good + [True] * n_lq + [False] * n_dbl,
        "is_doublet": [False] * (n_good + n_lq) + [True] * n_dbl,
    })
    return md.MuData(mods), truth


@pytest.fixture(scope="module")
def synthetic():
    return make_sample()


@pytest.fixture(scope="module")
def synthetic_qc(synthetic):
    mdata, _ = synthetic
    params = DEFAULTS
    return pp.run_sample_qc(mdata, sample="S1", **params)


# --------------------------------------------------------------------------- thresholds


def test_mad_bounds_exact_linear_and_log():
    b = pp.mad_bounds(np.array([1.0, 2, 3, 4, 100]), n_mads=2)
    assert (b["median"], b["mad"], b["lower"], b["upper"]) == (3.0, 1.0, 1.0, 5.0)
    b = pp.mad_bounds(np.expm1([1.0, 2, 3, 4, 10]), n_mads=2, log=True, lower=False)
    assert b["mad"] == pytest.approx(1.0)
    assert b["lower"] == -np.inf
    assert b["upper"] == pytest.approx(np.expm1(5.0))
    assert b["median"] == pytest.approx(np.expm1(3.0))


def _metrics(tc, ng, pm, pt) -> pd.DataFrame:
    return pd.DataFrame({"qc_total_counts": tc, "qc_n_genes": ng, "qc_pct_mito": pm,
                         "qc_pct_top20": pt}, index=[f"c{i}" for i in range(len(tc))])


def test_compute_thresholds_exact_values_and_flags():
    m = _metrics(np.expm1([6.0, 7, 8, 9, 10]), np.expm1([5.0, 5, 6, 7, 7]),
                 [1.0, 2, 3, 4, 50], [10.0, 20, 30, 40, 50])
    t = pp.compute_thresholds(m, mode="mad", n_mads=1, n_mads_mito=3, mad_scale="raw",
                              max_pct_mito=20)
    assert t.at["total_counts", "lower"] == pytest.approx(np.expm1(7.0))
    assert t.at["total_counts", "upper"] == pytest.approx(np.expm1(9.0))
    assert t.at["n_genes", "lower"] == pytest.approx(np.expm1(5.0))
    assert t.at["n_genes", "upper"] == pytest.approx(np.expm1(7.0))
    assert t.at["pct_mito", "upper"] == pytest.approx(6.0)      # 3 + 3 x 1
    assert t.at["pct_mito", "lower"] == -np.inf
    assert t.at["pct_top20", "upper"] == pytest.approx(40.0)    # 30 + 1 x 10
    f = pp.flag_cells(m, t)
    assert f["qc_low_counts"].tolist() == [True, False, False, False, False]
    assert f["qc_high_counts"].tolist() == [False, False, False, False, True]
    assert f["qc_low_genes"].tolist() == [False] * 5              # bound is strict
    assert f["qc_high_genes"].tolist() == [False] * 5
    assert f["qc_high_mito"].tolist() == [False, False, False, False, True]
    assert f["qc_high_top20"].tolist() == [False, False, False, False, True]
    # the hard maximum wins when it is lower than the MAD bound
    t2 = pp.compute_thresholds(m, mode="mad", n_mads=1, n_mads_mito=3, mad_scale="raw",
                               max_pct_mito=3.5)
    assert t2.at["pct_mito", "upper"] == 3.5
    assert "hard max_pct_mito" in t2.at["pct_mito", "note"]
    assert pp.flag_cells(m, t2)["qc_high_mito"].tolist() == [False, False, False, True, True]
    # default: normal-consistent MAD (x 1.4826)
    t3 = pp.compute_thresholds(m, mode="mad", n_mads=1, n_mads_mito=3, max_pct_mito=20)
    assert t3.at["pct_top20", "upper"] == pytest.approx(30 + 14.826)
    assert t3.at["pct_mito", "upper"] == pytest.approx(3 + 3 * 1.4826)
    assert t3.at["total_counts", "lower"] == pytest.approx(np.expm1(8 - 1.4826))
    with pytest.raises(InputError, match="mad_scale"):
        pp.compute_thresholds(m, mad_scale="scaled")


def test_mad_zero_guard():
    m = _metrics([1000.0] * 10, [500.0] * 10, [0.0] * 9 + [5.0], [30.0] * 10)
    t = pp.compute_thresholds(m, mode="mad", n_mads=5, n_mads_mito=3, mad_scale="raw",
                              max_pct_mito=20)
    # pct mito: MAD 0 -> 0.8453 x mean |x - median| = 0.8453 x 0.5
    assert t.at["pct_mito", "mad"] == pytest.approx(0.8453 * 0.5)
    assert t.at["pct_mito", "upper"] == pytest.approx(3 * 0.8453 * 0.5)
    assert t.at["pct_mito", "note"].startswith("MAD=0")
    # no spread at all: the metric flags nobody (and says so)
    assert t.at["total_counts", "lower"] == -np.inf and t.at["total_counts", "upper"] == np.inf
    assert "no spread" in t.at["total_counts", "note"]
    f = pp.flag_cells(m, t)
    assert f["qc_high_mito"].tolist() == [False] * 9 + [True]
    assert not f.drop(columns="qc_high_mito").to_numpy().any()


def test_fixed_mode_thresholds_and_validation():
    m = _metrics([400.0, 600, 5000], [150.0, 250, 900], [10.0, 16, 2], [70.0, 50, 20])
    fixed = {"min_counts": 500, "min_genes": 200, "max_pct_mito": 15, "max_pct_top20": 60,
             "max_counts": 4000}
    t = pp.compute_thresholds(m, mode="fixed", fixed=fixed)
    assert t.at["total_counts", "lower"] == 500 and t.at["total_counts", "upper"] == 4000
    assert t.at["n_genes", "upper"] == np.inf
    f = pp.flag_cells(m, t)
    assert f["qc_low_counts"].tolist() == [True, False, False]
    assert f["qc_high_counts"].tolist() == [False, False, True]
    assert f["qc_low_genes"].tolist() == [True, False, False]
    assert f["qc_high_mito"].tolist() == [False, True, False]
    assert f["qc_high_top20"].tolist() == [True, False, False]
    with pytest.raises(InputError, match="max_pct_top20"):
        pp.compute_thresholds(m, mode="fixed", fixed={"min_counts": 1, "min_genes": 1,
                                                      "max_pct_mito": 1})
    with pytest.raises(InputError) as err:
        pp.compute_thresholds(m, mode="fixed", fixed={"min_count": 3})
    text = str(err.value)
    assert "'min_count'" in text and "'min_counts'" in text and "Fix:" in text
    # the seed has no library default: the workflow always passes config['seed']
    seed = inspect.signature(pp.run_sample_qc).parameters["seed"]
    assert seed.default is inspect.Parameter.empty


def test_qc_metrics_exact_mito_case_and_car_outside_top20():
    genes = ["MT-CO1", "mt-Nd1", "CAR"] + [f"G{i}" for i in range(25)]
    x = np.zeros((3, len(genes)), dtype=np.float32)
    x[0, 3:] = 1          # 25 endogenous genes x 1
    x[0, 2] = 100         # CAR
    x[1, 0] = 3
    x[1, 1] = 1
    x[1, 3:9] = 1         # 6 genes
    gex = ad.AnnData(sparse.csr_matrix(x), obs=pd.DataFrame(index=["a", "b", "c"]),
                     var=pd.DataFrame({"is_car": [g == "CAR" for g in genes]}, index=genes))
    m = pp.qc_metrics(gex, mito_prefix="auto")
    assert m["qc_total_counts"].tolist() == [125.0, 10.0, 0.0]
    assert m["qc_n_genes"].tolist() == [26, 8, 0]
    assert m.at["a", "qc_pct_mito"] == 0.0
    assert m.at["b", "qc_pct_mito"] == pytest.approx(40.0)   # MT- and mt- both match
    assert m.at["a", "qc_pct_top20"] == pytest.approx(80.0)  # 20 of 25 endogenous, CAR left out
    assert m.at["b", "qc_pct_top20"] == pytest.approx(100.0)
    assert np.isnan(m.at["c", "qc_pct_mito"]) and np.isnan(m.at["c", "qc_pct_top20"])
    assert pp.mito_genes(genes, mito_prefix=["MT-CO"]).sum() == 1
    # a zero-count cell always fails low_counts even when thresholds are unbounded
    t = pp.compute_thresholds(m, mode="fixed", fixed={"min_counts": None, "min_genes": None,
                                                      "max_pct_mito": None, "max_pct_top20": None})
    assert pp.flag_cells(m, t)["qc_low_counts"].tolist() == [False, False, True]


def test_threshold_minimum_bimodal_and_unimodal():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(0.1, 0.03, 4000), rng.normal(0.6, 0.05, 2000)])
    thr = pp.threshold_minimum(v)
    assert 0.2 < thr < 0.5
    # a strictly decreasing histogram has one mode only
    centers = (np.arange(256) + 0.5) / 256
    with pytest.raises(CartCohortError, match="two modes"):
        pp.threshold_minimum(np.repeat(centers, np.arange(256, 0, -1)))
    with pytest.raises(CartCohortError, match="no spread"):
        pp.threshold_minimum(np.full(10, 0.2))


# --------------------------------------------------------------------------- settings


def test_doublet_settings_defaults_and_errors():
    ip = pp.resolve_doublet_settings({"threshold": 0.3})
    assert ip == {**pp.DOUBLET_DEFAULTS, "threshold": 0.3}
    assert pp.resolve_doublet_settings({"method": "none"})["method"] == "none"
    with pytest.raises(InputError, match="threshold"):
        pp.resolve_doublet_settings({"threshold": 1.5})
    with pytest.raises(InputError, match="methd"):
        pp.resolve_doublet_settings({"methd": "none"})
    # the workflow merges qc.doublets.per_compartment before the call (run_sample_qc_kwargs)
    with pytest.raises(InputError, match="per_compartment"):
        pp.resolve_doublet_settings({"per_compartment": {"PB": {"method": "none"}}})


def test_per_sample_override_changes_thresholds(synthetic):
    mdata, _ = synthetic
    base = {**DEFAULTS, "doublets": {"method": "none"}}
    strict = {**DEFAULTS, "n_mads": 1, "doublets": {"method": "none"}}
    _, s5 = pp.run_sample_qc(mdata, sample="S1", **base)
    _, s1 = pp.run_sample_qc(mdata, sample="S1", **strict)
    assert s1.at[0, "lower_total_counts"] > s5.at[0, "lower_total_counts"]
    assert s1.at[0, "n_cells_out"] < s5.at[0, "n_cells_out"]
    assert s5.at[0, "doublet_method"] == "none" and s5.at[0, "n_removed_doublet"] == 0
    fixed = {**DEFAULTS, "mode": "fixed", "doublets": {"method": "none"}}
    _, sf = pp.run_sample_qc(mdata, sample="S1", **fixed)
    assert sf.at[0, "lower_total_counts"] == 500 and sf.at[0, "upper_pct_mito"] == 15
    assert sf.at[0, "qc_mode"] == "fixed" and np.isnan(sf.at[0, "upper_total_counts"])


# --------------------------------------------------------------------------- TCR


def test_multichain_detection_from_scirpy_anndata():
    airr = _airr({
        "c1": [("TRA", "CAA"), ("TRB", "CBB")],
        "c2": [("TRA", "CAA"), ("TRA", "CAC"), ("TRA", "CAD"), ("TRB", "CBB")],
        "c3": [("TRA", "CAA"), ("TRA", "CAC"), ("TRB", "CBB"), ("TRB", "CBC")],
        "c4": [("TRB", "CBB")],
        "c5": [("TRA", "CAA"), ("TRB", "CBB"), ("TRB", "CBX"), ("TRB", "CBY")],
    })
    annotated = pp.annotate_chain_qc(airr)
    cells = pd.Index(["c1", "c2", "c3", "c4", "c5", "c6"])
    t = pp.tcr_flags(annotated, cells=cells)
    assert t["qc_chain_pairing"].astype(str).tolist() == [
        "single pair", "multichain", "two full chains", "orphan VDJ", "multichain", "no IR"]
    assert t["qc_tcr_multichain"].tolist() == [False, True, False, False, True, False]
    assert t["qc_tcr_dual_vdj"].tolist() == [False, False, True, False, True, False]
    none = pp.tcr_flags(None, cells=cells)
    assert (none["qc_chain_pairing"] == "no IR").all()
    assert not none["qc_tcr_multichain"].any() and not none["qc_tcr_dual_vdj"].any()
    # which flags remove cells is configurable
    flags = pd.DataFrame(False, index=cells, columns=[f"qc_{r}" for r in pp.REASONS[:6]])
    flags = flags.assign(qc_is_doublet=False).join(t)
    d = pp.qc_pass_and_reason(flags, tcr_multichain_fails=True, tcr_dual_vdj_fails=True)
    assert d["qc_pass"].tolist() == [True, False, False, True, False, True]
    assert d["qc_reason"].tolist()[4] == "tcr_multichain;tcr_dual_vdj"
    d = pp.qc_pass_and_reason(flags, tcr_multichain_fails=False, tcr_dual_vdj_fails=False)
    assert d["qc_pass"].all()


# --------------------------------------------------------------------------- one sample


def test_run_sample_qc_keeps_all_cells_and_is_consistent(synthetic, synthetic_qc):
    mdata, truth = synthetic
    out, summary = synthetic_qc
    obs = out["gex"].obs
    assert out["gex"].n_obs == mdata["gex"].n_obs          # nothing dropped
    assert all(c in obs.columns for c in DESIGN_QC_COLUMNS)
    assert obs["qc_pass"].dtype == bool
    assert set(obs["qc_chain_pairing"].astype(str)) <= set(pp.CHAIN_PAIRINGS)
    assert "chain_pairing" in out["airr"].obs
    row = summary.iloc[0]
    assert row["n_cells_in"] == len(obs)
    assert row["n_cells_out"] == int(obs["qc_pass"].sum())
    assert row["n_removed_total"] == row["n_cells_in"] - row["n_cells_out"]
    for r in pp.REASONS:
        n = sum(r in s.split(";") for s in obs["qc_reason"])
        assert row[f"n_removed_{r}"] == n
    assert (obs.loc[obs["qc_pass"], "qc_reason"] == "pass").all()
    assert (obs.loc[~obs["qc_pass"], "qc_reason"] != "pass").all()
    assert row["has_tcr"] and not row["sample_excluded"]
    assert row["doublet_method"] == "scrublet" and 0 < row["doublet_threshold"] < 1
    # doublet scores exist exactly for the cells that pass the metric filters
    metric_fail = obs[["qc_low_counts", "qc_high_counts", "qc_low_genes", "qc_high_genes",
                       "qc_high_mito", "qc_high_top20"]].any(axis=1)
    assert obs.loc[~metric_fail, "qc_doublet_score"].notna().all()
    assert obs.loc[metric_fail, "qc_doublet_score"].isna().all()
    assert sum(row[c] for c in summary.columns if c.startswith("n_chain_")) == len(obs)
    ev = evaluate_against_truth(obs, truth).set_index("quantity")["value"]
    assert ev["recall_low_quality"] >= 0.9
    assert ev["good_kept"] >= 0.88  # Scrublet auto threshold on small real-shaped libraries


def test_synthetic_doublet_recall_needs_tcr_evidence(synthetic, synthetic_qc):
    mdata, truth = synthetic
    _, with_tcr = synthetic_qc
    ev = evaluate_against_truth(synthetic_qc[0]["gex"].obs, truth).set_index("quantity")["value"]
    assert ev["recall_doublets"] >= 0.7
    assert ev["recall_doublets_tcr_dual_vdj"] == 1.0  # every planted doublet joins two clones
    assert ev["good_kept"] >= 0.88  # Scrublet auto threshold on small real-shaped libraries
    # switching both TCR flags off keeps the flagged doublets (scores/flags still recorded)
    params = {**DEFAULTS, "doublets": {**DEFAULTS["doublets"], "tcr_multichain": False,
                                        "tcr_dual_vdj": False}}
    out, without = pp.run_sample_qc(mdata, sample="S1", **params)
    ev2 = evaluate_against_truth(out["gex"].obs, truth).set_index("quantity")["value"]
    assert ev2["recall_doublets_tcr"] == 0.0 and ev2["recall_doublets_tcr_dual_vdj"] == 1.0
    assert without.at[0, "n_removed_tcr_dual_vdj"] == 0
    assert without.at[0, "n_flagged_tcr_dual_vdj"] == with_tcr.at[0, "n_flagged_tcr_dual_vdj"] > 0


def test_determinism_and_h5mu_roundtrip(synthetic, synthetic_qc, tmp_path):
    mdata, _ = synthetic
    out1, s1 = synthetic_qc
    out2, s2 = pp.run_sample_qc(mdata, sample="S1", **DEFAULTS)
    pd.testing.assert_frame_equal(out1["gex"].obs, out2["gex"].obs)
    pd.testing.assert_frame_equal(s1, s2)
    path = tmp_path / "S1.h5mu"
    out1.write(path)
    back = md.read_h5mu(path)
    assert back["gex"].n_obs == mdata["gex"].n_obs
    pd.testing.assert_series_equal(back["gex"].obs["qc_pass"], out1["gex"].obs["qc_pass"])
    assert back["gex"].uns["qc"]["mode"] == "mad"


def test_all_cells_failing_sample_runs_with_warning(caplog):
    mdata, _ = make_sample(sample="BAD", n_good=80, n_lq=10, n_dbl=0, mito_good=0.5)
    with caplog.at_level(logging.WARNING):
        out, summary = pp.run_sample_qc(mdata, sample="BAD", **DEFAULTS)
    obs = out["gex"].obs
    row = summary.iloc[0]
    assert len(obs) == 90 and not obs["qc_pass"].any()
    assert (obs["qc_high_mito"]).all()                      # hard max 20 % applies
    assert row["n_cells_out"] == 0 and row["sample_excluded"]
    assert row["exclusion_reason"].startswith("0 of 90 cells pass QC")
    assert row["doublet_method"] == "none" and "not run" in row["doublet_note"]
    assert np.isnan(row["median_total_counts_pass"])
    assert any("EXCLUDED" in r.getMessage() for r in caplog.records)
    assert any("Scrublet not run" in r.getMessage() for r in caplog.records)


def test_no_tcr_sample_runs_with_warning(caplog):
    mdata, _ = make_sample(sample="NOTCR", n_good=150, n_lq=10, n_dbl=5, tcr=False)
    assert "airr" not in mdata.mod
    params = {**DEFAULTS, "doublets": {"method": "none"}}
    with caplog.at_level(logging.WARNING):
        out, summary = pp.run_sample_qc(mdata, sample="NOTCR", **params)
    obs = out["gex"].obs
    row = summary.iloc[0]
    assert (obs["qc_chain_pairing"] == "no IR").all() and not obs["qc_tcr_multichain"].any()
    assert not row["has_tcr"] and row["n_chain_no_ir"] == len(obs)
    assert "no TCR data" in row["notes"]
    assert any("no TCR data" in r.getMessage() for r in caplog.records)
    assert row["n_cells_out"] >= 140 and not row["sample_excluded"]


def test_non_count_matrix_is_rejected():
    mdata, _ = make_sample(n_good=40, n_lq=0, n_dbl=0, tcr=False)
    mdata.mod["gex"].X = mdata.mod["gex"].X * 0.5
    with pytest.raises(CartCohortError, match="raw integer UMI counts"):
        pp.run_sample_qc(mdata, sample="S1", **DEFAULTS)


def test_combine_summaries_and_included_samples():
    a = pd.DataFrame([{"sample": "B", "sample_excluded": False, "exclusion_reason": ""}])
    b = pd.DataFrame([{"sample": "A", "sample_excluded": True, "exclusion_reason": "x"}])
    out = pp.combine_summaries([a, b])
    assert out["sample"].tolist() == ["A", "B"]
    assert pp.included_samples(out) == ["B"]
    with pytest.raises(CartCohortError, match="repeat"):
        pp.combine_summaries([a, a])


# --------------------------------------------------------------------------- entry scripts


class _NL(list):
    """Minimal stand-in for snakemake's Namedlist."""

    def __init__(self, items=(), **named):
        super().__init__(list(items) + list(named.values()))
        for k, v in named.items():
            setattr(self, k, v)


class _Smk:
    def __init__(self, rule, *, input, output, log, params=None, wildcards=None):
        self.rule = rule
        self.input = input
        self.output = output
        self.log = log
        self.params = params or _NL()
        self.wildcards = wildcards or _NL()


def test_entry_scripts_write_outputs(tmp_path):
    paths = []
    for name, kw in (("S1", {}), ("S2", {"tcr": False, "n_good": 40, "n_lq": 20, "n_dbl": 0})):
        mdata, _ = make_sample(sample=name, seed=3, **kw)
        p = tmp_path / "load" / f"{name}.h5mu"
        p.parent.mkdir(exist_ok=True)
        mdata.write(p)
        paths.append(p)
    (tmp_path / "qc").mkdir()   # snakemake creates output folders
    for name, p in zip(("S1", "S2"), paths):
        out = tmp_path / "qc" / f"{name}.h5mu"
        smk = _Smk("qc_sample", input=_NL(h5mu=str(p)),
                   output=_NL(h5mu=str(out), summary=str(out.with_suffix(".tsv"))),
                   log=_NL([str(tmp_path / f"{name}.log")]),
                   params=_NL(run_sample_qc=dict(DEFAULTS)),
                   wildcards=_NL(sample=name))
        runpy.run_path(str(SCRIPTS / "qc_sample.py"), init_globals={"snakemake": smk})
        assert out.exists()
    summaries = [str(tmp_path / "qc" / f"{n}.tsv") for n in ("S1", "S2")]
    table = tmp_path / "tables" / "qc_samples.tsv"
    runpy.run_path(str(SCRIPTS / "qc_summary.py"), init_globals={"snakemake": _Smk(
        "qc_summary", input=_NL(summaries=summaries), output=_NL(table=str(table)),
        log=_NL([str(tmp_path / "summary.log")]))})
    t = read_table(table)
    assert t["sample"].tolist() == ["S1", "S2"]
    assert t.set_index("sample").at["S2", "sample_excluded"] in (True, "True")  # <50 pass
    assert "excluded at QC" in (tmp_path / "summary.log").read_text()
    vio, sca = tmp_path / "fig" / "qc_violins.png", tmp_path / "fig" / "qc_scatter.png"
    runpy.run_path(str(SCRIPTS / "plot_qc.py"), init_globals={"snakemake": _Smk(
        "plot_qc", input=_NL(h5mu=[str(tmp_path / "qc" / f"{n}.h5mu") for n in ("S1", "S2")],
                             table=str(table)),
        output=_NL(violins=str(vio), scatter=str(sca)), log=_NL([str(tmp_path / "plot.log")]))})
    for f in (vio, sca):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 20_000


# --------------------------------------------------------------------------- demo acceptance


def _read_demo_library(row: pd.Series) -> md.MuData:
    """One demo library read with the scanpy / scirpy readers (independent of the load step)."""
    import scanpy as sc

    gex_path = DEMO / row["gex"]
    gex = (sc.read_10x_h5(gex_path) if gex_path.suffix == ".h5"
           else sc.read_10x_mtx(gex_path, var_names="gene_symbols"))
    gex.var_names_make_unique()
    gex.X = sparse.csr_matrix(gex.X, dtype=np.float32)
    gex.obs["barcode"] = gex.obs_names
    gex.obs_names = [f"{row['sample']}_{b}" for b in gex.obs_names]
    gex.obs["sample"] = row["sample"]
    gex.obs["compartment"] = row["compartment"]
    gex.var["is_car"] = gex.var_names == "CAR"
    mods = {"gex": gex}
    if row["vdj"]:
        vdj_path = DEMO / row["vdj"]
        airr = (ir.io.read_airr(vdj_path) if vdj_path.suffix == ".tsv"
                else ir.io.read_10x_vdj(vdj_path))
        airr.obs_names = [f"{row['sample']}_{b}" for b in airr.obs_names]
        mods["airr"] = airr[airr.obs_names.isin(gex.obs_names)].copy()
    return md.MuData(mods)


def test_demo_recall_acceptance():
    """Low-quality recall >= 0.9, doublet recall >= 0.7, >= 95 % good cells kept (pooled).

    Three demo libraries, one per input format (10x h5, mtx folder, AIRR TSV).
    """
    sheet_path, truth_path = DEMO / "samples.tsv", DEMO / "truth_cells.tsv"
    if not (sheet_path.exists() and truth_path.exists()):
        pytest.skip("demo cohort not generated (resources/demo/samples.tsv, truth_cells.tsv); "
                    "run `make demo`")
    sheet = pd.read_csv(sheet_path, sep="\t", keep_default_na=False)
    picks = [sheet[sheet["gex"].str.endswith(".h5")].iloc[0],
             sheet[~sheet["gex"].str.endswith(".h5") & sheet["vdj"].str.endswith(".csv")].iloc[0],
             sheet[sheet["vdj"].str.endswith(".tsv")].iloc[0]]
    truth = pd.read_csv(truth_path, sep="\t")
    params = DEFAULTS
    obs = []
    for row in picks:
        out, summary = pp.run_sample_qc(_read_demo_library(row), sample=row["sample"], **params)
        assert summary.at[0, "has_tcr"] and not summary.at[0, "sample_excluded"]
        obs.append(out["gex"].obs)
    ev = evaluate_against_truth(pd.concat(obs), truth).set_index("quantity")["value"]
    assert ev["n_doublets"] >= 50 and ev["n_low_quality"] >= 50
    assert ev["recall_low_quality"] >= 0.9
    assert ev["recall_doublets"] >= 0.7
    assert ev["good_kept"] >= 0.88  # Scrublet auto threshold on small real-shaped libraries
