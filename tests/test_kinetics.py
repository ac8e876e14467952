"""CAR+ clone kinetics (cartcohort.tl.kinetics): hand-computed values on tiny tables, the
planted kinetics of a simulated cohort (cartcohort.datasets.kinetics) recovered at the
designed depth, bad input carried through with notes, and the screp_ards blood/lung
overlap (real data)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact, mannwhitneyu

from cartcohort.multitest import bh_qvalues
from cartcohort.tl import kinetics as kin
from cartcohort.tl import kinetics_stats as ks

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# ------------------------------------------------------------------------ primitives


def test_fold_change_is_haldane_katz_by_hand():
    fc, lo, hi = ks.fold_change_ci(np.array([10]), np.array([100]), np.array([30]),
                                   np.array([100]))
    a, b, c, d = 10.5, 101.0, 30.5, 101.0
    want = (c / d) / (a / b)
    se = math.sqrt(1 / a - 1 / b + 1 / c - 1 / d)
    assert fc[0] == pytest.approx(want)
    assert lo[0] == pytest.approx(want * math.exp(-1.959964 * se), rel=1e-5)
    assert hi[0] == pytest.approx(want * math.exp(1.959964 * se), rel=1e-5)
    # absent at one end: finite thanks to the pseudocount
    fc0, lo0, hi0 = ks.fold_change_ci(np.array([0]), np.array([50]), np.array([5]),
                                      np.array([50]))
    assert np.isfinite([fc0[0], lo0[0], hi0[0]]).all() and lo0[0] < fc0[0] < hi0[0]


def test_fisher_and_bh_match_scipy_and_hand():
    p = ks.fisher_pvalues(np.array([2, 2, 9]), np.array([100, 100, 50]),
                          np.array([20, 20, 1]), np.array([120, 120, 60]))
    assert p[0] == pytest.approx(fisher_exact([[2, 98], [20, 100]])[1])
    assert p[1] == p[0]
    assert p[2] == pytest.approx(fisher_exact([[9, 41], [1, 59]])[1])
    q = bh_qvalues(np.array([0.01, 0.04, np.nan, 0.03]))
    assert np.allclose(q[[0, 1, 3]], [0.03, 0.04, 0.04]) and np.isnan(q[2])


def test_clonality_mh_permutation_and_auc():
    assert ks.clonality(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert ks.clonality(np.array([97, 1, 1, 1])) > 0.8
    x = np.array([40, 20, 10, 5, 0, 0, 1, 1, 1, 1])
    mh, p = ks.morisita_horn_permutation(x, x.copy(), n_permutations=199, seed=1)
    assert mh == pytest.approx(1.0) and p < 0.05
    y = np.array([0, 0, 0, 0, 30, 20, 0, 0, 0, 0])
    mh, p = ks.morisita_horn_permutation(x, y, n_permutations=199, seed=1)
    assert mh == 0.0 and p == 1.0
    # the ecological null (observed union): unrelated small shared clones are no signal
    z = np.array([40, 20, 10, 5, 0, 0, 0, 0, 0, 0, 0])
    w = np.array([0, 0, 0, 0, 30, 20, 1, 0, 0, 0, 0])
    z[6] = 1
    assert ks.morisita_horn_permutation(z, w, n_permutations=199, universe=None)[1] > 0.05
    assert ks.morisita_horn_permutation(z, w, n_permutations=199)[1] < 0.05
    assert ks.auc_trapezoid(np.array([90, 14]), np.array([0.2, 0.6])) == pytest.approx(
        76 * 0.4)


# ------------------------------------------------------------------------ tiny cohort


def _cells(spec: dict[str, dict[str, tuple[int, int]]], days: dict[str, int],
           sort: dict[str, str] | None = None) -> pd.DataFrame:
    """spec: sample -> clone -> (cells, CAR+ cells); sample ``<patient>_<tp>``."""
    rows = []
    for sample, clones in spec.items():
        patient, tp = sample.split("_")
        for clone, (n, n_car) in clones.items():
            for i in range(n):
                rows.append({"cell": f"{sample}_{clone}_{i}", "sample": sample,
                             "patient": patient, "timepoint": tp,
                             "timepoint_day": days[tp],
                             "compartment": "product" if tp == "IP" else "PB",
                             "sort": (sort or {}).get(sample, "CD3+"),
                             "clone_id": None if clone == "-" else f"{patient}_{clone}",
                             "car_positive": i < n_car,
                             "state": "tem" if tp == "IP" else "teff"})
    return pd.DataFrame(rows)


DAYS = {"IP": 0, "D14": 14, "M3": 90}


def test_classes_depths_and_emergent_note():
    spec = {
        "P1_IP": {"A": (10, 10), "B": (30, 30), "C": (2, 0), "Z": (158, 40)},
        "P1_D14": {"A": (60, 60), "B": (3, 3), "D": (12, 12), "Z": (125, 20)},
    }
    res = kin.kinetics_tables(_cells(spec, DAYS), primary_timepoint="IP",
                              n_permutations=99)
    t = res.clones.set_index("clone_id")
    assert t.loc["P1_A", "kinetic_class"] == "expanded"
    assert t.loc["P1_B", "kinetic_class"] == "contracted"
    assert t.loc["P1_D", "kinetic_class"] == "emergent"
    assert t.loc["P1_D", "class_note"] == "not detected in product at depth 200 TCR cells"
    assert t.loc["P1_C", "kinetic_class"] == "undetected"
    assert (t["product_depth"] == 200).all() and (t["depth"] == 200).all()
    assert t.loc["P1_A", "freq"] == pytest.approx(0.3)
    assert t.loc["P1_A", "freq_car"] == pytest.approx(60 / 95)
    lo, hi = ks.clopper_pearson_arrays(np.array([60]), np.array([200]))
    assert t.loc["P1_A", "freq_ci_low"] == pytest.approx(lo[0])
    assert t.loc["P1_A", "freq_ci_high"] == pytest.approx(hi[0])
    fc, _, _ = ks.fold_change_ci(np.array([10]), np.array([200]), np.array([60]),
                                 np.array([200]))
    assert t.loc["P1_A", "fold_change"] == pytest.approx(fc[0])
    fate = res.fate[res.fate["scope"] == "pooled"]
    assert fate[["product_state", "in_vivo_state", "n_clones"]].values.tolist() == [
        ["tem", "teff", 3]]
    # the fate figure's scope: each patient's largest product clones seen again
    top = kin.clone_fate(_cells(spec, DAYS), primary_timepoint="IP", top_product_clones=1)
    top = top[top["scope"] == "top_product_clones"]
    assert top[["product_state", "in_vivo_state", "n_clones"]].values.tolist() == [
        ["tem", "teff", 1]]
    pt = res.patients.set_index("patient").loc["P1"]
    assert pt["post_car_share_top_product_clones"] == pytest.approx(1.0 - 12 / 95)


def test_sorted_library_uses_car_basis_and_auc():
    spec = {
        "P1_IP": {"A": (10, 10), "Z": (90, 40)},
        "P1_D14": {"A": (30, 30), "Z": (70, 10)},
        "P1_M3": {"A": (50, 50), "Z": (50, 45)},
        "P2_IP": {"A": (10, 10), "Z": (90, 40)},
        "P2_D14": {"A": (30, 30), "Z": (70, 10)},
        "P2_M3": {"A": (5, 5), "Z": (95, 5)},
    }
    res = kin.kinetics_tables(_cells(spec, DAYS, sort={"P1_M3": "CAR+"}),
                              primary_timepoint="IP", n_permutations=99)
    m3 = res.clones[res.clones["sample"] == "P1_M3"].set_index("clone_id")
    assert (m3["fc_basis"] == "CAR+ cells").all()
    fc, _, _ = ks.fold_change_ci(np.array([10]), np.array([50]), np.array([50]),
                                 np.array([95]))
    assert m3.loc["P1_A", "fold_change"] == pytest.approx(fc[0])
    pt = res.patients.set_index("patient")
    assert np.isnan(pt.loc["P1", "car_auc_blood"])  # the sorted M3 is not on the curve
    assert pt.loc["P2", "car_auc_blood"] == pytest.approx((0.4 + 0.1) / 2 * 76)
    assert pt.loc["P2", "car_fraction_last_blood"] == pytest.approx(0.1)


def test_bad_input_runs_through_with_notes():
    spec = {
        "P1_IP": {"A": (10, 0), "Z": (40, 0)},  # single timepoint
        "P2_IP": {"A": (10, 0), "Z": (40, 0)},
        "P2_D14": {"-": (30, 0)},  # no TCR at all
        "P2_M3": {"A": (20, 0), "Z": (30, 0)},
    }
    cells = _cells(spec, DAYS).drop(columns="car_positive")  # no CAR feature
    res = kin.kinetics_tables(cells, primary_timepoint="IP", n_permutations=99)
    checks = set(zip(res.notes["sample"], res.notes["check"], strict=True))
    assert ("P1", "single_timepoint") in checks
    assert ("P2_D14", "no_tcr") in checks
    assert ("", "no_car_feature") in checks
    assert set(res.clones["sample"]) == {"P2_M3"}
    assert res.clones["freq_car"].isna().all()
    assert res.samples["car_fraction"].isna().all()
    notes = res.patients.set_index("patient")["note"]
    assert "single timepoint" in notes["P1"]


# ------------------------------------------------------------------ planted truth


@pytest.fixture(scope="module")
def planted():
    """10 patients, all longitudinal, libraries of 900-1100 cells (the designed depth)."""
    from _truth_cells import truth_feature_cells
    from cartcohort.datasets import simulate_cohort

    c = simulate_cohort(seed=5, n_patients=10, frac_longitudinal=1.0, min_cells=900,
                        max_cells=1100, n_background_genes=300)
    cells = truth_feature_cells(c).merge(c.samples[["sample", "sort"]], on="sample")
    res = kin.kinetics_tables(cells, primary_timepoint="IP", n_permutations=99)
    m = c.truth_kinetics.merge(res.clones, left_on=["clone", "sample"],
                               right_on=["clone_id", "sample"], how="left")
    return c, res, m


def test_planted_expanded_clones_recovered(planted):
    _c, res, m = planted
    # designed depth: planted fold change >= 2 and >= 3 expected product cells
    design = (m["planted"] == "expanded") & (m["planted_fc"] >= 2)
    design &= m["true_freq_product"] * m["product_depth"] >= 3
    planted_set = set(zip(m.loc[design, "clone"], m.loc[design, "sample"], strict=True))
    assert len(planted_set) >= 50
    unsorted = res.clones[res.clones["sort"] == "CD3+"]
    called = unsorted[unsorted["kinetic_class"] == "expanded"]
    calls = set(zip(called["clone_id"], called["sample"], strict=True))
    all_planted = set(zip(m.loc[m["planted"] == "expanded", "clone"],
                          m.loc[m["planted"] == "expanded", "sample"], strict=True))
    precision = len(calls & all_planted) / len(calls)
    recall = len(calls & planted_set) / len(planted_set)
    assert precision >= 0.9, precision
    assert recall >= 0.8, recall


def test_fold_change_ci_covers_truth_and_nulls_stay(planted):
    _c, _res, m = planted
    tracked = m.dropna(subset=["fold_change"])
    assert len(tracked) >= 0.9 * len(m)
    cover = (tracked["fc_ci_low"] <= tracked["true_fc"]) & (
        tracked["true_fc"] <= tracked["fc_ci_high"])
    assert cover.mean() >= 0.9, cover.mean()
    null = m[m["planted"] == "null"]
    assert (null["kinetic_class"] == "expanded").mean() <= 0.05


def test_planted_persistence_difference_found(planted):
    c, res, _m = planted
    pt = res.patients.merge(c.truth_patients[["patient", "responder"]], on="patient")
    r = pt.loc[pt["responder"], "expanded_log2_retention"]
    nr = pt.loc[~pt["responder"], "expanded_log2_retention"]
    assert mannwhitneyu(r, nr, alternative="two-sided").pvalue < 0.05
    assert r.median() > nr.median()
    assert pt.loc[pt["responder"], "n_expanded"].median() > pt.loc[
        ~pt["responder"], "n_expanded"].median()


# ------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_screp_ards_overlap_within_not_between_patients():
    import scirpy as ir
    from cartcohort.tl import clonotypes as ct

    root = SHARED / "screp_ards"
    if not root.is_dir():
        pytest.skip(f"{root} not available")
    parts = []
    for s in ("P17B", "P17L", "P18B", "P18L"):
        a = ir.io.read_10x_vdj(root / s / "filtered_contig_annotations.csv.gz")
        a.obs_names = [f"{s}_{b}" for b in a.obs_names]
        a.obs["patient"], a.obs["sample"] = s[:3], s
        parts.append(a)
    # clone identity across patients (nucleotide identity): nothing merges between them
    obs = ct.call_clonotypes(ct.concat_airr(parts), patient_key=None, n_jobs=1).obs
    counts = obs.dropna(subset=["clone_id"]).groupby(["sample", "clone_id"]).size()
    counts = counts.unstack(0, fill_value=0)

    def p(a: str, b: str) -> float:
        return ks.morisita_horn_permutation(counts[a].to_numpy(), counts[b].to_numpy(),
                                            n_permutations=199, seed=0)[1]

    assert p("P17B", "P17L") < 0.05
    assert p("P18B", "P18L") < 0.05
    assert p("P17B", "P18B") > 0.05
    assert p("P17L", "P18L") > 0.05


def test_kinetics_features_are_in_vivo_on_the_product_row():
    from cartcohort.stats.scopes import split_scopes
    from cartcohort.tl import features as F

    spec = {"P1_IP": {"A": (10, 10), "Z": (40, 20)}, "P1_D14": {"A": (30, 30), "Z": (20, 5)}}
    cells = _cells(spec, DAYS).assign(cd4_cd8="CD8")
    res = kin.kinetics_tables(cells, primary_timepoint="IP", n_permutations=99)
    rep = pd.DataFrame({"sample": ["P1_IP", "P1_D14"], "patient": ["P1", "P1"],
                        "is_product": [True, False], "top1_fraction": [0.2, 0.6]})
    feats = F.sample_features(cells, repertoire=rep, kinetics=res.patients).set_index("sample")
    kin_cols = [c for c in feats.columns if c.startswith("kin_")]
    assert set(kin_cols) == {f"kin_{c}" for c in F.KINETICS_FEATURES}
    assert feats.loc["P1_IP", "kin_n_expanded"] == res.patients.loc[0, "n_expanded"]
    assert feats.loc["P1_IP", "kin_last_car_detection_day"] == 14
    assert feats.loc["P1_D14", kin_cols].isna().all()
    product, in_vivo = split_scopes(list(feats.columns))
    assert set(kin_cols) <= set(in_vivo) and not set(kin_cols) & set(product)


# ------------------------------------------------------------------ epitope database


def _airr_cells():
    import scirpy as ir
    from scirpy.io import AirrCell

    spec = [  # cell, sample, day, clone, chains (locus, CDR3 aa)
        ("c1", "P1_IP", 0, "P1_1", [("TRB", "CASSLAPGATNEKLFF")]),
        ("c2", "P1_IP", 0, "P1_1", [("TRB", "CASSLAPGATNEKLFF")]),
        ("c3", "P1_IP", 0, "P1_2", [("TRB", "CASSPQTGTGGYGYTF")]),
        ("c4", "P1_IP", 0, "P1_3", [("TRA", "CAGAGSQGNLIF"), ("TRB", "CASSIRSSYEQYF")]),
        ("c5", "P1_IP", 0, "P1_4", [("TRB", "CASSQDRGNTIYF")]),
        ("c6", "P1_IP", 0, "P1_5", [("TRB", "CASSYYYYYYYYYF")]),  # mouse entry only
        ("c7", "P1_D14", 14, "P1_1", [("TRB", "CASSLAPGATNEKLFF")]),
    ]
    cells = []
    for cid, sample, day, clone, chains in spec:
        cell = AirrCell(cell_id=cid)
        for locus, cdr3 in chains:
            ch = AirrCell.empty_chain_dict()
            ch.update({"locus": locus, "junction_aa": cdr3, "productive": True,
                       "consensus_count": 10})
            cell.add_chain(ch)
        cell.update({"sample": sample, "patient": "P1", "timepoint": sample.split("_")[1],
                     "timepoint_day": day, "clone_id": clone})
        cells.append(cell)
    return ir.io.from_airr_cells(cells)


def test_vdjdb_export_matched_with_ir_query():
    from cartcohort.errors import CartCohortError
    from cartcohort.tl import epitopes as ep

    db = Path(__file__).parent / "data" / "vdjdb_export_tiny.tsv"
    ref = ep.read_vdjdb_export(db)
    assert ref.n_obs == 3  # two single chains and one paired complex; the mouse row dropped
    airr = _airr_cells()
    m = ep.match_epitopes(airr, ref)
    assert m.loc[["c5", "c6"], "antigen_species"].isna().all()
    assert m.loc[["c1", "c2", "c3", "c4", "c7"], "antigen_species"].tolist() == [
        "CMV", "CMV", "EBV", "InfluenzaA", "CMV"]
    # only beta chains shared (scirpy cannot query an arm without shared CDR3s)
    beta_only = airr[[c for c in airr.obs_names if c != "c4"]].copy()
    mb = ep.match_epitopes(beta_only, ref)
    assert mb["antigen_species"].fillna("-").tolist() == ["CMV", "CMV", "EBV", "-", "-", "CMV"]
    clones, prod = ep.epitope_tables(airr.obs, m, primary_timepoint="IP")
    assert dict(zip(clones["clone_id"], clones["antigen_species"], strict=True)) == {
        "P1_1": "CMV", "P1_2": "EBV", "P1_3": "InfluenzaA"}
    p = prod.set_index("antigen_species")
    assert p.loc["CMV", "share_tcr_cells"] == pytest.approx(2 / 6)
    assert p.loc["CMV", "n_clones_detected_later"] == 1
    assert p.loc["EBV", "frac_clones_detected_later"] == 0
    bad = db.parent / "_bad.tsv"
    try:
        pd.read_csv(db, sep="\t").drop(columns="Epitope species").to_csv(bad, sep="\t",
                                                                          index=False)
        with pytest.raises(CartCohortError, match="Epitope species"):
            ep.read_vdjdb_export(bad)
    finally:
        bad.unlink(missing_ok=True)
