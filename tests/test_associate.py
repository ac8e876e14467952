"""Tests of patient-level association (cartcohort.stats), scorecards and their figures."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cartcohort import scorecards as SC
from cartcohort import stats as S
from cartcohort.dictionary import FeatureDictionary, FeatureInfo
from cartcohort.errors import CartCohortError, InputError
from cartcohort.stats import logistic as L
from cartcohort.stats.readable import readable_association
from cartcohort.tables import read_table, write_table
from cartcohort.tl import features as F

# --------------------------------------------------------------------------- helpers


def _info(fid: str, label: str, family: str) -> FeatureInfo:
    return FeatureInfo(id=fid, label=label, unit="", family=family, description=label,
                       better=None, reference=None)


#: Readable names of the synthetic features of :func:`_feature_table`.
_TEST_DICT = FeatureDictionary(exact={
    "planted": _info("planted", "Planted one", "CAR"),
    "absent": _info("absent", "Absent one", "CAR"),
    **{f"null_{j}": _info(f"null_{j}", f"Null feature {j}", "repertoire") for j in range(4)},
})


def _feature_table(
    n_resp: int, n_non: int, *, seed: int = 0, shift: float = 0.0, n_null: int = 2,
    extra_samples: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-sample features (one IP sample per patient) and a clinical table.

    ``planted`` is shifted by ``shift`` in responders; ``null_*`` are not.
    """
    rng = np.random.default_rng(seed)
    rows, clin = [], []
    for i in range(n_resp + n_non):
        resp = i < n_resp
        pid = f"P{i:02d}"
        clin.append({"patient": pid, "response": "CR" if resp else ("PD" if i % 2 else "SD"),
                     "age": int(rng.integers(30, 75)), "sex": ("F", "M")[i % 2]})
        for k in range((extra_samples or {}).get(pid, 1)):
            row = {"sample": f"{pid}_IP{k or ''}", "patient": pid, "timepoint": "IP",
                   "timepoint_day": 0.0, "compartment": "product",
                   "n_cells": int(rng.integers(200, 400)),
                   "planted": rng.normal(shift if resp else 0.0, 1.0)}
            for j in range(n_null):
                row[f"null_{j}"] = rng.normal()
            rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(clin)


def _sim_cells(seed: int = 0, n_patients: int = 20, frac_longitudinal: float = 0.0):
    from cartcohort.datasets import simulate_cohort

    c = simulate_cohort(seed=seed, n_patients=n_patients, min_cells=150, max_cells=220,
                        frac_longitudinal=frac_longitudinal, n_background_genes=10)
    tc = c.truth_cells
    tc = tc[~tc["is_doublet"] & ~tc["is_low_quality"]]
    cells = tc.merge(c.samples[["sample", "timepoint_day", "compartment"]], on="sample")
    cells["clone_id"] = cells["clone"].where(cells["has_tcr"])
    return cells, c


# --------------------------------------------------------------------------- statistics


def test_rank_biserial_known_values():
    assert S.rank_biserial([4, 5, 6], [1, 2, 3]) == 1.0
    assert S.rank_biserial([1, 2, 3], [4, 5, 6]) == -1.0
    assert S.rank_biserial([3, 5, 7], [1, 4, 6, 8]) == pytest.approx(0.0)  # U = 6 of 12
    assert S.rank_biserial([2, 4, 6, 8], [1, 3]) == pytest.approx(0.75)  # U = 7 of 8
    assert S.rank_biserial([1, 2], [2, 3]) == pytest.approx(-0.75)  # one tie: U = 0.5 of 4
    x, y = [0.3, 1.2, 2.2, 0.1, 5.0], [0.5, 0.9, 1.0]
    u = stats.mannwhitneyu(x, y).statistic
    assert S.rank_biserial(x, y) == pytest.approx(2 * u / 15 - 1)


def test_auroc_perfect_separation_and_chance():
    assert S.auroc([5, 6, 7], [1, 2]) == 1.0
    assert S.auroc([1, 2], [5, 6, 7]) == 0.0
    assert S.auroc([1, 2, 3], [1, 2, 3]) == 0.5


def test_bh_matches_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005, np.nan, 0.5]
    # m = 5: sorted 0.005, 0.01, 0.03, 0.04, 0.5 -> p*m/rank = .025 .025 .05 .05 .5
    q = S.bh_qvalues(p)
    np.testing.assert_allclose(q[[3, 0, 2, 1, 5]], [0.025, 0.025, 0.05, 0.05, 0.5])
    assert np.isnan(q[4])
    # step-up monotonicity: a larger p never gets a smaller q
    p2 = [0.02, 0.021, 0.9, 0.001]
    # hand: sorted .001 .02 .021 .9 -> .004 .04 .028 .9 -> cummin from top .004 .028 .028 .9
    np.testing.assert_allclose(S.bh_qvalues(p2), [0.028, 0.028, 0.9, 0.004])


