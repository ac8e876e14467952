"""Calibrated scorecard flags (issue 26): the responders' leave-one-out prediction interval,
its false-flag rate on the responders' own products, and the product-only cards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartcohort import scorecards as SC
from cartcohort.errors import CartCohortError
from cartcohort.tl.features import IN_VIVO_REPERTOIRE


def _normal_reference(n_resp: int, n_non: int, n_feat: int, *, seed: int) -> pd.DataFrame:
    """Responders and non-responders with independent N(0, 1) features (non-responders
    shifted, so that only the responders define the interval)."""
    rng = np.random.default_rng(seed)
    n = n_resp + n_non
    ref = pd.DataFrame({
        "patient": [f"P{i:02d}" for i in range(n)],
        "response": ["CR"] * n_resp + ["PD"] * n_non,
        "responder": pd.array([True] * n_resp + [False] * n_non, dtype="boolean"),
    })
    values = rng.normal(size=(n, n_feat))
    values[n_resp:] += 3.0
    return pd.concat([ref, pd.DataFrame(values, columns=[f"f{j}" for j in range(n_feat)])],
                     axis=1)


@pytest.mark.parametrize("coverage", [0.9, 0.8])
def test_loo_flag_rate_of_responders_is_one_minus_coverage_on_normal_data(coverage):
    ref = _normal_reference(10, 6, 150, seed=int(100 * coverage))
    feats = [c for c in ref.columns if c.startswith("f")]
    calib = SC.flag_calibration(ref, primary=feats, coverage=coverage)
    assert calib["row"].tolist() == ["responder"] * 10 + ["mean"]
    assert (calib["n_features"].iloc[:10] == 150).all()
    assert (calib["nominal_coverage"] == coverage).all()
    rate = SC.mean_flag_rate(calib)
    assert rate == pytest.approx(calib["flag_rate"].iloc[:10].mean())
    # exact for normal data: 1 - coverage; 1,500 flags, SE ~ 0.01
    assert abs(rate - (1 - coverage)) < 0.03, rate
    # the min-max range of the other 9 responders would flag 2 / 10 = 0.2 and the empirical
    # 10th-90th percentiles ~0.36: the interval is what makes the nominal rate hold
    assert calib.loc[calib["row"] == "mean", "expected_flag_rate"].item() == pytest.approx(
        1 - coverage)


def test_clearly_out_of_range_product_is_flagged_and_the_rest_is_not():
    ref = _normal_reference(10, 6, 3, seed=1)
    product = pd.Series({"sample": "NEW_IP", "f0": 6.0, "f1": -6.0, "f2": 0.0})
    card = SC.score_product(product, reference=ref, primary=["f0", "f1", "f2"], coverage=0.9)
    flags = card.set_index("feature")["flag"]
    assert flags.to_dict() == {"f0": "above_responder_interval",
                               "f1": "below_responder_interval",
                               "f2": "within_responder_interval"}
    # a feature outside the panel is never flagged, however far out
    card = SC.score_product(product, reference=ref, primary=["f2"], coverage=0.9)
    flags = card.set_index("feature")["flag"]
    assert flags["f0"] == flags["f1"] == "exploratory_not_flagged"
    assert card["feature"].tolist()[0] == "f2"  # the panel first


def test_interval_matches_the_formula_and_bad_coverage_is_refused():
    v = np.array([1.0, 2.0, 4.0, 7.0, np.nan])
    low, high = SC.prediction_interval(v, coverage=0.9)
    from scipy import stats

    half = stats.t.ppf(0.95, 3) * np.std(v[:4], ddof=1) * np.sqrt(1 + 1 / 4)
    assert (low, high) == pytest.approx((3.5 - half, 3.5 + half))
    with pytest.raises(CartCohortError, match="scorecards.flag_coverage"):
        SC.prediction_interval(v, coverage=1.0)


def test_cards_and_reference_hold_product_features_only():
    ref = _normal_reference(5, 5, 2, seed=3)
    in_vivo = IN_VIVO_REPERTOIRE[0]
    patients = ref.assign(**{c: 0.5 for c in IN_VIVO_REPERTOIRE}, count_f0=10, n_cells=300)
    reference = SC.build_reference(patients)
    assert list(reference.columns) == ["patient", "response", "responder", "f0", "f1"]
    # even a reference that carries one (an older file) never puts it on a card,
    # nor an in vivo feature named in the panel
    card = SC.score_product(pd.Series({"sample": "X_IP", "f0": 0.1, in_vivo: 0.9}),
                            reference=patients, primary=["f0", in_vivo], coverage=0.9)
    assert set(card["feature"]) == {"f0", "f1"}
    assert card.set_index("feature").loc["f0", "primary"]


def test_too_few_responders_leave_the_rate_unmeasured_not_zero():
    ref = _normal_reference(3, 3, 4, seed=5)  # leave-one-out: 2 other responders < 3
    feats = ["f0", "f1", "f2", "f3"]
    calib = SC.flag_calibration(ref, primary=feats, coverage=0.9)
    assert (calib["n_features"] == 0).all() and np.isnan(SC.mean_flag_rate(calib))
    card = SC.score_product(ref.iloc[0], reference=ref, primary=feats, coverage=0.9,
                            exclude_patient="P00")
    page = SC.scorecards_html({"P00_IP": card}, calibration=calib, panel_label="p v1")
    assert "flagged on <b>NA</b>" in page and (card["flag"] == "no_reference").all()
