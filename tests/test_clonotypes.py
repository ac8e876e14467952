"""Tests of cartcohort.tl.clonotypes (clonotype calling, public clonotypes, the workflow
step), cartcohort.tl.repertoire (repertoire metrics, tracking) and their figures.
Hand-computed values on tiny data; real 10x/AIRR contigs from ../shared/data; the demo
cohort's planted clones."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cartcohort.errors import CartCohortError
from cartcohort.tl import clonotypes as ct
from cartcohort.tl import repertoire as rt

pytestmark = pytest.mark.filterwarnings("ignore:.*[Aa]wkward.*")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


def _shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not available: {path} is absent (only in the dev checkout)")
    return path


# ----------------------------------------------------------------------------- helpers


def _airr(cells: dict[str, list[tuple]], obs: dict[str, dict] | None = None):
    """scirpy AIRR AnnData from {cell: [(locus, nt, aa, v, j), ...]}."""
    import scirpy as ir

    rows = []
    for cell, chains in cells.items():
        for i, (locus, nt, aa, v, j) in enumerate(chains):
            rows.append(dict(
                cell_id=cell, sequence_id=f"{cell}_{i}", locus=locus, junction=nt,
                junction_aa=aa, v_call=v, d_call=None, j_call=j, c_call=None, productive=True,
                umi_count=10 - i, sequence=None, rev_comp=False, sequence_alignment=None,
                germline_alignment=None, v_cigar=None, d_cigar=None, j_cigar=None,
            ))
    adata = ir.io.read_airr(pd.DataFrame(rows))
    adata = adata[list(cells)].copy()
    for col in ("patient", "sample"):
        adata.obs[col] = [obs[c][col] for c in adata.obs_names] if obs else "P1"
    return adata


TRA1 = ("TRA", "TGTGCTGTGAGAGATAGC", "CAVRDS", "TRAV1", "TRAJ1")
TRA1b = ("TRA", "TGTGCTGTGAGAGACAGC", "CAVRDS", "TRAV1", "TRAJ1")  # same aa, other nt
TRA2 = ("TRA", "TGTGCTGTGAAAGATAGC", "CAVKDS", "TRAV1", "TRAJ1")  # 1 aa from TRA1
TRA3 = ("TRA", "TGTTGGTGGTGGTGGTGG", "CWWWWW", "TRAV2", "TRAJ2")
TRB1 = ("TRB", "TGTGCCAGCAGTTTATCC", "CASSLS", "TRBV1", "TRBJ1")
TRB2 = ("TRB", "TGTGCCAGCAGTCCCCCC", "CASSPP", "TRBV2", "TRBJ2")


@pytest.fixture(scope="module")
def toy():
    cells = {
        # patient P1: clone of 3 (c1, c2, c5), clone of 1 (c3: other TRA nt/aa), c4 TRB only
        "c1": [TRA1, TRB1], "c2": [TRA1, TRB1], "c3": [TRA2, TRB1], "c4": [TRB2],
        "c5": [TRA1, TRB1],
        # patient P2: identical nt to P1's big clone -> its own clone; another clone of 2
        "d1": [TRA1, TRB1], "d2": [TRA3, TRB2], "d3": [TRA3, TRB2],
        # patient P3: same aa pair as P1's big clone but different TRA nucleotides
        "e1": [TRA1b, TRB1],
    }
    obs = {c: {"patient": {"c": "P1", "d": "P2", "e": "P3"}[c[0]],
               "sample": {"c": "P1_IP", "d": "P2_IP", "e": "P3_IP"}[c[0]]} for c in cells}
    obs["c5"]["sample"] = "P1_D28"
    return _airr(cells, obs)


# ----------------------------------------------------------------------------- clonotypes


def test_call_clonotypes_within_patient_and_numbered_by_size(toy):
    res = ct.call_clonotypes(toy, n_jobs=1)
    cid = res.obs["clone_id"]
    assert cid["c1"] == cid["c2"] == cid["c5"] == "P1_1"
    # c3 differs in TRA, c4 has no TRA: their own clones; tie on size broken by sequence
    assert {cid["c3"], cid["c4"]} == {"P1_2", "P1_3"} and cid["c3"] != cid["c4"]
    # same nucleotides in P2 is a different clone
    assert cid["d1"].startswith("P2_") and cid["d2"] == cid["d3"] == "P2_1"
    assert cid["d1"] == "P2_2"
    assert res.obs["clone_size"]["c1"] == 3 and res.obs["clone_size"]["d1"] == 1
    assert set(res.obs.columns) >= {"receptor_type", "receptor_subtype", "chain_pairing"}


def test_clone_ids_do_not_depend_on_cell_order(toy):
    a = ct.call_clonotypes(toy, n_jobs=1).obs["clone_id"]
    rev = toy[toy.obs_names[::-1]].copy()
    b = ct.call_clonotypes(rev, n_jobs=1).obs["clone_id"]
    pd.testing.assert_series_equal(a.sort_index(), b.sort_index())


def test_without_patient_grouping_identical_nt_merge(toy):
    res = ct.call_clonotypes(toy, patient_key=None, n_jobs=1)
    cid = res.obs["clone_id"]
    assert cid["c1"] == cid["d1"] == "all_1"  # 4 cells, across patients
    assert cid["e1"] != cid["c1"]  # different nucleotides


def test_vdj_only_arms_merges_cells_with_same_trb(toy):
    res = ct.call_clonotypes(toy, receptor_arms="VDJ", n_jobs=1)
    cid = res.obs["clone_id"]
    assert cid["c1"] == cid["c3"] == cid["c5"]  # same TRB, TRA ignored
    assert cid["c4"] != cid["c1"]


def test_invalid_params_raise(toy):
    with pytest.raises(CartCohortError, match="receptor_arms"):
        ct.call_clonotypes(toy, receptor_arms="TRB")


def test_clusters_join_one_aa_mismatch(toy):
    res = ct.call_clonotype_clusters(ct.call_clonotypes(toy, n_jobs=1), metric="hamming",
                                     sequence="aa", cutoff=1, n_jobs=1)
    cc = res.obs["clone_cluster_id"]
    assert cc["c1"] == cc["c3"] == "P1_cc1"  # CAVRDS vs CAVKDS, same TRB
    assert cc["c4"] != cc["c1"]
    assert res.obs["clone_cluster_size"]["c1"] == 4
    assert cc["d1"] != cc["c1"]  # never across patients


def test_public_clonotypes(toy):
    res, table = ct.flag_public(ct.call_clonotypes(toy, n_jobs=1))
    pub = res.obs["is_public"]
    assert pub["c1"] and pub["d1"] and pub["e1"]
    assert not pub["c3"] and not pub["d2"] and not pub["c4"]
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["cdr3_aa_vj"], row["cdr3_aa_vdj"]) == ("CAVRDS", "CASSLS")
    assert row["n_patients"] == 3 and row["n_cells"] == 5
    assert row["patients"] == "P1,P2,P3"


def test_clone_table(toy):
    res = ct.call_clonotype_clusters(ct.call_clonotypes(toy, n_jobs=1), n_jobs=1)
    res, _ = ct.flag_public(res)
    tab = ct.clone_table(res, samples=["P1_IP", "P1_D28", "P2_IP", "P3_IP"])
    assert list(tab["clone_id"][:3]) == ["P1_1", "P1_2", "P1_3"]
    big = tab.set_index("clone_id").loc["P1_1"]
    assert big["size"] == 3 and big["size_P1_IP"] == 2 and big["size_P1_D28"] == 1
    assert big["size_P2_IP"] == 0 and big["n_samples"] == 2
    assert big["cdr3_aa_vj"] == "CAVRDS" and big["cdr3_nt_vdj"] == TRB1[1]
    assert big["v_gene_vdj"] == "TRBV1" and bool(big["is_public"])
    assert big["clone_cluster_id"] == "P1_cc1"
    assert tab["size"].sum() == res.obs["clone_id"].notna().sum()


def test_select_qc_cells_and_errors(toy):
    sub = toy[[c for c in toy.obs_names if c.startswith("c")]].copy()
    gex_obs = pd.DataFrame(
        {"qc_pass": [True, False, True, True, True, True],
         "patient": "P1", "sample": "P1_IP", "timepoint": "IP", "timepoint_day": 0.0},
        index=["c1", "c2", "c3", "c4", "c5", "c6"],
    )
    out = ct.select_qc_cells(sub, gex_obs=gex_obs, sample="P1_IP")
    assert list(out.obs_names) == ["c1", "c3", "c4", "c5"]
    assert (out.obs["timepoint"] == "IP").all() and out.obs["timepoint_day"].dtype == float
    # a TCR barcode without a GEX cell is not a QC-passing cell: left out
    out = ct.select_qc_cells(sub, gex_obs=gex_obs.drop(index="c3"), sample="P1_IP")
    assert list(out.obs_names) == ["c1", "c4", "c5"]
    renamed = gex_obs.rename(index=lambda c: f"P1_IP_{c}")
    with pytest.raises(CartCohortError, match="none of the 5 airr cells"):
        ct.select_qc_cells(sub, gex_obs=renamed, sample="P1_IP")
    with pytest.raises(CartCohortError, match="qc_pass"):
        ct.select_qc_cells(sub, gex_obs=gex_obs.drop(columns="qc_pass"), sample="P1_IP")


def _write_qc_h5mu(path: Path, airr, *, sample: str, patient: str, qc_pass: list[bool],
                   airr_cells: list[str]) -> None:
    """A QC'd library: ``airr_cells`` of ``airr`` as ``<sample>_<cell>`` (``None``: no
    airr modality) and a gex modality whose cells are those plus one without TCR."""
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp

    names = [f"{sample}_{c}" for c in airr_cells]
    gex = ad.AnnData(
        X=sp.csr_matrix(np.ones((len(names) + 1, 2), dtype=np.float32)),
        obs=pd.DataFrame({"qc_pass": qc_pass, "patient": patient, "sample": sample,
                          "timepoint": sample.split("_")[1], "timepoint_day": 0.0},
                         index=[*names, f"{sample}_c9"]),
    )
    mods = {"gex": gex}
    if airr is not None:
        sub = airr[airr_cells].copy()
        sub.obs_names = names
        sub.obs = sub.obs.drop(columns=["patient", "sample"])
        mods["airr"] = sub
    md.MuData(mods).write_h5mu(path)


def test_read_qc_airr_from_h5mu(tmp_path, toy):
    cells = ["c1", "c2", "c3"]
    qc_pass = [True, True, False, True]
    _write_qc_h5mu(tmp_path / "with.h5mu", toy, sample="P1_IP", patient="P1",
                   qc_pass=qc_pass, airr_cells=cells)
    _write_qc_h5mu(tmp_path / "without.h5mu", None, sample="P1_IP", patient="P1",
                   qc_pass=qc_pass, airr_cells=cells)
    got = ct.read_qc_airr(tmp_path / "with.h5mu", sample="P1_IP")
    assert list(got.obs_names) == ["P1_IP_c1", "P1_IP_c2"]
    assert ct.read_qc_airr(tmp_path / "without.h5mu", sample="P1_IP") is None
    res = ct.call_clonotypes(ct.concat_airr([got]), n_jobs=1)
    assert res.obs["clone_id"].tolist() == ["P1_1", "P1_1"]


def test_cohort_clonotypes_step(tmp_path, toy):
    libraries = {"P1_IP": ["c1", "c2", "c3", "c4"], "P1_D28": ["c5"],
                 "P2_IP": ["d1", "d2", "d3"], "P3_IP": ["e1"]}
    paths = []
    for sample, cells in libraries.items():
        paths.append(tmp_path / f"{sample}.h5mu")
        _write_qc_h5mu(paths[-1], toy, sample=sample, patient=sample.split("_")[0],
                       qc_pass=[True] * (len(cells) + 1), airr_cells=cells)
    qc_samples = pd.DataFrame({"sample": list(libraries),
                               "sample_excluded": [False, False, False, True]})
    settings = dict(receptor_arms="all", dual_ir="any", sequence="nt", metric="identity",
                    cutoff=None)
    clusters = {"enabled": True, "metric": "hamming", "sequence": "aa", "cutoff": 1}
    res = ct.cohort_clonotypes(paths, samples=list(libraries), qc_samples=qc_samples,
                               clusters=clusters, n_jobs=1, **settings)
    obs = res.airr.obs
    assert "P3_IP" not in set(obs["sample"])  # excluded at QC: not read
    assert obs.loc["P1_IP_c1", "clone_id"] == obs.loc["P1_D28_c5", "clone_id"] == "P1_1"
    assert obs.loc["P1_IP_c1", "clone_cluster_id"] == obs.loc["P1_IP_c3", "clone_cluster_id"]
    assert bool(obs.loc["P2_IP_d1", "is_public"]) and not bool(obs.loc["P1_IP_c3", "is_public"])
    sizes = [c for c in res.clonotypes.columns if c.startswith("size_")]
    assert sizes == ["size_P1_IP", "size_P1_D28", "size_P2_IP"]
    assert res.public[["n_patients", "patients"]].values.tolist() == [[2, "P1,P2"]]
    off = ct.cohort_clonotypes(paths, samples=list(libraries), qc_samples=qc_samples,
                               clusters={**clusters, "enabled": False}, n_jobs=1, **settings)
    pd.testing.assert_series_equal(off.airr.obs["clone_cluster_id"], off.airr.obs["clone_id"],
                                   check_names=False)
    pd.testing.assert_frame_equal(off.public, res.public)
    with pytest.raises(ValueError):  # one path per sample
        ct.cohort_clonotypes(paths[:2], samples=list(libraries), qc_samples=qc_samples,
                             clusters=clusters, **settings)


# ----------------------------------------------------------------------------- diversity


def test_diversity_indices_hand_values():
    d = rt.diversity_indices([1, 1, 2])
    assert d["richness"] == 3
    assert d["shannon"] == pytest.approx(1.5 * math.log(2))  # -(2*.25 ln .25 + .5 ln .5)
    assert d["pielou"] == pytest.approx(1.5 * math.log(2) / math.log(3))
    assert d["gini_simpson"] == pytest.approx(1 - (0.25**2 * 2 + 0.5**2))  # 0.625
    assert d["gini"] == pytest.approx(1 / 6)  # sum|xi-xj| = 4 over 2 n^2 mean = 24
    u = rt.diversity_indices([4, 4, 4, 4, 0])
    assert (u["shannon"], u["pielou"], u["gini_simpson"], u["gini"]) == pytest.approx(
        (math.log(4), 1.0, 0.75, 0.0))
    one = rt.diversity_indices([7])
    assert (one["shannon"], one["pielou"], one["gini_simpson"], one["gini"]) == (0, 0, 0, 0)
    # Gini of [1,1,1,1,96]: 2*sum(i*x)/(n*sum) - (n+1)/n = 980/500 - 1.2
    assert rt.diversity_indices([96, 1, 1, 1, 1])["gini"] == pytest.approx(0.76)
    assert all(math.isnan(v) for v in rt.diversity_indices([]).values())
    with pytest.raises(CartCohortError):
        rt.diversity_indices([1, -2])


def test_rarefied_uniform_repertoire():
    # 500 singletons: every subsample of 100 cells is 100 singletons
    r = rt.rarefied_diversity(np.ones(500), depth=100, n_bootstrap=100, seed=1)
    assert r["richness"] == 100
    assert r["shannon"] == pytest.approx(math.log(100))
    assert r["pielou"] == pytest.approx(1.0) and r["gini"] == pytest.approx(0.0)
    assert r["gini_simpson"] == pytest.approx(0.99)
    for k in rt.DIVERSITY_INDICES:
        assert r[f"{k}_ci_low"] <= r[k] <= r[f"{k}_ci_high"]
    assert r["shannon_ci_low"] < r["shannon"]  # bootstrap duplicates lower the bound
    # 20 clones of 10 cells at full depth: the unrarefied values exactly
    full = rt.rarefied_diversity([10] * 20, depth=200, n_bootstrap=50, seed=0)
    assert full["shannon"] == pytest.approx(math.log(20))
    assert full["shannon_ci_low"] < math.log(20) < full["shannon_ci_high"]
    assert full["richness_ci_high"] == 20  # resampling 20 equal clones never adds one


def test_rarefied_is_seeded_and_checks_depth():
    counts = [50, 20, 10, 5, 3, 2, 1, 1, 1, 1]
    a = rt.rarefied_diversity(counts, depth=30, n_bootstrap=50, seed=3)
    b = rt.rarefied_diversity(counts, depth=30, n_bootstrap=50, seed=3)
    c = rt.rarefied_diversity(counts, depth=30, n_bootstrap=50, seed=4)
    assert a == b and a != c
    with pytest.raises(CartCohortError, match="depth"):
        rt.rarefied_diversity(counts, depth=1000, n_bootstrap=50, seed=0)


def test_rarefaction_makes_200_and_5000_cells_comparable():
    rng = np.random.default_rng(7)
    freq = 1.0 / np.arange(1, 3001) ** 0.8
    freq /= freq.sum()
    small = rng.multinomial(200, freq)
    big = rng.multinomial(5000, freq)
    raw_gap = rt.diversity_indices(big)["shannon"] - rt.diversity_indices(small)["shannon"]
    rs = rt.rarefied_diversity(small, depth=200, n_bootstrap=200, seed=0)
    rb = rt.rarefied_diversity(big, depth=200, n_bootstrap=200, seed=0)
    half = (rb["shannon_ci_high"] - rb["shannon_ci_low"]) / 2
    assert raw_gap > 1.0  # unrarefied: the deeper sample looks far more diverse
    assert abs(rb["shannon"] - rs["shannon"]) < half  # rarefied: same population agrees
    for k in ("richness", "gini_simpson"):
        assert rs[f"{k}_ci_low"] <= rb[k] <= rs[f"{k}_ci_high"]


def test_ci_narrows_with_depth_synthetic():
    rng = np.random.default_rng(0)
    counts = rng.multinomial(4000, np.repeat([0.5 / 5, 0.5 / 1000], [5, 1000]))
    widths = []
    for depth in (100, 400, 1600):
        r = rt.rarefied_diversity(counts, depth=depth, n_bootstrap=200, seed=0)
        widths.append(r["gini_simpson_ci_high"] - r["gini_simpson_ci_low"])
    assert widths[0] > widths[1] > widths[2]


def test_choose_depth():
    n = pd.Series({"A": 30, "B": 200, "C": 5000})
    assert rt.choose_depth(n, depth="auto", min_cells=50) == 200
    assert rt.choose_depth(n, depth="auto", min_cells=10) == 30
    assert rt.choose_depth(n, depth="auto", min_cells=10000) is None
    assert rt.choose_depth(n, depth=150) == 150
    with pytest.raises(CartCohortError, match="rarefaction_depth"):
        rt.choose_depth(n, depth="smallest")


def test_overlap_indices():
    x = pd.Series({"a": 1, "b": 2, "c": 3})
    assert rt.morisita_horn(x, x) == pytest.approx(1.0)
    assert rt.morisita_horn(x, 10 * x) == pytest.approx(1.0)
    assert rt.morisita_horn(x, pd.Series({"d": 5, "e": 1})) == 0.0
    y = pd.Series({"b": 1, "c": 1, "d": 1})
    assert rt.jaccard(x, y) == pytest.approx(2 / 4)
    # hand: x=(A2,D2) y=(A3,B2,C1): 2*6 / ((8/16 + 14/36) * 4 * 6) = 0.5625
    assert rt.morisita_horn(pd.Series({"A": 2, "D": 2}),
                            pd.Series({"A": 3, "B": 2, "C": 1})) == pytest.approx(0.5625)


# ----------------------------------------------------------------------------- cells table


def _cells_table() -> pd.DataFrame:
    rows = []

    def add(sample, tp, day, comp, clones, car=None, states=None):
        for i, clone in enumerate(clones):
            rows.append(dict(
                cell=f"{sample}_{i}", sample=sample, patient=sample.split("_")[0],
                timepoint=tp, timepoint_day=day, compartment=comp, clone_id=clone,
                car_positive=(car[i] if car else True),
                state=(states[i] if states else "tem"),
            ))

    # P1: apheresis (pre), product, day 30 blood
    add("P1_AP", "AP", -20, "blood", ["P1_1", "P1_5"])
    add("P1_IP", "IP", 0, "product", ["P1_1"] * 3 + ["P1_2"] * 2 + ["P1_3"] + [None],
        states=["tem", "tem", "teff", "tcm", "tcm", "naive_tscm", "tem"])
    add("P1_D30", "D30", 30, "blood", ["P1_1", "P1_1", "P1_4", "P1_4"],
        car=[True, True, True, False])
    # P2: product only, tiny
    add("P2_IP", "IP", 0, "product", ["P2_1", "P2_2"])
    return pd.DataFrame(rows)


def test_repertoire_by_sample_hand_values():
    cells = _cells_table()
    rep = rt.repertoire_by_sample(cells, depth="auto", min_cells=3, n_bootstrap=20,
                                  seed=0).set_index("sample")
    ip = rep.loc["P1_IP"]
    assert ip["n_cells"] == 7 and ip["n_cells_tcr"] == 6 and ip["n_clones"] == 3
    assert ip["frac_cells_size_1"] == pytest.approx(1 / 6)
    assert ip["frac_cells_size_2"] == pytest.approx(2 / 6)
    assert ip["frac_cells_size_3_10"] == pytest.approx(3 / 6)
    assert ip["frac_cells_size_gt10"] == 0 and ip["n_clones_size_3_10"] == 1
    assert ip["top1_fraction"] == pytest.approx(0.5) and ip["top10_fraction"] == 1.0
    assert ip["shannon"] == pytest.approx(rt.diversity_indices([3, 2, 1])["shannon"])
    # depth = smallest sample with >= 3 TCR cells = D30 (4 cells)
    assert (rep["rarefaction_depth"] == 4).all()
    d30 = rep.loc["P1_D30"]
    assert d30["rarefied_shannon"] == pytest.approx(d30["shannon"])  # depth == size
    assert math.isnan(rep.loc["P2_IP", "rarefied_shannon"])
    assert "< rarefaction depth 4" in rep.loc["P2_IP", "rarefaction_note"]
    assert pd.isna(ip["rarefaction_note"])


def test_persistence_and_tracking_hand_values():
    cells = _cells_table()
    pers = rt.persistence_by_sample(cells, primary_timepoint="IP").set_index("sample")
    d30 = pers.loc["P1_D30"]
    assert d30["is_post_infusion"] and not pers.loc["P1_AP", "is_post_infusion"]
    assert d30["jaccard_product"] == pytest.approx(1 / 4)
    assert d30["morisita_horn_product"] == pytest.approx(0.5625)
    assert d30["n_product_clones_detected"] == 1
    assert d30["frac_cells_from_product_clones"] == pytest.approx(0.5)
    assert d30["frac_car_cells_from_product_clones"] == pytest.approx(2 / 3)
    ip = pers.loc["P1_IP"]
    assert ip["is_product"] and ip["n_product_clones"] == 3 and ip["n_post_samples"] == 1
    assert ip["n_product_clones_detected_later"] == 1  # P1_1 (in AP too, but AP is before)
    assert ip["frac_product_clones_detected_later"] == pytest.approx(1 / 3)
    assert ip["frac_post_cells_from_product_clones"] == pytest.approx(0.5)
    assert pers.loc["P2_IP", "n_post_samples"] == 0
    assert pd.isna(pers.loc["P2_IP", "n_product_clones_detected_later"])

    tr = rt.track_clones(cells, primary_timepoint="IP")
    by = tr.set_index(["clone_id", "sample"])
    assert by.loc[("P1_1", "P1_IP"), "n_cells"] == 3
    assert by.loc[("P1_1", "P1_D30"), "frac_sample"] == pytest.approx(0.5)
    assert by.loc[("P1_1", "P1_D30"), "clone_size"] == 6
    assert by.loc[("P1_1", "P1_D30"), "product_n_cells"] == 3
    persistent = set(tr.loc[tr["is_persistent"], "clone_id"])
    assert persistent == {"P1_1"}
    assert not by.loc[("P1_4", "P1_D30"), "in_product"]
    assert by.loc[("P1_4", "P1_D30"), "n_car_positive"] == 1
    assert tr.iloc[0]["clone_id"] == "P1_1"  # largest clone first


def test_clone_states_and_repertoire_tables():
    cells = _cells_table()
    st = rt.clone_states(cells, min_size=3)
    assert set(st["clone_id"]) == {"P1_1", "P1_2"} or set(st["clone_id"]) == {"P1_1"}
    p1 = st[st["clone_id"] == "P1_1"].set_index("state")
    # P1_1: AP tem, IP tem tem teff, D30 tem tem -> 5 tem, 1 teff of 6
    assert p1.loc["tem", "n_cells"] == 5 and p1.loc["teff", "fraction"] == pytest.approx(1 / 6)
    assert (p1["dominant_state"] == "tem").all()
    assert "P1_4" not in set(st["clone_id"])  # size 2 < 3
    tables = rt.repertoire_tables(cells, primary_timepoint="IP", rarefaction_min_cells=3,
                                  n_bootstrap=20)
    assert len(tables.samples) == 4 and "jaccard_product" in tables.samples
    assert tables.samples["sample"].is_unique
    assert set(tables.tracking["clone_id"]) == {"P1_1", "P1_2", "P1_3", "P1_4", "P1_5",
                                                "P2_1", "P2_2"}


def test_missing_column_message():
    with pytest.raises(CartCohortError, match="clone_id"):
        rt.repertoire_by_sample(_cells_table().drop(columns="clone_id"))


# ----------------------------------------------------------------------------- figures


def test_figures_from_tables():
    from matplotlib.patches import Polygon, Rectangle

    from cartcohort.pl import clonotypes as plots

    cells = _cells_table()
    t = rt.repertoire_tables(cells, primary_timepoint="IP", rarefaction_min_cells=3,
                             n_bootstrap=20)
    fig = plots.plot_clonal_expansion(t.samples)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 4 * len(t.samples)
    order = ["P1_AP", "P1_IP", "P1_D30", "P2_IP"]  # by patient, then day
    heights = np.array([b.get_height() for b in bars]).reshape(4, -1)
    ip = t.samples.set_index("sample").loc["P1_IP"]
    assert heights[2, order.index("P1_IP")] == pytest.approx(ip["frac_cells_size_3_10"])
    fig = plots.plot_rarefied_diversity(t.samples, response={"P1": "CR", "P2": "PD"},
                                        responders=["CR"])
    assert len(fig.axes) == 4
    fig = plots.plot_top_clones_alluvial(t.tracking, samples=t.samples, top_n=2)
    axes = [a for a in fig.axes if a.get_visible() and a.axison]
    assert len(axes) == 2
    ribbons = [p for p in axes[0].patches if isinstance(p, Polygon)]
    # P1 top 2 = P1_1 (0.5 in D30 & IP... max 0.5) and P1_4 / P1_5: ribbons between 3 samples
    assert len(ribbons) >= 2
    assert [tl.get_text() for tl in axes[0].get_xticklabels()][1].startswith("IP")
    top = plots.top_clones(t.tracking, top_n=2)
    assert top.groupby("patient").size().to_dict() == {"P1": 2, "P2": 2}
    # P1_1, P1_4 and P1_5 all peak at 0.5 of a sample: ties broken by id
    assert top.loc[top["patient"] == "P1", "clone_id"].tolist() == ["P1_1", "P1_4"]
    # the step function of rule plot_clonotypes: one figure per output
    figs = plots.clonotype_figures(t.samples, t.tracking, response={"P1": "CR", "P2": "PD"},
                                   responders=["CR"], top_clones_alluvial=2)
    assert list(figs) == ["expansion", "diversity", "alluvial"]
    assert len(figs["diversity"].axes) == 4


# ----------------------------------------------------------------------------- real data


def _read_airr_tsv(path: Path):
    """AIRR TSV via pandas first: literal 'NA' gene calls would otherwise defeat scirpy's
    locus inference when the file has no `locus` column (as in djvdj's files)."""
    import scirpy as ir

    return ir.io.read_airr(pd.read_csv(path, sep="\t", low_memory=False))


def _read_10x(path: Path, sample: str, patient: str):
    import scirpy as ir

    adata = ir.io.read_10x_vdj(path)
    adata.obs_names = [f"{sample}_{b}" for b in adata.obs_names]
    adata.obs["patient"] = patient
    adata.obs["sample"] = sample
    return adata


@pytest.mark.realdata
def test_screp_ards_blood_lung_share_patients_do_not():
    root = _shared("screp_ards")
    samples = ["P17B", "P17L", "P18B", "P18L", "P19L", "P20L"]
    parts = [_read_10x(root / s / "filtered_contig_annotations.csv.gz", s, s[:3])
             for s in samples]
    adata = ct.concat_airr(parts)
    res = ct.call_clonotypes(adata, n_jobs=1)
    obs = res.obs.dropna(subset=["clone_id"])
    assert obs["clone_id"].notna().mean() > 0.99
    per_clone = obs.groupby("clone_id").agg(patients=("patient", "nunique"),
                                           samples=("sample", "unique"))
    assert (per_clone["patients"] == 1).all()
    for p in ("P17", "P18", "P19", "P20"):
        both = per_clone["samples"].map(lambda s, p=p: {f"{p}B", f"{p}L"} <= set(s))
        if f"{p}B" in samples:
            assert both.sum() >= 5, f"{p}: blood and lung share only {both.sum()} clones"
    # identity (nt) across patients: called without patient grouping, nothing merges
    pooled = ct.call_clonotypes(adata, patient_key=None, n_jobs=1).obs.dropna(
        subset=["clone_id"])
    assert pooled.groupby("clone_id")["patient"].nunique().max() == 1
    assert pooled["clone_id"].nunique() == obs["clone_id"].nunique()


@pytest.mark.realdata
def test_screp_ards_rarefied_ci_narrows_with_depth():
    root = _shared("screp_ards")
    res = ct.call_clonotypes(
        ct.concat_airr([_read_10x(root / "P17B" / "filtered_contig_annotations.csv.gz",
                                  "P17B", "P17")]), n_jobs=1)
    counts = res.obs["clone_id"].value_counts().to_numpy()
    assert counts.sum() > 2000
    widths = {}
    for depth in (100, 500, 2000):
        r = rt.rarefied_diversity(counts, depth=depth, n_bootstrap=200, seed=0)
        widths[depth] = {k: r[f"{k}_ci_high"] - r[f"{k}_ci_low"]
                         for k in ("shannon", "gini_simpson", "pielou")}
    for k in ("shannon", "gini_simpson", "pielou"):
        assert widths[100][k] > widths[500][k] > widths[2000][k], (k, widths)


@pytest.mark.realdata
def test_djvdj_10x_csv_and_airr_give_identical_clonotypes():
    import scirpy as ir

    for mouse in ("BL6", "MD4"):
        root = _shared("djvdj_splen", f"{mouse}_TCR")
        a = ir.io.read_10x_vdj(root / "filtered_contig_annotations.csv.gz")
        b = _read_airr_tsv(root / "airr_rearrangement.tsv.gz")
        common = a.obs_names.intersection(b.obs_names)
        assert len(common) == a.n_obs == b.n_obs
        calls = []
        for x in (a, b):
            x = x[common].copy()
            x.obs["patient"] = mouse
            calls.append(ct.call_clonotypes(x, n_jobs=1).obs["clone_id"])
        assert calls[0].notna().sum() > 0.9 * len(common)
        pd.testing.assert_series_equal(calls[0], calls[1], check_names=False)


# ----------------------------------------------------------------------------- demo cohort


def _demo_airr():
    import scirpy as ir

    if not (DEMO / "samples.tsv").exists():
        pytest.skip(f"demo cohort absent: run `make demo` to write {DEMO}")
    sheet = pd.read_csv(DEMO / "samples.tsv", sep="\t", keep_default_na=False)
    parts = []
    for _, row in sheet.iterrows():
        if not row["vdj"]:
            continue
        path = DEMO / row["vdj"] if not Path(row["vdj"]).is_absolute() else Path(row["vdj"])
        x = (_read_airr_tsv(path) if path.name.endswith((".tsv", ".tsv.gz"))
             else ir.io.read_10x_vdj(path))
        x.obs_names = [f"{row['sample']}_{b}" for b in x.obs_names]
        for col in ("patient", "sample", "timepoint"):
            x.obs[col] = str(row[col])
        x.obs["timepoint_day"] = pd.to_numeric(row["timepoint_day"], errors="coerce")
        x.obs["compartment"] = row["compartment"]
        parts.append(x)
    return sheet, ct.call_clonotypes(ct.concat_airr(parts), n_jobs=1)


@pytest.fixture(scope="module")
def demo():
    sheet, res = _demo_airr()
    truth = pd.read_csv(DEMO / "truth_cells.tsv", sep="\t").set_index("cell")
    patients = pd.read_csv(DEMO / "truth_patients.tsv", sep="\t")
    return sheet, res, truth, patients


def test_demo_identity_clonotypes_reproduce_planted_clones(demo):
    from sklearn.metrics import adjusted_rand_score

    _, res, truth, _ = demo
    obs = res.obs
    keep = (obs["chain_pairing"] == "single pair") & obs["clone_id"].notna()
    cells = obs.index[keep].intersection(truth.index)
    t = truth.loc[cells]
    ok = ~t["is_doublet"].astype(bool) & t["clone"].notna()
    cells = cells[ok.to_numpy()]
    assert len(cells) > 500
    ari = adjusted_rand_score(truth.loc[cells, "clone"].astype(str),
                              obs.loc[cells, "clone_id"].astype(str))
    assert ari == pytest.approx(1.0)


def test_demo_persistent_product_clones_found(demo):
    _, res, truth, patients = demo
    obs = res.obs.join(truth[["clone", "planted_persistent", "is_doublet"]], how="left")
    cells = obs.reset_index(names="cell")[["cell", "sample", "patient", "timepoint",
                                          "timepoint_day", "compartment", "clone_id"]]
    tr = rt.track_clones(cells, primary_timepoint="IP")
    persistent_calls = set(tr.loc[tr["is_persistent"], "clone_id"])
    planted = obs[obs["planted_persistent"].astype(bool)]
    n_planted = planted.groupby("patient")["clone"].nunique()
    pt = patients.set_index("patient")
    expected = pt.loc[pt["longitudinal"].astype(bool), "n_persistent_clones"]
    assert len(expected) and (expected > 0).all()
    assert n_planted.reindex(expected.index).to_dict() == expected.to_dict()
    planted = planted[planted["patient"].isin(expected.index)]
    # each planted persistent clone: its paired, singlet cells form one called clone that is
    # flagged persistent (seen in the product and at a later timepoint)
    paired = planted[(planted["chain_pairing"] == "single pair")
                     & ~planted["is_doublet"].astype(bool)]
    calls = paired.groupby("clone")["clone_id"].agg(lambda s: set(s.dropna()))
    # a planted clone's clean cells may all be dual-alpha ("extra VJ"): allow 5 % of them
    assert calls.index.nunique() >= 0.95 * expected.sum()
    assert (calls.map(len) == 1).all()
    assert calls.map(lambda c: c <= persistent_calls).all()


def test_demo_responders_more_diverse_after_rarefaction(demo):
    sheet, res, truth, patients = demo
    obs = res.obs
    cells = obs.reset_index(names="cell")
    rep = rt.repertoire_by_sample(cells, n_bootstrap=50, seed=0).set_index("sample")
    prod = rep[rt.product_mask(rep, primary_timepoint="IP")]
    resp = patients.set_index("patient")["responder"].astype(bool)
    shannon = prod.groupby("patient")["rarefied_shannon"].mean()
    r = shannon[shannon.index.map(resp)]
    nr = shannon[~shannon.index.map(resp)]
    assert len(r) and len(nr)
    assert r.mean() > nr.mean(), (r.to_dict(), nr.to_dict())