def test_exact_rank_sum_equals_scipy_without_ties_and_enumeration_with_ties():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=6), rng.normal(size=8) + 0.8
    assert S.exact_rank_sum_pvalue(x, y) == pytest.approx(
        stats.mannwhitneyu(x, y, method="exact").pvalue)
    # ties: brute-force the conditional permutation distribution
    x, y = np.array([1, 1, 2, 3, 3.0]), np.array([2, 3, 4, 4, 5, 5.0])
    pooled = np.concatenate([x, y])
    ranks = stats.rankdata(pooled)
    mean = len(x) * (len(pooled) + 1) / 2
    obs = abs(ranks[: len(x)].sum() - mean)
    sums = [ranks[list(c)].sum() for c in itertools.combinations(range(len(pooled)), len(x))]
    brute = np.mean([abs(s - mean) >= obs - 1e-9 for s in sums])
    assert S.exact_rank_sum_pvalue(x, y) == pytest.approx(brute)
    u, p, method = S.mann_whitney(x, y)
    assert method == "exact_ties" and p == pytest.approx(brute)
    assert S.mann_whitney(rng.normal(size=60), rng.normal(size=60))[2] == "asymptotic"
    assert S.mann_whitney([1.0, 1.0], [1.0, 1.0])[1] == 1.0


def test_newcombe_interval_matches_an_independent_implementation():
    """Newcombe (2006) Method 5, against SingleCaseES::NAP's documented example
    (A = 20 20 26 25 22 23, B = 28 25 24 27 30 30 29; NAP 0.9167, 95 % CI 0.5973-0.9860,
    90 % CI 0.6591-0.9822) as reproduced by an independent implementation."""
    a, b = [20, 20, 26, 25, 22, 23], [28, 25, 24, 27, 30, 30, 29]
    theta = S.auroc(b, a)
    assert theta == pytest.approx(0.9166666666666666)
    lo, hi = S.newcombe_auc_interval(theta, 7, 6)
    assert (lo, hi) == (pytest.approx(0.5973193600384168, abs=1e-9),
                        pytest.approx(0.9859976893703788, abs=1e-9))
    lo, hi = S.newcombe_auc_interval(theta, 7, 6, alpha=0.1)
    assert (lo, hi) == (pytest.approx(0.6591091902344411, abs=1e-9),
                        pytest.approx(0.9822247870934007, abs=1e-9))
    # symmetric under relabelling; informative at the bounds (not [1, 1])
    lo2, hi2 = S.newcombe_auc_interval(1 - theta, 6, 7, alpha=0.1)
    assert (lo2, hi2) == (pytest.approx(1 - hi), pytest.approx(1 - lo))
    lo, hi = S.newcombe_auc_interval(1.0, 10, 10)
    assert hi == 1.0 and 0.5 < lo < 0.9
    with pytest.raises(CartCohortError, match="theta"):
        S.newcombe_auc_interval(1.2, 3, 3)


def test_mann_whitney_is_calibrated_under_permuted_labels():
    """15 vs 15 patients, null features, 250 label permutations: size close to 0.05."""
    rng = np.random.default_rng(42)
    n = 30
    table = pd.DataFrame({f"null_{j}": rng.normal(size=n) for j in range(4)})
    # a discrete (tied) null feature, like a fraction of few cells
    table["null_discrete"] = rng.binomial(20, 0.3, size=n) / 20
    labels = np.array([True] * 15 + [False] * 15)
    pvals = []
    for _ in range(250):
        perm = pd.Series(rng.permutation(labels))
        res = S.univariate_tests(table, responder=perm, features=list(table.columns))
        pvals.extend(res.loc[res["test"] == "mann_whitney", "pvalue"])
    pvals = np.asarray(pvals)
    rate = float((pvals < 0.05).mean())
    assert 0.02 <= rate <= 0.08, rate
    assert 0.35 < np.median(pvals) < 0.65


# --------------------------------------------------------------------------- logistic


def test_separation_switches_to_firth_with_a_note():
    x = np.array([0.1, 0.4, 0.5, 0.9, 1.0, 2.0, 2.2, 2.5, 3.0, 3.3])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=float)
    fit, note = S.logistic_association(x, y)
    assert fit.method == "firth" and "separation" in note and "Firth" in note
    assert np.isfinite(fit.coef) and fit.coef > 0
    assert np.isfinite(fit.ci_low) and fit.ci_low > 0 and np.isfinite(fit.ci_high)
    assert fit.pvalue < 0.05


