"""The feature dictionary (resources/features.yaml, cartcohort.dictionary), issue #23: every
feature the library produces has a readable entry, generated families resolve by pattern
(other cohorts' own states too), the family q-values and the twin collapse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartcohort import stats
from cartcohort.dictionary import (
    FAMILIES,
    FeatureDictionary,
    FeatureInfo,
    label_table,
    read_dictionary,
)
from cartcohort.errors import CartCohortError
from cartcohort.multitest import bh_qvalues
from cartcohort.scorecards.catalogue import read_catalogue
from cartcohort.stats.readable import family_qvalues
from cartcohort.tl import features as F
from cartcohort.tl import kinetics, repertoire
from cartcohort.tl.protein_features import PROTEIN_FEATURES
from conftest import REPO

DICTIONARY = REPO / "resources" / "features.yaml"


@pytest.fixture(scope="module")
def dictionary() -> FeatureDictionary:
    return read_dictionary(DICTIONARY)


@pytest.fixture(scope="module")
def produced(dictionary):
    """Features of a small simulated cohort (with post-infusion samples) built by the
    library as rule sample_features builds them, and the association step run on them."""
    from _truth_cells import truth_feature_cells
    from cartcohort.datasets import simulate_cohort

    c = simulate_cohort(seed=5, n_patients=12, min_cells=120, max_cells=160,
                        frac_longitudinal=0.5, n_background_genes=10)
    cells = truth_feature_cells(c)
    rng = np.random.default_rng(0)
    for m in F.MARKERS:  # checkpoint calls and program scores (annotation's columns)
        cells[m] = rng.random(len(cells)) < 0.3
    for s in F.STATES:
        cells[f"score_{s}"] = rng.normal(size=len(cells))
    prot = cells[["sample"]].assign(
        adt_usable=True, prot_t_cell=True,
        prot_cd4_cd8=rng.choice(["CD4", "CD8"], len(cells)),
        prot_memory=rng.choice(["Tscm", "Tcm", "Tem"], len(cells)),
        prot_pd1_pos=rng.random(len(cells)) < 0.2)
    rep = repertoire.repertoire_tables(cells, primary_timepoint="IP", n_bootstrap=10)
    kin = kinetics.kinetics_tables(cells, primary_timepoint="IP", n_permutations=9)
    feats = F.sample_features(cells, repertoire=rep.samples, kinetics=kin.patients,
                              protein=prot)
    # the association (for its prop_* and <feature>@<timepoint> rows) on a few features
    # of each kind: all of them would take ~20 s of logistic fits
    keep = [c for c in feats.columns if c in F.ID_COLUMNS or c == "n_cells"
            or c.startswith("frac_") and c.count("_") == 1
            or c in ("kin_car_auc_blood", "rep_jaccard_product", "rep_frac_expanded")]
    result = stats.associate(
        feats[keep], clinical=c.clinical, primary_panel=stats.load_primary_panel(
            REPO / "resources" / "association" / "primary_panel.yaml"),
        dictionary=dictionary, primary_timepoint="IP", responders=["CR"],
        exclude_responses=["NE"], covariates=[], collapse_rho=0.9, min_patients_per_group=2,
        min_events_per_variable=5, composition_transform="logit", blood_compartment="PB",
        survival={"endpoint": "PFS", "time": "pfs_days", "event": "pfs_event",
                  "min_events_per_variable": 1, "landmark_day": 10})
    return feats, result


def test_every_produced_feature_has_an_entry(dictionary, produced):
    feats, result = produced
    ids = [c for c in feats.columns if c not in F.ID_COLUMNS]
    # the generated families are all there (so the check below covers them)
    for prefix in ("frac_", "memory_like_fraction_", "mean_score_", "pd1_pos_fraction",
                   "rep_", "kin_", "prot_"):
        assert any(i.startswith(prefix) for i in ids), prefix
    assert set(PROTEIN_FEATURES) <= set(ids)
    assert dictionary.missing(ids) == []
    tables = {"association": result.association, "in vivo": result.in_vivo,
              "survival": result.survival, "longitudinal": result.longitudinal}
    for name, t in tables.items():
        assert dictionary.missing(t["feature"]) == [], name
        shown = t[t["feature"] != "(all)"]
        assert (shown["label"].str.len() > 0).all(), name
        assert set(shown["feature_family"]) <= set(FAMILIES), name
    # the compositional test's prop_* and the post-infusion <feature>@<timepoint> forms
    assert result.association["feature"].str.startswith("prop_").any()
    at = result.in_vivo[result.in_vivo["feature"].str.contains("@")]
    assert len(at) and all(" at " in label for label in at["label"])


def test_every_entry_is_complete_and_directions_are_referenced(dictionary):
    for info in dictionary.exact.values():
        assert info.family in FAMILIES, info.id
        assert info.label and info.description, info.id
        assert (info.better is None) == (info.reference is None), info.id
    for pat in dictionary.patterns:
        assert pat.entry["family"] in FAMILIES, pat.entry["match"]
    # the scorecards' reader is the same lookup (exact id and pattern)
    cat = read_catalogue(DICTIONARY)
    assert cat["memory_like_fraction"].better == "higher"
    assert cat["frac_tcm_cd8"].label == "Central memory (Tcm) of CD8+ cells"


def test_patterns_resolve_other_cohorts_states_and_timepoints(dictionary):
    # a published label map's own state, per subset, and an in vivo timepoint form
    own = dictionary["frac_stem_like_cd8"]
    assert (own.label, own.family, own.unit) == ("Stem like of CD8+ cells", "composition", "%")
    assert dictionary["frac_tem"].family == "memory/exhaustion"
    assert dictionary["lag3_pos_fraction_car"].label == "LAG-3+ of CAR+ cells"
    tp = dictionary["kin_car_auc_blood@D14"]
    assert tp.label == "CAR+ blood exposure (AUC) at D14"
    assert tp.family == "persistence/kinetics"
    assert "not_a_feature" not in dictionary and dictionary.resolve("x@D14") is None


def test_label_table_refuses_a_feature_without_entry(dictionary):
    t = pd.DataFrame({"feature": ["frac_tcm", "not_a_feature", "(all)"], "pvalue": [0.1] * 3})
    with pytest.raises(CartCohortError, match="not_a_feature.*Fix: add them"):
        label_table(t, dictionary, what="association.tsv")
    out = label_table(t.iloc[[0, 2]], dictionary)
    assert list(out.columns) == ["feature", "label", "feature_family", "pvalue"]
    assert out["label"].tolist() == ["Central memory (Tcm) cells", ""]


def test_bad_dictionary_files_are_refused(tmp_path):
    bad = tmp_path / "f.yaml"
    bad.write_text("version: 2\nfeatures:\n  a: {label: A, unit: '', family: QC, "
                   "description: d, better: higher, reference: null}\n")
    with pytest.raises(CartCohortError, match="without a reference"):
        read_dictionary(bad)
    bad.write_text("version: 2\nfeatures:\n  a: {label: A, unit: '', family: QC, "
                   "description: d, better: null, reference: null}\npatterns:\n"
                   "  - {match: 'x(', label: A, unit: '', family: QC, description: d, "
                   "better: null, reference: null}\n")
    with pytest.raises(CartCohortError, match=r"patterns\[0\].*regular expression"):
        read_dictionary(bad)


def test_family_qvalues_are_bh_within_each_family_and_the_panel_is_one():
    p = [0.001, 0.02, 0.03, 0.04, 0.01, 0.5, 0.02]
    t = pd.DataFrame({
        "feature": list("abcdefg"), "test": "mann_whitney", "pvalue": p, "qvalue": np.nan,
        "family": ["primary", "primary", "exploratory", "exploratory", "exploratory",
                   "exploratory", "exploratory"],
        "feature_family": ["CAR", "repertoire", "repertoire", "repertoire", "CAR", "QC",
                           "QC"],
    })
    q = family_qvalues(t).set_index("feature")["qvalue_family"]
    # the panel is one family whatever the feature families of its members
    assert np.allclose(q[["a", "b"]], bh_qvalues([0.001, 0.02]))
    assert np.allclose(q[["c", "d"]], bh_qvalues([0.03, 0.04]))  # exploratory repertoire
    assert q["e"] == pytest.approx(0.01)  # alone in its family: its own p-value
    assert np.allclose(q[["f", "g"]], bh_qvalues([0.5, 0.02]))
    assert list(family_qvalues(t).columns).index("qvalue_family") == 4  # after qvalue
    # and across every feature of the test at once
    q_all = family_qvalues(t).set_index("feature")["qvalue_all"]
    assert np.allclose(q_all[list("abcdefg")], bh_qvalues(p))
    assert list(family_qvalues(t).columns).index("qvalue_all") == 5


def test_twins_are_collapsed_to_one_representative_and_listed():
    """Three near-copies (|rho| > 0.95, one reversed) and an independent feature: one
    representative by the stated rule (panel member first), the other two in its twins."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=24)
    table = pd.DataFrame({
        "a": base, "a_copy": base * 2 + 0.01 * rng.normal(size=24),
        "a_reversed": -base + 0.01 * rng.normal(size=24), "other": rng.normal(size=24)})
    tw = stats.collapse_twins(table, features=list(table.columns), collapse_rho=0.95,
                              panel=["a_copy"])
    assert tw.representatives == ["a_copy", "other"]
    assert sorted(n for n, _ in tw.twins["a_copy"]) == ["a", "a_reversed"]
    assert all(abs(r) > 0.95 for _, r in tw.twins["a_copy"])
    assert "a (rho=1)" in tw.label("a_copy") and "a_reversed (rho=-1)" in tw.label("a_copy")


def test_feature_info_formats_in_its_unit():
    info = FeatureInfo(id="x", label="X", unit="%", family="QC", description="d",
                       better=None, reference=None)
    assert info.format(0.1234) == "12.3 %" and info.format(float("nan")) == "n/a"
