"""Issue 26: scopes, primary panel, twins, separation and the type-I error mechanics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartcohort import stats as S
from cartcohort.errors import CartCohortError, InputError
from cartcohort.stats import logistic as L
from cartcohort.tl import features as F
from cartcohort.tl import repertoire as RT
from _truth_cells import truth_feature_cells


def _panel(*names: str, version: int = 7) -> S.PrimaryPanel:
    return S.parse_primary_panel(
        {"version": version,
         "features": [{"feature": n, "question": f"q{i}"} for i, n in enumerate(names)]},
        source="panel.yaml")


def _table(n_resp: int, n_non: int, columns: dict, *, seed: int = 0):
    """IP feature rows from ``columns`` (name -> function(rng, responder) -> value)."""
    rng = np.random.default_rng(seed)
    rows, clin = [], []
    for i in range(n_resp + n_non):
        resp = i < n_resp
        pid = f"P{i:02d}"
        clin.append({"patient": pid, "response": "CR" if resp else "PD"})
        row = {"sample": f"{pid}_IP", "patient": pid, "timepoint": "IP",
               "timepoint_day": 0.0, "compartment": "product", "n_cells": 300}
        row.update({k: f(rng, resp) for k, f in columns.items()})
        rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(clin)


# --------------------------------------------------------------------------- separation


@pytest.mark.parametrize("higher_in_responders", [True, False])
def test_perfect_separation_gives_auroc_1_with_an_informative_ci_and_a_finite_firth_fit(
        higher_in_responders):
    sign = 1.0 if higher_in_responders else -1.0
    feats, clin = _table(10, 10, {
        "sep_fraction": lambda rng, r: 0.5 + sign * (0.2 if r else -0.2) + rng.uniform(-.1, .1),
        "null_score": lambda rng, r: rng.normal()})
    res = S.run_association(feats, clinical=clin, panel=_panel("sep_fraction"))
    a = res.association.set_index(["feature", "test"])
    auc = a.loc[("sep_fraction", "auroc")]
    want = "higher_in_responders" if higher_in_responders else "lower_in_responders"
    assert auc["effect"] == 1.0 and auc["direction"] == want
    assert np.isfinite(auc["ci_low"]) and 0.5 < auc["ci_low"] < 1.0 and auc["ci_high"] == 1.0
    assert "Newcombe" in auc["note"]
    mw = a.loc[("sep_fraction", "mann_whitney")]
    assert mw["effect"] == sign and mw["direction"] == want
    lg = a.loc[("sep_fraction", "logistic")]
    assert "Firth" in lg["note"] and "complete separation" in lg["note"]
    assert np.isfinite([lg["effect"], lg["ci_low"], lg["ci_high"]]).all()
    assert np.sign(lg["effect"]) == sign and lg["ci_low"] < lg["effect"] < lg["ci_high"]
    # odds ratio per 10 percentage points (a fraction), finite too
    assert lg["unit"] == "10 percentage points"
    sd = res.patients["sep_fraction"].std(ddof=1)
    assert lg["or_per_unit"] == pytest.approx(np.exp(lg["effect"] * 0.1 / sd))
    assert np.isfinite([lg["or_unit_ci_low"], lg["or_unit_ci_high"]]).all()
    # the AUROC never reads below 0.5
    aucs = res.association.loc[res.association["test"] == "auroc", "effect"]
    assert (aucs >= 0.5).all()


def test_separation_check_finds_complete_quasi_and_covariate_separation():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1.0])
    one = np.ones(8)
    x_complete = np.array([1, 2, 3, 4, 5, 6, 7, 8.0])
    x_quasi = np.array([1, 2, 3, 5, 5, 6, 7, 8.0])  # one tie at the boundary
    x_none = np.array([1, 5, 3, 4, 2, 6, 7, 0.0])
    assert L.separation(np.column_stack([one, x_complete]), y) == "complete"
    assert L.separation(np.column_stack([one, x_quasi]), y) == "quasi-complete"
    assert L.separation(np.column_stack([one, x_none]), y) == ""
    # the feature alone does not separate, the feature with a covariate does
    cov = np.array([0, 0, 0, 0, 1, 1, 1, 1.0]) * 0 + np.array([1, 0, 1, 0, 1, 0, 1, 0.0])
    x = np.array([0, 2, 1, 3, 2, 4, 3, 5.0])
    assert L.separation(np.column_stack([one, x]), y) == ""
    assert L.separation(np.column_stack([one, x, cov]), y) != ""


def test_feature_unit_rule():
    assert L.feature_unit("memory_like_fraction", np.array([0.1, 0.5])) == (
        "10 percentage points", 0.1)
    assert L.feature_unit("frac_treg", np.array([0.0, 0.2]))[0] == "10 percentage points"
    assert L.feature_unit("log2_cd4_cd8_ratio", np.array([-1.0, 2.0])) == ("doubling", 1.0)
    assert L.feature_unit("mean_score_exhausted", np.array([-1.0, 2.0])) == ("1 SD", None)
    assert L.feature_unit("fraction_like_but_wide", np.array([0.0, 3.0]))[0] == "1 SD"


# --------------------------------------------------------------------------- twins


def test_planted_near_copies_are_collapsed_to_the_panel_member():
    base = {}

    def a(rng, r):
        base["a"] = rng.normal(1.0 if r else 0.0)
        return base["a"]

    cols = {
        "copy_first": lambda rng, r: 0,  # placeholder, replaced below
        "a_score": a,
        "a_near": lambda rng, r: base["a"] + rng.normal(0, 0.01),
        "a_negated": lambda rng, r: -3 * base["a"],
        "b_score": lambda rng, r: rng.normal(),
        "c_score": lambda rng, r: rng.normal(),
    }
    feats, clin = _table(12, 12, cols, seed=3)
    feats["copy_first"] = np.exp(feats["a_score"])  # monotone copy, listed first
    # a chain: b ~ d and d ~ c (|rho| > 0.9) but b !~ c; complete linkage keeps two of them
    feats["c_score"] = feats["b_score"] + 0.9 * feats["c_score"]
    feats["d_score"] = (feats["b_score"] + feats["c_score"]) / 2
    panel = _panel("a_near")
    res = S.run_association(feats, clinical=clin, panel=panel, collapse_rho=0.9)
    tested = set(res.association["feature"])
    assert "a_near" in tested and not {"copy_first", "a_score", "a_negated"} & tested
    mw = res.association[res.association["test"] == "mann_whitney"].set_index("feature")
    twins = mw.loc["a_near", "twins"]
    assert "copy_first" in twins and "a_score" in twins and "a_negated (rho=-0.99" in twins
    assert mw.loc["a_near", "family"] == "primary"
    notes = res.notes.set_index("item")
    assert "twin of a_near" in notes.loc["a_negated", "note"]
    assert len(res.twins.twins["a_near"]) == 3 and res.twins.n_collapsed == 4
    rho = S.spearman_matrix(res.patients, ["b_score", "c_score", "d_score"]).abs()
    assert rho.loc["b_score", "c_score"] < 0.9
    assert rho.loc["b_score", "d_score"] > 0.9 and rho.loc["c_score", "d_score"] > 0.9
    assert len({"b_score", "c_score", "d_score"} & tested) == 2  # single linkage: 1
    # collapse_rho = 1: |rho| > 1 never holds, every feature is tested
    res1 = S.run_association(feats, clinical=clin, panel=panel, collapse_rho=1.0)
    assert set(res1.association["feature"]) == set(S.feature_columns(res.patients)) - {"n_cells"}
    with pytest.raises(CartCohortError, match="collapse_rho"):
        S.collapse_twins(res.patients, features=["a_score"], collapse_rho=0.0)


# --------------------------------------------------------------------------- panel


def test_primary_family_has_its_own_bh_and_panel_gaps_are_rows_not_crashes():
    cols = {"planted_fraction": lambda rng, r: float(np.clip(rng.normal(.6 if r else .3, .1),
                                                             0, 1))}
    cols |= {f"null_{j}": (lambda rng, r: rng.normal()) for j in range(8)}
    feats, clin = _table(10, 10, cols, seed=5)
    panel = _panel("planted_fraction", "null_0", "not_a_column", version=4)
    res = S.run_association(feats, clinical=clin, panel=panel)
    a = res.association
    assert (a["panel_version"] == "4").all() and (a["scope"] == "product").all()
    mw = a[a["test"] == "mann_whitney"]
    prim, expl = mw[mw["family"] == "primary"], mw[mw["family"] == "exploratory"]
    assert set(prim["feature"]) == {"planted_fraction", "null_0"}
    np.testing.assert_allclose(prim["qvalue"], S.bh_qvalues(prim["pvalue"]))
    np.testing.assert_allclose(expl["qvalue"], S.bh_qvalues(expl["pvalue"]))
    assert len(expl) == 7
    gap = a[a["feature"] == "not_a_column"]
    assert list(gap["test"]) == ["skipped"] and gap["family"].iloc[0] == "primary"
    assert "not a column" in gap["note"].iloc[0]
    assert ("primary_panel", "not_a_column") in set(zip(res.notes["scope"], res.notes["item"],
                                                        strict=True))
    # without a panel everything is exploratory
    res0 = S.run_association(feats, clinical=clin)
    assert set(res0.association["family"]) == {"exploratory"}
    assert set(res0.association["panel_version"]) == {"none"}


def test_a_malformed_panel_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "panel.yaml"
    bad.write_text("version: 1\nfeatures:\n  - feature: rep_frac_post_cells_from_product_clones"
                   "\n    question: persistence\n")
    with pytest.raises(InputError, match="after infusion"):
        S.load_primary_panel(bad)


# --------------------------------------------------------------------------- scopes


@pytest.fixture(scope="module")
def every_feature():
    """The full feature table the code produces (cells + repertoire) on a simulated cohort
    with post-infusion samples, and the same with the post-infusion cells removed."""
    from cartcohort.datasets import simulate_cohort

    c = simulate_cohort(seed=4, n_patients=16, min_cells=120, max_cells=160,
                        frac_longitudinal=0.5, n_background_genes=10)
    cells = truth_feature_cells(c)

    def build(cells):
        # a fixed depth: "auto" picks the depth over every library, so product rows would
        # change with the post-infusion libraries' sizes (depth only, not their clones)
        rep = RT.repertoire_tables(cells, primary_timepoint="IP", n_bootstrap=10,
                                   rarefaction_depth=40).samples
        return F.sample_features(cells, repertoire=rep)

    full = build(cells)
    product_only = build(cells[cells["timepoint"] == "IP"])
    return full, product_only, c.clinical


def test_no_feature_measured_after_infusion_has_scope_product(every_feature):
    full, product_only, clinical = every_feature
    assert (full["timepoint"] != "IP").any()  # the cohort has post-infusion samples
    ip_full = full[full["timepoint"] == "IP"].set_index("sample")
    ip_prod = product_only.set_index("sample").reindex(ip_full.index)
    # a feature is measured after infusion when its product-row value changes once the
    # post-infusion cells are removed (or it exists only with them)
    after = set()
    for f in S.feature_columns(ip_full):
        if f not in ip_prod.columns:
            after.add(f)
            continue
        a, b = ip_full[f].to_numpy(float), ip_prod[f].to_numpy(float)
        if not np.array_equal(np.isnan(a), np.isnan(b)) or not np.allclose(
                a[~np.isnan(a)], b[~np.isnan(b)], equal_nan=True):
            after.add(f)
    assert after, "the check must see the persistence features"
    assert {F.feature_scope(f) for f in after} == {"in_vivo"}, sorted(
        f for f in after if F.feature_scope(f) == "product")
    res = S.run_association(full, clinical=clinical, min_patients_per_group=2,
                            panel=S.load_primary_panel("resources/association/primary_panel.yaml"))
    a = res.association
    assert set(a["scope"]) == {"product"}
    assert not after & set(a["feature"]), sorted(after & set(a["feature"]))
    vivo = res.in_vivo
    assert set(vivo["scope"]) == {"in_vivo"}
    post = set(full.loc[full["timepoint"] != "IP", "timepoint"])
    assert all(f in F.IN_VIVO_REPERTOIRE or f.rsplit("@", 1)[-1] in post
               for f in vivo["feature"]), sorted(vivo["feature"])
    assert any("@" in f for f in vivo["feature"])  # post-infusion state fractions too
    assert not any("@" in f for f in a["feature"])
    assert vivo["note"].str.startswith("outcome correlate, not a predictor").all()
    tested_vivo = set(vivo.loc[vivo["test"] != "skipped", "feature"])
    assert tested_vivo & after  # some in vivo feature is tested, in its own table


# --------------------------------------------------------------------------- type-I error


def test_clopper_pearson_known_values():
    lo, hi = S.clopper_pearson(0, 200)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 200))
    lo, hi = S.clopper_pearson(10, 200)  # R: binom.test(10, 200)$conf.int
    assert lo == pytest.approx(0.02422, abs=1e-4) and hi == pytest.approx(0.09003, abs=1e-4)
    with pytest.raises(CartCohortError):
        S.clopper_pearson(3, 2)


def test_permutation_fwer_mechanics_on_synthetic_null_data():
    rng = np.random.default_rng(11)
    n = 20
    table = pd.DataFrame({f"null_{j}": rng.normal(size=n) for j in range(5)})
    resp = pd.Series([True] * 10 + [False] * 10)
    r = S.permutation_fwer(table, responder=resp, features=list(table.columns),
                           n_permutations=40, seed=2, tests=["mann_whitney"])
    again = S.permutation_fwer(table, responder=resp, features=list(table.columns),
                               n_permutations=40, seed=2, tests=["mann_whitney"])
    pd.testing.assert_frame_equal(r.table, again.table)
    row = r.table.set_index("test").loc["mann_whitney"]
    assert row["n_permutations"] == 40 and row["n_features"] == 5
    assert row["fwer"] == row["n_any_significant"] / 40
    assert row["ci_low"] <= row["fwer"] <= row["ci_high"] and row["fwer"] <= 0.15
    assert len(r.min_q) == 40 and (r.min_q["mann_whitney"] > 0).all()
    # a feature that is a copy of the labels is significant under every labelling that
    # keeps it separated: with the labels themselves as a "permutation" the count is 1
    table["label_copy"] = resp.astype(float) + rng.normal(0, 0.01, n)
    hit = S.permutation_fwer(table, responder=resp, features=["label_copy"],
                             n_permutations=30, seed=0, tests=["mann_whitney"])
    assert hit.table["fwer"].iloc[0] < 0.2  # permuted labels break the copy
    with pytest.raises(CartCohortError, match="not columns"):
        S.permutation_fwer(table, responder=resp, features=["nope"], n_permutations=2)