def test_firth_estimate_maximises_the_penalised_likelihood():
    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    y = (rng.random(25) < 1 / (1 + np.exp(-1.5 * x))).astype(float)
    X = np.column_stack([np.ones(25), x])
    fit = S.firth_logistic(X, y)
    beta, _, converged = L._firth_newton(X, y)
    assert converged and fit.coef == pytest.approx(beta[1])
    base = L._penalized_loglik(X, y, beta)
    for d in ([1e-3, 0], [-1e-3, 0], [0, 1e-3], [0, -1e-3]):
        assert L._penalized_loglik(X, y, beta + np.array(d)) <= base + 1e-12
    # Firth shrinks towards 0 compared with ML, and the profile CI brackets the estimate
    import statsmodels.api as sm

    ml = sm.Logit(y, X).fit(disp=0).params[1]
    assert abs(fit.coef) < abs(ml)
    assert fit.ci_low < fit.coef < fit.ci_high


def test_small_groups_use_firth_and_large_groups_use_ml():
    rng = np.random.default_rng(5)
    n = 120
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-x))).astype(float)
    fit, note = S.logistic_association(x, y)
    assert fit.method == "ml" and note.startswith("maximum likelihood")
    cov = rng.normal(size=(12, 3))
    x12 = rng.normal(size=12)
    y12 = np.array([0, 1] * 6, dtype=float)
    fit, note = S.logistic_association(x12, y12, covariates=cov)
    assert fit.method == "firth" and "per parameter" in note


# --------------------------------------------------------------------------- driver


def test_run_association_detects_planted_feature_and_not_nulls():
    feats, clin = _feature_table(12, 12, seed=1, shift=2.5, n_null=3)
    res = S.run_association(feats, clinical=clin)
    a = res.association
    assert list(a.columns[:9]) == ["feature", "test", "effect", "ci_low", "ci_high", "pvalue",
                                   "qvalue", "n_responders", "n_nonresponders"]
    mw = a[a["test"] == "mann_whitney"].set_index("feature")
    assert mw.loc["planted", "qvalue"] < 0.01 and mw.loc["planted", "effect"] > 0.7
    assert mw.loc["planted", "direction"] == "higher_in_responders"
    assert (mw.drop(index="planted")["qvalue"] > 0.05).all()
    assert set(a["test"]) == {"mann_whitney", "auroc", "logistic"}  # no state fractions
    assert (a["n_responders"] == 12).all() and (a["n_nonresponders"] == 12).all()
    auc = a[(a["test"] == "auroc") & (a["feature"] == "planted")].iloc[0]
    assert auc["effect"] == pytest.approx((mw.loc["planted", "effect"] + 1) / 2)


def test_patient_is_the_unit():
    """Several samples of a patient count once; cell numbers never act as replicates."""
    feats, clin = _feature_table(6, 6, seed=2, shift=1.0,
                                 extra_samples={"P00": 3, "P07": 2})
    res = S.run_association(feats, clinical=clin)
    mw = res.association[res.association["test"] == "mann_whitney"]
    assert (mw["n_responders"] == 6).all() and (mw["n_nonresponders"] == 6).all()
    pt = res.patients.set_index("patient")
    sub = feats[feats["patient"] == "P00"]
    expected = np.average(sub["planted"], weights=sub["n_cells"])
    assert pt.loc["P00", "planted"] == pytest.approx(expected)
    assert pt.loc["P00", "n_samples"] == 3
    # ten times more cells per sample: same patient values, same p-values
    more = feats.assign(n_cells=feats["n_cells"] * 10)
    res10 = S.run_association(more, clinical=clin)
    pd.testing.assert_series_equal(res.association["pvalue"], res10.association["pvalue"])


@pytest.mark.parametrize("n_per_group", [2])
def test_skip_with_too_few_patients(n_per_group, tmp_path):
    feats, clin = _feature_table(n_per_group, n_per_group)
    res = S.run_association(feats, clinical=clin, min_patients_per_group=3)
    assert res.skipped
    a = res.association
    assert len(a) == 1 and a.loc[0, "test"] == "skipped"
    assert a.loc[0, "n_responders"] == 2 and a.loc[0, "n_nonresponders"] == 2
    assert "at least 3 per group" in a.loc[0, "note"]
    assert "skipped" in res.notes["note"].iloc[-1]
    write_table(a, tmp_path / "association.tsv")  # always writable
    assert read_table(tmp_path / "association.tsv").loc[0, "test"] == "skipped"


def test_single_response_group_and_excluded_codes():
    feats, clin = _feature_table(4, 4)
    clin["response"] = "CR"
    clin.loc[0, "response"] = "NE"
    res = S.run_association(feats, clinical=clin)
    assert res.skipped and "0 non-responder" in res.association.loc[0, "note"]
    assert (res.notes["item"] == "P00").any()  # the NE patient is noted as excluded
    assert pd.isna(res.patients.set_index("patient").loc["P00", "responder"])


def test_unknown_primary_timepoint_is_an_input_error():
    feats, clin = _feature_table(4, 4)
    with pytest.raises(InputError, match="primary_timepoint"):
        S.run_association(feats, clinical=clin, primary_timepoint="Baseline")


def test_covariates_are_encoded_and_adjusted_for():
    feats, clin = _feature_table(20, 20, seed=4, shift=1.5)
    design, notes = S.encode_covariates(clin, covariates=["age", "sex"], patients=clin["patient"])
    assert list(design.columns) == ["age", "sex[M]"]
    assert design["age"].mean() == pytest.approx(0) and design["age"].std() == pytest.approx(1)
    assert set(design["sex[M]"]) == {0.0, 1.0}
    res = S.run_association(feats, clinical=clin, covariates=["age", "sex"])
    lg = res.association[res.association["test"] == "logistic"].set_index("feature")
    assert "adjusted for age, sex[M]" in lg.loc["planted", "note"]
    assert lg.loc["planted", "effect"] > 0 and lg.loc["planted", "pvalue"] < 0.05
    with pytest.raises(InputError, match="associate.covariates"):
        S.encode_covariates(clin, covariates=["bmi"], patients=clin["patient"])


def test_planted_demo_effects_found_and_null_ratio_not():
    """Simulator cohort (10 vs 10): memory-like and exhausted found; CD4:CD8 not."""
    cells, c = _sim_cells(seed=0)
    feats = F.sample_features(cells)
    res = S.run_association(feats, clinical=c.clinical)
    mw = res.association[res.association["test"] == "mann_whitney"].set_index("feature")
    # effects planted at ~85 % power: seed 0's memory-like effect is nominal only (q 0.09)
    assert mw.loc["memory_like_fraction", "pvalue"] < 0.05
    assert mw.loc["memory_like_fraction", "effect"] > 0
    assert mw.loc["exhausted_fraction", "pvalue"] < 0.05  # q 0.053
    assert mw.loc["exhausted_fraction", "effect"] < 0
    # planted at ~85 % power (test_design_power): seed 0's diversity effect points the
    # right way but is not significant (measured q 0.09)
    assert mw.loc["clonal_diversity_gini_simpson", "effect"] > 0
    assert mw.loc["log2_cd4_cd8_ratio", "qvalue"] >= 0.05
    comp = res.association[res.association["test"] == "compositional"].set_index("feature")
    assert comp.loc["prop_exhausted", "qvalue"] < 0.05 and comp.loc["prop_exhausted", "effect"] < 0
    assert "frac_exhausted" in set(res.notes["item"])  # identical to exhausted_fraction


def test_compositional_test_finds_the_shifted_state():
    rng = np.random.default_rng(8)
    rows = []
    for i in range(16):
        resp = i < 8
        p = np.array([0.3, 0.3, 0.2, 0.2]) + (np.array([0.15, -0.05, -0.05, -0.05]) if resp else 0)
        counts = rng.multinomial(500, rng.dirichlet(p * 200))
        rows.append({"patient": f"P{i}", **{f"count_{s}": c for s, c in
                                            zip("abcd", counts, strict=True)}})
    table = pd.DataFrame(rows)
    resp = pd.Series([True] * 8 + [False] * 8)
    for transform in ("logit", "asin"):
        res = S.add_qvalues(S.compositional_tests(table, responder=resp, states=list("abcd"),
                                                  transform=transform)).set_index("feature")
        assert res.loc["prop_a", "qvalue"] < 0.01 and res.loc["prop_a", "effect"] > 0
        assert res.loc["prop_a", "median_responders"] > res.loc["prop_a", "median_nonresponders"]
    with pytest.raises(CartCohortError, match="composition_transform"):
        S.compositional_tests(table, responder=resp, states=list("abcd"), transform="clr")



def test_families_registry_is_the_one_source_of_test_order():
    assert S.TESTS == ("mann_whitney", "auroc", "logistic", "compositional")
    assert [t for f in S.FAMILIES.values() for t in f.tests] == list(S.TESTS)
    feats, clin = _feature_table(8, 8, seed=3, shift=1.5)
    res = S.run_association(feats, clinical=clin)
    order = {t: i for i, t in enumerate(S.TESTS)}
    ranks = res.association["test"].map(order).tolist()
    assert ranks == sorted(ranks)
    # no state fractions: the compositional family is skipped with a note
    assert ("association", "compositional", "no state fractions: skipped") in set(
        res.notes.itertuples(index=False, name=None))


def test_associate_step_is_association_plus_models():
    feats, clin = _feature_table(8, 8, seed=12, shift=1.5)
    kwargs = dict(primary_timepoint="IP", responders=["CR"], covariates=[], collapse_rho=0.9,
                  min_patients_per_group=3, min_events_per_variable=5,
                  composition_transform="logit")
    panel = S.parse_primary_panel(
        {"version": 3, "features": [{"feature": "planted", "question": "planted"}]}, source="p")
    no_endpoint = dict(endpoint="PFS", time=None, event=None, min_events_per_variable=10,
                       landmark_day=30)
    out = S.associate(feats, clinical=clin, exclude_responses=["NE"], primary_panel=panel,
                      dictionary=_TEST_DICT, blood_compartment="PB", survival=no_endpoint,
                      **kwargs)
    res = S.run_association(feats, clinical=clin, excluded=["NE"], panel=panel, **kwargs)
    readable = ["label", "feature_family", "qvalue_family", "qvalue_all"]
    pd.testing.assert_frame_equal(out.association.drop(columns=readable), res.association)
    assert list(out.association.columns[:3]) == ["feature", "label", "feature_family"]
    mw = out.association[out.association["test"] == "mann_whitney"].set_index("feature")
    assert mw.loc["planted", "label"] == "Planted one"
    assert mw.loc["null_0", "feature_family"] == "repertoire"
    for t in (out.longitudinal, out.survival):  # every table of the step is labelled
        assert {"label", "feature_family"} <= set(t.columns)
    assert out.tested == res.tested
    assert out.notes.iloc[: len(res.notes)].equals(res.notes)
    assert out.longitudinal.loc[0, "test"] == "skipped"  # one timepoint only
    assert out.survival.loc[0, "test"] == "skipped"  # no endpoint columns configured
    assert set(out.notes["scope"]) >= {"longitudinal", "survival"}

# --------------------------------------------------------------------------- pseudobulk


def test_pseudobulk_de_finds_planted_genes_with_patients_as_replicates():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n_genes, mats, obs, clin = 60, [], [], []
    for i in range(8):
        resp = i < 4
        clin.append({"patient": f"P{i}", "response": "CR" if resp else "PD"})
        for state, n in (("tcm", 30), ("treg", 4)):
            mu = np.full(n_genes, 2.0) * rng.gamma(20, 1 / 20, size=n_genes)
            if state == "tcm" and resp:
                mu[:5] *= 4
            mats.append(rng.poisson(mu, size=(n, n_genes)))
            obs += [{"patient": f"P{i}", "state": state, "timepoint": "IP"}] * n
    counts = sp.csr_matrix(np.vstack(mats).astype(np.float32))
    genes = [f"G{j}" for j in range(n_genes)]
    de = S.pseudobulk_de_matrix(counts, obs=pd.DataFrame(obs), genes=genes,
                         clinical=pd.DataFrame(clin), min_cells=10, min_patients_per_group=3)
    tcm = de[de["state"] == "tcm"].set_index("gene")
    assert set(tcm.index[tcm["padj"] < 0.05]) >= {"G0", "G1", "G2", "G3", "G4"}
    assert (tcm.loc[["G0", "G1", "G2", "G3", "G4"], "log2fc"] > 1).all()
    assert (tcm["padj"] < 0.05).sum() <= 7
    assert (tcm["n_responders"] == 4).all()  # patients, not cells
    treg = de[de["state"] == "treg"]
    assert len(treg) == 1 and treg["note"].iloc[0].startswith("skipped")
    with pytest.raises(CartCohortError, match="integer"):
        S.pseudobulk_de_matrix(counts * 0.37, obs=pd.DataFrame(obs), genes=genes,
                        clinical=pd.DataFrame(clin), min_cells=10)


def test_pseudobulk_de_leaves_out_vdj_car_mito_ribo_and_config_genes():
    """Issue 26: the genes kept out of the HVGs are kept out of the DE, even when they
    carry the planted response effect (a clone's TRAV gene, the CAR)."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    genes = ["G0", "G1", "G2", "TRAV14DV4", "TRBC2", "IGKC", "MT-CO1", "RPL13", "CAR", "XIST"]
    mats, obs, clin = [], [], []
    for i in range(8):
        resp = i < 4
        clin.append({"patient": f"P{i}", "response": "CR" if resp else "PD"})
        mu = np.full(len(genes), 5.0)
        if resp:
            mu[[0, 3, 8]] *= 5
        mats.append(rng.poisson(mu, size=(30, len(genes))))
        obs += [{"patient": f"P{i}", "state": "tcm", "timepoint": "IP"}] * 30
    gex = ad.AnnData(sp.csr_matrix(np.vstack(mats).astype(np.float32)), obs=pd.DataFrame(obs))
    gex.obs_names = [f"c{i}" for i in range(gex.n_obs)]
    gex.var_names = genes
    gex.var["is_car"] = gex.var_names == "CAR"
    de = S.pseudobulk_de(gex, clinical=pd.DataFrame(clin), primary_timepoint="IP",
                         responders=["CR"], exclude_responses=["NE"], min_cells_pseudobulk=10,
                         min_patients_per_group=3, min_gene_count=10, exclude_genes=["XIST"])
    assert set(de["gene"]) == {"G0", "G1", "G2"}
    assert de.set_index("gene").loc["G0", "padj"] < 0.05


def test_pseudobulk_de_sums_the_counts_from_the_file_in_blocks(tmp_path):
    """At cohort scale the counts stay on disk (cohort.h5mu) and are summed a block of cells
    at a time: the same table as with the matrix in memory, whatever the block size, with
    cells of other timepoints and of an unlabelled patient interleaved."""
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp
    from cartcohort.stats.pseudobulk import CountsOnDisk

    rng = np.random.default_rng(3)
    genes = ["G0", "G1", "G2", "CAR", "MT-CO1", "G5"]
    obs, clin = [], []
    for i in range(9):
        clin.append({"patient": f"P{i}", "response": ["CR", "PD", "NE"][i % 3]})
        for j in range(40):
            obs.append({"patient": f"P{i}", "state": ["tcm", "tem"][j % 2],
                        "timepoint": "IP" if j % 5 else "D14"})
    x = rng.poisson(4.0, size=(len(obs), len(genes))).astype(np.float32)
    x[np.array([o["patient"] in ("P0", "P3", "P6") for o in obs]), 0] *= 4
    gex = ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame(obs))
    gex.obs_names = [f"c{i}" for i in range(gex.n_obs)]
    gex.var_names = genes
    gex.var["is_car"] = gex.var_names == "CAR"
    gex.layers["counts"] = gex.X.copy()
    md.MuData({"gex": gex}).write(tmp_path / "cohort.h5mu")
    kw = dict(clinical=pd.DataFrame(clin), primary_timepoint="IP", responders=["CR"],
              exclude_responses=["NE"], min_cells_pseudobulk=5, min_patients_per_group=3,
              min_gene_count=10)
    want = S.pseudobulk_de(gex, **kw)
    assert (want["gene"].notna()).sum() >= 6 and want["pvalue"].notna().any()
    shell = ad.AnnData(obs=gex.obs, var=gex.var)
    got = S.pseudobulk_de(shell, counts_path=str(tmp_path / "cohort.h5mu"), **kw)
    pd.testing.assert_frame_equal(got, want)
    # the sums themselves, on rows out of file order and tiny blocks
    rows, cols = np.array([7, 2, 300, 11, 2 * 40 + 1]), np.array([4, 0, 2])
    disk = CountsOnDisk(str(tmp_path / "cohort.h5mu"), "mod/gex/layers/counts", rows=rows,
                        columns=cols, block_rows=3)
    ind = sp.csr_matrix(np.array([[1, 0, 1, 0, 1], [0, 1, 1, 1, 0]], dtype=float))
    np.testing.assert_array_equal(disk.group_sums(ind), (ind @ x[rows][:, cols]))


# --------------------------------------------------------------------------- scorecards


def _reference() -> pd.DataFrame:
    return pd.DataFrame({
        "patient": ["R1", "R2", "R3", "N1", "N2", "X1"],
        "response": ["CR", "CR", "CR", "PD", "SD", "NE"],
        "responder": pd.array([True, True, True, False, False, pd.NA], dtype="boolean"),
        "memory_like_fraction": [0.4, 0.5, 0.6, 0.2, 0.3, 0.35],
    })


def test_score_product_percentile_and_flags():
    ref = _reference()
    prim = dict(primary=["memory_like_fraction"], coverage=0.9)
    card = SC.score_product(pd.Series({"sample": "new", "memory_like_fraction": 0.3}),
                           reference=ref, **prim).set_index("feature")
    row = card.loc["memory_like_fraction"]
    # the Gaussian-kernel distribution function of the 6 reference values at 0.3, as
    # statsmodels estimates it with the same bandwidth (1.587 s n^-1/3)
    from statsmodels.nonparametric.kernel_density import KDEMultivariate

    vals = ref["memory_like_fraction"].to_numpy(float)
    spread = min(vals.std(ddof=1), np.subtract(*np.percentile(vals, [75, 25])) / 1.349)
    kde = KDEMultivariate(vals, var_type="c", bw=[(4 / 6) ** (1 / 3) * spread])
    assert row["cohort_percentile"] == pytest.approx(100 * kde.cdf([0.3]), rel=1e-6)
    assert 100 * 1 / 6 < row["cohort_percentile"] < 100 * 2 / 6  # one below, one tied
    # no spread: the mid-rank percentile
    assert SC.smoothed_percentile(0.3, np.array([0.3, 0.3, 0.3])) == 50.0
    assert SC.smoothed_percentile(0.4, np.array([0.3, 0.3, 0.3])) == 100.0
    assert (row["responder_min"], row["responder_max"]) == (0.4, 0.6)
    # responders 0.4, 0.5, 0.6: 0.5 -/+ t(0.95, 2) 0.1 sqrt(4/3) = 0.5 -/+ 0.3372
    assert row["interval_low"] == pytest.approx(0.5 - 2.919986 * 0.1 * (4 / 3) ** 0.5)
    assert row["interval_high"] == pytest.approx(0.5 + 2.919986 * 0.1 * (4 / 3) ** 0.5)
    assert row["flag"] == "within_responder_interval" and bool(row["primary"])
    low = SC.score_product(pd.Series({"sample": "n2", "memory_like_fraction": 0.15}),
                          reference=ref, **prim)
    assert low["flag"].item() == "below_responder_interval"
    # outside the panel: shown, never flagged
    explo = SC.score_product(pd.Series({"sample": "n2", "memory_like_fraction": 0.15}),
                            reference=ref, primary=[], coverage=0.9)
    assert explo["flag"].item() == "exploratory_not_flagged" and not explo["primary"].item()
    assert np.isnan(explo["interval_low"].item())
    # leave-one-out: R3 is not compared with itself
    loo = SC.score_product(pd.Series({"sample": "R3_IP", "memory_like_fraction": 0.6}),
                          reference=ref, exclude_patient="R3", **prim)
    assert loo["flag"].item() == "no_reference"  # only 2 responders left (< 3)
    loo = SC.score_product(pd.Series({"sample": "R3_IP", "memory_like_fraction": 1.2}),
                          reference=ref, exclude_patient="R3", min_reference=2, **prim)
    assert loo["flag"].item() == "above_responder_interval" and loo["cohort_n"].item() == 5
    missing = SC.score_product(pd.Series({"sample": "m"}), reference=ref, **prim)
    assert missing["flag"].item() == "no_value"


def _panel(*features: str, tmp_path=None):
    """A primary panel of ``features`` (written to tmp_path/panel.yaml when given)."""
    import yaml

    spec = {"version": 1, "features": [{"feature": f, "question": f"q{i}"}
                                       for i, f in enumerate(features)]}
    if tmp_path is not None:
        (tmp_path / "panel.yaml").write_text(yaml.safe_dump(spec))
    return S.parse_primary_panel(spec, source="panel.yaml")


def test_new_product_cli_matches_library(tmp_path):
    import importlib.util
    from pathlib import Path

    feats, clin = _feature_table(6, 6, seed=9, shift=2.0)
    res = S.run_association(feats, clinical=clin)
    ref = SC.build_reference(res.patients)
    assert "count_planted" not in ref.columns and list(ref.columns[:3]) == [
        "patient", "response", "responder"]
    write_table(ref, tmp_path / "reference_features.tsv")
    write_table(res.association, tmp_path / "association.tsv")
    new = feats.iloc[:1].assign(sample="NEW1", patient="Q1", planted=-3.0)
    write_table(new, tmp_path / "new.tsv")
    script = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "score_new_product.py"
    spec = importlib.util.spec_from_file_location("score_new_product", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _panel("planted", tmp_path=tmp_path)
    rc = mod.main(["--reference", str(tmp_path / "reference_features.tsv"), "--features",
                   str(tmp_path / "new.tsv"), "--association", str(tmp_path / "association.tsv"),
                   "--panel", str(tmp_path / "panel.yaml"), "--out-dir", str(tmp_path / "out")])
    assert rc == 0
    card = read_table(tmp_path / "out" / "NEW1.tsv").set_index("feature")
    assert card.loc["planted", "flag"] == "below_responder_interval"
    assert card.loc["null_0", "flag"] == "exploratory_not_flagged"
    assert card.loc["planted", "cohort_percentile"] < 2  # below every reference product
    assert card.loc["planted", "direction"] == "higher_in_responders"
    lib = SC.score_product(read_table(tmp_path / "new.tsv").iloc[0],
                          reference=read_table(tmp_path / "reference_features.tsv"),
                          association=read_table(tmp_path / "association.tsv"),
                          primary=["planted"], coverage=0.9)
    assert card["cohort_percentile"].tolist() == pytest.approx(  # written with %.6g
        lib["cohort_percentile"].tolist(), rel=1e-5)
    assert "NEW1" in (tmp_path / "out" / "scorecards.html").read_text()
    assert mod.main(["--reference", str(tmp_path / "reference_features.tsv"),
                     "--features", str(tmp_path / "new.tsv"), "--samples", "nope",
                     "--panel", str(tmp_path / "panel.yaml"),
                     "--out-dir", str(tmp_path / "out2")]) == 1


def test_cohort_scorecards_and_html():
    feats, clin = _feature_table(5, 5, seed=10, shift=2.0)
    res = S.run_association(feats, clinical=clin)
    ref = SC.build_reference(res.patients)
    samples = list(feats["sample"]) + ["GONE_IP"]
    cards = SC.score_cohort_products(feats, reference=ref, association=res.association,
                                    samples=samples, primary=["planted"], coverage=0.9)
    assert set(cards) == set(samples)
    assert (cards["GONE_IP"]["flag"] == "no_value").all()
    assert (cards["P00_IP"]["cohort_n"] == 9).all()  # own patient left out
    meta = SC.product_meta(feats, patients=res.patients, samples=samples)
    assert meta.loc["P00_IP", "response"] == "CR"
    calib = SC.flag_calibration(ref, primary=["planted"], coverage=0.9)
    page = SC.scorecards_html(cards, meta=meta, calibration=calib, panel_label="p.yaml v1")
    assert page.count("<h2 id=") == len(samples) and "P09_IP" in page
    assert f"<b>{100 * SC.mean_flag_rate(calib):.1f}%</b>" in page and "p.yaml v1" in page



def test_cohort_scorecards_step_writes_every_output(tmp_path):
    feats, clin = _feature_table(5, 5, seed=10, shift=2.0)
    res = S.run_association(feats, clinical=clin)
    samples = list(feats["sample"])
    cards = [tmp_path / "cards" / f"{s}.tsv" for s in samples]
    out = SC.cohort_scorecards(
        feats, clinical=clin, association=res.association, panel=_panel("planted", "null_0"),
        dictionary=_TEST_DICT, cards=cards, reference=tmp_path / "reference.tsv",
        calibration=tmp_path / "calibration.tsv", html=tmp_path / "cards.html",
        heatmap=tmp_path / "heatmap.png", flag_coverage=0.9, primary_timepoint="IP",
        responders=["CR"], exclude_responses=["NE"])
    assert list(out.cards) == samples and all(p.exists() for p in cards)
    assert read_table(tmp_path / "reference.tsv")["patient"].tolist() == sorted(
        out.reference["patient"])
    assert (tmp_path / "cards.html").read_text() == out.html()
    card = read_table(cards[0])  # readable names beside the ids; the page shows them
    assert list(card.columns[1:4]) == ["feature", "label", "feature_family"]
    assert set(card["label"]) == {"Planted one", "Null feature 0", "Null feature 1"}
    assert ">Planted one</td>" in out.html()
    calib = read_table(tmp_path / "calibration.tsv")
    assert calib["row"].tolist() == ["responder"] * 5 + ["mean"]
    assert calib["n_features"].iloc[:5].tolist() == [2] * 5  # planted and null_0
    assert (tmp_path / "heatmap.png").stat().st_size > 1000

# --------------------------------------------------------------------------- figures


def test_figures_render_including_skipped_inputs(tmp_path):
    from cartcohort.pl import associate as P

    feats, clin = _feature_table(6, 6, seed=1, shift=2.0)
    panel = S.parse_primary_panel({"version": 2, "features": [
        {"feature": "planted", "question": "a"}, {"feature": "null_0", "question": "b"},
        {"feature": "absent", "question": "c"}]}, source="panel.yaml")
    res = S.run_association(feats, clinical=clin, panel=panel)
    res.association = readable_association(res.association, dictionary=_TEST_DICT,
                                           what="test")
    f2, c2 = _feature_table(2, 2)
    skipped = readable_association(S.run_association(f2, clinical=c2).association,
                                   dictionary=_TEST_DICT, what="test")
    de = pd.DataFrame({"state": ["tcm"] * 3, "gene": ["A", "B", "C"], "log2fc": [2.0, -1, 0.1],
                       "pvalue": [1e-6, 0.01, 0.8], "padj": [1e-5, 0.03, 0.8],
                       "n_responders": 4, "n_nonresponders": 4})
    de_skipped = pd.DataFrame({"state": ["tcm"], "gene": [np.nan], "pvalue": [np.nan],
                               "note": ["skipped: 1 responder"]})
    ref = SC.build_reference(res.patients)
    cards = SC.score_cohort_products(feats, reference=ref, association=res.association,
                                    samples=list(feats["sample"]), primary=["planted"],
                                    coverage=0.9)
    figs = {
        "forest": P.forest_plot(res.association),
        "forest_exploratory": P.forest_plot(res.association, family="exploratory"),
        "forest_skipped": P.forest_plot(skipped),
        "volcano": P.volcano_plot(de),
        "volcano_skipped": P.volcano_plot(de_skipped),
        "heatmap": P.scorecard_heatmap(cards),
    }
    for name, fig in figs.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path, dpi=60)
        assert path.stat().st_size > 1000, name
    # the primary-panel forest: the planted feature first (smallest p-value at the top), its
    # direction named, the panel version in the title and the untested panel feature listed
    ax = figs["forest"].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    # readable labels, grouped under their feature family (bold header after the rows)
    assert labels[0].startswith("Planted one (higher in R") and len(labels) == 4
    assert labels[2:] == ["CAR", "repertoire"]
    assert "primary panel v2" in figs["forest"]._suptitle.get_text()
    assert any("Absent one" in t.get_text() for t in figs["forest"].texts)
    expl = [t.get_text() for t in figs["forest_exploratory"].axes[0].get_yticklabels()]
    assert len(expl) == 2 and expl[0].startswith("Null feature 1 (")
    # full height in the report viewer: at most 1400 x 1000 px at the saved 150 dpi
    w, h = figs["forest"].get_size_inches()
    assert w * 150 <= 1500 and h * 150 <= 1000
    assert "skipped" in figs["forest_skipped"].axes[0].texts[0].get_text()
